"""Argument normalisation and validation: every check of the public API lives here.

Pure Python. Each function takes the user's value and either returns it in one canonical form
or raises ValueError/TypeError naming the argument, what was expected and what was got.
"""
from __future__ import annotations

import math
import numbers
import operator
import os
from dataclasses import dataclass

import numpy as np

PADDING_MODES = ("zeros", "reflect", "symmetric", "replicate", "circular")
# np.pad's name for each padding mode
NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric",
                  "replicate": "edge", "circular": "wrap"}


def _is_int(value) -> bool:
    # a plain int first: the ABC check below costs a microsecond, at every argument of every
    # call
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, (bool, np.bool_)))


# every int argument must fit the kernels' 64-bit sizes and indices
INT_LIMIT = 2**63 - 1


def as_int(name: str, value, minimum: int | None = None) -> int:
    """A Python int >= minimum and within int64 (bools and floats are refused): the one
    place where integer arguments are normalised, so none reaches compiled code out of range."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, but got {value!r} of type {type(value).__name__}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, but got {value}")
    if not -INT_LIMIT - 1 <= value <= INT_LIMIT:
        raise ValueError(f"{name} must be at most 2**63 - 1 in magnitude (a 64-bit integer), "
                         f"but got {value}")
    return value


# More threads than this are refused (set_num_threads, num_threads) or, from OpenMP's default
# (OMP_NUM_THREADS), capped: a thread per core is the useful most, and OpenMP runtimes
# crash or abort when asked for tens of thousands
MAX_THREADS = 4 * (os.cpu_count() or 1)


def as_thread_count(name: str, value) -> int:
    """A thread count: an int in [1, MAX_THREADS] (4 x os.cpu_count())."""
    n = as_int(name, value, 1)
    if n > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS} (4 x os.cpu_count() = "
                         f"4 x {os.cpu_count()}), but got {n}")
    return n


def as_tuple(name: str, value, length: int, minimum: int | None = None) -> tuple[int, ...]:
    """An int (repeated) or a sequence of `length` ints, each >= minimum."""
    if _is_int(value):
        return (as_int(name, value, minimum),) * length
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == length:
        return tuple(as_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
    what = "an int or a 1-tuple" if length == 1 else f"an int or a sequence of {length} ints"
    raise TypeError(f"{name} must be {what}, but got {value!r}")


def as_pair(name: str, value, minimum: int | None = None) -> tuple[int, int]:
    return as_tuple(name, value, 2, minimum)


def float_dtype(*arrays) -> np.dtype:
    """The computing dtype: NumPy's promotion of the arrays (checked by as_array) with float32,
    so float32 or float64."""
    return np.result_type(*[a.dtype for a in arrays], np.float32)


def as_array(name: str, value) -> np.ndarray:
    """Any array-like as an ndarray (not yet converted), refusing non-numeric data."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, but np.asarray failed: {exc}") from None
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "f" and arr.dtype.itemsize > 8):
        raise TypeError(f"{name} must hold real numbers of at most 64 bits (float32 and float64 "
                        f"are computed natively), but got an array of dtype {arr.dtype}")
    return arr


def check_ndim(name: str, arr: np.ndarray, ndims: tuple[int, ...], layout: str) -> None:
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"expected {name} to be {want} {layout}, but got a {arr.ndim}-D array "
                         f"of shape {arr.shape}")


# ----------------------------------------------------------------------------------------------
# padding

def padding_pairs(padding, kernel_hw, stride, dilation, input_hw) -> tuple[tuple[int, int], ...]:
    """Normalise a padding spec to ((top, bottom), (left, right)) (one pair per spatial axis).

    int | (ph, pw) | ((top, bottom), (left, right)) | "valid" | "same" (output = ceil(in/stride),
    the odd pixel at the bottom/right).
    """
    nd = len(kernel_hw)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            pairs = []
            for k, s, d, n in zip(kernel_hw, stride, dilation, input_hw):
                out = -(-n // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"padding must be an int, a pair, pairs of pairs, 'valid' or 'same', "
                         f"but got {padding!r}")
    if _is_int(padding):
        p = as_int("padding", padding, 0)
        return ((p, p),) * nd
    if isinstance(padding, (tuple, list)) and len(padding) == nd:
        pairs = []
        for i, item in enumerate(padding):
            if _is_int(item):
                p = as_int(f"padding[{i}]", item, 0)
                pairs.append((p, p))
            else:
                pairs.append(as_tuple(f"padding[{i}]", item, 2, 0))
        return tuple(pairs)
    raise TypeError(f"padding must be an int, a sequence of {nd} ints or of {nd} (before, after) "
                    f"pairs, 'valid' or 'same', but got {padding!r}")


