"""Plans: a convolution prepared once, run many times (XNNPACK's create / reshape / run).

A ConvPlan holds what fastconv.functional derives on every call - the checked geometry, the
computing dtype, the algorithm "auto" (or the autotuner) picks, the kernel's tiles and thread
count - for one layer configuration, input shape, input dtype and thread count. A layer keeps
its plans per input shape (`plan_for`), so a planned call only checks its input and runs the
kernel.

Packed weights (functional.prepare_weight: Winograd's transformed weight, the blocked
kernel's blocks, the direct kernel's channel-padded weight) live in a `Packs` cache on the
layer, keyed by algorithm and dtype, valid while the weight and bias are the same array
objects at the same VERSION. A version is a per-array counter: `bump(array)` raises it, and
every supported way of changing weights bumps it - Optimizer.step() and
Layer.load_state_dict(). A plain layer's cache also compares the values (Packs(verify=True)),
so an in-place edit by hand is always seen; the layers of an optimize_for_inference model
skip that read of their weights, and code that writes into them by hand
(`layer.weight[...] = ...`) calls `fastconv.weights_changed(model)` once afterwards
(assigning a new array, `layer.weight = w`, needs nothing).

The planned path runs the same kernels with the same arguments as fastconv.functional, so
its results are the same bits.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastconv import _algorithms, _autotune, _memory, _params, functional
from fastconv._threads import get_num_threads, place_workers

_scan = _algorithms.best_simd("_scan")

# ----------------------------------------------------------------------------------------------
# weight versions

_versions: dict[int, int] = {}  # id(array) -> version; only arrays ever bumped are here
_changes = 0  # weight versions raised and inference layers' settings set (see changes())


def bump(*arrays) -> None:
    """Mark arrays as changed in place: packs made from them are rebuilt at their next use.
    (A stale entry of a freed array is harmless: a pack holds its array, so its id is never
    reused while the pack lives, and versions only grow.)"""
    global _changes
    _changes += 1
    for a in arrays:
        if a is not None:
            _versions[id(a)] = _versions.get(id(a), 0) + 1


def note_change() -> None:
    """Count a change of an inference layer's settings (FusedConv and PostOps call it when
    an attribute is set)."""
    global _changes
    _changes += 1


def changes() -> tuple:
    """What every kept kernel call of an inference layer was made under: the count of weight
    bumps and inference-layer setting changes so far, and the settings plan_for reads
    besides the layer and the input (settings()). While it stays the same, such a call
    computes what a new plan_for and bind would (InferenceGraph's replay checks it once per
    pass instead of at every node)."""
    return _changes, settings()


def settings() -> tuple:
    """The process-wide settings a plan depends on: the thread count (of this Python thread),
    autotune and whether "auto" may choose Winograd."""
    return get_num_threads(), _autotune.get_autotune(), _algorithms.get_auto_winograd()


def version(a) -> int:
    return _versions.get(id(a), 0)


def weights_changed(model) -> None:
    """Tell fastconv that the weights of `model` (a layer of an optimize_for_inference model,
    such a model, or an array) were changed in place by hand, e.g. `layer.weight[...] = w` or
    `layer.weight *= 2`: packed weights made from them are rebuilt at the next call. Optimizer.step() and load_state_dict() do this
    themselves; assigning a new array (`layer.weight = w`) needs nothing.

    Raises TypeError for anything but a fastconv layer or a NumPy array."""
    if isinstance(model, np.ndarray):
        bump(model)
        return
    if not (hasattr(model, "parameters") and hasattr(model, "buffers")):
        raise TypeError(f"weights_changed: expected a fastconv layer or a NumPy array, but got "
                        f"{type(model).__name__}")
    for _, value, _ in model.parameters():
        bump(value)
    for _, value in model.buffers():
        bump(value)


class Packs:
    """Packed forms of a layer's weight, per (algorithm, dtype): each kept with the weight and
    bias objects and versions it was made from, and made again when one of them changed.
    With verify=True (plain layers) the values are compared too, against a copy of them:
    any change, in place or not, is then seen without weights_changed, for the cost of
    reading the weight once per call (less than packing it again). The copy is taken when a
    pack is first asked for again at the same version, which it then makes anew: a training
    loop, whose optimizer changes the version before every call, never copies."""

    def __init__(self, verify: bool = False) -> None:
        self._store: dict[Any, tuple] = {}
        self.verify = verify

    def get(self, key, weight: np.ndarray, bias: np.ndarray | None, make):
        stamp = (version(weight), None if bias is None else version(bias))
        weight_of, bias_of, stamp_of, packed, values = self._store.get(key, (None,) * 5)
        same_version = weight_of is weight and bias_of is bias and stamp_of == stamp
        if same_version and (not self.verify or (
                values is not None and _same_values(values, weight, bias))):
            return packed
        # copied before make(): were the values changed meanwhile, the next call repacks
        values = ((weight.copy(), None if bias is None else np.array(bias))
                  if self.verify and same_version else None)
        packed = make()
        self._store[key] = (weight, bias, stamp, packed, values)
        return packed

    def keys(self) -> list:
        return list(self._store)

    def clear(self) -> None:
        self._store.clear()


def _same_values(values, weight: np.ndarray, bias) -> bool:
    """Whether weight and bias still hold the values copied into `values`, bit for bit (a
    NaN equals itself; -0.0 and 0.0 differ, which only costs a pack)."""
    return _same_bytes(values[0], weight) and (bias is None or _same_bytes(values[1], bias))


# up to this size two copies to bytes cost less than the kernel call (np.array_equal's own
# overhead was 4 us; 0.5 us for a 2 KiB weight, measured on an AMD EPYC Zen 4)
_SMALL_BYTES = 16384


def _same_bytes(a, b) -> bool:
    """Whether a and b hold the same bits (np.array_equal on floats would take NaN for
    unequal to itself): small arrays as bytes objects, others by memcmp on the threads of
    get_num_threads() (_kernels._scan; a strided one copied first)."""
    a, b = np.asarray(a), np.asarray(b)  # a bias may be given as a list
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.nbytes <= _SMALL_BYTES:
        return a.tobytes() == b.tobytes()
    threads = get_num_threads()
    place_workers(threads)
    return _scan.same_bytes(np.ascontiguousarray(a).reshape(-1).view(np.uint8),
                            np.ascontiguousarray(b).reshape(-1).view(np.uint8), threads)


# ----------------------------------------------------------------------------------------------
# plans

KINDS = ("conv2d", "conv_transpose2d")


class ConvPlan:
    """A 2-D convolution (kind "conv2d") or transposed convolution ("conv_transpose2d") of
    one configuration on inputs of one shape (N, H, W, C) and dtype at one thread count.

    run(x, weight, bias, packs, out=None) -> y (N, H_out, W_out, C_out), the layer's
    forward; describe() -> dict (see there). Built by plan_for; errors of the configuration
    against the input (ValueError/TypeError, the functional API's) are raised when built.
    `weight_kept`: the layer keeps its weight as the kernel takes it from call to call (an
    inference graph's convolution; "auto" then counts a weight transform as paid once)."""

    def __init__(self, kind: str, x_shape, x_dtype, weight: np.ndarray, bias, stride, padding,
                 dilation, groups, algorithm, padding_mode="zeros", output_padding=0,
                 weight_kept: bool = False):
        self.kind = kind
        self.weight_kept = weight_kept
        self.x_shape = tuple(x_shape)
        self.weight_shape = weight.shape
        self._args = (stride, padding, dilation, groups, algorithm, padding_mode, output_padding)
        transposed = kind == "conv_transpose2d"
        fn = kind
        groups = _params.as_int("groups", groups, 1)
        _params.check_weight(fn, weight, self.x_shape, groups, transposed)
        if transposed:
            geo = _params.conv_transpose_geometry(fn, self.x_shape, weight.shape, stride,
                                                  padding, output_padding, dilation, groups)
            out_channels = geo.in_channels
            self.out_shape = (geo.n, *geo.in_hw, geo.in_channels)
            self.mode = "zeros"
        else:
            self.mode = _params.padding_mode(padding_mode)
            geo = _params.conv_geometry(fn, self.x_shape, weight.shape, stride, padding,
                                        dilation, groups)
            functional._check_copied_padding(fn, self.mode, geo)
            out_channels = geo.out_channels
            self.out_shape = (geo.n, *geo.out_hw, geo.out_channels)
        if bias is not None and np.shape(bias) != (out_channels,):
            raise ValueError(f"{fn}: expected bias of shape ({out_channels},), but got "
                             f"{np.shape(bias)}")
        self.geo = geo
        self.requested = _algorithms.check(fn, algorithm, geo)
        self.dtype = np.result_type(x_dtype, weight.dtype, np.float32)
        self.threads = get_num_threads()
        self.computes = (math.prod(self.out_shape) > 0 and math.prod(self.x_shape) > 0
                         and weight.size > 0)
        # the zero padding the kernels skip (top, left); other modes are padded per call
        self.offsets = ((geo.padding[0][0], geo.padding[1][0])
                        if self.mode == "zeros" else (0, 0))
        self.direction = "input_gradient" if transposed else "forward"
        self.dtype_name = self.dtype.name
        self.algorithm = self._resolve()

    # -- choosing -------------------------------------------------------------------------
    def _resolve(self) -> str | None:
        """The concrete algorithm (None: the autotuner has yet to measure this geometry; the
        unplanned path measures it at the first call)."""
        if self.requested != "auto":
            return self.requested
        if _autotune.get_autotune():
            return _autotune.lookup(self.direction, self.geo, self.dtype, self.threads)
        if self.kind == "conv_transpose2d":
            return "auto"  # its sub-pixel phases each follow the rule (functional._data_kernel)
        weight_shape = (*self.geo.kernel_hw, self.geo.in_channels // self.geo.groups,
                        self.geo.out_channels)
        return _algorithms.for_convolution("auto", weight_shape, self.out_shape,
                                           self.dtype.itemsize, self.geo.stride,
                                           self.geo.dilation, self.geo.groups,
                                           self.weight_kept)

    def describe(self) -> dict:
        """{"kind", "input_shape", "output_shape", "dtype", "threads", "stride", "padding"
        ((top, bottom), (left, right)), "dilation", "groups", "algorithm" (as requested),
        "forward" (the kernel this plan runs, "auto" for a transposed convolution's
        per-phase rule), "reason", "input_gradient", "weight_gradient" ((kernel, reason) of
        "auto" for backward)}."""
        geo = self.geo
        chosen = _algorithms.describe(geo, self.dtype, self.threads, self.weight_kept)
        runs = chosen[self.direction]
        reason = "requested" if self.requested != "auto" else runs[1]
        return {"kind": self.kind, "input_shape": self.x_shape, "output_shape": self.out_shape,
                "dtype": self.dtype.name, "threads": self.threads,
                "stride": tuple(geo.stride), "padding": tuple(map(tuple, geo.padding)),
                "dilation": tuple(geo.dilation), "groups": geo.groups,
                "algorithm": self.requested, "forward": self.algorithm, "reason": reason,
                "input_gradient": chosen["forward" if self.kind == "conv_transpose2d"
                                         else "input_gradient"],
                "weight_gradient": chosen["weight_gradient"]}

    # -- running --------------------------------------------------------------------------
    def prepared(self, algo: str, weight: np.ndarray, bias, packs: Packs
                  ) -> functional.PreparedWeight:
        """The weight as `algo`'s kernel takes it, from the layer's cache."""
        dtype = self.dtype
        return packs.get((algo, self.dtype_name), weight, bias, lambda: functional.prepare_weight(
            algo, weight if weight.dtype == dtype else weight.astype(dtype),
            functional._bias_arg(bias, dtype), self.geo.groups))

    def run(self, x: np.ndarray, weight: np.ndarray, bias, packs: Packs,
            out: np.ndarray | None = None, post=None) -> np.ndarray:
        """y = the convolution of x (4-D, of the planned shape) with weight and bias, into
        `out` (C-contiguous, of the output's shape and dtype) when given. `post`: an
        _epilogue.Epilogue for y, applied by the kernel as it stores (see fuses_post)."""
        if post is not None and not self.fuses_post:
            raise ValueError(f"{self.kind}: this plan takes no post-op chain (see fuses_post)")
        y = _memory.empty(self.out_shape, self.dtype) if out is None else out
        if not self.computes:
            y[...] = 0 if bias is None else bias
            return y
        if self.algorithm is None:  # autotune: measure through the unplanned path once
            y[...] = self._unplanned(x, weight, bias)
            self.algorithm = self._resolve()
            return y
        dtype = self.dtype
        if self.kind == "conv_transpose2d":
            w, b = packs.get(("transposed", self.dtype_name), weight, bias,
                             lambda: (np.ascontiguousarray(weight, dtype),
                                      functional._bias_arg(bias, dtype)))
            xin = x if x.dtype == dtype and x.flags.c_contiguous else np.ascontiguousarray(x, dtype)
            functional._data_kernel(self.algorithm, xin, w, b, y, self.geo, self.offsets)
            return y
        if self.mode == "zeros":
            xin = x if x.dtype == dtype and x.flags.c_contiguous else np.ascontiguousarray(x, dtype)
        else:
            xin = functional.pad(x, self.geo.padding, self.mode, dtype)
        self._forward_call(self.algorithm, xin, weight, bias, packs, y, post)()
        return y

    def bind(self, x: np.ndarray, weight: np.ndarray, bias, packs: Packs, out: np.ndarray,
             post=None):
        """run(x, weight, bias, packs, out, post) with everything decided and the kernel's
        arguments fixed (functional.bind_forward): calling the result computes out from x's
        current values. Only for what runs one forward kernel on x as it is (a convolution
        with zero padding whose kernel is known, x of the plan's dtype and C-contiguous);
        None otherwise. It holds the packed weight of this call: bind again once the weight
        or bias changed."""
        algo = self.algorithm
        if (algo is None or not self.fuses_post or self.mode != "zeros" or x.dtype != self.dtype
                or not x.flags.c_contiguous):
            return None
        return self._forward_call(algo, x, weight, bias, packs, out, post)

    def _forward_call(self, algo: str, x: np.ndarray, weight: np.ndarray, bias, packs: Packs,
                      y: np.ndarray, post):
        """`algo`'s forward kernel call on x (zero-padded by the plan's offsets) into y, bound
        (functional.bind_forward)."""
        geo = self.geo
        return functional.bind_forward(
            self.prepared(algo, weight, bias, packs), x, self.offsets, y,
            geo.stride, geo.dilation, geo.groups,
            lambda other: self.prepared(other, weight, bias, packs), post)

    def backward(self, grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray, needs,
                 grad_weight_into=None) -> tuple:
        """(grad_input, grad_weight, grad_bias) of a "conv2d" plan's forward at x (4-D, of
        the planned shape) given grad_output (4-D, of the output's shape), as
        functional.conv2d_backward returns them (with grad_weight_into, see there), without
        checking and deriving again what the plan holds (a layer's plan_for gives another
        plan for a weight of another shape or dtype; here that is a ValueError)."""
        if self.kind != "conv2d" or weight.shape != self.weight_shape:
            raise ValueError(f"ConvPlan.backward: a conv2d plan for weights of shape "
                             f"{self.weight_shape}, but this is a {self.kind} plan and the "
                             f"weight has shape {weight.shape}")
        return functional._conv2d_gradients(grad_output, x, weight, self.geo, self.mode,
                                            self.requested, functional._needs(needs),
                                            grad_weight_into)

    @property
    def fuses_post(self) -> bool:
        """Whether run() takes a post-op chain (a convolution whose kernel writes the output
        itself; a transposed one runs per sub-pixel phase, and autotuning measures first)."""
        return self.kind == "conv2d" and self.computes and self.algorithm is not None

    def _unplanned(self, x, weight, bias) -> np.ndarray:
        stride, padding, dilation, groups, algorithm, padding_mode, output_padding = self._args
        if self.kind == "conv_transpose2d":
            return functional.conv_transpose2d(x, weight, bias, stride, padding, output_padding,
                                               dilation, groups, algorithm)
        return functional.conv2d(x, weight, bias, stride, padding, dilation, groups,
                                 padding_mode, algorithm)


def plan_for(layer, x: np.ndarray) -> ConvPlan:
    """The plan of a Conv2d / ConvTranspose2d-like layer (attributes stride, padding,
    dilation, groups, algorithm, weight, bias and padding_mode or output_padding; kind
    `layer._plan_kind`) for the 4-D input x, made at the first call with x's shape and dtype
    (and the current thread count and autotune settings) and kept in `layer._plans`. A
    layer whose class sets `_keeps_weight` (an inference graph's convolution: its weight
    prepared once, see ConvPlan's weight_kept) has its plain convolutions planned so."""
    weight = layer.weight
    kept = getattr(layer, "_keeps_weight", False) and layer._plan_kind == "conv2d"
    key = (x.shape, x.dtype.num, weight.shape, weight.dtype.num, layer.bias is None,
           settings(), layer.stride, repr(layer.padding), layer.dilation, layer.groups,
           layer.algorithm, getattr(layer, "padding_mode", None),
           getattr(layer, "output_padding", None))
    plans = layer.__dict__.get("_plans")
    if plans is None:
        plans = layer._plans = {}
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= MAX_PLANS:  # a layer fed ever new shapes keeps the latest ones
            del plans[next(iter(plans))]
        plan = plans[key] = ConvPlan(layer._plan_kind, x.shape, x.dtype, weight, layer.bias,
                                     layer.stride, layer.padding, layer.dilation, layer.groups,
                                     layer.algorithm, getattr(layer, "padding_mode", "zeros"),
                                     getattr(layer, "output_padding", 0), kept)
    return plan


MAX_PLANS = 16  # per layer


def packs_of(layer, verify: bool = False) -> Packs:
    """The layer's pack cache (made at its first use; see Packs for `verify`)."""
    packs = layer.__dict__.get("_packs")
    if packs is None:
        packs = layer._packs = Packs(verify)
    return packs
