"""Issue 15: empty inputs, thread-count limits, the bias dtype rule and 1-D wording."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
F32 = np.float32


# ----------------------------------------------------------------------------------------------
# empty inputs: PyTorch's shapes, forward and backward

def test_flatten_of_an_empty_batch_has_pytorch_shape():
    flatten = layers.Flatten()
    y = flatten(np.zeros((0, 2, 2, 4), F32))
    assert y.shape == (0, 16)
    assert flatten.backward(y).shape == (0, 2, 2, 4)
    assert layers.Flatten()(np.zeros((3, 0, 2, 4), F32)).shape == (3, 0)


def test_sequential_on_an_empty_batch():
    model = layers.Sequential(layers.Conv2d(2, 4, 3, padding=1, rng=0), layers.ReLU(),
                              layers.MaxPool2d(2), layers.AvgPool2d(1), layers.Flatten(),
                              layers.Linear(16, 3, rng=1))
    y = model(np.zeros((0, 4, 4, 2), F32))
    assert y.shape == (0, 3) and y.dtype == F32
    assert model.backward(y).shape == (0, 4, 4, 2)
    assert all(not g.any() for _, _, g in model.parameters())


@pytest.mark.parametrize("layer", [
    layers.Conv2d(2, 3, 3, padding=1, rng=0), layers.ConvTranspose2d(2, 3, 3, stride=2, rng=0),
    layers.DepthwiseConv2d(2, 3, padding=1, rng=0), layers.SeparableConv2d(2, 3, 3, rng=0),
    layers.ReLU(), layers.MaxPool2d(2), layers.AvgPool2d(2), layers.Linear(2, 3, rng=0),
], ids=lambda layer: type(layer).__name__)
def test_layers_on_an_empty_batch(layer):
    x = np.zeros((0, 6, 6, 2), F32)
    y = layer(x)
    assert y.shape[0] == 0
    assert layer.backward(y).shape == x.shape


def test_dask_predict_on_an_empty_batch():
    da = pytest.importorskip("dask.array")
    from fastconv import dask as fdask
    model = layers.Sequential(layers.Conv2d(2, 3, 3, padding=1, rng=0), layers.Flatten(),
                              layers.Linear(75, 4, rng=0))
    x = da.zeros((0, 5, 5, 2), dtype=F32, chunks=(4, 5, 5, 2))
    assert fdask.predict(model, x).compute().shape == (0, 4)


def test_zero_input_channels_give_the_bias():
    """A sum over no input channels is 0 (PyTorch allows C_in = 0): the output is the bias."""
    x, w, b = np.zeros((2, 5, 5, 0), F32), np.ones((3, 3, 0, 4), F32), np.arange(4, dtype=F32)
    y = fastconv.conv2d(x, w, b, padding=1)
    assert y.shape == (2, 5, 5, 4) and (y == b).all()
    gx, gw, gb = fastconv.conv2d_backward(np.ones_like(y), x, w, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and (gb == 50).all()
    yt = fastconv.conv_transpose2d(np.zeros((2, 5, 5, 0), F32), np.ones((3, 3, 4, 0), F32), b)
    assert yt.shape == (2, 7, 7, 4) and (yt == b).all()
    assert fastconv.conv1d(np.zeros((7, 0), F32), np.ones((3, 0, 4), F32)).shape == (5, 4)


def test_zero_output_channels_give_a_zero_input_gradient():
    x, w = np.ones((2, 5, 5, 3), F32), np.ones((3, 3, 3, 0), F32)
    y = fastconv.conv2d(x, w)
    assert y.shape == (2, 3, 3, 0)
    gx, gw, _ = fastconv.conv2d_backward(y, x, w)
    assert gx.shape == x.shape and not gx.any() and gw.shape == w.shape


def test_empty_height_with_zero_padding_is_the_bias_and_other_modes_refuse():
    x, w, b = np.zeros((2, 0, 5, 2), F32), np.ones((3, 3, 2, 3), F32), np.arange(3, dtype=F32)
    y = fastconv.conv2d(x, w, b, padding=2)
    assert y.shape == (2, 2, 7, 3) and (y == b).all()
    assert fastconv.conv2d_backward(np.ones_like(y), x, w, padding=2)[0].shape == x.shape
    with pytest.raises(ValueError, match=r"padding_mode='reflect'.*empty along H"):
        fastconv.conv2d(x, w, padding=2, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"padded input size \(0, 5\)"):
        fastconv.max_pool2d(x, 1)


# ----------------------------------------------------------------------------------------------
# the bias never changes the result's dtype

@pytest.mark.parametrize("bias", [[0.5, 1.0], np.array([1, 2]), np.array([0.5, 1.0])],
                         ids=["list", "int64", "float64"])
def test_the_bias_is_cast_to_the_result_dtype(bias):
    x, w = np.ones((1, 4, 4, 3), F32), np.ones((1, 1, 3, 2), F32)
    y = fastconv.conv2d(x, w, bias=bias)
    assert y.dtype == F32 and np.allclose(y[0, 0, 0], 3 + np.asarray(bias, float))
    assert fastconv.conv_transpose2d(x, np.ones((1, 1, 2, 3), F32), bias=bias).dtype == F32
    assert fastconv.conv1d(x[0], w[0], bias=bias).dtype == F32
    assert fastconv.conv_transpose1d(x[0], np.ones((1, 2, 3), F32), bias=bias).dtype == F32


# ----------------------------------------------------------------------------------------------
# 1-D calls answer in 1-D

@pytest.mark.parametrize("call, pattern", [
    (lambda: fastconv.conv1d(np.ones((2, 8, 3)), np.ones((3, 4, 6))),
     r"weight of shape \(3, 4, 6\) \(k, C_in // groups, C_out\), expected input \(2, 8, 3\) "
     r"\[NLC\]"),
    (lambda: fastconv.conv1d_backward(np.ones((2, 6, 6)), np.ones((2, 8, 3)), np.ones((3, 4, 6))),
     r"weight of shape \(3, 4, 6\).*\(2, 8, 3\) \[NLC\]"),
    (lambda: fastconv.conv1d(np.ones((2, 2, 4)), np.ones((5, 4, 5))),
     r"padded input size \(2,\) \(L\) is smaller than the dilated kernel size \(5,\) \(L\)"),
    (lambda: fastconv.conv_transpose1d(np.ones((2, 8, 6)), np.ones((3, 4, 6)), output_padding=2),
     r"output_padding=2, stride=1, dilation=1$"),
    (lambda: fastconv.conv_transpose1d(np.ones((2, 1, 6)), np.ones((1, 4, 6)), padding=3),
     r"full output \(1,\) \(L\)"),
    (lambda: fastconv.conv1d(np.ones((2, 8, 4)), np.ones((3, 4, 5)), algorithm="winograd"),
     r"not a 1-D convolution"),
    (lambda: fastconv.conv1d(np.ones((2, 8, 4)), np.ones((3, 4, 5)), stride=(1, 2)),
     r"stride must be an int or a 1-tuple"),
])
def test_1d_errors_speak_of_what_was_passed(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern) as info:
        call()
    assert "(H, W)" not in str(info.value) and "NHWC" not in str(info.value)


def test_1d_arguments_take_1_tuples():
    x, w = np.random.default_rng(0).standard_normal((2, 9, 4)), np.ones((3, 4, 5))
    args = dict(stride=3, padding=1, dilation=2)
    as_tuples = {k: (v,) for k, v in args.items()}
    np.testing.assert_array_equal(fastconv.conv1d(x, w, **as_tuples), fastconv.conv1d(x, w, **args))
    gy = np.ones((2, 3, 5))
    for a, b in zip(fastconv.conv1d_backward(gy, x, w, **as_tuples),
                    fastconv.conv1d_backward(gy, x, w, **args)):
        np.testing.assert_array_equal(a, b)
    wt, xt = np.ones((3, 4, 5)), np.ones((2, 9, 5))
    y1 = fastconv.conv_transpose1d(xt, wt, output_padding=(1,), **as_tuples)
    np.testing.assert_array_equal(y1, fastconv.conv_transpose1d(xt, wt, output_padding=1, **args))
    fastconv.conv_transpose1d_backward(np.ones_like(y1), xt, wt, output_padding=(1,), **as_tuples)


# ----------------------------------------------------------------------------------------------
# thread counts: refused or capped, never a crash

def test_thread_counts_above_the_bound_are_refused():
    bound = 4 * os.cpu_count()
    for n in (bound + 1, 100000, 2**31 - 1):
        with pytest.raises(ValueError, match=rf"num_threads must be at most {bound}"):
            fastconv.set_num_threads(n)
        with pytest.raises(ValueError, match=rf"num_threads must be at most {bound}"):
            with fastconv.num_threads(n):
                pass  # pragma: no cover - never entered
    fastconv.set_num_threads(bound)
    fastconv.set_num_threads(None)


@pytest.mark.parametrize("value", ["100000", str(2**31 - 1)])
def test_a_huge_omp_num_threads_is_capped(value):
    code = ("import numpy as np, warnings, fastconv\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    n = fastconv.get_num_threads()\n"
            "y = fastconv.conv2d(np.ones((2, 64, 64, 16), np.float32), np.ones((3, 3, 16, 16), np.float32))\n"
            "print(n, len(seen), float(y[0, 0, 0, 0]))\n")
    env = dict(os.environ, OMP_NUM_THREADS=value, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(4 * os.cpu_count()), "1", "144.0"]
