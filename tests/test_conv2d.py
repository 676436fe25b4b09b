"""conv2d forward against the plain NumPy reference, dtype rules, input handling, known values."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastconv
import reference
from conftest import ALGORITHMS, FLOAT_DTYPES, assert_close, random_array

PADDING_MODES = ("zeros", "reflect", "symmetric", "replicate", "circular")


# ----------------------------------------------------------------------------------------------
# what the reference needs, written from API.md (not from fastconv._params)

def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Case(NamedTuple):
    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    cout: int
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    mode: str = "zeros"


CASES = {
    "basic": Case(2, 7, 9, 3, 3, 3, 4),
    "odd_sizes_padded": Case(1, 11, 5, 5, 3, 5, 7, padding=2),
    "1x1": Case(2, 6, 5, 8, 1, 1, 16),
    "1x1_stride2": Case(2, 7, 7, 8, 1, 1, 4, stride=2),
    "1x3_and_3x1": Case(1, 6, 7, 4, 1, 3, 5, padding=(0, 1)),
    "3x1": Case(1, 6, 7, 4, 3, 1, 5, stride=(2, 1)),
    "kernel_is_padded_input": Case(1, 4, 5, 2, 6, 7, 3, padding=1),
    "kernel_is_input": Case(2, 5, 5, 3, 5, 5, 2),
    "stride_gt_kernel": Case(2, 10, 11, 3, 2, 2, 4, stride=3),
    "stride_gt_kernel_1x1": Case(1, 9, 8, 2, 1, 1, 3, stride=(4, 3)),
    "c1": Case(3, 8, 8, 1, 5, 5, 6),
    "c1_cout1": Case(2, 6, 6, 1, 3, 3, 1, padding=1),
    "n1": Case(1, 9, 7, 6, 3, 3, 10, padding=1),
    "depthwise": Case(2, 8, 8, 6, 3, 3, 6, padding=1, groups=6),
    "depthwise_stride2": Case(1, 9, 9, 8, 3, 3, 8, stride=2, padding=1, groups=8),
    "depthwise_many_channels": Case(1, 5, 6, 40, 3, 3, 40, padding=1, groups=40),
    "depth_multiplier": Case(2, 7, 6, 4, 3, 3, 8, padding=1, groups=4),
    "grouped": Case(2, 6, 7, 8, 3, 3, 12, padding=1, groups=4),
    "grouped_dilated": Case(1, 9, 9, 6, 3, 3, 4, dilation=2, groups=2),
    "grouped_wide": Case(1, 5, 5, 96, 3, 3, 48, padding=1, groups=3),
    "large_channels": Case(1, 5, 6, 96, 3, 3, 80, padding=1),
    "large_channels_1x1": Case(2, 4, 4, 96, 1, 1, 80),
    "asym_padding": Case(2, 6, 7, 3, 3, 3, 4, padding=((0, 2), (1, 0))),
    "asym_padding_stride2": Case(1, 7, 8, 3, 3, 3, 5, stride=2, padding=((3, 1), (2, 4))),
    "mixed_padding": Case(1, 5, 6, 2, 3, 3, 3, padding=(1, (0, 2))),
    "pair_padding": Case(1, 6, 6, 3, 3, 3, 4, padding=(2, 0)),
    "valid": Case(2, 8, 9, 3, 3, 4, 5, padding="valid"),
    "dilation2": Case(1, 9, 10, 3, 3, 3, 4, padding=2, dilation=2),
    "dilation_2_3_stride2": Case(2, 11, 12, 3, 3, 3, 4, stride=2, padding=1, dilation=(2, 3)),
    "reflect": Case(2, 6, 7, 3, 3, 3, 4, padding=2, mode="reflect"),
    "symmetric": Case(2, 6, 7, 3, 3, 3, 4, padding=2, mode="symmetric"),
    "replicate": Case(2, 6, 7, 3, 3, 3, 4, padding=3, mode="replicate"),
    "circular": Case(2, 6, 7, 3, 3, 3, 4, padding=3, mode="circular"),
    "reflect_asym_strided": Case(1, 7, 8, 4, 3, 3, 4, stride=2, padding=((2, 1), (0, 3)),
                                 mode="reflect"),
    "symmetric_dilated": Case(1, 6, 7, 2, 3, 3, 3, padding=((3, 2), (1, 4)), dilation=2,
                              mode="symmetric"),
    "replicate_grouped": Case(2, 5, 6, 4, 3, 3, 6, padding=(2, 1), groups=2, mode="replicate"),
    "circular_depthwise": Case(1, 5, 5, 3, 3, 3, 3, padding=((1, 2), (2, 1)), groups=3,
                               mode="circular"),
    "circular_pad_gt_input": Case(1, 3, 4, 2, 3, 3, 2, padding=5, mode="circular"),
    "replicate_pad_gt_input": Case(1, 2, 3, 2, 3, 3, 2, padding=4, mode="replicate"),
}


def run_case(case: Case, algorithm, dtype, with_bias, rng):
    x = random_array(rng, (case.n, case.h, case.w, case.c), dtype)
    w = random_array(rng, (case.kh, case.kw, case.c // case.groups, case.cout), dtype)
    b = random_array(rng, (case.cout,), dtype) if with_bias else None
    y = fastconv.conv2d(x, w, b, stride=case.stride, padding=case.padding,
                        dilation=case.dilation, groups=case.groups, padding_mode=case.mode,
                        algorithm=algorithm)
    stride, dilation = pair(case.stride), pair(case.dilation)
    pads = reference.pads_from_spec(case.padding, (case.h, case.w), (case.kh, case.kw), stride, dilation)
    ref = reference.conv2d(x, w, b, stride, pads, dilation, case.groups, case.mode)
    assert y.dtype == dtype
    assert_close(y, ref, dtype, terms=w.shape[0] * w.shape[1] * w.shape[2] + with_bias)
    return y, ref


@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_matches_reference(case, algorithm, dtype, with_bias, rng):
    run_case(case, algorithm, dtype, with_bias, rng)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("kernel", [(3, 3), (2, 4), (5, 2)])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding(stride, dilation, kernel, mode, algorithm, dtype, rng):
    # sizes chosen so the total padding is odd for some axes (the split then matters)
    h, w = 7, 10
    case = Case(2, h, w, 3, *kernel, 4, stride=stride, padding="same", dilation=dilation,
                mode=mode)
    y, _ = run_case(case, algorithm, dtype, True, rng)
    assert y.shape == (2, math.ceil(h / stride), math.ceil(w / stride), 4)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_puts_the_odd_pixel_bottom_right(algorithm):
    # 4x4 input of ones, 2x2 kernel of ones, stride 1: one row/column of zero padding, which
    # must be at the bottom/right, so the last row and column see fewer ones.
    x = np.ones((1, 4, 4, 1))
    w = np.ones((2, 2, 1, 1))
    y = fastconv.conv2d(x, w, padding="same", algorithm=algorithm)[0, ..., 0]
    expected = np.array([[4, 4, 4, 2], [4, 4, 4, 2], [4, 4, 4, 2], [2, 2, 2, 1]], float)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("padding", [0, 2, "same", ((1, 0), (0, 3))])
def test_empty_batch(padding, algorithm, dtype):
    x = np.zeros((0, 6, 7, 4), dtype)
    w = np.ones((3, 3, 2, 6), dtype)
    y = fastconv.conv2d(x, w, np.ones(6, dtype), stride=2, padding=padding, groups=2,
                        algorithm=algorithm)
    pads = reference.pads_from_spec(padding, (6, 7), (3, 3), (2, 2), (1, 1))
    ho = (6 + sum(pads[0]) - 3) // 2 + 1
    wo = (7 + sum(pads[1]) - 3) // 2 + 1
    assert y.shape == (0, ho, wo, 6)
    assert y.dtype == dtype


# ----------------------------------------------------------------------------------------------
# property test: random configurations against the reference

@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    cig = draw(st.integers(1, 3))
    cog = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    mode = draw(st.sampled_from(PADDING_MODES))
    form = draw(st.sampled_from(["int", "pair", "pairs", "same", "valid"]))
    small = st.integers(0, 3)
    if form == "int":
        padding = draw(small)
    elif form == "pair":
        padding = (draw(small), draw(small))
    elif form == "pairs":
        padding = ((draw(small), draw(small)), (draw(small), draw(small)))
    else:
        padding = form
    # input sizes from the smallest giving an output of at least one pixel
    in_hw = []
    for axis, k, d in zip(range(2), (kh, kw), dilation):
        if form in ("same", "valid"):
            low = 1 if form == "same" else d * (k - 1) + 1
        else:
            pads = reference.pads_from_spec(padding, (1, 1), (kh, kw), stride, dilation)[axis]
            low = max(1, d * (k - 1) + 1 - sum(pads))
        in_hw.append(draw(st.integers(low, low + 6)))
    pads = reference.pads_from_spec(padding, in_hw, (kh, kw), stride, dilation)
    # reflect needs the padding inside the image (it is ambiguous beyond)
    if mode == "reflect":
        assume(all(max(p) < n for p, n in zip(pads, in_hw)))
    n = draw(st.integers(0, 2))
    return dict(shape=(n, *in_hw, cig * groups), weight_shape=(kh, kw, cig, cog * groups),
                stride=stride, padding=padding, dilation=dilation, groups=groups, mode=mode,
                pads=pads, dtype=draw(st.sampled_from(FLOAT_DTYPES)),
                algorithm=draw(st.sampled_from(ALGORITHMS)), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(conv_configs())
def test_random_configurations_match_reference(cfg):
    rng = np.random.default_rng(cfg["seed"])
    dtype = cfg["dtype"]
    x = random_array(rng, cfg["shape"], dtype)
    w = random_array(rng, cfg["weight_shape"], dtype)
    b = random_array(rng, (w.shape[3],), dtype) if cfg["bias"] else None
    y = fastconv.conv2d(x, w, b, stride=cfg["stride"], padding=cfg["padding"],
                        dilation=cfg["dilation"], groups=cfg["groups"],
                        padding_mode=cfg["mode"], algorithm=cfg["algorithm"])
    ref = reference.conv2d(x, w, b, cfg["stride"], cfg["pads"], cfg["dilation"], cfg["groups"],
                           cfg["mode"])
    assert y.dtype == dtype
    assert_close(y, ref, dtype, terms=w.shape[0] * w.shape[1] * w.shape[2] + cfg["bias"])


# ----------------------------------------------------------------------------------------------
# dtype rules: np.result_type(x, weight, float32)

@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype, expected", [
    (np.uint8, np.float32, None, np.float32),
    (np.int16, np.float32, None, np.float32),
    (np.float16, np.float32, None, np.float32),
    (np.int8, np.float32, np.float32, np.float32),
    (np.uint8, np.uint8, None, np.float32),
    (np.float16, np.float16, None, np.float32),
    (np.int32, np.float32, None, np.float64),
    (np.int64, np.float32, None, np.float64),
    (np.int64, np.int64, None, np.float64),
    (np.float32, np.int32, None, np.float64),
    (np.float64, np.float32, None, np.float64),
    (np.float32, np.float64, None, np.float64),
    # the bias is cast to np.result_type(x, weight, float32): it never widens the result
    (np.float32, np.float32, np.float64, np.float32),
    (np.float32, np.float32, np.int64, np.float32),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float32, np.float32),
])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_result_dtype(x_dtype, w_dtype, b_dtype, expected, algorithm, rng):
    x = random_array(rng, (2, 5, 6, 3), x_dtype)
    w = random_array(rng, (3, 3, 3, 4), w_dtype)
    b = None if b_dtype is None else random_array(rng, (4,), b_dtype)
    y = fastconv.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert y.dtype == expected
    ref = reference.conv2d(x, w, b, pads=((1, 1), (1, 1)))
    assert_close(y, ref, expected, terms=27 + (b is not None))


NON_REAL = {
    "complex128": lambda shape: np.ones(shape, np.complex128),
    "complex64": lambda shape: np.ones(shape, np.complex64),
    "object": lambda shape: np.full(shape, 1.0, dtype=object),
    "str": lambda shape: np.full(shape, "1"),
    "bytes": lambda shape: np.full(shape, b"1"),
}


@pytest.mark.parametrize("kind", list(NON_REAL))
@pytest.mark.parametrize("role", ["input", "weight", "bias"])
def test_non_real_dtypes_raise_type_error(kind, role):
    shapes = {"input": (1, 4, 4, 2), "weight": (3, 3, 2, 2), "bias": (2,)}
    args = {role: np.ones(shape) for role, shape in shapes.items()}
    args[role] = NON_REAL[kind](shapes[role])
    with pytest.raises(TypeError, match=role) as info:
        fastconv.conv2d(args["input"], args["weight"], args["bias"])
    assert str(args[role].dtype) in str(info.value)


# ----------------------------------------------------------------------------------------------
# memory layouts and array-likes: same result as the contiguous arrays, inputs untouched

def layouts(rng):
    """(x, w, b) in awkward forms, each paired with its plain contiguous float64 copy."""
    big = rng.standard_normal((4, 13, 14, 6))
    x_strided = big[::2, 1::2, ::-2, ::2]  # steps, negative step, offset
    x_transposed = np.ascontiguousarray(rng.standard_normal((2, 7, 6, 3))).transpose(0, 2, 1, 3)
    w = rng.standard_normal((3, 2, 3, 5))
    b = rng.standard_normal(5)
    readonly = [a.copy() for a in (x_transposed, w, b)]
    for a in readonly:
        a.flags.writeable = False
    return {
        "strided_x": (x_strided, w, b),
        "transposed_x": (x_transposed, w, b),
        "transposed_w": (x_transposed, np.ascontiguousarray(w.transpose(1, 0, 3, 2))
                         .transpose(1, 0, 3, 2), b),
        "fortran": (np.asfortranarray(x_transposed), np.asfortranarray(w), b),
        "strided_bias": (x_strided, w, np.repeat(b, 2)[::2]),
        "readonly": tuple(readonly),
        "nested_lists": (x_transposed.tolist(), w.tolist(), b.tolist()),
        "float32_views": (x_strided.astype(np.float32)[:, ::-1], np.asfortranarray(w, np.float32),
                          b.astype(np.float32)),
    }


LAYOUTS = list(layouts(np.random.default_rng(0)))


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_and_array_likes(layout, algorithm, mode, rng):
    x, w, b = layouts(rng)[layout]
    originals = [np.array(a, copy=True) for a in (x, w, b)]
    y = fastconv.conv2d(x, w, b, stride=(1, 2), padding=((2, 1), (1, 2)), padding_mode=mode,
                        algorithm=algorithm)
    dtype = np.result_type(*originals, np.float32)
    assert y.dtype == dtype
    ref = reference.conv2d(originals[0], originals[1], originals[2], (1, 2),
                           ((2, 1), (1, 2)), (1, 1), 1, mode)
    assert_close(y, ref, dtype, terms=3 * 2 * 3 + 1)
    # inputs are never modified
    for arg, original in zip((x, w, b), originals):
        np.testing.assert_array_equal(np.asarray(arg), original)
    if layout == "readonly":
        assert not any(a.flags.writeable for a in (x, w, b))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inputs_not_modified_contiguous(algorithm, rng):
    x = rng.standard_normal((2, 6, 6, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    copies = [a.copy() for a in (x, w, b)]
    y = fastconv.conv2d(x, w, b, padding=1, groups=2, algorithm=algorithm)
    assert not np.shares_memory(y, x)
    for arg, copy in zip((x, w, b), copies):
        np.testing.assert_array_equal(arg, copy)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("padding, stride, mode", [
    (0, 1, "zeros"), ("same", 2, "reflect"), (((1, 2), (0, 1)), (2, 1), "circular")])
def test_unbatched_input_gives_unbatched_output(padding, stride, mode, algorithm, rng):
    x = rng.standard_normal((7, 8, 3))
    w = rng.standard_normal((3, 3, 3, 5))
    b = rng.standard_normal(5)
    kwargs = dict(stride=stride, padding=padding, padding_mode=mode, algorithm=algorithm)
    y3 = fastconv.conv2d(x, w, b, **kwargs)
    y4 = fastconv.conv2d(x[None], w, b, **kwargs)
    assert y3.ndim == 3
    assert y4.shape == (1, *y3.shape)
    np.testing.assert_array_equal(y3, y4[0])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_numpy_integer_arguments(algorithm, rng):
    x = rng.standard_normal((1, 9, 8, 4))
    w = rng.standard_normal((3, 3, 2, 4))
    y_np = fastconv.conv2d(x, w, stride=np.int64(2), padding=(np.int32(1), (np.uint8(0), 2)),
                           dilation=(np.int8(1), 2), groups=np.int64(2), algorithm=algorithm)
    y_py = fastconv.conv2d(x, w, stride=2, padding=((1, 1), (0, 2)), dilation=(1, 2), groups=2,
                           algorithm=algorithm)
    np.testing.assert_array_equal(y_np, y_py)
    ref = reference.conv2d(x, w, None, (2, 2), ((1, 1), (0, 2)), (1, 2), 2)
    assert_close(y_np, ref, np.float64, terms=18)


# ----------------------------------------------------------------------------------------------
# known values and output-shape formulas

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_known_values(algorithm, dtype):
    x = np.arange(9, dtype=dtype).reshape(1, 3, 3, 1)
    w = np.arange(4, dtype=dtype).reshape(2, 2, 1, 1)
    y = fastconv.conv2d(x, w, algorithm=algorithm)
    # y[0,0] = 0*0 + 1*1 + 3*2 + 4*3 = 19, and so on
    np.testing.assert_array_equal(y[0, ..., 0], [[19, 25], [37, 43]])
    y_bias = fastconv.conv2d(x[0], w, bias=[10], algorithm=algorithm)
    np.testing.assert_array_equal(y_bias[..., 0], [[29, 35], [47, 53]])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_known_values_grouped_and_padded(algorithm):
    # channel 0 is convolved with ones (box sums), channel 1 with -ones: groups keep them apart
    x = np.stack([np.arange(9.).reshape(3, 3), np.ones((3, 3))], axis=-1)
    w = np.stack([np.ones((2, 2)), -np.ones((2, 2))], axis=-1)[:, :, None, :]
    y = fastconv.conv2d(x, w, padding=((0, 1), (0, 1)), groups=2, algorithm=algorithm)
    np.testing.assert_array_equal(y[..., 0], [[8, 12, 7], [20, 24, 13], [13, 15, 8]])
    np.testing.assert_array_equal(y[..., 1], [[-4, -4, -2], [-4, -4, -2], [-2, -2, -1]])


def test_conv_output_shape_formula():
    checked = 0
    for n in range(1, 13):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(3):
                    for d in range(1, 3):
                        expected = (n + 2 * p - (d * (k - 1) + 1)) // s + 1
                        if expected < 1:
                            with pytest.raises(ValueError, match="padded input size"):
                                fastconv.conv_output_shape((n, n), k, s, p, d)
                            continue
                        assert fastconv.conv_output_shape((n, n), k, s, p, d) == (expected,) * 2
                        assert fastconv.conv_output_shape((n, 5), (k, 1), (s, 1), (p, 0),
                                                          (d, 1))[0] == expected
                        checked += 1
    assert checked > 500


def test_conv_output_shape_matches_conv2d(rng):
    x = rng.standard_normal((1, 9, 11, 2))
    w = rng.standard_normal((3, 2, 2, 3))
    for kwargs in (dict(stride=2, padding=1), dict(stride=(3, 1), padding="same"),
                   dict(dilation=(2, 3), padding=((1, 0), (2, 3))), dict(padding="valid")):
        y = fastconv.conv2d(x, w, **kwargs)
        assert fastconv.conv_output_shape((9, 11), (3, 2), **kwargs) == y.shape[1:3]


def test_conv_transpose_output_shape_formula():
    checked = 0
    for n in range(1, 8):
        for k in range(1, 5):
            for s in range(1, 4):
                for d in range(1, 3):
                    for op in range(max(s, d)):
                        for p in range(3):
                            expected = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
                            if expected < 1:
                                continue
                            got = fastconv.conv_transpose_output_shape((n, n), k, s, p, op, d)
                            assert got == (expected, expected)
                            checked += 1
    assert checked > 500


@pytest.mark.parametrize("groups, cout", [(1, 5), (2, 6), (3, 3)])  # plain, grouped, depthwise
def test_direct_kernel_channel_padding_is_np_pad_with_zeros(groups, cout):
    # the direct kernel's whole-vector loads run into the padding: zeros there (np.pad's
    # result exactly), whatever the memory held before, in aligned arrays
    from fastconv import _memory, functional
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3, 3 // groups, cout)).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    _memory.empty((4096,), np.float32)[...] = np.nan  # freed memory a new array may reuse
    padded_w, padded_b = functional._padded_weight(w, bias, groups, 16)
    cog = cout // groups
    grouped = w.reshape(3, 3, 3 // groups, groups, cog)
    extra = -(cout if groups == cout else cog) % 16
    if groups == cout:  # depthwise: all channels as one group
        expected_w = np.pad(w, ((0, 0),) * 3 + ((0, extra),))
        expected_b = np.pad(bias, (0, extra))
    else:
        expected_w = np.pad(grouped, ((0, 0),) * 4 + ((0, extra),)).reshape(3, 3, 3 // groups, -1)
        expected_b = np.pad(bias.reshape(groups, cog), ((0, 0), (0, extra))).reshape(-1)
    np.testing.assert_array_equal(padded_w, expected_w)
    np.testing.assert_array_equal(padded_b, expected_b)
    assert padded_w.ctypes.data % _memory.ALIGNMENT == 0
