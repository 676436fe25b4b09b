"""conv_transpose2d and conv_transpose2d_backward: scatter-definition references, hand-computed
examples, the adjoint identity with conv2d, finite differences, threads and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
import reference
from _helpers import (ALGORITHMS, DTYPES, assert_close, case_id, conv_args, conv_out_shape,
                      conv_reference_args, rand, restoring_output_padding,
                      transpose_reference_args)

# x: the transposed convolution's input (N, H, W, C_in); w: (kh, kw, C_out // groups, C_in)
CASES = [
    dict(x=(2, 3, 4, 3), w=(3, 3, 2, 3)),
    dict(x=(2, 4, 3, 4), w=(3, 3, 5, 4), stride=2, padding=1, output_padding=1),
    dict(x=(1, 4, 4, 3), w=(4, 4, 2, 3), stride=2, padding=1),  # DCGAN-style
    dict(x=(2, 3, 4, 4), w=(2, 2, 3, 4), stride=2),  # U-Net-style
    dict(x=(1, 3, 3, 2), w=(2, 2, 3, 2), stride=3, output_padding=2),  # stride > kernel
    dict(x=(1, 4, 3, 2), w=(3, 2, 2, 2), stride=(2, 1), padding=((1, 0), (0, 2)),
         output_padding=(1, 0)),
    dict(x=(1, 4, 5, 3), w=(3, 3, 2, 3), dilation=2, padding=1, output_padding=1),  # op >= s
    dict(x=(2, 4, 4, 3), w=(1, 1, 2, 3), dilation=2, output_padding=1),  # 1x1, op >= s
    dict(x=(1, 3, 4, 2), w=(1, 1, 3, 2), stride=2, output_padding=1),  # 1x1 strided
    dict(x=(2, 3, 3, 3), w=(2, 3, 2, 3), stride=(3, 2), dilation=(2, 3), padding=(1, 2),
         output_padding=(1, 2)),
    dict(x=(2, 4, 4, 4), w=(3, 3, 3, 4), stride=2, padding=1, groups=2, output_padding=1),
    dict(x=(1, 5, 4, 6), w=(3, 3, 1, 6), padding=1, groups=6),  # depthwise
    dict(x=(1, 3, 5, 3), w=(4, 3, 2, 3), stride=2, padding=(1, 1), groups=3),
    dict(x=(1, 5, 3, 2), w=(3, 2, 3, 2), padding=((2, 0), (0, 1))),  # N=1, odd sizes
    dict(x=(2, 4, 4, 16), w=(3, 3, 12, 16), stride=2, padding=1, output_padding=1),  # GEMM
    dict(x=(1, 4, 3, 16), w=(4, 4, 8, 16), stride=2, padding=1, groups=2),
]


def out_shape(case):
    ref = transpose_reference_args(case)
    hw = [(n - 1) * s - p[0] - p[1] + d * (k - 1) + op + 1 for n, s, p, d, k, op in
          zip(case["x"][1:3], ref["stride"], ref["pads"], ref["dilation"], case["w"][:2],
              ref["output_padding"])]
    return (case["x"][0], *hw, case["w"][2] * ref["groups"])


def make(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    bias = rand(rng, (out_shape(case)[3],), dtype)
    gy = rand(rng, out_shape(case), dtype)
    return x, w, bias, gy


def terms(case):
    """Products summed per output element (upper bound)."""
    return case["w"][0] * case["w"][1] * case["x"][3] // case.get("groups", 1)


# ----------------------------------------------------------------------------------------------
# forward

@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(case, dtype, algorithm, with_bias):
    x, w, bias, _ = make(case, dtype)
    bias = bias if with_bias else None
    y = fastconv.conv_transpose2d(x, w, bias, **conv_args(case), algorithm=algorithm)
    expected = reference.conv_transpose2d(x, w, bias, **transpose_reference_args(case))
    assert_close(y, expected, dtype, terms(case), "conv_transpose2d")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lecture_example_2x2_input_3x3_kernel_gives_4x4(algorithm):
    """Scatter definition by hand: input pixel (a, b) adds x[a, b] * k at rows a..a+2,
    columns b..b+2 of the output."""
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    ones = np.ones((3, 3, 1, 1))
    y = fastconv.conv_transpose2d(x, ones, algorithm=algorithm)
    assert y.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(y[0, :, :, 0], [[1, 3, 3, 2],
                                               [4, 10, 10, 6],
                                               [4, 10, 10, 6],
                                               [3, 7, 7, 4]])
    # a kernel with two taps shows the orientation: k[0, 0] = 1 copies x to the top left,
    # k[2, 2] = 10 copies 10 * x to the bottom right
    corners = np.zeros((3, 3, 1, 1))
    corners[0, 0] = 1
    corners[2, 2] = 10
    y = fastconv.conv_transpose2d(x, corners, algorithm=algorithm)
    np.testing.assert_allclose(y[0, :, :, 0], [[1, 2, 0, 0],
                                               [3, 4, 0, 0],
                                               [0, 0, 10, 20],
                                               [0, 0, 30, 40]])
    # stride 2: windows start every second pixel and overlap on the middle row/column
    y = fastconv.conv_transpose2d(x, ones, stride=2, algorithm=algorithm)
    assert y.shape == (1, 5, 5, 1)
    np.testing.assert_allclose(y[0, :, :, 0], [[1, 1, 3, 2, 2],
                                               [1, 1, 3, 2, 2],
                                               [4, 4, 10, 6, 6],
                                               [3, 3, 7, 4, 4],
                                               [3, 3, 7, 4, 4]])
    # padding=1 crops one pixel on every side of the 4x4 result
    y = fastconv.conv_transpose2d(x, ones, padding=1, algorithm=algorithm)
    np.testing.assert_allclose(y[0, :, :, 0], [[10, 10], [10, 10]])


def test_output_shape_formula():
    for case in CASES:
        x, w, _, _ = make(case, np.float64)
        y = fastconv.conv_transpose2d(x, w, **conv_args(case))
        assert y.shape == out_shape(case)
        args = {k: case[k] for k in ("stride", "padding", "output_padding", "dilation")
                if k in case}
        assert tuple(fastconv.conv_transpose_output_shape(x.shape[1:3], w.shape[:2], **args)) \
            == out_shape(case)[1:3]


@pytest.mark.parametrize("fn", ["forward", "backward"])
@pytest.mark.parametrize("stride, dilation, output_padding", [
    (1, 1, 1), (2, 1, 2), (2, 2, 2), (2, 3, 3), ((2, 1), 1, (1, 1)), (1, (1, 2), (0, 2))])
def test_output_padding_too_large_raises(fn, stride, dilation, output_padding):
    x, w = np.ones((1, 3, 3, 2)), np.ones((3, 3, 2, 2))
    with pytest.raises(ValueError, match="output_padding"):
        if fn == "forward":
            fastconv.conv_transpose2d(x, w, stride=stride, dilation=dilation,
                                      output_padding=output_padding)
        else:
            fastconv.conv_transpose2d_backward(np.ones((1, 20, 20, 2)), x, w, stride=stride,
                                               dilation=dilation,
                                               output_padding=output_padding)


def test_output_padding_below_stride_or_dilation_is_accepted():
    x, w = np.ones((1, 3, 3, 2)), np.ones((3, 3, 2, 2))
    assert fastconv.conv_transpose2d(x, w, stride=3, output_padding=2).shape == (1, 11, 11, 2)
    assert fastconv.conv_transpose2d(x, w, dilation=2, output_padding=1).shape == (1, 8, 8, 2)


def test_padding_same_raises():
    x, w = np.ones((1, 3, 3, 2)), np.ones((3, 3, 2, 2))
    with pytest.raises(ValueError, match="same"):
        fastconv.conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match="same"):
        fastconv.conv_transpose2d_backward(np.ones((1, 5, 5, 2)), x, w, padding="same")


# ----------------------------------------------------------------------------------------------
# the adjoint of conv2d

ADJOINT_CASES = [  # conv2d geometries: x (N, H, W, C_in), w (kh, kw, C_in // g, C_out)
    dict(x=(2, 6, 7, 3), w=(3, 3, 3, 4)),
    dict(x=(2, 7, 8, 3), w=(3, 3, 3, 2), stride=2, padding=1),  # output_padding needed
    dict(x=(1, 9, 8, 2), w=(2, 2, 2, 3), stride=3),
    dict(x=(1, 8, 9, 2), w=(3, 2, 2, 3), stride=(2, 3), padding=((2, 0), (1, 3))),
    dict(x=(1, 10, 9, 3), w=(3, 3, 3, 2), padding=2, dilation=(2, 3)),
    dict(x=(1, 11, 10, 2), w=(3, 3, 2, 2), stride=2, dilation=2, padding=((1, 2), (0, 1))),
    dict(x=(2, 6, 6, 4), w=(3, 3, 2, 6), stride=2, padding=1, groups=2),
    dict(x=(1, 7, 6, 4), w=(3, 3, 1, 4), padding=(1, 0), groups=4),
    dict(x=(1, 5, 6, 6), w=(1, 1, 6, 4), stride=2),
    dict(x=(2, 8, 7, 16), w=(3, 3, 8, 16), stride=2, padding=1, groups=2),
]


def adjoint_setup(case, dtype):
    rng = np.random.default_rng(5)
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    y = rand(rng, conv_out_shape(case), dtype)
    ref = conv_reference_args(case)
    op = restoring_output_padding(x.shape[1:3], w.shape[:2], ref["stride"], ref["pads"],
                                  ref["dilation"])
    targs = dict(stride=ref["stride"], padding=ref["pads"], output_padding=op,
                 dilation=ref["dilation"], groups=ref["groups"])
    return x, w, y, conv_args(case), targs


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADJOINT_CASES, ids=case_id)
def test_adjoint_identity(case, dtype, algorithm):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>."""
    x, w, y, cargs, targs = adjoint_setup(case, dtype)
    cx = fastconv.conv2d(x, w, **cargs, algorithm=algorithm)
    ty = fastconv.conv_transpose2d(y, w, **targs, algorithm=algorithm)
    assert ty.shape == x.shape
    lhs = np.sum(cx.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * ty)
    tol = 1e-11 if dtype == np.float64 else 1e-5 * np.sqrt(x.size * w[..., 0].size)
    assert lhs == pytest.approx(rhs, rel=tol, abs=tol * np.sqrt(x.size))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ADJOINT_CASES, ids=case_id)
