"""Convolution as a matrix: the sparse C with conv2d(x, w).ravel() == C @ x.ravel().

Every output element is a weighted sum of input elements, so a convolution with a fixed
weight is a linear map, i.e. a (mostly zero) matrix. Its transpose is the transposed
convolution (the input gradient of conv2d). Useful for teaching and for checking; the
convolution functions never build it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse

from fastconv import _params, functional

_LAYOUT_2D = "(H, W, C) or (N, H, W, C) [NHWC] for a 4-D weight"
_LAYOUT_1D = "(L, C) or (N, L, C) [NLC] for a 3-D weight"


def conv_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1):
    """The convolution with `weight` as a sparse matrix acting on flattened NHWC arrays.

    input_shape: (N, H, W, C_in) or (H, W, C_in) for a 2-D weight (kh, kw, C_in // groups,
    C_out); (N, L, C_in) or (L, C_in) for a 1-D weight (k, C_in // groups, C_out).
    stride, padding, dilation, groups: as for conv2d / conv1d (zero padding only).

    Returns a scipy.sparse.csr_array C of shape (y.size, x.size) such that, for x of
    `input_shape` and y = conv2d(x, weight, ...) (conv1d for a 3-D weight),
        C @ x.ravel() == y.ravel()   and   C.T @ g.ravel() == the input gradient of conv2d
    (== conv_transpose2d(g, weight, ...)). Only in-bounds taps are stored: taps that fall
    on padding have no entry, so C.nnz is the number of (output, tap) pairs that read the
    input (zero weights are stored). dtype: float32 or float64, as
    np.result_type(weight, float32).
    """
    fn = "conv_matrix"
    weight = _params.as_array("weight", weight)
    _params.check_ndim("weight", weight, (3, 4),
                       "(kh, kw, C_in // groups, C_out) [HWIO] or (k, C_in // groups, C_out)")
    one_d = weight.ndim == 3
    shape = _params.as_shape("input_shape", input_shape, (2, 3) if one_d else (3, 4),
                             _LAYOUT_1D if one_d else _LAYOUT_2D)
    # A zero-strided stand-in for x (no memory), so conv2d's own checks run unchanged.
    x = np.broadcast_to(np.zeros((), np.float32), shape)
    if one_d:  # as conv1d does: H = 1
        x, weight, stride, padding, dilation, _ = functional._as_2d(x, weight, stride, padding,
                                                                   dilation)
    x, weight, _ = functional._conv_inputs(fn, x, weight, groups)
    geo = _params.conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    dtype = _params.float_dtype(weight)
    return _build(geo, np.asarray(weight, dtype))


def _build(geo: _params.ConvGeometry, weight: np.ndarray) -> scipy.sparse.csr_array:
    """The CSR matrix of a checked geometry, by index arithmetic on broadcast axes.

    Entries are laid out on the axes (n, oh, ow, co | r, s, ci): a row is one output element
    (n, oh, ow, co) in NHWC order, and its taps (r, s, ci) come in increasing input index,
    so the column indices of every row are already sorted.
    """
    n, (h, w), c_in = geo.n, geo.in_hw, geo.in_channels
    (kh, kw), c_out, (ho, wo) = geo.kernel_hw, geo.out_channels, geo.out_hw
    (sh, sw), (dh, dw), ((top, _), (left, _)) = geo.stride, geo.dilation, geo.padding
    cig, cog = c_in // geo.groups, c_out // geo.groups
    rows, cols = n * ho * wo * c_out, n * h * w * c_in
    index = np.int32 if max(rows, cols, rows * kh * kw * cig) < 2**31 else np.int64

    # input row/column read by output row oh (column ow) at tap r (s): (Ho, kh) and (Wo, kw)
    ih = np.arange(ho)[:, None] * sh - top + np.arange(kh)[None, :] * dh
    iw = np.arange(wo)[:, None] * sw - left + np.arange(kw)[None, :] * dw
    inside_h, inside_w = (ih >= 0) & (ih < h), (iw >= 0) & (iw < w)

    def axes(arr, *where):  # arr's axes placed on the 7 axes (n, oh, ow, co, r, s, ci)
        shape = [1] * 7
        for axis, size in zip(where, arr.shape):
            shape[axis] = size
        return arr.reshape(shape)

    inside = axes(inside_h, 1, 4) & axes(inside_w, 2, 5)  # (1, Ho, Wo, 1, kh, kw, 1)
    column = (axes(np.arange(n, dtype=index) * (h * w * c_in), 0)
              + axes(ih.astype(index) * (w * c_in), 1, 4)
              + axes(iw.astype(index) * c_in, 2, 5)
              + axes(np.arange(c_out, dtype=index) // cog * cig, 3)  # the group's first channel
              + axes(np.arange(cig, dtype=index), 6))
    full = (n, ho, wo, c_out, kh, kw, cig)
    mask = np.broadcast_to(inside, full)
    indices = np.broadcast_to(column, full)[mask]
    # weight (kh, kw, cig, C_out) moved to the (co, r, s, ci) axes
    data = np.broadcast_to(axes(weight.transpose(3, 0, 1, 2), 3, 4, 5, 6), full)[mask]
    per_row = np.broadcast_to(inside.sum(axis=(4, 5, 6), keepdims=True) * cig,
                              (n, ho, wo, c_out, 1, 1, 1)).reshape(-1)
    indptr = np.zeros(rows + 1, index)
    np.cumsum(per_row, out=indptr[1:])
    matrix = scipy.sparse.csr_array((data, indices, indptr), shape=(rows, cols))
    matrix.has_sorted_indices = True
    return matrix
