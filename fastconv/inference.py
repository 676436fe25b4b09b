"""The inference form of a model: BatchNorm folded, activations and residual adds fused.

    fast = fastconv.optimize_for_inference(model)   # model itself is left as it is
    y = fast(x)                                     # == model.eval()(x), float32 ~1e-6

optimize_for_inference copies the model in eval mode and flattens its Sequentials and Graphs
(Residual, Parallel, from_torch's graphs, recursively) into one InferenceGraph, whose nodes
carry the original module paths ("layer1.0.body.0"). Then:

- every Conv2d / ConvTranspose2d (DepthwiseConv2d too; a SeparableConv2d's two) and Linear
  becomes a FusedConv;
- a BatchNorm2d (BatchNorm1d after a Linear) in eval mode that only reads such a layer is
  folded into its weight and bias: w' = w * s, b' = (b - mean) * s + beta per output channel,
  s = gamma / sqrt(running_var + eps) (computed in float64);
- the activation that follows (ReLU, ReLU6, LeakyReLU, ELU, SiLU, Hardswish, Hardsigmoid,
  Sigmoid, Tanh, GELU), an Add of the result and another value (ResNet's and MobileNetV2's
  shortcut), and an activation after that add become the layer's post-ops
  (fastconv._postops: bias, scale/shift, act, residual add, act), which the convolution
  kernel applies as it stores its output (a transposed convolution, or a residual that
  broadcasts: one pass after it);
- a depthwise FusedConv whose value only a 1x1 FusedConv reads is joined with it into a
  FusedSeparableConv, one kernel that never stores the depthwise output (see the class);
- Identity and Dropout (the identity in eval mode) are dropped;
- every other layer is kept as it is.

A value used by several nodes, or returned by the model, is never fused into a later node.
The InferenceGraph puts the outputs of FusedConv and FusedSeparableConv nodes, max pooling,
global average pooling and transposes (Permute) in one arena per input signature, laid out
after the first call with it (_BufferPool; 64-byte aligned); the arrays it returns are never in it (copied out where
they were). From the third call with a signature it replays the pass it recorded, each of
those nodes as the kernel call it kept (InferenceGraph._replayed). FusedConv layers keep
plans and packed weights (fastconv._plan), so their folded weights are packed once.
"""
from __future__ import annotations

import contextlib
import copy
import math
import threading
from typing import NamedTuple

import numpy as np

from fastconv import _algorithms, _memory, _params, _plan, functional
from fastconv import layers as L
from fastconv._postops import Activation, PostOps, activation_of
from fastconv._threads import blas_requests, blas_single_thread, few_rows_call, matmul
from fastconv.graph import Add, Graph, Parallel, Permute, Residual

_CONV_KINDS = {L.Conv2d: "conv2d", L.ConvTranspose2d: "conv_transpose2d", L.Linear: "linear"}


