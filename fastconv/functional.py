"""Convolutions on NumPy arrays: NHWC activations, HWIO weights.

Result dtype (every function here, and the layers): np.result_type(x, weight, float32), i.e.
float32 unless the input or the weight is float64; a bias is cast to it (a float64 or integer
bias never widens the result), and gradients have the same dtype.

Every function validates (fastconv._params), picks an algorithm (fastconv._algorithms),
allocates its outputs and calls a compiled kernel. Padding of every mode is done here, so the
kernels only ever see a "valid" convolution of an already padded, contiguous input.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fastconv import _algorithms, _autotune, _memory, _params
from fastconv._params import ConvGeometry
from fastconv._threads import (blas_single_thread, get_num_threads, place_workers,
                               threads_for_work)

NEEDS = ("input", "weight", "bias")
_scan = _algorithms.best_simd("_scan")


# ----------------------------------------------------------------------------------------------
# shared steps

def _run(algo: str, kernel_name: str, *args, flops: int, min_flops: int | None = None) -> None:
    """Call a kernel with the thread count (one thread for work of fewer than `min_flops`,
    default PARALLEL_MIN_FLOPS: too small to share), BLAS held to one thread when the kernel
    calls it; raise on the kernel's status."""
    _bound(algo, kernel_name, *args, flops=flops, min_flops=min_flops)()


def _bound(algo: str, kernel_name: str, *args, flops: int,
           min_flops: int | None = None) -> Callable[[], None]:
    """_run's call with the kernel, its arguments and the thread count fixed: calling it runs
    the kernel on its arrays' current values."""
    kernel = getattr(_algorithms.KERNELS[algo], kernel_name)
    threads = _kernel_threads(flops, min_flops)
    args = (*args, threads)
    uses_blas = _algorithms.uses_blas(algo, kernel_name)

    def call() -> None:
        place_workers(threads)
        if uses_blas:
            with blas_single_thread():
                status = kernel(*args)
        else:
            status = kernel(*args)
        if status:
            raise MemoryError("fastconv: could not allocate a kernel's scratch buffer")
    return call


def _kernel_threads(flops: int, min_flops: int | None = None) -> int:
    """The threads a kernel call doing `flops` runs on: all of get_num_threads(), or one
    below min_flops (default PARALLEL_MIN_FLOPS), too little work to share."""
    if min_flops is None:
        min_flops = _algorithms.PARALLEL_MIN_FLOPS
    return get_num_threads() if flops >= min_flops else 1


def _batched(name: str, arr) -> tuple[np.ndarray, bool]:
    """An NHWC array, 3-D (H, W, C) taken as one image; returns (4-D array, was_unbatched)."""
    arr = _params.as_array(name, arr)
    _params.check_ndim(name, arr, (3, 4), "(H, W, C) or (N, H, W, C) [NHWC]")
    return (arr[None], True) if arr.ndim == 3 else (arr, False)


def _bounded(a: np.ndarray) -> bool:
    """Whether every value of `a` is finite (max |a| within the dtype's range; NaN is not)."""
    return bool(_max_abs(a) <= np.finfo(a.dtype).max)


def _max_abs(a: np.ndarray) -> float:
    """max |a| as a Python float (0 for an empty array, inf when `a` holds NaN): for a
    C-contiguous float32 or float64 array in one parallel pass (_scan.max_abs), else through
    its min and max, without a temporary array as large as `a`. (NumPy's min and max pass
    twice, on one thread: the checks of a ResNet-18 training step at batch 8 took about 6 ms
    that way.)"""
    if a.size == 0:
        return 0.0
    if a.dtype in (np.float32, np.float64) and a.flags.c_contiguous:
        threads = threads_for_work(a.size)
        if threads > 1:
            place_workers(threads)
        high = _scan.max_abs(a.reshape(-1), threads)
        return math.inf if math.isnan(high) else high
    low, high = float(a.min()), float(a.max())
    return math.inf if math.isnan(low) or math.isnan(high) else max(-low, high)


# How much Winograd F(4x4, 3x3)'s transforms (fastconv_winograd.h) can scale a value on a 2-D
# tile: the largest absolute row sum of the 1-D matrix, squared (one pass per axis; the
# kernels' partial results are partial sums of those rows, so they stay within it too).
WINOGRAD_GAIN = {
    "input": 10.0 ** 2,          # B^T: row [0, -4, -4, 1, 1, 0]
    "weight": 1.0 ** 2,          # G: row [0, 0, 1]
    "output": 19.0 ** 2,         # A^T: row [0, 1, -1, 8, -8, 1]
    "grad_output": 15.0 ** 2,    # A: row [1, 2, 4, 8]
    "to_taps": (5 / 3) ** 2,     # G^T: row [0, -1/6, -1/6, 1/6, 1/6, 1]
}


def _winograd_fits(dtype, bound: float) -> bool:
    """Whether `bound`, the largest magnitude a Winograd kernel can reach, is a finite value
    of `dtype` (False for inf and NaN). A worst case: operands that fail it run on the direct
    kernel, whose partial sums are sums of the result's own terms."""
    return bound <= float(np.finfo(dtype).max)


def _bias(fn: str, bias, channels: int) -> np.ndarray | None:
    if bias is None:
        return None
    bias = _params.as_array("bias", bias)
    if bias.shape != (channels,):
        raise ValueError(f"{fn}: expected bias of shape ({channels},), but got {bias.shape}")
    return bias


def _computes(out: np.ndarray, *operands: np.ndarray) -> bool:
    """Whether a kernel has anything to do: an output to write and every operand non-empty
    (an empty operand - N, H, W or a channel count 0 - leaves only empty sums, and the
    kernels are never called on zero-size arrays)."""
    return out.size > 0 and all(a.size > 0 for a in operands)


def _check_copied_padding(fn: str, mode: str, geo: ConvGeometry) -> None:
    """Padding modes other than zeros copy input pixels: an empty axis has none to copy."""
    for axis, size, (before, after) in zip("HW", geo.in_hw, geo.padding):
        if mode != "zeros" and size == 0 and before + after > 0:
            raise ValueError(f"{fn}: padding_mode={mode!r} copies input pixels into the "
                             f"padding, but the input is empty along {axis} (size 0); use "
                             f"padding_mode='zeros'")


def _bias_arg(bias: np.ndarray | None, dtype) -> np.ndarray:
    """The kernels' form of an optional bias: a contiguous vector, empty for none."""
    return np.zeros(0, dtype) if bias is None else np.ascontiguousarray(bias, dtype)


def _needs(needs) -> frozenset:
    if isinstance(needs, str):
        needs = (needs,)
    try:
        wanted = frozenset(needs)
    except TypeError:
        raise TypeError(f"needs must be a sequence drawn from {NEEDS}, but got {needs!r}") from None
    unknown = wanted - set(NEEDS)
    if unknown:
        raise ValueError(f"needs must be drawn from {NEEDS}, but got {sorted(unknown)}")
    return wanted


def _grad_output(fn: str, grad_output, expected: tuple, unbatched: bool, one_d: bool):
    """grad_output checked against the forward output's shape `expected` (N, Ho, Wo, C) (as
    the caller sees it: without N when unbatched, without H for 1-D), returned 4-D."""
    gy = _params.as_array("grad_output", grad_output)
    shown = (expected[0], *expected[2:]) if one_d else expected
    shown = shown[1:] if unbatched else shown
    if gy.shape != shown:
        raise ValueError(f"{fn}: expected grad_output of shape {shown} {'[NLC]' if one_d else '[NHWC]'}"
                         f" (the shape of the forward output), but got {gy.shape}")
    return gy.reshape(expected)


