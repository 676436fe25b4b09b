"""Pooling and ReLU on NHWC (and, 1-D, NLC) arrays, with PyTorch's semantics (ONNX's for
its pads, padding larger than PyTorch allows, and average pooling's dilation).

max_pool2d / avg_pool2d, max_pool1d / avg_pool1d and their backward passes validate (fastconv._params), allocate their
outputs and call the compiled kernels in fastconv._kernels._pool (the widest instruction-set
variant this CPU runs). relu is plain NumPy.
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _algorithms, _memory, _params
from fastconv._threads import bound_call, threads_for_work

_pool = _algorithms.best_simd("_pool")  # the kernels, built for this CPU's widest vectors

_NHWC = "[NHWC]"
_NLC = "[NLC]"
CHANNEL_BLOCK = 64  # channels per task of the max-pool backward scatter


def _batched(name: str, arr, one_d: bool = False) -> tuple[np.ndarray, bool]:
    """An NHWC array, 3-D (H, W, C) taken as one image, returns (4-D array, was_unbatched);
    one_d: an NLC array, 2-D (L, C) taken as one sequence, as NHWC with H = 1."""
    arr = _params.as_array(name, arr)
    if one_d:
        _params.check_ndim(name, arr, (2, 3), "(L, C) or (N, L, C) [NLC]")
        arr = arr[..., None, :, :]
    else:
        _params.check_ndim(name, arr, (3, 4), "(H, W, C) or (N, H, W, C) [NHWC]")
    return (arr[None], True) if arr.ndim == 3 else (arr, False)


def _shown(shape: tuple, unbatched: bool, one_d: bool) -> tuple:
    """A 4-D NHWC shape as the caller sees it: without H for 1-D, without N when unbatched."""
    shape = (shape[0], *shape[2:]) if one_d else shape
    return shape[1:] if unbatched else shape


def _unshown(arr: np.ndarray, unbatched: bool, one_d: bool) -> np.ndarray:
    """A 4-D NHWC result in the caller's layout (the inverse of _batched)."""
    arr = arr[:, 0] if one_d else arr
    return arr[0] if unbatched else arr


def _grad_output(fn: str, grad_output, geo: _params.PoolGeometry, unbatched: bool,
                 one_d: bool = False) -> np.ndarray:
    """grad_output checked against the forward output's shape, as a 4-D array."""
    gy = _params.as_array("grad_output", grad_output)
    _params.check_grad_shape(fn, "grad_output", gy, _shown(geo.out_shape, unbatched, one_d),
                             _NLC if one_d else _NHWC)
    return gy.reshape(geo.out_shape)


def _max_indices(fn: str, indices, geo: _params.PoolGeometry, unbatched: bool,
                 one_d: bool = False) -> np.ndarray:
    """User-given max-pool indices: integers of the output's shape, each in [-1, H*W)."""
    idx = _params.as_array("indices", indices)
    expected = geo.out_shape
    _params.check_grad_shape(fn, "indices", idx, _shown(expected, unbatched, one_d),
                             _NLC if one_d else _NHWC)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be integers (as returned by "
                        f"{fn.replace('_backward', '')} with return_indices=True), but got dtype "
                        f"{idx.dtype}")
    plane = geo.in_hw[0] * geo.in_hw[1]
    if idx.size and (idx.min() < -1 or idx.max() >= plane):
        where = f"each sequence's L = {plane}" if one_d else f"each image's H * W = {plane} plane"
        raise ValueError(f"{fn}: indices must be flat indices into {where} (or -1), but got "
                         f"values in [{idx.min()}, {idx.max()}]")
    return np.ascontiguousarray(idx.reshape(expected), np.int64)


