"""conv1d, conv1d_backward, conv_transpose1d, conv_transpose1d_backward on (N, L, C) and (L, C):
against direct 1-D references, against the 2-D functions with H = 1, and argument errors."""
import math

import numpy as np
import pytest

import fastconv
import reference
from _helpers import ALGORITHMS, DTYPES, PADDING_MODES, assert_close, case_id, rand

# x (N, L, C_in), w (k, C_in // groups, C_out) and conv1d's keyword arguments
CONV_CASES = [
    dict(x=(2, 9, 3), w=(3, 3, 4)),
    dict(x=(2, 10, 4), w=(3, 4, 5), stride=2, padding=1),
    dict(x=(1, 11, 2), w=(2, 2, 3), stride=3),  # stride > kernel
    dict(x=(2, 9, 3), w=(4, 3, 2), padding=(2, 1)),  # (left, right)
    dict(x=(1, 8, 3), w=(4, 3, 2), stride=2, padding="same"),
    dict(x=(2, 7, 2), w=(3, 2, 2), padding="valid"),
    dict(x=(1, 12, 3), w=(3, 3, 2), padding=2, dilation=3),
    dict(x=(2, 9, 4), w=(3, 2, 6), padding=1, groups=2),
    dict(x=(1, 9, 5), w=(3, 1, 5), padding=(1, 2), groups=5),  # depthwise
    dict(x=(2, 7, 6), w=(1, 6, 3)),  # 1x1
    dict(x=(2, 12, 16), w=(3, 16, 12), stride=2, padding=1),  # wide enough for GEMM
] + [dict(x=(2, 9, 3), w=(3, 3, 2), stride=2, padding=(2, 1), padding_mode=m)
     for m in PADDING_MODES[1:]] + [
    dict(x=(1, 8, 4), w=(4, 2, 4), padding="same", groups=2, padding_mode="reflect"),
    dict(x=(1, 7, 2), w=(2, 2, 3), dilation=2, padding=(3, 0), padding_mode="circular"),
]

# x (N, L, C_in), w (k, C_out // groups, C_in) and conv_transpose1d's keyword arguments
TRANSPOSE_CASES = [
    dict(x=(2, 5, 3), w=(3, 2, 3)),
    dict(x=(2, 4, 4), w=(3, 5, 4), stride=2, padding=1, output_padding=1),
    dict(x=(1, 4, 3), w=(4, 2, 3), stride=2, padding=(1, 2)),
    dict(x=(1, 3, 2), w=(2, 3, 2), stride=3, output_padding=2),
    dict(x=(1, 5, 3), w=(3, 2, 3), dilation=2, padding=1, output_padding=1),
    dict(x=(2, 4, 4), w=(3, 3, 4), stride=2, groups=2),
    dict(x=(1, 6, 4), w=(3, 1, 4), padding=1, groups=4),
    dict(x=(2, 5, 16), w=(4, 12, 16), stride=2, padding=1),
]


def args_of(case):
    return {k: v for k, v in case.items() if k not in ("x", "w")}


