"""The input-gradient / transposed-convolution paths that do not run phase by phase:
kernel <= stride (every sub-pixel phase has one tap: one GEMM over all taps, _im2col.
transpose_single_tap), strided depthwise (all phases of a row in one pass, _direct.
data_depthwise) and GEMM + col2im (a GEMM per tap, _im2col.conv_backward_data), against the
plain-NumPy references, for 1 and 2 threads."""
import numpy as np
import pytest

import fastconv
import reference
from fastconv import _algorithms
from _helpers import (DTYPES, assert_close, case_id, conv_args, conv_reference_args, pair, rand,
                      resolve_padding, transpose_reference_args)

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


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("algorithm", ["im2col", "auto", "direct"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SINGLE_TAP, ids=case_id)
def test_single_tap_transpose_matches_reference(case, dtype, algorithm, with_bias, rng):
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    groups = case.get("groups", 1)
    bias = rand(rng, (case["w"][2] * groups,), dtype) if with_bias else None
    y = fastconv.conv_transpose2d(x, w, bias, **conv_args(case), algorithm=algorithm)
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
            results.append(fastconv.conv_transpose2d(x, w, **conv_args(big)))
    np.testing.assert_array_equal(results[0], results[1])
    expected = reference.conv_transpose2d(x, w, **transpose_reference_args(big))
    assert_close(results[0], expected, np.float32, big["x"][3], "conv_transpose2d")


# ----------------------------------------------------------------------------------------------
# strided depthwise input gradients: x (N, H, W, C), kernel, stride, padding, dilation,
# depth multiplier

DEPTHWISE = [
    dict(x=(2, 9, 11, 5), k=(3, 3), stride=2),  # odd sizes, padding 0, C < one vector
    dict(x=(1, 9, 11, 20), k=(3, 3), stride=2, padding=1),  # N=1
    dict(x=(2, 10, 7, 33), k=(3, 3), stride=2, padding=2),  # C not a multiple of 16
    dict(x=(2, 10, 7, 16), k=(3, 3), stride=2, padding=((1, 0), (0, 2))),  # asymmetric
    dict(x=(2, 12, 13, 17), k=(5, 5), stride=(3, 2), padding=((2, 1), (1, 2))),
    dict(x=(1, 12, 13, 16), k=(3, 3), stride=2, padding=2, dilation=2),
    dict(x=(2, 8, 9, 7), k=(3, 2), stride=(2, 3), padding=((1, 1), (0, 1)), dilation=(3, 2)),
    dict(x=(2, 9, 9, 6), k=(3, 3), stride=2, padding=1, multiplier=2),  # depth multiplier 2
    dict(x=(2, 7, 8, 3), k=(1, 1), stride=2),  # phases without a tap
    dict(x=(2, 9, 10, 32), k=(4, 4), stride=4),  # kernel == stride
    dict(x=(2, 3, 4, 16), k=(5, 5), stride=2, padding=2),  # more taps than input
]


def depthwise_arrays(case, dtype, rng):
    c = case["x"][3]
    x = rand(rng, case["x"], dtype)
    w = rand(rng, (*case["k"], 1, c * case.get("multiplier", 1)), dtype)
    conv = dict(stride=case["stride"], padding=case.get("padding", 0),
                dilation=case.get("dilation", 1), groups=c)
    gy = rand(rng, fastconv.conv2d(x, w, **conv).shape, dtype)
    stride, dilation = pair(conv["stride"]), pair(conv["dilation"])
    pads = resolve_padding(conv["padding"], case["k"], stride, dilation, case["x"][1:3])
    ref = dict(stride=stride, pads=pads, dilation=dilation, groups=c)
    return x, w, gy, conv, ref


@pytest.fixture(params=[False, True], ids=["stores", "streamed"])
def streamed(request, monkeypatch):
    """Both ways the depthwise kernel writes its rows: straight into the output, or through
    a row buffer with non-temporal stores (which only large outputs take by themselves)."""
    monkeypatch.setattr(_algorithms, "STREAM_BYTES", 0 if request.param else 2 ** 62)
    return request.param


@pytest.mark.parametrize("algorithm", ["direct", "auto", "im2col"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DEPTHWISE, ids=case_id)
def test_depthwise_strided_input_gradient(case, dtype, algorithm, streamed, rng):
    x, w, gy, conv, ref = depthwise_arrays(case, dtype, rng)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **conv, algorithm=algorithm,
                                         needs=("input", "weight"))
    ex, ew, _ = reference.conv2d_backward(gy, x, w, **ref)
    assert_close(gx, ex, dtype, case["k"][0] * case["k"][1] * case.get("multiplier", 1),
                 "grad_input")
    assert_close(gw, ew, dtype, gy.shape[0] * gy.shape[1] * gy.shape[2], "grad_weight")


@pytest.mark.parametrize("case", [DEPTHWISE[2], DEPTHWISE[4], DEPTHWISE[6]], ids=case_id)
def test_depthwise_gradients_same_for_one_and_two_threads(case, streamed, rng):
    big = dict(case, x=(4, case["x"][1] * 3, case["x"][2] * 3, case["x"][3]))
    x, w, gy, conv, ref = depthwise_arrays(big, np.float32, rng)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append(fastconv.conv2d_backward(gy, x, w, **conv, needs=("input", "weight")))
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
    expected = reference.conv2d_backward(gy, x, w, **ref)
    assert_close(results[0][0], expected[0], np.float32, 25, "grad_input")
    assert_close(results[0][1], expected[1], np.float32, gy[..., 0].size, "grad_weight")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    dict(x=(2, 5, 6, 20), w=(3, 3, 1, 20), stride=2, padding=1, output_padding=1),
    dict(x=(1, 4, 5, 3), w=(4, 4, 1, 3), stride=2, padding=(1, 2), output_padding=(0, 1)),
    dict(x=(2, 4, 5, 16), w=(2, 2, 1, 16), stride=2, output_padding=(1, 0)),
], ids=case_id)
def test_depthwise_strided_transpose_with_bias(case, dtype, streamed, rng):
    c = case["x"][3]
    x, w, bias = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype), rand(rng, (c,), dtype)
    y = fastconv.conv_transpose2d(x, w, bias, **conv_args(case), groups=c)
    expected = reference.conv_transpose2d(x, w, bias, **dict(transpose_reference_args(case),
                                                              groups=c))
    assert_close(y, expected, dtype, case["w"][0] * case["w"][1], "conv_transpose2d")


