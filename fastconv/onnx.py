"""ONNX models as fastconv networks: fastconv.onnx.load (needs the `onnx` package, the extra
`fastconv[onnx]`; imported only when called).

    model = fastconv.onnx.load("resnet18.onnx")      # a fastconv.graph.Graph, in eval mode
    y = model(x)                                     # x and y in the file's layout (NCHW)

The loader walks the ONNX graph once (after onnx's checker and shape inference) and gives
each operator a fastconv layer: Conv a Conv2d, BatchNormalization a BatchNorm2d, Gemm a Linear,
Add of two maps an Add, ... Values that are constant at load time (initializers, Constant,
and the Shape / Gather / Unsqueeze / Concat / Cast chains that compute shapes) are folded
(onnx.reference evaluates them); a Shape of a computed value stays symbolic in its batch and
image axes, so a `Reshape(x, Concat(Shape(x)[0], -1))` keeps the batch size dynamic.

Layouts: a 4-D value is a feature map, kept channels-last (NHWC) inside: ONNX's NCHW axes are
mapped onto NHWC (as from_torch does), the weights are stored in fastconv's layouts, and the
model transposes once at each 4-D input and output. Other values (after a Flatten, a Gemm, a
Reshape to another rank) keep ONNX's own layout. A graph that reshapes or transposes a feature
map in ways NHWC cannot follow gets a transpose there (correct, not free).

Parameters and buffers are named by the ONNX initializers they come from (a Conv's weight
under the name of its W input); what has no initializer keeps the graph's name
"<node>.<name>" (a BatchNorm's num_batches_tracked). The model trains like any fastconv
network (backward, parameters, train()/eval(): BatchNorm and Dropout as their layers do).

Refused, with a ValueError naming the operator, the node and the attribute: operators and
attribute values fastconv cannot compute (see SUPPORTED), opsets outside 11..21, files that
onnx cannot parse or check.
"""
from __future__ import annotations

import math
import os

import numpy as np

from fastconv import _params
from fastconv import layers as L
from fastconv._threads import matmul
from fastconv._torch_import import FLAT, MAP, _map_dim
from fastconv.graph import (Add, Binary, Concat, Constant, Graph, Merge, Mul, Pad, Permute,
                            _sum_to_shape)
from fastconv.resample import _gather, _scatter

#: the opsets of the default ONNX domain that load accepts
OPSETS = (11, 21)

#: operator -> what fastconv computes it with (fastconv info FILE.onnx shows this)
SUPPORTED = {
    "Conv": "Conv2d", "ConvTranspose": "ConvTranspose2d",
    "BatchNormalization": "BatchNorm2d (BatchNorm1d on 2-D)",
    "Relu": "ReLU", "Clip": "ReLU6 / ReLU / Clip", "LeakyRelu": "LeakyReLU", "PRelu": "PReLU",
    "Elu": "ELU", "Sigmoid": "Sigmoid", "HardSigmoid": "Hardsigmoid / HardSigmoid",
    "HardSwish": "Hardswish", "Tanh": "Tanh", "Erf": "Erf (elementwise)",
    "Sqrt": "Sqrt (elementwise)", "Exp": "Exp (elementwise)", "Neg": "Neg (elementwise)",
    "Reciprocal": "Reciprocal (elementwise)", "Gelu": "GELU",
    "Softmax": "Softmax", "LogSoftmax": "LogSoftmax",
    "Add": "Add / constant add", "Sub": "Sub / constant sub", "Mul": "Mul / constant mul",
    "Div": "Div / constant div", "Pow": "Pow / constant pow",
    "Concat": "Concat", "Split": "Slice (one per output)", "Slice": "Slice",
    "MaxPool": "MaxPool2d", "AveragePool": "AvgPool2d",
    "GlobalAveragePool": "AdaptiveAvgPool2d(1)", "GlobalMaxPool": "AdaptiveMaxPool2d(1)",
    "ReduceMean": "AdaptiveAvgPool2d(1) / Reduce", "ReduceSum": "Reduce",
    "Resize": "Resize", "Upsample": "Resize", "Pad": "Pad",
    "Flatten": "Flatten", "Reshape": "Flatten / Reshape", "Transpose": "Permute (or nothing)",
    "Squeeze": "Reshape", "Unsqueeze": "Reshape", "Gemm": "Linear", "MatMul": "Linear / MatMul",
    "Gather": "Gather (folded when constant)", "Shape": "folded", "Cast": "folded / nothing",
    "Constant": "folded", "ConstantOfShape": "folded", "Range": "folded",
    "Dropout": "Dropout", "Identity": "nothing",
}


#: ONNX operators computed by Elementwise
_ELEMENTWISE_OPS = {"Sqrt": "sqrt", "Erf": "erf", "Exp": "exp", "Neg": "neg",
                    "Reciprocal": "reciprocal"}
# operators without attributes that are one activation layer each
_ACTIVATION_LAYERS = {"Relu": L.ReLU, "Sigmoid": L.Sigmoid, "Tanh": L.Tanh,
                      "HardSwish": L.Hardswish}


class OnnxError(ValueError):
    """A model that fastconv.onnx.load cannot load (a ValueError)."""


# ----------------------------------------------------------------------------------------------
# layers the ONNX operators need beyond fastconv.layers

class Reshape(L.Layer):
    """x.reshape(shape) with ONNX's rules: 0 copies the input's size on that axis, -1 is
    inferred. Backward reshapes back."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x):
        x = _params.as_array("input", x)
        shape = tuple(x.shape[i] if s == 0 and i < x.ndim else s
                      for i, s in enumerate(self.shape))
        try:
            y = x.reshape(shape)
        except ValueError:
            raise ValueError(f"{self!r}: cannot reshape an input of shape {x.shape} to "
                             f"{shape}") from None
        self._save(in_shape=x.shape, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return grad.reshape(saved["in_shape"])

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Squeeze(L.Layer):
    """np.squeeze(x, axes) (or np.expand_dims with unsqueeze=True); backward reshapes back."""

    def __init__(self, axes, unsqueeze=False):
        super().__init__()
        self.axes, self.unsqueeze = tuple(int(a) for a in axes), bool(unsqueeze)

    def forward(self, x):
        x = _params.as_array("input", x)
        try:
            y = np.expand_dims(x, self.axes) if self.unsqueeze else np.squeeze(x, self.axes)
        except (ValueError, np.exceptions.AxisError) as error:
            raise ValueError(f"{self!r}: input of shape {x.shape}: {error}") from None
        self._save(in_shape=x.shape, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return grad.reshape(saved["in_shape"])

    def extra_repr(self) -> str:
        return f"axes={self.axes}" + (", unsqueeze=True" if self.unsqueeze else "")


class Slice(L.Layer):
    """x[index] for a tuple of slices (ONNX's Slice and the outputs of Split, on the stored
    axes); backward puts the gradient back in zeros of the input's shape."""

    def __init__(self, index):
        super().__init__()
        self.index = tuple(index)

    def forward(self, x):
        x = _params.as_array("input", x)
        y = x[self.index]
        self._save(in_shape=x.shape, dtype=x.dtype, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        gx = np.zeros(saved["in_shape"], np.result_type(grad, saved["dtype"]))
        gx[self.index] = grad
        return gx

    def extra_repr(self) -> str:
        def fmt(s):
            return ":" if s == slice(None) else \
                f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}" \
                f"{'' if s.step in (None, 1) else ':' + str(s.step)}"
        return "[" + ", ".join(fmt(s) for s in self.index) + "]"