def pads_1d(case):
    """(left, right) of a 1-D padding spec, by the formulas of API.md."""
    padding = case.get("padding", 0)
    k, stride, dilation = case["w"][0], case.get("stride", 1), case.get("dilation", 1)
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        n = case["x"][1]
        total = max((math.ceil(n / stride) - 1) * stride + dilation * (k - 1) + 1 - n, 0)
        return (total // 2, total - total // 2)
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def ref_conv(case):
    return dict(stride=case.get("stride", 1), pads=pads_1d(case),
                dilation=case.get("dilation", 1), groups=case.get("groups", 1),
                mode=case.get("padding_mode", "zeros"))


def ref_transpose(case):
    return dict(stride=case.get("stride", 1), pads=pads_1d(case),
                output_padding=case.get("output_padding", 0),
                dilation=case.get("dilation", 1), groups=case.get("groups", 1))


def as_2d(case, transposed):
    """The same call on H = 1 images: arguments for the 2-D function."""
    args = args_of(case)
    out = dict(stride=(1, args.get("stride", 1)), dilation=(1, args.get("dilation", 1)),
               groups=args.get("groups", 1))
    padding = args.get("padding", 0)
    out["padding"] = padding if isinstance(padding, str) else ((0, 0), pads_1d(case))
    if transposed:
        out["output_padding"] = (0, args.get("output_padding", 0))
    else:
        out["padding_mode"] = args.get("padding_mode", "zeros")
    return out


def basis_gradient(f, at, gy):
    """d<f(v), gy>/dv at v = `at` for a linear f, one basis vector at a time (from the
    definition: the Jacobian's columns are f of the basis vectors)."""
    grad = np.zeros(at.shape)
    e = np.zeros(at.shape)
    for i in np.ndindex(at.shape):
        e[i] = 1
        grad[i] = np.sum(f(e) * gy)
        e[i] = 0
    return grad


def make(case, out_fn, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    y = out_fn(x, w)
    bias = rand(rng, (y.shape[2],), dtype)
    gy = rand(rng, y.shape, dtype)
    return x, w, bias, gy


# ----------------------------------------------------------------------------------------------
# conv1d / conv1d_backward

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv1d(case, dtype, algorithm):
    x, w, bias, gy = make(case, lambda x, w: reference.conv1d(x, w, **ref_conv(case)), dtype)
    args = dict(args_of(case), algorithm=algorithm)
    terms = w.shape[0] * w.shape[1]
    y = fastconv.conv1d(x, w, bias, **args)
    assert_close(y, reference.conv1d(x, w, bias, **ref_conv(case)), dtype, terms, "conv1d")
    y2 = fastconv.conv2d(x[:, None], w[None], bias, **as_2d(case, False), algorithm=algorithm)
    assert_close(y, y2[:, 0], dtype, terms, "conv1d vs conv2d")
    # unbatched (L, C)
    assert_close(fastconv.conv1d(x[0], w, bias, **args), y[0], dtype, terms, "unbatched")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv1d_backward(case, dtype, algorithm):
    ref = ref_conv(case)
    x, w, _, gy = make(case, lambda x, w: reference.conv1d(x, w, **ref), dtype)
    args = dict(args_of(case), algorithm=algorithm)
    gx, gw, gb = fastconv.conv1d_backward(gy, x, w, **args)
    rx, rw, rb = reference.conv1d_backward(gy, x, w, **ref)
    pixels = gy.shape[0] * gy.shape[1]
    assert_close(gx, rx, dtype, 4 * w.shape[0] * w.shape[2], "grad_input")
    assert_close(gw, rw, dtype, pixels, "grad_weight")
    assert_close(gb, rb, dtype, pixels, "grad_bias")
    # the 2-D function on H = 1 images
    g2 = fastconv.conv2d_backward(gy[:, None], x[:, None], w[None], **as_2d(case, False),
                                  algorithm=algorithm)
    assert_close(gx, g2[0][:, 0], dtype, pixels, "vs 2-D")
    assert_close(gw, g2[1][0], dtype, pixels, "vs 2-D")
    assert_close(gb, g2[2], dtype, pixels, "vs 2-D")
    # unbatched (L, C)
    case1 = dict(case, x=(1, *case["x"][1:]))
    gu = fastconv.conv1d_backward(gy[0], x[0], w, **args)
    gb1 = fastconv.conv1d_backward(gy[:1], x[:1], w, **args)
    assert gu[0].shape == case1["x"][1:]
    for a, b in zip(gu, (gb1[0][0], gb1[1], gb1[2])):
        assert_close(a, b, dtype, pixels, "unbatched")


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 4, 7, 11, 13, 16)],
                         ids=case_id)
