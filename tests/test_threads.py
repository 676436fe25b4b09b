"""Thread count control, and forward results that do not depend on the number of threads."""
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastconv
from conftest import ALGORITHMS, assert_threads_ran
from fastconv import _algorithms


@pytest.fixture(autouse=True)
def default_threads():
    """Every test starts and ends on OpenMP's default thread count."""
    fastconv.set_num_threads(None)
    yield
    fastconv.set_num_threads(None)


# configurations large enough to be cut into several tiles / row blocks
CONFIGS = {
    "dense": dict(x=(3, 17, 19, 16), w=(3, 3, 16, 24), padding=1),
    "strided_dilated": dict(x=(2, 21, 18, 8), w=(3, 3, 8, 12), stride=2, dilation=2,
                            padding="same", padding_mode="reflect"),
    "depthwise": dict(x=(2, 20, 20, 32), w=(3, 3, 1, 32), padding=1, groups=32),
    "grouped": dict(x=(2, 15, 15, 24), w=(3, 3, 6, 24), padding=(1, 2), groups=4),
    "1x1": dict(x=(4, 12, 12, 48), w=(1, 1, 48, 40)),
}


def make(config, dtype, rng):
    kwargs = dict(config)
    x = rng.standard_normal(kwargs.pop("x")).astype(dtype)
    w = rng.standard_normal(kwargs.pop("w")).astype(dtype)
    b = rng.standard_normal(w.shape[3]).astype(dtype)
    return x, w, b, kwargs


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_identical_for_1_and_2_threads(config, algorithm, dtype, rng, kernel_threads):
    x, w, b, kwargs = make(CONFIGS[config], dtype, rng)
    with fastconv.num_threads(1):
        assert fastconv.get_num_threads() == 1
        y1 = fastconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    with fastconv.num_threads(2):
        assert fastconv.get_num_threads() == 2
        y2 = fastconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    assert_threads_ran(kernel_threads)
    # forward work is split by output pixels, never summed across threads: bit-identical
    np.testing.assert_array_equal(y1, y2)
    assert np.isfinite(y1).all() and np.abs(y1).max() > 0


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("config", ["dense", "depthwise"])
def test_forward_identical_under_threadpoolctl_openmp_limit(config, algorithm, rng,
                                                          kernel_threads):
    x, w, b, kwargs = make(CONFIGS[config], np.float32, rng)
    with fastconv.num_threads(2):
        y2 = fastconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    assert_threads_ran(kernel_threads)
    with threadpool_limits(1, "openmp"):
        # with no explicit request, fastconv follows OpenMP's current default
        assert fastconv.get_num_threads() == 1
        y1 = fastconv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
    np.testing.assert_array_equal(y1, y2)


def test_explicit_request_overrides_openmp_limit():
    with threadpool_limits(1, "openmp"):
        with fastconv.num_threads(2):
            assert fastconv.get_num_threads() == 2
        assert fastconv.get_num_threads() == 1


def test_get_set_num_threads():
    fastconv.set_num_threads(1)
    assert fastconv.get_num_threads() == 1
    fastconv.set_num_threads(3)
    assert fastconv.get_num_threads() == 3
    fastconv.set_num_threads(np.int64(2))
    assert fastconv.get_num_threads() == 2
    assert type(fastconv.get_num_threads()) is int


def test_set_num_threads_none_returns_to_default():
    default = fastconv.get_num_threads()
    assert default >= 1
    fastconv.set_num_threads(default + 3)
    fastconv.set_num_threads(None)
    assert fastconv.get_num_threads() == default


def test_context_manager_restores_previous_value():
    fastconv.set_num_threads(3)
    with fastconv.num_threads(1):
        assert fastconv.get_num_threads() == 1
        with fastconv.num_threads(2):
            assert fastconv.get_num_threads() == 2
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == 3


def test_context_manager_restores_after_exception():
    fastconv.set_num_threads(2)
    with pytest.raises(RuntimeError, match="inside"):
        with fastconv.num_threads(1):
            raise RuntimeError("inside")
    assert fastconv.get_num_threads() == 2


