"""conv2d_backward: gradients against references written from the definition, finite
differences, thread-count invariance, unbatched inputs and argument errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
import reference
from conftest import assert_threads_ran
from _helpers import (ALGORITHMS, DTYPES, PADDING_MODES, assert_close, case_id, conv_args,
                      conv_out_shape, conv_reference_args, rand, restoring_output_padding)

# x shape (N, H, W, C_in), weight shape (kh, kw, C_in // groups, C_out) and conv arguments
GEOMETRIES = [
    dict(x=(2, 6, 7, 3), w=(3, 3, 3, 4)),
    dict(x=(2, 7, 8, 4), w=(3, 3, 4, 5), stride=2, padding=1),
    dict(x=(1, 8, 9, 2), w=(2, 2, 2, 3), stride=3),  # stride > kernel: some pixels unused
    dict(x=(1, 10, 9, 2), w=(1, 2, 2, 3), stride=(3, 4), padding=(1, 0)),
    dict(x=(2, 7, 6, 3), w=(2, 3, 3, 2), stride=(1, 2), padding=((1, 0), (2, 1))),
    dict(x=(2, 5, 6, 3), w=(3, 3, 3, 2), padding="same"),
    dict(x=(1, 7, 8, 2), w=(4, 4, 2, 3), stride=2, padding="same"),  # odd total padding
    dict(x=(1, 6, 5, 2), w=(2, 3, 2, 3), stride=3, padding="same"),
    dict(x=(2, 6, 6, 2), w=(3, 3, 2, 2), padding="valid"),
    dict(x=(1, 6, 7, 3), w=(3, 2, 3, 2), padding=(2, 1)),
    dict(x=(1, 9, 8, 3), w=(3, 3, 3, 4), padding=2, dilation=2),
    dict(x=(2, 11, 10, 2), w=(3, 2, 2, 3), stride=2, padding=((0, 2), (1, 0)), dilation=(2, 3)),
    dict(x=(2, 6, 6, 4), w=(3, 3, 2, 6), padding=1, groups=2),
    dict(x=(1, 7, 7, 6), w=(3, 3, 2, 3), stride=2, groups=3),
    dict(x=(2, 6, 7, 4), w=(3, 3, 1, 4), padding=1, groups=4),  # depthwise
    dict(x=(1, 6, 6, 3), w=(3, 3, 1, 6), stride=2, padding=1, groups=3),  # depthwise x2
    dict(x=(2, 5, 4, 6), w=(1, 1, 6, 3)),  # 1x1
    dict(x=(1, 5, 5, 4), w=(1, 1, 4, 5), stride=2),  # 1x1 strided
    dict(x=(1, 5, 5, 4), w=(1, 1, 4, 5), padding=1),  # 1x1 padded
    dict(x=(1, 9, 5, 3), w=(5, 3, 3, 2), padding=(2, 1)),  # N=1, odd sizes
    dict(x=(1, 4, 4, 2), w=(4, 4, 2, 3)),  # kernel covers the whole input: 1x1 output
    dict(x=(2, 6, 6, 16), w=(3, 3, 16, 12), padding=1),  # wide enough for a real GEMM
    dict(x=(2, 6, 5, 16), w=(3, 3, 8, 16), stride=2, padding=1, groups=2),
]

# every padding mode on geometries where padding really is read (and written back to)
MODE_GEOMETRIES = [
    dict(x=(2, 6, 7, 3), w=(3, 3, 3, 2), stride=2, padding=((2, 1), (1, 2))),
    dict(x=(1, 5, 6, 4), w=(3, 4, 2, 4), padding="same", groups=2),
    dict(x=(1, 7, 6, 2), w=(2, 3, 2, 3), stride=(2, 1), padding=((1, 3), (2, 2)),
         dilation=(1, 2)),
    dict(x=(1, 4, 5, 3), w=(3, 3, 1, 3), padding=(3, 3), groups=3),  # pad = input size - 1
]
MODE_CASES = [dict(g, padding_mode=m) for g in MODE_GEOMETRIES for m in PADDING_MODES[1:]]


def make(case, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, case["x"], dtype), rand(rng, case["w"], dtype)
    gy = rand(rng, conv_out_shape(case), dtype)
    return x, w, gy


def check_against_reference(case, dtype, algorithm):
    x, w, gy = make(case, dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **conv_args(case), algorithm=algorithm)
    rx, rw, rb = reference.conv2d_backward(gy, x, w, **conv_reference_args(case))
    kh, kw, _, cout = w.shape
    groups = case.get("groups", 1)
    # padded pixels copied several times add a few more terms to grad_input
    assert_close(gx, rx, dtype, 4 * kh * kw * cout // groups, "grad_input")
    assert_close(gw, rw, dtype, gy.shape[0] * gy.shape[1] * gy.shape[2], "grad_weight")
    assert_close(gb, rb, dtype, gy.shape[0] * gy.shape[1] * gy.shape[2], "grad_bias")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GEOMETRIES, ids=case_id)
def test_gradients_match_reference(case, dtype, algorithm):
    check_against_reference(case, dtype, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradients_never_read_memory_left_unset(algorithm, nan_filled_memory):
    """The input gradient comes from _memory.empty, not np.zeros: the kernels must write
    every value of it (pixels no tap reaches included). Here that memory starts as NaN."""
    for case in GEOMETRIES + MODE_CASES:
        check_against_reference(case, np.float32, algorithm)
    x = np.ones((1, 3, 3, 2), np.float32)
    for w in (np.ones((3, 3, 2, 0), np.float32), np.ones((3, 3, 0, 2), np.float32)):
        gx, _, _ = fastconv.conv2d_backward(np.ones((1, 1, 1, w.shape[3]), np.float32),
                                            x[..., :w.shape[2]], w)
        np.testing.assert_array_equal(gx, 0)  # empty sums


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MODE_CASES, ids=case_id)
def test_gradients_flow_back_through_padding_modes(case, dtype, algorithm):
    check_against_reference(case, dtype, algorithm)


@pytest.mark.parametrize("case", GEOMETRIES[:14], ids=case_id)
def test_grad_input_is_the_reference_transposed_convolution(case):
    """With zero padding, grad_input is the transposed convolution of grad_output (the
    scatter form of reference.conv_transpose2d), with the output_padding restoring H, W."""
    x, w, gy = make(case, np.float64)
    ref = conv_reference_args(case)
    op = restoring_output_padding(x.shape[1:3], w.shape[:2], ref["stride"], ref["pads"],
                                  ref["dilation"])
    expected = reference.conv_transpose2d(gy, w, None, ref["stride"], ref["pads"], op,
                                          ref["dilation"], ref["groups"])
    gx, _, _ = fastconv.conv2d_backward(gy, x, w, **conv_args(case), needs="input")
    assert_close(gx, expected, np.float64, 1, "grad_input")


def test_reference_backward_agrees_with_reference_transpose_for_every_geometry():
    """Sanity check of the two references against each other (zero padding)."""
    for case in GEOMETRIES:
        x, w, gy = make(case, np.float64)
        ref = conv_reference_args(case)
        op = restoring_output_padding(x.shape[1:3], w.shape[:2], ref["stride"], ref["pads"],
                                      ref["dilation"])
        rx, _, _ = reference.conv2d_backward(gy, x, w, **ref)
        rt = reference.conv_transpose2d(gy, w, None, ref["stride"], ref["pads"], op,
                                        ref["dilation"], ref["groups"])
        np.testing.assert_allclose(rx, rt, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# finite differences (float64): L(x, w) = <conv2d(x, w), g> is linear in each argument, so a
# central difference along any direction is exact up to rounding

FD_CASES = [
    dict(x=(2, 6, 7, 3), w=(3, 3, 3, 4), stride=2, padding=1),
    dict(x=(1, 7, 6, 2), w=(3, 3, 2, 3), padding=2, dilation=2, padding_mode="reflect"),
    dict(x=(1, 6, 6, 4), w=(3, 2, 2, 4), stride=(2, 1), padding=((2, 1), (0, 1)), groups=2,
         padding_mode="circular"),
    dict(x=(1, 5, 6, 3), w=(3, 3, 1, 3), padding="same", groups=3, padding_mode="symmetric"),
    dict(x=(2, 5, 5, 2), w=(2, 2, 2, 2), stride=3, padding=(1, 2), padding_mode="replicate"),
]


def central_difference(f, at, direction, h=1e-3):
    return (f(at + h * direction) - f(at - h * direction)) / (2 * h)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", FD_CASES, ids=case_id)
def test_finite_differences(case, algorithm):
    rng = np.random.default_rng(1)
    x, w, gy = make(case, np.float64, seed=1)
    bias = rand(rng, (w.shape[3],))
    args = dict(conv_args(case), algorithm=algorithm)

    def loss(x_, w_, b_=bias):
        return float(np.sum(fastconv.conv2d(x_, w_, b_, **args) * gy))

    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **args)
    for trial in range(3):  # random directions
        dx, dw, db = rand(rng, x.shape), rand(rng, w.shape), rand(rng, bias.shape)
        for grad, d, fd in ((gx, dx, central_difference(lambda v: loss(v, w), x, dx)),
                            (gw, dw, central_difference(lambda v: loss(x, v), w, dw)),
                            (gb, db, central_difference(lambda v: loss(x, w, v), bias, db))):
            assert np.sum(grad * d) == pytest.approx(fd, rel=1e-8, abs=1e-9)
    for _ in range(4):  # single coordinates, including ones in the padded border
        i = tuple(int(rng.integers(n)) for n in x.shape)
        e = np.zeros_like(x)
        e[i] = 1
        assert gx[i] == pytest.approx(central_difference(lambda v: loss(v, w), x, e),
                                      rel=1e-8, abs=1e-9)
        j = tuple(int(rng.integers(n)) for n in w.shape)
        e = np.zeros_like(w)
        e[j] = 1
        assert gw[j] == pytest.approx(central_difference(lambda v: loss(x, v), w, e),
                                      rel=1e-8, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# `needs`

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("needs", [("input",), ("weight",), ("bias",), ("input", "bias"),
                                   ("weight", "input"), (), ["bias", "weight"]])
def test_needs_subsets_return_none_for_the_others(needs, algorithm):
    case = GEOMETRIES[1]
    x, w, gy = make(case, np.float64)
    full = fastconv.conv2d_backward(gy, x, w, **conv_args(case), algorithm=algorithm)
    some = fastconv.conv2d_backward(gy, x, w, **conv_args(case), algorithm=algorithm,
                                    needs=needs)
    assert len(some) == 3
    for name, a, b in zip(("input", "weight", "bias"), full, some):
        if name in needs:
            np.testing.assert_array_equal(b, a)
        else:
            assert b is None


@pytest.mark.parametrize("name, index", [("input", 0), ("weight", 1), ("bias", 2)])
def test_needs_as_a_single_string(name, index):
    case = GEOMETRIES[0]
    x, w, gy = make(case, np.float64)
    full = fastconv.conv2d_backward(gy, x, w)
    some = fastconv.conv2d_backward(gy, x, w, needs=name)
    for i in range(3):
        if i == index:
            np.testing.assert_array_equal(some[i], full[i])
        else:
            assert some[i] is None


@pytest.mark.parametrize("needs", ["inputs", ("input", "grad"), ("bias", "x")])
def test_unknown_needs_raise(needs):
    x, w, gy = make(GEOMETRIES[0], np.float64)
    with pytest.raises(ValueError, match="needs"):
        fastconv.conv2d_backward(gy, x, w, needs=needs)


# ----------------------------------------------------------------------------------------------
# threads, unbatched input, shapes and dtypes

THREAD_CASES = [
    dict(x=(2, 12, 12, 3), w=(3, 3, 3, 4), padding=1),
    dict(x=(2, 12, 11, 16), w=(3, 3, 16, 12), stride=2, padding="same", padding_mode="reflect"),
    dict(x=(2, 12, 12, 8), w=(3, 3, 1, 8), padding=1, groups=8),
    dict(x=(2, 12, 12, 8), w=(1, 1, 8, 16)),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", THREAD_CASES, ids=case_id)
def test_same_result_with_one_and_two_threads(case, dtype, algorithm, kernel_threads):
    x, w, gy = make(case, dtype)
    args = dict(conv_args(case), algorithm=algorithm)
    with fastconv.num_threads(1):
        gx1, gw1, gb1 = fastconv.conv2d_backward(gy, x, w, **args)
    with fastconv.num_threads(2):
        gx2, gw2, gb2 = fastconv.conv2d_backward(gy, x, w, **args)
    assert_threads_ran(kernel_threads)
    np.testing.assert_array_equal(gw2, gw1)  # fixed partial sums: bit-identical by design
    np.testing.assert_array_equal(gb2, gb1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(gx2, gx1, rtol=tol, atol=tol)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", [GEOMETRIES[1], MODE_CASES[0], GEOMETRIES[12]], ids=case_id)
def test_unbatched_input(case, algorithm):
    case = dict(case, x=(1, *case["x"][1:]))
    x, w, gy = make(case, np.float64)
    args = dict(conv_args(case), algorithm=algorithm)
    batched = fastconv.conv2d_backward(gy, x, w, **args)
    single = fastconv.conv2d_backward(gy[0], x[0], w, **args)
    assert single[0].shape == x.shape[1:]
    np.testing.assert_allclose(single[0], batched[0][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(single[1], batched[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(single[2], batched[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [(2, 3, 4, 4), (2, 3, 3, 5), (1, 3, 3, 4), (3, 3, 4), (72,), (),
                                 (2, 3, 3, 4, 1)])
def test_grad_output_of_the_wrong_shape_names_the_expected_shape(bad):
    x, w = np.ones((2, 5, 5, 3)), np.ones((3, 3, 3, 4))  # forward output (2, 3, 3, 4)
    with pytest.raises(ValueError, match=r"grad_output.*\(2, 3, 3, 4\)"):
        fastconv.conv2d_backward(np.ones(bad), x, w)


def test_unbatched_grad_output_of_the_wrong_shape_names_the_expected_shape():
    x, w = np.ones((5, 5, 3)), np.ones((3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"grad_output.*\(3, 3, 4\)"):
        fastconv.conv2d_backward(np.ones((3, 4, 4)), x, w)
    with pytest.raises(ValueError, match=r"grad_output.*\(3, 3, 4\)"):
        fastconv.conv2d_backward(np.ones((1, 3, 3, 4)), x, w)


def test_dtype_promotion_and_inputs_not_modified():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, (1, 5, 5, 2)).astype(np.uint8)
    w = rand(rng, (3, 3, 2, 3), np.float32)
    gy = rand(rng, (1, 3, 3, 3), np.float32)
    copies = [a.copy() for a in (x, w, gy)]
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w)
    assert gx.dtype == gw.dtype == gb.dtype == np.float32
    for a, c in zip((x, w, gy), copies):
        np.testing.assert_array_equal(a, c)
    rx, rw, rb = reference.conv2d_backward(gy, x, w)
    assert_close(gx, rx, np.float32, 27, "grad_input")
    assert_close(gw, rw, np.float32, 9, "grad_weight")


def test_non_contiguous_inputs():
    rng = np.random.default_rng(4)
    x = rand(rng, (2, 12, 7, 6))[:, ::2, :, ::2]  # (2, 6, 7, 3), strided
    w = np.asfortranarray(rand(rng, (3, 3, 3, 4)))
    gy = rand(rng, (2, 4, 5, 8))[..., ::2]
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w)
    rx, rw, rb = reference.conv2d_backward(gy, x, w)
    assert_close(gx, rx, np.float64, 1, "grad_input")
    assert_close(gw, rw, np.float64, 1, "grad_weight")
    assert_close(gb, rb, np.float64, 1, "grad_bias")


# ----------------------------------------------------------------------------------------------
# property test over random geometries

@st.composite
def geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2), 9))
    wd = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2), 9))
    mode = draw(st.sampled_from(PADDING_MODES))
    # reflect needs pad < size; keep every mode within the input so all agree on the meaning
    cap_h, cap_w = (h - 1, wd - 1) if mode == "reflect" else (h, wd)
    padding = draw(st.one_of(
        st.just("same"),
        st.tuples(st.tuples(st.integers(0, min(2, cap_h)), st.integers(0, min(2, cap_h))),
                  st.tuples(st.integers(0, min(2, cap_w)), st.integers(0, min(2, cap_w))))))
    case = dict(x=(draw(st.integers(1, 2)), h, wd, cig * groups), w=(kh, kw, cig, cog * groups),
                stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups,
                padding_mode=mode)
    ref = conv_reference_args(case)
    if mode == "reflect" and max(max(ref["pads"][0]) >= h, max(ref["pads"][1]) >= wd):
        case["padding_mode"] = "zeros"
    if min(conv_out_shape(case)[1:3]) < 1:
        case["padding"] = "same"  # always has an output
        case["padding_mode"] = "zeros"
    return case


@settings(max_examples=40, deadline=None)
@given(case=geometries(), algorithm=st.sampled_from(ALGORITHMS),
       dtype=st.sampled_from(DTYPES))
def test_property_gradients_match_reference(case, algorithm, dtype):
    check_against_reference(case, dtype, algorithm)
