"""Adaptive pooling and interpolation of NHWC arrays, with PyTorch's semantics.

x is (N, H, W, C), or (H, W, C) for one image (the result is then 3-D too); results are
float32 or float64 (np.result_type(x, float32)). Every function has a backward pass taking
grad_output = dL/dy and returning dL/dx.

Adaptive pooling splits each spatial axis of size In into Out bins, bin i covering
[floor(i * In / Out), ceil((i + 1) * In / Out)) (torch.nn.AdaptiveAvgPool2d's rule; bins may
overlap). interpolate resizes H and W as torch.nn.functional.interpolate does for 4-D input.
Both work one axis at a time (the 2-D operations are separable); pure NumPy.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fastconv import _params
from fastconv._threads import bound_call, matmul, threads_for_work
from fastconv.pooling import _batched, _pool

_NHWC = "[NHWC]"
INTERPOLATE_MODES = ("nearest", "bilinear")


def _output_hw(fn: str, output_size, in_hw) -> tuple[int, int]:
    """An int or a pair of ints >= 1; a None entry keeps the input's size on that axis."""
    if output_size is None or _params._is_int(output_size):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError(f"{fn}: output_size must be an int or a pair of ints (None keeps the "
                        f"input's size), but got {output_size!r}")
    return tuple(n if o is None else _params.as_int(f"output_size[{i}]", o, 1)
                 for i, (o, n) in enumerate(zip(output_size, in_hw)))


def _bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins: starts floor(i * size / out), ends ceil((i + 1) * size / out)."""
    i = np.arange(out)
    return i * size // out, -(-(i + 1) * size // out)


def _averaging(size: int, out: int, dtype) -> np.ndarray:
    """The (out, size) matrix averaging each bin."""
    starts, ends = _bins(size, out)
    cols = np.arange(size)
    inside = (cols >= starts[:, None]) & (cols < ends[:, None])
    return (inside / (ends - starts)[:, None]).astype(dtype)


def _along_hw(x: np.ndarray, mat_h: np.ndarray, mat_w: np.ndarray) -> np.ndarray:
    """mat_h applied along H and mat_w along W of x (N, H, W, C) (BLAS matrix products)."""
    n, _, w, c = x.shape
    t = matmul(mat_h, x.reshape(n, x.shape[1], w * c)).reshape(n * mat_h.shape[0], w, c)
    return matmul(mat_w, t).reshape(n, mat_h.shape[0], mat_w.shape[0], c)


def _grad_output(fn: str, grad_output, expected: tuple, unbatched: bool) -> np.ndarray:
    gy = _params.as_array("grad_output", grad_output)
    _params.check_grad_shape(fn, "grad_output", gy, expected[1:] if unbatched else expected,
                             _NHWC)
    return gy.reshape(expected)


# ----------------------------------------------------------------------------------------------
# adaptive average pooling

def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling of NHWC x to output_size (torch.nn.functional.
    adaptive_avg_pool2d): an int or a pair (Ho, Wo), a None entry keeping the input's size;
    each output is the mean of its bin. output_size=1 is global average pooling."""
    fn = "adaptive_avg_pool2d"
    x, unbatched = _batched("input", x)
    out_hw = _output_hw(fn, output_size, x.shape[1:3])
    dtype = _params.float_dtype(x)
    (h, w), (ho, wo) = x.shape[1:3], out_hw
    if (ho, wo) == (1, 1) and h * w > 0:  # global average pooling: one window per image
        # (NumPy's reduction over H and W took 70-120 us on a 7x7x1280 map in MobileNetV2's
        # pass, two BLAS products 0.1 ms more)
        x = np.ascontiguousarray(x, dtype)
        y = np.empty((x.shape[0], 1, 1, x.shape[3]), dtype)
        if y.size:
            _pool.avg_pool_forward(*_global_average_args(x, y), threads_for_work(x.size))
    elif (ho, wo) == (h, w):  # one pixel per bin (VGG's 7 -> 7): a copy, not two products
        y = np.array(x, dtype, order="C")
    else:
        y = _along_hw(x.astype(dtype, copy=False), _averaging(h, ho, dtype),
                      _averaging(w, wo, dtype))
    return y[0] if unbatched else y


