"""PyTorch models to fastconv: from_torch and state_dict_from_torch (torch imported only here,
when called).

An nn.Sequential becomes a fastconv Sequential, a supported leaf module (Conv2d, BatchNorm2d,
ReLU, ...) the matching layer, and any other module is traced with torch.fx.symbolic_trace into
a fastconv Graph: each call_module node becomes a node named by the module's path (so the
state_dict keys are PyTorch's), each functional call (F.relu, torch.cat, + - * / of tensors or
with a number, F.pad, x.mean((2, 3)), torch.flatten, x.view(x.size(0), -1), F.interpolate, ...)
a node named by the fx node.
PyTorch's NCHW dimensions are mapped onto NHWC, which needs each value's layout: a value is a
"map" (an (N, C, H, W) tensor, made by a conv, a pool, a BatchNorm2d ...), "flat" (made by a
Linear, a flatten, a mean over H and W) or "input" (a model input: taken as an image for
dimension arguments, but a Linear may take it). Elementwise ops keep their input's layout.
"""
from __future__ import annotations

import ast
import operator

import numpy as np

from fastconv import _params
from fastconv import layers as L
from fastconv.graph import Add, Binary, Concat, Constant, Graph, Mul, Pad

MAP, FLAT, INPUT = "map", "flat", "input"
#: a torch dimension of a 4-D NCHW tensor -> the NHWC axis
_NCHW_TO_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