def test_context_manager_restores_the_default():
    default = fastconv.get_num_threads()
    with fastconv.num_threads(default + 1):
        assert fastconv.get_num_threads() == default + 1
    assert fastconv.get_num_threads() == default
    # the default is still followed (not frozen to the number seen before the block)
    with threadpool_limits(1, "openmp"):
        assert fastconv.get_num_threads() == 1


@pytest.mark.parametrize("bad, exc, pattern", [
    (0, ValueError, r"num_threads.*>= 1.*got 0"),
    (-1, ValueError, r"num_threads.*>= 1.*got -1"),
    (1.5, TypeError, r"num_threads.*int.*1\.5"),
    (2.0, TypeError, r"num_threads.*int.*2\.0"),
    (True, TypeError, r"num_threads.*int.*True"),
    ("2", TypeError, r"num_threads.*int.*'2'"),
])
def test_bad_thread_counts_raise(bad, exc, pattern):
    fastconv.set_num_threads(2)
    with pytest.raises(exc, match=pattern):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() == 2
    with pytest.raises(exc, match=pattern):
        with fastconv.num_threads(bad):
            pass  # pragma: no cover - never entered
    assert fastconv.get_num_threads() == 2


def test_default_honours_omp_num_threads():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = "import fastconv; print(fastconv.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "1"


