"""Neural-network layers on NumPy arrays: NHWC activations, HWIO conv weights.

    model = Sequential(Conv2d(1, 8, 3, padding=1, rng=0), ReLU(), MaxPool2d(2),
                       Flatten(), Linear(8 * 4 * 4, 10, rng=0))
    y = model(x)                    # forward; remembers what backward needs
    grad_x = model.backward(grad_y) # input gradient; parameter gradients accumulate
    model.zero_grad()

A layer called in training mode (the default) keeps what its backward needs, and frees it
when backward has run; after `.eval()` a forward keeps nothing (inference), and backward is
an error. Don't modify a layer's input in place between its forward and its backward.

Parameters are NumPy arrays on the layer (`weight`, `bias`), their gradients in the dict
`layer.grads` (same names); `parameters()` yields `(name, value, grad)`. Parameters and
gradients are always updated in place, so references to them stay valid.
Weights: Conv2d (kh, kw, C_in // groups, C_out); ConvTranspose2d (kh, kw, C_out // groups,
C_in) (the weight of the convolution it is the adjoint of); Linear (in_features,
out_features), so that y = x @ weight + bias (PyTorch's Linear weight transposed).
DepthwiseConv2d is a Conv2d with groups=in_channels; SeparableConv2d is a DepthwiseConv2d
then a 1x1 Conv2d, kept as its sub-layers `depthwise` and `pointwise` (parameters
"depthwise.weight", "pointwise.weight", "pointwise.bias").
`from_torch(module)` converts PyTorch modules. Everything here calls fastconv.functional and
fastconv.pooling.
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _params, _plan, activations, functional, normalization, pooling, resample
from fastconv import _algorithms
from fastconv._threads import matmul

_NHWC_3_OR_4 = "(H, W, C) or (N, H, W, C) [NHWC]"


def _fmt_pair(pair) -> str:
    return f"({pair[0]}, {pair[1]})"


class Layer:
    """The base class: forward by call, backward, parameters, state dict, train/eval."""

    #: names of the parameter attributes, in state-dict order (None values are skipped)
    param_names: tuple[str, ...] = ()
    #: names of the buffer attributes (non-trainable state such as BatchNorm's running
    #: statistics), in state-dict order after the parameters (None values are skipped)
    buffer_names: tuple[str, ...] = ()
    #: True when forward returns a new array that the layer does not keep (so the next
    #: layer may overwrite it: Sequential then runs a following ReLU in place)
    _output_is_private = False

    def __init__(self):
        self.training = True
        self.grads: dict[str, np.ndarray] = {}
        self._saved: dict | None = None

    # -- running ---------------------------------------------------------------------------
    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def backward_params(self, grad_output) -> None:
        """backward() where the input's gradient is not wanted, as in a training step, whose
        input is data (PyTorch computes no gradient for a tensor that does not require one):
        the parameters' gradients are accumulated as by backward(), and nothing is returned.
        Convolutions and Linear skip their input's gradient (unless a subclass has a
        backward of its own); containers (Sequential, graphs) compute no gradient that
        reaches only their input: a layer that takes the input runs its backward_params(),
        and a layer whose parameters() yields nothing before the first one with parameters
        does not run backward at all (what it kept is dropped by its next forward). Other
        layers run backward() and drop its result. Errors as backward()."""
        # a class with a cheaper form defines _backward_params; a subclass's own backward
        # must run rather than be skipped
        owner = next((c for c in type(self).__mro__ if "_backward_params" in vars(c)), None)
        if owner is not None and type(self).backward is owner.backward:
            self._backward_params(grad_output)
        else:
            self.backward(grad_output)

    def _has_params(self) -> bool:
        return next(iter(self.parameters()), None) is not None

    def _save(self, **items) -> None:
        """Keep what backward needs (only in training mode)."""
        self._saved = items if self.training else None

    def _take(self, grad_output) -> tuple[np.ndarray, dict]:
        """The saved forward state (released: one backward per forward) and grad_output,
        checked against the forward output's shape."""
        name = type(self).__name__
        if self._saved is None:
            why = ("it is in eval mode, whose forward keeps nothing; call .train() first"
                   if not self.training else
                   "no forward pass has run since the last backward (one backward per "
                   "forward: a layer used at two places in a network keeps only its last "
                   "input, so give each place its own layer)")
            raise RuntimeError(f"{name}.backward: nothing to go back through: {why}")
        grad = _params.as_array("grad_output", grad_output)
        expected = self._saved["out_shape"]
        if grad.shape != expected:
            raise ValueError(f"{name}.backward: expected grad_output of shape {expected} (the "
                             f"shape of the forward output), but got {grad.shape}")
        saved, self._saved = self._saved, None
        return grad, saved

    def train(self, mode: bool = True) -> "Layer":
        """Training mode (forward keeps what backward needs) or, with mode=False, eval mode."""
        mode = _params.as_bool("mode", mode)
        if not mode:
            self._saved = None
        # switching modes drops packed weights (_plan). A plain layer keeps them when the mode
        # stays (it compares its weight with them at every call), so that a loop calling
        # model.eval() before every call does not pack again each time; a layer that trusts
        # its packs without that check (an optimize_for_inference model's) drops them
        packs = self.__dict__.get("_packs")
        if packs is not None and (mode != self.training or not packs.verify):
            packs.clear()
        self.training = mode
        return self

    def eval(self) -> "Layer":
        """Eval (inference) mode: forward keeps nothing."""
        return self.train(False)

    # -- parameters ------------------------------------------------------------------------
    def parameters(self):
        """Yield (name, value, grad) for every parameter (the layer's own arrays, which
        optimizers update in place)."""
        for name in self.param_names:
            value = getattr(self, name)
            if value is not None:
                yield name, value, self.grads[name]

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for _, _, grad in self.parameters():
            grad.fill(0)

    def buffers(self):
        """Yield (name, value) for every buffer (non-trainable state, updated in place)."""
        for name in self.buffer_names:
            value = getattr(self, name)
            if value is not None:
                yield name, value

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: copy}: the parameters, then the buffers."""
        state = {name: value.copy() for name, value, _ in self.parameters()}
        state.update((name, value.copy()) for name, value in self.buffers())
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy parameters and buffers in place from {name: array} (cast to their dtypes).

        Everything is checked before anything is copied: missing or unexpected keys (unless
        strict=False) and wrong shapes raise ValueError, non-numeric arrays (or floats for an
        integer buffer) TypeError.
        """
        name = type(self).__name__
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"{name}.load_state_dict: expected a dict of arrays, but got "
                            f"{type(state_dict).__name__}")
        strict = _params.as_bool("strict", strict)
        targets = {key: value for key, value, _ in self.parameters()}
        targets.update(self.buffers())
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        if strict and (missing or unexpected):
            raise ValueError(f"{name}.load_state_dict: missing keys {missing}, unexpected keys "
                             f"{unexpected}")
        loads = []
        for key, target in targets.items():
            if key not in state_dict:
                continue
            value = _params.as_array(f"state_dict[{key!r}]", state_dict[key])
            if value.shape != target.shape:
                raise ValueError(f"{name}.load_state_dict: expected {key!r} of shape "
                                 f"{target.shape}, but got {value.shape}")
            if not np.can_cast(value.dtype, target.dtype, "same_kind"):
                raise TypeError(f"{name}.load_state_dict: expected {key!r} of a dtype that "
                                f"casts to {target.dtype}, but got {value.dtype}")
            loads.append((target, value))
        for target, value in loads:
            np.copyto(target, value, casting="same_kind")
            _plan.bump(target)  # weights packed from it are stale

    def _init_param(self, name: str, value: np.ndarray) -> None:
        setattr(self, name, value)
        self.grads[name] = np.zeros_like(value)

    def _accumulate(self, name: str, grad) -> None:
        if getattr(self, name) is not None and grad is not None:
            self.grads[name] += grad

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(dtype)


