"""Pooling and ReLU on NHWC arrays, with PyTorch's semantics.

max_pool2d / avg_pool2d and their backward passes validate (fastconv._params), allocate their
outputs and call the compiled kernels in fastconv._kernels._pool. relu is plain NumPy.
"""
from __future__ import annotations

import numpy as np

from fastconv import _params
from fastconv._kernels import _pool
from fastconv._threads import get_num_threads

_NHWC = "[NHWC]"
CHANNEL_BLOCK = 64  # channels per task of the max-pool backward scatter
# below this many element visits per thread, more threads cost more than they save (waking a
# thread on a busy machine can take a scheduler time slice, milliseconds)
MIN_WORK_PER_THREAD = 1 << 16


def _threads(work: int) -> int:
    """Threads for a kernel doing `work` element visits (the results never depend on it)."""
    return max(1, min(get_num_threads(), work // MIN_WORK_PER_THREAD))


def _batched(name: str, arr) -> tuple[np.ndarray, bool]:
    """An NHWC array, 3-D (H, W, C) taken as one image; returns (4-D array, was_unbatched)."""
    arr = _params.as_array(name, arr)
    _params.check_ndim(name, arr, (3, 4), "(H, W, C) or (N, H, W, C) [NHWC]")
    return (arr[None], True) if arr.ndim == 3 else (arr, False)


def _grad_output(fn: str, grad_output, geo: _params.PoolGeometry, unbatched: bool) -> np.ndarray:
    """grad_output checked against the forward output's shape, as a 4-D array."""
    gy = _params.as_array("grad_output", grad_output)
    expected = geo.out_shape
    _params.check_grad_shape(fn, "grad_output", gy, expected[1:] if unbatched else expected,
                             _NHWC)
    return gy.reshape(expected)


def _max_indices(fn: str, indices, geo: _params.PoolGeometry, unbatched: bool) -> np.ndarray:
    """User-given max-pool indices: integers of the output's shape, each in [-1, H*W)."""
    idx = _params.as_array("indices", indices)
    expected = geo.out_shape
    _params.check_grad_shape(fn, "indices", idx, expected[1:] if unbatched else expected, _NHWC)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be integers (as returned by max_pool2d with "
                        f"return_indices=True), but got dtype {idx.dtype}")
    plane = geo.in_hw[0] * geo.in_hw[1]
    if idx.size and (idx.min() < -1 or idx.max() >= plane):
        raise ValueError(f"{fn}: indices must be flat indices into each image's H * W = {plane} "
                         f"plane (or -1), but got values in [{idx.min()}, {idx.max()}]")
    return np.ascontiguousarray(idx.reshape(expected), np.int64)


# ----------------------------------------------------------------------------------------------
# max pooling

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling of NHWC `x` (N, H, W, C) or (H, W, C), PyTorch's semantics.

    stride defaults to kernel_size; padding (an int or a pair, added on both sides) is -inf
    and at most half of the dilated kernel; ceil_mode rounds the output size up but drops a
    window that would start in the bottom/right padding. NaN propagates.
    With return_indices=True also returns int64 indices of the maxima, flat into each image's
    H * W plane per channel (PyTorch's convention, laid out NHWC like the output); a window
    wholly in the padding (possible with dilation) gives -inf and index -1.
    """
    fn = "max_pool2d"
    x, unbatched = _batched("input", x)
    return_indices = _params.as_bool("return_indices", return_indices)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _max_pool(x, geo, _params.float_dtype(x))
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def _max_pool(x: np.ndarray, geo: _params.PoolGeometry, dtype) -> tuple[np.ndarray, np.ndarray]:
    y = np.empty(geo.out_shape, dtype)
    idx = np.empty(geo.out_shape, np.int64)
    _pool.max_pool_forward(np.ascontiguousarray(x, dtype), y, idx, *geo.kernel_hw, *geo.stride,
                           *geo.padding, *geo.dilation,
                           _threads(y.size * geo.kernel_hw[0] * geo.kernel_hw[1]))
    return y, idx


def max_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, indices=None):
    """Gradient of max_pool2d with respect to x, given grad_output = dL/dy.

    Each output's gradient goes to the input pixel that was its maximum (summed where windows
    overlap). With `indices` from max_pool2d(..., return_indices=True) only x's shape and
    dtype are used; without, the maxima are found again from x.
    """
    fn = "max_pool2d_backward"
    x, unbatched = _batched("input", x)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    gy = _grad_output(fn, grad_output, geo, unbatched)
    dtype = _params.float_dtype(gy, x)
    if indices is None:
        _, idx = _max_pool(x, geo, dtype)
    else:
        idx = _max_indices(fn, indices, geo, unbatched)
    gx = np.zeros(x.shape, dtype)
    _pool.max_pool_backward(np.ascontiguousarray(gy, dtype), idx, gx, CHANNEL_BLOCK,
                            _threads(gy.size))
    return gx[0] if unbatched else gx


# ----------------------------------------------------------------------------------------------
# average pooling

def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """2-D average pooling of NHWC `x` (N, H, W, C) or (H, W, C), PyTorch's semantics.

    stride defaults to kernel_size; padding (an int or a pair, at most half the kernel) is
    zeros counted in the divisor when count_include_pad, left out of it otherwise; ceil_mode
    rounds the output size up, dropping a window that would start in the padding (a window
    overhanging the bottom/right edge never counts the part past the padding).
    """
    fn = "avg_pool2d"
    x, unbatched = _batched("input", x)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = _params.as_bool("count_include_pad", count_include_pad)
    dtype = _params.float_dtype(x)
    y = np.empty(geo.out_shape, dtype)
    _pool.avg_pool_forward(np.ascontiguousarray(x, dtype), y, *geo.kernel_hw, *geo.stride,
                           *geo.padding, count_include_pad,
                           _threads(y.size * geo.kernel_hw[0] * geo.kernel_hw[1]))
    return y[0] if unbatched else y


def avg_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Gradient of avg_pool2d with respect to x, given grad_output = dL/dy (only x's shape
    and dtype are used)."""
    fn = "avg_pool2d_backward"
    x, unbatched = _batched("input", x)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = _params.as_bool("count_include_pad", count_include_pad)
    gy = _grad_output(fn, grad_output, geo, unbatched)
    dtype = _params.float_dtype(gy, x)
    gx = np.empty(x.shape, dtype)
    _pool.avg_pool_backward(np.ascontiguousarray(gy, dtype), gx, *geo.kernel_hw, *geo.stride,
                            *geo.padding, count_include_pad,
                            _threads(gx.size * geo.kernel_hw[0] * geo.kernel_hw[1]))
    return gx[0] if unbatched else gx


# ----------------------------------------------------------------------------------------------
# ReLU

def _float_copy(x: np.ndarray, dtype) -> tuple[np.ndarray, bool]:
    """x as `dtype` and whether that is already a new array (which may then be overwritten)."""
    converted = np.asarray(x, dtype)
    return converted, converted is not x and not np.may_share_memory(converted, x)


def relu(x, *, out=None):
    """max(x, 0) elementwise, NaN propagating (as np.maximum(x, 0)); x of any shape.

    The result is float32 or float64 (np.result_type(x, float32)). `out` may be a float
    array of x's shape to write into, including x itself for an in-place ReLU; otherwise x is
    never modified.
    """
    x = _params.as_array("input", x)
    dtype = _params.float_dtype(x)
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != dtype:
            got = (f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray)
                   else type(out).__name__)
            raise ValueError(f"relu: out must be a {dtype} array of shape {x.shape}, but got "
                             f"{got}")
        return np.maximum(x, 0, out=out)
    converted, is_copy = _float_copy(x, dtype)
    if is_copy:  # the conversion already made a private array: clip it in place
        return np.maximum(converted, 0, out=converted)
    return np.maximum(converted, 0)


def relu_backward(grad_output, x):
    """Gradient of relu at x: grad_output where x > 0, 0 where x <= 0.

    A NaN in x passes its gradient through (PyTorch's threshold_backward: only x <= 0 is
    zeroed). x may also be the ReLU's output (same result) or a boolean mask of x > 0.
    """
    gy = _params.as_array("grad_output", grad_output)
    x = _params.as_array("input", x)
    if gy.shape != x.shape:
        raise ValueError(f"relu_backward: expected grad_output of shape {x.shape} (the shape of "
                         f"the input), but got {gy.shape}")
    dtype = _params.float_dtype(gy, x)
    grad, is_copy = _float_copy(gy, dtype)
    if not is_copy:
        grad = grad.copy()
    grad[x <= 0] = 0
    return grad