def test_linear_and_resampling_products_keep_blas_on_one_thread(monkeypatch):
    """A Linear layer's products (forward, both gradients) and adaptive average pooling run with
    BLAS held to one thread: a multi-threaded BLAS leaves threads spinning on the cores the
    next convolution's OpenMP threads need."""
    from contextlib import contextmanager

    from fastconv import _threads, functional
    from fastconv import layers as L

    entered = []
    real = _threads.blas_single_thread

    @contextmanager
    def recording():
        entered.append(True)
        with real():
            yield

    monkeypatch.setattr(_threads, "blas_single_thread", recording)
    monkeypatch.setattr(functional, "blas_single_thread", recording)  # the weight's gradient
    layer = L.Linear(6, 4, rng=0)
    y = layer(np.ones((9, 6), np.float32))  # more rows than the few-rows kernel takes
    assert len(entered) == 1
    layer.backward(np.ones_like(y))
    assert len(entered) == 3  # the weight's gradient and the input's
    L.AdaptiveAvgPool2d(2)(np.ones((1, 5, 5, 2), np.float32))
    assert len(entered) == 5  # along H, then along W


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS as Linux counts it")
def test_few_rows_sums_that_cannot_be_allocated_raise_memory_error():
    """The few-rows kernel's double sums (here 8 x 20,000,000, 1.28 GB) under an address-space
    limit that leaves 256 MiB: a MemoryError naming them, not a crash."""
    code = (
        "import resource, numpy as np\n"
        "from fastconv import _threads\n"
        "m, n = 8, 20_000_000\n"
        "x, w = np.ones((m, 1), np.float32), np.ones((1, n), np.float32)\n"
        "y = np.empty((m, n), np.float32)\n"
        "status = open('/proc/self/status').read().split('VmSize:')[1].split()\n"
        "limit = int(status[0]) * 1024 + 256 * 2**20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    _threads._linear.few_rows_matmul(x, w, np.empty(0, np.float32), y, 1)\n"
        "except MemoryError as error:\n"
        "    print('MemoryError:', error)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "MemoryError: few_rows_matmul: no memory for 1 x 8 x 20000000 sums" in done.stdout


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_linear")))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_few_rows_products_equal_the_definition(level, dtype, rng, monkeypatch):
    """matmul of at most MAX_ROWS rows (the few-rows kernel, in every instruction-set
    variant): the float64 product within rounding, for column counts around its blocks
    (16 KiB of sums: 4096 float32 columns for one row, 512 for 8, 256 float64 ones), sums of one and of several chunks of rows of w (fewer where
    SCRATCH_BYTES caps their sums), 1-D and 3-D left operands; the same bits on 1 and 2
    threads, and 2 ran; long float32 sums of positive terms within 1e-6 (runs of terms
    summed in double; one float32 sum was 8e-6 off at K = 25088). With a bias too. Other
    operands (more rows, a strided or Fortran-ordered one, mixed dtypes, an empty sum) go
    through NumPy and are right too."""
    from conftest import _RecordingKernels

    from fastconv import _threads

    given: list = []
    module = _algorithms.simd_modules("_linear")[level]
    monkeypatch.setattr(_threads, "_linear", _RecordingKernels(module, given))
    rows = module.MAX_ROWS
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a_shape, n in [((1, 300), 1000), ((rows, 37), 255), ((2, 3, 5), 257), ((40,), 513),
                       ((1, 1), 1), ((rows, 600), 1025), ((1, 70), 8193), ((rows + 1, 7), 3),
                       ((2, 0), 5)]:
        a = rng.standard_normal(a_shape).astype(dtype)
        b = rng.standard_normal((a_shape[-1], n)).astype(dtype)
        expected = a.astype(np.float64) @ b.astype(np.float64)
        with fastconv.num_threads(1):
            one = _threads.matmul(a, b)
        with fastconv.num_threads(2):
            two = _threads.matmul(a, b)
        assert one.shape == expected.shape and one.dtype == dtype
        np.testing.assert_allclose(one, expected, rtol=tol, atol=tol * np.sqrt(a_shape[-1]))
        np.testing.assert_array_equal(one, two)
    a, b = rng.random((1, 30000)).astype(dtype), rng.random((30000, 4)).astype(dtype)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.abs(_threads.matmul(a, b) / exact - 1).max() < 1e-6
    bias = rng.standard_normal(257).astype(dtype)
    a, b = rng.standard_normal((3, 40)).astype(dtype), rng.standard_normal((40, 257)).astype(dtype)
    out = np.empty((3, 257), dtype)
    _threads.few_rows_call(a, b, bias, out)()
    np.testing.assert_allclose(out, a.astype(np.float64) @ b + bias, rtol=tol, atol=tol * 10)
    assert _threads.few_rows_call(a, b, bias[:-1], out) is None  # a bias of another length
    for rows in (a, np.tile(a, (4, 1))):  # the kernel's bias, and NumPy's add after BLAS
        np.testing.assert_allclose(_threads.matmul(rows, b, bias=bias),
                                   rows.astype(np.float64) @ b + bias, rtol=tol, atol=tol * 10)
    # up to 8 chunks of whole 64-row runs; their sums capped at two chunks' worth: 2 chunks.
    # Each row of y the same whatever rows of x come with it, on 1 to 4 threads
    m = module.MAX_ROWS
    a, b = rng.standard_normal((m, 600)).astype(dtype), rng.standard_normal((600, 33)).astype(dtype)
    assert module.chunks(600, 33) == 8 and module.chunks(64, 5) == 1  # one run
    for scratch, chunks in ((None, 8), (2 * m * 33 * 8, 2)):
        if scratch:
            monkeypatch.setattr(module, "SCRATCH_BYTES", scratch)
        assert module.chunks(600, 33) == chunks
        expected = a.astype(np.float64) @ b.astype(np.float64)
        with fastconv.num_threads(1):
            one = _threads.matmul(a, b)
        np.testing.assert_allclose(one, expected, rtol=tol, atol=tol * np.sqrt(600))
        for threads in (2, 3, 4):
            with fastconv.num_threads(threads):
                np.testing.assert_array_equal(_threads.matmul(a, b), one)
        for rows in (slice(0, 1), slice(2, 5)):
            np.testing.assert_array_equal(_threads.matmul(a[rows], b), one[rows])
    monkeypatch.undo()
    monkeypatch.setattr(_threads, "_linear", _RecordingKernels(module, given))
    assert_threads_ran(given)
    calls = len(given)
    # the list on 1 and 2 threads (its last two through NumPy), 3 more, 2 x 6 for the chunks
    assert calls == 2 * 7 + 3 + 2 * 6
    a = rng.standard_normal((2, 40)).astype(dtype)
    b = rng.standard_normal((40, 30)).astype(dtype)
    for left, right in [(a[:, ::2], b[::2]), (np.asfortranarray(a), b), (a, np.asfortranarray(b)),
                        (a.astype(np.float32), b.astype(np.float64))]:
        np.testing.assert_allclose(_threads.matmul(left, right),
                                   left.astype(np.float64) @ right.astype(np.float64),
                                   rtol=1e-5, atol=1e-5)
    assert len(given) == calls


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                    or not fastconv._kernels._openmp.openmp_enabled(),
                    reason="needs Linux, OpenMP and two CPUs this process may use")