class FusedConv(L._SettingsNoted, L.Layer):
    """A convolution (kind "conv2d" or "conv_transpose2d", the configuration of the layer it
    was made from) or a Linear ("linear") with post-ops; inference only (backward raises
    RuntimeError). forward(x) or, when post_ops.residual, forward(x, residual) with residual
    of the output's shape (or one broadcasting to it). Parameters: weight and bias (the folded
    ones, in the original layer's layout); post_ops.bias is always None (the kernel adds the
    bias). `describe(input_shape)` returns the plan's description and the post-ops.
    Its weight is packed once for each algorithm and kept while weight and bias are
    unchanged; writing into them in place needs fastconv.weights_changed(layer) afterwards
    (optimizers and load_state_dict call it themselves)."""

    param_names = ("weight", "bias")
    _output_is_private = True
    # its weight, prepared for the kernel, is kept from call to call (_plan.plan_for)
    _keeps_weight = True

    def __init__(self, layer: L.Layer, post_ops: PostOps | None = None):
        super().__init__()
        kind = next((k for cls, k in _CONV_KINDS.items() if isinstance(layer, cls)), None)
        if kind is None:
            raise TypeError(f"FusedConv: expected a Conv2d, ConvTranspose2d or Linear, but got "
                            f"{type(layer).__name__}")
        self.kind = self._plan_kind = kind
        self.source = type(layer).__name__
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "algorithm", "padding_mode", "output_padding",
                     "in_features", "out_features", "dtype"):
            if hasattr(layer, name):
                setattr(self, name, getattr(layer, name))
        self._init_param("weight", layer.weight)
        self.bias = None
        if layer.bias is not None:
            self._init_param("bias", layer.bias)
        self.post_ops = PostOps() if post_ops is None else post_ops
        self.training = False

    @property
    def channels(self) -> int:
        """The output channels (features)."""
        return self.out_features if self.kind == "linear" else self.out_channels

    @property
    def num_inputs(self) -> int:
        return 2 if self.post_ops.residual else 1

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in ("_plans", "_packs", "_epilogue", "_bound"):
            state.pop(name, None)
        return state

    def forward(self, x, residual=None, *, out: np.ndarray | None = None):
        """The layer's output, into `out` (C-contiguous, of the output's shape and dtype)
        when given."""
        if self.post_ops.residual:
            if residual is None:
                raise TypeError(f"{self!r}: expected two inputs (x, residual), but got one")
            residual = _params.as_array("residual", residual)
        elif residual is not None:
            raise TypeError(f"{self!r}: expected one input, but got two")
        x = _params.as_array("input", x)
        if self.kind == "linear":
            _params.check_channels(self, x, self.in_features, None, "(..., in_features)",
                                   "features")
            dtype = _params.float_dtype(x, self.weight)
            x, w = x.astype(dtype, copy=False), self.weight.astype(dtype, copy=False)
            if residual is None and self.post_ops.is_empty:  # the bias alone: in matmul
                return matmul(x, w, out, bias=self.bias)
            return self._post(matmul(x, w, out), residual, bias=True)
        if x.ndim not in (3, 4) or x.shape[-1] != self.in_channels:
            _params.check_channels(self, x, self.in_channels, (3, 4),
                                   "(H, W, C) or (N, H, W, C) [NHWC]")
        x4 = x[None] if x.ndim == 3 else x
        plan = _plan.plan_for(self, x4)
        if out is not None:  # the kernels write it with bounds checks off
            expected = plan.out_shape[1:] if x.ndim == 3 else plan.out_shape
            if (not isinstance(out, np.ndarray) or out.shape != expected
                    or out.dtype != plan.dtype or not out.flags.c_contiguous):
                got = (f"{out.dtype} array of shape {out.shape}" + (
                    "" if out.flags.c_contiguous else ", not C-contiguous")
                    if isinstance(out, np.ndarray) else type(out).__name__)
                raise ValueError(f"{self!r}: out must be a C-contiguous {plan.dtype} array of "
                                 f"shape {expected}, but got {got}")
            if residual is not None and np.may_share_memory(out, residual):
                raise ValueError(f"{self!r}: out must not overlap the residual (the kernels "
                                 f"read the residual while they write out)")
        if x.ndim == 3:
            residual = None if residual is None else residual[None]
            return self._convolve(x4, residual, None if out is None else out[None], plan)[0]
        return self._convolve(x, residual, out, plan)

    def _convolve(self, x: np.ndarray, residual, out, plan=None) -> np.ndarray:
        """The convolution and its post-ops on a 4-D x (`plan`: x's, when the caller has
        it): the kernel applies them as it stores (a convolution with a residual of the
        output's shape, or none). Else a pass after it, and when the output is larger than
        a quarter of the last-level cache, a few images at a time, so that the pass finds
        them in cache."""
        if plan is None:
            plan = _plan.plan_for(self, x)
        packs = _plan.packs_of(self)
        n = x.shape[0]
        single, post = self._single_call(plan, residual)
        if single:
            return plan.run(x, self.weight, self.bias, packs, out=out, post=post)
        if residual is not None and not _adds_in_place(residual, plan.out_shape, plan.dtype):
            # a residual added into a new array by _post
            return self._post(plan.run(x, self.weight, self.bias, packs, out=out), residual,
                              bias=False)
        image_bytes = math.prod(plan.out_shape[1:]) * plan.dtype.itemsize
        step = max(1, _algorithms.STREAM_BYTES // max(1, image_bytes))
        if step >= n:
            y = plan.run(x, self.weight, self.bias, packs, out=out)
            return self._post(y, residual, bias=False)
        y = _memory.empty(plan.out_shape, plan.dtype) if out is None else out
        for i in range(0, n, step):
            part = _plan.plan_for(self, x[i:i + step])
            part.run(x[i:i + step], self.weight, self.bias, packs, out=y[i:i + step])
            batch_residual = (residual[i:i + step] if residual is not None and residual.ndim == 4
                              and residual.shape[0] == n else residual)
            self._post(y[i:i + step], batch_residual, bias=False)
        return y

    def _inference_kernel(self, x: np.ndarray):
        """A Linear without post-ops besides its bias, on a few rows, as one kernel call
        (_threads.few_rows_call), for an inference graph's arena: (output shape, dtype,
        bind) with bind(x, out) returning the call (None where the kernel does not take
        them); None for a convolution (those run through plans) or other post-ops."""
        if self.kind != "linear" or not self.post_ops.is_empty or x.ndim != 2:
            return None

        def bind(x: np.ndarray, out: np.ndarray):
            return few_rows_call(x, self.weight, self.bias, out)
        return (x.shape[0], self.out_features), self.weight.dtype, bind

    def _kernel_call(self, x: np.ndarray, residual, out: np.ndarray, plan, keep: bool):
        """The kernel call computing out from x (and residual) under `plan` (ConvPlan.bind):
        the one bound when this layer last ran with these same x, residual and out objects
        (an InferenceGraph's arena hands out the same arrays at every call), this plan and
        unchanged weights; bound anew otherwise, and kept for the next call when `keep`.
        None where one bound kernel call is not the whole of _convolve (a pass after the
        kernel, a transposed convolution...): the caller runs _convolve then. The kept call
        holds x, out, the Epilogue, the weight and the bias, so their ids (and the versions
        kept by id) stay theirs while it is kept; pickles and copies leave it out."""
        single, post = self._single_call(plan, residual)
        if not single:
            return None
        w, b = self.weight, self.bias
        key = (plan, id(x), id(out), id(post), _plan.version(w), _plan.version(b))
        kept = self.__dict__.get("_bound")
        if kept is None or kept[0] != key or kept[1] is not w or kept[2] is not b:
            call = plan.bind(x, w, b, _plan.packs_of(self), out, post)
            if call is None:
                return None
            kept = (key, w, b, call)  # w and b held: their ids and versions stay theirs
            self._bound = kept if keep else None
        return kept[3]

    def _single_call(self, plan, residual) -> tuple:
        """(True, the Epilogue or None) when the output is one kernel call of `plan`, the
        post-ops (if any) applied in its stores; (False, None) when they need a pass after
        it (a transposed convolution, a residual that broadcasts or promotes)."""
        if self.post_ops.is_empty and residual is None:
            return True, None
        if plan.fuses_post and (residual is None or (
                residual.shape == plan.out_shape
                and _adds_in_place(residual, plan.out_shape, plan.dtype))):
            return True, self._epilogue_for(plan, residual)
        return False, None

    def _epilogue_for(self, plan, residual):
        """post_ops as the kernels take them (PostOps.epilogue) for this plan's output and
        this residual array, kept while the call repeats (in an InferenceGraph the same
        pooled buffers come back at every call)."""
        ops = self.post_ops
        # the residual by its memory, so that a new view of the same bytes (a caller's own
        # array, refilled) finds it too (the kept Epilogue holds the old view, so the bytes
        # stay alive)
        at = None if residual is None else residual.__array_interface__["data"][0]
        key = (plan.out_shape, plan.dtype, ops.act1, ops.act2, ops.residual, id(ops.scale),
               id(ops.shift), at)
        kept = self.__dict__.get("_epilogue")
        if kept is not None and kept[0] == key and (
                residual is None or (residual.dtype == kept[1].dtype
                                     and residual.shape == kept[1].shape
                                     and residual.flags.c_contiguous)):
            return kept[2]
        post = ops.epilogue(plan.out_shape, plan.dtype, residual)
        # kept only while it reads the caller's array itself: a converted copy (another
        # dtype, a strided view) would go stale when the caller refills the array
        if residual is None or (residual.dtype == plan.dtype and residual.flags.c_contiguous):
            self._epilogue = (key, residual, post)
        return post

    def _post(self, y: np.ndarray, residual, bias: bool) -> np.ndarray:
        """The post-ops on y (bias=True: the bias too) as a pass. A residual that the
        output cannot take in place (a larger shape it broadcasts to, a dtype it promotes
        to) is added as the unfused Add would, into a new array."""
        ops = self.post_ops
        if residual is not None and residual.shape != y.shape:
            try:
                np.broadcast_shapes(residual.shape, y.shape)
            except ValueError:
                raise ValueError(f"{self!r}: the residual of shape {residual.shape} does not "
                                 f"broadcast to the output's shape {y.shape}") from None
        if residual is not None and not _adds_in_place(residual, y.shape, y.dtype):
            PostOps(self.bias if bias else None, ops.scale, ops.shift, ops.act1).apply(y)
            y = np.add(y, residual)
            if y.dtype.kind != "f":  # a float16 sum, say: PostOps runs float32 or float64
                y = y.astype(np.result_type(y, np.float32))
            return PostOps(act1=ops.act2).apply(y) if ops.act2 else y
        if bias and self.bias is not None:
            if ops.is_empty:  # NumPy's add, no pass of the chain
                y += self.bias
                return y
            ops = PostOps(self.bias, ops.scale, ops.shift, ops.act1, ops.residual, ops.act2)
        return y if ops.is_empty else ops.apply(y, residual)

    def backward(self, grad_output):
        raise RuntimeError(f"{type(self).__name__}.backward: a fused layer is for inference "
                           f"only; train the original model")

    def describe(self, input_shape) -> dict:
        """The plan's describe() (fastconv._plan.ConvPlan) for inputs of `input_shape` in the
        layer's dtype, and "post_ops": the fused steps (e.g. ["bias", "relu", "add", "relu"])."""
        post = (["bias"] if self.bias is not None else []) + self.post_ops.names()
        if self.kind == "linear":
            return {"kind": "linear", "input_shape": tuple(input_shape), "post_ops": post}
        shape = tuple(_params.as_tuple("input_shape", input_shape, 4, 0))
        return {**_plan.plan_for(self, _stand_in(shape, self.dtype)).describe(),
                "post_ops": post}

    def extra_repr(self) -> str:
        if self.kind == "linear":
            what = f"in_features={self.in_features}, out_features={self.out_features}"
        else:
            what = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                    f"stride={self.stride}")
            if self.groups != 1:
                what += f", groups={self.groups}"
        post = (["bias"] if self.bias is not None else []) + self.post_ops.names()
        return f"{self.source}: {what}, post_ops=[{', '.join(post)}]"


class _Expansion(NamedTuple):
    """How FusedSeparableConv's expand layer runs for one input shape and dtype."""
    plan: _plan.ConvPlan
    weight: functional.PreparedWeight  # prepared for the blocked kernel where it takes it
    joined: bool  # in the depthwise kernel (else as its own kernel before it)


class _Fusion(NamedTuple):
    """FusedSeparableConv's one-kernel call for one input shape and dtype: the plans and
    weights prepared for the kernel."""
    dw_plan: _plan.ConvPlan
    pw_plan: _plan.ConvPlan
    depthwise: functional.PreparedWeight
    pointwise: functional.PreparedWeight
    expansion: _Expansion | None