def pad(x: np.ndarray, pads, mode: str, dtype) -> np.ndarray:
    """x (N, H, W, C) padded on H and W as a new contiguous array of `dtype`."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return np.ascontiguousarray(x, dtype)
    n, h, w, c = x.shape
    if mode == "zeros":
        out = np.zeros((n, h + top + bottom, w + left + right, c), dtype)
        out[:, top:top + h, left:left + w] = x
        return out
    # np.pad keeps a Fortran-ordered input Fortran-ordered; the kernels want C order
    return np.ascontiguousarray(np.pad(np.asarray(x, dtype), ((0, 0), (top, bottom),
                                                             (left, right), (0, 0)),
                                       mode=_params.NUMPY_PAD_MODE[mode]))


def unpad(grad_padded: np.ndarray, pads, mode: str, in_hw) -> np.ndarray:
    """The adjoint of pad(): each padded pixel's gradient goes back to the pixel it copies."""
    g = grad_padded
    for axis, (before, after), size in zip((1, 2), pads, in_hw):
        if before == after == 0:
            continue
        inner = np.take(g, np.arange(before, before + size), axis=axis)
        if mode != "zeros":
            # source of each padded position, as np.pad itself computes it
            source = np.pad(np.arange(size), (before, after), mode=_params.NUMPY_PAD_MODE[mode])
            for j in (*range(before), *range(before + size, before + size + after)):
                index = [slice(None)] * 4
                index[axis] = source[j]
                inner[tuple(index)] += np.take(g, j, axis=axis)
        g = inner
    return np.ascontiguousarray(g)


def _conv_input(x: np.ndarray, pads, mode: str, dtype):
    """A convolution's input and its remaining zero padding (top, left): zero padding is left
    to the kernels (no padded copy), the other modes are padded here."""
    if mode == "zeros":
        return np.ascontiguousarray(x, dtype), (pads[0][0], pads[1][0])
    return pad(x, pads, mode, dtype), (0, 0)


def _weight_gradient(x: np.ndarray, offsets, gy: np.ndarray, weight_shape, geo: ConvGeometry,
                     dtype, algorithm: str, into: np.ndarray | None) -> np.ndarray:
    """_weight_grad with `algorithm` resolved by autotuning. With `into` (a layer's gradient
    of the weight's shape), the gradient is added into it, and it is returned: where no
    measuring runs, by the kernel itself (the blocked one sums straight into it), without
    a gradient array of its own."""
    algo = _autotune.resolved("weight_gradient", geo, dtype, algorithm)
    if into is not None and algo is not None:
        return _weight_grad(algo, x, offsets, gy, weight_shape, geo, dtype, into)
    return _added(_autotune.run("weight_gradient", geo, dtype, algorithm, lambda algo: (
        _weight_grad(algo, x, offsets, gy, weight_shape, geo, dtype))), into)


def _linear_weight_gradient(x: np.ndarray, grad_output: np.ndarray,
                           into: np.ndarray | None = None) -> np.ndarray:
    """x.T @ grad_output, a linear layer's weight gradient (x (M, K), grad_output (M, N),
    one float dtype): the weight gradient of a 1x1 convolution over M pixels, so "auto"'s
    rule picks its kernel, which adds its sums straight into `into` ((K, N), returned) when
    given. At batch 1 (M = 1) BLAS on one thread took 0.8 ms for ResNet's 512 x 1000
    classifier, the blocked kernel 0.2 (AMD EPYC Zen 4, 2 threads)."""
    m, k = x.shape
    n = grad_output.shape[1]
    x4 = np.ascontiguousarray(x).reshape(m, 1, 1, k)
    gy4 = np.ascontiguousarray(grad_output).reshape(m, 1, 1, n)
    weight_shape = (1, 1, k, n)
    geo = _params.conv_geometry("Linear", x4.shape, weight_shape, 1, 0, 1, 1)
    # unit axes added in front: a view of `into` whatever its strides
    view = None if into is None else into.reshape(weight_shape)
    grad = _weight_gradient(x4, (0, 0), gy4, weight_shape, geo, x4.dtype, "auto", view)
    return grad.reshape(k, n) if into is None else into