def test_transpose_equals_conv2d_grad_input(case, dtype, algorithm):
    x, w, y, cargs, targs = adjoint_setup(case, dtype)
    ty = fastconv.conv_transpose2d(y, w, **targs, algorithm=algorithm)
    gx, gw, gb = fastconv.conv2d_backward(y, x, w, **cargs, algorithm=algorithm,
                                          needs=("input",))
    assert gw is None and gb is None
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(ty, gx, rtol=tol, atol=tol)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), algorithm=st.sampled_from(ALGORITHMS))
def test_property_adjoint_identity(data, algorithm):
    draw = data.draw
    groups = draw(st.sampled_from([1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    hw = tuple(draw(st.integers(max(1, di * (ki - 1) + 1 - sum(p)), 10))
               for ki, di, p in zip(k, d, pads))
    x_shape = (draw(st.integers(1, 2)), *hw, cig * groups)
    case = dict(x=x_shape, w=(*k, cig, cog * groups), stride=s, padding=pads, dilation=d,
                groups=groups)
    x, w, y, cargs, targs = adjoint_setup(case, np.float64)
    cx = fastconv.conv2d(x, w, **cargs, algorithm=algorithm)
    ty = fastconv.conv_transpose2d(y, w, **targs, algorithm=algorithm)
    assert np.sum(cx * y) == pytest.approx(np.sum(x * ty), rel=1e-11, abs=1e-11)
    gx = fastconv.conv2d_backward(y, x, w, **cargs, algorithm=algorithm, needs="input")[0]
    np.testing.assert_allclose(ty, gx, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# conv_transpose2d_backward

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_reference(case, dtype, algorithm):
    x, w, _, gy = make(case, dtype)
    gx, gw, gb = fastconv.conv_transpose2d_backward(gy, x, w, **conv_args(case),
                                                    algorithm=algorithm)
    rx, rw, rb = reference.conv_transpose2d_backward(gy, x, w, **transpose_reference_args(case))
    pixels = gy.shape[0] * gy.shape[1] * gy.shape[2]
    assert_close(gx, rx, dtype, case["w"][0] * case["w"][1] * case["w"][2], "grad_input")
    assert_close(gw, rw, dtype, pixels, "grad_weight")
    assert_close(gb, rb, dtype, pixels, "grad_bias")


def test_reference_backward_is_consistent_with_reference_forward():
    """The transposed convolution's input gradient is the plain convolution of grad_output
    (zero padding): checks the two references against each other."""
    for case in CASES:
        x, w, _, gy = make(case, np.float64)
        ref = transpose_reference_args(case)
        rx, _, _ = reference.conv_transpose2d_backward(gy, x, w, **ref)
        full = reference.conv2d(gy, w, None, ref["stride"], ref["pads"], ref["dilation"],
                                ref["groups"])
        # output_padding >= stride (allowed when < dilation) leaves extra rows: crop them
        np.testing.assert_allclose(rx, full[:, :x.shape[1], :x.shape[2]], rtol=1e-12,
                                   atol=1e-12)


FD_CASES = [CASES[1], CASES[6], CASES[9], CASES[10]]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_backward_finite_differences(case, algorithm):
    rng = np.random.default_rng(7)
    x, w, bias, gy = make(case, np.float64, seed=7)
    args = dict(conv_args(case), algorithm=algorithm)

    def loss(x_, w_, b_=bias):
        return float(np.sum(fastconv.conv_transpose2d(x_, w_, b_, **args) * gy))

    def fd(f, at, d, h=1e-3):
        return (f(at + h * d) - f(at - h * d)) / (2 * h)

    gx, gw, gb = fastconv.conv_transpose2d_backward(gy, x, w, **args)
    for _ in range(3):
        dx, dw, db = rand(rng, x.shape), rand(rng, w.shape), rand(rng, bias.shape)
        assert np.sum(gx * dx) == pytest.approx(fd(lambda v: loss(v, w), x, dx), rel=1e-8)
        assert np.sum(gw * dw) == pytest.approx(fd(lambda v: loss(x, v), w, dw), rel=1e-8)
        assert np.sum(gb * db) == pytest.approx(fd(lambda v: loss(x, w, v), bias, db),
                                                rel=1e-8)


@pytest.mark.parametrize("needs", ["input", "weight", "bias", ("weight", "bias"), ()])
def test_backward_needs(needs):
    case = CASES[1]
    x, w, _, gy = make(case, np.float64)
    full = fastconv.conv_transpose2d_backward(gy, x, w, **conv_args(case))
    some = fastconv.conv_transpose2d_backward(gy, x, w, **conv_args(case), needs=needs)
    wanted = (needs,) if isinstance(needs, str) else needs
    for name, a, b in zip(("input", "weight", "bias"), full, some):
        if name in wanted:
            np.testing.assert_array_equal(b, a)
        else:
            assert b is None
    with pytest.raises(ValueError, match="needs"):
        fastconv.conv_transpose2d_backward(gy, x, w, **conv_args(case), needs=("output",))


# ----------------------------------------------------------------------------------------------
# threads, unbatched, shapes

THREAD_CASES = [
    dict(x=(2, 10, 10, 3), w=(3, 3, 4, 3), stride=2, padding=1, output_padding=1),
    dict(x=(2, 10, 9, 16), w=(4, 4, 12, 16), stride=2, padding=1),
    dict(x=(2, 12, 12, 8), w=(3, 3, 1, 8), padding=1, groups=8),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_same_result_with_one_and_two_threads(case, dtype, algorithm):
    x, w, bias, gy = make(case, dtype)
    args = dict(conv_args(case), algorithm=algorithm)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            results.append((fastconv.conv_transpose2d(x, w, bias, **args),
                            *fastconv.conv_transpose2d_backward(gy, x, w, **args)))
    (y1, gx1, gw1, gb1), (y2, gx2, gw2, gb2) = results
    np.testing.assert_array_equal(gw2, gw1)  # fixed partial sums: bit-identical by design
    np.testing.assert_array_equal(gb2, gb1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y2, y1, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx2, gx1, rtol=tol, atol=tol)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[10]], ids=case_id)
def test_unbatched_input(case, algorithm):
    case = dict(case, x=(1, *case["x"][1:]))
    x, w, bias, gy = make(case, np.float64)
    args = dict(conv_args(case), algorithm=algorithm)
    y = fastconv.conv_transpose2d(x[0], w, bias, **args)
    assert y.shape == gy.shape[1:]
    np.testing.assert_allclose(y, fastconv.conv_transpose2d(x, w, bias, **args)[0],
                               rtol=1e-12, atol=1e-12)
    single = fastconv.conv_transpose2d_backward(gy[0], x[0], w, **args)
    batched = fastconv.conv_transpose2d_backward(gy, x, w, **args)
    assert single[0].shape == x.shape[1:]
    np.testing.assert_allclose(single[0], batched[0][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(single[1], batched[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(single[2], batched[2], rtol=1e-12, atol=1e-12)


def test_backward_grad_output_of_the_wrong_shape_names_the_expected_shape():
    x, w = np.ones((2, 3, 3, 4)), np.ones((3, 3, 2, 4))  # output (2, 7, 7, 2) at stride 2
    for bad in [(2, 7, 7, 4), (2, 6, 7, 2), (1, 7, 7, 2), (7, 7, 2)]:
        with pytest.raises(ValueError, match=r"grad_output.*\(2, 7, 7, 2\)"):
            fastconv.conv_transpose2d_backward(np.ones(bad), x, w, stride=2)
    with pytest.raises(ValueError, match=r"grad_output.*\(7, 7, 2\)"):
        fastconv.conv_transpose2d_backward(np.ones((7, 6, 2)), x[0], w, stride=2)
