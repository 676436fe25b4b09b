"""conv_matrix: C @ x == conv2d(x), C.T @ g == the input gradient / transposed convolution."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.matrix import conv_matrix
import reference
from reference import conv2d as ref_conv2d

# (input_shape NHWC, weight shape HWIO, keyword arguments)
GRID = [
    ((1, 4, 4, 1), (3, 3, 1, 1), {}),
    ((2, 5, 6, 3), (3, 2, 3, 4), {"stride": 2}),
    ((2, 5, 6, 3), (3, 3, 3, 2), {"padding": 1}),
    ((1, 7, 5, 2), (2, 3, 2, 3), {"padding": (2, 1), "stride": (2, 3)}),
    ((1, 6, 6, 2), (3, 3, 2, 2), {"padding": ((2, 0), (1, 3))}),
    ((3, 6, 7, 2), (3, 3, 2, 2), {"padding": "valid"}),
    ((1, 6, 7, 2), (4, 3, 2, 2), {"padding": "same"}),
    ((1, 7, 8, 2), (3, 2, 2, 3), {"padding": "same", "stride": 2}),
    ((2, 9, 9, 2), (3, 3, 2, 2), {"dilation": 2, "padding": 2}),
    ((1, 9, 8, 2), (2, 3, 2, 1), {"dilation": (3, 2), "padding": "same"}),
    ((2, 5, 5, 4), (3, 3, 2, 6), {"groups": 2, "padding": 1}),
    ((1, 6, 5, 6), (3, 3, 1, 6), {"groups": 6, "padding": 1, "stride": 2}),  # depthwise
    ((2, 6, 6, 4), (3, 3, 1, 8), {"groups": 4, "padding": "same", "dilation": 2}),
    ((1, 3, 3, 1), (5, 5, 1, 1), {"padding": 2}),  # the kernel overhangs on every side
    ((2, 4, 5, 3), (1, 1, 3, 2), {}),
]


def _ids(case):
    return f"{case[0]}-{case[1]}-{case[2]}"


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def geometry(shape, wshape, kwargs):
    stride, dilation = pair(kwargs.get("stride", 1)), pair(kwargs.get("dilation", 1))
    pads = reference.pads_from_spec(kwargs.get("padding", 0), shape[1:3], wshape[:2], stride, dilation)
    return stride, dilation, pads


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_matches_conv2d_and_its_input_gradient(case):
    shape, wshape, kwargs = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    c = conv_matrix(shape, w, **kwargs)
    y = fastconv.conv2d(x, w, **kwargs)
    assert isinstance(c, scipy.sparse.csr_array)
    assert c.shape == (y.size, x.size)
    np.testing.assert_allclose(c @ x.ravel(), y.ravel(), rtol=1e-12, atol=1e-12)
    # and against the plain NumPy reference, which shares nothing with fastconv
    stride, dilation, pads = geometry(shape, wshape, kwargs)
    ref = ref_conv2d(x, w, stride=stride, pads=pads, dilation=dilation,
                     groups=kwargs.get("groups", 1))
    np.testing.assert_allclose((c @ x.ravel()).reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    gx = fastconv.conv2d_backward(g, x, w, needs=("input",), **kwargs)[0]
    np.testing.assert_allclose(c.T @ g.ravel(), gx.ravel(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in GRID if c[2].get("padding") != "same"], ids=_ids)
def test_transpose_is_conv_transpose2d(case):
    shape, wshape, kwargs = case
    rng = np.random.default_rng(2)
    w = rng.standard_normal(wshape)
    c = conv_matrix(shape, w, **kwargs)
    stride, dilation, pads = geometry(shape, wshape, kwargs)
    out_hw = fastconv.conv_output_shape(shape[1:3], wshape[:2], stride, pads, dilation)
    g = rng.standard_normal((shape[0], *out_hw, wshape[3]))
    # output_padding restores the rows/columns a stride > 1 dropped
    output_padding = tuple(
        n - ((o - 1) * s - p[0] - p[1] + d * (k - 1) + 1)
        for n, o, s, p, d, k in zip(shape[1:3], out_hw, stride, pads, dilation, wshape[:2]))
    t = fastconv.conv_transpose2d(g, w, stride=stride, padding=pads,
                                  output_padding=output_padding, dilation=dilation,
                                  groups=kwargs.get("groups", 1))
    np.testing.assert_allclose(c.T @ g.ravel(), t.ravel(), rtol=1e-12, atol=1e-12)


def in_bounds_taps(shape, wshape, kwargs) -> int:
    """The number of (output element, tap) pairs that read a real input pixel, counted one
    by one: this is how many entries C must store."""
    n, h, w, _ = shape
    kh, kw, cig, c_out = wshape
    stride, dilation, pads = geometry(shape, wshape, kwargs)
    ho, wo = fastconv.conv_output_shape((h, w), (kh, kw), stride, pads, dilation)
    count = 0
    for oh in range(ho):
        for ow in range(wo):
            for r in range(kh):
                for s in range(kw):
                    ih = oh * stride[0] - pads[0][0] + r * dilation[0]
                    iw = ow * stride[1] - pads[1][0] + s * dilation[1]
                    if 0 <= ih < h and 0 <= iw < w:
                        count += 1
    return count * n * c_out * cig


@pytest.mark.parametrize("case", GRID, ids=_ids)
def test_stores_only_in_bounds_taps(case):
    shape, wshape, kwargs = case
    w = np.random.default_rng(3).standard_normal(wshape)
    w[0, 0] = 0.0  # zero weights are taps too: stored, so nnz is the tap count
    c = conv_matrix(shape, w, **kwargs)
    assert c.nnz == in_bounds_taps(shape, wshape, kwargs)
    assert c.has_canonical_format  # sorted, no duplicates


def test_dense_matrix_equals_conv2d_of_basis_vectors():
    """Column j of C is the convolution of the j-th unit input (the definition of C)."""
    shape, wshape, kwargs = (1, 5, 4, 2), (3, 2, 1, 4), {"padding": 1, "stride": 2, "groups": 2}
    w = np.random.default_rng(4).standard_normal(wshape)
    dense = conv_matrix(shape, w, **kwargs).toarray()
    for j in range(math.prod(shape)):
        e = np.zeros(math.prod(shape))
        e[j] = 1.0
        np.testing.assert_array_equal(dense[:, j],
                                      fastconv.conv2d(e.reshape(shape), w, **kwargs).ravel())


def test_lecture_4x4_input_3x3_kernel():
    """The lecture's example: a 4x4 input and a 3x3 kernel give a 2x2 output, so C is 4 x 16;
    each row holds the kernel's rows at offsets 0, 4, 8 of the window's top-left pixel."""
    w = np.arange(9.0).reshape(3, 3, 1, 1)
    c = conv_matrix((4, 4, 1), w)
    assert c.shape == (4, 16)
    assert c.T.shape == (16, 4)
    expected = np.array([
        [0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 0, 0, 0, 0],
        [0, 0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0],
        [0, 0, 0, 0, 0, 0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8],
    ], dtype=float)
    np.testing.assert_array_equal(c.toarray(), expected)
    assert c.nnz == 4 * 9


def test_unbatched_shape_is_one_image():
    w = np.random.default_rng(5).standard_normal((3, 3, 2, 3))
    batched = conv_matrix((1, 5, 6, 2), w, padding=1)
    unbatched = conv_matrix((5, 6, 2), w, padding=1)
    assert (unbatched != batched).nnz == 0
    assert unbatched.shape == (5 * 6 * 3, 5 * 6 * 2)


@pytest.mark.parametrize("shape, wshape, kwargs", [
    ((2, 9, 3), (3, 3, 4), {}),
    ((2, 9, 3), (3, 3, 4), {"padding": "same", "stride": 2}),
    ((1, 10, 4), (2, 2, 6), {"padding": (1, 2), "dilation": 3, "groups": 2}),
    ((9, 3), (4, 3, 2), {"padding": 1}),
])
def test_one_dimensional(shape, wshape, kwargs):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(wshape)
    c = conv_matrix(shape, w, **kwargs)
    y = fastconv.conv1d(x, w, **kwargs)
    assert c.shape == (y.size, x.size)
    np.testing.assert_allclose(c @ x.ravel(), y.ravel(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    gx = fastconv.conv1d_backward(g, x, w, needs=("input",), **kwargs)[0]
    np.testing.assert_allclose(c.T @ g.ravel(), gx.ravel(), rtol=1e-12, atol=1e-12)


def test_one_dimensional_is_two_dimensional_with_height_one():
    w = np.random.default_rng(7).standard_normal((3, 2, 5))
    c1 = conv_matrix((2, 8, 2), w, padding=1, stride=2)
    c2 = conv_matrix((2, 1, 8, 2), w[None], padding=(0, 1), stride=(1, 2))
    assert c1.shape == c2.shape
    assert (c1 != c2).nnz == 0


@pytest.mark.parametrize("wdtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64),
    (np.uint8, np.float32), (np.float16, np.float32),
])
def test_dtype_follows_the_weight(wdtype, expected):
    w = np.arange(18).reshape(3, 3, 2, 1).astype(wdtype)
    c = conv_matrix((1, 4, 4, 2), w)
    assert c.dtype == expected
    x = np.random.default_rng(8).standard_normal((1, 4, 4, 2)).astype(np.float32)
    y = fastconv.conv2d(x, w.astype(np.float32))
    np.testing.assert_allclose(c @ x.ravel(), y.ravel(), rtol=1e-5, atol=1e-4)


def test_empty_batch_gives_an_empty_matrix():
    c = conv_matrix((0, 4, 4, 1), np.ones((3, 3, 1, 2)))
    assert c.shape == (0, 0)
    assert c.nnz == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
       kh=st.integers(1, 4), kw=st.integers(1, 4), groups=st.sampled_from([1, 2]),
       cig=st.integers(1, 2), cog=st.integers(1, 2), stride=st.tuples(st.integers(1, 3),
                                                                      st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.one_of(st.sampled_from(["same", "valid"]),
                         st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                   st.tuples(st.integers(0, 3), st.integers(0, 3)))),
       seed=st.integers(0, 2**16))
def test_property_matches_conv2d(n, h, w, kh, kw, groups, cig, cog, stride, dilation, padding,
                                 seed):
    shape = (n, h, w, cig * groups)
    wshape = (kh, kw, cig, cog * groups)
    kwargs = {"stride": stride, "dilation": dilation, "padding": padding, "groups": groups}
    stride_, dilation_, pads = geometry(shape, wshape, kwargs)
    out = [(size + p[0] + p[1] - d * (k - 1) - 1) // s + 1 for size, p, k, s, d in
           zip((h, w), pads, (kh, kw), stride_, dilation_)]
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal(wshape)
    if min(out) < 1:
        with pytest.raises(ValueError, match="kernel size"):
            conv_matrix(shape, weight, **kwargs)
        return
    x = rng.standard_normal(shape)
    c = conv_matrix(shape, weight, **kwargs)
    np.testing.assert_allclose(c @ x.ravel(), fastconv.conv2d(x, weight, **kwargs).ravel(),
                               rtol=1e-12, atol=1e-12)
    assert c.nnz == in_bounds_taps(shape, wshape, kwargs)


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("shape, wshape, kwargs, error, match", [
    ((4, 4), (3, 3, 1, 1), {}, ValueError, "input_shape"),
    ((1, 1, 4, 4, 1), (3, 3, 1, 1), {}, ValueError, "input_shape"),
    ((1, 4, 4, 1), (3, 3, 1), {}, ValueError, "input_shape"),  # 3-D weight: 1-D conv
    ((1, -4, 4, 1), (3, 3, 1, 1), {}, ValueError, r"input_shape\[1\]"),
    ((1, 4.0, 4, 1), (3, 3, 1, 1), {}, TypeError, r"input_shape\[1\]"),
    ((1, 4, 4, 2), (3, 3, 1, 1), {}, ValueError, "1 channels, but got 2"),
    ((1, 4, 4, 4), (3, 3, 2, 3), {"groups": 2}, ValueError, "divisible by groups"),
    ((1, 4, 4, 1), (3, 3), {}, ValueError, "weight"),
    ((1, 2, 2, 1), (3, 3, 1, 1), {}, ValueError, "kernel size"),
    ((1, 4, 4, 1), (3, 3, 1, 1), {"padding": "full"}, ValueError, "padding"),
    ((1, 4, 4, 1), (3, 3, 1, 1), {"stride": 0}, ValueError, "stride"),
    ((1, 4, 4, 1), (3, 3, 1, 1), {"dilation": (1, 0)}, ValueError, "dilation"),
    ((1, 4, 4, 1), (3, 3, 1, 1), {"groups": 0}, ValueError, "groups"),
])
def test_bad_arguments(shape, wshape, kwargs, error, match):
    with pytest.raises(error, match=match):
        conv_matrix(shape, np.ones(wshape), **kwargs)


def test_bad_input_shape_type_and_weight_dtype():
    with pytest.raises(ValueError, match="input_shape"):
        conv_matrix(16, np.ones((3, 3, 1, 1)))
    with pytest.raises(TypeError, match="weight"):
        conv_matrix((1, 4, 4, 1), np.ones((3, 3, 1, 1), complex))
    with pytest.raises(TypeError, match="padding_mode"):
        conv_matrix((1, 4, 4, 1), np.ones((3, 3, 1, 1)), padding_mode="circular")