class FusedSeparableConv(L._SettingsNoted, L.Layer):
    """A depthwise convolution and the 1x1 convolution that reads its output (a depthwise
    separable convolution, MobileNet's; each a FusedConv with its post-ops), computed as one
    kernel (_direct.depthwise_pointwise): a run of consecutive pixels of the depthwise
    output (rows, or parts of rows) is made in a buffer of its thread and multiplied by the
    1x1 weight at once, so that it never goes to memory (in MobileNetV2 that output is among
    the widest activations). Inference only.

    With `expand` (a 1x1 FusedConv before the depthwise one: MobileNetV2's inverted residual
    block, expand -> depthwise -> project), the kernel is
    _direct.expand_depthwise_pointwise: a thread expands the input rows that its band of
    depthwise rows reads into a buffer of its own, so that the expanded activation (the
    block's widest) does not go to memory either. Where the bands' shared rows would make
    more than _algorithms.EXPAND_MAX_EXTRA of the expansion twice (small images, a batch
    that is not a multiple of the thread count: an image is cut into bands), or the expand
    weight is not finite (the blocked kernel does not take it), the expansion runs as its
    own kernel, into an array of the bound call, before the other two.

    forward(x) or, when the 1x1 has a residual add, forward(x, residual): what
    pointwise(depthwise([expand](x)), residual) gives (the same kernels' arithmetic: the same
    values where those would run the direct and the blocked kernels). The layers run one
    after the other instead where one kernel cannot: fusable() false (a setting changed since), a
    non-finite weight of the 1x1 after the depthwise convolution (the blocked kernel does not
    take it), an input that is not 4-D
    and C-contiguous, or of a dtype the layers compute in another one
    (float16, integers; a float64 input on float32 weights runs as one kernel, in float64),
    or a residual the 1x1 kernel does not add in its stores. Parameters:
    "expand.weight", "expand.bias" (with `expand`), "depthwise.weight", "depthwise.bias",
    "pointwise.weight", "pointwise.bias". In an InferenceGraph the node has the 1x1's name
    (the value it computes): errors of any part are reported at that node, each naming its
    layer."""

    param_names = ()
    _output_is_private = True

    def __init__(self, depthwise: FusedConv, pointwise: FusedConv,
                 expand: FusedConv | None = None):
        super().__init__()
        for layer in (depthwise, pointwise) + ((expand,) if expand is not None else ()):
            if type(layer) is not FusedConv:
                raise TypeError(f"FusedSeparableConv: expected FusedConv layers, but got "
                                f"{type(layer).__name__}")
        self.depthwise, self.pointwise, self.expand = depthwise, pointwise, expand
        self.training = False

    @staticmethod
    def pairs(depthwise: FusedConv, pointwise: FusedConv) -> bool:
        """Whether these two layers run as one kernel: a depthwise convolution (one filter
        per channel, zero padding, any kernel, stride and dilation, its post-ops without a
        residual add) and a 1x1 convolution of stride 1 without padding over its output,
        both left to "auto" (or the direct and the blocked algorithm, which the kernel
        runs), the 1x1's packed weight (in the weight's dtype) within
        _algorithms.SEPARABLE_MAX_POINTWISE_BYTES (every run of the depthwise output reads
        all of it)."""
        dw, pw = depthwise, pointwise
        return (dw.kind == "conv2d" and pw.kind == "conv2d"
                and dw.groups == dw.in_channels == dw.out_channels > 1
                and dw.padding_mode == "zeros" and not dw.post_ops.residual
                and dw.algorithm in ("auto", "direct")
                and pw.in_channels == dw.out_channels and FusedSeparableConv._is_pointwise(pw))

    @staticmethod
    def expands(expand: FusedConv, depthwise: FusedConv) -> bool:
        """Whether `expand` joins the kernel in front of `depthwise`: a 1x1 convolution of
        stride 1 without padding to the depthwise convolution's channels, its post-ops without
        a residual add, left to "auto" (or the blocked algorithm), its packed weight within
        _algorithms.SEPARABLE_MAX_POINTWISE_BYTES (each band of rows reads all of it)."""
        return (expand.kind == "conv2d" and expand.out_channels == depthwise.in_channels
                and not expand.post_ops.residual and FusedSeparableConv._is_pointwise(expand))

    @staticmethod
    def _is_pointwise(layer: FusedConv) -> bool:
        """A 1x1 convolution that the kernels' blocked register block runs: stride 1, no
        padding in any spelling, one group, "auto" or "blocked", its packed weight within
        SEPARABLE_MAX_POINTWISE_BYTES."""
        block = _algorithms.KERNELS["blocked"].OUT_BLOCK.get(layer.weight.dtype.name)
        return (block is not None and layer.kind == "conv2d" and layer.groups == 1
                and -(-layer.out_channels // block) * block * layer.in_channels
                * layer.weight.itemsize <= _algorithms.SEPARABLE_MAX_POINTWISE_BYTES
                and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
                and _params.padding_pairs(layer.padding, (1, 1), (1, 1), (1, 1), (1, 1))
                == ((0, 0), (0, 0)) and layer.padding_mode == "zeros"
                and layer.algorithm in ("auto", "blocked"))

    def fusable(self) -> bool:
        """pairs(self.depthwise, self.pointwise) (and expands(self.expand, self.depthwise),
        with an expand layer): with their settings now."""
        return self.pairs(self.depthwise, self.pointwise) and (
            self.expand is None or self.expands(self.expand, self.depthwise))

    @property
    def num_inputs(self) -> int:
        return self.pointwise.num_inputs

    def parameters(self):
        for prefix, layer in (("expand", self.expand), ("depthwise", self.depthwise),
                              ("pointwise", self.pointwise)):
            for name, value, grad in layer.parameters() if layer is not None else ():
                yield f"{prefix}.{name}", value, grad

    def train(self, mode: bool = True) -> "FusedSeparableConv":
        if mode:
            raise RuntimeError("FusedSeparableConv: a fused layer is for inference only; "
                               "train the original model")
        return self

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def forward(self, x, residual=None, *, out: np.ndarray | None = None):
        """The 1x1 convolution's output (its post-ops applied), into `out` (C-contiguous,
        of the output's shape and dtype) when given. Errors as the two FusedConv raise."""
        call = self._fused_call(x, residual, out)
        if call is None:
            if self.expand is not None:
                x = self.expand.forward(x)
            return self.pointwise.forward(self.depthwise.forward(x), residual, out=out)
        call[0]()
        return call[1]

    def _fused_call(self, x, residual, out):
        """(the one-kernel call, its output array) for these arguments, or None where the
        two layers run apart (see the class)."""
        fusion = self._fusion_for(x, residual)
        return None if fusion is None else self._call_for(fusion, x, residual, out)

    def _call_for(self, fusion: _Fusion, x, residual, out):
        """_fused_call, given _fusion_for(x, residual)."""
        dw, pw = self.depthwise, self.pointwise
        dw_plan, pw_plan, depthwise, pointwise, expansion = fusion
        if out is None:
            y = _memory.empty(pw_plan.out_shape, pw_plan.dtype)
        elif (isinstance(out, np.ndarray) and out.shape == pw_plan.out_shape
              and out.dtype == pw_plan.dtype and out.flags.c_contiguous
              and not np.may_share_memory(out, x)
              and (residual is None or not np.may_share_memory(out, residual))):
            y = out
        else:  # the 1x1 layer raises for it (or writes it after the depthwise one)
            return None
        pw_single, pw_post = pw._single_call(pw_plan, residual)
        if not pw_single:
            return None
        _, dw_post = dw._single_call(dw_plan, None)
        geo = dw_plan.geo
        if expansion is None:
            return functional.bind_depthwise_pointwise(
                depthwise, pointwise, x, dw_plan.offsets, y, geo.stride, geo.dilation, dw_post,
                pw_post), y
        e_plan, expand, joined = expansion
        _, e_post = self.expand._single_call(e_plan, None)
        if joined:
            return functional.bind_expand_depthwise_pointwise(
                expand, depthwise, pointwise, x, dw_plan.offsets, y, geo.stride, geo.dilation,
                e_post, dw_post, pw_post), y
        # the expansion as its own kernel, into an array of this call's
        expanded = _memory.empty(e_plan.out_shape, e_plan.dtype)
        e_call = self.expand._kernel_call(x, None, expanded, e_plan, keep=False)
        if e_call is None:
            return None
        call = functional.bind_depthwise_pointwise(
            depthwise, pointwise, expanded, dw_plan.offsets, y, geo.stride, geo.dilation,
            dw_post, pw_post)

        def both() -> None:
            e_call()
            call()
        return both, y

    def _fusion_for(self, x, residual) -> _Fusion | None:
        """_fusion for x, when one kernel takes x and residual as they are."""
        first = self.expand if self.expand is not None else self.depthwise
        if (not isinstance(x, np.ndarray) or x.ndim != 4 or not x.flags.c_contiguous
                or x.shape[3] != first.in_channels
                or isinstance(residual, np.ndarray) != bool(self.pointwise.post_ops.residual)):
            return None
        return self._fusion(x.shape, x.dtype)

    def _fusion(self, shape, dtype) -> _Fusion | None:
        """The plans and prepared weights when the layers run as one kernel on inputs of
        `shape` (N, H, W, C) and `dtype` (with an expand layer not joined: that one and then
        one kernel), else None."""
        if not self.fusable():
            return None
        dw, pw, x_shape = self.depthwise, self.pointwise, shape
        if self.expand is not None:
            e_plan = _plan.plan_for(self.expand, _stand_in(shape, dtype))
            if e_plan.dtype != dtype or not e_plan.fuses_post or e_plan.offsets != (0, 0):
                return None
            shape = e_plan.out_shape
        dw_plan = _plan.plan_for(dw, _stand_in(shape, dtype))
        if not dw_plan.fuses_post:
            return None
        pw_plan = _plan.plan_for(pw, _stand_in(dw_plan.out_shape, dw_plan.dtype))
        # (computed in x's dtype: the 1x1's plan takes it from the depthwise one's)
        if pw_plan.dtype != dtype or not pw_plan.fuses_post or pw_plan.offsets != (0, 0):
            return None
        depthwise = dw_plan.prepared("direct", dw.weight, dw.bias, _plan.packs_of(dw))
        pointwise = pw_plan.prepared("blocked", pw.weight, pw.bias, _plan.packs_of(pw))
        if (depthwise.algo != "direct" or pointwise.algo != "blocked"
                or pointwise.weight.shape[5]
                != _algorithms.KERNELS["direct"].POINTWISE_BLOCK[pw_plan.dtype_name]):
            return None
        expansion = None
        if self.expand is not None:
            expand = e_plan.prepared("blocked", self.expand.weight, self.expand.bias,
                                     _plan.packs_of(self.expand))
            # an expand weight the blocked kernel does not take (not finite) runs apart
            expansion = _Expansion(e_plan, expand, expand.algo == "blocked" and (
                functional.expansion_joins(x_shape, depthwise, pointwise, pw_plan.out_shape,
                                           dw_plan.offsets, dw_plan.geo.stride,
                                           dw_plan.geo.dilation)))
        return _Fusion(dw_plan, pw_plan, depthwise, pointwise, expansion)

    def _inference_kernel(self, x: np.ndarray, residual=None):
        """The layer as one kernel call, for an inference graph's arena: (output shape,
        dtype, bind) with bind(x, [residual,] out) returning the call (None where one
        kernel does not take them); None where the two layers run apart."""
        fusion = self._fusion_for(x, residual)
        if fusion is None:
            return None
        pw_plan = fusion.pw_plan

        def bind(x: np.ndarray, *rest: np.ndarray):  # (the same inputs, right after)
            *given, out = rest
            call = self._call_for(fusion, x, given[0] if given else None, out)
            return None if call is None else call[0]
        return pw_plan.out_shape, pw_plan.dtype, bind

    def backward(self, grad_output):
        raise RuntimeError(f"{type(self).__name__}.backward: a fused layer is for inference "
                           f"only; train the original model")

    def describe(self, input_shape) -> dict:
        """{"kind": "separable", "fused": whether one kernel runs (with an expansion: after
        it, or with it) for inputs of `input_shape` (N, H, W, C) in the layer's dtype,
        "depthwise" and "pointwise": the two layers' describe(); with an expansion also
        "expand": its describe() and "expand_fused": whether it runs in that kernel}."""
        shape = tuple(_params.as_tuple("input_shape", input_shape, 4, 0))
        dtype = self.depthwise.dtype
        described = {"kind": "separable"}
        fusion = self._fusion(shape, np.dtype(dtype))
        if self.expand is not None:
            described["expand"] = self.expand.describe(shape)
            described["expand_fused"] = fusion is not None and fusion.expansion.joined
            shape = _plan.plan_for(self.expand, _stand_in(shape, dtype)).out_shape
        dw_plan = _plan.plan_for(self.depthwise, _stand_in(shape, dtype))
        return {**described, "fused": fusion is not None,
                "depthwise": self.depthwise.describe(shape),
                "pointwise": self.pointwise.describe(dw_plan.out_shape)}

    def extra_repr(self) -> str:
        parts = (self.expand, self.depthwise, self.pointwise)
        return " -> ".join(layer.extra_repr() for layer in parts if layer is not None)


def _stand_in(shape, dtype) -> np.ndarray:
    """An array of `shape` and `dtype` costing no memory, for plan_for (which reads only
    the shape and dtype)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), tuple(shape), (0,) * len(shape))


def _adds_in_place(residual: np.ndarray, shape, dtype) -> bool:
    """Whether y + residual, for y of `shape` and `dtype`, keeps y's shape and dtype (else the
    unfused Add would make a larger array or promote the dtype)."""
    try:
        same_shape = np.broadcast_shapes(residual.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        return False
    return same_shape and np.result_type(residual.dtype, dtype) == dtype


# ----------------------------------------------------------------------------------------------
# the graph

# the layers an InferenceGraph runs into its arena: convolutions through their plans, the
# others (FusedConv's linear kind, FusedSeparableConv, these pooling layers, a transpose:
# an ONNX model's input made NHWC) as one kernel call each (_inference_kernel); exact
# types, so that a subclass's own forward runs
_KERNEL_NODES = (FusedConv, FusedSeparableConv, L.MaxPool2d, L.AdaptiveAvgPool2d, Permute)


def _large_output(layer) -> bool:
    """Whether a kernel node's value is as large as an activation (a convolution's, a
    transpose's): as a graph output it is made outside the arena rather than copied out of it
    (a Linear's logits and pooled features are small: copied)."""
    return type(layer) is Permute or type(layer) is FusedConv and layer.kind != "linear"

# layers whose value is a view of their input's bytes, the same view for the same input
# (pure): a replay hands on the view it made before (_ViewStep)
_VIEW_NODES = (L.Flatten,)


class InferenceGraph(Graph):
    """A Graph made by optimize_for_inference: eval mode only, and its FusedConv,
    FusedSeparableConv, max pooling, global average pooling and Permute nodes
    (_KERNEL_NODES) write into activation buffers kept from call to call (per Python
    thread), each given back once the nodes reading its value (or a view of it) have run.
    Returned arrays are never such buffers."""

    def __init__(self, nodes, inputs=("x",), outputs=None):
        super().__init__(nodes, inputs, outputs)
        self.training = False
        self._local = threading.local()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def train(self, mode: bool = True) -> "InferenceGraph":
        if _params.as_bool("mode", mode):
            raise RuntimeError("InferenceGraph: an inference model has no training mode; "
                               "train the original model")
        return super().train(False)

    def backward(self, grad_output):
        raise RuntimeError("InferenceGraph.backward: an inference model is for inference "
                           "only; train the original model")

    def forward(self, *inputs):
        if len(inputs) != len(self.inputs):
            raise TypeError(f"{type(self).__name__}: expected {len(self.inputs)} input(s) "
                            f"{self.inputs}, but got {len(inputs)}")
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = _BufferPool()
        values = {name: _params.as_array(f"input {name!r}", x)
                  for name, x in zip(self.inputs, inputs)}
        signature = tuple((x.shape, x.dtype.str) if isinstance(x, np.ndarray) else type(x)
                          for x in values.values())
        replay = pool.replays.pop(signature, None)  # given back below if it runs through
        if (replay is not None and replay.nodes == self.nodes
                and replay.outputs == tuple(self.outputs)):
            outs, intact = self._replayed(replay, values, pool.layouts[signature][0])
            if intact:
                pool.replays[signature] = replay
            return outs
        changes = _plan.changes()  # before any node: a change during the pass is seen next
        pool.begin(signature)
        # a pass that follows an arena throughout is kept as a replay of its conv nodes
        steps: list | None = [] if pool.follows_layout() else None
        arena = pool.layouts[signature][0] if steps is not None else None
        placed = []  # where each node's value lies in the arena
        dropped = self._dropped_after()
        # BLAS on one thread for the whole pass (the kernels ask for it at every call; held
        # here, those requests cost a counter, not a setting of OpenBLAS's threads)
        asked = blas_requests()
        with blas_single_thread():
            for i, (name, layer, names) in enumerate(self.nodes):
                args = [values[n] for n in names]
                if type(layer) in _VIEW_NODES:
                    values[name] = _view_at_node(name, layer, args, pool, steps)
                elif type(layer) not in _KERNEL_NODES or (
                        name in self.outputs and _large_output(layer)):
                    values[name] = _unpooled_at_node(name, layer, args, steps)
                elif type(layer) is FusedConv and layer.kind != "linear":
                    values[name] = _fused_at_node(name, layer, args, pool, steps)
                else:  # an output too (pooled features, logits: small), copied out below
                    values[name] = _kernel_at_node(name, layer, args, pool, steps)
                if steps is not None:
                    placed.append(_placement(values[name], arena))
                pool.track(values[name])
                del args
                # after the node ran: its output never lands in a buffer it reads
                for n in dropped[i]:
                    pool.release(values.pop(n))
        # never hand out a pooled buffer
        outs = [_copied_out(values[n], pool.owns) for n in self.outputs]
        for v in values.values():
            pool.release(v)
        if pool.end() and steps is not None:
            # (more requests than the pass's own: a kernel of the pass calls BLAS)
            pool.replays[signature] = _Replay(list(self.nodes), tuple(self.outputs), steps,
                                              placed, dropped, changes,
                                              blas_requests() - asked > 1)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _dropped_after(self) -> list[list[str]]:
        """Per node, the values no later node reads (the outputs kept)."""
        return [[n for n in dict.fromkeys(names) if self._last_use[n] == i
                 and n not in self.outputs] for i, (_, _, names) in enumerate(self.nodes)]

    def _replayed(self, replay: "_Replay", values: dict, arena: np.ndarray):
        """The pass `replay` recorded, run again on new inputs of the same signature (in
        `values`, which it fills): each convolution into the same array of `arena` as
        then, the other nodes as in any pass; an output in the arena copied out.

        A node with a step (a convolution, or a layer run as one kernel call, _KERNEL_NODES)
        whose inputs are the very arrays its kept kernel call was bound to (or views of the
        same bytes) runs that call as it is while _plan.changes() is what it was at the
        last pass: no weight was bumped and no setting of such a layer set since, on the
        same thread count and autotune settings. Else the step is made again (its plan, its
        kernel), checking the layer and its weights. From a node that no longer runs as
        recorded (a layer setting, the thread count, the autotune setting: another plan or
        output) or that raised ValueError or TypeError, that node and the rest run as plain
        layers, outside the arena (no node runs twice: one may have changed its input in
        place). Returns (the outputs, whether the replay ran through and can be kept)."""
        changes = _plan.changes()
        unchanged = replay.changes == changes
        intact = True
        # BLAS held on one thread as in the recorded pass, where one of its kernels asked
        # (setting OpenBLAS's threads takes 0.1 ms or more after an idle spell; a kernel that
        # calls BLAS asks for it itself all the same)
        with blas_single_thread() if replay.uses_blas else contextlib.nullcontext():
            for (name, layer, names), step, placed, dropped in zip(
                    self.nodes, replay.steps, replay.placed, replay.dropped):
                if intact and step is not None:
                    x = values[names[0]]
                    residual = values[names[1]] if len(names) > 1 else None
                    if unchanged and step.call is not None and step.takes(x, residual):
                        step.call()
                        values[name] = step.out
                    else:
                        try:
                            result = step.again(layer, x, residual)
                        except (ValueError, TypeError):
                            result = None
                        if result is None:
                            intact = False
                        else:
                            values[name] = result
                            intact = _placement(result, arena) == placed
                elif intact:
                    values[name] = _at_node(name, layer, [values[n] for n in names])
                    # a value in another place of the arena than when recorded: the arena's
                    # slots are no longer free when the recording says (the rest as plain
                    # layers); and a layer's code may have changed a later node's weights
                    intact = _placement(values[name], arena) == placed
                    unchanged = unchanged and _plan.changes() == changes
                if not intact and name not in values:
                    values[name] = _at_node(name, layer, [values[n] for n in names])
                for n in dropped:
                    del values[n]
        if intact:
            replay.changes = changes
        outs = [_copied_out(values[n], lambda v: np.may_share_memory(v, arena))
                for n in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs), intact


class _Replay:
    """An InferenceGraph pass kept for replay (InferenceGraph._replayed): the nodes and
    outputs it ran with; per node, its step (_Step, _KernelStep, _ViewStep) or None for
    one run as any node, and where its value lay in the arena (_placement); the values
    dropped after each node; _plan.changes() when the steps' kept calls were last
    checked; and whether a kernel of the pass called BLAS (uses_blas)."""

    def __init__(self, nodes: list, outputs, steps: list, placed: list,
                 dropped: list[list[str]], changes: tuple, uses_blas: bool):
        self.nodes, self.outputs, self.steps, self.placed = nodes, outputs, steps, placed
        self.dropped, self.changes, self.uses_blas = dropped, changes, uses_blas


def _placement(value, arena: np.ndarray):
    """Where `value` (an array, or tuples and lists of them) lies in `arena`: (address,
    shape, strides) of each array sharing memory with it, None for the others."""
    if type(value) in (tuple, list):
        return tuple(_placement(v, arena) for v in value)
    if not isinstance(value, np.ndarray) or not np.may_share_memory(value, arena):
        return None
    return value.__array_interface__["data"][0], value.shape, value.strides


class _Step:
    """A convolution node of a kept pass: its arena array `out`, its plan, whether its
    kernel call may be kept (`keep`: its inputs are the pool's own arrays, which the call
    holds), and that call with the x and residual it was bound to (None when not kept)."""

    __slots__ = ("out", "plan", "keep", "call", "x", "residual")

    def __init__(self, out: np.ndarray, plan, keep: bool):
        self.out, self.plan, self.keep = out, plan, keep
        self.call = self.x = self.residual = None

    def takes(self, x, residual) -> bool:
        """Whether the kept call reads these inputs: the arrays it was bound to, or views
        of the same bytes laid out alike (a Flatten makes a new view at every pass)."""
        return ((x is self.x or _same_view(x, self.x))
                and (residual is self.residual or _same_view(residual, self.residual)))

    def again(self, layer: FusedConv, x: np.ndarray, residual) -> np.ndarray | None:
        """run() while the layer's plan for x is this step's; None when it changed."""
        return self.run(layer, x, residual) if _plan.plan_for(layer, x) is self.plan else None

    def run(self, layer: FusedConv, x: np.ndarray, residual) -> np.ndarray:
        """The layer on x (and residual) into `out` through its kernel call (kept here when
        `keep`), or through _convolve where one call is not the whole of it; returns the
        result."""
        call = self._kept(layer._kernel_call(x, residual, self.out, self.plan, self.keep),
                          x, residual)
        if call is None:
            return layer._convolve(x, residual, self.out, self.plan)
        call()
        return self.out

    def _kept(self, call, x, residual):
        """call, kept with the inputs it was bound to when `keep` (else nothing kept)."""
        if self.keep and call is not None:
            self.call, self.x, self.residual = call, x, residual
        else:
            self.call = self.x = self.residual = None
        return call


class _KernelStep(_Step):
    """A node of a kept pass run as one kernel call into its arena array `out` (a layer of
    _KERNEL_NODES: its _inference_kernel(*inputs) gives (output shape, dtype, bind), and
    bind(*inputs, out) the call)."""

    __slots__ = ()

    def __init__(self, out: np.ndarray, keep: bool):
        super().__init__(out, None, keep)

    def run(self, layer, x: np.ndarray, residual=None) -> np.ndarray | None:
        """The layer on x (and residual, for a layer with two inputs) into `out` through its
        kernel call (kept here when `keep`); None when the layer no longer gives this output
        or call for them."""
        inputs = (x,) if residual is None else (x, residual)
        spec = layer._inference_kernel(*inputs)
        if spec is None or tuple(spec[0]) != self.out.shape or spec[1] != self.out.dtype:
            return None
        call = self._kept(spec[2](*inputs, self.out), x, residual)
        if call is None:
            return None
        call()
        return self.out

    def again(self, layer, x: np.ndarray, residual) -> np.ndarray | None:
        return self.run(layer, x, residual)


class _ViewStep(_Step):
    """A node of a kept pass (a layer of _VIEW_NODES) whose value `out` was a view of its
    input x, an arena array: replayed, the same view object, while the input is x or a view
    of the same bytes (its "call" does nothing)."""

    __slots__ = ()

    def __init__(self, out: np.ndarray, x: np.ndarray):
        super().__init__(out, None, True)
        self.call, self.x = _nothing, x

    def again(self, layer, x: np.ndarray, residual) -> np.ndarray | None:
        """The layer run again (it is pure: harmless to run twice); None unless it made
        the same view (the arena's slots then stay as recorded)."""
        y = layer(x)
        return y if _same_view(y, self.out) else None


def _nothing() -> None:
    pass


def _arrays_in(value):
    """The arrays of a value: itself, or those in its (nested) tuples and lists."""
    if type(value) in (tuple, list):
        for v in value:
            yield from _arrays_in(v)
    elif isinstance(value, np.ndarray):
        yield value


def _copied_out(value, in_arena):
    """value with each array for which in_arena(array) holds copied (nested tuples and lists
    rebuilt): what a graph returns never lives in its arena."""
    if type(value) in (tuple, list):
        return type(value)(_copied_out(v, in_arena) for v in value)
    return value.copy() if isinstance(value, np.ndarray) and in_arena(value) else value


def _same_view(a, b) -> bool:
    """Whether the arrays a and b view the same bytes alike (address, shape, strides,
    dtype)."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _at_node(name, layer, args):
    from fastconv.graph import _at_node as at_node

    return at_node(name, layer, args)


def _fused_at_node(name: str, layer: FusedConv, args, pool: "_BufferPool",
                   steps: list | None = None) -> np.ndarray:
    """A convolution node into a pooled buffer; on an input it refuses, the node runs
    unpooled to raise its error with the node's name. Appends the node's replay step to
    `steps` (see _Replay) when given."""
    x = args[0]
    if (not isinstance(x, np.ndarray) or x.ndim != 4 or len(args) != layer.num_inputs
            or x.shape[3] != layer.in_channels):
        return _unpooled_at_node(name, layer, args, steps)
    try:
        plan = _plan.plan_for(layer, x)
    except (ValueError, TypeError):
        return _unpooled_at_node(name, layer, args, steps)
    out = pool.take(plan.out_shape, plan.dtype)
    try:
        residual = None if len(args) == 1 else _params.as_array("residual", args[1])
        # a bound call is kept only over the pool's own arrays: it holds its arguments
        step = _Step(out, plan, pool.owns(x) and (residual is None or pool.owns(residual)))
        result = step.run(layer, x, residual)
    except (ValueError, TypeError):
        pool.give_back(out)
        return _unpooled_at_node(name, layer, args, steps)
    if result.base is not out.base:  # a residual add made a new, larger or wider array
        pool.give_back(out)
    if steps is not None:
        steps.append(step if residual is None or residual is args[1] else None)
    return result


def _kernel_at_node(name: str, layer, args, pool: "_BufferPool",
                    steps: list | None = None) -> np.ndarray:
    """A layer of _KERNEL_NODES as one kernel call into a pooled buffer (_KernelStep); where
    it is not one for this input (or refuses it), the node runs unpooled, to raise its
    error with the node's name. Appends the node's replay step to `steps` when given."""
    spec = None
    if len(args) in (1, 2) and all(isinstance(a, np.ndarray) for a in args):
        try:
            spec = layer._inference_kernel(*args)
        except (ValueError, TypeError):
            pass  # run unpooled below, to raise with the node's name
    if spec is None:
        return _unpooled_at_node(name, layer, args, steps)
    out = pool.take(spec[0], spec[1])
    # a call is kept only over the pool's own arrays
    step = _KernelStep(out, all(pool.owns(a) for a in args))
    if step.run(layer, *args) is None:
        pool.give_back(out)
        return _unpooled_at_node(name, layer, args, steps)
    if steps is not None:
        steps.append(step)
    return out


def _view_at_node(name: str, layer, args, pool: "_BufferPool",
                  steps: list | None = None):
    """A layer of _VIEW_NODES run as any node; its replay step a _ViewStep where its value
    is a view of its input, an array of the pool's (else None)."""
    result = _at_node(name, layer, args)
    if steps is not None:
        x = args[0]
        steps.append(_ViewStep(result, x) if (
            len(args) == 1 and isinstance(result, np.ndarray) and pool.owns(x)
            and np.may_share_memory(result, x)) else None)
    return result


def _unpooled_at_node(name, layer, args, steps: list | None):
    """A node run as a plain layer (its replay step: None, appended to `steps` when given)."""
    result = _at_node(name, layer, args)
    if steps is not None:
        steps.append(None)
    return result


class _BufferPool:
    """The activation buffers of an InferenceGraph's passes.

    The first pass with a given input signature takes buffers from a free list (the latest
    given back that holds the array without wasting more than half of itself, or a new
    one) and records when each buffer it took was taken and given back. From that record
    it lays out one arena for that signature (_arena_layout): each array the pass takes
    gets an offset, arrays whose lifetimes overlap never share bytes, and the arena is about
    the pass's peak of live activations. Later passes with the same signature take the
    same arrays from the arena in the same order: no allocation, and a few MB that stay in
    the caches (MobileNetV2 at 1x224x224: a 5.7 MB arena for 13.6 MB of free-list buffers;
    on a Zen 5, its 112x112x96 layer took 0.44 ms with its output in a free-list buffer last
    written a pass before, 0.22 ms in the arena).
    A pass that takes an array the layout did not foresee (another size) drops the layout
    and goes on from the free list; the next pass records anew.
    `users` counts the live values that view each buffer or arena slot (a buffer goes back
    to the free list when none does)."""

    MAX_LAYOUTS = 8  # input signatures with an arena kept (the oldest goes first)

    def __init__(self) -> None:
        # byte buffers (fastconv._memory.empty's owners) free for reuse, the latest given
        # back last: it is taken first, while its lines may still be in cache
        self.free: list[np.ndarray] = []
        self.pooled: dict[int, np.ndarray] = {}  # id -> byte buffer, every one made here
        self.users: dict = {}  # id of a byte buffer, or ("slot", k) -> live values in it
        # input signature -> (arena, [(offset, nbytes)] per take, its arrays, their slots)
        self.layouts: dict = {}
        self.replays: dict = {}  # input signature -> a pass over its arena kept for replay
        self._record: list | None = None  # this pass's takes: [nbytes, taken, given back]
        self._taken: dict[int, int] = {}  # id of a byte buffer -> its take in _record
        self._arena: np.ndarray | None = None  # this pass's arena (aligned bytes), if any
        # the arrays made in it so far, by (take, shape, dtype): the same objects every pass,
        # so that a FusedConv recognises its arguments and replays its bound kernel call;
        # and the take of each, by id (the views hold them: the ids stay theirs)
        self._views: dict | None = None
        self._slot_of: dict | None = None
        self._offsets: list | None = None  # its (offset, nbytes) per take; None: not followed
        self._next = 0  # the next take's index in _offsets
        self._slots: dict[int, tuple[int, int]] = {}  # live slot k -> (offset, end)
        self._step = 0
        self._signature = None

    def begin(self, signature) -> None:
        """A pass with inputs of this signature (their shapes and dtypes) starts."""
        self._signature, self._step, self._slots, self._next = signature, 0, {}, 0
        self.users = {}  # (a pass that raised left its counts behind)
        self._arena, self._offsets, self._views, self._slot_of = self.layouts.get(
            signature, (None, None, None, None))
        self._record = [] if self._arena is None else None
        self._taken = {}

    def follows_layout(self) -> bool:
        """Whether this pass takes its arrays from an arena laid out before."""
        return self._offsets is not None

    def end(self) -> bool:
        """The pass is over (every value given back): lay out the arena it recorded. Returns
        whether the pass took exactly the arrays of an arena laid out before."""
        followed = self._offsets is not None and self._next == len(self._offsets)
        if self._record is not None and all(r[2] is not None for r in self._record):
            arena, offsets = _arena_layout([(r[0], r[1], r[2]) for r in self._record])
            self._drop_layout(self._signature)
            if len(self.layouts) >= self.MAX_LAYOUTS:
                self._drop_layout(next(iter(self.layouts)))
            self.layouts[self._signature] = (arena, offsets, {}, {})  # views made as taken
            if not self.users:  # nothing lives in the free list's buffers: let them go
                self.free, self.pooled = [], {}
        self._record = self._arena = self._offsets = self._views = self._slot_of = None
        self._taken, self._slots = {}, {}
        return followed

    def _drop_layout(self, signature) -> None:
        """Forget the arena of `signature`, and the replay that writes into it."""
        self.layouts.pop(signature, None)
        self.replays.pop(signature, None)

    def take(self, shape, dtype) -> np.ndarray:
        """An aligned array of `shape` and `dtype`: the arena's next one, or from the free
        list (see the class)."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        self._step += 1
        if self._offsets is not None:
            k = self._next
            offset = self._offsets[k][0] if k < len(self._offsets) else 0
            # the recorded size, over bytes no live value holds (a layer may now hand on
            # another array than when the layout was recorded, keeping other slots alive)
            if (k < len(self._offsets) and self._offsets[k][1] == nbytes
                    and all(end <= offset or offset + nbytes <= start
                            for start, end in self._slots.values())):
                self._next += 1
                # offset: a multiple of ALIGNMENT in an aligned arena
                array = self._views.get((k, shape, dtype))
                if array is None:
                    array = self._views[k, shape, dtype] = \
                        self._arena[offset:offset + nbytes].view(dtype).reshape(shape)
                    self._slot_of[id(array)] = k
                self._slots[k] = (offset, offset + nbytes)
                return array
            self._drop_layout(self._signature)  # not the pass it recorded: the arena's
            self._offsets = None  # live slots stay as they are, the rest is not used
        for i in range(len(self.free) - 1, -1, -1):
            if nbytes <= _memory.capacity(self.free[i]) <= 2 * nbytes + _memory.ALIGNMENT:
                buffer = _memory.view(self.free.pop(i), shape, dtype)
                break
        else:
            buffer = _memory.empty(shape, dtype)
            self.pooled[id(buffer.base)] = buffer.base
        if self._record is not None:
            self._taken[id(buffer.base)] = len(self._record)
            self._record.append([nbytes, self._step, None])
        return buffer

    def give_back(self, buffer: np.ndarray) -> None:
        """`buffer`, taken and never handed to a value, is free again."""
        self._step += 1
        if self._arena is None or buffer.base is not self._arena.base:
            self._freed(buffer.base)
        else:
            self._slots.pop(self._slot_of.get(id(buffer)), None)

    def _freed(self, owner: np.ndarray) -> None:
        if self._record is not None and id(owner) in self._taken:
            self._record[self._taken.pop(id(owner))][2] = self._step
        self.free.append(owner)

    def _root(self, value):
        """The key of the buffer or live arena slot `value` views, or None."""
        if not isinstance(value, np.ndarray) or value.base is None:
            return None
        owner = value.base
        if isinstance(owner, np.ndarray) and owner.base is not None:
            owner = owner.base  # a view of a view made through another object
        if not isinstance(owner, np.ndarray):
            # NumPy points a view at the array owning its memory, but a view made through
            # another object (as_strided's stand-in, a memoryview, a tensor) at that object:
            # its buffer is found by its memory
            owner = self._owner_by_memory(value)
        if owner is None:
            return None
        if self._arena is not None and owner is self._arena.base:
            k = self._slot_of.get(id(value))
            if k is not None and k in self._slots:
                return ("slot", k)
            at = value.ctypes.data - self._arena.ctypes.data  # a view of a slot's array
            for k, (start, end) in self._slots.items():
                if start <= at < end or start == at:
                    return ("slot", k)
            return None
        return id(owner) if self.pooled.get(id(owner)) is owner else None

    def _owner_by_memory(self, value: np.ndarray) -> np.ndarray | None:
        """The arena's or a pooled buffer's owner array whose memory `value` shares."""
        if self._arena is not None and np.may_share_memory(value, self._arena):
            return self._arena.base
        return next((b for b in self.pooled.values() if np.may_share_memory(value, b)), None)

    def owns(self, value) -> bool:
        return self._root(value) is not None

    def track(self, value) -> None:
        """A live value (an array, or tuples and lists of them): the buffers it views stay
        taken until it is released."""
        for array in _arrays_in(value):
            root = self._root(array)
            if root is not None:
                self.users[root] = self.users.get(root, 0) + 1

    def release(self, value) -> None:
        for array in _arrays_in(value):
            root = self._root(array)
            if root is None:
                continue
            self.users[root] -= 1
            if self.users[root] == 0:
                del self.users[root]
                self._step += 1
                if isinstance(root, tuple):
                    del self._slots[root[1]]  # its bytes wait for the takes laid out over them
                else:
                    self._freed(self.pooled[root])


def _arena_layout(takes) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(arena, [(offset, nbytes)] per take) for takes
    [(nbytes, taken, given back)] (steps of one pass): the largest first, each at the lowest
    64-byte aligned offset where it overlaps no placed take whose lifetime [taken, given
    back] meets its own (greedy by size, as TensorFlow Lite's arena planner)."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, taken, given back)
    offsets = [0] * len(takes)
    for i in sorted(range(len(takes)), key=lambda i: -takes[i][0]):
        nbytes, taken, back = takes[i]
        size = -(-max(nbytes, 1) // _memory.ALIGNMENT) * _memory.ALIGNMENT
        offset = 0
        for start, end, t, b in sorted(placed):
            if t <= back and taken <= b:  # alive together: keep clear of it
                if offset + size <= start:
                    break
                offset = max(offset, end)
        offsets[i] = offset
        placed.append((offset, offset + size, taken, back))
    arena = _memory.empty(max((end for _, end, _, _ in placed), default=0), np.uint8)
    return arena, [(offsets[i], takes[i][0]) for i in range(len(takes))]


# ----------------------------------------------------------------------------------------------
# building


def optimize_for_inference(model: L.Layer) -> InferenceGraph:
    """An eval-mode copy of `model` with BatchNorm folded into the preceding convolutions and
    activations and residual adds fused into them (see fastconv.inference); `model` is left
    as it is. Takes a Sequential, a Graph (Residual, Parallel, from_torch's) or a single
    layer; returns an InferenceGraph with the model's inputs and outputs, computing what
    model.eval() computes (float32 within about 1e-5 relative, float64 1e-12).

    The result is for inference only (backward and train() raise RuntimeError). Its weights
    are its own (folded) arrays: to change them, build it again from the changed model.
    Raises TypeError for anything but a fastconv layer."""
    if not isinstance(model, L.Layer):
        raise TypeError(f"optimize_for_inference: expected a fastconv layer (Sequential, Graph, "
                        f"...), but got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    nodes: list[list] = []
    if isinstance(model, Graph):
        inputs = model.inputs
        outputs = _flatten_graph(model, "", list(inputs), nodes)
    else:
        inputs = ("x",)
        outputs = [_flatten(model, "", ["x"], nodes)]
    nodes = _fuse(nodes, outputs)
    return InferenceGraph([tuple(n) for n in nodes], inputs, tuple(outputs))


def _flatten(layer: L.Layer, name: str, inputs: list[str], nodes: list) -> str:
    """Appends the nodes computing `layer` on the values `inputs` to `nodes` ([name, layer,
    inputs] lists); returns the name of the value it computes."""
    if type(layer) in (L.Identity, L.Dropout, L.Dropout2d):
        return inputs[0]
    prefix = name + "." if name else ""
    if type(layer) is L.Sequential:
        value = inputs[0]
        for i, child in enumerate(layer.layers):
            value = _flatten(child, f"{prefix}{i}", [value], nodes)
        return value
    if type(layer) in (Graph, Residual, Parallel) and len(layer.outputs) == 1:
        return _flatten_graph(layer, prefix, inputs, nodes)[0]
    if type(layer) is L.SeparableConv2d:  # its two convolutions, as nodes of their own
        value = _flatten(layer.depthwise, f"{prefix}depthwise", inputs, nodes)
        return _flatten(layer.pointwise, f"{prefix}pointwise", [value], nodes)
    taken = {n[0] for n in nodes}
    unique, k = name or "out", 1
    while unique in taken:
        unique, k = f"{name}#{k}", k + 1
    if type(layer) in _CONV_KINDS or isinstance(layer, (L.Conv2d, L.ConvTranspose2d)):
        layer = FusedConv(layer)
    nodes.append([unique, layer, tuple(inputs)])
    return unique


def _flatten_graph(graph: Graph, prefix: str, inputs: list[str], nodes: list) -> list[str]:
    names = dict(zip(graph.inputs, inputs))
    for node, layer, args in graph.nodes:
        names[node] = _flatten(layer, prefix + node, [names[a] for a in args], nodes)
    return [names[o] for o in graph.outputs]


def _fuse(nodes: list, outputs: list) -> list:
    """Folds and fuses (see the module docstring) until nothing changes. A fused node keeps
    the convolution's name (the value it now computes is renamed in `nodes` and `outputs`)."""
    changed = True
    while changed:
        changed = False
        users: dict[str, list[int]] = {}
        for j, (_, _, args) in enumerate(nodes):
            for a in args:
                users.setdefault(a, []).append(j)
        for i, (name, layer, args) in enumerate(nodes):
            if type(layer) is not FusedConv or name in outputs or len(users.get(name, ())) != 1:
                continue
            j = users[name][0]
            consumer = nodes[j][1]
            if nodes[j][2].count(name) != 1:
                continue
            if _overwrites_between(nodes, i, j):
                continue
            fused_args = _absorb(layer, consumer, nodes[j][2], name, args)
            if fused_args is None:
                continue
            old = nodes[j][0]
            nodes[j] = [name, layer, fused_args]
            del nodes[i]
            for node in nodes:
                node[2] = tuple(name if a == old else a for a in node[2])
            outputs[:] = [name if o == old else o for o in outputs]
            changed = True
            break
    return _pair_separable(nodes, outputs)


def _overwrites_between(nodes: list, i: int, j: int) -> bool:
    """Whether a node between nodes i and j may write into its input in place (a layer with
    inplace=True, or one holding such a layer: a Sequential subclass or a custom layer kept
    as one node). Node i's work, moved to where node j runs, would then read its inputs
    after them: through another node's value too, a view of the same bytes (a Flatten's),
    so any such node counts."""
    return any(_writes_in_place(nodes[k][1], set()) for k in range(i + 1, j))


def _writes_in_place(value, seen: set) -> bool:
    """Whether `value` (a layer, or a list, tuple or dict of them) is or holds a layer with
    inplace=True, at any depth."""
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, L.Layer):
        return bool(getattr(value, "inplace", False)) or any(
            _writes_in_place(v, seen) for v in vars(value).values())
    if isinstance(value, (list, tuple)):
        return any(_writes_in_place(v, seen) for v in value)
    if isinstance(value, dict):
        return any(_writes_in_place(v, seen) for v in value.values())
    return False


def _pair_separable(nodes: list, outputs: list) -> list:
    """Each depthwise FusedConv whose value only a 1x1 FusedConv reads (as its input) joined
    with it into a FusedSeparableConv (FusedSeparableConv.pairs), which takes the 1x1 node's
    place and name; then each 1x1 FusedConv whose value only such a node reads joined into
    it as its expansion (FusedSeparableConv.expands)."""
    def separable(layer: FusedConv, consumer) -> L.Layer | None:
        return FusedSeparableConv(layer, consumer) if type(consumer) is FusedConv and \
            FusedSeparableConv.pairs(layer, consumer) else None

    def expanded(layer: FusedConv, consumer) -> L.Layer | None:
        return FusedSeparableConv(consumer.depthwise, consumer.pointwise, layer) if (
            type(consumer) is FusedSeparableConv and consumer.expand is None
            and FusedSeparableConv.expands(layer, consumer.depthwise)) else None
    return _join(_join(nodes, outputs, separable), outputs, expanded)


def _join(nodes: list, outputs: list, joined_with) -> list:
    """Each FusedConv node whose value only one node reads, once and as its first input,
    joined into it where joined_with(its layer, the reader's layer) gives the joined layer
    (else None): that one takes the reader's place and name, with the FusedConv's inputs
    first. Not past a layer that writes in place between the two (_overwrites_between)."""
    users: dict[str, list[int]] = {}
    for j, (_, _, args) in enumerate(nodes):
        for a in args:
            users.setdefault(a, []).append(j)
    joined: set[int] = set()
    for i, (name, layer, args) in enumerate(nodes):
        if type(layer) is not FusedConv or name in outputs or len(users.get(name, ())) != 1:
            continue
        j = users[name][0]
        consumer_name, consumer, consumer_args = nodes[j]
        if consumer_args[0] != name or consumer_args.count(name) != 1:
            continue
        together = joined_with(layer, consumer)
        if together is None or _overwrites_between(nodes, i, j):
            continue
        nodes[j] = [consumer_name, together, (*args, *consumer_args[1:])]
        joined.add(i)
    return [node for i, node in enumerate(nodes) if i not in joined]


def _absorb(fused: FusedConv, consumer: L.Layer, consumer_args, name: str, args):
    """Makes `consumer` (reading `fused`'s value `name`) part of `fused`; returns the fused
    node's inputs, or None when it cannot."""
    ops = fused.post_ops
    kind = type(consumer)
    bare = not ops.act1 and not ops.residual and ops.scale is None
    norm = L.BatchNorm1d if fused.kind == "linear" else L.BatchNorm2d
    if kind is norm and bare and _fold_batch_norm(fused, consumer):
        return args
    act = activation_of(consumer)
    if act is not None:
        if not ops.act1 and not ops.residual:
            ops.act1 = act
            return args
        if ops.residual and not ops.act2:
            ops.act2 = act
            return args
        return None
    if kind is Add and len(consumer_args) == 2 and not ops.residual:
        other = consumer_args[1] if consumer_args[0] == name else consumer_args[0]
        ops.residual = True
        return (*args, other)
    return None


def _fold_batch_norm(fused: FusedConv, bn) -> bool:
    """w' = w * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), per output
    channel, in float64; False (nothing changed) when bn normalises with batch statistics
    (no running ones) or has another dtype than the weight."""
    if bn.running_mean is None or np.dtype(bn.dtype) != fused.weight.dtype:
        return False
    c = fused.channels
    var = bn.running_var.astype(np.float64)
    scale = 1.0 / np.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean.astype(np.float64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    w = fused.weight.astype(np.float64)
    if fused.kind == "conv_transpose2d":  # (kh, kw, C_out // groups, C_in): channel g*cog + o
        kh, kw, cog, cin = w.shape
        groups = fused.groups
        per_out = scale.reshape(groups, cog).T[None, None, :, :, None]
        w = (w.reshape(kh, kw, cog, groups, cin // groups) * per_out).reshape(w.shape)
    else:  # the output channels (features) are the last axis
        w = w * scale
    bias = shift if fused.bias is None else fused.bias.astype(np.float64) * scale + shift
    dtype = fused.weight.dtype
    fused.weight = np.ascontiguousarray(w, dtype)
    fused.grads["weight"] = np.zeros_like(fused.weight)
    fused._init_param("bias", bias.astype(dtype).reshape(c))
    return True


__all__ = ["Activation", "FusedConv", "FusedSeparableConv", "InferenceGraph", "PostOps",
           "optimize_for_inference"]