def padding_mode(mode) -> str:
    if mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, but got {mode!r}")
    return mode


def conv_output_size(n: int, pad: tuple[int, int], k: int, s: int, d: int) -> int:
    """floor((in + pad_total - dilation*(k-1) - 1) / stride) + 1 (may be < 1)."""
    return (n + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


# ----------------------------------------------------------------------------------------------
# the geometry of one convolution, checked once

@dataclass(frozen=True)
class ConvGeometry:
    """A checked 2-D convolution: the input x (N, H, W, C_in) -> y (N, Ho, Wo, C_out).

    For a transposed convolution this describes the convolution it is the adjoint of, so
    x is its output and y its input. stride and dilation are the effective ones (1 where
    they cannot matter, see _effective).
    """
    n: int
    in_hw: tuple[int, int]
    in_channels: int
    kernel_hw: tuple[int, int]
    out_channels: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    groups: int
    out_hw: tuple[int, int]

    @property
    def padded_hw(self) -> tuple[int, int]:
        return tuple(n + p[0] + p[1] for n, p in zip(self.in_hw, self.padding))

    @property
    def flops(self) -> int:
        """2 * multiply-adds of the direct convolution."""
        return (2 * self.n * math.prod(self.out_hw) * self.out_channels
                * (self.in_channels // self.groups) * math.prod(self.kernel_hw))


def is_1d(fn: str) -> bool:
    """Whether `fn` is one of the 1-D functions (conv1d, conv_transpose1d and their
    backward), which run as 2-D with H = 1 but must word their errors in 1-D."""
    return "1d" in fn


def shown_sizes(fn: str, sizes) -> str:
    """Spatial sizes (H, W) as the caller knows them: (L,) for a 1-D function."""
    return f"({sizes[-1]},) (L)" if is_1d(fn) else f"{tuple(sizes)} (H, W)"


def shown_param(fn: str, pair) -> str:
    """A per-axis parameter (stride, dilation, ...) as the caller knows it: an int in 1-D."""
    return str(pair[-1]) if is_1d(fn) else str(tuple(pair))


def check_weight(fn: str, weight: np.ndarray, x_shape, groups: int, transposed: bool) -> None:
    """The weight against the input x (N, H, W, C).

    conv2d: weight (kh, kw, C // groups, C_out), C_out divisible by groups.
    conv_transpose2d: weight (kh, kw, C_out // groups, C), C divisible by groups.
    A 1-D function's weight and x (kh = H = 1 added) are shown as the caller passed them.
    """
    if is_1d(fn):
        layout = ("(k, C_out // groups, C_in)" if transposed else "(k, C_in // groups, C_out)")
        shape, x_shown, x_layout = weight.shape[1:], (x_shape[0], *x_shape[2:]), "[NLC]"
    else:
        layout = ("(kh, kw, C_out // groups, C_in) [HWIO of the convolution it is the adjoint "
                  "of]" if transposed else "(kh, kw, C_in // groups, C_out) [HWIO]")
        shape, x_shown, x_layout = weight.shape, tuple(x_shape), "[NHWC]"
        check_ndim("weight", weight, (4,), layout)
    if min(weight.shape[:2]) < 1:  # channel counts may be 0 (empty sums, PyTorch allows C_in 0)
        raise ValueError(f"{fn}: weight of shape {shape} {layout} must have kernel sizes "
                         f"{'k' if is_1d(fn) else 'kh, kw'} >= 1")
    channels = x_shape[3]
    if transposed:
        expected, divided = weight.shape[3], weight.shape[3]
    else:
        expected, divided = weight.shape[2] * groups, weight.shape[3]
    if divided % groups:
        raise ValueError(f"{fn}: weight of shape {shape} {layout} has {divided} "
                         f"{'input' if transposed else 'output'} channels, which is not "
                         f"divisible by groups={groups}")
    if channels != expected:
        raise ValueError(f"{fn}: given groups={groups}, weight of shape {shape} "
                         f"{layout}, expected input {x_shown} {x_layout} to have {expected} "
                         f"channels, but got {channels} channels instead")


def _effective(stride, dilation, kernel_hw, out_hw):
    """The stride and dilation the kernels get: 1 where they cannot change the result (one
    output pixel along the axis; a kernel one tap wide), so that no index arithmetic ever
    multiplies by a huge value."""
    return (tuple(1 if o == 1 else s for s, o in zip(stride, out_hw)),
            tuple(1 if k == 1 else d for d, k in zip(dilation, kernel_hw)))


def check_output_size(fn: str, n: int, out_hw, channels: int) -> None:
    """An output too large for any array (more than 2**63 bytes of float64) is refused here,
    naming the arguments that make it so, instead of in NumPy's allocator."""
    elements = n * math.prod(out_hw) * channels
    if elements * 8 > INT_LIMIT:
        raise ValueError(f"{fn}: the output would have {shown_sizes(fn, tuple(out_hw))} pixels "
                         f"per image ({elements} values in all), more than any array can hold; "
                         f"check padding, stride and dilation")


def conv_geometry(fn: str, x_shape, weight_shape, stride, padding, dilation, groups
                  ) -> ConvGeometry:
    """Check and resolve the geometry of conv2d(x, weight) with x 4-D (N, H, W, C)."""
    stride = as_pair("stride", stride, 1)
    dilation = as_pair("dilation", dilation, 1)
    groups = as_int("groups", groups, 1)
    n, h, w, c = x_shape
    kh, kw, cig, cout = weight_shape
    pads = padding_pairs(padding, (kh, kw), stride, dilation, (h, w))
    out_hw = tuple(conv_output_size(size, p, k, s, d) for size, p, k, s, d
                   in zip((h, w), pads, (kh, kw), stride, dilation))
    if min(out_hw) < 1:
        padded = tuple(size + p[0] + p[1] for size, p in zip((h, w), pads))
        dilated = tuple(d * (k - 1) + 1 for k, d in zip((kh, kw), dilation))
        raise ValueError(f"{fn}: padded input size {shown_sizes(fn, padded)} is smaller than "
                         f"the dilated kernel size {shown_sizes(fn, dilated)}: the output would "
                         f"be {shown_sizes(fn, out_hw)}")
    check_output_size(fn, n, out_hw, cout)
    return ConvGeometry(n, (h, w), c, (kh, kw), cout, *_effective(stride, dilation, (kh, kw), out_hw),
                        pads, groups, out_hw)


def conv_transpose_geometry(fn: str, x_shape, weight_shape, stride, padding, output_padding,
                            dilation, groups) -> ConvGeometry:
    """Check and resolve conv_transpose2d(x, weight): returns the geometry of the convolution
    it is the adjoint of (whose input has the transposed convolution's output size)."""
    stride = as_pair("stride", stride, 1)
    dilation = as_pair("dilation", dilation, 1)
    groups = as_int("groups", groups, 1)
    output_padding = as_pair("output_padding", output_padding, 0)
    n, h, w, c = x_shape
    kh, kw, cig_t, cin = weight_shape  # cin: the transposed conv's input channels
    if isinstance(padding, str) and padding == "same":
        raise ValueError(f"{fn}: padding='same' is not defined for a transposed convolution; "
                         f"give the padding to crop as ints or pairs")
    pads = padding_pairs(padding, (kh, kw), stride, dilation, (h, w))
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op >= s and op >= d:
            raise ValueError(f"{fn}: output_padding must be smaller than either stride or "
                             f"dilation, but got output_padding={shown_param(fn, output_padding)}"
                             f", stride={shown_param(fn, stride)}, "
                             f"dilation={shown_param(fn, dilation)}")
    out_hw = tuple((size - 1) * s - p[0] - p[1] + d * (k - 1) + op + 1 for size, p, k, s, d, op
                   in zip((h, w), pads, (kh, kw), stride, dilation, output_padding))
    if min(out_hw) < 1:
        full = tuple(o + p[0] + p[1] for o, p in zip(out_hw, pads))
        raise ValueError(f"{fn}: padding {pads[-1] if is_1d(fn) else pads} crops more than the "
                         f"full output {shown_sizes(fn, full)}: the output would be "
                         f"{shown_sizes(fn, out_hw)}")
    check_output_size(fn, n, out_hw, cig_t * groups)
    return ConvGeometry(n, out_hw, cig_t * groups, (kh, kw), c,
                        *_effective(stride, dilation, (kh, kw), (h, w)), pads, groups, (h, w))


# ----------------------------------------------------------------------------------------------
# conv_matrix and filters (fastconv.matrix, fastconv.filters)

def as_shape(name: str, value, ndims: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """A shape: a sequence of ndims[i] ints, each >= 0."""
    if not isinstance(value, (tuple, list)) or len(value) not in ndims:
        want = " or ".join(str(d) for d in ndims)
        raise ValueError(f"expected {name} to be a sequence of {want} ints {layout}, but got "
                         f"{value!r}")
    return tuple(as_int(f"{name}[{i}]", v, 0) for i, v in enumerate(value))


def as_positive_real(name: str, value) -> float:
    """A finite real number > 0 (bools refused)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, but got {value!r} of type "
                        f"{type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, but got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# pooling, layers, optimisers and losses

def as_bool(name: str, value) -> bool:
    """A Python bool (0/1 and other truthy values are refused, to catch swapped arguments)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, but got {value!r} of type {type(value).__name__}")
    return bool(value)


@dataclass(frozen=True)
class PoolGeometry:
    """A checked 2-D pooling: x (N, H, W, C) -> y (N, Ho, Wo, C), padding ((top, bottom),
    (left, right)); stride and dilation are the effective ones (see _effective)."""
    n: int
    in_hw: tuple[int, int]
    channels: int
    kernel_hw: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    ceil_mode: bool
    out_hw: tuple[int, int]

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, *self.out_hw, self.channels)


def pool_output_size(n: int, k: int, s: int, p: tuple[int, int], d: int, ceil_mode: bool) -> int:
    """PyTorch's (and ONNX's) pooling output size, padding p = (before, after): floor (or
    ceil) of (in + before + after - d*(k-1) - 1) / s, plus one; in ceil mode a last window
    that would start in the right/bottom padding is dropped."""
    span = n + p[0] + p[1] - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p[0]:
        out -= 1
    return out


def pool_padding(fn: str, padding, kernel_hw, stride, dilation, in_hw) -> tuple:
    """A pooling's padding as ((top, bottom), (left, right)). PyTorch's forms, an int or a
    pair (ph, pw) added on both sides, keep PyTorch's rule: at most half of the dilated
    kernel. ONNX's and Keras's forms take any size: explicit pairs ((top, bottom),
    (left, right)) (ONNX's pads), "same" (output ceil(in / stride), the odd padding at the
    bottom/right: Keras, ONNX SAME_UPPER) and "valid"."""
    if isinstance(padding, (tuple, list)) and len(padding) == 1 and _is_int(padding[0]):
        padding = padding[0]  # PyTorch's 1-tuple: both axes
    pytorch_form = _is_int(padding) or (isinstance(padding, (tuple, list)) and len(padding) == 2
                                        and all(_is_int(p) for p in padding))
    if not (pytorch_form or isinstance(padding, str) or (
            isinstance(padding, (tuple, list)) and len(padding) == 2)):
        raise TypeError(f"{fn}: padding must be an int or a pair (added on both sides, as in "
                        f"PyTorch), ((top, bottom), (left, right)), 'same' or 'valid', but got "
                        f"{padding!r}")
    try:
        pairs = padding_pairs(padding, kernel_hw, stride, dilation, in_hw)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{fn}: {exc}") from None
    if pytorch_form:
        for axis, k, (p, _), d in zip("HW", kernel_hw, pairs, dilation):
            effective = d * (k - 1) + 1
            if 2 * p > effective:
                shown = tuple(p for p, _ in pairs)
                raise ValueError(
                    f"{fn}: padding must be at most half of the dilated kernel size (PyTorch's "
                    f"rule; pass ((top, bottom), (left, right)) for ONNX's larger pads), but "
                    f"got padding={shown}, kernel_size={tuple(kernel_hw)}, "
                    f"dilation={tuple(dilation)} (on {axis}: {p} > {effective} / 2)")
    return pairs


def _pool_pair(name: str, value, minimum: int) -> tuple[int, int]:
    """PyTorch's forms of a 2-D pooling size: an int, a 1-tuple (used for both axes) or a
    pair."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return as_pair(name, value, minimum)


def pool_pairs(kernel_size, stride, dilation) -> tuple[tuple[int, int], ...]:
    """(kernel_size, stride, dilation) of a 2-D pooling as pairs, in PyTorch's forms: each an
    int, a 1-tuple or a pair; stride None or empty (`()`, `[]`) means kernel_size."""
    kernel_hw = _pool_pair("kernel_size", kernel_size, 1)
    empty = isinstance(stride, (tuple, list)) and len(stride) == 0
    stride_hw = kernel_hw if stride is None or empty else _pool_pair("stride", stride, 1)
    return kernel_hw, stride_hw, _pool_pair("dilation", dilation, 1)


def pool_geometry(fn: str, x_shape, kernel_size, stride, padding, dilation, ceil_mode
                  ) -> PoolGeometry:
    """Check and resolve the geometry of a 2-D pooling of x (N, H, W, C), PyTorch's rules
    (ONNX's for explicit pairs of pads, see pool_padding): stride None means kernel_size;
    the output must be at least 1 x 1."""
    kernel_hw, stride, dilation = pool_pairs(kernel_size, stride, dilation)
    ceil_mode = as_bool("ceil_mode", ceil_mode)
    n, h, w, c = x_shape
    padding = pool_padding(fn, padding, kernel_hw, stride, dilation, (h, w))
    out_hw = tuple(pool_output_size(size, k, s, p, d, ceil_mode) for size, k, s, p, d
                   in zip((h, w), kernel_hw, stride, padding, dilation))
    if min(out_hw) < 1:
        padded = (h + sum(padding[0]), w + sum(padding[1]))
        dilated = tuple(d * (k - 1) + 1 for k, d in zip(kernel_hw, dilation))
        raise ValueError(f"{fn}: padded input size {padded} (H, W) is smaller than the dilated "
                         f"kernel size {dilated} (H, W): the output would be {out_hw}")
    check_output_size(fn, n, out_hw, c)
    return PoolGeometry(n, (h, w), c, kernel_hw, *_effective(stride, dilation, kernel_hw, out_hw),
                        padding, ceil_mode, out_hw)


def check_grad_shape(fn: str, name: str, arr: np.ndarray, expected: tuple, layout: str) -> None:
    """An array (a gradient, or max-pool indices) must have the forward output's shape."""
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{fn}: expected {name} of shape {tuple(expected)} {layout} (the shape "
                         f"of the forward output), but got {tuple(arr.shape)}")


# layers, optimizer and loss (fastconv.layers, fastconv.optim, fastconv.losses)

def as_float(name: str, value, minimum: float | None = None) -> float:
    """A finite real number >= minimum."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, but got {value!r} of type "
                        f"{type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum}, but got {value}")
    return value


def as_float_in(name: str, value, low: float, high: float, include_low: bool = True,
                include_high: bool = True) -> float:
    """A real number between low and high, each end included or not (PyTorch's ranges of
    optimizer and scheduler arguments)."""
    value = as_float(name, value)
    above = value >= low if include_low else value > low
    below = value <= high if include_high else value < high
    if not (above and below):
        interval = f"{'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
        raise ValueError(f"{name} must be in {interval}, but got {value}")
    return value


def layer_dtype(dtype) -> np.dtype:
    """A layer's parameter dtype: float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be np.float32 or np.float64, but got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be np.float32 or np.float64, but got {dt}")
    return dt


def as_rng(rng) -> np.random.Generator:
    """None (fresh entropy), an int seed or a np.random.Generator, as a Generator."""
    if rng is None or _is_int(rng):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a np.random.Generator, but got "
                    f"{rng!r} of type {type(rng).__name__}")


def check_divisible(name: str, value: int, groups: int) -> None:
    if value % groups:
        raise ValueError(f"{name} must be divisible by groups={groups}, but got {value}")


def check_channels(layer: object, x: np.ndarray, channels: int,
                   ndims: tuple[int, ...] | None, layout: str, what: str = "channels") -> None:
    """A layer's input: the right number of dimensions (None: any but 0) and `channels`
    along the last one. `layer` names it in errors (a string, or the layer: its repr)."""
    if ndims is not None:
        check_ndim("input", x, ndims, layout)
    elif x.ndim == 0:
        raise ValueError(f"{layer} expected input {layout}, but got a 0-D array")
    if x.shape[-1] != channels:
        raise ValueError(f"{layer} expected input {layout} with {channels} {what} in its "
                         f"last dimension, but got input of shape {x.shape} with "
                         f"{x.shape[-1]} {what} instead")


def class_labels(fn: str, target, n: int, classes: int) -> np.ndarray:
    """Integer class labels, one per row of an (n, classes) logits array, each in [0, classes)."""
    labels = as_array("target", target)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, but got dtype "
                        f"{labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{fn}: expected target of shape ({n},) (one class index per row of "
                         f"the logits), but got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{fn}: target class indices must be in [0, {classes}), but got values "
                         f"in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.intp, copy=False)
