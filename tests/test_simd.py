"""Every instruction-set variant of the direct kernel this machine can run gives the
reference result (the library itself only runs the widest one)."""
import numpy as np
import pytest

import fastconv
import reference
from fastconv import _algorithms, functional

VARIANTS = _algorithms.simd_modules("_direct")

# (N, H, W, C_in, kh, kw, C_out, stride, dilation, groups, pad): full register blocks, ragged
# edges of pixels and channels, depthwise, grouped, strided, dilated, zero padding wider than
# the kernel reaches
CASES = [
    (2, 11, 19, 8, 3, 3, 40, 1, 1, 1, 1),
    (1, 9, 13, 3, 3, 3, 33, 2, 1, 1, 0),
    (2, 10, 23, 48, 3, 3, 48, 1, 1, 48, 1),
    (1, 12, 17, 37, 3, 3, 37, 2, 2, 37, 2),
    (2, 8, 21, 16, 1, 1, 16, 1, 1, 1, 0),
    (1, 12, 30, 12, 3, 2, 24, 1, 2, 3, 3),
    (3, 7, 9, 1, 5, 5, 6, 1, 1, 1, 4),
    (1, 3, 4, 8, 3, 3, 16, 1, 2, 1, 5),
]


def test_the_baseline_variant_is_always_there():
    assert "baseline" in VARIANTS


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_variant_forward_and_weight_gradient(level, dtype, case, rng):
    n, h, wd, c, kh, kw, cout, stride, dilation, groups, pad = case
    module = VARIANTS[level]
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    w = rng.standard_normal((kh, kw, c // groups, cout)).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype)
    expected = reference.conv2d(x, w, bias, (stride, stride), ((pad, pad), (pad, pad)),
                                (dilation, dilation), groups)
    y = np.empty(expected.shape, dtype)
    # the kernel's contract: output channels padded to its vector width (as conv2d does it)
    w_padded, bias_padded = functional._padded_weight(
        w, bias, groups, module.CHANNEL_BLOCK[np.dtype(dtype).name])
    depthwise = _algorithms.is_depthwise(w.shape, groups)
    operands = (functional._padded_depthwise_input(x, w_padded.shape[3]) if depthwise else x,
                w_padded, bias_padded)
    tol = 1e-4 if dtype == np.float32 else 1e-11
    # padded blocks through the window buffer, or pixel by pixel; rows straight into y, or
    # through a buffer streamed out
    for exact, stream in ((False, False), (True, False), (False, True), (True, True)):
        y[...] = np.nan
        module.conv_forward(*operands, y, pad, pad, stride, stride, dilation, dilation, groups,
                            exact, stream, None, 2)
        np.testing.assert_allclose(y, expected, rtol=tol, atol=tol * np.abs(expected).max())

    # weight gradient: sum over output pixels of window (x) gy, from the definition
    gy = rng.standard_normal(expected.shape).astype(dtype)
    partial = np.zeros((3, w.size), dtype)
    module.conv_backward_weight(x, gy, partial, kh, kw, pad, pad, stride, stride, dilation,
                                dilation, groups, 2)
    gw = partial.sum(axis=0).reshape(w.shape)
    ho, wo = expected.shape[1:3]
    cig, cog = c // groups, cout // groups
    want = np.zeros(w.shape)
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for r in range(kh):
        for s in range(kw):
            window = x[:, r * dilation: r * dilation + stride * (ho - 1) + 1: stride,
                       s * dilation: s * dilation + stride * (wo - 1) + 1: stride].astype(float)
            for g in range(groups):
                want[r, s, :, g * cog:(g + 1) * cog] = np.einsum(
                    "nhwi,nhwo->io", window[..., g * cig:(g + 1) * cig],
                    gy[..., g * cog:(g + 1) * cog].astype(float))
    np.testing.assert_allclose(gw, want, rtol=tol * 10, atol=tol * 10 * np.abs(want).max())


def test_depthwise_output_streamed_through_conv2d(rng, monkeypatch):
    """conv2d streams a large depthwise output (here: any, with the threshold lowered)."""
    monkeypatch.setattr(_algorithms, "STREAM_BYTES", 0)
    x = rng.standard_normal((2, 9, 13, 20)).astype(np.float32)
    w = rng.standard_normal((3, 3, 1, 20)).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    y = fastconv.conv2d(x, w, bias, padding=1, groups=20, algorithm="direct")
    expected = reference.conv2d(x, w, bias, (1, 1), ((1, 1), (1, 1)), (1, 1), 20)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("level", sorted(VARIANTS))
def test_a_stride_dilation_or_group_count_below_1_is_refused(level):
    """The kernels divide by these without a check (cdivision): a zero was a SIGFPE."""
    module = VARIANTS[level]
    ones = lambda *shape: np.ones(shape, np.float32)  # noqa: E731
    x, w, y = ones(1, 5, 5, 16), ones(3, 3, 16, 16), ones(1, 5, 5, 16)
    no_bias = np.zeros(0, np.float32)
    partial = np.zeros((1, 3 * 3 * 16 * 16), np.float32)
    calls = {
        "conv_forward": lambda s, d, g: module.conv_forward(
            x, w, no_bias, y, 1, 1, s, s, d, d, g, False, False, None, 1),
        "data_depthwise": lambda s, d, g: module.data_depthwise(
            x, ones(3, 3, 1, 16), no_bias, y, 1, 1, s, s, d, d, False, 1),
        "conv_backward_weight": lambda s, d, g: module.conv_backward_weight(
            x, y, partial, 3, 3, 1, 1, s, s, d, d, g, 1),
    }
    for name, call in calls.items():
        call(1, 1, 1)  # the same arguments with these at 1 run
        for bad in ((0, 1, 1), (1, 0, 1), (1, 1, 0), (-1, 1, 1)):
            if name == "data_depthwise" and bad[2] == 0:
                continue  # it takes no group count
            with pytest.raises(ValueError, match="stride, dilation and groups must be >= 1"):
                call(*bad)
                pytest.fail(f"{name}{bad}")