def _args_1d(kernel_size, stride, padding, dilation) -> tuple:
    """The 2-D pooling arguments (H = 1) of a 1-D call: padding an int or (p,) (both sides,
    PyTorch's rule), (before, after) (ONNX's pads), 'same' or 'valid'."""
    k = _params.as_tuple("kernel_size", kernel_size, 1, 1)[0]
    s = None if stride is None else _params.as_tuple("stride", stride, 1, 1)[0]
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        padding = padding[0]
    if _params._is_int(padding):
        padding_2d = (0, padding)
    elif isinstance(padding, (tuple, list)):
        padding_2d = ((0, 0), tuple(padding))
    else:
        padding_2d = padding
    return (1, k), None if s is None else (1, s), padding_2d, (1, _params.as_tuple(
        "dilation", dilation, 1, 1)[0])


# ----------------------------------------------------------------------------------------------
# max pooling

def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling of NHWC `x` (N, H, W, C) or (H, W, C), PyTorch's semantics.

    stride defaults to kernel_size. padding is -inf: an int or a pair (ph, pw), added on
    both sides and at most half of the dilated kernel (PyTorch's rule); or ONNX's and Keras's
    forms, of any size: ((top, bottom), (left, right)) (ONNX's pads), "same" (output
    ceil(in / stride), the odd padding at the bottom/right: Keras, ONNX SAME_UPPER) or
    "valid". ceil_mode rounds the output size up but drops a window that would start in the
    bottom/right padding. NaN propagates.
    With return_indices=True also returns int64 indices of the maxima, flat into each image's
    H * W plane per channel (PyTorch's convention, laid out NHWC like the output); a window
    wholly in the padding (possible with dilation or large pads) gives -inf and index -1.
    Raises TypeError/ValueError naming a bad argument.
    """
    return _max_pool_nd("max_pool2d", False, x, kernel_size, stride, padding, dilation,
                        ceil_mode, return_indices)


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """1-D max pooling of NLC `x` (N, L, C) or (L, C), PyTorch's semantics (as max_pool2d
    along L): padding an int or (p,) (both sides, at most half the dilated kernel), or
    (before, after) (ONNX's pads, any size), "same" or "valid". Indices are positions in L.
    """
    k, s, p, d = _args_1d(kernel_size, stride, padding, dilation)
    return _max_pool_nd("max_pool1d", True, x, k, s, p, d, ceil_mode, return_indices)


def _max_pool_nd(fn, one_d, x, kernel_size, stride, padding, dilation, ceil_mode,
                 return_indices):
    x, unbatched = _batched("input", x, one_d)
    return_indices = _params.as_bool("return_indices", return_indices)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    y, idx = _max_pool(x, geo, _params.float_dtype(x), return_indices)
    if not return_indices:
        return _unshown(y, unbatched, one_d)
    return _unshown(y, unbatched, one_d), _unshown(idx, unbatched, one_d)


# Max pooling with indices numbers a window's taps in 32 bits in its vectorised loop; a
# window of more taps (an image of 2**31 pixels or more) runs one channel and tap at a time.
# (A module constant, so that tests can send every window there.)
_VECTOR_WINDOW_TAPS = 2 ** 31 - 1


def _max_pool2d_kernel(x: np.ndarray, kernel_size, stride, padding, dilation, ceil_mode):
    """max_pool2d of the 4-D x without indices as one kernel call, for an inference graph's
    arena: (output shape, dtype, bind), bind(x, out) returning the call that computes out
    (C-contiguous, of that shape and dtype) from x's current values; None where the kernel
    cannot read x as it is (another dtype than the output's, not C-contiguous, empty).
    Raises as max_pool2d for arguments it refuses."""
    geo = _params.pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding, dilation,
                                ceil_mode)
    dtype = _params.float_dtype(x)
    if x.dtype != dtype or not x.flags.c_contiguous or x.size == 0 or 0 in geo.out_shape:
        return None
    no_indices = np.empty((0, 0, 0, 0), np.int64)

    def bind(x: np.ndarray, out: np.ndarray):
        return bound_call(_pool.max_pool_forward, x, out, no_indices, *_max_pool_args(geo),
                          threads=_window_threads(geo))
    return geo.out_shape, dtype, bind


def _max_pool(x: np.ndarray, geo: _params.PoolGeometry, dtype,
              indices: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The maxima and (indices=True) their flat indices; without them, several times
    faster."""
    y = _memory.empty(geo.out_shape, dtype)
    idx = np.empty(geo.out_shape if indices else (0, 0, 0, 0), np.int64)
    _pool.max_pool_forward(np.ascontiguousarray(x, dtype), y, idx, *_max_pool_args(geo),
                           _window_threads(geo))
    return y, (idx if indices else None)


def _max_pool_args(geo: _params.PoolGeometry) -> tuple:
    """max_pool_forward's arguments after x, y and idx, but for the thread count (the
    padding after the image needs none: y's shape says how far windows go)."""
    return (*geo.kernel_hw, *geo.stride, geo.padding[0][0], geo.padding[1][0], *geo.dilation,
            _VECTOR_WINDOW_TAPS)


def _window_threads(geo: _params.PoolGeometry) -> int:
    """Threads for a pooling kernel visiting every tap of every output window."""
    return threads_for_work(math.prod(geo.out_shape) * geo.kernel_hw[0] * geo.kernel_hw[1])


def max_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, indices=None):
    """Gradient of max_pool2d with respect to x, given grad_output = dL/dy.

    Each output's gradient goes to the input pixel that was its maximum (summed where windows
    overlap). With `indices` from max_pool2d(..., return_indices=True) only x's shape and
    dtype are used; without, the maxima are found again from x.
    """
    return _max_pool_nd_backward("max_pool2d_backward", False, grad_output, x, kernel_size,
                                 stride, padding, dilation, ceil_mode, indices)


def max_pool1d_backward(grad_output, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, indices=None):
    """Gradient of max_pool1d with respect to x (N, L, C), given grad_output = dL/dy."""
    k, s, p, d = _args_1d(kernel_size, stride, padding, dilation)
    return _max_pool_nd_backward("max_pool1d_backward", True, grad_output, x, k, s, p, d,
                                 ceil_mode, indices)


def _max_pool_nd_backward(fn, one_d, grad_output, x, kernel_size, stride, padding, dilation,
                          ceil_mode, indices):
    x, unbatched = _batched("input", x, one_d)
    geo = _params.pool_geometry(fn, x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    gy = _grad_output(fn, grad_output, geo, unbatched, one_d)
    dtype = _params.float_dtype(gy, x)
    if indices is None:
        _, idx = _max_pool(x, geo, dtype)
    else:
        idx = _max_indices(fn, indices, geo, unbatched, one_d)
    gx = _memory.empty(x.shape, dtype)  # the kernel writes every value
    _pool.max_pool_backward(np.ascontiguousarray(gy, dtype), idx, gx, CHANNEL_BLOCK,
                            threads_for_work(gy.size))
    return _unshown(gx, unbatched, one_d)


# ----------------------------------------------------------------------------------------------
# average pooling

def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, dilation=1):
    """2-D average pooling of NHWC `x` (N, H, W, C) or (H, W, C), PyTorch's semantics
    (ONNX's AveragePool for its pads and dilation).

    stride defaults to kernel_size. padding is zeros: an int or a pair (ph, pw), added on
    both sides and at most half the kernel (PyTorch's rule); or ((top, bottom),
    (left, right)) (ONNX's pads), "same" (Keras, ONNX SAME_UPPER; Keras's average leaves the
    padding out: count_include_pad=False) or "valid", of any size. count_include_pad counts
    the padded cells a window covers in the divisor, otherwise only the input pixels (a
    window with none gives 0). ceil_mode rounds the output size up, dropping a window that
    would start in the bottom/right padding (a window overhanging the bottom/right edge never
    counts the part past the padding). divisor_override (an int >= 1, PyTorch's) replaces
    the divisor. dilation (ONNX's dilations; PyTorch's avg_pool2d has none) spaces the taps,
    and only taps count in the divisor.
    Raises TypeError/ValueError naming a bad argument.
    """
    return _avg_pool_nd("avg_pool2d", False, x, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override, dilation)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, dilation=1):
    """1-D average pooling of NLC `x` (N, L, C) or (L, C), PyTorch's semantics (as
    avg_pool2d along L): padding an int or (p,) (both sides, at most half the kernel), or
    (before, after) (ONNX's pads, any size), "same" or "valid"."""
    k, s, p, d = _args_1d(kernel_size, stride, padding, dilation)
    return _avg_pool_nd("avg_pool1d", True, x, k, s, p, ceil_mode, count_include_pad,
                        divisor_override, d)


def _avg_args(fn, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, dilation) -> tuple:
    """The geometry and the kernels' arguments after the arrays, of an average pooling."""
    geo = _params.pool_geometry(fn, x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    count_include_pad = _params.as_bool("count_include_pad", count_include_pad)
    divisor = 0 if divisor_override is None else _params.as_int("divisor_override",
                                                                divisor_override, 1)
    return geo, (*geo.kernel_hw, *geo.stride, *geo.padding[0], *geo.padding[1], *geo.dilation,
                 count_include_pad, divisor)


def _avg_pool_nd(fn, one_d, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override, dilation):
    x, unbatched = _batched("input", x, one_d)
    geo, args = _avg_args(fn, x.shape, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override, dilation)
    dtype = _params.float_dtype(x)
    y = np.empty(geo.out_shape, dtype)
    _pool.avg_pool_forward(np.ascontiguousarray(x, dtype), y, *args, _window_threads(geo))
    return _unshown(y, unbatched, one_d)


def avg_pool2d_backward(grad_output, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, dilation=1):
    """Gradient of avg_pool2d with respect to x, given grad_output = dL/dy (only x's shape
    and dtype are used)."""
    return _avg_pool_nd_backward("avg_pool2d_backward", False, grad_output, x, kernel_size,
                                 stride, padding, ceil_mode, count_include_pad,
                                 divisor_override, dilation)


def avg_pool1d_backward(grad_output, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, dilation=1):
    """Gradient of avg_pool1d with respect to x (N, L, C), given grad_output = dL/dy."""
    k, s, p, d = _args_1d(kernel_size, stride, padding, dilation)
    return _avg_pool_nd_backward("avg_pool1d_backward", True, grad_output, x, k, s, p,
                                 ceil_mode, count_include_pad, divisor_override, d)


def _avg_pool_nd_backward(fn, one_d, grad_output, x, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override, dilation):
    x, unbatched = _batched("input", x, one_d)
    geo, args = _avg_args(fn, x.shape, kernel_size, stride, padding, ceil_mode,
                          count_include_pad, divisor_override, dilation)
    gy = _grad_output(fn, grad_output, geo, unbatched, one_d)
    dtype = _params.float_dtype(gy, x)
    gx = np.empty(x.shape, dtype)
    _pool.avg_pool_backward(np.ascontiguousarray(gy, dtype), gx, *args,
                            threads_for_work(gx.size * geo.kernel_hw[0] * geo.kernel_hw[1]))
    return _unshown(gx, unbatched, one_d)


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


def _relu_with_mask(x: np.ndarray, in_place: bool) -> tuple[np.ndarray, np.ndarray]:
    """(relu(x), the boolean mask x > 0 or NaN that relu_backward reads), for the ReLU
    layer in training; with in_place, x (a writeable float array) is overwritten. One pass
    (_pool.relu_forward) for a C-contiguous float32 or float64 x."""
    if x.dtype in (np.float32, np.float64) and x.flags.c_contiguous:
        y = x if in_place else _memory.empty(x.shape, x.dtype)
        mask = np.empty(x.shape, np.bool_)
        bound_call(_pool.relu_forward, x.reshape(-1), y.reshape(-1),
                   mask.reshape(-1).view(np.uint8), threads=threads_for_work(x.size))()
        return y, mask
    y = relu(x, out=x) if in_place else relu(x)
    return y, ~(y <= 0)


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
    keep = x if x.dtype == np.bool_ else ~(x <= 0)
    grad = np.empty(gy.shape, dtype)
    _pool.relu_backward(np.ascontiguousarray(gy, dtype).reshape(-1),
                        np.ascontiguousarray(keep).reshape(-1).view(np.uint8), grad.reshape(-1),
                        threads_for_work(grad.size))
    return grad