def test_depthwise_input_gradient_non_finite_weight(rng):
    """Taps that fall outside grad_output contribute nothing, not 0 * inf."""
    x, w = rand(rng, (1, 7, 7, 16), np.float64), rand(rng, (3, 3, 1, 16), np.float64)
    w[0, 0, 0, 2] = np.inf
    gy = rand(rng, fastconv.conv2d(x, w, stride=2, padding=1, groups=16).shape, np.float64)
    gx = fastconv.conv2d_backward(gy, x, w, stride=2, padding=1, groups=16, needs=("input",))[0]
    expected = reference.conv2d_backward(gy, x, w, (2, 2), ((1, 1), (1, 1)), groups=16)[0]
    np.testing.assert_array_equal(np.isfinite(gx), np.isfinite(expected))
    assert np.isfinite(gx[..., 2]).any() and not np.isfinite(gx[..., 2]).all()
    finite = np.isfinite(expected)
    np.testing.assert_allclose(gx[finite], expected[finite], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding, dilation", [(3, 1), ((3, 4), 1), (5, 2), ((0, 3), 1)])
def test_depthwise_input_gradient_with_padding_beyond_the_taps(padding, dilation, dtype, rng):
    """Padding wider than the dilated 3x3 kernel's reach makes the stride-1 input gradient
    a convolution that crops grad_output (a negative left offset). Its rows must stay in
    their place in grad_input: the kernel once wrote before each row, over the previous
    row's pixels and, for the first row, the heap."""
    c = 16
    x, w = rand(rng, (2, 7, 9, c), dtype), rand(rng, (3, 3, 1, c), dtype)
    gy = rand(rng, fastconv.conv2d(x, w, padding=padding, dilation=dilation,
                                   groups=c).shape, dtype)
    gx = fastconv.conv2d_backward(gy, x, w, padding=padding, dilation=dilation, groups=c,
                                  needs=("input",))[0]
    pads = resolve_padding(padding, (3, 3), (1, 1), (dilation, dilation), x.shape[1:3])
    ref = reference.conv2d_backward(gy, x, w, pads=pads, dilation=(dilation, dilation),
                                    groups=c)[0]
    assert_close(gx, ref, dtype, 9, "grad_input")


# ----------------------------------------------------------------------------------------------
# input gradients as GEMM + col2im (_im2col.conv_backward_data): "im2col" with one group, and
# "auto" for few pixels of grad_output. Channel counts around the vector width (the chunks of
# input channels are whole vectors) and the chunk split.
GEMM_DATA = [
    dict(x=(1, 4, 4, 16), w=(3, 3, 16, 17), padding=1),  # ResNet's last stage, small
    dict(x=(2, 5, 7, 15), w=(3, 3, 15, 9), padding=1),  # odd sizes, few pixels
    dict(x=(1, 9, 8, 33), w=(3, 3, 33, 8), stride=2, padding=1),  # strided, 33 channels
    dict(x=(1, 7, 9, 17), w=(2, 3, 17, 5), stride=(3, 1), dilation=(1, 2),
         padding=((2, 0), (1, 3))),  # stride > kernel, dilation, asymmetric padding
    dict(x=(2, 6, 6, 1), w=(3, 3, 1, 4)),  # C_in = 1, no padding
    dict(x=(1, 3, 3, 64), w=(5, 5, 64, 3), padding=2),  # taps reaching beyond the input
    dict(x=(1, 12, 10, 40), w=(3, 3, 40, 24), padding=1),  # 120 pixels: "auto" runs phases
    dict(x=(3, 4, 4, 20), w=(3, 3, 20, 16), padding=1),  # 3 images of 16 pixels
    dict(x=(0, 4, 4, 8), w=(3, 3, 8, 8), padding=1),  # N = 0
]


@pytest.mark.parametrize("algorithm", ["im2col", "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEMM_DATA, ids=case_id)
def test_gemm_input_gradient_matches_reference(case, dtype, algorithm, rng):
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    y = fastconv.conv2d(x, w, **conv_args(case))
    gy = rand(rng, y.shape, dtype)
    gx = fastconv.conv2d_backward(gy, x, w, **conv_args(case), algorithm=algorithm,
                                  needs=("input",))[0]
    expected = reference.conv2d_backward(gy, x, w, **conv_reference_args(case))[0]
    assert gx.shape == x.shape and gx.dtype == dtype
    assert_close(gx, expected, dtype, case["w"][0] * case["w"][1] * case["w"][3], "grad_input")


def test_gemm_input_gradient_is_auto_for_few_pixels():
    """"auto" takes GEMM + col2im up to one blocked work item of pixels per image of
    grad_output, at any batch size, with more than one tap and one group; the rule says
    so."""
    def chosen(x_shape, w_shape, groups=1, stride=1):
        geo = fastconv._params.conv_geometry("t", x_shape, w_shape, stride, 1, 1, groups)
        return _algorithms.describe(geo)["input_gradient"]
    limit = _algorithms.BLOCKED_ITEM_PIXELS
    assert limit == 48
    kernel, reason = chosen((1, 4, 4, 512), (3, 3, 512, 512))
    assert kernel == "im2col" and f"16 pixels per image, at most {limit}" in reason
    assert chosen((8, 4, 4, 512), (3, 3, 512, 512))[0] == "im2col"
    assert chosen((2, 6, 8, 512), (3, 3, 512, 512))[0] == "im2col"  # 48 pixels
    assert chosen((1, 7, 7, 256), (3, 3, 256, 256))[0] != "im2col"  # 49 pixels
    assert chosen((1, 4, 4, 512), (1, 1, 512, 512))[0] != "im2col"  # one tap
    assert chosen((1, 4, 4, 512), (3, 3, 256, 512), groups=2)[0] != "im2col"
    assert chosen((1, 8, 8, 256), (3, 3, 256, 512), stride=2)[0] == "im2col"  # 4x4 out


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_input_gradient_tiles_and_strided_grad_output(dtype, rng, monkeypatch):
    """A product larger than the column buffer runs in tiles of pixels (a buffer of 1 KiB
    here), each added in; a grad_output that is a view is read as its copy."""
    monkeypatch.setattr(_algorithms, "COLUMN_BUFFER_BYTES", 1024)
    x, w = rand(rng, (2, 9, 11, 12), dtype), rand(rng, (3, 3, 12, 10), dtype)
    gy = rand(rng, (2, 9, 11, 20), dtype)[..., ::2]
    assert not gy.flags.c_contiguous
    gx = fastconv.conv2d_backward(gy, x, w, padding=1, algorithm="im2col", needs=("input",))[0]
    expected = reference.conv2d_backward(gy, x, w, (1, 1), ((1, 1), (1, 1)))[0]
    assert_close(gx, expected, dtype, 90, "grad_input")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_transposed_convolution_with_bias(dtype, rng):
    """conv_transpose2d through GEMM + col2im: the bias set first, output_padding's pixels
    only the bias."""
    x, w, bias = rand(rng, (2, 3, 4, 8), dtype), rand(rng, (3, 3, 5, 8), dtype), rand(
        rng, (5,), dtype)
    case = dict(x=(2, 3, 4, 8), w=(3, 3, 5, 8), stride=2, padding=1, output_padding=1)
    y = fastconv.conv_transpose2d(x, w, bias, **conv_args(case), algorithm="im2col")
    expected = reference.conv_transpose2d(x, w, bias, **transpose_reference_args(case))
    assert_close(y, expected, dtype, 72, "conv_transpose2d")


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_im2col")))
@pytest.mark.parametrize("buffer", [256 * 1024, 4096])
def test_gemm_input_gradient_same_for_one_and_two_threads(level, buffer, rng, monkeypatch):
    """Each thread adds into its own chunks of input channels (as many whatever the thread
    count), each value summed tap by tap: the same bits for any thread count, with all
    pixels in one tile and in tiles that cut images (a 4 KiB column buffer), in every
    instruction-set variant."""
    monkeypatch.setitem(_algorithms.KERNELS, "im2col", _algorithms.simd_modules("_im2col")[level])
    monkeypatch.setattr(_algorithms, "COLUMN_BUFFER_BYTES", buffer)
    x, w = rand(rng, (3, 5, 6, 256), np.float32), rand(rng, (3, 3, 256, 64), np.float32)
    gy = rand(rng, (3, 5, 6, 64), np.float32)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append(fastconv.conv2d_backward(gy, x, w, padding=1, algorithm="im2col",
                                                    needs=("input",))[0])
    np.testing.assert_array_equal(results[0], results[1])
    expected = reference.conv2d_backward(gy, x, w, (1, 1), ((1, 1), (1, 1)))[0]
    assert_close(results[0], expected, np.float32, 576, "grad_input")