def _global_average_args(x: np.ndarray, y: np.ndarray) -> tuple:
    """avg_pool_forward's arguments but for the thread count, for y (N, 1, 1, C) = the mean
    of each map of x (N, H, W, C), both C-contiguous of one float dtype, non-empty: one
    window over the whole map."""
    return x, y, x.shape[1], x.shape[2], 1, 1, 0, 0, 0, 0, 1, 1, True, 0


def _global_avg_pool2d_kernel(x: np.ndarray, output_size):
    """adaptive_avg_pool2d of the 4-D x to output_size 1 (global average pooling) as one
    kernel call, for an inference graph's arena: (output shape, dtype, bind) as
    pooling._max_pool2d_kernel's; None for another output size or an x the kernel cannot
    read as it is (another dtype than the output's, not C-contiguous, empty)."""
    n, h, w, c = x.shape
    if (_output_hw("adaptive_avg_pool2d", output_size, (h, w)) != (1, 1) or x.size == 0
            or x.dtype != _params.float_dtype(x) or not x.flags.c_contiguous):
        return None

    def bind(x: np.ndarray, out: np.ndarray):
        return bound_call(_pool.avg_pool_forward, *_global_average_args(x, out),
                          threads=threads_for_work(x.size))
    return (n, 1, 1, c), x.dtype, bind


def adaptive_avg_pool2d_backward(grad_output, x, output_size):
    """Gradient of adaptive_avg_pool2d with respect to x (only x's shape and dtype are used):
    each output's gradient spread evenly over its bin, summed where bins overlap."""
    fn = "adaptive_avg_pool2d_backward"
    x, unbatched = _batched("input", x)
    n, h, w, c = x.shape
    ho, wo = _output_hw(fn, output_size, (h, w))
    gy = _grad_output(fn, grad_output, (n, ho, wo, c), unbatched)
    dtype = _params.float_dtype(gy, x)
    gx = _along_hw(gy.astype(dtype, copy=False), _averaging(h, ho, dtype).T,
                   _averaging(w, wo, dtype).T)
    return gx[0] if unbatched else gx


# ----------------------------------------------------------------------------------------------
# adaptive max pooling

def _bin_taps(size: int, out: int) -> np.ndarray:
    """(out, longest bin) indices of each bin's elements, the last repeated to fill (a
    repeat comes after the first occurrence, so it never changes which maximum is first)."""
    starts, ends = _bins(size, out)
    taps = starts[:, None] + np.arange(int((ends - starts).max()))
    return np.minimum(taps, ends[:, None] - 1)