def _weight_grad(algorithm: str, x: np.ndarray, offsets, gy: np.ndarray, weight_shape,
                 geo: ConvGeometry, dtype, into: np.ndarray | None = None) -> np.ndarray:
    """sum over output pixels of x's window (x) gy, in a fixed order of partial sums (added
    into `into` when given, which is returned; the blocked kernel adds its sums straight
    into it). x is zero-padded by `offsets` (top, left) rows and columns."""
    if gy.size == 0 or x.size == 0 or math.prod(weight_shape) == 0:  # empty sums
        return np.zeros(weight_shape, dtype) if into is None else into
    algo = _algorithms.for_weight_gradient(algorithm, weight_shape, gy.shape, gy.itemsize, geo)
    # the direct kernel skips the zero padding, where im2col and blocked would add
    # 0 * inf = NaN, and
    # Winograd's transforms would spread a non-finite value over its tile, or overflow: the
    # transformed tiles of x and gy, their products summed over all tiles, taken back to taps
    if (algo in ("im2col", "blocked") and not _bounded(gy)) or (algo == "winograd" and not (
            _winograd_fits(dtype, WINOGRAD_GAIN["input"] * WINOGRAD_GAIN["grad_output"]
                           * WINOGRAD_GAIN["to_taps"] * _algorithms.winograd_tiles(gy.shape)
                           * _max_abs(x) * _max_abs(gy)))):
        algo = "direct"
    itemsize = np.dtype(dtype).itemsize
    kh, kw = geo.kernel_hw
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    weight_size = math.prod(weight_shape)
    pixels = gy.shape[0] * gy.shape[1] * gy.shape[2]
    flops = 2 * pixels * weight_size
    if algo == "blocked":
        # the kernel adds its sums to what the array holds
        grad = (into if _sums_into(into, weight_shape, dtype, x, gy)
                else np.zeros(weight_shape, dtype))
        sums, rows = grad, weight_shape[2]
        if _algorithms.merges_tap_rows(weight_shape, geo):
            # a row of taps over all input channels is one run of kw * C_in values of x
            # zero-padded: the kernel's "input channels" (a first layer's 3 channels would
            # fill half of its register blocks)
            x = pad(x, _taps_reach(x.shape[1:3], offsets, gy.shape[1:3], (kh, kw), geo.stride,
                                   geo.dilation), "zeros", x.dtype)
            offsets, kw, dw, rows = (0, 0), 1, 1, kw * rows
            sums = grad.reshape(kh, 1, rows, weight_shape[3])
        kernel = _algorithms.KERNELS[algo]
        blocks = -(-weight_shape[3] // geo.groups // kernel.OUT_BLOCK[np.dtype(dtype).name])
        ci_blocks = -(-rows // kernel.PIXEL_BLOCK)
        # enough work units for the threads (a fixed number: results do not depend on them).
        # A gradient larger than the cache: ranges of input channels first, each unit going
        # through whole rows of its group's part of gw one after another (3x3 512 -> 512 at
        # 4x4, 1 and 8 images: 1.14x and 1.09x faster than a unit per block of output
        # channels, whose rows lie C_out apart). Else a unit per block of output channels
        # first, which reads its chunk of grad_output for all of its input channels (1x1
        # 64 -> 256 at 8x56x56: 1.19x faster than by input channels; AMD EPYC Zen 4).
        if weight_size * itemsize > BLOCKED_CACHE_BYTES:
            in_ranges = max(1, min(ci_blocks, -(-BLOCKED_GRAD_UNITS // geo.groups)))
            out_ranges = min(blocks, -(-BLOCKED_GRAD_UNITS // (geo.groups * in_ranges)))
        else:
            out_ranges = blocks
            in_ranges = max(1, min(ci_blocks, -(-BLOCKED_GRAD_UNITS // (geo.groups * blocks))))
        _run(algo, "conv_backward_weight", x, gy, sums, *offsets, sh, sw, dh, dw, geo.groups,
             out_ranges, in_ranges, BLOCKED_CHUNK_PIXELS, flops=flops)
        return _added(grad, into)
    if algo == "winograd":
        weight_bytes = _algorithms.winograd_weight_bytes(*weight_shape[2:], itemsize)
        tiles = _algorithms.winograd_tiles(gy.shape)
        block = _algorithms.winograd_block(x.shape[3], gy.shape[3], itemsize, tiles,
                                           _algorithms.WINOGRAD_GRAD_BUFFER_BYTES,
                                           weight_bytes=weight_bytes)
        chunks = _algorithms.partial_sums(weight_bytes, -(-tiles // block))
        partial = np.zeros((chunks, 36, *weight_shape[2:]), dtype)
        _run(algo, "conv_backward_weight", x, gy, partial, *offsets, geo.groups, block,
             flops=flops)
        grad = np.empty(weight_shape, dtype)
        _run(algo, "weight_gradient_taps", partial.reshape(chunks, 36, -1),
             grad.reshape(9, -1), flops=36 * chunks * weight_size)
        return _added(grad, into)
    if algo == "im2col":
        tile = _algorithms.tile_pixels(weight_size // weight_shape[3], itemsize, pixels)
        chunks = _algorithms.partial_sums(weight_size * itemsize, -(-pixels // tile))
        partial = np.zeros((chunks, weight_size), dtype)
        _run(algo, "conv_backward_weight", x, gy, partial, kh, kw, *offsets, sh, sw, dh, dw,
             geo.groups, tile, flops=flops)
    else:
        chunks = _algorithms.partial_sums(weight_size * itemsize, gy.shape[0] * gy.shape[1])
        partial = np.zeros((chunks, weight_size), dtype)
        _run(algo, "conv_backward_weight", x, gy, partial, kh, kw, *offsets, sh, sw, dh, dw,
             geo.groups, flops=flops)
    return _added(partial.sum(axis=0).reshape(weight_shape), into)


def _taps_reach(in_hw, offsets, out_hw, kernel_hw, stride, dilation):
    """The padding ((top, bottom), (left, right)) of an input of in_hw: `offsets` (top, left)
    before, and after as far as the taps of the last output row and column reach, so that
    every tap of every output pixel lies inside the padded input."""
    return tuple((before, max(0, (out - 1) * s + (k - 1) * d + 1 - before - size))
                 for size, before, out, k, s, d in zip(in_hw, offsets, out_hw, kernel_hw,
                                                       stride, dilation))


def _sums_into(into: np.ndarray | None, shape, dtype, *operands: np.ndarray) -> bool:
    """Whether a kernel can add its sums straight into `into`: an array of the result's
    shape and the computation's dtype, C-contiguous, writable and apart from the operands."""
    return (isinstance(into, np.ndarray) and into.shape == tuple(shape) and into.dtype == dtype
            and into.flags.c_contiguous and into.flags.writeable
            and not any(np.may_share_memory(into, a) for a in operands))


def _added(grad: np.ndarray, into: np.ndarray | None) -> np.ndarray:
    """grad added into `into` (returned), or grad itself without it; nothing to add when the
    kernel summed into `into` already."""
    if into is None:
        return grad
    if grad is not into:
        into += grad
    return into


def _forward_kernel(algorithm: str, x, offsets, w, bias, y, stride, dilation, groups) -> None:
    """y = conv(x, w) + bias, x zero-padded by `offsets` (top, left) rows and columns; y's
    shape sets how far the output goes (y may be a view with strided pixels; w a view too:
    prepare_weight packs or copies it)."""
    algo = _algorithms.for_convolution(algorithm, w.shape, y.shape, y.itemsize, stride, dilation,
                                       groups)
    run_forward(prepare_weight(algo, w, bias, groups), x, offsets, y, stride, dilation, groups,
                lambda other: prepare_weight(other, w, bias, groups))


class PreparedWeight:
    """A weight and bias as one algorithm's forward kernel takes them (prepare_weight): a
    function of the weight alone, so plans keep it while the weight is unchanged."""

    __slots__ = ("algo", "weight", "bias", "shape", "exact", "max_weight", "max_bias")

    def __init__(self, algo, weight, bias, shape, exact, max_weight, max_bias):
        self.algo, self.weight, self.bias, self.shape = algo, weight, bias, shape
        self.exact, self.max_weight, self.max_bias = exact, max_weight, max_bias


def prepare_weight(algo: str, w: np.ndarray, bias: np.ndarray, groups: int) -> PreparedWeight:
    """The HWIO weight w (C-contiguous or a view) and the kernels' bias vector (empty for
    none) in the layout of `algo`'s forward kernel: Winograd's transformed weight, the
    blocked kernel's packed blocks, the direct kernel's channel-padded weight, im2col's
    contiguous one. A non-finite weight goes to the direct kernel's exact mode: taps in the
    zero padding contribute nothing (C of conv_matrix has no entry for them), not 0 * w, and
    only that mode skips them everywhere."""
    shape = w.shape
    if algo == "blocked":  # the packing's pass over w also checks it
        packed, finite = pack_weight(w, groups)
        exact = not finite
    else:
        exact = not _bounded(w)
    if exact:
        algo = "direct"
    max_weight, max_bias = (_max_abs(w), _max_abs(bias)) if algo == "winograd" else (0.0, 0.0)
    if algo == "blocked":
        block = _algorithms.KERNELS[algo].OUT_BLOCK[bias.dtype.name]
        w, bias = packed, _blocked_bias(bias, groups, block)
    elif algo == "winograd":
        w = winograd_weight(contiguous_weight(w), groups)
    elif algo == "direct":
        block = _algorithms.KERNELS[algo].CHANNEL_BLOCK[bias.dtype.name]
        w, bias = _padded_weight(contiguous_weight(w), bias, groups, block)
    else:
        w = contiguous_weight(w)
    return PreparedWeight(algo, w, bias, shape, exact, max_weight, max_bias)


def contiguous_weight(w: np.ndarray) -> np.ndarray:
    """The HWIO weight w (any strides) as a C-contiguous array (w itself when it is one).
    An input gradient's weight is a view with input and output channels swapped, which
    NumPy's copy reads across its rows (3x3 256 x 256: 0.5 ms, AMD EPYC Zen 4, 2 threads);
    the blocked kernel's packing into one block of all output channels, which is this
    layout, copies it by tiles (0.14 ms)."""
    if w.flags.c_contiguous or not w.size or w.dtype not in (np.float32, np.float64):
        return np.ascontiguousarray(w)
    return pack_weight(w, 1, block=w.shape[3])[0].reshape(w.shape)


def run_forward(prepared: PreparedWeight, x, offsets, y, stride, dilation, groups,
                prepare_other, post=None) -> None:
    """The forward kernel of `prepared` on x (zero-padded by `offsets`) into y, with the
    weight made ready in advance; `prepare_other(algo)` gives the weight for another
    algorithm when this input rules Winograd out. `post`: an _epilogue.Epilogue for all of
    y's pixels (row-major), which the kernel applies in its stores, or None."""
    bind_forward(prepared, x, offsets, y, stride, dilation, groups, prepare_other, post)()


def bind_forward(prepared: PreparedWeight, x, offsets, y, stride, dilation, groups,
                 prepare_other, post=None) -> Callable[[], None]:
    """run_forward with every choice made and the kernel's arguments fixed: calling the
    result runs it on the current values of x and y (it holds them, and prepared and post).
    What depends on x's values is done at each call: Winograd's check of its magnitude,
    the copy of a depthwise input whose channels are not whole vectors."""
    algo = prepared.algo
    w, bias, shape = prepared.weight, prepared.bias, prepared.shape
    (sh, sw), (dh, dw) = stride, dilation
    pixels = y.shape[0] * y.shape[1] * y.shape[2]
    flops = 2 * pixels * math.prod(shape)
    if algo == "winograd":
        # the transforms mix the pixels of a tile: one infinite input would make its
        # neighbours' outputs NaN too, and large ones can overflow where the result does
        # not: the transformed tiles, their products summed over a group's input channels,
        # the output transform and the bias
        block = _algorithms.winograd_block(x.shape[3], y.shape[3], y.itemsize,
                                           _algorithms.winograd_tiles(y.shape),
                                           weight_bytes=_algorithms.winograd_weight_bytes(
                                               *shape[2:], y.itemsize))
        kernel = _bound(algo, "conv_forward", x, w, bias, y, *offsets, groups, block, post,
                        flops=flops)
        gain = (WINOGRAD_GAIN["input"] * WINOGRAD_GAIN["weight"] * WINOGRAD_GAIN["output"]
                * prepared.shape[2])

        def winograd_or_direct() -> None:
            if _winograd_fits(y.dtype, gain * _max_abs(x) * prepared.max_weight
                              + prepared.max_bias):
                kernel()
            else:
                bind_forward(prepare_other("direct"), x, offsets, y, stride, dilation,
                             groups, prepare_other, post)()
        return winograd_or_direct
    if algo == "im2col":
        tile = _algorithms.forward_tile(shape, y.itemsize, pixels)
        if y.flags.c_contiguous:
            return _bound(algo, "conv_forward", x, w, bias, y, *offsets, sh, sw, dh, dw,
                          groups, tile, post, flops=flops)
        out = np.empty(y.shape, y.dtype)  # GEMM rows: contiguous
        kernel = _bound(algo, "conv_forward", x, w, bias, out, *offsets, sh, sw, dh, dw,
                        groups, tile, post, flops=flops)

        def into_y() -> None:
            kernel()
            y[...] = out
        return into_y
    if algo == "blocked":
        block = _algorithms.KERNELS[algo].OUT_BLOCK["float32" if y.itemsize == 4 else "float64"]
        # an output far larger than the caches is written with non-temporal stores
        # (measured, Zen 5, 2 threads: 16 -> 96 1x1 at 8x112x112 in MobileNetV2 3.0 -> 1.4 ms)
        return _bound(algo, "conv_forward", x, w, bias, y, *offsets, sh, sw, dh, dw,
                      _blocked_in_block(shape, block, y.itemsize),
                      _algorithms.BLOCKED_ITEM_PIXELS,
                      w.nbytes > max(BLOCKED_CACHE_BYTES, x.nbytes),
                      y.nbytes >= _algorithms.STREAM_BYTES, post, flops=flops)
    # a depthwise output far larger than the caches is written with non-temporal stores
    # (measured, mobilenet_dw_112 forward, 2 threads: kernel 2.63 -> 2.36 ms)
    depthwise = _algorithms.is_depthwise(shape, groups)
    stream = depthwise and y.flags.c_contiguous and y.nbytes >= _algorithms.STREAM_BYTES
    min_flops = (_algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS if depthwise
                 else _algorithms.PARALLEL_MIN_FLOPS)
    if not depthwise or x.shape[3] == w.shape[3]:
        return _bound(algo, "conv_forward", x, w, bias, y, *offsets, sh, sw, dh, dw, groups,
                      prepared.exact, stream, post, flops=flops, min_flops=min_flops)

    def widened() -> None:  # the kernel reads whole channel vectors of x too
        _run(algo, "conv_forward", _padded_depthwise_input(x, w.shape[3]), w, bias, y,
             *offsets, sh, sw, dh, dw, groups, prepared.exact, stream, post, flops=flops,
             min_flops=min_flops)
    return widened


# The blocked kernel's cache blocking: a block of input channels' packed weight (kh x kw x
# in_block x OUT_BLOCK values) near BLOCKED_WEIGHT_BYTES, so that it stays in L2 while it
# serves a work item's _algorithms.BLOCKED_ITEM_PIXELS output pixels. A packed
# weight larger than BLOCKED_CACHE_BYTES and than the input is kept per output-channel block
# by each thread (the work ordered block by block, the input read once per block); else a
# thread runs all blocks of a few pixels while their input is in cache (the weight, in
# cache whole or streamed from L3, read once per run of pixels). Measured on a Zen 5, one
# thread: 3x3 128 -> 256 stride 2 at 52x52 (1.2 MB weight, 11 MB input) 1.1-1.4x faster
# input-stationary; 512 -> 512 at 28x28, batch 1 (9.4 MB, 1.6 MB) 1.1x weight-stationary.
# Both are half of the core's L2 (a weight block of half of L2 rather than a quarter keeps
# 128 input channels of a 3x3 layer whole, rows of taps merged: 128 -> 128 at 28x28, 2
# threads, 4% faster on a Zen 5 with 1 MiB of L2).
BLOCKED_WEIGHT_BYTES = _algorithms.MACHINE.l2 // 2
BLOCKED_CACHE_BYTES = _algorithms.MACHINE.l2 // 2
# its weight gradient: output pixels per chunk (their grad_output, one block of channels,
# stays in L1/L2 while every tap and input channel uses it), and the work units it aims for
BLOCKED_CHUNK_PIXELS = 256
BLOCKED_GRAD_UNITS = 8


def pack_weight(w: np.ndarray, groups: int, block: int | None = None) -> tuple[np.ndarray, bool]:
    """An HWIO weight (kh, kw, C_in // groups, C_out; any strides, e.g. an input gradient's
    transposed and flipped view) in the blocked kernel's layout (groups, n_blocks, kh, kw,
    C_in // groups, block): each group's output channels cut into blocks of `block` (default:
    the kernel's OUT_BLOCK for w's dtype), the last one zero-padded; and whether every value
    of w is finite, found in the same pass. A function of the weight alone, so its result
    can be kept and reused."""
    kernel = _algorithms.KERNELS["blocked"]
    if block is None:
        block = kernel.OUT_BLOCK[w.dtype.name]
    kh, kw, cig, cout = w.shape
    if cout % groups:
        raise ValueError(f"pack_weight: groups={groups} must divide the weight's {cout} output "
                         f"channels")
    if any(stride % w.itemsize for stride in w.strides):  # e.g. a field of a structured array
        w = np.ascontiguousarray(w)  # the kernel steps in whole elements
    # into memory aligned for the kernel's vector loads
    packed = _memory.empty((groups, -(-cout // groups // block), kh, kw, cig, block), w.dtype)
    threads = threads_for_work(packed.size)  # an element-wise copy
    place_workers(threads)
    return packed, kernel.pack_weight(w, packed, threads)


def unpack_weight(packed: np.ndarray, out_channels: int) -> np.ndarray:
    """The HWIO weight (kh, kw, C_in // groups, out_channels) that pack_weight packed."""
    groups, n_blocks, kh, kw, cig, block = packed.shape
    w = packed.transpose(2, 3, 4, 0, 1, 5).reshape(kh, kw, cig, groups, n_blocks * block)
    return np.ascontiguousarray(w[..., :out_channels // groups].reshape(kh, kw, cig, out_channels))


def _blocked_bias(bias: np.ndarray, groups: int, block: int) -> np.ndarray:
    """The blocked kernel's bias: (groups, n_blocks * block), zero-padded like the weight
    ((0, 0) for none)."""
    if not bias.size:
        return bias.reshape(0, 0)
    cog = bias.size // groups
    return _zero_padded_last(bias.reshape(groups, cog), -cog % block)


def _blocked_in_block(weight_shape, block: int, itemsize: int) -> int:
    """The blocked kernel's input channels per cache block: all of them when their packed
    weight is small enough, else equal blocks near BLOCKED_WEIGHT_BYTES. Depends on the
    problem only, not the thread count."""
    kh, kw, cig, _ = weight_shape
    n_blocks = -(-(kh * kw * cig * block * itemsize) // BLOCKED_WEIGHT_BYTES)
    return -(-cig // n_blocks)


def winograd_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """A 3x3 HWIO weight (C-contiguous) transformed for the Winograd kernel, in its packed
    layout (36, groups, n_blocks, C_in // groups, block): for each of the 36 points, each
    group's output channels in blocks of the kernel's OUT_BLOCK, the last one zero-padded."""
    kh, kw, cig, cout = w.shape
    block = _algorithms.KERNELS["winograd"].OUT_BLOCK[w.dtype.name]
    packed = _memory.empty((36, groups, -(-cout // groups // block), cig, block), w.dtype)
    _run("winograd", "transform_weight", w, packed, flops=36 * w.size)
    return packed


def _zero_padded_last(a: np.ndarray, extra: int) -> np.ndarray:
    """A copy of `a` with `extra` zeros after the values of its last axis, C-contiguous and
    aligned (_memory): np.pad's result without its 30-50 us of Python, paid at every call
    of a small layer."""
    n = a.shape[-1]
    out = _memory.empty((*a.shape[:-1], n + extra), a.dtype)
    out[..., :n] = a
    out[..., n:] = 0
    return out


def _padded_weight(w, bias, groups, block):
    """The direct kernel's weight and bias: each group's output channels padded with zeros to
    a multiple of `block` (a depthwise weight: all its channels, the kernel runs them as one
    group), so that its whole-vector loads stay inside the arrays. Cheap: weights are small."""
    kh, kw, cig, cout = w.shape
    cog = cout // groups
    depthwise = _algorithms.is_depthwise(w.shape, groups)
    extra = -(cout if depthwise else cog) % block
    if not extra:
        return w, bias
    if depthwise:
        return (_zero_padded_last(w, extra),
                _zero_padded_last(bias, extra) if bias.size else bias)
    w = _zero_padded_last(w.reshape(kh, kw, cig, groups, cog), extra)
    if bias.size:
        bias = _zero_padded_last(bias.reshape(groups, cog), extra).reshape(-1)
    return w.reshape(kh, kw, cig, -1), bias


def bind_depthwise_pointwise(depthwise: PreparedWeight, pointwise: PreparedWeight, x, offsets,
                             y, stride, dilation, post=None,
                             pointwise_post=None) -> Callable[[], None]:
    """The call computing y = pointwise(depthwise(x)) in one kernel
    (_direct.depthwise_pointwise: a run of the depthwise output's pixels, at most
    SEPARABLE_RUN_BYTES of them, is made in a buffer and multiplied by the 1x1 weight at
    once, never stored), its arguments fixed. `depthwise`:
    a depthwise weight prepared for the direct kernel (finite: not exact), `pointwise`: a
    1x1 weight prepared for the blocked kernel; x (C-contiguous) zero-padded by `offsets`;
    y (C-contiguous) of the depthwise output's size and the 1x1's channels; `post`: the
    Epilogue of the depthwise output, `pointwise_post` y's (None: none). A depthwise input
    whose channels are not whole vectors is widened at each call, as bind_forward does."""
    kh, kw, _, channels = depthwise.shape
    pixels = y.shape[0] * y.shape[1] * y.shape[2]
    flops = 2 * pixels * (kh * kw * channels + math.prod(pointwise.shape))
    run_pixels = max(1, _algorithms.SEPARABLE_RUN_BYTES
                     // (depthwise.weight.shape[3] * depthwise.weight.itemsize))
    args = (depthwise.weight, depthwise.bias, post, pointwise.weight, pointwise.bias, y,
            *offsets, *stride, *dilation, pointwise_post, run_pixels)
    min_flops = _algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS
    if x.shape[3] == depthwise.weight.shape[3]:
        return _bound("direct", "depthwise_pointwise", x, *args, flops=flops,
                      min_flops=min_flops)

    def widened() -> None:  # the kernel reads whole channel vectors of x too
        _run("direct", "depthwise_pointwise",
             _padded_depthwise_input(x, depthwise.weight.shape[3]), *args, flops=flops,
             min_flops=min_flops)
    return widened


def bind_expand_depthwise_pointwise(expand: PreparedWeight, depthwise: PreparedWeight,
                                    pointwise: PreparedWeight, x, offsets, y, stride,
                                    dilation, expand_post=None, post=None,
                                    pointwise_post=None) -> Callable[[], None]:
    """The call computing y = pointwise(depthwise(expand(x))) in one kernel
    (_direct.expand_depthwise_pointwise: a thread expands the input rows its band of
    depthwise rows reads into a buffer of about SEPARABLE_RUN_BYTES, and each depthwise
    row goes through the 1x1 at once), its arguments fixed. `expand` and `pointwise`: 1x1
    weights prepared for the blocked kernel, `depthwise`: a depthwise weight prepared for
    the direct kernel (finite); x (C-contiguous, the expansion's input); `offsets`,
    `stride`, `dilation`: the depthwise convolution's; y as for bind_depthwise_pointwise;
    the Epilogues of the expanded values, the depthwise output and y (None: none)."""
    kh = depthwise.shape[0]
    span = (kh - 1) * dilation[0] + 1
    row_bytes = x.shape[2] * depthwise.weight.shape[3] * depthwise.weight.itemsize
    buffer_rows = max(span, _algorithms.SEPARABLE_RUN_BYTES // max(1, row_bytes))
    return _bound("direct", "expand_depthwise_pointwise", x, expand.weight, expand.bias,
                  expand_post, depthwise.weight, depthwise.bias, post, pointwise.weight,
                  pointwise.bias, y, *offsets, *stride, *dilation, pointwise_post,
                  buffer_rows, flops=_inverted_residual_flops(x.shape, depthwise, pointwise,
                                                              y.shape),
                  min_flops=_algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS)


def _inverted_residual_flops(x_shape, depthwise: PreparedWeight, pointwise: PreparedWeight,
                             y_shape) -> int:
    """The arithmetic of expand -> depthwise -> 1x1 from x to y (multiply and add: 2)."""
    kh, kw, _, channels = depthwise.shape
    pixels = y_shape[0] * y_shape[1] * y_shape[2]
    return 2 * (pixels * (kh * kw * channels + math.prod(pointwise.shape))
                + math.prod(x_shape) * channels)


def expansion_joins(x_shape, depthwise: PreparedWeight, pointwise: PreparedWeight, y_shape,
                    offsets, stride, dilation) -> bool:
    """Whether the expansion of an input of x_shape (N, H, W, C_in) runs in
    bind_expand_depthwise_pointwise's kernel rather than as its own kernel before
    bind_depthwise_pointwise's: _algorithms.expand_joins for the threads that kernel would
    run on. y_shape: the output's shape; the weights, offsets, stride and dilation as
    bind_expand_depthwise_pointwise takes them."""
    threads = _kernel_threads(_inverted_residual_flops(x_shape, depthwise, pointwise, y_shape),
                              _algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS)
    return _algorithms.expand_joins(x_shape[0], x_shape[1], depthwise.shape[0], stride[0],
                                    dilation[0], offsets[0], y_shape[1], threads)


def _padded_depthwise_input(x, channels: int):
    """A depthwise input with its channels padded with zeros to the padded weight's
    `channels` (needed only when C is not a multiple of the vector width)."""
    extra = channels - x.shape[3]
    return x if not extra else _zero_padded_last(x, extra)


def _phase_taps(phase: int, k: int, stride: int, dilation: int):
    """The taps r whose offset r*dilation lands on input positions = phase (mod stride), and
    (first, step) of m_r = (r*dilation - phase) / stride, the output offset they read."""
    taps = [r for r in range(k) if (r * dilation) % stride == phase]
    first = (taps[0] * dilation - phase) // stride if taps else 0
    return taps, first, dilation // math.gcd(stride, dilation)


def _taps_slice(taps: list) -> slice:
    """`taps`, an increasing arithmetic progression (those of one sub-pixel phase), as a
    slice, so that indexing with it makes a view rather than a copy."""
    return slice(taps[0], taps[-1] + 1, taps[1] - taps[0] if len(taps) > 1 else 1)


def _data_kernel(algorithm: str, gy, w, bias, out, geo: ConvGeometry, crop=(0, 0)) -> None:
    """out = C^T gy + bias: the input gradient of the convolution (or a transposed
    convolution) on the padded input grid, of which `out` holds the rows and columns from
    crop = (top, left) on. No zeros are inserted.

    Padded rows ih = a (mod stride) are reached only by the taps r with r*d = a (mod stride),
    from output rows oh = ih // stride - m_r. So each sub-pixel phase (a, b) is a stride-1
    convolution of gy, shifted (and zero-padded or cropped), with the phase's taps flipped and
    the weight's in/out channels swapped; stride 1 is a single phase. Three cases skip the
    phases: one tap per phase (kernel <= stride) is one GEMM over all taps
    (_single_tap_kernel), a strided depthwise one is one pass over the rows of `out`
    (_direct.data_depthwise), and one with few pixels of gy (or algorithm "im2col") is a
    GEMM per tap on the weight as it lies, added into `out` (_gemm_data_kernel).
    """
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    kh, kw, cig, cout = w.shape
    groups = geo.groups
    cog = cout // groups
    if (_algorithms.for_single_tap_phases(algorithm, kh, kw, geo.stride, geo.dilation, cog)
            and out.flags.c_contiguous):
        _single_tap_kernel(gy, w, bias, out, geo, crop)
        return
    if (_algorithms.for_depthwise_data(algorithm, geo.stride, w.shape, groups)
            and out.flags.c_contiguous):
        w, bias = _padded_weight(w, bias, groups,
                                 _algorithms.KERNELS["direct"].CHANNEL_BLOCK[out.dtype.name])
        gy = _padded_depthwise_input(gy, w.shape[3])
        _run("direct", "data_depthwise", np.ascontiguousarray(gy), w, bias, out, *crop,
             *geo.stride, *geo.dilation, out.nbytes >= _algorithms.STREAM_BYTES,
             flops=2 * gy.shape[0] * gy.shape[1] * gy.shape[2] * w.size,
             min_flops=_algorithms.PARALLEL_MIN_DEPTHWISE_FLOPS)
        return
    if _algorithms.for_gemm_data(algorithm, w.shape, geo) and out.flags.c_contiguous:
        _gemm_data_kernel(gy, w, bias, out, geo, crop)
        return
    # the adjoint's weight: wt[r, s, co, g*cig + ci] = w[r, s, ci, g*cog + co]
    wt = w.reshape(kh, kw, cig, groups, cog).transpose(0, 1, 4, 3, 2).reshape(kh, kw, cog, -1)
    top, left = crop
    for a in range(sh):
        i0 = (a - top) % sh  # the first row of `out` in phase a
        if i0 >= out.shape[1]:
            continue
        rows, first_r, step_r = _phase_taps(a, kh, sh, dh)
        for b in range(sw):
            j0 = (b - left) % sw
            if j0 >= out.shape[2]:
                continue
            cols, first_s, step_s = _phase_taps(b, kw, sw, dw)
            phase = out[:, i0::sh, j0::sw]
            if not rows or not cols:  # no tap reaches this phase
                phase[...] = bias if bias.size else 0
                continue
            # gy shifted down/right by the last tap's output offset, less the phase rows and
            # columns that lie before `out`
            offsets = (first_r + (len(rows) - 1) * step_r - (i0 + top - a) // sh,
                       first_s + (len(cols) - 1) * step_s - (j0 + left - b) // sw)
            # the phase's taps, flipped: a view (they are evenly spaced), copied once by the
            # kernel's own packing or made contiguous in _forward_kernel
            w_phase = wt[_taps_slice(rows)][:, _taps_slice(cols)][::-1, ::-1]
            _forward_kernel(algorithm, gy, offsets, w_phase, bias, phase, (1, 1),
                            (step_r, step_s), groups)


def _gemm_data_kernel(gy, w, bias, out, geo: ConvGeometry, crop) -> None:
    """_data_kernel as GEMM + col2im (_im2col.conv_backward_data, one group): `out` set to
    the bias, then each tap's product of gy's pixels by its weight added in. Its work items
    are DATA_GEMM_CHUNKS chunks of input channels (whole vectors), its GEMMs of all of gy's
    pixels at once where their product fits COLUMN_BUFFER_BYTES: sizes that do not depend
    on the thread count, nor then the GEMMs' roundings."""
    out[...] = bias if bias.size else 0
    gy = np.ascontiguousarray(gy)
    kh, kw, cin, cout = w.shape
    pixels = gy.shape[0] * gy.shape[1] * gy.shape[2]
    lanes = _algorithms.MACHINE.lanes(out.itemsize)
    chunk = min(cin, -(-cin // _algorithms.DATA_GEMM_CHUNKS // lanes) * lanes)
    rows = _algorithms.COLUMN_BUFFER_BYTES // (chunk * out.itemsize)
    tile = max(1, min(pixels, max(_algorithms.MIN_GEMM_ROWS, rows)))
    _run("im2col", "conv_backward_data", gy, w, out, *crop, *geo.stride, *geo.dilation, tile,
         chunk, flops=2 * pixels * w.size)


def _single_tap_kernel(gy, w, bias, out, geo: ConvGeometry, crop) -> None:
    """_data_kernel when each sub-pixel phase has one tap (kernel <= stride, e.g. 2x2 stride
    2): one GEMM of gy's pixels by all taps' weights, each product row copied to the output
    pixel it belongs to (_im2col.transpose_single_tap); the pixels no tap reaches (phases
    without a tap, output_padding) are set to the bias here."""
    kh, kw, cig, cout = w.shape
    groups = geo.groups
    cog = cout // groups
    # wg[g, i, (r*kw + s)*cig + j] = w[r, s, j, g*cog + i]: gy's channel i of group g times
    # tap (r, s) gives output channel g*cig + j
    wg = np.ascontiguousarray(
        w.reshape(kh, kw, cig, groups, cog).transpose(3, 4, 0, 1, 2).reshape(groups, cog, -1))
    gy = np.ascontiguousarray(gy)
    pixels = gy.shape[0] * gy.shape[1] * gy.shape[2]
    tile = _algorithms.tile_pixels(kh * kw * cig, out.itemsize, pixels)
    # straight into the output, a GEMM per input row, where its rows are whole output rows
    rows = (groups == 1 and geo.dilation[1] == 1 and crop[1] == 0
            and (gy.shape[2] - 1) * geo.stride[1] + kw <= out.shape[2]
            and gy.shape[2] >= _algorithms.MIN_GEMM_ROWS)
    _run("im2col", "transpose_single_tap", gy, wg, bias, out, kh, kw, *crop, *geo.stride,
         *geo.dilation, tile, rows, flops=2 * pixels * w.size)
    fill = bias if bias.size else 0
    for axis, size, k, stride, dilation, start in zip((1, 2), gy.shape[1:3], (kh, kw),
                                                      geo.stride, geo.dilation, crop):
        reached = {i * stride + r * dilation - start for i in range(size) for r in range(k)}
        missed = [i for i in range(out.shape[axis]) if i not in reached]
        if missed:
            out[(slice(None),) * axis + (missed,)] = fill


# ----------------------------------------------------------------------------------------------
# conv2d

def _conv_inputs(fn: str, x, weight, groups, transposed=False):
    """x (4-D), weight and whether x was one unbatched image, checked against each other."""
    x, unbatched = _batched("input", x)
    weight = _params.as_array("weight", weight)
    groups = _params.as_int("groups", groups, 1)
    _params.check_weight(fn, weight, x.shape, groups, transposed)
    return x, weight, unbatched


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto"):
    """2-D convolution (cross-correlation, as in CNNs) of NHWC `x` with HWIO `weight`.

    x: (N, H, W, C_in) or (H, W, C_in); weight: (kh, kw, C_in // groups, C_out);
    bias: (C_out,) or None. Returns (N, H_out, W_out, C_out) (3-D for 3-D x) in
    np.result_type(x, weight, float32).

    algorithm: "auto", "direct", "im2col", "blocked" (direct with packed weights, for wide
    layers) or "winograd" (3x3, stride 1, dilation 1 only; ValueError otherwise).
    Winograd's transforms scale values by up to 36100 before they are summed: where
    max|x| * max|weight| (times that and C_in // groups) could exceed the dtype's largest
    value, or an operand is not finite, the direct kernel runs instead, for "auto" and an
    explicit "winograd" alike (the result is right, only slower). "blocked" reads the zero
    padding as zeros (0 * w): where the weight is not finite, the direct kernel's exact
    mode runs instead.
    """
    return _conv2d("conv2d", x, weight, bias, stride, padding, dilation, groups, padding_mode,
                   algorithm)


def _conv2d(fn, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm):
    x, weight, unbatched = _conv_inputs(fn, x, weight, groups)
    bias = _bias(fn, bias, weight.shape[3])
    dtype = _params.float_dtype(x, weight)
    mode = _params.padding_mode(padding_mode)
    geo = _params.conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_copied_padding(fn, mode, geo)
    algorithm = _algorithms.check(fn, algorithm, geo)
    y = _memory.empty((geo.n, *geo.out_hw, geo.out_channels), dtype)
    if not _computes(y, x, weight):  # no input pixel or channel: the sums are empty
        y[...] = 0 if bias is None else bias
    else:
        xin, offsets = _conv_input(x, geo.padding, mode, dtype)
        w, b = np.ascontiguousarray(weight, dtype), _bias_arg(bias, dtype)
        _autotune.run("forward", geo, dtype, algorithm, lambda algo: _forward_kernel(
            algo, xin, offsets, w, b, y, geo.stride, geo.dilation, geo.groups))
    return y[0] if unbatched else y


def conv2d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm="auto", needs=NEEDS):
    """Gradients of conv2d(x, weight, bias, ...) given grad_output = dL/dy.

    Returns (grad_input, grad_weight, grad_bias); those not named in `needs` are None.
    Where Winograd's transforms could overflow (see conv2d; for the weight gradient, a bound
    from max|x| * max|grad_output| and the number of 4x4 output tiles), the direct kernel
    runs instead, for "auto" and an explicit "winograd" alike.
    """
    return _conv2d_backward("conv2d_backward", False, grad_output, x, weight, stride, padding,
                            dilation, groups, padding_mode, algorithm, needs)


def _conv2d_backward(fn, one_d, grad_output, x, weight, stride, padding, dilation, groups,
                     padding_mode, algorithm, needs, grad_weight_into=None):
    """conv2d_backward; with grad_weight_into (a layer's weight gradient), the weight's
    gradient is added into it (see _weight_gradient) and it is the grad_weight returned."""
    wanted = _needs(needs)
    x, weight, unbatched = _conv_inputs(fn, x, weight, groups)
    mode = _params.padding_mode(padding_mode)
    geo = _params.conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    _check_copied_padding(fn, mode, geo)
    algorithm = _algorithms.check(fn, algorithm, geo)
    gy = _grad_output(fn, grad_output, (geo.n, *geo.out_hw, geo.out_channels), unbatched, one_d)
    grad_input, grad_weight, grad_bias = _conv2d_gradients(gy, x, weight, geo, mode, algorithm,
                                                           wanted, grad_weight_into)
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


def _conv2d_gradients(gy: np.ndarray, x: np.ndarray, weight: np.ndarray, geo: ConvGeometry,
                      mode: str, algorithm: str, wanted, grad_weight_into=None):
    """_conv2d_backward's gradients from arguments checked against each other: gy and x
    4-D, of geo's output and input shapes, weight of its weight's shape, `algorithm` as
    _algorithms.check returns it (a layer's plan keeps these from its forward)."""
    dtype = _params.float_dtype(gy, x, weight)
    gy = np.ascontiguousarray(gy, dtype)
    grad_input = grad_weight = grad_bias = None
    if "input" in wanted:
        w = np.ascontiguousarray(weight, dtype)
        # _data_kernel writes every value of its output: no zeros first (a pass over memory)
        if mode == "zeros":  # the padding's gradient is dropped: compute only the input's
            grad_input = _memory.empty((geo.n, *geo.in_hw, geo.in_channels), dtype)
            if _computes(grad_input, gy, w):
                gx = grad_input
                _autotune.run("input_gradient", geo, dtype, algorithm, lambda algo: _data_kernel(
                    algo, gy, w, _bias_arg(None, dtype), gx, geo,
                    (geo.padding[0][0], geo.padding[1][0])))
            else:
                grad_input[...] = 0
        else:  # the padding's gradient flows back to the pixels it copies
            gxp = _memory.empty((geo.n, *geo.padded_hw, geo.in_channels), dtype)
            if _computes(gxp, gy, w):
                _autotune.run("input_gradient", geo, dtype, algorithm, lambda algo: _data_kernel(
                    algo, gy, w, _bias_arg(None, dtype), gxp, geo))
            else:
                gxp[...] = 0
            grad_input = unpad(gxp, geo.padding, mode, geo.in_hw)
    if "weight" in wanted:
        xin, offsets = _conv_input(x, geo.padding, mode, dtype)
        grad_weight = _weight_gradient(xin, offsets, gy, weight.shape, geo, dtype, algorithm,
                                       grad_weight_into)
    if "bias" in wanted:
        grad_bias = gy.sum(axis=(0, 1, 2))
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------------
# conv_transpose2d: the adjoint of conv2d with the same weight

def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, algorithm="auto"):
    """Transposed convolution: the gradient of conv2d(., weight) with respect to its input.

    x: (N, H, W, C_in) or (H, W, C_in); weight: (kh, kw, C_out // groups, C_in), the weight of
    the convolution this is the adjoint of; bias: (C_out,) or None. `padding` crops the
    output, `output_padding` adds rows/columns at its bottom/right.
    """
    return _conv_transpose2d("conv_transpose2d", x, weight, bias, stride, padding,
                             output_padding, dilation, groups, algorithm)


def _conv_transpose2d(fn, x, weight, bias, stride, padding, output_padding, dilation, groups,
                      algorithm):
    x, weight, unbatched = _conv_inputs(fn, x, weight, groups, transposed=True)
    geo = _params.conv_transpose_geometry(fn, x.shape, weight.shape, stride, padding,
                                          output_padding, dilation, groups)
    bias = _bias(fn, bias, geo.in_channels)
    dtype = _params.float_dtype(x, weight)
    algorithm = _algorithms.check(fn, algorithm, geo)
    y = _memory.empty((geo.n, *geo.in_hw, geo.in_channels), dtype)
    if not _computes(y, x, weight):  # no input pixel or channel: the sums are empty
        y[...] = 0 if bias is None else bias
    else:  # `padding` crops the full output: compute only what is kept
        x, w, b = (np.ascontiguousarray(x, dtype), np.ascontiguousarray(weight, dtype),
                   _bias_arg(bias, dtype))
        # the input gradient of the convolution geo describes
        _autotune.run("input_gradient", geo, dtype, algorithm, lambda algo: _data_kernel(
            algo, x, w, b, y, geo, (geo.padding[0][0], geo.padding[1][0])))
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_output, x, weight, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, algorithm="auto", needs=NEEDS):
    """Gradients of conv_transpose2d(x, weight, bias, ...) given grad_output = dL/dy.

    Returns (grad_input, grad_weight, grad_bias); those not named in `needs` are None.
    """
    return _conv_transpose2d_backward("conv_transpose2d_backward", False, grad_output, x, weight,
                                      stride, padding, output_padding, dilation, groups,
                                      algorithm, needs)


def _conv_transpose2d_backward(fn, one_d, grad_output, x, weight, stride, padding,
                               output_padding, dilation, groups, algorithm, needs,
                               grad_weight_into=None):
    """conv_transpose2d_backward; grad_weight_into as in _conv2d_backward."""
    wanted = _needs(needs)
    x, weight, unbatched = _conv_inputs(fn, x, weight, groups, transposed=True)
    geo = _params.conv_transpose_geometry(fn, x.shape, weight.shape, stride, padding,
                                          output_padding, dilation, groups)
    algorithm = _algorithms.check(fn, algorithm, geo)
    gy = _grad_output(fn, grad_output, (geo.n, *geo.in_hw, geo.in_channels), unbatched, one_d)
    dtype = _params.float_dtype(gy, x, weight)
    gy, offsets = _conv_input(gy, geo.padding, "zeros", dtype)  # the convolution's input
    x = np.ascontiguousarray(x, dtype)  # the convolution's output
    grad_input = grad_weight = grad_bias = None
    if "input" in wanted:
        grad_input = _memory.empty(x.shape, dtype)  # the forward kernel writes all of it
        if _computes(grad_input, gy, weight):
            w, gx = np.ascontiguousarray(weight, dtype), grad_input
            _autotune.run("forward", geo, dtype, algorithm, lambda algo: _forward_kernel(
                algo, gy, offsets, w, _bias_arg(None, dtype), gx, geo.stride, geo.dilation,
                geo.groups))
        else:
            grad_input[...] = 0
        if unbatched:
            grad_input = grad_input[0]
    if "weight" in wanted:
        grad_weight = _weight_gradient(gy, offsets, x, weight.shape, geo, dtype, algorithm,
                                       grad_weight_into)
    if "bias" in wanted:
        grad_bias = gy.sum(axis=(0, 1, 2))
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------------------
# output shapes

def conv_output_shape(input_hw, kernel_size, stride=1, padding=0, dilation=1):
    """(H_out, W_out) of conv2d on an (H, W) input: floor((in + pad - d*(k-1) - 1)/s) + 1."""
    h, w = _params.as_pair("input_hw", input_hw, 0)
    kh, kw = _params.as_pair("kernel_size", kernel_size, 1)
    geo = _params.conv_geometry("conv_output_shape", (1, h, w, 1), (kh, kw, 1, 1), stride,
                                padding, dilation, 1)
    return geo.out_hw


def conv_transpose_output_shape(input_hw, kernel_size, stride=1, padding=0, output_padding=0,
                                dilation=1):
    """(H_out, W_out) of conv_transpose2d: (in-1)*s - pad + d*(k-1) + output_padding + 1."""
    h, w = _params.as_pair("input_hw", input_hw, 1)
    kh, kw = _params.as_pair("kernel_size", kernel_size, 1)
    geo = _params.conv_transpose_geometry("conv_transpose_output_shape", (1, h, w, 1),
                                          (kh, kw, 1, 1), stride, padding, output_padding,
                                          dilation, 1)
    return geo.in_hw


# ----------------------------------------------------------------------------------------------
# 1-D: (N, L, C) activations, (k, C_in // groups, C_out) weights, as 2-D with H = 1

def _as_2d(x, weight, stride, padding, dilation, output_padding=0):
    """The 2-D arguments of a 1-D call (x gains H = 1 after N, weight gains kh = 1)."""
    x = _params.as_array("input", x)
    _params.check_ndim("input", x, (2, 3), "(L, C) or (N, L, C) [NLC]")
    weight = _params.as_array("weight", weight)
    _params.check_ndim("weight", weight, (3,), "(k, C_in // groups, C_out)")
    # padding: an int, (p,), a (left, right) pair or ((left, right),), or a string
    if isinstance(padding, (tuple, list)) and len(padding) == 1:
        padding = padding[0]
    if isinstance(padding, str):
        padding_2d = padding
    elif isinstance(padding, (tuple, list)):
        padding_2d = ((0, 0), _params.as_tuple("padding", padding, 2, 0))
    else:
        padding_2d = ((0, 0), _params.as_tuple("padding", padding, 1, 0) * 2)
    return (x[..., None, :, :], weight[None],
            (1, *_params.as_tuple("stride", stride, 1, 1)), padding_2d,
            (1, *_params.as_tuple("dilation", dilation, 1, 1)),
            (0, *_params.as_tuple("output_padding", output_padding, 1, 0)))


def _squeeze_h(arr):
    return None if arr is None else arr[..., 0, :, :]


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto"):
    """1-D convolution of (N, L, C_in) `x` with (k, C_in // groups, C_out) `weight`."""
    x2, w2, s2, p2, d2, _ = _as_2d(x, weight, stride, padding, dilation)
    return _squeeze_h(_conv2d("conv1d", x2, w2, bias, s2, p2, d2, groups, padding_mode,
                              algorithm))


def conv1d_backward(grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm="auto", needs=NEEDS):
    """Gradients of conv1d; returns (grad_input, grad_weight, grad_bias)."""
    x2, w2, s2, p2, d2, _ = _as_2d(x, weight, stride, padding, dilation)
    gx, gw, gb = _conv2d_backward("conv1d_backward", True, grad_output, x2, w2, s2, p2, d2,
                                  groups, padding_mode, algorithm, needs)
    return _squeeze_h(gx), None if gw is None else gw[0], gb


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups=1, algorithm="auto"):
    """1-D transposed convolution; weight (k, C_out // groups, C_in)."""
    x2, w2, s2, p2, d2, op2 = _as_2d(x, weight, stride, padding, dilation, output_padding)
    return _squeeze_h(_conv_transpose2d("conv_transpose1d", x2, w2, bias, s2, p2, op2, d2,
                                        groups, algorithm))


def conv_transpose1d_backward(grad_output, x, weight, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, algorithm="auto", needs=NEEDS):
    """Gradients of conv_transpose1d; returns (grad_input, grad_weight, grad_bias)."""
    x2, w2, s2, p2, d2, op2 = _as_2d(x, weight, stride, padding, dilation, output_padding)
    gx, gw, gb = _conv_transpose2d_backward("conv_transpose1d_backward", True, grad_output, x2,
                                            w2, s2, p2, op2, d2, groups, algorithm, needs)
    return _squeeze_h(gx), None if gw is None else gw[0], gb