def _kaiming_init(layer: Layer, weight_shape, fan_in: int, bias_size: int | None, rng,
                  dtype) -> None:
    """PyTorch's default: Kaiming-uniform with a=sqrt(5), which is U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) for the weight, and the same bound for the bias (None: no bias)."""
    rng = _params.as_rng(rng)
    bound = 1 / math.sqrt(fan_in)
    layer._init_param("weight", _uniform(rng, bound, weight_shape, dtype))
    layer.bias = None
    if bias_size is not None:
        layer._init_param("bias", _uniform(rng, bound, (bias_size,), dtype))


class _ConvBase(Layer):
    param_names = ("weight", "bias")
    _output_is_private = True

    def _setup(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
               groups, bias, dtype, algorithm):
        self.in_channels = _params.as_int("in_channels", in_channels, 1)
        self.out_channels = _params.as_int("out_channels", out_channels, 1)
        self.groups = _params.as_int("groups", groups, 1)
        _params.check_divisible("in_channels", self.in_channels, self.groups)
        _params.check_divisible("out_channels", self.out_channels, self.groups)
        self.kernel_size = _params.as_pair("kernel_size", kernel_size, 1)
        self.stride = _params.as_pair("stride", stride, 1)
        self.dilation = _params.as_pair("dilation", dilation, 1)
        # checks the spec now (the input size only matters for "same")
        _params.padding_pairs(padding, self.kernel_size, self.stride, self.dilation,
                              self.kernel_size)
        self.padding = padding
        self.dtype = _params.layer_dtype(dtype)
        # refused now rather than at the first call (a kernel that cannot serve the layer)
        self.algorithm = _algorithms.check_kernel(type(self).__name__, algorithm,
                                                  self.kernel_size, self.stride, self.dilation)
        return _params.as_bool("bias", bias)

    def _input(self, x) -> np.ndarray:
        x = _params.as_array("input", x)
        if x.ndim not in (3, 4) or x.shape[-1] != self.in_channels:
            _params.check_channels(self, x, self.in_channels, (3, 4), _NHWC_3_OR_4)
        return x

    def __getstate__(self):
        # plans and packs are caches, rebuilt at the first call of a copy or unpickled layer
        state = self.__dict__.copy()
        state.pop("_plans", None)
        state.pop("_packs", None)
        return state

    def _accumulate_weight(self, held, grad_weight, grad_bias) -> None:
        """The gradients of a backward given `held`, grads["weight"] as it was: the weight's
        is in it already, unless it was no array (then added as _accumulate adds)."""
        if grad_weight is not held:
            self._accumulate("weight", grad_weight)
        self._accumulate("bias", grad_bias)

    def forward(self, x):
        x = self._input(x)
        y = self._planned_forward(x)
        self._save(x=x, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        return self._backward(grad_output, ("input",))

    def _backward_params(self, grad_output) -> None:
        self._backward(grad_output, ())

    def _backward(self, grad_output, input_needs: tuple):
        """backward with `input_needs` ("input" or nothing) besides the parameters."""
        raise NotImplementedError

    def _planned_forward(self, x: np.ndarray) -> np.ndarray:
        """The forward through the layer's plan for x's shape (fastconv._plan): checks,
        geometry and algorithm made once per shape; the packed weight is kept while the
        weight's values are unchanged (compared at every call, so any change to it, in place
        or not, is seen)."""
        batched = x if x.ndim == 4 else x[None]
        y = _plan.plan_for(self, batched).run(batched, self.weight, self.bias,
                                              _plan.packs_of(self, verify=True))
        return y if x.ndim == 4 else y[0]

    def plan(self, input_shape, dtype=None):
        """The layer's plan (fastconv._plan.ConvPlan) for inputs of `input_shape` (N, H, W,
        C) and `dtype` (default: the layer's), as a forward call makes it; its describe()
        says what runs. ValueError/TypeError as forward for a shape that cannot serve."""
        shape = tuple(_params.as_tuple("input_shape", input_shape, 4, 0))
        stand_in = np.lib.stride_tricks.as_strided(
            np.zeros(1, self.dtype if dtype is None else np.dtype(dtype)), shape, (0,) * 4)
        return _plan.plan_for(self, self._input(stand_in))

    def extra_repr(self) -> str:
        return ", ".join(self._repr_parts())

    def _repr_parts(self) -> list[str]:
        parts = [f"{self.in_channels}, {self.out_channels}",
                 f"kernel_size={_fmt_pair(self.kernel_size)}",
                 f"stride={_fmt_pair(self.stride)}"]
        if self.padding != 0:
            parts.append(f"padding={self.padding!r}")
        if getattr(self, "output_padding", (0, 0)) != (0, 0):
            parts.append(f"output_padding={_fmt_pair(self.output_padding)}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={_fmt_pair(self.dilation)}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        if getattr(self, "padding_mode", "zeros") != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        if self.dtype != np.float32:
            parts.append(f"dtype={self.dtype}")
        if self.algorithm != "auto":
            parts.append(f"algorithm={self.algorithm!r}")
        return parts


class Conv2d(_ConvBase):
    """2-D convolution layer: weight (kh, kw, in_channels // groups, out_channels) [HWIO],
    bias (out_channels,); see fastconv.conv2d."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=np.float32, algorithm="auto",
                 rng=None):
        super().__init__()
        bias = self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, dtype, algorithm)
        self.padding_mode = _params.padding_mode(padding_mode)
        kh, kw = self.kernel_size
        cig = self.in_channels // self.groups
        _kaiming_init(self, (kh, kw, cig, self.out_channels), cig * kh * kw,
                      self.out_channels if bias else None, rng, self.dtype)

    _plan_kind = "conv2d"

    def _backward(self, grad_output, input_needs: tuple):
        grad, saved = self._take(grad_output)
        needs = input_needs + ("weight",) + (("bias",) if self.bias is not None else ())
        # the weight's gradient is summed into self.grads by the kernel where it can
        held = self.grads["weight"]
        x = saved["x"]
        batched = x if x.ndim == 4 else x[None]
        # the forward's plan: its checks, geometry and padding mode hold for this backward
        gx, gw, gb = _plan.plan_for(self, batched).backward(
            grad.reshape(batched.shape[0], *grad.shape[-3:]), batched, self.weight, needs, held)
        self._accumulate_weight(held, gw, gb)
        return gx if gx is None or x.ndim == 4 else gx[0]


class ConvTranspose2d(_ConvBase):
    """2-D transposed convolution layer: weight (kh, kw, out_channels // groups, in_channels)
    (the HWIO weight of the convolution it is the adjoint of), bias (out_channels,); see
    fastconv.conv_transpose2d. PyTorch's weight converts with .transpose(2, 3, 1, 0)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, dtype=np.float32,
                 algorithm="auto", rng=None):
        super().__init__()
        bias = self._setup(in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, dtype, algorithm)
        self.output_padding = _params.as_pair("output_padding", output_padding, 0)
        kh, kw = self.kernel_size
        cog = self.out_channels // self.groups
        # PyTorch's fan_in for a transposed conv: (out_channels // groups) * kh * kw
        _kaiming_init(self, (kh, kw, cog, self.in_channels), cog * kh * kw,
                      self.out_channels if bias else None, rng, self.dtype)

    _plan_kind = "conv_transpose2d"

    def _backward(self, grad_output, input_needs: tuple):
        grad, saved = self._take(grad_output)
        needs = input_needs + ("weight",) + (("bias",) if self.bias is not None else ())
        held = self.grads["weight"]
        gx, gw, gb = functional._conv_transpose2d_backward(
            "conv_transpose2d_backward", False, grad, saved["x"], self.weight, self.stride,
            self.padding, self.output_padding, self.dilation, self.groups, self.algorithm,
            needs, held)
        self._accumulate_weight(held, gw, gb)
        return gx


class DepthwiseConv2d(Conv2d):
    """Depthwise 2-D convolution (Keras' DepthwiseConv2D; PyTorch's Conv2d with
    groups=in_channels): every input channel is convolved with `depth_multiplier` filters of
    its own, giving in_channels * depth_multiplier output channels; channel c's outputs are
    c * depth_multiplier + m, for m < depth_multiplier.

    It is Conv2d(in_channels, in_channels * depth_multiplier, kernel_size, groups=in_channels,
    ...): weight (kh, kw, 1, in_channels * depth_multiplier) [HWIO], bias
    (in_channels * depth_multiplier,), PyTorch's initialisation for that Conv2d (fan_in =
    kh * kw). Keras' depthwise kernel (kh, kw, C, M) is `weight.reshape(kh, kw, C, M)`.
    """

    def __init__(self, in_channels, kernel_size, depth_multiplier=1, stride=1, padding=0,
                 dilation=1, bias=True, padding_mode="zeros", dtype=np.float32,
                 algorithm="auto", rng=None):
        in_channels = _params.as_int("in_channels", in_channels, 1)
        self.depth_multiplier = _params.as_int("depth_multiplier", depth_multiplier, 1)
        super().__init__(in_channels, in_channels * self.depth_multiplier, kernel_size,
                         stride, padding, dilation, in_channels, bias, padding_mode, dtype,
                         algorithm, rng)

    def _repr_parts(self) -> list[str]:
        # Conv2d's words, with in_channels alone and depth_multiplier in place of groups
        parts = [p for p in super()._repr_parts()[1:] if not p.startswith("groups=")]
        if self.depth_multiplier != 1:
            parts.insert(1, f"depth_multiplier={self.depth_multiplier}")
        return [str(self.in_channels)] + parts


class SeparableConv2d(Layer):
    """Depthwise separable 2-D convolution (Keras' SeparableConv2D, MobileNet's block without
    the batch norm and ReLU in between): a DepthwiseConv2d (kernel_size, depth_multiplier,
    stride, padding, dilation, padding_mode), then a 1x1 Conv2d from
    in_channels * depth_multiplier to out_channels.

    The steps are the sub-layers `depthwise` and `pointwise`; the parameters are named as
    theirs: "depthwise.weight" (kh, kw, 1, in_channels * depth_multiplier), "pointwise.weight"
    (1, 1, in_channels * depth_multiplier, out_channels) and "pointwise.bias" (out_channels,)
    (absent with bias=False); their gradients are in the sub-layers' `grads` (and in
    parameters()). The depthwise step has no bias, as in Keras: the pointwise step
    is linear, so a bias there would only add a constant per output channel, which the
    pointwise bias already is. Each step is initialised as PyTorch initialises that Conv2d
    (fan_in kh * kw, then in_channels * depth_multiplier), from one generator `rng`.
    Keras' depthwise_kernel (kh, kw, C, M) is depthwise.weight.reshape(kh, kw, C, M), its
    pointwise_kernel is pointwise.weight.

    A k x k separable conv costs k*k*C*M + C*M*C_out multiply-adds per output pixel instead of
    a full conv's k*k*C*C_out.
    """

    _output_is_private = True

    def __init__(self, in_channels, out_channels, kernel_size, depth_multiplier=1, stride=1,
                 padding=0, dilation=1, bias=True, padding_mode="zeros", dtype=np.float32,
                 algorithm="auto", rng=None):
        super().__init__()
        rng = _params.as_rng(rng)
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, depth_multiplier, stride,
                                         padding, dilation, False, padding_mode, dtype,
                                         algorithm, rng)
        d = self.depthwise
        self.pointwise = Conv2d(d.out_channels, out_channels, 1, bias=bias, dtype=d.dtype,
                                algorithm=algorithm, rng=rng)
        self.in_channels, self.out_channels = d.in_channels, self.pointwise.out_channels
        self.depth_multiplier, self.kernel_size = d.depth_multiplier, d.kernel_size
        self.stride, self.padding, self.dilation = d.stride, d.padding, d.dilation
        self.padding_mode, self.dtype, self.algorithm = d.padding_mode, d.dtype, d.algorithm

    def forward(self, x):
        x = _params.as_array("input", x)
        _params.check_channels(self, x, self.in_channels, (3, 4), _NHWC_3_OR_4)
        y = self.pointwise(self.depthwise(x))
        self._save(out_shape=y.shape)  # the sub-layers keep what their backward needs
        return y

    def backward(self, grad_output):
        grad, _ = self._take(grad_output)  # checked here, so errors name this layer
        return self.depthwise.backward(self.pointwise.backward(grad))

    def _backward_params(self, grad_output) -> None:
        grad, _ = self._take(grad_output)
        self.depthwise.backward_params(self.pointwise.backward(grad))

    def train(self, mode: bool = True) -> "SeparableConv2d":
        super().train(mode)
        self.depthwise.train(mode)
        self.pointwise.train(mode)
        return self

    def parameters(self):
        for prefix in ("depthwise", "pointwise"):
            for name, value, grad in getattr(self, prefix).parameters():
                yield f"{prefix}.{name}", value, grad

    def extra_repr(self) -> str:
        # the depthwise step never has a bias: its "bias=False" stands for the pointwise one
        parts = [p for p in self.depthwise._repr_parts()[1:]
                 if p != "bias=False" or self.pointwise.bias is None]
        return ", ".join([f"{self.in_channels}, {self.out_channels}"] + parts)


class Linear(Layer):
    """Fully connected layer on the last axis: y = x @ weight + bias, weight
    (in_features, out_features) (PyTorch's Linear weight transposed), bias (out_features,)."""

    param_names = ("weight", "bias")
    _output_is_private = True

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = _params.as_int("in_features", in_features, 1)
        self.out_features = _params.as_int("out_features", out_features, 1)
        self.dtype = _params.layer_dtype(dtype)
        bias = _params.as_bool("bias", bias)
        _kaiming_init(self, (self.in_features, self.out_features), self.in_features,
                      self.out_features if bias else None, rng, self.dtype)

    def forward(self, x):
        x = _params.as_array("input", x)
        _params.check_channels(self, x, self.in_features, None, "(..., in_features)",
                               "features")
        dtype = _params.float_dtype(x, self.weight)
        y = matmul(x.astype(dtype, copy=False), self.weight.astype(dtype, copy=False),
                   bias=self.bias)
        self._save(x=x, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, dtype = self._parameter_grads(grad_output)
        return matmul(grad.astype(dtype, copy=False), self.weight.T.astype(dtype, copy=False))

    def _backward_params(self, grad_output) -> None:
        self._parameter_grads(grad_output)

    def _parameter_grads(self, grad_output):
        """Accumulates the parameters' gradients; returns grad_output and the dtype of the
        products."""
        grad, saved = self._take(grad_output)
        x = saved["x"]
        dtype = _params.float_dtype(grad, x, self.weight)
        g2 = grad.reshape(-1, self.out_features).astype(dtype, copy=False)
        x2 = x.reshape(-1, self.in_features).astype(dtype, copy=False)
        held = self.grads["weight"]
        if isinstance(held, np.ndarray) and held.shape == self.weight.shape:
            functional._linear_weight_gradient(x2, g2, held)  # summed into it
        else:
            self._accumulate("weight", functional._linear_weight_gradient(x2, g2))
        self._accumulate("bias", g2.sum(axis=0))
        return grad, dtype

    def extra_repr(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        dtype = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return f"in_features={self.in_features}, out_features={self.out_features}{bias}{dtype}"


def _check_overwritable(layer: Layer, x: np.ndarray, dtypes=(np.float32, np.float64)) -> None:
    """The input of a layer that overwrites it (inplace=True): a writeable array of one of
    `dtypes`; TypeError naming the layer otherwise."""
    if x.dtype not in dtypes or not x.flags.writeable:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{layer!r}: inplace=True needs a writeable {names} array to "
                        f"overwrite, but got a {'' if x.flags.writeable else 'read-only '}"
                        f"{x.dtype} array")


class ReLU(Layer):
    """max(x, 0) elementwise; keeps only a boolean mask for backward. inplace=True overwrites
    the (float) input, as PyTorch's."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = _params.as_bool("inplace", inplace)
        self._output_is_private = not self.inplace

    def forward(self, x):
        return self._forward(x, in_place=self.inplace)

    def _forward(self, x, in_place: bool):
        x = _params.as_array("input", x)
        if in_place:
            _check_overwritable(self, x)
        if not self.training:
            return pooling.relu(x, out=x) if in_place else pooling.relu(x)
        # relu_backward only asks "x > 0 or NaN", which the mask answers for 1/4 of the memory
        y, mask = pooling._relu_with_mask(x, in_place)
        self._save(mask=mask, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return pooling.relu_backward(grad, saved["mask"])

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class _SettingsNoted:
    """A layer whose kernel calls an inference graph keeps and replays (fastconv.inference,
    _plan.changes()): setting one of its public attributes (a setting, a weight) counts as a
    change, so that those calls are checked again before they run; a list is kept as a
    tuple (a change in place would go unseen)."""

    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_"):
            _plan.note_change()
            value = _frozen(value)
        super().__setattr__(name, value)


def _frozen(value):
    """value with its lists (nested too) made tuples."""
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


class _PoolBase(Layer):
    _output_is_private = True

    def _input(self, x) -> np.ndarray:
        x = _params.as_array("input", x)
        _params.check_ndim("input", x, (3, 4), _NHWC_3_OR_4)
        return x

    @staticmethod
    def _stand_in(shape, dtype) -> np.ndarray:
        """An array of the input's shape and dtype costing no memory: the backward passes
        only read x's shape and dtype when given what the forward kept."""
        return np.broadcast_to(np.zeros((), dtype), shape)


class MaxPool2d(_SettingsNoted, _PoolBase):
    """2-D max pooling (see fastconv.max_pool2d); keeps only the indices for backward.

    ceil_mode is keyword-only: PyTorch's MaxPool2d has return_indices in its place.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, *, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = _params.pool_pairs(kernel_size, stride,
                                                                          dilation)
        self.padding = padding
        self.ceil_mode = _params.as_bool("ceil_mode", ceil_mode)
        # checks padding against PyTorch's rule now, on an input just big enough
        _params.pool_geometry("MaxPool2d", (1, 2 * self.kernel_size[0] * self.dilation[0],
                                            2 * self.kernel_size[1] * self.dilation[1], 1),
                              self.kernel_size, self.stride, padding, self.dilation, False)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    def _inference_kernel(self, x: np.ndarray):
        """This layer on the 4-D x as one kernel call (pooling._max_pool2d_kernel), for an
        inference graph's arena; None where it is not one."""
        return pooling._max_pool2d_kernel(x, **self._args()) if x.ndim == 4 else None

    def forward(self, x):
        x = self._input(x)
        if not self.training:  # nothing for backward: the maxima alone, faster
            return pooling.max_pool2d(x, **self._args())
        y, idx = pooling.max_pool2d(x, return_indices=True, **self._args())
        self._save(indices=idx, shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return pooling.max_pool2d_backward(grad, self._stand_in(saved["shape"], saved["dtype"]),
                                           indices=saved["indices"], **self._args())

    def extra_repr(self) -> str:
        parts = [f"kernel_size={_fmt_pair(self.kernel_size)}", f"stride={_fmt_pair(self.stride)}",
                 f"padding={self.padding!r}"]
        if self.dilation != (1, 1):
            parts.append(f"dilation={_fmt_pair(self.dilation)}")
        parts.append(f"ceil_mode={self.ceil_mode}")
        return ", ".join(parts)


class AvgPool2d(_PoolBase):
    """2-D average pooling (see fastconv.avg_pool2d); keeps only the input's shape.

    dilation (ONNX's; PyTorch's AvgPool2d has none) is keyword-only, after PyTorch's
    arguments.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None, *, dilation=1):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = _params.pool_pairs(kernel_size, stride,
                                                                          dilation)
        self.padding = padding
        self.ceil_mode = _params.as_bool("ceil_mode", ceil_mode)
        self.count_include_pad = _params.as_bool("count_include_pad", count_include_pad)
        self.divisor_override = None if divisor_override is None else _params.as_int(
            "divisor_override", divisor_override, 1)
        _params.pool_geometry("AvgPool2d", (1, 2 * self.kernel_size[0] * self.dilation[0],
                                            2 * self.kernel_size[1] * self.dilation[1], 1),
                              self.kernel_size, self.stride, padding, self.dilation, False)

    def _args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override, dilation=self.dilation)

    def forward(self, x):
        x = self._input(x)
        y = pooling.avg_pool2d(x, **self._args())
        self._save(shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return pooling.avg_pool2d_backward(grad, self._stand_in(saved["shape"], saved["dtype"]),
                                           **self._args())

    def extra_repr(self) -> str:
        text = (f"kernel_size={_fmt_pair(self.kernel_size)}, stride={_fmt_pair(self.stride)}, "
                f"padding={self.padding!r}, ceil_mode={self.ceil_mode}, "
                f"count_include_pad={self.count_include_pad}")
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        if self.dilation != (1, 1):
            text += f", dilation={_fmt_pair(self.dilation)}"
        return text


class Flatten(_SettingsNoted, Layer):
    """Flattens axes start_dim..end_dim (default: all but the batch axis) into one.

    An NHWC feature map flattens in (H, W, C) order, not PyTorch's (C, H, W); with
    channels_first=True a 4-D input (N, H, W, C) is flattened in PyTorch's (C, H, W) order
    (end_dim must then be the last axis), so a Linear after it takes PyTorch's weight as it is
    (transposed): what from_torch uses. Inputs of other ranks flatten as they are.
    """

    def __init__(self, start_dim=1, end_dim=-1, *, channels_first=False):
        super().__init__()
        self.start_dim = _params.as_int("start_dim", start_dim)
        self.end_dim = _params.as_int("end_dim", end_dim)
        self.channels_first = _params.as_bool("channels_first", channels_first)

    def forward(self, x):
        x = _params.as_array("input", x)
        start, end = (d + x.ndim if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not 0 <= start <= end < x.ndim:
            raise ValueError(f"{self!r}: cannot flatten dimensions {self.start_dim} to "
                             f"{self.end_dim} of an input of shape {x.shape}")
        shape = x.shape
        if self.channels_first and x.ndim == 4:
            if end != 3:
                raise ValueError(f"{self!r}: a (C, H, W)-order flatten of an input of shape "
                                 f"{x.shape} must end at the last axis")
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW: PyTorch's element order
        # the flattened size spelled out: reshape cannot infer a -1 next to a 0-size axis
        y = x.reshape(*x.shape[:start], math.prod(x.shape[start:end + 1]), *x.shape[end + 1:])
        self._save(shape=shape, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        if self.channels_first and len(saved["shape"]) == 4:
            n, h, w, c = saved["shape"]
            return grad.reshape(n, c, h, w).transpose(0, 2, 3, 1)
        return grad.reshape(saved["shape"])

    def extra_repr(self) -> str:
        order = ", channels_first=True" if self.channels_first else ""
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}{order}"


# ----------------------------------------------------------------------------------------------
# normalisation

class _BatchNorm(Layer):
    """Batch normalisation over the last (channel) axis; see fastconv.batch_norm."""

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _output_is_private = True
    _ndims: tuple[int, ...] = ()
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32):
        super().__init__()
        self.num_features = _params.as_int("num_features", num_features, 1)
        self.eps = _params.as_float("eps", eps, 0.0)
        self.momentum = None if momentum is None else _params.as_float("momentum", momentum)
        self.affine = _params.as_bool("affine", affine)
        self.track_running_stats = _params.as_bool("track_running_stats", track_running_stats)
        self.dtype = _params.layer_dtype(dtype)
        c = self.num_features
        self.weight = self.bias = None
        if self.affine:  # PyTorch's initialisation: weight 1, bias 0
            self._init_param("weight", np.ones(c, self.dtype))
            self._init_param("bias", np.zeros(c, self.dtype))
        self.running_mean = self.running_var = self.num_batches_tracked = None
        if self.track_running_stats:
            self.running_mean = np.zeros(c, self.dtype)
            self.running_var = np.ones(c, self.dtype)
            self.num_batches_tracked = np.array(0, np.int64)

    def forward(self, x):
        x = _params.as_array("input", x)
        # the layer itself names it in errors: its repr is made only for an error message
        _params.check_channels(self, x, self.num_features, self._ndims, self._layout)
        # PyTorch's rules: the running statistics move only in training mode; momentum None
        # makes them the cumulative average of the batches seen
        counting = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if counting and self.momentum is None:
            factor = 1.0 / (int(self.num_batches_tracked) + 1)
        batch_stats = self.training or self.running_mean is None
        y, mean, var = normalization.batch_norm_forward(
            self, x, self.running_mean, self.running_var, self.weight, self.bias,
            batch_stats, factor, self.eps)
        if counting:  # after the checks: a refused batch does not count
            self.num_batches_tracked += 1
        self._save(x=x, mean=mean, var=var, batch_stats=batch_stats, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        needs = ("input", "weight", "bias") if self.affine else ("input",)
        gx, gw, gb = normalization.batch_norm_backward(
            grad, saved["x"], saved["mean"], saved["var"], self.weight,
            training=saved["batch_stats"], eps=self.eps, needs=needs)
        self._accumulate("weight", gw)
        self._accumulate("bias", gb)
        return gx

    def extra_repr(self) -> str:
        dtype = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}{dtype}")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of NHWC feature maps (N, H, W, C) per channel (PyTorch's
    BatchNorm2d; see fastconv.batch_norm).

    Training mode normalises with the batch's mean and biased variance (over N, H, W) and
    updates the buffers running_mean / running_var (the unbiased variance) with `momentum`
    (None: the cumulative average, using num_batches_tracked, an int64 0-d array); eval mode
    normalises with the running statistics. track_running_stats=False: no buffers (None), batch
    statistics always. affine: the parameters weight (ones) and bias (zeros), (C,). Buffers
    and parameters have the layer's dtype; the state dict holds weight, bias, running_mean,
    running_var, num_batches_tracked (PyTorch's names and order).
    """

    _ndims = (4,)
    _layout = "(N, H, W, C) [NHWC]"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, L, C) arrays per channel (the last axis):
    PyTorch's BatchNorm1d with channels last; otherwise as BatchNorm2d."""

    _ndims = (2, 3)
    _layout = "(N, C) or (N, L, C) [channels last]"


# ----------------------------------------------------------------------------------------------
# activations

class _Activation(Layer):
    """An elementwise activation from fastconv.activations. Its backward reads the input
    (`_reads = "input"`), the output ("output"), or either ("either": the output after an
    in-place forward, the input otherwise). An in-place forward overwrites its input, so one
    whose backward reads the input keeps a copy of it; and a layer that keeps its output must
    not have it overwritten (by an in-place layer after it) before its backward."""

    _reads = "input"
    inplace = False

    def _args(self) -> tuple:
        return ()

    def _function(self, x, *args, out=None):
        raise NotImplementedError

    def _gradient(self, grad, saved, *args):
        raise NotImplementedError

    def _set_inplace(self, inplace) -> None:
        self.inplace = _params.as_bool("inplace", inplace)

    @property
    def _output_is_private(self):
        return not self.inplace and self._reads != "output"

    def forward(self, x):
        x = _params.as_array("input", x)
        reads_output = self._reads == "output" or (self._reads == "either" and self.inplace)
        if self.inplace:
            _check_overwritable(self, x)
            kept = x.copy() if self.training and not reads_output else None
            y = self._function(x, *self._args(), out=x)
        else:
            y = self._function(x, *self._args())
            kept = x
        self._save(saved=y if reads_output else kept, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return self._gradient(grad, saved["saved"], *self._args())

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class ReLU6(_Activation):
    """min(max(x, 0), 6) elementwise (see fastconv.relu6); inplace=True overwrites the input."""

    _reads = "either"

    def __init__(self, inplace=False):
        super().__init__()
        self._set_inplace(inplace)

    def _function(self, x, out=None):
        return activations.relu6(x, out=out)

    def _gradient(self, grad, saved):
        return activations.relu6_backward(grad, saved)


class LeakyReLU(_Activation):
    """x where x > 0, negative_slope * x elsewhere (see fastconv.leaky_relu)."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = _params.as_float("negative_slope", negative_slope)
        self._set_inplace(inplace)
        # with a slope >= 0 the output has the input's sign, which is all backward asks
        self._reads = "either" if self.negative_slope >= 0 else "input"

    def _args(self):
        return (self.negative_slope,)

    def _function(self, x, slope, out=None):
        return activations.leaky_relu(x, slope, out=out)

    def _gradient(self, grad, saved, slope):
        return activations.leaky_relu_backward(grad, saved, slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace
                                                          else "")


class ELU(_Activation):
    """x where x > 0, alpha * (exp(x) - 1) elsewhere (see fastconv.elu); backward reads the
    output (as PyTorch's), which needs alpha >= 0."""

    _reads = "output"

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = _params.as_float("alpha", alpha)
        self._set_inplace(inplace)

    def _args(self):
        return (self.alpha,)

    def _function(self, x, alpha, out=None):
        return activations.elu(x, alpha, out=out)

    def _gradient(self, grad, saved, alpha):
        return activations.elu_backward(grad, saved, alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class SiLU(_Activation):
    """x * sigmoid(x) elementwise (see fastconv.silu)."""

    def __init__(self, inplace=False):
        super().__init__()
        self._set_inplace(inplace)

    def _function(self, x, out=None):
        return activations.silu(x, out=out)

    def _gradient(self, grad, saved):
        return activations.silu_backward(grad, saved)


class Hardswish(_Activation):
    """x * relu6(x + 3) / 6 elementwise (see fastconv.hardswish)."""

    def __init__(self, inplace=False):
        super().__init__()
        self._set_inplace(inplace)

    def _function(self, x, out=None):
        return activations.hardswish(x, out=out)

    def _gradient(self, grad, saved):
        return activations.hardswish_backward(grad, saved)

    def extra_repr(self) -> str:
        return ""  # PyTorch's repr never shows it


class Hardsigmoid(_Activation):
    """relu6(x + 3) / 6 elementwise (see fastconv.hardsigmoid)."""

    def __init__(self, inplace=False):
        super().__init__()
        self._set_inplace(inplace)

    def _function(self, x, out=None):
        return activations.hardsigmoid(x, out=out)

    def _gradient(self, grad, saved):
        return activations.hardsigmoid_backward(grad, saved)

    def extra_repr(self) -> str:
        return ""


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)) elementwise (see fastconv.sigmoid); backward reads the output."""

    _reads = "output"

    def _function(self, x, out=None):
        return activations.sigmoid(x, out=out)

    def _gradient(self, grad, saved):
        return activations.sigmoid_backward(grad, saved)


class Tanh(_Activation):
    """tanh(x) elementwise (see fastconv.tanh); backward reads the output."""

    _reads = "output"

    def _function(self, x, out=None):
        return activations.tanh(x, out=out)

    def _gradient(self, grad, saved):
        return activations.tanh_backward(grad, saved)


class GELU(_Activation):
    """x * Phi(x) elementwise, exactly or with approximate="tanh" (see fastconv.gelu)."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in activations.GELU_APPROXIMATIONS:
            raise ValueError(f"approximate must be one of {activations.GELU_APPROXIMATIONS}, "
                             f"but got {approximate!r}")
        self.approximate = approximate

    def _args(self):
        return (self.approximate,)

    def _function(self, x, approximate, out=None):
        return activations.gelu(x, approximate, out=out)

    def _gradient(self, grad, saved, approximate):
        return activations.gelu_backward(grad, saved, approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(_Activation):
    """softmax along `dim` (default -1: the channels of NHWC; PyTorch's dim=1 of NCHW)."""

    _reads = "output"

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = _params.as_int("dim", dim)

    def _args(self):
        return (self.dim,)

    def _function(self, x, dim, out=None):
        return activations.softmax(x, dim)

    def _gradient(self, grad, saved, dim):
        return activations.softmax_backward(grad, saved, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax) along `dim` (default -1: the channels), see fastconv.log_softmax."""

    def _function(self, x, dim, out=None):
        return activations.log_softmax(x, dim)

    def _gradient(self, grad, saved, dim):
        return activations.log_softmax_backward(grad, saved, dim)


class PReLU(Layer):
    """x where x > 0, weight * x elsewhere (see fastconv.prelu), with a learnable weight of
    num_parameters slopes: 1 shared, or one per channel (the last axis), initialised to
    `init` (PyTorch's default 0.25)."""

    param_names = ("weight",)
    _output_is_private = True

    def __init__(self, num_parameters=1, init=0.25, dtype=np.float32):
        super().__init__()
        self.num_parameters = _params.as_int("num_parameters", num_parameters, 1)
        init = _params.as_float("init", init)
        self.dtype = _params.layer_dtype(dtype)
        self._init_param("weight", np.full(self.num_parameters, init, self.dtype))

    def forward(self, x):
        x = _params.as_array("input", x)
        if self.num_parameters > 1:
            _params.check_channels(self, x, self.num_parameters, None,
                                   "(..., C) [channels last]")
        y = activations.prelu(x, self.weight)
        self._save(x=x, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        gx, gw = activations.prelu_backward(grad, saved["x"], self.weight)
        self._accumulate("weight", gw)
        return gx

    def extra_repr(self) -> str:
        dtype = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return f"num_parameters={self.num_parameters}{dtype}"


# ----------------------------------------------------------------------------------------------
# adaptive pooling, resampling, dropout

def _fmt_size(size) -> str:
    return repr(tuple(size)) if isinstance(size, list) else repr(size)


class AdaptiveAvgPool2d(_SettingsNoted, _PoolBase):
    """Adaptive average pooling to output_size, an int or (Ho, Wo) with None keeping the
    input's size (see fastconv.adaptive_avg_pool2d); AdaptiveAvgPool2d(1) is global average
    pooling, giving (N, 1, 1, C). Keeps only the input's shape."""

    def __init__(self, output_size):
        super().__init__()
        resample._output_hw("AdaptiveAvgPool2d", output_size, (1, 1))  # checks it now
        self.output_size = output_size

    def _inference_kernel(self, x: np.ndarray):
        """Global average pooling of the 4-D x as one kernel call (resample.
        _global_avg_pool2d_kernel), for an inference graph's arena; None otherwise."""
        return resample._global_avg_pool2d_kernel(x, self.output_size) if x.ndim == 4 else None

    def forward(self, x):
        x = self._input(x)
        y = resample.adaptive_avg_pool2d(x, self.output_size)
        self._save(shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return resample.adaptive_avg_pool2d_backward(
            grad, self._stand_in(saved["shape"], saved["dtype"]), self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={_fmt_size(self.output_size)}"


class AdaptiveMaxPool2d(_PoolBase):
    """Adaptive max pooling to output_size (see fastconv.adaptive_max_pool2d); returns the
    pooled values and keeps only the indices of the maxima for backward."""

    def __init__(self, output_size):
        super().__init__()
        resample._output_hw("AdaptiveMaxPool2d", output_size, (1, 1))
        self.output_size = output_size

    def forward(self, x):
        x = self._input(x)
        y, idx = resample.adaptive_max_pool2d(x, self.output_size, return_indices=True)
        self._save(indices=idx, shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return resample.adaptive_max_pool2d_backward(
            grad, self._stand_in(saved["shape"], saved["dtype"]), self.output_size,
            indices=saved["indices"])

    def extra_repr(self) -> str:
        return f"output_size={_fmt_size(self.output_size)}"


class Upsample(_PoolBase):
    """Resizes H and W (see fastconv.interpolate): to `size`, or by `scale_factor`, with mode
    "nearest" or "bilinear" (align_corners for bilinear). Keeps only the input's shape."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        if isinstance(scale_factor, (tuple, list)):
            scale_factor = tuple(_params.as_positive_real(f"scale_factor[{i}]", f)
                                 for i, f in enumerate(scale_factor))
        elif scale_factor is not None:
            scale_factor = _params.as_positive_real("scale_factor", scale_factor)
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor
        resample._interpolate_plan("Upsample", (1, 1), **self._args())  # checks them now

    def _args(self):
        return dict(size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                    align_corners=self.align_corners,
                    recompute_scale_factor=self.recompute_scale_factor)

    def forward(self, x):
        x = self._input(x)
        y = resample.interpolate(x, **self._args())
        self._save(shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return resample.interpolate_backward(
            grad, self._stand_in(saved["shape"], saved["dtype"]), **self._args())

    def extra_repr(self) -> str:
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={_fmt_size(self.size)}"
        return f"{info}, mode={self.mode!r}"


class Dropout(Layer):
    """In training mode, zeroes each element with probability p and scales the others by
    1 / (1 - p) (PyTorch's Dropout); the identity in eval mode (returns the input itself).
    The zeros are drawn from `rng` (None, an int seed or a np.random.Generator), kept by the
    layer. inplace=True overwrites the (writeable float) input."""

    def __init__(self, p=0.5, inplace=False, rng=None):
        super().__init__()
        p = _params.as_float("p", p)
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability p must be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = _params.as_bool("inplace", inplace)
        self.rng = _params.as_rng(rng)

    @property
    def _output_is_private(self):
        return self.training and not self.inplace

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return x.shape

    def forward(self, x):
        x = _params.as_array("input", x)
        if not self.training:
            return x
        keep = self.rng.random(self._mask_shape(x)) >= self.p
        dtype = _params.float_dtype(x)
        # p = 1 drops everything (PyTorch gives zeros, not 0 / 0)
        factor = keep * dtype.type(0 if self.p == 1 else 1 / (1 - self.p))
        if self.inplace:
            _check_overwritable(self, x, (dtype,))
            y = np.multiply(x, factor, out=x)
        else:
            y = np.multiply(x, factor, dtype=dtype)
        self._save(factor=factor, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return grad * saved["factor"]

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout2d(Dropout):
    """Dropout of whole channels: in training mode each (sample, channel) of NHWC x
    (N, H, W, C) - or (H, W, C), one image - is zeroed with probability p, the others scaled by
    1 / (1 - p) (PyTorch's Dropout2d, channels last); the identity in eval mode."""

    def _mask_shape(self, x: np.ndarray) -> tuple[int, ...]:
        _params.check_ndim("input", x, (3, 4), _NHWC_3_OR_4)
        return (*x.shape[:-3], 1, 1, x.shape[-1])


class Identity(Layer):
    """Returns its input (the same array); backward returns grad_output."""

    def forward(self, x):
        x = _params.as_array("input", x)
        self._save(out_shape=x.shape)
        return x

    def backward(self, grad_output):
        grad, _ = self._take(grad_output)
        return grad


class Sequential(Layer):
    """Layers run in order; backward runs them in reverse. Parameters are named
    "<index>.<name>" as in PyTorch. A ReLU right after a layer that returns a new array of
    its own (conv, linear, pooling, ReLU) runs in place on it."""

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a fastconv.layers.Layer, but "
                                f"got {type(layer).__name__}")
        self.layers = list(layers)

    @property
    def _output_is_private(self):
        return bool(self.layers) and self.layers[-1]._output_is_private

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def forward(self, x):
        private = False  # the caller's array is never overwritten
        for layer in self.layers:
            if private and isinstance(layer, ReLU):
                x = layer._forward(x, in_place=True)
            else:
                x = layer(x)
            private = layer._output_is_private
        return x

    def backward(self, grad_output):
        grad = grad_output
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad

    def _backward_params(self, grad_output) -> None:
        if not self.layers:
            return
        # the layers before the first with parameters need no gradient at all
        first = next((i for i, layer in enumerate(self.layers) if layer._has_params()), 0)
        grad = grad_output
        for layer in reversed(self.layers[first + 1:]):
            grad = layer.backward(grad)
        self.layers[first].backward_params(grad)

    def train(self, mode: bool = True) -> "Sequential":
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def parameters(self):
        for i, layer in enumerate(self.layers):
            for name, value, grad in layer.parameters():
                yield f"{i}.{name}", value, grad

    def buffers(self):
        for i, layer in enumerate(self.layers):
            for name, value in layer.buffers():
                yield f"{i}.{name}", value

    def __repr__(self) -> str:
        if not self.layers:
            return "Sequential()"
        lines = []
        for i, layer in enumerate(self.layers):
            inner = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({i}): {inner}")
        return "Sequential(\n" + "\n".join(lines) + "\n)"


# ----------------------------------------------------------------------------------------------
# weights from PyTorch

def from_torch(module, input_shape=None) -> Layer:
    """The fastconv network computing what a PyTorch module computes, with its weights and
    buffers, for NHWC input (PyTorch's NCHW dimensions mapped onto NHWC).

    Converts any module that torch.fx.symbolic_trace can trace: an nn.Sequential becomes a
    Sequential, a single supported module its layer, anything else a fastconv.graph.Graph whose
    nodes are named by the module paths. Modules: Conv2d, ConvTranspose2d, Linear,
    BatchNorm1d/2d, ReLU, ReLU6, LeakyReLU, ELU, SiLU, Hardswish, Hardsigmoid, Sigmoid, Tanh,
    GELU, Softmax, LogSoftmax, PReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
    AdaptiveMaxPool2d, Flatten, Dropout, Dropout2d, Identity, Upsample (a parameterless module
    may be called several times), ZeroPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d.
    Functions: F.relu / relu6 / hardswish / hardsigmoid / silu / gelu / leaky_relu / elu /
    softmax / log_softmax, torch.sigmoid / tanh, + - * / of two tensors (NumPy broadcasting:
    fastconv.graph's Add, Binary, Mul) or of a tensor and a Python number on either side
    (x + 3, 1 - x, x / 6: fastconv.graph.Constant), also +=, -=, *=, /=, torch.add / sub
    (with alpha) / mul / div (rounding_mode=None), -x, F.pad of a feature map (mode
    "constant" with value, "reflect", "replicate"; fastconv.graph.Pad), torch.cat,
    torch.flatten, x.flatten(1), x.view(x.size(0), -1), x.reshape(N, -1),
    x.mean((2, 3), keepdim=...), F.adaptive_avg_pool2d / adaptive_max_pool2d / avg_pool2d /
    max_pool2d, F.interpolate (nearest, bilinear), F.dropout, x.relu(), x.contiguous().

    The result's state_dict() keys are the module's (`layer1.0.conv1.weight`,
    `bn1.num_batches_tracked`), the values in fastconv's layouts: see state_dict_from_torch,
    the one function that converts a PyTorch state_dict for load_state_dict. It is in
    training mode or eval mode as the module is. A flatten of a feature map keeps PyTorch's
    (C, H, W) order (Flatten(channels_first=True)), so Linear weights are PyTorch's transposed.
    input_shape (H, W, C) is accepted for compatibility and no longer needed.

    Errors: TypeError naming an unsupported module or function and its place (module path or
    fx node), or a model torch.fx cannot trace; ValueError for an unsupported option (e.g.
    MaxPool2d(return_indices=True), F.pad mode "circular") or a dimension with no NHWC
    equivalent (a flatten of H only, F.pad of a flattened value). Needs torch,
    imported only here.
    """
    from fastconv import _torch_import

    return _torch_import.from_torch(module, input_shape)


def state_dict_from_torch(module, state_dict=None) -> dict[str, np.ndarray]:
    """A PyTorch state_dict (default: module.state_dict()) in fastconv's layouts, for
    `from_torch(module).load_state_dict(...)`: the same keys, NumPy copies, Conv2d and
    ConvTranspose2d weights .transpose(2, 3, 1, 0) (OIHW -> HWIO, IOHW -> HW(O/g)I), Linear
    weights transposed to (in_features, out_features), the rest (biases, BatchNorm, PReLU,
    num_batches_tracked) as they are. `module` is the torch module of that architecture: it
    says which keys are conv and Linear weights."""
    from fastconv import _torch_import

    return _torch_import.state_dict_from_torch(module, state_dict)


# the graph containers live in fastconv.graph (they build on Layer above)
from fastconv.graph import Add, Concat, Graph, Merge, Mul, Parallel, Residual  # noqa: E402,F401