def test_workers_stay_off_the_calling_threads_cpu():
    """After a 2-thread kernel call, the team's worker may not run on the CPU its caller was
    on (_threads.place_workers; where a sleeping worker was woken on its caller's CPU, each
    parallel region waited a scheduler tick), and may run on every other allowed CPU."""
    from fastconv import _threads
    from fastconv._kernels import _openmp

    x = np.ones((1, 64, 64, 32), np.float32)  # enough work to share between threads
    w = np.ones((3, 3, 32, 32), np.float32)
    _threads._local.placed = None
    with fastconv.num_threads(2):
        fastconv.conv2d(x, w, padding=1)
        cpu, n = _threads._local.placed
        assert n == 2
        assert _openmp.workers_may_run_on(cpu, 2) == [True, False]  # two threads, one kept off
        others = sorted(os.sched_getaffinity(0) - {cpu})
        assert all(_openmp.workers_may_run_on(c, 2)[1] for c in others)


def test_depthwise_work_is_shared_from_fewer_flops_than_dense(monkeypatch, rng):
    """A 3x3 depthwise convolution of 7x7x256 (226 KFLOP: below PARALLEL_MIN_FLOPS, above
    PARALLEL_MIN_DEPTHWISE_FLOPS) runs on 2 threads, forward and strided input gradient; a
    dense convolution of as many flops on 1."""
    from fastconv import _algorithms, functional

    assert (_algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS < 2 * 49 * 9 * 256
            < _algorithms.PARALLEL_MIN_FLOPS)
    given: list[int] = []
    monkeypatch.setattr(functional, "place_workers", given.append)
    x = rng.standard_normal((1, 7, 7, 256)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 256)).astype(np.float32)
    with fastconv.num_threads(2):
        fastconv.conv2d(x, w, padding=1, groups=256)
        assert given == [2]
        x14 = rng.standard_normal((1, 14, 14, 256)).astype(np.float32)  # grad_output 7x7
        fastconv.conv2d_backward(np.ones((1, 7, 7, 256), np.float32), x14, w, stride=2,
                                 padding=1, groups=256, needs=("input",))
        assert given[-1] == 2
        depthwise_given = list(given)
        given.clear()
        fastconv.conv2d(x[..., :16], rng.standard_normal((3, 3, 16, 16)).astype(np.float32),
                        padding=1, algorithm="direct")  # 2 * 49 * 9 * 16 * 16 flops
        assert given == [1]
    assert_threads_ran(depthwise_given)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 16, 17, 100, 1001])
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_shared_items_are_each_computed_once(n, threads):
    # every item by exactly one thread of the team (-1: by none, -2: twice), whatever n and
    # the team
    from fastconv._kernels import _openmp

    owners = _openmp.shared_items(n, threads)
    assert len(owners) == n
    assert all(0 <= o < max(_openmp.team_size(threads), 1) for o in owners), owners


def test_a_late_threads_share_is_taken_over():
    # a thread the OS has descheduled (here: one that starts only once the other has run
    # out of items) does not hold the region up: the other takes over its whole share
    # (under schedule(static) it would wait for it)
    from fastconv._kernels import _openmp

    if not _openmp.openmp_enabled() or _openmp.team_size(2) < 2:
        pytest.skip("needs two OpenMP threads")
    n = 160
    assert _openmp.shared_items(n, 2, late_thread=0, late_ms=10_000) == [1] * n
    assert _openmp.shared_items(n, 2, late_thread=1, late_ms=10_000) == [0] * n


@pytest.mark.parametrize("n, threads", [(-1, 2), (3, 0)])
def test_shared_items_refuses_a_negative_count_or_no_thread(n, threads):
    from fastconv._kernels import _openmp

    with pytest.raises(ValueError, match="n >= 0 and num_threads >= 1"):
        _openmp.shared_items(n, threads)