def _adaptive_max(x: np.ndarray, out_hw) -> tuple[np.ndarray, np.ndarray]:
    n, h, w, c = x.shape
    taps_h, taps_w = _bin_taps(h, out_hw[0]), _bin_taps(w, out_hw[1])
    kh, kw = taps_h.shape[1], taps_w.shape[1]
    # (N, Ho, kh, Wo, kw, C) -> (N, Ho, Wo, kh * kw, C): each bin's values in row-major order
    windows = x[:, taps_h[:, :, None, None], taps_w[None, None], :]
    windows = windows.transpose(0, 1, 3, 2, 4, 5).reshape(n, *out_hw, kh * kw, c)
    k = np.argmax(windows, axis=3)  # the first maximum (NaN counts as the maximum)
    y = np.take_along_axis(windows, k[:, :, :, None], axis=3)[:, :, :, 0]
    rows = taps_h[np.arange(out_hw[0])[None, :, None, None], k // kw]
    cols = taps_w[np.arange(out_hw[1])[None, None, :, None], k % kw]
    return y, (rows * w + cols).astype(np.int64)


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Adaptive max pooling of NHWC x to output_size (torch.nn.functional.
    adaptive_max_pool2d; output_size as in adaptive_avg_pool2d): each output is the maximum of
    its bin (the first one in row-major order on ties; NaN propagates). With
    return_indices=True also returns int64 indices of the maxima, flat into each image's
    H * W plane per channel, laid out NHWC like the output (max_pool2d's convention)."""
    fn = "adaptive_max_pool2d"
    x, unbatched = _batched("input", x)
    return_indices = _params.as_bool("return_indices", return_indices)
    out_hw = _output_hw(fn, output_size, x.shape[1:3])
    y, idx = _adaptive_max(x.astype(_params.float_dtype(x), copy=False), out_hw)
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def adaptive_max_pool2d_backward(grad_output, x, output_size, indices=None):
    """Gradient of adaptive_max_pool2d with respect to x: each output's gradient goes to its
    bin's maximum (summed where bins overlap). With `indices` from adaptive_max_pool2d(...,
    return_indices=True) only x's shape and dtype are used; without, the maxima are found
    again from x."""
    fn = "adaptive_max_pool2d_backward"
    x, unbatched = _batched("input", x)
    n, h, w, c = x.shape
    out_hw = _output_hw(fn, output_size, (h, w))
    expected = (n, *out_hw, c)
    gy = _grad_output(fn, grad_output, expected, unbatched)
    dtype = _params.float_dtype(gy, x)
    if indices is None:
        _, idx = _adaptive_max(x.astype(dtype, copy=False), out_hw)
    else:
        idx = _params.as_array("indices", indices)
        _params.check_grad_shape(fn, "indices", idx, expected[1:] if unbatched else expected,
                                 _NHWC)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{fn}: indices must be integers (as returned by "
                            f"adaptive_max_pool2d with return_indices=True), but got dtype "
                            f"{idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= h * w):
            raise ValueError(f"{fn}: indices must be flat indices into each image's H * W = "
                             f"{h * w} plane, but got values in [{idx.min()}, {idx.max()}]")
        idx = idx.reshape(expected)
    gx = np.zeros((n, h * w, c), dtype)
    batch = np.arange(n)[:, None, None, None]
    channel = np.arange(c)
    np.add.at(gx, (batch, idx, channel), gy.astype(dtype, copy=False))
    gx = gx.reshape(n, h, w, c)
    return gx[0] if unbatched else gx


# ----------------------------------------------------------------------------------------------
# interpolation

def _interpolate_plan(fn: str, in_hw, size, scale_factor, mode, align_corners,
                      recompute_scale_factor):
    """Per axis, the source taps [(indices, weights or None)] of each output position, and the
    output size; PyTorch's rules (torch.nn.functional.interpolate, upsample kernels)."""
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"{fn}: mode must be one of {INTERPOLATE_MODES}, but got {mode!r}")
    if align_corners is not None:
        align_corners = _params.as_bool("align_corners", align_corners)
        if mode == "nearest":
            raise ValueError(f"{fn}: align_corners can only be set with mode='bilinear' (as in "
                             f"PyTorch), but got align_corners={align_corners} with mode="
                             f"'nearest'")
    if recompute_scale_factor is not None:
        recompute_scale_factor = _params.as_bool("recompute_scale_factor",
                                                 recompute_scale_factor)
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: exactly one of size and scale_factor must be given, but got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    scales: tuple[float | None, float | None] = (None, None)
    if size is not None:
        if recompute_scale_factor:
            raise ValueError(f"{fn}: recompute_scale_factor is not meaningful with an explicit "
                             f"size")
        out_hw = _params.as_pair("size", size, 1)
    else:
        factors = (scale_factor, scale_factor) if isinstance(scale_factor, numbers.Real) \
            else scale_factor
        if not isinstance(factors, (tuple, list)) or len(factors) != 2:
            raise TypeError(f"{fn}: scale_factor must be a number or a pair of numbers, but got "
                            f"{scale_factor!r}")
        factors = tuple(_params.as_positive_real(f"scale_factor[{i}]", f)
                        for i, f in enumerate(factors))
        out_hw = tuple(math.floor(n * f) for n, f in zip(in_hw, factors))
        if min(out_hw) < 1:
            raise ValueError(f"{fn}: scale_factor={scale_factor!r} makes the input size "
                             f"{tuple(in_hw)} (H, W) into {out_hw}: every output size must be "
                             f">= 1")
        if not recompute_scale_factor:
            scales = factors
    taps = [_nearest_taps(n, o, s) if mode == "nearest"
            else _linear_taps(n, o, s, bool(align_corners))
            for n, o, s in zip(in_hw, out_hw, scales)]
    return taps, out_hw


def _nearest_taps(size: int, out: int, scale: float | None):
    """PyTorch's 'nearest': src = min(floor(dst * s), size - 1) in float32, s = 1 / scale_factor
    when one was given, else size / out (the identity and exact doubling are special cases)."""
    dst = np.arange(out)
    if out == size:
        src = dst
    elif out == 2 * size:
        src = dst >> 1
    else:
        s = np.float32(1.0 / scale) if scale else np.float32(size) / np.float32(out)
        src = np.minimum(np.floor(dst.astype(np.float32) * s).astype(np.int64), size - 1)
    return [(src, None)]


def _linear_taps(size: int, out: int, scale: float | None, align_corners: bool):
    """PyTorch's linear interpolation weights (area_pixel_compute_source_index), in float64."""
    dst = np.arange(out, dtype=np.float64)
    if align_corners:
        src = dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        s = 1.0 / scale if scale else size / out
        src = np.maximum(s * (dst + 0.5) - 0.5, 0.0)
    i0 = src.astype(np.int64)  # floor: src >= 0
    i1 = i0 + (i0 < size - 1)
    w1 = np.clip(src - i0, 0.0, 1.0)
    return [(i0, 1.0 - w1), (i1, w1)]


def _gather(x: np.ndarray, taps, axis: int) -> np.ndarray:
    """sum over taps of weights * x[indices] along `axis`."""
    shape = [1] * x.ndim
    shape[axis] = -1
    out = None
    for idx, weights in taps:
        picked = np.take(x, idx, axis=axis)
        if weights is not None:
            picked *= weights.astype(x.dtype).reshape(shape)
        out = picked if out is None else np.add(out, picked, out=out)
    return out


def _scatter(g: np.ndarray, taps, size: int, axis: int) -> np.ndarray:
    """The adjoint of _gather: weights * g added into `size` positions along `axis`. The
    indices never decrease, so each source position's terms are one run (np.add.reduceat)."""
    shape = [1] * g.ndim
    shape[axis] = -1
    out_shape = list(g.shape)
    out_shape[axis] = size
    out = np.zeros(out_shape, g.dtype)
    for idx, weights in taps:
        terms = g if weights is None else g * weights.astype(g.dtype).reshape(shape)
        sources, starts = np.unique(idx, return_index=True)
        where = [slice(None)] * g.ndim
        where[axis] = sources
        out[tuple(where)] += np.add.reduceat(terms, starts, axis=axis)
    return out


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resize the H and W axes of NHWC x (torch.nn.functional.interpolate of a 4-D input).

    Exactly one of size (an int or (Ho, Wo)) and scale_factor (a number or a pair: output
    size floor(in * scale_factor)) is given. mode "nearest": source pixel floor(dst * s),
    s = 1 / scale_factor when one is given (unless recompute_scale_factor=True), else in / out
    (PyTorch's "nearest", not "nearest-exact"). mode "bilinear": with align_corners=True the
    corner pixels' centres line up (src = dst * (in - 1) / (out - 1)); with False (the default)
    the pixel areas do (src = (dst + 0.5) * s - 0.5, clamped at 0). align_corners with
    "nearest" is a ValueError, as in PyTorch.
    """
    fn = "interpolate"
    x, unbatched = _batched("input", x)
    (taps_h, taps_w), _ = _interpolate_plan(fn, x.shape[1:3], size, scale_factor, mode,
                                            align_corners, recompute_scale_factor)
    x = x.astype(_params.float_dtype(x), copy=False)
    y = _gather(_gather(x, taps_h, 1), taps_w, 2)
    return y[0] if unbatched else y


def interpolate_backward(grad_output, x, size=None, scale_factor=None, mode="nearest",
                         align_corners=None, recompute_scale_factor=None):
    """Gradient of interpolate with respect to x, given grad_output = dL/dy (the same
    arguments; only x's shape and dtype are used)."""
    fn = "interpolate_backward"
    x, unbatched = _batched("input", x)
    n, h, w, c = x.shape
    (taps_h, taps_w), out_hw = _interpolate_plan(fn, (h, w), size, scale_factor, mode,
                                                 align_corners, recompute_scale_factor)
    gy = _grad_output(fn, grad_output, (n, *out_hw, c), unbatched)
    gy = gy.astype(_params.float_dtype(gy, x), copy=False)
    gx = _scatter(_scatter(gy, taps_w, w, 2), taps_h, h, 1)
    return gx[0] if unbatched else gx
