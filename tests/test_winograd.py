"""algorithm="winograd" (F(4x4, 3x3)) against the plain-NumPy reference, its error bound,
where it applies, and what "auto" makes of it."""
import dataclasses
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastconv
import reference
from fastconv import _algorithms
from _helpers import resolve_padding

# README's documented bound for float32: max |y - y64| / max |y64| over the output
FLOAT32_BOUND = 1e-4
FLOAT64_BOUND = 1e-12


def relative_error(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def operands(rng, n, h, w, c_in, c_out, groups=1, dtype=np.float32):
    """Unit-variance input, fan-in-scaled weight (the setting of the documented bound)."""
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    weight = (rng.standard_normal((3, 3, c_in // groups, c_out))
              / np.sqrt(9 * c_in // groups)).astype(dtype)
    return x, weight


def bound(dtype):
    return FLOAT32_BOUND if np.dtype(dtype) == np.float32 else FLOAT64_BOUND


# (N, H, W, C_in, C_out, padding, groups): sizes that are not multiples of the 4x4 tile,
# smaller than a tile, a single pixel, asymmetric and "same" padding, groups, depthwise
CASES = [
    (1, 8, 8, 4, 4, 1, 1),
    (2, 7, 9, 3, 5, 1, 1),
    (1, 5, 13, 8, 16, 0, 1),
    (1, 3, 3, 2, 3, 0, 1),  # kernel = input: one output pixel
    (1, 2, 3, 3, 2, 2, 1),  # H, W < 4, output larger than the input
    (3, 1, 1, 1, 1, 1, 1),  # C = 1, one pixel, all taps but the centre in the padding
    (1, 6, 11, 16, 8, ((0, 2), (1, 0)), 1),
    (2, 9, 6, 6, 6, ((2, 0), (0, 1)), 1),
    (1, 10, 7, 5, 7, "same", 1),
    (1, 12, 12, 8, 12, 1, 2),  # groups
    (2, 9, 10, 6, 6, 1, 6),  # depthwise
    (1, 17, 19, 32, 40, 1, 1),  # several blocks of tiles
    # output channels one past the packed weight's blocks (16 and 64 float32 channels with
    # AVX2 and AVX-512), and per group
    (1, 9, 9, 24, 65, 1, 1),
    (2, 8, 13, 10, 34, 1, 2),
]


def case_id(case):
    n, h, w, ci, co, pad, g = case
    return f"n{n}-{h}x{w}-{ci}to{co}-p{pad}-g{g}".replace(" ", "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_reference(rng, case, dtype):
    n, h, w, c_in, c_out, padding, groups = case
    x, weight = operands(rng, n, h, w, c_in, c_out, groups, dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    y = fastconv.conv2d(x, weight, bias, padding=padding, groups=groups, algorithm="winograd")
    pads = resolve_padding(padding, (3, 3), (1, 1), (1, 1), (h, w))
    expected = reference.conv2d(x, weight, bias, pads=pads, groups=groups)
    assert y.dtype == dtype and y.shape == expected.shape
    assert relative_error(y, expected) <= bound(dtype)


@pytest.mark.parametrize("tiles, block", [(1, 4), (49, 16), (98, 28), (384, 96), (392, 100),
                                          (512, 128), (513, 68), (1568, 100)])
def test_streamed_winograd_blocks(tiles, block):
    # a multiple of 4 blocks of at most STREAMED_WINOGRAD_MAX_BLOCK tiles, a multiple of 4
    # (64 channels: a thread's tiles far within the cache)
    assert _algorithms.streamed_winograd_block(tiles, 64, 4) == block
    assert block % 4 == 0 and block <= _algorithms.STREAMED_WINOGRAD_MAX_BLOCK
    assert -(-tiles // block) <= 4 * -(-tiles // (4 * _algorithms.STREAMED_WINOGRAD_MAX_BLOCK))


def test_streamed_winograd_blocks_fit_the_cache(monkeypatch):
    # at most as many tiles as keep a thread's transformed tiles (36 x block x (C_in +
    # C_out)) in half the last-level cache, also for an explicit algorithm="winograd"
    # (winograd_block): 16 MiB / (36 x 1024 x 4 B) = 113 -> 112; 16384 channels: 4
    monkeypatch.setattr(_algorithms, "MACHINE", dataclasses.replace(
        _algorithms.MACHINE, l3=32 * 2**20, l3_shared_by=2))
    assert _algorithms.streamed_winograd_block(3136, 1024, 4) == 112
    assert _algorithms.streamed_winograd_block(3136, 1024, 8) == 56
    assert _algorithms.winograd_block(8, 16384, 4, 392, weight_bytes=2**40) == 4


def test_streamed_winograd_refusal(monkeypatch):
    facts = _algorithms.MACHINE
    for last_level, pays in ((32 * 2**20, True), (8 * 2**20, False)):
        monkeypatch.setattr(_algorithms, "MACHINE", dataclasses.replace(
            facts, l3=last_level, l3_shared_by=2))
        # 512 -> 512 at 8x28x28: blocks of 100 tiles, 14.1 MiB of transformed tiles
        refusal = _algorithms.streamed_winograd_refusal(392, 1024, 4, 96)
        assert refusal == ("" if pays else "and 96 of its tiles (13.5 MiB) > half the "
                                           "last-level cache")
        assert _algorithms.streamed_winograd_refusal(196, 1024, 4, 96) == (
            "and 196 tiles make blocks of 52 < 96")
        assert _algorithms.streamed_winograd_refusal(392, 64, 4, 96) == ""
        # the forward kernel's blocks (STREAMED_WINOGRAD_MIN_BLOCK: 8 tiles)
        assert _algorithms.streamed_winograd_refusal(196, 1024, 4, 8) == ""
        assert _algorithms.streamed_winograd_refusal(16, 1024, 4, 8) == (
            "and 16 tiles make blocks of 4 < 8")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_beyond_the_cache_in_streamed_blocks(rng, monkeypatch, dtype):
    # a transformed weight beyond WINOGRAD_MAX_WEIGHT_BYTES runs in blocks of
    # streamed_winograd_block tiles (here 2 x 9 x 10 = 180 tiles: 4 blocks of 48)
    monkeypatch.setattr(_algorithms, "WINOGRAD_MAX_WEIGHT_BYTES", 0)
    blocks = []
    chosen = _algorithms.streamed_winograd_block
    monkeypatch.setattr(_algorithms, "streamed_winograd_block",
                        lambda *args: blocks.append(chosen(*args)) or chosen(*args))
    x, weight = operands(rng, 2, 35, 38, 24, 40, dtype=dtype)
    bias = rng.standard_normal(40).astype(dtype)
    y = fastconv.conv2d(x, weight, bias, padding=1, algorithm="winograd")
    assert blocks == [48]
    expected = reference.conv2d(x, weight, bias, pads=((1, 1), (1, 1)))
    assert relative_error(y, expected) <= bound(dtype)
    # the input gradient (the forward kernel) and the weight gradient alike, on 1 and 2 threads
    gy = rng.standard_normal(y.shape).astype(dtype)
    ref_gx, ref_gw, _ = reference.conv2d_backward(gy, x, weight, pads=((1, 1), (1, 1)))
    for threads in (1, 2):
        blocks.clear()
        with fastconv.num_threads(threads):
            gx, gw, _ = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd")
        assert sorted(blocks) == [48, 48]
        assert relative_error(gx, ref_gx) <= bound(dtype)
        assert relative_error(gw, ref_gw) <= bound(dtype)
        if threads == 1:
            one = gx, gw
    np.testing.assert_array_equal(gx, one[0])
    np.testing.assert_array_equal(gw, one[1])
    # the kernel counts the transformed weight as the rule does, without its blocks' padding
    # (24 -> 40 channels: 36 x 24 x 40 values, more once 40 is padded to whole blocks)
    monkeypatch.setattr(_algorithms, "WINOGRAD_MAX_WEIGHT_BYTES", 36 * 24 * 40 * x.itemsize)
    blocks.clear()
    fastconv.conv2d(x, weight, bias, padding=1, algorithm="winograd")
    assert blocks == []


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_padding_modes(rng, mode):
    x, weight = operands(rng, 2, 9, 7, 4, 6, dtype=np.float64)
    y = fastconv.conv2d(x, weight, padding=1, padding_mode=mode, algorithm="winograd")
    expected = reference.conv2d(x, weight, pads=((1, 1), (1, 1)), mode=mode)
    assert relative_error(y, expected) <= FLOAT64_BOUND


def test_layouts_and_unbatched(rng):
    """Fortran-ordered and strided inputs, and a 3-D (unbatched) image."""
    x, weight = operands(rng, 1, 11, 9, 6, 5, dtype=np.float64)
    expected = reference.conv2d(x, weight, pads=((1, 1), (1, 1)))
    fortran = np.asfortranarray(x)
    strided = np.repeat(x, 2, axis=2)[:, :, ::2]
    for arr in (fortran, strided):
        y = fastconv.conv2d(arr, weight, padding=1, algorithm="winograd")
        assert relative_error(y, expected) <= FLOAT64_BOUND
    y = fastconv.conv2d(x[0], np.asfortranarray(weight), padding=1, algorithm="winograd")
    assert y.shape == expected.shape[1:]
    assert relative_error(y, expected[0]) <= FLOAT64_BOUND


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_gradient_and_transposed(rng, dtype):
    """The input gradient of a 3x3 stride-1 convolution (and a 3x3 stride-1 transposed
    convolution, the same computation) through Winograd, against the references."""
    x, weight = operands(rng, 2, 10, 9, 6, 8, dtype=dtype)
    gy = rng.standard_normal((2, 10, 9, 8)).astype(dtype)
    pads = ((1, 1), (1, 1))
    gx, gw, gb = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd")
    ref_gx, ref_gw, ref_gb = reference.conv2d_backward(gy, x, weight, pads=pads)
    for got, want in ((gx, ref_gx), (gw, ref_gw), (gb, ref_gb)):
        assert got.dtype == dtype
        assert relative_error(got, want) <= bound(dtype)
    t = fastconv.conv_transpose2d(gy, weight, padding=1, algorithm="winograd")
    assert relative_error(t, reference.conv_transpose2d(gy, weight, pads=pads)) <= bound(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_reference(rng, case, dtype):
    """Input and weight gradients through Winograd over the grid of shapes."""
    n, h, w, c_in, c_out, padding, groups = case
    x, weight = operands(rng, n, h, w, c_in, c_out, groups, dtype)
    pads = resolve_padding(padding, (3, 3), (1, 1), (1, 1), (h, w))
    out_hw = (h + sum(pads[0]) - 2, w + sum(pads[1]) - 2)
    gy = rng.standard_normal((n, *out_hw, c_out)).astype(dtype)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, weight, padding=padding, groups=groups,
                                         algorithm="winograd")
    ref_gx, ref_gw, _ = reference.conv2d_backward(gy, x, weight, pads=pads, groups=groups)
    assert gx.dtype == gw.dtype == dtype
    assert relative_error(gx, ref_gx) <= bound(dtype)
    assert relative_error(gw, ref_gw) <= bound(dtype)


def test_transposed_backward(rng):
    """conv_transpose2d_backward: its input gradient is a 3x3 stride-1 convolution, its
    weight gradient that of one."""
    x, weight = operands(rng, 2, 9, 10, 6, 4, dtype=np.float64)  # x: the transposed conv's input
    gy = rng.standard_normal((2, 9, 10, 6))
    gx, gw, _ = fastconv.conv_transpose2d_backward(gy, x[..., :4], weight, padding=1,
                                                   algorithm="winograd")
    ref_gx, ref_gw, _ = reference.conv_transpose2d_backward(gy, x[..., :4], weight,
                                                            pads=((1, 1), (1, 1)))
    assert relative_error(gx, ref_gx) <= FLOAT64_BOUND
    assert relative_error(gw, ref_gw) <= FLOAT64_BOUND


@pytest.mark.parametrize("k", [5, 6, 7])
def test_phases_of_strided_input_gradients(rng, k):
    """A k x k stride-2 convolution's input gradient has a 3x3 sub-pixel phase, which "auto"
    runs through Winograd into a strided view of the result."""
    x = rng.standard_normal((4, 30, 27, 16))
    weight = rng.standard_normal((k, k, 16, 32)) / k
    pads = ((k // 2, k // 2), (k // 2, k // 2))
    gy_shape = fastconv.conv2d(x, weight, stride=2, padding=k // 2).shape
    gy = rng.standard_normal(gy_shape)
    from fastconv._algorithms import for_convolution
    assert for_convolution("auto", (3, 3, 32, 16), (4, 15, 14, 16), 8, (1, 1), (1, 1),
                           1) == "winograd"
    gx = fastconv.conv2d_backward(gy, x, weight, stride=2, padding=k // 2, needs="input")[0]
    ref = reference.conv2d_backward(gy, x, weight, stride=(2, 2), pads=pads)[0]
    assert relative_error(gx, ref) <= FLOAT64_BOUND


def test_adjoint_identity(rng):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>, both through Winograd."""
    x, weight = operands(rng, 2, 13, 11, 5, 7, dtype=np.float64)
    y = rng.standard_normal((2, 13, 11, 7))
    left = np.vdot(fastconv.conv2d(x, weight, padding=1, algorithm="winograd"), y)
    right = np.vdot(x, fastconv.conv_transpose2d(y, weight, padding=1, algorithm="winograd"))
    assert abs(left - right) <= 1e-10 * abs(left)


@pytest.mark.parametrize("name", ["resnet_3x3_56", "resnet_3x3_28", "resnet_3x3_14",
                                  "vgg_3x3_112"])
def test_float32_error_bound_on_suite_layers(rng, name):
    """The documented bound on the suite's 3x3 stride-1 layers (one image each)."""
    from fastconv._bench import LAYERS

    layer = LAYERS[name]
    x, weight = operands(rng, 1, layer.hw, layer.hw, layer.c_in, layer.c_out)
    y = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
    expected = reference.conv2d(x, weight, pads=((1, 1), (1, 1)))
    assert relative_error(y, expected) <= FLOAT32_BOUND


def test_threads_give_identical_results(rng):
    x, weight = operands(rng, 4, 23, 21, 16, 24)
    gy = rng.standard_normal((4, 23, 21, 24)).astype(np.float32)
    results = []
    for threads in (1, 2):
        with fastconv.num_threads(threads):
            results.append((fastconv.conv2d(x, weight, padding=1, algorithm="winograd"),
                            *fastconv.conv2d_backward(gy, x, weight, padding=1,
                                                      algorithm="winograd")))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_input_as_direct(rng, value):
    """Winograd would spread an infinite input over its whole tile (inf - inf = NaN): such
    inputs are computed as the direct kernel does."""
    x, weight = operands(rng, 1, 9, 9, 4, 4, dtype=np.float64)
    x[0, 4, 4, 1] = value
    y = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
    expected = fastconv.conv2d(x, weight, padding=1, algorithm="direct")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.isnan(expected).sum() + np.isinf(expected).sum() == 9 * 4  # one pixel's window
    assert relative_error(y[finite], expected[finite]) <= FLOAT64_BOUND
    gy = rng.standard_normal(y.shape)
    gw = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd",
                                  needs="weight")[1]
    expected = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="direct",
                                        needs="weight")[1]
    np.testing.assert_array_equal(gw, expected)  # the same kernel: NaN where direct has NaN
    assert not np.isfinite(expected[:, :, 1]).any() and np.isfinite(expected[:, :, 0]).all()


@pytest.mark.parametrize("huge", [1e37, 3e38])
def test_huge_finite_inputs(rng, huge):
    """Values so large that the transforms could overflow are computed by the direct kernel:
    finite outputs where direct convolution has them."""
    x, weight = operands(rng, 1, 8, 8, 4, 4)
    x[0, 3, 3, 0] = huge
    gy = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fastconv.conv2d(x, weight, padding=1, algorithm="winograd")
        gw = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd",
                                      needs="weight")[1]
    np.testing.assert_array_equal(y, fastconv.conv2d(x, weight, padding=1, algorithm="direct"))
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(gw, fastconv.conv2d_backward(
        gy, x, weight, padding=1, algorithm="direct", needs="weight")[1])


# issue 15: finite results within ~10x of the largest float whose Winograd transforms overflow
# (sign patterns of one 4x4 tile; scaled to the dtype below)
OVERFLOW_X = np.array([[-1, 1, -1, 1], [1, 1, 1, 1], [-1, 1, 1, -1], [1, 1, -1, 1]], float)
OVERFLOW_W = np.array([[1, 0, 1], [0, 1, -1], [1, 0, 1]], float)
OVERFLOW_WGRAD_X = np.array([[1, 1, 1, -1], [-1, -1, -1, -1], [-1, 1, 1, 1], [1, 1, 1, 1]], float)
OVERFLOW_WGRAD_GY = np.array([[1, 1, 1, 1], [-1, 1, 1, -1], [-1, 1, 1, -1], [1, 1, 1, -1]], float)


def _embedded(pattern, channels, size):
    """A 4x4 pattern at the top left of one (1, size, size, channels) image, channel 0, the
    rest zeros: the same results on its first tile, and for size 32 and 8 or more channels
    enough tiles and channels for "auto" to choose Winograd."""
    out = np.zeros((1, size, size, channels), pattern.dtype)
    out[0, :4, :4, 0] = pattern
    return out


@pytest.mark.parametrize("algorithm", ["winograd", "auto"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_operands_whose_transforms_would_overflow(dtype, algorithm):
    """Where the transforms could reach beyond the largest float, the direct kernel runs:
    forward (issue 15's example: Winograd gave -inf for 1.134e37), input gradient (the same
    convolution, rotated) and weight gradient, each the direct kernel's finite result."""
    big = float(np.finfo(dtype).max)
    size, c_in, c_out = (32, 8, 64) if algorithm == "auto" else (4, 1, 1)
    scale = big / float(np.finfo(np.float32).max)
    x = _embedded((3e32 * scale * OVERFLOW_X).astype(dtype), c_in, size)
    w = np.zeros((3, 3, c_in, c_out), dtype)
    w[:, :, 0, 0] = 18904.574 * OVERFLOW_W
    if algorithm == "auto":  # the case is one where "auto" would choose Winograd
        assert _algorithms.for_convolution("auto", w.shape, (1, size, size, c_out),
                                           x.itemsize, (1, 1), (1, 1), 1) == "winograd"
    y = fastconv.conv2d(x, w, padding=1, algorithm=algorithm)
    direct = fastconv.conv2d(x, w, padding=1, algorithm="direct")
    assert np.isfinite(direct).all() and np.abs(direct).max() > big / 100
    np.testing.assert_array_equal(y, direct)
    # input gradient: the convolution of grad_output with the rotated weight (in and out
    # channels swapped), so the rotated example reaches the same values
    gy = np.ascontiguousarray(x[:, ::-1, ::-1])
    w_rot = np.ascontiguousarray(w[::-1, ::-1].swapaxes(2, 3))
    gx, expected = (fastconv.conv2d_backward(gy, np.zeros(y.shape, dtype), w_rot, padding=1,
                                             algorithm=a, needs="input")[0]
                    for a in (algorithm, "direct"))
    assert np.isfinite(expected).all() and np.abs(expected).max() > big / 100
    np.testing.assert_array_equal(gx, expected)
    # weight gradient: its largest tap sums 6 products of s * s, a tenth of the largest float
    s = np.sqrt(big / 60)
    xw = _embedded((s * OVERFLOW_WGRAD_X).astype(dtype), c_in, size)
    gyw = _embedded((s * OVERFLOW_WGRAD_GY).astype(dtype), c_out, size)
    gw, expected = (fastconv.conv2d_backward(gyw, xw, w, padding=1, algorithm=a,
                                             needs="weight")[1] for a in (algorithm, "direct"))
    assert np.isfinite(expected).all() and np.abs(expected).max() > big / 100
    np.testing.assert_array_equal(gw, expected)


@pytest.mark.parametrize("kwargs, got", [
    ({"weight_shape": (5, 5, 2, 3)}, "kernel (5, 5)"),
    ({"weight_shape": (3, 1, 2, 3)}, "kernel (3, 1)"),
    ({"stride": 2}, "stride (2, 2)"),
    ({"dilation": (1, 2)}, "dilation (1, 2)"),
])
def test_unserved_configurations_raise(rng, kwargs, got):
    weight = np.zeros(kwargs.pop("weight_shape", (3, 3, 2, 3)), np.float32)
    x = np.zeros((1, 9, 9, 2), np.float32)
    for call in (lambda: fastconv.conv2d(x, weight, algorithm="winograd", **kwargs),
                 lambda: fastconv.conv2d_backward(np.zeros(fastconv.conv2d(x, weight, **kwargs).shape,
                                                           np.float32),
                                                  x, weight, algorithm="winograd", **kwargs)):
        with pytest.raises(ValueError, match="algorithm 'winograd' serves 3x3 kernels") as err:
            call()
        assert got in str(err.value) and "'direct'" in str(err.value)


def test_stride_that_cannot_matter_is_served(rng):
    """A stride that a single output pixel never uses is no reason to refuse."""
    x, weight = operands(rng, 1, 3, 3, 2, 2, dtype=np.float64)
    y = fastconv.conv2d(x, weight, stride=2, algorithm="winograd")
    assert relative_error(y, reference.conv2d(x, weight)) <= FLOAT64_BOUND


def test_auto_choice_and_opting_out(rng):
    """"auto" runs Winograd on a large 3x3 layer (also grouped), and the direct kernel once
    it is turned off (bit for bit); small, depthwise and few-input-channel layers do not."""
    def choice(weight_shape, out_shape, groups=1, dilation=(1, 1)):
        return _algorithms.for_convolution("auto", weight_shape, out_shape, 4, (1, 1), dilation,
                                           groups)

    assert choice((3, 3, 64, 64), (8, 56, 56, 64)) == "winograd"
    # not Winograd: direct, or the blocked direct kernel where it pays (blocked_pays)
    assert choice((3, 3, 64, 64), (1, 4, 4, 64)) in ("direct", "blocked")  # one tile
    assert choice((3, 3, 128, 128), (1, 28, 28, 128)) == "winograd"  # 49 tiles
    assert choice((3, 3, 128, 128), (1, 24, 24, 128)) == "winograd"  # 36 tiles
    assert choice((3, 3, 128, 128), (1, 20, 20, 128)) == "blocked"  # 25 tiles
    # a weight kept as Winograd's kernel takes it (an inference graph's convolution) from 16
    # tiles (64 channels: a transformed weight of 0.6 MiB, in any last-level cache),
    # transformed at each call (a function, a layer) from 32
    kept = _algorithms.for_convolution("auto", (3, 3, 64, 64), (1, 16, 16, 64), 4, (1, 1),
                                       (1, 1), 1, weight_kept=True)
    assert kept == "winograd" and choice((3, 3, 64, 64), (1, 16, 16, 64)) != "winograd"
    assert _algorithms.for_convolution("auto", (3, 3, 64, 64), (1, 12, 12, 64), 4, (1, 1),
                                       (1, 1), 1, weight_kept=True) != "winograd"  # 9 tiles
    from fastconv import _plan
    from fastconv.inference import FusedConv
    layer = fastconv.layers.Conv2d(64, 64, 3, padding=1, rng=0).eval()
    x = np.zeros((1, 16, 16, 64), np.float32)
    assert "16 < 32 Winograd tiles" in _plan.plan_for(layer, x).describe()["reason"]
    fused = FusedConv(layer)
    assert _plan.plan_for(fused, x).algorithm == "winograd"
    assert fused.describe(x.shape)["forward"] == "winograd"
    assert "9 < 16 Winograd tiles (its weight transformed once)" in fused.describe(
        (1, 12, 12, 64))["reason"]
    assert choice((3, 3, 32, 128), (8, 56, 56, 128), groups=4) == "winograd"
    assert choice((3, 3, 16, 128), (8, 56, 56, 128), groups=8) in ("direct", "blocked")  # 256 pairs
    assert choice((3, 3, 1, 32), (8, 56, 56, 32), groups=32) == "direct"  # depthwise
    # a first layer, C_in = 3: not Winograd; blocked reads its rows of taps as runs of 9
    assert choice((3, 3, 3, 64), (8, 56, 56, 64)) == "blocked"
    assert choice((3, 3, 3, 64), (8, 56, 56, 64), groups=1, dilation=(1, 2)) == "direct"
    # the smallest channel count whose transformed weight (36 x c x c floats) exceeds what
    # this machine's cache holds (_algorithms.WINOGRAD_MAX_WEIGHT_BYTES)
    c = math.isqrt(_algorithms.WINOGRAD_MAX_WEIGHT_BYTES // (36 * 4)) + 1
    # too large, and blocks of 8 tiles from 32 tiles up
    assert choice((3, 3, c, c), (8, 7, 7, c)) == "winograd"  # 32 tiles, blocks of 8
    # ... unless blocks of STREAMED_WINOGRAD_MIN_BLOCK (8) tiles or more share each read of
    # it (and their transformed tiles fit in half the last-level cache)
    assert choice((3, 3, c, c), (1, 28, 28, c)) == "winograd"  # 49 tiles, blocks of 16
    # the weight gradient, whose blocks add into partial sums of the transformed weight's
    # size, needs blocks of STREAMED_WINOGRAD_GRAD_MIN_BLOCK (96) (and a weight up to
    # WINOGRAD_MAX_GRAD_WEIGHT_BYTES only)
    streamed = not _algorithms.streamed_winograd_refusal(392, 2 * c, 4, 96)
    assert streamed == (36 * 96 * 2 * c * 4 <= _algorithms.MACHINE.last_level // 2)
    for n, hw, winograd in ((8, 14, False), (4, 28, False), (8, 28, streamed)):
        geo = fastconv._params.conv_geometry("t", (n, hw, hw, c), (3, 3, c, c), 1, 1, 1, 1)
        chosen = _algorithms.for_weight_gradient("auto", (3, 3, c, c), (n, hw, hw, c), 4, geo)
        assert (chosen == "winograd") == winograd, (n, hw, chosen)
    # ... and so that many tiles in all, however small its weight: 32 tiles are not enough
    # for a weight gradient, though they are for the forward convolution
    for n, hw, tiles in ((8, 7, 32), (1, 28, 49), (8, 14, 128)):
        geo = fastconv._params.conv_geometry("t", (n, hw, hw, 128), (3, 3, 128, 128), 1, 1, 1, 1)
        kernel, reason = _algorithms.weight_gradient_rule((3, 3, 128, 128), (n, hw, hw, 128), 4,
                                                          geo)
        assert (kernel == "winograd") == (tiles >= 96), (tiles, kernel)
        if tiles < 96:
            assert f"{tiles} < 96 Winograd tiles for the weight gradient" in reason
        assert choice((3, 3, 128, 128), (n, hw, hw, 128)) == "winograd"
    huge = math.isqrt(_algorithms.WINOGRAD_MAX_GRAD_WEIGHT_BYTES // (36 * 4)) + 1
    assert _algorithms.winograd_refusal(huge, huge, 1, (64, 56, 56, huge), 4,
                                        _algorithms.WINOGRAD_MAX_GRAD_WEIGHT_BYTES) == (
        f"Winograd's weight {36 * huge * huge * 4 / 2**20:.1f} MiB > "
        f"{_algorithms.WINOGRAD_MAX_GRAD_WEIGHT_BYTES / 2**20:.1f} MiB")
    x, weight = operands(rng, 2, 24, 24, 32, 32)
    assert fastconv.get_auto_winograd() is True
    auto = fastconv.conv2d(x, weight, padding=1)
    np.testing.assert_array_equal(auto, fastconv.conv2d(x, weight, padding=1,
                                                        algorithm="winograd"))
    try:
        fastconv.set_auto_winograd(False)
        assert fastconv.get_auto_winograd() is False
        assert choice((3, 3, 64, 64), (8, 56, 56, 64)) == "blocked"
        fallback = choice(weight.shape, auto.shape)
        assert fallback in ("direct", "blocked")
        np.testing.assert_array_equal(fastconv.conv2d(x, weight, padding=1),
                                      fastconv.conv2d(x, weight, padding=1, algorithm=fallback))
    finally:
        fastconv.set_auto_winograd(True)
    with pytest.raises(TypeError, match="expected enabled to be a bool, but got 'no'"):
        fastconv.set_auto_winograd("no")


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_winograd")))
def test_every_instruction_set_variant(rng, monkeypatch, level):
    """Each compiled variant of the kernel this CPU runs (fastconv itself uses the widest)."""
    monkeypatch.setitem(_algorithms.KERNELS, "winograd", _algorithms.simd_modules("_winograd")[level])
    assert _algorithms.KERNELS["winograd"].ISA == level
    for dtype in (np.float32, np.float64):
        x, weight = operands(rng, 2, 9, 11, 12, 20, dtype=dtype)
        bias = rng.standard_normal(20).astype(dtype)
        gy = rng.standard_normal((2, 9, 11, 20)).astype(dtype)
        pads = ((1, 1), (1, 1))
        y = fastconv.conv2d(x, weight, bias, padding=1, algorithm="winograd")
        assert relative_error(y, reference.conv2d(x, weight, bias, pads=pads)) <= bound(dtype)
        grads = fastconv.conv2d_backward(gy, x, weight, padding=1, algorithm="winograd")
        for got, want in zip(grads, reference.conv2d_backward(gy, x, weight, pads=pads)):
            assert relative_error(got, want) <= bound(dtype)


def test_a_weight_packed_for_another_variant_is_refused(rng):
    """The packed weight's blocks are the kernel variant's width: another's is an error, not
    uninitialised output (the kernels run without bounds checks)."""
    variants = _algorithms.simd_modules("_winograd")
    widths = {level: module.OUT_BLOCK["float32"] for level, module in variants.items()}
    if len(set(widths.values())) < 2:
        pytest.skip("one block width among the variants this CPU runs")
    narrow, wide = min(widths, key=widths.get), max(widths, key=widths.get)
    x, weight = operands(rng, 1, 8, 8, 16, 24)
    up = np.zeros((36, 1, -(-24 // widths[narrow]), 16, widths[narrow]), np.float32)
    assert variants[narrow].transform_weight(weight, up, 1) == 0
    y = np.empty((1, 8, 8, 24), np.float32)
    no_bias = np.zeros(0, np.float32)
    assert variants[narrow].conv_forward(x, up, no_bias, y, 1, 1, 1, 4, None, 1) == 0
    np.testing.assert_allclose(y, reference.conv2d(x, weight, pads=((1, 1), (1, 1))),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=f"blocks of {widths[narrow]} channels are not"):
        variants[wide].conv_forward(x, up, no_bias, y, 1, 1, 1, 4, None, 1)


def test_environment_variable_turns_auto_winograd_off():
    env = dict(os.environ, FASTCONV_AUTO_WINOGRAD="0")
    out = subprocess.run([sys.executable, "-c",
                          "import fastconv; print(fastconv.get_auto_winograd())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