class Gather(L.Layer):
    """np.take(x, indices, axis) (ONNX's Gather of a computed tensor); backward adds the
    gradient back at the indices."""

    def __init__(self, indices, axis):
        super().__init__()
        self.indices, self.axis = np.asarray(indices, np.int64), int(axis)

    def forward(self, x):
        x = _params.as_array("input", x)
        y = np.take(x, self.indices, axis=self.axis)
        self._save(in_shape=x.shape, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        shape = saved["in_shape"]
        gx = np.zeros(shape, grad.dtype)
        moved = np.moveaxis(gx, self.axis, 0)
        g = np.moveaxis(grad, tuple(range(self.axis, self.axis + self.indices.ndim)),
                        tuple(range(self.indices.ndim)))
        np.add.at(moved, self.indices % shape[self.axis], g)
        return gx

    def extra_repr(self) -> str:
        return f"indices={self.indices.tolist()}, axis={self.axis}"


class Reduce(L.Layer):
    """The mean or sum over `axes` (keepdims as ONNX's ReduceMean / ReduceSum)."""

    def __init__(self, op, axes, keepdims=True):
        super().__init__()
        self.op, self.axes, self.keepdims = op, tuple(int(a) for a in axes), bool(keepdims)

    def forward(self, x):
        x = _params.as_array("input", x)
        fn = np.mean if self.op == "mean" else np.sum
        y = fn(x, axis=self.axes, keepdims=self.keepdims)
        self._save(in_shape=x.shape, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        shape = saved["in_shape"]
        if not self.keepdims:
            grad = np.expand_dims(grad, self.axes)
        if self.op == "mean":
            grad = grad / math.prod(shape[a] for a in self.axes)
        return np.broadcast_to(grad, shape).copy()

    def extra_repr(self) -> str:
        return f"{self.op!r}, axes={self.axes}, keepdims={self.keepdims}"


def _erf(x):
    from scipy import special
    return special.erf(x)


#: elementwise functions: name -> (f(x, *args), d(x, y, *args) = dy/dx)
_UNARY = {
    "sqrt": (np.sqrt, lambda x, y: 0.5 / y),
    "erf": (_erf, lambda x, y: (2 / math.sqrt(math.pi)) * np.exp(-x * x)),
    "exp": (np.exp, lambda x, y: y),
    "neg": (np.negative, lambda x, y: np.full_like(x, -1)),
    "reciprocal": (np.reciprocal, lambda x, y: -y * y),
    "clip": (lambda x, lo, hi: np.clip(x, lo, hi),
             lambda x, y, lo, hi: ((x >= lo) & (x <= hi)).astype(x.dtype)),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1),
                    lambda x, y, a, b: a * ((a * x + b > 0) & (a * x + b < 1)).astype(x.dtype)),
}


class Elementwise(L.Layer):
    """An elementwise function of ONNX without a fastconv layer of its own: "sqrt", "erf",
    "exp", "neg", "reciprocal", "clip" (args lo, hi; PyTorch's clamp gradient, 1 on the
    bounds) or "hardsigmoid" (args alpha, beta: clip(alpha * x + beta, 0, 1))."""

    _output_is_private = True

    def __init__(self, op, *args):
        super().__init__()
        self.op, self.args = op, tuple(float(a) for a in args)

    def forward(self, x):
        x = _params.as_array("input", x)
        dtype = _params.float_dtype(x)
        x = x.astype(dtype, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.asarray(_UNARY[self.op][0](x, *self.args), dtype)
        self._save(x=x, y=y, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        with np.errstate(divide="ignore", invalid="ignore"):
            return grad * _UNARY[self.op][1](saved["x"], saved["y"], *self.args)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.op)] + [repr(a) for a in self.args])


