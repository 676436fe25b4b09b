"""fastconv.dask: chunked convolutions of dask arrays against in-memory fastconv.

Runs on dask's local threaded scheduler and on a dask.distributed LocalCluster of two worker
processes; skipped when dask is not installed.
"""
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
import fastconv  # noqa: E402
import fastconv.dask as fcd  # noqa: E402
from fastconv import filters, layers  # noqa: E402
from fastconv.layers import Layer  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from conftest import random_array, tolerance  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("zeros", "reflect", "symmetric", "replicate", "circular")
CPU_COUNT = dask.system.CPU_COUNT


def assert_same(actual, expected, terms: int) -> None:
    """A chunked result against the in-memory one: same shape and dtype, equal to rounding
    (float32 tolerance scaled with the number of summed terms)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    rtol = tolerance(expected.dtype, terms)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0))


def threaded(arr):
    return arr.compute(scheduler="threads")


# ----------------------------------------------------------------------------------------------
# conv2d

# (x shape, chunks, weight shape, conv2d keyword arguments)
CONV_CASES = {
    "same-uneven-chunks": ((2, 13, 11, 3), (1, (4, 2, 7), (5, 5, 1), 3), (3, 3, 3, 4),
                           dict(padding="same")),
    "chunks-smaller-than-halo": ((1, 12, 10, 2), (1, 1, 2, 2), (5, 4, 2, 3),
                                 dict(padding=2)),
    "stride-2-odd-chunks": ((2, 17, 15, 3), (1, 3, 4, 3), (3, 3, 3, 5),
                            dict(stride=2, padding=1)),
    "stride-3-same-asymmetric": ((1, 19, 16, 2), (1, 5, 3, 2), (4, 2, 2, 3),
                                 dict(stride=(3, 2), padding="same")),
    "dilation-2": ((1, 16, 14, 2), (1, 3, 4, 2), (3, 3, 2, 2),
                   dict(dilation=2, padding=2)),
    "stride-and-dilation": ((2, 21, 18, 2), (1, 4, 5, 1), (3, 2, 2, 3),
                            dict(stride=2, dilation=(2, 3), padding=((3, 1), (0, 4)))),
    "padding-wider-than-halo": ((1, 9, 8, 2), (1, 3, 3, 2), (3, 3, 2, 2),
                                dict(padding=((6, 4), (5, 7)))),
    "padding-wider-than-image": ((1, 3, 4, 1), (1, 1, 2, 1), (2, 2, 1, 2),
                                 dict(padding=((5, 6), (7, 4)))),
    "valid-unused-rows": ((1, 14, 13, 2), (1, 4, 4, 2), (3, 3, 2, 2),
                          dict(stride=4, padding="valid")),
    "groups-channel-chunks": ((1, 10, 9, 6), (1, 4, 3, 2), (3, 3, 2, 9),
                              dict(groups=3, padding=1)),
    "depthwise": ((2, 11, 12, 4), (2, 5, 5, 4), (3, 3, 1, 4), dict(groups=4, padding=1)),
    "1x1-stride-2": ((1, 9, 7, 3), (1, 2, 3, 3), (1, 1, 3, 4), dict(stride=2)),
    "one-chunk": ((1, 8, 8, 2), (1, 8, 8, 2), (3, 3, 2, 2), dict(padding=1, stride=2)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_equals_in_memory(case, mode, rng):
    x_shape, chunks, w_shape, kwargs = CONV_CASES[case]
    x = random_array(rng, x_shape)
    weight = random_array(rng, w_shape)
    bias = random_array(rng, (w_shape[3],))
    expected = fastconv.conv2d(x, weight, bias, padding_mode=mode, **kwargs)
    y = fcd.conv2d(da.from_array(x, chunks=chunks), weight, bias, padding_mode=mode, **kwargs)
    assert y.shape == expected.shape
    assert len(y.chunks[3]) == 1  # channels are never split
    assert_same(threaded(y), expected, w_shape[0] * w_shape[1] * w_shape[2])


@pytest.mark.parametrize("dtype, weight_dtype", [(np.float32, np.float32),
                                                 (np.uint8, np.float32),
                                                 (np.float32, np.float64),
                                                 (np.int16, np.float32)])
def test_conv2d_dtypes_follow_in_memory_promotion(dtype, weight_dtype, rng):
    x = random_array(rng, (2, 9, 10, 3), dtype)
    weight = random_array(rng, (3, 3, 3, 2), weight_dtype)
    expected = fastconv.conv2d(x, weight, padding=1, padding_mode="reflect")
    y = fcd.conv2d(da.from_array(x, chunks=(1, 4, 3, 3)), weight, padding=1,
                   padding_mode="reflect")
    assert y.dtype == expected.dtype
    assert_same(threaded(y), expected, 27)


def test_conv2d_unbatched_image(rng):
    x = random_array(rng, (15, 12, 2), np.float32)
    weight = random_array(rng, (3, 5, 2, 3), np.float32)
    expected = fastconv.conv2d(x, weight, stride=2, padding="same", padding_mode="symmetric")
    y = fcd.conv2d(da.from_array(x, chunks=(4, 5, 1)), weight, stride=2, padding="same",
                   padding_mode="symmetric")
    assert y.ndim == 3
    assert_same(threaded(y), expected, 30)


def test_conv2d_stride_1_same_keeps_the_chunks(rng):
    x = da.from_array(random_array(rng, (3, 20, 17, 2)), chunks=((2, 1), (7, 6, 7), (9, 8), 1))
    y = fcd.conv2d(x, random_array(rng, (3, 3, 2, 4)), padding="same", padding_mode="reflect")
    assert y.chunks == (x.chunks[0], x.chunks[1], x.chunks[2], (4,))


def test_conv2d_stride_2_halves_the_chunks(rng):
    x = da.from_array(random_array(rng, (1, 32, 24, 1)), chunks=(1, 8, 6, 1))
    y = fcd.conv2d(x, random_array(rng, (3, 3, 1, 1)), stride=2, padding=1)
    assert y.chunks[1:3] == ((4, 4, 4, 4), (3, 3, 3, 3))


def test_conv2d_empty_batch(rng):
    x = da.zeros((0, 6, 5, 2), chunks=(1, 3, 3, 2))
    y = fcd.conv2d(x, random_array(rng, (3, 3, 2, 4)), padding="same")
    assert y.shape == (0, 6, 5, 4)
    assert threaded(y).shape == (0, 6, 5, 4)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_conv2d_any_chunking_equals_in_memory(data):
    """Random geometry, padding mode and chunk borders: the chunked result equals the
    in-memory one."""
    draw = data.draw
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple((draw(st.integers(0, 5)), draw(st.integers(0, 5))) for _ in range(2))
    mode = draw(st.sampled_from(MODES))
    # sizes whose padded input holds the dilated kernel
    smallest = [max(1, d * (k - 1) + 1 - sum(p)) for k, d, p in zip((kh, kw), dilation, pads)]
    h, w = (draw(st.integers(n, n + 12)) for n in smallest)

    def chunking(n):
        borders = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
        return tuple(np.diff([0, *borders, n]).tolist())

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((2, h, w, 2))
    weight = rng.standard_normal((kh, kw, 2, 3))
    kwargs = dict(stride=stride, padding=pads, dilation=dilation, padding_mode=mode)
    expected = fastconv.conv2d(x, weight, **kwargs)
    chunks = (1, chunking(h), chunking(w), 2)
    y = fcd.conv2d(da.from_array(x, chunks=chunks), weight, **kwargs)
    assert_same(y.compute(scheduler="sync"), expected, kh * kw * 2)


# ----------------------------------------------------------------------------------------------
# filter2d

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("kernel_name", ["gaussian", "sobel", "random-4x6"])
def test_filter2d_equals_in_memory(kernel_name, flip, mode, rng):
    kernel = {"gaussian": filters.gaussian(1.0), "sobel": filters.sobel("x"),
              "random-4x6": random_array(rng, (4, 6))}[kernel_name]
    image = random_array(rng, (23, 19, 3), np.float32)
    expected = filters.filter2d(image, kernel, padding_mode=mode, flip=flip)
    y = fcd.filter2d(da.from_array(image, chunks=(4, (2, 9, 8), 2)), kernel,
                     padding_mode=mode, flip=flip)
    assert y.chunks[2] == (2, 1)  # depthwise: the channels keep their chunks
    assert_same(threaded(y), expected, kernel.size)


@pytest.mark.parametrize("shape, chunks", [((16, 21), (3, 5)),
                                           ((2, 12, 13, 2), (1, 5, 4, 1))])
@pytest.mark.parametrize("padding", ["same", "valid", 2, ((0, 3), (4, 1))])
def test_filter2d_shapes_and_paddings(shape, chunks, padding, rng):
    image = random_array(rng, shape, np.uint8)
    kernel = random_array(rng, (3, 4))
    expected = filters.filter2d(image, kernel, padding=padding, padding_mode="symmetric")
    y = fcd.filter2d(da.from_array(image, chunks=chunks), kernel, padding=padding,
                     padding_mode="symmetric")
    assert y.ndim == image.ndim
    assert_same(threaded(y), expected, 12)


# ----------------------------------------------------------------------------------------------
# predict (a Sequential over a batch-chunked array)

def small_cnn():
    return layers.Sequential(
        layers.Conv2d(3, 6, 3, padding=1, padding_mode="reflect", rng=1), layers.ReLU(),
        layers.MaxPool2d(2), layers.Conv2d(6, 4, 3, stride=2, rng=2), layers.ReLU(),
        layers.Flatten(), layers.Linear(4 * 3 * 3, 5, rng=3))


def test_predict_equals_the_model_in_memory(rng):
    model = small_cnn()
    x = random_array(rng, (7, 14, 14, 3), np.float32)
    expected = model.eval()(x)
    model.train()
    y = fcd.predict(model, da.from_array(x, chunks=(3, 5, 14, 3)))
    assert y.chunks == ((3, 3, 1), (5,))
    assert_same(threaded(y), expected, 6 * 9 + 4 * 3 * 3)
    assert model.training and model[0]._saved is None  # the caller's model is untouched


def test_predict_keeps_extra_dimensions(rng):
    model = layers.Sequential(layers.Conv2d(2, 3, 3, stride=2, rng=0), layers.ReLU())
    x = random_array(rng, (5, 9, 9, 2))
    y = fcd.predict(model, da.from_array(x, chunks=(2, 9, 9, 2)))
    assert y.chunks == ((2, 2, 1), (4,), (4,), (3,))
    assert_same(threaded(y), model(x), 18)


# ----------------------------------------------------------------------------------------------
# weights travel once

def _task_sizes(arr) -> list[int]:
    """The pickled size of every task of arr's graph, each pickled on its own (as
    dask.distributed ships them)."""
    return [len(pickle.dumps(task)) for task in dict(arr.__dask_graph__()).values()]


@pytest.mark.parametrize("make", ["conv2d", "predict"])
def test_weights_are_one_node_of_the_graph(make, rng):
    x = da.ones((16, 16, 16, 32), dtype=np.float32, chunks=(1, 4, 4, 32))  # tasks: no data
    weight = random_array(rng, (3, 3, 32, 64), np.float32)  # 73.7 kB
    if make == "conv2d":
        y = fcd.conv2d(x, weight, padding=1)
    else:
        conv = layers.Conv2d(32, 64, 3, padding=1, bias=False)
        conv.weight[...] = weight
        y = fcd.predict(conv, x)
    sizes = sorted(_task_sizes(y))
    assert y.npartitions >= 16
    assert sizes[-1] > weight.nbytes  # one task holds the weights ...
    assert sizes[-2] < weight.nbytes / 4  # ... and none of the others a copy of them


def test_weights_are_copied_when_the_graph_is_built(rng):
    x = random_array(rng, (1, 6, 6, 1))
    weight = random_array(rng, (3, 3, 1, 1))
    expected = fastconv.conv2d(x, weight)
    y = fcd.conv2d(da.from_array(x, chunks=(1, 3, 3, 1)), weight)
    weight[...] = 0
    assert_same(threaded(y), expected, 9)


# ----------------------------------------------------------------------------------------------
# threads per task

class ThreadCount(Layer):
    """Returns, for every image, the fastconv thread count its task ran with."""

    def forward(self, x):
        return np.full((x.shape[0], 1), fastconv.get_num_threads(), np.int64)


def thread_counts(scheduler, threads=None, **config):
    x = da.zeros((8, 2), chunks=(1, 2))
    with dask.config.set(**config):
        return set(fcd.predict(ThreadCount(), x, threads=threads)
                   .compute(scheduler=scheduler).ravel().tolist())


def test_threaded_scheduler_shares_the_cores_among_its_threads():
    with fastconv.num_threads(CPU_COUNT):
        assert thread_counts("threads", num_workers=2) == {max(1, CPU_COUNT // 2)}
        assert thread_counts("threads", num_workers=CPU_COUNT + 1) == {1}


def test_synchronous_scheduler_gives_one_task_the_cores():
    with fastconv.num_threads(CPU_COUNT + 3):
        assert thread_counts("sync") == {CPU_COUNT}
    with fastconv.num_threads(1):
        assert thread_counts("sync") == {1}  # never more than fastconv's own setting


def test_threads_override_and_setting_restored():
    with fastconv.num_threads(5):
        assert thread_counts("threads", threads=3, num_workers=2) == {3}
        assert thread_counts("sync", threads=2) == {2}
        assert fastconv.get_num_threads() == 5
    with pytest.raises(ValueError, match="threads"):
        fcd.conv2d(da.zeros((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), threads=0)


# ----------------------------------------------------------------------------------------------
# validation, without computing the input

def _never_computed():
    raise AssertionError("the input was computed")


@pytest.fixture
def lazy_input():
    """A (2, 8, 8, 3) float32 dask array that fails if anything computes it."""
    return da.from_delayed(dask.delayed(_never_computed)(), (2, 8, 8, 3), np.float32)


def test_errors_name_the_argument_and_compute_nothing(lazy_input):
    with pytest.raises(ValueError, match=r"conv2d: given groups=1.*to have 4 channels, but "
                                         r"got 3 channels"):
        fcd.conv2d(lazy_input, np.ones((3, 3, 4, 2)))
    with pytest.raises(ValueError, match="padded input size"):
        fcd.conv2d(lazy_input, np.ones((9, 9, 3, 2)))
    with pytest.raises(ValueError, match="padding_mode"):
        fcd.conv2d(lazy_input, np.ones((3, 3, 3, 2)), padding_mode="mirror")
    with pytest.raises(ValueError, match="expected input to be 3-D or 4-D"):
        fcd.conv2d(lazy_input[0, 0], np.ones((3, 3, 3, 2)))
    with pytest.raises(TypeError, match="input must hold real numbers"):
        fcd.conv2d(lazy_input.astype(np.complex64), np.ones((3, 3, 3, 2)))
    with pytest.raises(ValueError, match="kernel"):
        fcd.filter2d(lazy_input, np.ones(3))
    with pytest.raises(TypeError, match="model must be a fastconv.layers.Layer"):
        fcd.predict(lambda x: x, lazy_input)
    fcd.conv2d(lazy_input, np.ones((3, 3, 3, 2)), padding=1)  # builds, computes nothing


def test_unknown_chunk_sizes_are_refused(rng):
    x = da.from_array(random_array(rng, (2, 6, 6, 1)), chunks=1)
    x = x[x[:, 0, 0, 0] > -10]  # a boolean mask: chunk sizes unknown
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fcd.conv2d(x, np.ones((3, 3, 1, 1)))


def test_importing_fastconv_imports_no_dask():
    code = "import sys, fastconv; print('dask' in sys.modules, 'distributed' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert run.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------------------------
# on a dask.distributed cluster of two worker processes

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.mark.heavy
def test_cluster_conv2d_equals_in_memory(client, rng):
    import distributed
    x = random_array(rng, (3, 25, 22, 3), np.float32)
    weight = random_array(rng, (3, 3, 3, 4), np.float32)
    kwargs = dict(stride=2, padding=1, dilation=(1, 2), padding_mode="reflect")
    y = fcd.conv2d(da.from_array(x, chunks=(1, 4, 7, 3)), weight, **kwargs)
    with distributed.get_task_stream(client) as tasks:
        result = y.compute()  # the client is dask's default scheduler now
    assert {task["worker"] for task in tasks.data} == set(client.nthreads())  # both workers
    assert_same(result, fastconv.conv2d(x, weight, **kwargs), 27)


@pytest.mark.heavy
def test_cluster_filter2d_and_predict_equal_in_memory(client, rng):
    image = random_array(rng, (30, 27, 3), np.float32)
    kernel = filters.gaussian(1.5)
    y = fcd.filter2d(da.from_array(image, chunks=(8, 8, 3)), kernel, padding_mode="circular")
    assert_same(y.compute(), filters.filter2d(image, kernel, padding_mode="circular"),
                kernel.size)
    model = small_cnn()
    x = random_array(rng, (6, 14, 14, 3), np.float32)
    result = fcd.predict(model, da.from_array(x, chunks=(2, 14, 14, 3))).compute()
    assert_same(result, model.eval()(x), 6 * 9 + 4 * 3 * 3)


@pytest.mark.heavy
def test_cluster_threads_times_worker_threads_fit_the_cores(client):
    worker_threads = client.nthreads()
    defaults = client.run(fastconv.get_num_threads)  # fastconv's setting on each worker
    counts = fcd.predict(ThreadCount(), da.zeros((8, 2), chunks=(1, 2))).compute()
    for address, n in worker_threads.items():
        assert n == 1
    expected = {max(1, min(defaults[a], CPU_COUNT // n)) for a, n in worker_threads.items()}
    assert set(counts.ravel().tolist()) <= expected
    assert max(counts.ravel()) * max(worker_threads.values()) <= CPU_COUNT


# ----------------------------------------------------------------------------------------------
# examples/huge_image.py at a small size

@pytest.mark.heavy
def test_huge_image_example_matches_in_memory(tmp_path):
    size = 600
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "huge_image.py"),
                          "--size", str(size), "--chunk", "128", "--workdir", str(tmp_path),
                          "--keep", "--check"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "peak resident memory" in run.stdout
    image = np.fromfile(tmp_path / "image.f32", np.float32).reshape(size, size, 3)
    blur = np.fromfile(tmp_path / "blur.f32", np.float32).reshape(size, size, 3)
    kernel = filters.gaussian(2.0)
    assert_same(blur, filters.filter2d(image, kernel, padding_mode="reflect"), kernel.size)
    conv = np.fromfile(tmp_path / "conv.f32", np.float32).reshape(size // 2, size // 2, 8)
    weight = (np.random.default_rng(0).standard_normal((3, 3, 3, 8)) / 5).astype(np.float32)
    expected = fastconv.conv2d(image, weight, stride=2, padding=1, padding_mode="reflect")
    assert_same(conv, expected, 27)


# ----------------------------------------------------------------------------------------------
# fastconv.num_threads used from several threads at once (what fastconv.dask works around)

def test_num_threads_blocks_overlapping_in_two_threads_keep_and_restore_the_setting():
    """Two threads each in a `with fastconv.num_threads(n)` block, the first leaving first:
    the second block should still run with n threads, and the setting should be the user's
    again when both have ended."""
    fastconv.set_num_threads(None)
    before = fastconv.get_num_threads()
    n = before + 1
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with fastconv.num_threads(n):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with fastconv.num_threads(n):
            second_in.set()
            first_out.wait(5)
            seen["inside"] = fastconv.get_num_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = fastconv.get_num_threads()
    fastconv.set_num_threads(None)
    assert (seen["inside"], after) == (n, before)
