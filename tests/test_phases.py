"""The input-gradient / transposed-convolution paths that do not run phase by phase:
kernel <= stride (every sub-pixel phase has one tap: one GEMM over all taps, _im2col.
transpose_single_tap), against the plain-NumPy references, for 1 and 2 threads."""
import numpy as np
import pytest

import fastconv
import reference
from _helpers import DTYPES, assert_close, case_id, pair, rand, resolve_padding

# ----------------------------------------------------------------------------------------------
# transposed convolutions whose phases have one tap each.
# x (N, H, W, C_in), w (kh, kw, C_out // groups, C_in); W >= 16 with groups=1, no column crop
# takes the GEMM-per-row form, the others the column-buffer form.
SINGLE_TAP = [
    dict(x=(1, 3, 16, 8), w=(2, 2, 4, 8), stride=2),  # U-Net-style, rows form, N=1
    dict(x=(2, 4, 17, 8), w=(2, 2, 3, 8), stride=2, padding=(1, 0), output_padding=1),
    dict(x=(2, 3, 5, 9), w=(3, 3, 2, 9), stride=3, padding=1, output_padding=2),  # buffer
    dict(x=(2, 3, 18, 8), w=(1, 2, 5, 8), stride=(1, 2)),
    dict(x=(1, 3, 16, 8), w=(1, 2, 3, 8), stride=(1, 2), padding=(0, 1)),  # column crop
    dict(x=(2, 3, 4, 8), w=(2, 2, 3, 8), stride=2, padding=((1, 0), (0, 1)),
         output_padding=(0, 1)),  # asymmetric crop
    dict(x=(2, 3, 16, 16), w=(2, 2, 3, 16), stride=2, groups=2),
    dict(x=(1, 4, 5, 24), w=(3, 2, 2, 24), stride=(3, 2), padding=(2, 1), groups=3,
         output_padding=(1, 0)),
    dict(x=(2, 3, 17, 8), w=(1, 1, 4, 8), stride=2, output_padding=1),  # kernel < stride
    dict(x=(1, 3, 4, 8), w=(2, 2, 3, 8), stride=3, dilation=2, padding=1),  # taps 0, 2 mod 3
    dict(x=(2, 2, 20, 8), w=(2, 3, 3, 8), stride=(2, 3), output_padding=(1, 2)),  # rows, op
]


def transpose_reference_args(case):
    kh, kw = case["w"][:2]
    stride, dilation = pair(case.get("stride", 1)), pair(case.get("dilation", 1))
    return dict(stride=stride,
                pads=resolve_padding(case.get("padding", 0), (kh, kw), stride, dilation, None),
                output_padding=pair(case.get("output_padding", 0)), dilation=dilation,
                groups=case.get("groups", 1))


def kwargs(case):
    return {k: v for k, v in case.items() if k not in ("x", "w")}


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("algorithm", ["im2col", "auto", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SINGLE_TAP, ids=case_id)
def test_single_tap_transpose_matches_reference(case, dtype, algorithm, with_bias, rng):
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    groups = case.get("groups", 1)
    bias = rand(rng, (case["w"][2] * groups,), dtype) if with_bias else None
    y = fastconv.conv_transpose2d(x, w, bias, **kwargs(case), algorithm=algorithm)
    expected = reference.conv_transpose2d(x, w, bias, **transpose_reference_args(case))
    assert_close(y, expected, dtype, case["x"][3] // groups, "conv_transpose2d")


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_tap_transpose_non_contiguous_input(dtype, rng):
    base = rand(rng, (2, 16, 3, 12), dtype)
    x = base.transpose(0, 2, 1, 3)[..., ::-1][..., :8]  # (2, 3, 16, 8), no unit strides
    w = rand(rng, (2, 2, 5, 8), dtype)[..., ::-1].copy(order="F")
    assert not x.flags.c_contiguous
    y = fastconv.conv_transpose2d(x, w, stride=2, algorithm="im2col")
    expected = reference.conv_transpose2d(x, w, stride=(2, 2))
    assert_close(y, expected, dtype, 8, "conv_transpose2d")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", [0, 1, ((1, 0), (0, 1))])
def test_single_tap_conv_input_gradient(dtype, padding, rng):
    """conv2d with kernel == stride (a patchify layer): its input gradient is a transposed
    convolution with one tap per phase."""
    x, w = rand(rng, (2, 9, 34, 8), dtype), rand(rng, (2, 2, 8, 6), dtype)
    y = fastconv.conv2d(x, w, stride=2, padding=padding)
    gy = rand(rng, y.shape, dtype)
    gx = fastconv.conv2d_backward(gy, x, w, stride=2, padding=padding, needs=("input",))[0]
    pads = resolve_padding(padding, (2, 2), (2, 2), (1, 1), (9, 34))
    expected = reference.conv2d_backward(gy, x, w, (2, 2), pads)[0]
    assert_close(gx, expected, dtype, 6, "grad_input")


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_tap_transpose_backward(dtype, rng):
    """The transposed layer's gradients (a strided 2x2 convolution and a weight gradient)."""
    x, w = rand(rng, (2, 4, 16, 8), dtype), rand(rng, (2, 2, 6, 8), dtype)
    gy = rand(rng, (2, 8, 32, 6), dtype)
    got = fastconv.conv_transpose2d_backward(gy, x, w, stride=2)
    expected = reference.conv_transpose2d_backward(gy, x, w, stride=(2, 2))
    for g, e, terms in zip(got, expected, (24, 64, 512)):
        assert_close(g, e, dtype, terms, "conv_transpose2d_backward")


def test_single_tap_non_finite_weight_reaches_only_its_pixels(rng):
    """A GEMM over all taps multiplies real products only: an infinite weight reaches the
    output pixels of its tap (and no pixel outside the taps, such as output_padding)."""
    x = rand(rng, (1, 3, 16, 8), np.float64)
    w = rand(rng, (2, 2, 2, 8), np.float64)
    w[1, 0, 1, 3] = np.inf
    y = fastconv.conv_transpose2d(x, w, stride=2, output_padding=1, algorithm="im2col")
    expected = reference.conv_transpose2d(x, w, stride=(2, 2), output_padding=(1, 1))
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(expected))
    assert np.isinf(y[0, 1::2, 0:32:2, 1]).all()
    np.testing.assert_array_equal(y[0, 6], 0)  # the output_padding row
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [SINGLE_TAP[1], SINGLE_TAP[2], SINGLE_TAP[6]], ids=case_id)
def test_single_tap_same_for_one_and_two_threads(case, rng):
    big = dict(case, x=(4, 8, case["x"][2] * 2, case["x"][3] * 4),
               w=(*case["w"][:3], case["w"][3] * 4))  # enough work to use both threads
    x, w = rand(rng, big["x"], np.float32), rand(rng, big["w"], np.float32)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append(fastconv.conv_transpose2d(x, w, **kwargs(big)))
    np.testing.assert_array_equal(results[0], results[1])
    expected = reference.conv_transpose2d(x, w, **transpose_reference_args(big))
    assert_close(results[0], expected, np.float32, big["x"][3], "conv_transpose2d")