def test_reference_conv1d_backward_is_the_jacobian_of_reference_conv1d(case):
    """The reference gradients, checked once against the forward reference's Jacobian."""
    ref = ref_conv(case)
    x, w, _, gy = make(case, lambda x, w: reference.conv1d(x, w, **ref), np.float64)
    rx, rw, _ = reference.conv1d_backward(gy, x, w, **ref)
    np.testing.assert_allclose(rx, basis_gradient(lambda v: reference.conv1d(v, w, **ref), x, gy),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rw, basis_gradient(lambda v: reference.conv1d(x, v, **ref), w, gy),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("needs", ["input", ("weight",), ("bias", "input")])
def test_conv1d_backward_needs(needs):
    case = CONV_CASES[1]
    x, w, _, gy = make(case, lambda x, w: reference.conv1d(x, w, **ref_conv(case)), np.float64)
    full = fastconv.conv1d_backward(gy, x, w, **args_of(case))
    some = fastconv.conv1d_backward(gy, x, w, **args_of(case), needs=needs)
    wanted = (needs,) if isinstance(needs, str) else needs
    for name, a, b in zip(("input", "weight", "bias"), full, some):
        if name in wanted:
            np.testing.assert_array_equal(b, a)
        else:
            assert b is None


# ----------------------------------------------------------------------------------------------
# conv_transpose1d / conv_transpose1d_backward

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose1d(case, dtype, algorithm):
    ref = ref_transpose(case)
    x, w, bias, gy = make(case, lambda x, w: reference.conv_transpose1d(x, w, **ref), dtype)
    args = dict(args_of(case), algorithm=algorithm)
    terms = w.shape[0] * w.shape[2]
    y = fastconv.conv_transpose1d(x, w, bias, **args)
    assert_close(y, reference.conv_transpose1d(x, w, bias, **ref), dtype, terms,
                 "conv_transpose1d")
    y2 = fastconv.conv_transpose2d(x[:, None], w[None], bias, **as_2d(case, True),
                                   algorithm=algorithm)
    assert_close(y, y2[:, 0], dtype, terms, "conv_transpose1d vs conv_transpose2d")
    assert_close(fastconv.conv_transpose1d(x[0], w, bias, **args), y[0], dtype, terms,
                 "unbatched")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose1d_backward(case, dtype, algorithm):
    ref = ref_transpose(case)
    x, w, _, gy = make(case, lambda x, w: reference.conv_transpose1d(x, w, **ref), dtype)
    args = dict(args_of(case), algorithm=algorithm)
    gx, gw, gb = fastconv.conv_transpose1d_backward(gy, x, w, **args)
    rx, rw, rb = reference.conv_transpose1d_backward(gy, x, w, **ref)
    pixels = gy.shape[0] * gy.shape[1]
    assert_close(gx, rx, dtype, w.shape[0] * w.shape[1], "grad_input")
    assert_close(gw, rw, dtype, pixels, "grad_weight")
    assert_close(gb, rb, dtype, pixels, "grad_bias")
    g2 = fastconv.conv_transpose2d_backward(gy[:, None], x[:, None], w[None],
                                            **as_2d(case, True), algorithm=algorithm)
    assert_close(gx, g2[0][:, 0], dtype, pixels, "vs 2-D")
    assert_close(gw, g2[1][0], dtype, pixels, "vs 2-D")
    assert_close(gb, g2[2], dtype, pixels, "vs 2-D")
    gu = fastconv.conv_transpose1d_backward(gy[0], x[0], w, **args)
    gb1 = fastconv.conv_transpose1d_backward(gy[:1], x[:1], w, **args)
    assert gu[0].shape == x.shape[1:]
    for a, b in zip(gu, (gb1[0][0], gb1[1], gb1[2])):
        assert_close(a, b, dtype, pixels, "unbatched")


@pytest.mark.parametrize("case", TRANSPOSE_CASES[:7], ids=case_id)
def test_reference_conv_transpose1d_backward_is_the_jacobian(case):
    ref = ref_transpose(case)
    x, w, _, gy = make(case, lambda x, w: reference.conv_transpose1d(x, w, **ref), np.float64)
    rx, rw, _ = reference.conv_transpose1d_backward(gy, x, w, **ref)
    np.testing.assert_allclose(
        rx, basis_gradient(lambda v: reference.conv_transpose1d(v, w, **ref), x, gy),
        rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        rw, basis_gradient(lambda v: reference.conv_transpose1d(x, v, **ref), w, gy),
        rtol=1e-12, atol=1e-12)


def test_conv_transpose1d_hand_example():
    """[1, 2] scattered with the kernel [1, 10, 100] at stride 2: windows at 0 and 2 overlap."""
    x = np.array([1.0, 2.0]).reshape(2, 1)
    w = np.array([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    np.testing.assert_allclose(fastconv.conv_transpose1d(x, w, stride=2)[:, 0],
                               [1, 10, 100 + 2, 20, 200])


def test_conv_transpose1d_output_padding_too_large_raises():
    with pytest.raises(ValueError, match="output_padding"):
        fastconv.conv_transpose1d(np.ones((1, 4, 2)), np.ones((3, 2, 2)), stride=2,
                                  output_padding=2)


# ----------------------------------------------------------------------------------------------
# errors

CONV_FNS = {
    "conv1d": lambda x, w: fastconv.conv1d(x, w),
    "conv1d_backward": lambda x, w: fastconv.conv1d_backward(np.ones((1, 3, 2)), x, w),
    "conv_transpose1d": lambda x, w: fastconv.conv_transpose1d(x, w),
    "conv_transpose1d_backward":
        lambda x, w: fastconv.conv_transpose1d_backward(np.ones((1, 7, 2)), x, w),
}


@pytest.mark.parametrize("fn", CONV_FNS)
@pytest.mark.parametrize("x_shape, w_shape, name", [
    ((5,), (3, 2, 2), "input"),
    ((1, 1, 5, 2), (3, 2, 2), "input"),
    ((1, 5, 2), (2, 2), "weight"),
    ((1, 5, 2), (1, 3, 2, 2), "weight"),
])
def test_bad_ndim_raises(fn, x_shape, w_shape, name):
    with pytest.raises(ValueError, match=name):
        CONV_FNS[fn](np.ones(x_shape), np.ones(w_shape))


@pytest.mark.parametrize("bad", [(2, 5, 5), (2, 6, 4), (5, 4), (2, 1, 5, 4), (20,), ()])
def test_conv1d_backward_grad_output_of_the_wrong_shape_raises(bad):
    x, w = np.ones((2, 7, 3)), np.ones((3, 3, 4))  # forward output (2, 5, 4)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.conv1d_backward(np.ones(bad), x, w)


@pytest.mark.parametrize("bad", [(2, 9, 3), (9, 2), (2, 1, 9, 2), (20,), ()])
def test_conv_transpose1d_backward_grad_output_of_the_wrong_shape_raises(bad):
    x, w = np.ones((2, 7, 3)), np.ones((3, 2, 3))  # forward output (2, 9, 2)
    with pytest.raises(ValueError, match="grad_output"):
        fastconv.conv_transpose1d_backward(np.ones(bad), x, w)


def test_grad_output_error_gives_the_expected_1d_shape():
    """The message should give the (N, L, C) shape the 1-D caller must pass, not the
    internal (N, 1, L, C) of the 2-D function."""
    x = np.ones((2, 7, 3))
    with pytest.raises(ValueError, match=r"grad_output.*\(2, 5, 4\)"):
        fastconv.conv1d_backward(np.ones((2, 6, 4)), x, np.ones((3, 3, 4)))
    with pytest.raises(ValueError, match=r"grad_output.*\(2, 9, 2\)"):
        fastconv.conv_transpose1d_backward(np.ones((2, 9, 3)), x, np.ones((3, 2, 3)))
    with pytest.raises(ValueError, match=r"grad_output.*\(5, 4\)"):
        fastconv.conv1d_backward(np.ones((6, 4)), x[0], np.ones((3, 3, 4)))