def from_torch(module, input_shape=None) -> L.Layer:
    """The fastconv network computing what a PyTorch module computes, for NHWC input.

    Converts any module that torch.fx.symbolic_trace can trace, built from the modules and
    functions fastconv has (see fastconv.layers.from_torch). The result's state_dict keys are
    the module's own, values in fastconv's layouts (state_dict_from_torch); it is in training
    mode or eval mode as the module is. input_shape is accepted for compatibility and unused
    (a flatten of a feature map now keeps PyTorch's (C, H, W) order by itself).
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module, but got "
                        f"{type(module).__name__}")
    if input_shape is not None:
        _params.as_tuple("input_shape", input_shape, 3, 1)
    layer, _ = _convert(module, "", INPUT)
    layer.load_state_dict(state_dict_from_torch(module))
    return layer.train(module.training)


def state_dict_from_torch(module, state_dict=None) -> dict[str, np.ndarray]:
    """A PyTorch state_dict in fastconv's layouts, for the load_state_dict of the network
    from_torch(module) made: same keys, NumPy copies; conv and transposed-conv weights
    permuted with .transpose(2, 3, 1, 0) (OIHW -> HWIO, IOHW -> HW(O/g)I), Linear weights
    transposed to (in_features, out_features), everything else as it is.

    module: the torch module the state_dict belongs to (it tells which keys are conv or
    Linear weights); state_dict: a state_dict of that architecture (default: the module's own).
    """
    import torch.nn as nn

    if state_dict is None:
        state_dict = module.state_dict()
    owners = dict(module.named_modules())
    converted = {}
    for key, value in state_dict.items():
        path, _, name = key.rpartition(".")
        owner = owners.get(path)
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if name == "weight" and isinstance(owner, (nn.Conv2d, nn.ConvTranspose2d)):
            array = array.transpose(2, 3, 1, 0)
        elif name == "weight" and isinstance(owner, nn.Linear):
            array = array.T
        converted[key] = np.array(array)  # a copy, C-contiguous
    return converted


def _convert(module, path: str, kind: str) -> tuple[L.Layer, str]:
    """(layer, layout of its output) for a module whose input has layout `kind`."""
    import torch.nn as nn

    if isinstance(module, nn.Sequential):
        layers = []
        for name, child in module.named_children():
            layer, kind = _convert(child, f"{path}{name}.", kind)
            layers.append(layer)
        return L.Sequential(*layers), kind
    if type(module) in _leaf_converters():
        return _leaf(module, path.rstrip(".") or type(module).__name__, kind)
    if type(module).__module__.startswith("torch.nn"):
        raise TypeError(f"from_torch: cannot convert {type(module).__name__}"
                        f"{_where(path.rstrip('.'))}; see fastconv.layers.from_torch for what "
                        f"converts")
    return _Tracer(module, path, kind).graph()


def _where(path: str) -> str:
    return f" (module {path!r})" if path else ""


def _dtype(module, path: str):
    import torch

    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    dtype = torch.float32 if tensor is None else tensor.dtype
    if dtype == torch.int64:  # only num_batches_tracked: BatchNorm without affine or stats
        dtype = torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"from_torch: {type(module).__name__}{_where(path)} has {dtype} "
                        f"weights; only float32 and float64 convert")
    return np.float32 if dtype == torch.float32 else np.float64


def _map_dim(dim: int, kind: str, ndim: int = 4) -> int:
    """PyTorch's dimension of an NCHW value as fastconv's NHWC axis."""
    if kind == FLAT:
        return dim
    return _NCHW_TO_NHWC[dim % ndim]


def _leaf_converters() -> dict:
    """{torch module type: function(module, kind) -> (layer, out kind)}."""
    import torch.nn as nn

    def conv(m, kind):
        layer = L.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                         m.dilation, m.groups, m.bias is not None, m.padding_mode,
                         _dtype(m, ""), rng=0)
        return layer, MAP

    def conv_transpose(m, kind):
        if m.padding_mode != "zeros":
            raise ValueError(f"from_torch: ConvTranspose2d with padding_mode="
                             f"{m.padding_mode!r} is not supported")
        layer = L.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                  m.padding, m.output_padding, m.groups, m.bias is not None,
                                  m.dilation, _dtype(m, ""), rng=0)
        return layer, MAP

    def linear(m, kind):
        if kind == MAP:
            raise ValueError("from_torch: a Linear on a 4-D feature map acts on W in PyTorch "
                             "(NCHW) but on C in fastconv (NHWC); it does not convert")
        return L.Linear(m.in_features, m.out_features, m.bias is not None, _dtype(m, ""),
                        rng=0), FLAT

    def batch_norm(name, out_kind):
        def make(m, kind):
            return getattr(L, name)(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                       dtype=_dtype(m, "")), out_kind
        return make

    def max_pool(m, kind):
        if m.return_indices:
            raise ValueError("from_torch: MaxPool2d(return_indices=True) returns a tuple; "
                             "fastconv's MaxPool2d layer returns only the pooled values")
        return L.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                           ceil_mode=bool(m.ceil_mode)), MAP

    def avg_pool(m, kind):
        return L.AvgPool2d(m.kernel_size, m.stride, m.padding, bool(m.ceil_mode),
                           bool(m.count_include_pad), m.divisor_override), MAP

    def adaptive(name):
        def make(m, kind):
            if getattr(m, "return_indices", False):
                raise ValueError("from_torch: AdaptiveMaxPool2d(return_indices=True) is not "
                                 "supported")
            return getattr(L, name)(m.output_size), MAP
        return make

    def softmax(name):
        def make(m, kind):
            if m.dim is None:
                raise ValueError(f"from_torch: {type(m).__name__}(dim=None) is not supported; "
                                 f"give the dim")
            return getattr(L, name)(_map_dim(m.dim, kind)), kind
        return make

    def flatten(m, kind):
        return _flatten(m.start_dim, m.end_dim, kind), FLAT

    def simple(make):
        return lambda m, kind: (make(m), kind)

    def pad(mode):
        return lambda m, kind: (_pad(m.padding, mode, getattr(m, "value", 0.0), kind), MAP)

    return {
        nn.Conv2d: conv,
        nn.ConvTranspose2d: conv_transpose,
        nn.Linear: linear,
        nn.BatchNorm2d: batch_norm("BatchNorm2d", MAP),
        nn.BatchNorm1d: batch_norm("BatchNorm1d", FLAT),
        nn.MaxPool2d: max_pool,
        nn.AvgPool2d: avg_pool,
        nn.AdaptiveAvgPool2d: adaptive("AdaptiveAvgPool2d"),
        nn.AdaptiveMaxPool2d: adaptive("AdaptiveMaxPool2d"),
        nn.Flatten: flatten,
        nn.Softmax: softmax("Softmax"),
        nn.LogSoftmax: softmax("LogSoftmax"),
        nn.ReLU: simple(lambda m: L.ReLU()),
        nn.ReLU6: simple(lambda m: L.ReLU6()),
        nn.LeakyReLU: simple(lambda m: L.LeakyReLU(m.negative_slope)),
        nn.ELU: simple(lambda m: L.ELU(m.alpha)),
        nn.SiLU: simple(lambda m: L.SiLU()),
        nn.Hardswish: simple(lambda m: L.Hardswish()),
        nn.Hardsigmoid: simple(lambda m: L.Hardsigmoid()),
        nn.Sigmoid: simple(lambda m: L.Sigmoid()),
        nn.Tanh: simple(lambda m: L.Tanh()),
        nn.GELU: simple(lambda m: L.GELU(m.approximate)),
        nn.PReLU: simple(lambda m: L.PReLU(m.num_parameters, dtype=_dtype(m, ""))),
        nn.Dropout: simple(lambda m: L.Dropout(m.p)),
        nn.Dropout2d: simple(lambda m: L.Dropout2d(m.p)),
        nn.Identity: simple(lambda m: L.Identity()),
        nn.ZeroPad2d: pad("constant"),
        nn.ConstantPad2d: pad("constant"),
        nn.ReflectionPad2d: pad("reflect"),
        nn.ReplicationPad2d: pad("replicate"),
        nn.Upsample: lambda m, kind: (_upsample(m.size, m.scale_factor, m.mode,
                                                m.align_corners), MAP),
    }


def _leaf(module, path: str, kind: str) -> tuple[L.Layer, str]:
    try:
        return _leaf_converters()[type(module)](module, kind)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{error} (module {path!r})") from None


def _flatten(start: int, end: int, kind: str) -> L.Layer:
    if kind != FLAT and (start, end % 4 if end < 0 else end) != (1, 3):
        raise ValueError(f"from_torch: flattening dimensions {start} to {end} of an NCHW "
                         f"feature map has no NHWC equivalent; only flatten(1) (or "
                         f"flatten(1, -1)) converts")
    return L.Flatten(start, end, channels_first=kind != FLAT)


#: F.pad's modes -> Pad's
_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}


def _pad(pad, mode: str, value, kind: str) -> Pad:
    """F.pad(x, pad, mode, value) of a 4-D NCHW value: pad is (left, right, top, bottom, ...),
    pairs for the last dimension first, mapped onto the NHWC axes."""
    pad = tuple(pad)
    if len(pad) % 2 or not 2 <= len(pad) <= 8 or not all(isinstance(p, int) for p in pad):
        raise ValueError(f"pad must be 1 to 4 pairs of ints, (left, right, top, bottom, ...), "
                         f"but got {pad!r}")
    if mode not in _PAD_MODES:
        raise ValueError(f"padding mode {mode!r} is not supported (only 'constant', "
                         f"'reflect' and 'replicate')")
    if mode != "constant" and value:
        raise ValueError(f"padding mode {mode!r} takes no value, but got value={value!r}")
    if kind == FLAT:
        raise ValueError("only a 4-D (N, C, H, W) feature map pads; this value was flattened")
    pads = [(0, 0)] * 4
    for i in range(len(pad) // 2):  # the first pair pads the last dimension, W
        pads[_map_dim(3 - i, kind)] = (pad[2 * i], pad[2 * i + 1])
    return Pad(pads, _PAD_MODES[mode], float(value or 0.0))


def _upsample(size, scale_factor, mode, align_corners) -> L.Layer:
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"from_torch: interpolation mode {mode!r} is not supported (only "
                         f"'nearest' and 'bilinear')")
    return L.Upsample(size, scale_factor, mode, align_corners)


def _arithmetic() -> dict:
    """{fx target (".name" for a method): "add" | "sub" | "mul" | "div"}."""
    import torch

    ops = {"add": (operator.add, operator.iadd, torch.add, ".add"),
           "sub": (operator.sub, operator.isub, torch.sub, torch.subtract, ".sub"),
           "mul": (operator.mul, operator.imul, torch.mul, torch.multiply, ".mul"),
           "div": (operator.truediv, operator.itruediv, torch.div, torch.true_divide,
                   torch.divide, ".div")}
    return {target: op for op, targets in ops.items() for target in targets}


def _args(names: str, args, kwargs) -> dict:
    """PyTorch's arguments by name: `names` is "a, b=default, ..." in the call's order."""
    spec = []
    for item in names.split(", "):
        name, eq, default = item.partition("=")
        spec.append((name, eq, default))
    bound = {}
    for (name, eq, default), value in zip(spec, args):
        bound[name] = value
    for name, eq, default in spec:
        if name not in bound:
            bound[name] = kwargs.get(name, ast.literal_eval(default) if eq else None)
    unknown = set(kwargs) - {name for name, _, _ in spec}
    if unknown:
        raise TypeError(f"unsupported arguments {sorted(unknown)}")
    return bound


class _Tracer:
    """Turns one module's fx graph into a fastconv Graph."""

    def __init__(self, module, path: str, kind: str):
        import torch.fx

        self.module, self.path = module, path
        try:
            self.fx = torch.fx.symbolic_trace(module).graph
        except Exception as error:
            raise TypeError(f"from_torch: torch.fx cannot trace {type(module).__name__}"
                            f"{_where(path.rstrip('.'))}: {error}") from error
        self.modules = dict(module.named_modules())
        self.input_kind = kind
        self.nodes: list = []
        self.names: set[str] = set()
        self.value: dict = {}  # fx node -> graph value name
        self.kind: dict = {}  # fx node -> layout
        self.symbol: dict = {}  # fx node -> what a non-tensor node stands for
        self.called: set[str] = set()  # module paths already given a node

    def graph(self) -> tuple[Graph, str]:
        inputs, outputs = [], []
        for node in self.fx.nodes:
            if node.op == "placeholder":
                inputs.append(node.name)
                self.value[node], self.kind[node] = node.name, self.input_kind
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
                outputs = [self._tensor(o, node) for o in outs]
            else:
                try:
                    self._convert(node)
                except (ValueError, TypeError) as error:
                    message = str(error)
                    if not message.startswith("from_torch"):
                        message = f"from_torch: {self._op(node)}: {message}"
                    raise type(error)(f"{message} (fx node {node.name!r}"
                                      f"{' in ' + self.path.rstrip('.') if self.path else ''}"
                                      f")") from None
        kinds = [self.kind[o] for o in self._outs(outputs)] or [FLAT]
        return Graph(self.nodes, inputs, outputs), kinds[0]

    def _outs(self, names):
        return [node for node, name in self.value.items() if name in names]

    @staticmethod
    def _op(node) -> str:
        if node.op == "call_method":
            return f"the method .{node.target}()"
        target = node.target
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__name__", str(target))
        if module.startswith("torch.nn.functional"):
            return f"F.{name}"
        if module == "_operator" or target in vars(operator).values():
            return f"operator.{name}"
        return f"torch.{name}" if "torch" in (module or "torch") else name

    def _kind_of(self, arg) -> str:
        import torch.fx

        return self.kind.get(arg, INPUT) if isinstance(arg, torch.fx.Node) else INPUT

    def _tensor(self, arg, node) -> str:
        import torch.fx

        if not isinstance(arg, torch.fx.Node) or arg not in self.value:
            raise TypeError(f"from_torch: {self._op(node)} takes {arg!r} where fastconv needs "
                            f"a tensor computed by the model")
        return self.value[arg]

    def _add(self, node, name: str, layer: L.Layer, inputs, kind: str) -> None:
        name = self._emit(name, layer, tuple(self._tensor(a, node) for a in inputs))
        self.value[node], self.kind[node] = name, kind

    def _emit(self, name: str, layer: L.Layer, input_names: tuple[str, ...]) -> str:
        """Appends a node under a fresh name (a module path and an fx name may coincide)."""
        base, i = name, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        self.nodes.append((name, layer, input_names))
        return name

    def _alias(self, node, source) -> None:
        """node computes the same tensor as `source` (contiguous(), an eval-mode dropout)."""
        self._tensor(source, node)
        self.value[node], self.kind[node] = self.value[source], self.kind[source]

    def _convert(self, node) -> None:
        if node.op == "call_module":
            self._module(node)
        elif node.op in ("call_function", "call_method"):
            self._function(node)
        else:  # get_attr: a parameter used by a functional call
            raise TypeError(f"from_torch: the model reads the tensor {node.target!r} directly "
                            f"(a {node.op} node); only modules carry parameters in fastconv")

    def _module(self, node) -> None:
        module = self.modules[node.target]
        path = f"{self.path}{node.target}"
        has_state = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
        if node.target in self.called and has_state:
            raise TypeError(f"from_torch: the module {path!r} ({type(module).__name__}) is "
                            f"called twice; fastconv cannot share parameters between nodes")
        first = node.target not in self.called
        self.called.add(node.target)
        if len(node.args) != 1 or node.kwargs:
            raise TypeError(f"from_torch: {type(module).__name__} module {path!r} is called "
                            f"with {len(node.args)} arguments; fastconv's take one")
        kind = self.kind.get(node.args[0], INPUT)
        # fx traces into the model's own modules: what it calls are torch.nn's leaf modules
        if type(module) not in _leaf_converters():
            raise TypeError(f"from_torch: cannot convert {type(module).__name__} (module "
                            f"{path!r}); see fastconv.layers.from_torch for what converts")
        layer, kind = _leaf(module, path, kind)
        # a module called again (a parameterless ReLU, say) gets a fresh layer, named by fx
        self._add(node, node.target if first else node.name, layer, node.args, kind)

    def _function(self, node) -> None:
        import torch
        import torch.nn.functional as F

        target, args, kwargs = node.target, node.args, node.kwargs
        key = target if node.op == "call_function" else f".{target}"
        kind = self._kind_of(args[0]) if args else INPUT

        unary = {F.relu: "ReLU", torch.relu: "ReLU", ".relu": "ReLU", F.relu6: "ReLU6",
                 F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid", F.silu: "SiLU",
                 torch.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", ".sigmoid": "Sigmoid",
                 torch.tanh: "Tanh", F.tanh: "Tanh", ".tanh": "Tanh"}
        if key in unary:
            self._add(node, node.name, getattr(L, unary[key])(), args[:1], kind)
        elif key in (F.gelu,):
            a = _args("input, approximate='none'", args, kwargs)
            self._add(node, node.name, L.GELU(a["approximate"]), args[:1], kind)
        elif key is F.leaky_relu:
            a = _args("input, negative_slope=0.01, inplace=False", args, kwargs)
            self._add(node, node.name, L.LeakyReLU(a["negative_slope"]), args[:1], kind)
        elif key is F.elu:
            a = _args("input, alpha=1.0, inplace=False", args, kwargs)
            self._add(node, node.name, L.ELU(a["alpha"]), args[:1], kind)
        elif key in _arithmetic():
            self._arithmetic(node, _arithmetic()[key])
        elif key in (operator.neg, torch.neg, ".neg"):
            self._add(node, node.name, Constant("mul", -1), args[:1], kind)
        elif key is F.pad:
            a = _args("input, pad, mode='constant', value=None", args, kwargs)
            self._add(node, node.name, _pad(a["pad"], a["mode"], a["value"], kind), args[:1],
                      MAP)
        elif key is torch.cat or key is torch.concat:
            a = _args("tensors, dim=0", args, kwargs)
            kinds = {self._kind_of(t) for t in a["tensors"]}
            kind = MAP if MAP in kinds else kinds.pop()
            self._add(node, node.name, Concat(_map_dim(a["dim"], kind)), a["tensors"], kind)
        elif key in (torch.flatten, ".flatten"):
            a = _args("input, start_dim=0, end_dim=-1", args, kwargs)
            self._add(node, node.name, _flatten(a["start_dim"], a["end_dim"], kind), args[:1],
                      FLAT)
        elif key in (".view", ".reshape", torch.reshape):
            self._reshape(node, kind)
        elif key in (".size",) or (key is getattr and args[1] == "shape"):
            self.symbol[node] = ("shape", args[0], args[1] if key == ".size" and
                                 len(args) > 1 else None)
        elif key is operator.getitem and args[0] in self.symbol:
            _, source, dim = self.symbol[args[0]]
            self.symbol[node] = ("shape", source, args[1] if dim is None else None)
        elif key in (".mean", torch.mean):
            self._mean(node, kind)
        elif key in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            a = _args("input, output_size, return_indices=False", args, kwargs)
            if a["return_indices"]:
                raise ValueError("return_indices=True is not supported")
            pool = L.AdaptiveAvgPool2d if key is F.adaptive_avg_pool2d else L.AdaptiveMaxPool2d
            self._add(node, node.name, pool(a["output_size"]), args[:1], MAP)
        elif key is F.avg_pool2d:
            a = _args("input, kernel_size, stride=None, padding=0, ceil_mode=False, "
                      "count_include_pad=True, divisor_override=None", args, kwargs)
            self._add(node, node.name, L.AvgPool2d(a["kernel_size"], a["stride"] or None,
                                                   a["padding"], a["ceil_mode"],
                                                   a["count_include_pad"],
                                                   a["divisor_override"]), args[:1], MAP)
        elif key is F.max_pool2d:
            a = _args("input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, "
                      "return_indices=False", args, kwargs)
            if a["return_indices"]:
                raise ValueError("return_indices=True is not supported")
            self._add(node, node.name, L.MaxPool2d(a["kernel_size"], a["stride"] or None,
                                                   a["padding"], a["dilation"],
                                                   ceil_mode=a["ceil_mode"]), args[:1], MAP)
        elif key is F.interpolate:
            a = _args("input, size=None, scale_factor=None, mode='nearest', align_corners=None, "
                      "recompute_scale_factor=None, antialias=False", args, kwargs)
            if a["antialias"]:
                raise ValueError("antialias=True is not supported")
            self._add(node, node.name, _upsample(a["size"], a["scale_factor"], a["mode"],
                                                 a["align_corners"]), args[:1], MAP)
        elif key in (F.softmax, F.log_softmax, ".softmax", ".log_softmax"):
            a = _args("input, dim=None, _stacklevel=3, dtype=None", args, kwargs)
            if a["dim"] is None or a["dtype"] is not None:
                raise ValueError("give dim (and no dtype)")
            cls = L.Softmax if key in (F.softmax, ".softmax") else L.LogSoftmax
            self._add(node, node.name, cls(_map_dim(a["dim"], kind)), args[:1], kind)
        elif key in (F.dropout, F.dropout2d):
            a = _args("input, p=0.5, training=True, inplace=False", args, kwargs)
            if not a["training"]:
                self._alias(node, args[0])
            else:
                dropout = L.Dropout if key is F.dropout else L.Dropout2d
                self._add(node, node.name, dropout(a["p"]), args[:1], kind)
        elif key == ".contiguous":
            self._alias(node, args[0])
        else:
            raise TypeError(f"from_torch: cannot convert {self._op(node)}")

    def _arithmetic(self, node, op: str) -> None:
        """a + b, a - b, a * b, a / b of two tensors (Add, Binary, Mul: broadcasting) or of a
        tensor and a Python number on either side (Constant); torch.add/sub's alpha scales b."""
        import torch.fx

        names = {"add": "input, other, alpha=1", "sub": "input, other, alpha=1",
                 "mul": "input, other", "div": "input, other, rounding_mode=None"}[op]
        a = _args(names, node.args, node.kwargs)
        if a.get("rounding_mode") is not None:
            raise ValueError(f"rounding_mode={a['rounding_mode']!r} is not supported")
        x, y, alpha = a["input"], a["other"], a.get("alpha", 1)
        for operand in (x, y):
            if not isinstance(operand, (torch.fx.Node, int, float)) or isinstance(operand, bool):
                raise TypeError(f"takes {operand!r} where fastconv needs a tensor computed by "
                                f"the model or a Python number")
        if not isinstance(y, torch.fx.Node):  # tensor op number
            self._add(node, node.name, Constant(op, y * alpha), (x,), self._kind_of(x))
            return
        y_name = self._tensor(y, node)
        if alpha != 1:
            y_name = self._emit(f"{node.name}_alpha", Constant("mul", alpha), (y_name,))
        if not isinstance(x, torch.fx.Node):  # number op tensor
            layer: L.Layer = Constant(op, x, constant_first=True)
            name = self._emit(node.name, layer, (y_name,))
            self.value[node], self.kind[node] = name, self._kind_of(y)
            return
        kinds = {self._kind_of(x), self._kind_of(y)}
        kind = MAP if MAP in kinds else kinds.pop()
        layer = {"add": Add, "mul": Mul}.get(op, lambda: Binary(op))()
        name = self._emit(node.name, layer, (self._tensor(x, node), y_name))
        self.value[node], self.kind[node] = name, kind

    def _reshape(self, node, kind: str) -> None:
        """x.view(x.size(0), -1) and friends: a flatten of everything but the batch axis."""
        source = node.args[0]
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        batch = shape[0] if shape else None
        is_batch = (isinstance(batch, int) or
                    (batch in self.symbol and self.symbol[batch][1] is source
                     and self.symbol[batch][2] == 0))
        if len(shape) != 2 or shape[1] != -1 or not is_batch:
            raise TypeError("only a flatten of all but the batch axis, x.view(x.size(0), -1) "
                            "or x.reshape(N, -1), converts")
        self._add(node, node.name, _flatten(1, -1, kind), (source,), FLAT)

    def _mean(self, node, kind: str) -> None:
        a = _args("input, dim=None, keepdim=False, dtype=None", node.args, node.kwargs)
        dims = a["dim"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if kind == FLAT or sorted(d % 4 for d in dims) != [2, 3] or a["dtype"] is not None:
            raise ValueError(f"only a mean over H and W of a feature map, x.mean((2, 3)), "
                             f"converts; got dim={a['dim']!r}")
        layer: L.Layer = L.AdaptiveAvgPool2d(1)
        if not a["keepdim"]:
            layer = L.Sequential(layer, L.Flatten())
        self._add(node, node.name, layer, node.args[:1], MAP if a["keepdim"] else FLAT)