class MatMul(Merge):
    """a @ b of two computed arrays (NumPy's matmul, ONNX's MatMul, 2-D or more)."""

    num_inputs = 2
    _output_is_private = True

    def forward(self, *inputs):
        a, b = self._inputs(inputs)
        y = matmul(a, b)  # BLAS on one thread (the kernels' OpenMP threads run beside it)
        self._save(a=a, b=b, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, s = self._take(grad_output)
        a, b = s["a"], s["b"]
        return (_sum_to_shape(grad @ np.swapaxes(b, -1, -2), a.shape),
                _sum_to_shape(np.swapaxes(a, -1, -2) @ grad, b.shape))


def _resize_taps(n: int, out: int, scale: float, coords: str, mode: str, nearest: str):
    """ONNX Resize's source taps along one axis: [(indices, weights or None)]."""
    x = np.arange(out, dtype=np.float32)
    s = np.float32(scale)
    if coords == "half_pixel":
        src = (x + np.float32(0.5)) / s - np.float32(0.5)
    elif coords == "pytorch_half_pixel":
        src = (x + np.float32(0.5)) / s - np.float32(0.5) if out > 1 else np.zeros_like(x)
    elif coords == "align_corners":
        src = x * np.float32((n - 1) / (out - 1)) if out > 1 else np.zeros_like(x)
    elif coords == "asymmetric":
        src = x / s
    else:  # tf_half_pixel_for_nn
        src = (x + np.float32(0.5)) / s
    if mode == "nearest":
        rounded = {"floor": np.floor(src), "ceil": np.ceil(src),
                   "round_prefer_floor": np.ceil(src - np.float32(0.5)),
                   "round_prefer_ceil": np.floor(src + np.float32(0.5))}[nearest]
        return [(np.clip(rounded, 0, n - 1).astype(np.int64), None)]
    src = np.clip(src, 0, n - 1).astype(np.float64)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = src - i0
    return [(i0, 1.0 - w1), (i1, w1)]


class Resize(L.Layer):
    """ONNX's Resize of the H and W axes of NHWC x: to `size` (Ho, Wo) or by `scales` (sh, sw)
    (output floor(in * scale)); mode "nearest" (nearest_mode "round_prefer_floor",
    "round_prefer_ceil", "floor" or "ceil") or "linear"; coordinate_transformation_mode
    "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric" or
    "tf_half_pixel_for_nn" (ONNX's formulas). Backward adds each output's gradient to its
    source taps."""

    _output_is_private = True

    def __init__(self, size=None, scales=None, mode="nearest", coordinate_mode="half_pixel",
                 nearest_mode="round_prefer_floor"):
        super().__init__()
        self.size = None if size is None else tuple(int(s) for s in size)
        self.scales = None if scales is None else tuple(float(s) for s in scales)
        self.mode, self.coordinate_mode, self.nearest_mode = mode, coordinate_mode, nearest_mode

    def _taps(self, in_hw):
        if self.size is not None:
            out_hw = self.size
            scales = [o / n for o, n in zip(out_hw, in_hw)]
        else:
            scales = self.scales
            out_hw = tuple(int(math.floor(n * np.float32(s))) for n, s in zip(in_hw, scales))
        if min(out_hw) < 1:
            raise ValueError(f"{self!r}: the input size {tuple(in_hw)} (H, W) resizes to "
                             f"{out_hw}")
        return [_resize_taps(n, o, s, self.coordinate_mode, self.mode, self.nearest_mode)
                for n, o, s in zip(in_hw, out_hw, scales)]

    def forward(self, x):
        x = _params.as_array("input", x)
        _params.check_ndim("input", x, (4,), "(N, H, W, C) [NHWC]")
        taps_h, taps_w = self._taps(x.shape[1:3])
        x = x.astype(_params.float_dtype(x), copy=False)
        y = _gather(_gather(x, taps_h, 1), taps_w, 2)
        self._save(in_shape=x.shape, taps=(taps_h, taps_w), out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        (taps_h, taps_w), (_, h, w, _) = saved["taps"], saved["in_shape"]
        return _scatter(_scatter(grad, taps_w, w, 2), taps_h, h, 1)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scales={self.scales}"
        nearest = f", nearest_mode={self.nearest_mode!r}" if self.mode == "nearest" else ""
        return f"{what}, mode={self.mode!r}, coordinate_mode={self.coordinate_mode!r}{nearest}"


class OnnxModel(Graph):
    """The Graph load returns: its state_dict keys are the ONNX initializer names of the
    parameters and buffers (`names`: graph key -> initializer name)."""

    def __init__(self, nodes, inputs, outputs, names=None):
        super().__init__(nodes, inputs, outputs)
        self.names = dict(names or {})

    def parameters(self):
        for key, value, grad in super().parameters():
            yield self.names.get(key, key), value, grad

    def buffers(self):
        for key, value in super().buffers():
            yield self.names.get(key, key), value


# ----------------------------------------------------------------------------------------------
# loading

def load(model) -> OnnxModel:
    """The fastconv network computing an ONNX model (a path, the file's bytes or an
    onnx.ModelProto), in eval mode.

    It takes and returns arrays in the model's own layout (NCHW for CNN exports: one transpose
    at each 4-D input and output, NHWC inside), with any batch size and, where the graph
    allows, any image size. Parameters and buffers are in fastconv's layouts (HWIO conv
    weights, (in, out) Linear weights), named by their ONNX initializers (see OnnxModel).
    Needs the `onnx` package (pip install fastconv[onnx]).

    Raises TypeError for another kind of argument, OnnxError (a ValueError) for a file onnx
    cannot parse or check, an opset outside OPSETS, and an operator or attribute fastconv
    cannot compute (naming the operator, the node and the attribute).
    """
    try:
        import onnx
    except ImportError:  # pragma: no cover - the extra is installed with the tests
        raise ImportError("fastconv.onnx.load needs the onnx package: pip install "
                          "fastconv[onnx]") from None
    proto = _parse(onnx, model)
    return _Loader(onnx, proto).model()


def _parse(onnx, model):
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, what = bytes(model), "the bytes given"
    elif isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            data, what = f.read(), repr(os.fspath(model))
    else:
        raise TypeError(f"fastconv.onnx.load: expected a path, bytes or an onnx.ModelProto, "
                        f"but got {type(model).__name__}")
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as error:
        raise OnnxError(f"fastconv.onnx.load: {what} are not an ONNX model (protobuf parse "
                        f"error: {error})") from None
    if not proto.graph.node and not proto.graph.output:
        raise OnnxError(f"fastconv.onnx.load: {what} hold no ONNX graph (empty or truncated "
                        f"file?)")
    return proto


class _Dim:
    """A size known only at run time: axis `axis` of the ONNX value `value` (static: its
    size in the exported model, when shape inference knows it)."""

    def __init__(self, value: str, axis: int, static):
        self.value, self.axis, self.static = value, axis, static

    def __repr__(self) -> str:
        return f"{self.value}.shape[{self.axis}]"


class _Value:
    """A value computed at run time: its node in the Graph, layout (MAP: an ONNX 4-D NCHW
    tensor stored NHWC; FLAT: stored as ONNX has it) and rank."""

    def __init__(self, name: str, kind: str, rank: int):
        self.name, self.kind, self.rank = name, kind, rank


def _slices(shape, starts, ends, axes, steps) -> list[slice]:
    """Python slices per axis for ONNX's Slice (ends and starts clamp as Python's do)."""
    index = [slice(None)] * len(shape)
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise OnnxError("a step of 0")
        index[int(axis) % len(shape)] = slice(int(start), int(end), int(step))
    return index


class _Loader:
    """Converts one checked ModelProto into an OnnxModel."""

    def __init__(self, onnx, proto):
        self.onnx = onnx
        opsets = {o.domain: o.version for o in proto.opset_import}
        self.opset = opsets.get("", opsets.get("ai.onnx"))
        if self.opset is None or not OPSETS[0] <= self.opset <= OPSETS[1]:
            raise OnnxError(f"fastconv.onnx.load: the model uses opset {self.opset} of the "
                            f"ONNX domain; fastconv supports opsets {OPSETS[0]} to "
                            f"{OPSETS[1]} (onnx.version_converter can convert it)")
        for node in proto.graph.node:
            if not onnx.defs.has(node.op_type, node.domain):
                raise OnnxError(f"fastconv.onnx.load: unknown operator {node.op_type!r} "
                                f"(domain {node.domain or 'ai.onnx'!r}) at node "
                                f"{node.name or node.output[0]!r}; fastconv supports "
                                f"{', '.join(sorted(SUPPORTED))}")
        try:
            onnx.checker.check_model(proto)
            proto = onnx.shape_inference.infer_shapes(proto)
        except Exception as error:
            raise OnnxError(f"fastconv.onnx.load: the model fails onnx's checks: "
                            f"{error}") from None
        self.proto, self.graph = proto, proto.graph
        self.static: dict[str, tuple] = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = info.type.tensor_type
            if t.HasField("shape"):
                self.static[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                               for d in t.shape.dim)
        self.values: dict[str, object] = {}
        self.origin: dict[str, str] = {}  # constant value -> its initializer's name
        self.nodes: list = []
        self.names: set[str] = set()
        self.renames: dict[str, str] = {}
        self.converted: dict[tuple[str, str], _Value] = {}
        self.dtype = np.float32

    # -- the walk ----------------------------------------------------------------------------
    def model(self) -> OnnxModel:
        from onnx import numpy_helper

        for init in self.graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
            self.origin[init.name] = init.name
        inputs = []
        for info in self.graph.input:
            if info.name in self.values:
                continue
            elem = info.type.tensor_type.elem_type
            dtypes = {self.onnx.TensorProto.FLOAT: np.float32,
                      self.onnx.TensorProto.DOUBLE: np.float64}
            if elem not in dtypes:
                raise OnnxError(f"fastconv.onnx.load: input {info.name!r} has element type "
                                f"{self.onnx.TensorProto.DataType.Name(elem)}; fastconv "
                                f"computes float and double")
            self.dtype = dtypes[elem]
            rank = len(self.static.get(info.name, ()))
            self.names.add(info.name)
            inputs.append(info.name)
            value = _Value(info.name, FLAT, rank)
            if rank == 4:
                channels = self.static[info.name][1]
                self.converted[(info.name, MAP)] = self._emit(
                    f"{info.name}/nhwc", Permute((0, 2, 3, 1), channels), [value], MAP, 4)
                value = self._as_map(value)
            self.values[info.name] = value
        for node in self.graph.node:
            self._node(node)
        outputs = []
        for info in self.graph.output:
            value = self.values[info.name]
            if not isinstance(value, _Value):
                raise OnnxError(f"fastconv.onnx.load: the output {info.name!r} is a constant; "
                                f"fastconv models compute their outputs from their inputs")
            value = self._as_flat(value)
            if value.name in inputs or value.name in outputs:
                value = self._emit(info.name, L.Identity(), [value], FLAT, value.rank)
            outputs.append(value.name)
        return OnnxModel(self.nodes, inputs, outputs, self.renames).eval()

    def _node(self, node) -> None:
        op = node.op_type
        where = f"{op} node {node.name or node.output[0]!r}"
        try:
            if node.domain not in ("", "ai.onnx"):
                raise OnnxError(f"operators of the domain {node.domain!r} are not supported")
            ins = [self.values[n] if n else None for n in node.input]
            if all(not isinstance(v, _Value) for v in ins):
                symbolic = any(isinstance(v, np.ndarray) and v.dtype == object for v in ins)
                if symbolic and op in ("Gather", "Slice", "Concat", "Unsqueeze", "Squeeze",
                                       "Cast", "Identity", "Shape"):
                    self._symbolic(node, op)
                    return
                self._fold(node)
                return
            if op in _ELEMENTWISE_OPS or op in _ACTIVATION_LAYERS:
                self._attrs(node)  # none: any attribute is refused
                self._unary(node, Elementwise(_ELEMENTWISE_OPS[op]) if op in _ELEMENTWISE_OPS
                            else _ACTIVATION_LAYERS[op]())
                return
            convert = getattr(self, f"_op_{op}", None)
            if convert is None:
                raise OnnxError(f"fastconv has no layer for the operator {op!r}; it "
                                f"supports {', '.join(sorted(SUPPORTED))}")
            convert(node)
        except (OnnxError, ValueError, TypeError) as error:
            if str(error).startswith("fastconv.onnx.load"):
                raise
            raise OnnxError(f"fastconv.onnx.load: {where}: {error}") from None

    def _fold(self, node) -> None:
        """Evaluates a node whose inputs are all constant (onnx.reference)."""
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        inits = [numpy_helper.from_array(self._const(n), n) for n in dict.fromkeys(node.input)
                 if n]
        outs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = helper.make_graph([node], "fold", [], outs, inits)
        model = helper.make_model(graph, opset_imports=self.proto.opset_import,
                                  ir_version=self.proto.ir_version)
        results = ReferenceEvaluator(model).run(None, {})
        for name, value in zip([n for n in node.output if n], results):
            self.values[name] = np.asarray(value)
        if node.op_type == "Identity" and node.input[0] in self.origin:
            self.origin[node.output[0]] = self.origin[node.input[0]]

    def _symbolic(self, node, op) -> None:
        """Shape arithmetic on arrays holding _Dims (sizes known at run time)."""
        x = self.values[node.input[0]]
        a = self._attrs(node, *{"Gather": ["axis"], "Concat": ["axis"], "Cast": ["to", "saturate"],
                               "Unsqueeze": ["axes"], "Squeeze": ["axes"]}.get(op, []))
        if op == "Gather":
            y = np.take(x, self._const(node.input[1]), axis=a.get("axis", 0))
        elif op == "Slice":
            y = x[tuple(_slices(x.shape, *self._slice_args(node)))]
        elif op == "Concat":
            y = np.concatenate([np.asarray(self.values[n], object) for n in node.input],
                               axis=a["axis"])
        elif op in ("Unsqueeze", "Squeeze"):
            axes = self._axes(node, a)
            if op == "Squeeze":
                y = np.squeeze(x, axis=None if axes is None else tuple(axes))
            else:
                y = np.expand_dims(x, tuple(axes))
        else:
            y = x
        y = np.asarray(y, object)
        if all(not isinstance(d, _Dim) for d in y.flat):
            y = y.astype(np.int64)
        self.values[node.output[0]] = y

    # -- helpers -----------------------------------------------------------------------------
    def _attrs(self, node, *known) -> dict:
        from onnx import helper

        attrs = {}
        for attr in node.attribute:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            if attr.name not in known:
                raise OnnxError(f"attribute {attr.name}={value!r} is not supported")
            attrs[attr.name] = value
        return attrs

    @staticmethod
    def _refuse(attr: str, value, why: str = ""):
        return OnnxError(f"attribute {attr}={value!r} is not supported" +
                         (f" ({why})" if why else ""))

    def _runtime(self, name: str) -> _Value:
        value = self.values[name]
        if not isinstance(value, _Value):
            raise OnnxError(f"the input {name!r} is a constant where fastconv needs a value "
                            f"computed by the model")
        return value

    def _const(self, name: str, what: str = "") -> np.ndarray:
        value = self.values.get(name) if name else None
        if value is None or isinstance(value, _Value):
            raise OnnxError(f"the input {what or repr(name)} must be a constant (an "
                            f"initializer or computed from constants)")
        if value.dtype == object:
            static = [d.static if isinstance(d, _Dim) else d for d in value.flat]
            if any(s is None for s in static):
                raise OnnxError(f"the input {name!r} depends on sizes known only at run time "
                                f"({', '.join(map(repr, value.flat))})")
            value = np.array(static, np.int64).reshape(value.shape)
        return value

    def _optional(self, node, i: int):
        return self._const(node.input[i]) if len(node.input) > i and node.input[i] else None

    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def _emit(self, base: str, layer: L.Layer, inputs, kind: str, rank: int,
              output: str | None = None, params=None) -> _Value:
        """Adds a graph node running layer on inputs; it computes the ONNX value `output`.
        params: {layer parameter: ONNX constant} to name them by their initializers."""
        name = self._unique(base)
        self.nodes.append((name, layer, tuple(v.name for v in inputs)))
        for pname, source in (params or {}).items():
            origin = self.origin.get(source)
            if origin and origin not in self.renames.values() and getattr(layer, pname,
                                                                          None) is not None:
                self.renames[f"{name}.{pname}"] = origin
        value = _Value(name, kind, rank)
        if output is not None:
            self.values[output] = value
        return value

    def _as_map(self, value: _Value) -> _Value:
        if value.kind == MAP:
            return value
        if value.rank != 4:
            raise OnnxError(f"expected a 4-D (N, C, H, W) tensor, but got a {value.rank}-D one")
        key = (value.name, MAP)
        if key not in self.converted:
            self.converted[key] = self._emit(f"{value.name}/nhwc", Permute((0, 2, 3, 1)),
                                             [value], MAP, 4)
        return self.converted[key]

    def _as_flat(self, value: _Value) -> _Value:
        if value.kind == FLAT:
            return value
        key = (value.name, FLAT)
        if key not in self.converted:
            self.converted[key] = self._emit(f"{value.name}/nchw", Permute((0, 3, 1, 2)),
                                             [value], FLAT, 4)
        return self.converted[key]

    def _axis(self, value: _Value, axis: int) -> int:
        """ONNX's axis of a value as the axis of its stored array."""
        axis = int(axis)
        if not -value.rank <= axis < value.rank:
            raise OnnxError(f"axis {axis} is out of range for a {value.rank}-D tensor")
        return _map_dim(axis % value.rank, value.kind)

    def _axes(self, node, attrs, index: int = 1):
        """Axes from the attribute (older opsets) or the input `index` (newer): None if none."""
        if "axes" in attrs:
            return [int(a) for a in attrs["axes"]]
        if len(node.input) > index and node.input[index]:
            return [int(a) for a in self._const(node.input[index]).ravel()]
        return None

    def _const_like(self, c: np.ndarray, value: _Value) -> np.ndarray:
        """A constant broadcast against an ONNX value, in that value's stored layout."""
        c = np.asarray(c)
        if c.dtype.kind in "iub" or c.dtype != self.dtype and c.dtype.kind == "f":
            c = c.astype(self.dtype)
        if value.kind == MAP:
            if c.ndim > 4:
                raise OnnxError(f"a constant of shape {c.shape} does not broadcast with a "
                                f"4-D map")
            c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(c)

    def _unify(self, values: list[_Value]) -> tuple[list[_Value], str]:
        """Operands of an elementwise op or a Concat in one layout."""
        kinds = {v.kind for v in values}
        if kinds == {MAP} or kinds == {FLAT}:
            return values, kinds.pop()
        if all(v.rank == 4 for v in values):
            return [self._as_map(v) for v in values], MAP
        return [self._as_flat(v) for v in values], FLAT

    def _unary(self, node, layer: L.Layer) -> None:
        x = self._runtime(node.input[0])
        self._emit(node.name or node.output[0], layer, [x], x.kind, x.rank, node.output[0])

    def _static_hw(self, name: str):
        shape = self.static.get(name)
        return None if shape is None or len(shape) != 4 or None in shape[2:] else shape[2:]

    # -- convolutions and normalisation --------------------------------------------------------
    def _window(self, node, a, kernel, for_pool=False):
        """(stride, dilation, padding) of a Conv / pool node in fastconv's terms."""
        strides = tuple(a.get("strides", (1, 1)))
        dilations = tuple(a.get("dilations", (1, 1)))
        if len(kernel) != 2 or len(strides) != 2 or len(dilations) != 2:
            raise OnnxError(f"only 2-D windows (4-D NCHW inputs) are supported, but the "
                            f"kernel is {tuple(kernel)}")
        auto = a.get("auto_pad", "NOTSET")
        if auto == "NOTSET":
            pads = a.get("pads", (0, 0, 0, 0))
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        elif auto == "VALID":
            padding = 0
        elif auto == "SAME_UPPER":
            padding = "same"
        elif auto == "SAME_LOWER" and strides == (1, 1):
            totals = [d * (k - 1) for k, d in zip(kernel, dilations)]
            padding = tuple((t - t // 2, t // 2) for t in totals)
        else:
            raise self._refuse("auto_pad", auto, "SAME_LOWER only with strides 1: its padding "
                               "depends on the input size")
        return strides, dilations, padding

    def _op_Conv(self, node) -> None:
        a = self._attrs(node, "auto_pad", "dilations", "group", "kernel_shape", "pads",
                        "strides")
        x = self._as_map(self._runtime(node.input[0]))
        w = self._const(node.input[1], "W (the weight)")
        b = self._optional(node, 2)
        if w.ndim != 4:
            raise OnnxError(f"only 2-D convolutions are supported, but W has shape {w.shape}")
        c_out, cig, kh, kw = w.shape
        group = a.get("group", 1)
        stride, dilation, padding = self._window(node, a, (kh, kw))
        layer = L.Conv2d(cig * group, c_out, (kh, kw), stride, padding, dilation, group,
                         b is not None, dtype=self._float(w), rng=0)
        layer.weight[...] = w.transpose(2, 3, 1, 0)
        if b is not None:
            layer.bias[...] = b
        self._emit(node.name or node.output[0], layer, [x], MAP, 4, node.output[0],
                   {"weight": node.input[1], "bias": node.input[2] if b is not None else ""})

    def _float(self, w: np.ndarray):
        if w.dtype not in (np.float32, np.float64):
            raise OnnxError(f"weights of dtype {w.dtype} are not supported (float and double)")
        return w.dtype

    def _op_ConvTranspose(self, node) -> None:
        a = self._attrs(node, "auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                        "output_shape", "pads", "strides")
        x = self._as_map(self._runtime(node.input[0]))
        w = self._const(node.input[1], "W (the weight)")
        b = self._optional(node, 2)
        if w.ndim != 4:
            raise OnnxError(f"only 2-D transposed convolutions are supported, but W has shape "
                            f"{w.shape}")
        c_in, cog, kh, kw = w.shape
        group = a.get("group", 1)
        strides = tuple(a.get("strides", (1, 1)))
        dilations = tuple(a.get("dilations", (1, 1)))
        out_pad = list(a.get("output_padding", (0, 0)))
        auto = a.get("auto_pad", "NOTSET")
        spans = [d * (k - 1) + 1 for k, d in zip((kh, kw), dilations)]
        if "output_shape" in a:
            hw = self._static_hw(node.input[0])
            if hw is None:
                raise self._refuse("output_shape", a["output_shape"], "needs the input's "
                                   "H and W in the model's shapes")
            totals = [s * (n - 1) + p + k - o for s, n, p, k, o in
                      zip(strides, hw, out_pad, spans, a["output_shape"][-2:])]
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            totals = [p + k - s for p, k, s in zip(out_pad, spans, strides)]
        elif auto in ("NOTSET", "VALID"):
            pads = a.get("pads", (0, 0, 0, 0)) if auto == "NOTSET" else (0, 0, 0, 0)
            totals = None
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        else:
            raise self._refuse("auto_pad", auto)
        if totals is not None:
            for i, t in enumerate(totals):  # a negative total padding is output padding
                if t < 0:
                    out_pad[i] -= t
            totals = [max(t, 0) for t in totals]
            upper = auto == "SAME_UPPER"
            padding = tuple((t // 2, t - t // 2) if upper else (t - t // 2, t // 2)
                            for t in totals)
        layer = L.ConvTranspose2d(c_in, cog * group, (kh, kw), strides, padding,
                                  tuple(out_pad), group, b is not None, dilations,
                                  dtype=self._float(w), rng=0)
        layer.weight[...] = w.transpose(2, 3, 1, 0)
        if b is not None:
            layer.bias[...] = b
        self._emit(node.name or node.output[0], layer, [x], MAP, 4, node.output[0],
                   {"weight": node.input[1], "bias": node.input[2] if b is not None else ""})

    def _op_BatchNormalization(self, node) -> None:
        a = self._attrs(node, "epsilon", "momentum", "training_mode")
        if a.get("training_mode", 0):
            raise self._refuse("training_mode", 1, "load the inference graph; call .train() "
                               "on the model to use batch statistics")
        if len([o for o in node.output if o]) > 1:
            raise OnnxError("the running-statistics outputs (training mode) are not supported")
        x = self._runtime(node.input[0])
        scale, bias, mean, var = (self._const(n) for n in node.input[1:5])
        if x.rank == 4:
            x, cls = self._as_map(x), L.BatchNorm2d
        elif x.rank == 2:
            cls = L.BatchNorm1d
        else:
            raise OnnxError(f"batch normalization of a {x.rank}-D tensor is not supported "
                            f"(4-D maps and 2-D (N, C))")
        layer = cls(scale.shape[0], a.get("epsilon", 1e-5), 1 - a.get("momentum", 0.9),
                    dtype=self._float(scale))
        for attr, value in zip(("weight", "bias", "running_mean", "running_var"),
                               (scale, bias, mean, var)):
            getattr(layer, attr)[...] = value
        self._emit(node.name or node.output[0], layer, [x], x.kind, x.rank, node.output[0],
                   dict(zip(("weight", "bias", "running_mean", "running_var"), node.input[1:5])))

    # -- activations ---------------------------------------------------------------------------
    def _op_LeakyRelu(self, node):
        self._unary(node, L.LeakyReLU(self._attrs(node, "alpha").get("alpha", 0.01)))

    def _op_Elu(self, node):
        self._unary(node, L.ELU(self._attrs(node, "alpha").get("alpha", 1.0)))

    def _op_Gelu(self, node):
        self._unary(node, L.GELU(self._attrs(node, "approximate").get("approximate", "none")))

    def _op_HardSigmoid(self, node):
        a = self._attrs(node, "alpha", "beta")
        alpha, beta = a.get("alpha", 0.2), a.get("beta", 0.5)
        if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
            self._unary(node, L.Hardsigmoid())
        else:
            self._unary(node, Elementwise("hardsigmoid", alpha, beta))

    def _op_Clip(self, node):
        a = self._attrs(node, "min", "max")  # attributes before opset 11, inputs since
        lo = self._optional(node, 1)
        hi = self._optional(node, 2)
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
        lo, hi = a.get("min", lo), a.get("max", hi)
        if (lo, hi) == (0, 6):
            self._unary(node, L.ReLU6())
        elif (lo, hi) == (0, np.inf):
            self._unary(node, L.ReLU())
        else:
            self._unary(node, Elementwise("clip", lo, hi))

    def _op_PRelu(self, node):
        self._attrs(node)
        x = self._runtime(node.input[0])
        slope = self._const(node.input[1], "slope")
        if slope.size == 1:
            weight = slope.reshape(1)
        elif x.rank >= 2 and slope.squeeze().ndim == 1 and \
                slope.shape == (slope.size,) + (1,) * (x.rank - 2):
            weight = slope.ravel()  # one per channel (axis 1), which is the last one stored
            if x.rank == 4:
                x = self._as_map(x)
            elif x.rank != 2:
                raise OnnxError(f"a per-channel slope on a {x.rank}-D tensor is not supported")
        else:
            raise OnnxError(f"the slope of shape {slope.shape} is not supported (a scalar or "
                            f"one per channel, (C, 1, 1))")
        layer = L.PReLU(weight.size, dtype=self._float(weight))
        layer.weight[...] = weight
        self._emit(node.name or node.output[0], layer, [x], x.kind, x.rank, node.output[0],
                   {"weight": node.input[1]})

    def _op_Softmax(self, node, cls=L.Softmax):
        a = self._attrs(node, "axis")
        x = self._runtime(node.input[0])
        axis = a.get("axis", -1 if self.opset >= 13 else 1) % max(x.rank, 1)
        if self.opset < 13 and axis != x.rank - 1:
            raise self._refuse("axis", axis, f"before opset 13 {node.op_type} works on the "
                               f"axes from `axis` on, flattened; only the last axis is "
                               f"supported")
        self._unary(node, cls(self._axis(x, axis)))

    def _op_LogSoftmax(self, node):
        self._op_Softmax(node, L.LogSoftmax)

    # -- elementwise arithmetic ------------------------------------------------------------
    def _binary(self, node, op) -> None:
        self._attrs(node)
        a, b = (self.values[n] for n in node.input[:2])
        name = node.name or node.output[0]
        if isinstance(a, _Value) and isinstance(b, _Value):
            (a, b), kind = self._unify([a, b])
            layer = {"add": Add, "mul": Mul}.get(op, lambda: Binary(op))()
            self._emit(name, layer, [a, b], kind, max(a.rank, b.rank), node.output[0])
            return
        first = not isinstance(a, _Value)
        x, c_name = (b, node.input[0]) if first else (a, node.input[1])
        c = self._const(c_name)
        if c.ndim > x.rank:
            raise OnnxError(f"a constant of shape {c.shape} broadcasting a {x.rank}-D tensor "
                            f"to more axes is not supported")
        c = self._const_like(c, x)
        trainable = c_name in self.origin and c.size > 1
        self._emit(name, Constant(op, c, first, trainable), [x], x.kind, x.rank,
                   node.output[0], {"value": c_name} if trainable else None)

    def _op_Add(self, node):
        self._binary(node, "add")

    def _op_Sub(self, node):
        self._binary(node, "sub")

    def _op_Mul(self, node):
        self._binary(node, "mul")

    def _op_Div(self, node):
        self._binary(node, "div")

    def _op_Pow(self, node):
        self._binary(node, "pow")

    # -- pooling and resampling -------------------------------------------------------------
    def _op_MaxPool(self, node):
        a = self._attrs(node, "auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                        "storage_order", "strides")
        if len([o for o in node.output if o]) > 1:
            raise OnnxError("the Indices output is not supported")
        if a.get("storage_order", 0):
            raise self._refuse("storage_order", a["storage_order"])
        x = self._as_map(self._runtime(node.input[0]))
        kernel = tuple(a["kernel_shape"])
        stride, dilation, padding = self._window(node, a, kernel)
        layer = L.MaxPool2d(kernel, stride, padding, dilation,
                            ceil_mode=bool(a.get("ceil_mode", 0)))
        self._emit(node.name or node.output[0], layer, [x], MAP, 4, node.output[0])

    def _op_AveragePool(self, node):
        a = self._attrs(node, "auto_pad", "ceil_mode", "count_include_pad", "dilations",
                        "kernel_shape", "pads", "strides")
        x = self._as_map(self._runtime(node.input[0]))
        kernel = tuple(a["kernel_shape"])
        stride, dilation, padding = self._window(node, a, kernel)
        layer = L.AvgPool2d(kernel, stride, padding, bool(a.get("ceil_mode", 0)),
                            bool(a.get("count_include_pad", 0)), dilation=dilation)
        self._emit(node.name or node.output[0], layer, [x], MAP, 4, node.output[0])

    def _op_GlobalAveragePool(self, node):
        self._attrs(node)
        x = self._as_map(self._runtime(node.input[0]))
        self._emit(node.name or node.output[0], L.AdaptiveAvgPool2d(1), [x], MAP, 4,
                   node.output[0])

    def _op_GlobalMaxPool(self, node):
        self._attrs(node)
        x = self._as_map(self._runtime(node.input[0]))
        self._emit(node.name or node.output[0], L.AdaptiveMaxPool2d(1), [x], MAP, 4,
                   node.output[0])

    def _op_ReduceMean(self, node, op="mean"):
        a = self._attrs(node, "axes", "keepdims", "noop_with_empty_axes")
        x = self._runtime(node.input[0])
        axes = self._axes(node, a)
        keep = bool(a.get("keepdims", 1))
        if axes is None or not axes:
            if a.get("noop_with_empty_axes", 0):
                self.values[node.output[0]] = x
                return
            axes = list(range(x.rank))
        axes = sorted({ax % x.rank for ax in axes})
        name = node.name or node.output[0]
        if x.kind == MAP and axes == [2, 3] and op == "mean":
            layer = L.AdaptiveAvgPool2d(1)
            if not keep:
                layer = L.Sequential(layer, L.Flatten())
            self._emit(name, layer, [x], MAP if keep else FLAT, 4 if keep else 2,
                       node.output[0])
            return
        if x.kind == MAP and not keep:
            x = self._as_flat(x)
        stored = [self._axis(x, ax) for ax in axes]
        self._emit(name, Reduce(op, stored, keep), [x], x.kind,
                   x.rank if keep else x.rank - len(axes), node.output[0])

    def _op_ReduceSum(self, node):
        self._op_ReduceMean(node, "sum")

    def _op_Resize(self, node):
        a = self._attrs(node, "antialias", "axes", "coordinate_transformation_mode",
                        "cubic_coeff_a", "exclude_outside", "extrapolation_value",
                        "keep_aspect_ratio_policy", "mode", "nearest_mode")
        mode = a.get("mode", "nearest")
        coords = a.get("coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            raise self._refuse("mode", mode, "nearest and linear are supported")
        if coords not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                          "tf_half_pixel_for_nn"):
            raise self._refuse("coordinate_transformation_mode", coords)
        if a.get("antialias", 0):
            raise self._refuse("antialias", a["antialias"])
        if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise self._refuse("keep_aspect_ratio_policy", a["keep_aspect_ratio_policy"])
        scales = self._optional(node, 2)
        sizes = self._optional(node, 3)
        self._resize(node, a, mode, coords, a.get("nearest_mode", "round_prefer_floor"),
                     scales if scales is not None and scales.size else None,
                     sizes if sizes is not None and sizes.size else None)

    def _op_Upsample(self, node):
        a = self._attrs(node, "mode")
        mode = a.get("mode", "nearest")
        if mode not in ("nearest", "linear"):
            raise self._refuse("mode", mode)
        self._resize(node, {}, mode, "asymmetric", "floor", self._const(node.input[1]), None)

    def _resize(self, node, a, mode, coords, nearest, scales, sizes):
        x = self._runtime(node.input[0])
        if x.rank != 4:
            raise OnnxError(f"only 4-D (N, C, H, W) inputs resize, but got a {x.rank}-D one")
        axes = a.get("axes", (0, 1, 2, 3))
        given = sizes if sizes is not None else scales
        if given is None:
            raise OnnxError("neither scales nor sizes is given")
        full = dict(zip((ax % 4 for ax in axes), given.tolist()))
        if sizes is not None:
            static = self.static.get(node.input[0]) or (None,) * 4
            if any(n is not None and full.get(i, n) != n for i, n in enumerate(static[:2])):
                raise OnnxError(f"only H and W resize, but sizes={sizes.tolist()}")
            size, scale = (int(full[2]), int(full[3])), None
        else:
            if full.get(0, 1) != 1 or full.get(1, 1) != 1:
                raise OnnxError(f"only H and W resize, but scales={given.tolist()}")
            size, scale = None, (full.get(2, 1.0), full.get(3, 1.0))
        x = self._as_map(x)
        self._emit(node.name or node.output[0], Resize(size, scale, mode, coords, nearest),
                   [x], MAP, 4, node.output[0])

    def _op_Pad(self, node):
        a = self._attrs(node, "mode", "pads", "value")
        mode = a.get("mode", "constant")
        if mode not in ("constant", "reflect", "edge"):
            raise self._refuse("mode", mode)
        x = self._runtime(node.input[0])
        pads = list(a["pads"]) if "pads" in a else self._const(node.input[1]).tolist()
        value = a.get("value", 0.0)
        c = self._optional(node, 2)
        if c is not None and c.size:
            value = float(c.ravel()[0])
        axes = self._axes(node, {}, 3) if self.opset >= 18 else None
        axes = list(range(x.rank)) if axes is None else [ax % x.rank for ax in axes]
        per_axis = [(0, 0)] * x.rank
        for i, ax in enumerate(axes):
            per_axis[self._axis(x, ax)] = (pads[i], pads[i + len(axes)])
        self._emit(node.name or node.output[0], Pad(per_axis, mode, value), [x], x.kind,
                   x.rank, node.output[0])

    # -- joining and splitting -------------------------------------------------------------
    def _op_Concat(self, node):
        a = self._attrs(node, "axis")
        values = [self._runtime(n) for n in node.input]
        values, kind = self._unify(values)
        axis = self._axis(values[0], a["axis"]) if kind == MAP else a["axis"] % values[0].rank
        self._emit(node.name or node.output[0], Concat(axis), values, kind, values[0].rank,
                   node.output[0])

    def _op_Split(self, node):
        a = self._attrs(node, "axis", "split", "num_outputs")
        x = self._runtime(node.input[0])
        outputs = list(node.output)
        split = a.get("split")
        if split is None and len(node.input) > 1 and node.input[1]:
            split = self._const(node.input[1]).tolist()
        size = (self.static.get(node.input[0]) or (None,) * x.rank)[a.get("axis", 0)]
        if split is None:
            if size is None:
                raise OnnxError("an equal split of an axis whose size is known only at run "
                                "time is not supported")
            n = len(outputs)
            chunk = -(-size // n)
            split = [min(chunk, size - i * chunk) for i in range(n)]
        axis = self._axis(x, a.get("axis", 0))
        start = 0
        for out, length in zip(outputs, split):
            index = [slice(None)] * x.rank
            index[axis] = slice(start, start + length)
            start += length
            if out:
                self._emit(out, Slice(index), [x], x.kind, x.rank, out)

    def _slice_args(self, node):
        starts, ends = (self._const(n).tolist() for n in node.input[1:3])
        axes = self._optional(node, 3)
        steps = self._optional(node, 4)
        return (starts, ends, None if axes is None else axes.tolist(),
                None if steps is None else steps.tolist())

    def _op_Slice(self, node):
        self._attrs(node)
        x = self._runtime(node.input[0])
        starts, ends, axes, steps = self._slice_args(node)
        axes = range(len(starts)) if axes is None else axes
        onnx_index = _slices((0,) * x.rank, starts, ends, axes, steps)
        index = [slice(None)] * x.rank
        for ax, s in enumerate(onnx_index):
            index[self._axis(x, ax)] = s
        self._emit(node.name or node.output[0], Slice(index), [x], x.kind, x.rank,
                   node.output[0])

    def _op_Gather(self, node):
        a = self._attrs(node, "axis")
        x = self._as_flat(self._runtime(node.input[0]))
        idx = self._const(node.input[1])
        axis = a.get("axis", 0) % x.rank
        self._emit(node.name or node.output[0], Gather(idx, axis), [x], FLAT,
                   x.rank - 1 + idx.ndim, node.output[0])

    # -- shapes ------------------------------------------------------------------------------
    def _op_Shape(self, node):
        a = self._attrs(node, "start", "end")
        x = self._runtime(node.input[0])
        static = self.static.get(node.input[0]) or (None,) * x.rank
        dims = []
        for i in range(x.rank):
            dynamic = i == 0 or static[i] is None or (x.kind == MAP and i >= 2)
            dims.append(_Dim(node.input[0], i, static[i]) if dynamic else int(static[i]))
        self.values[node.output[0]] = np.array(dims, object)[a.get("start", 0):a.get("end")]

    def _alias(self, node):
        self.values[node.output[0]] = self._runtime(node.input[0])

    def _op_Identity(self, node):
        self._attrs(node)
        self._alias(node)

    def _op_Cast(self, node):
        a = self._attrs(node, "to", "saturate")
        if a["to"] not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE):
            raise self._refuse("to", self.onnx.TensorProto.DataType.Name(a["to"]),
                               "computed values stay float")
        self._alias(node)

    def _op_Dropout(self, node):
        a = self._attrs(node, "ratio", "seed")
        if len([o for o in node.output if o]) > 1:
            raise OnnxError("the mask output is not supported")
        ratio = self._optional(node, 1)
        ratio = a.get("ratio", 0.5) if ratio is None else float(ratio)
        self._unary(node, L.Dropout(ratio))

    def _op_Flatten(self, node):
        a = self._attrs(node, "axis")
        x = self._runtime(node.input[0])
        axis = a.get("axis", 1)
        axis = axis + x.rank if axis < 0 else axis  # ONNX's range: -rank..rank
        name = node.name or node.output[0]
        if x.kind == MAP and axis == 1:
            self._emit(name, L.Flatten(1, -1, channels_first=True), [x], FLAT, 2,
                       node.output[0])
            return
        x = self._as_flat(x)
        layer = Reshape((1, -1)) if axis == 0 else L.Sequential(
            L.Flatten(axis, -1), L.Flatten(0, axis - 1)) if axis < x.rank else \
            L.Sequential(L.Flatten(0, -1), Reshape((-1, 1)))
        self._emit(name, layer, [x], FLAT, 2, node.output[0])

    def _op_Reshape(self, node):
        a = self._attrs(node, "allowzero")
        x = self._runtime(node.input[0])
        target = self.values[node.input[1]]
        if isinstance(target, _Value):
            raise OnnxError("a shape computed from the model's values is not supported")
        static = self.static.get(node.input[0]) or (None,) * x.rank
        if target.dtype == object:
            shape = [0 if isinstance(d, _Dim) and d.axis == 0 and i == 0 else d
                     for i, d in enumerate(target.tolist())]
            shape = [d.static if isinstance(d, _Dim) else int(d) for d in shape]
            if None in shape:
                raise OnnxError(f"the target shape {target.tolist()} depends on sizes known "
                                f"only at run time")
        else:
            shape = [int(d) for d in target.ravel()]
            if shape and static and static[0] is not None and shape[0] == static[0]:
                shape[0] = 0  # the batch axis: any batch size
        if a.get("allowzero", 0) and 0 in shape:
            raise self._refuse("allowzero", 1, "zero-size shapes")
        name = node.name or node.output[0]
        if x.kind == MAP and len(shape) == 2 and shape[0] == 0:
            self._emit(name, L.Flatten(1, -1, channels_first=True), [x], FLAT, 2,
                       node.output[0])
            return
        x = self._as_flat(x)
        self._emit(name, Reshape(shape), [x], FLAT, len(shape), node.output[0])

    def _op_Transpose(self, node):
        a = self._attrs(node, "perm")
        x = self._runtime(node.input[0])
        perm = list(a["perm"]) if "perm" in a else list(range(x.rank))[::-1]
        stored = [0, 2, 3, 1] if x.kind == MAP else list(range(x.rank))
        # out_onnx = in_onnx.transpose(perm); in_onnx = stored_in.transpose(argsort(stored))
        total = [int(np.argsort(stored)[p]) for p in perm]
        if total == list(range(x.rank)):
            self.values[node.output[0]] = _Value(x.name, FLAT, x.rank)
        elif x.rank == 4 and [total[i] for i in (0, 2, 3, 1)] == [0, 1, 2, 3]:
            self.values[node.output[0]] = _Value(x.name, MAP, 4)  # already stored NHWC
        else:
            self._emit(node.name or node.output[0], Permute(total), [x], FLAT, x.rank,
                       node.output[0])

    def _op_Squeeze(self, node):
        a = self._attrs(node, "axes")
        x = self._runtime(node.input[0])
        axes = self._axes(node, a)
        if axes is None:
            static = self.static.get(node.input[0]) or (None,) * x.rank
            if None in static:
                raise OnnxError("a Squeeze without axes of a tensor whose sizes are known "
                                "only at run time is not supported")
            axes = [i for i, n in enumerate(static) if n == 1]
        axes = sorted({ax % x.rank for ax in axes})
        kept = [i for i in range(x.rank) if i not in axes]
        if x.kind == MAP and [i for i in (0, 2, 3, 1) if i in kept] != kept:
            x = self._as_flat(x)  # NHWC order is not the order of what remains
        self._emit(node.name or node.output[0], Squeeze([self._axis(x, ax) for ax in axes]),
                   [x], FLAT, len(kept), node.output[0])

    def _op_Unsqueeze(self, node):
        a = self._attrs(node, "axes")
        x = self._as_flat(self._runtime(node.input[0]))
        axes = self._axes(node, a)
        rank = x.rank + len(axes)
        axes = sorted({ax % rank for ax in axes})
        self._emit(node.name or node.output[0], Squeeze(axes, unsqueeze=True), [x], FLAT, rank,
                   node.output[0])

    # -- fully connected ---------------------------------------------------------------------
    def _op_Gemm(self, node):
        a = self._attrs(node, "alpha", "beta", "transA", "transB")
        if a.get("transA", 0):
            raise self._refuse("transA", 1)
        x = self._runtime(node.input[0])
        if x.rank != 2:
            raise OnnxError(f"expected a 2-D A, but got a {x.rank}-D one")
        b = self._const(node.input[1], "B (the weight)")
        weight = (b.T if a.get("transB", 0) else b) * a.get("alpha", 1.0)
        c = self._optional(node, 2)
        layer = L.Linear(weight.shape[0], weight.shape[1], c is not None,
                         dtype=self._float(weight), rng=0)
        layer.weight[...] = weight
        if c is not None:
            if c.size not in (1, weight.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
                raise OnnxError(f"a C of shape {c.shape} is not supported (a bias (N,) or "
                                f"(1, N))")
            layer.bias[...] = np.broadcast_to(c.ravel(), (weight.shape[1],)) * a.get("beta",
                                                                                      1.0)
        self._emit(node.name or node.output[0], layer, [x], FLAT, 2, node.output[0],
                   {"weight": node.input[1], "bias": node.input[2] if c is not None else ""})

    def _op_MatMul(self, node):
        self._attrs(node)
        a, b = (self.values[n] for n in node.input)
        name = node.name or node.output[0]
        if isinstance(a, _Value) and isinstance(b, _Value):
            a, b = self._as_flat(a), self._as_flat(b)
            self._emit(name, MatMul(), [a, b], FLAT, max(a.rank, b.rank), node.output[0])
            return
        if not isinstance(a, _Value) or b.ndim != 2:
            raise OnnxError("only x @ W with a 2-D constant W, or two computed tensors, "
                            "are supported")
        x = self._as_flat(a)
        layer = L.Linear(b.shape[0], b.shape[1], False, dtype=self._float(b), rng=0)
        layer.weight[...] = b
        self._emit(name, layer, [x], FLAT, x.rank, node.output[0], {"weight": node.input[1]})
