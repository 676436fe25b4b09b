"""Networks beyond a chain of layers: shortcuts, joined branches, shared inputs.

Three multi-input layers join values: `Add()` and `Mul()` (elementwise, NumPy broadcasting,
so a squeeze-and-excitation gate (N, 1, 1, C) scales a map (N, H, W, C)) and `Concat(dim=-1)`
(NHWC: the channels by default). Their `forward(*inputs)` takes two or more arrays and their
`backward(grad_output)` returns a tuple with one gradient per input. `Binary("sub")` and
`Binary("div")` do a - b and a / b the same way. One-input layers that the importers
(fastconv.from_torch, fastconv.onnx) also need: `Constant(op, value)` (x + 3, 1 - x, x / 6),
`Pad(pads, mode)` (F.pad, ONNX's Pad) and `Permute(perm)` (a transpose into a C-contiguous
array: an ONNX model's NCHW <-> NHWC).

`Graph(nodes, inputs=("x",), outputs=None)` runs any directed acyclic network: `nodes` is a
list of `(name, layer, input_names)` in an order where every input is defined before use (a
graph input or an earlier node; the value a node computes is named by the node). Backward
runs the nodes in reverse and adds up the gradients of a value used by several nodes.
Parameters and buffers are named "<node name>.<name>" (node names may contain dots, so a
graph can carry PyTorch's names: "layer1.0.conv1.weight").

Two blocks, both Graphs, write the common patterns in one line:

    Residual(body)                    # body(x) + x            (ResNet, MobileNetV2)
    Residual(body, shortcut)          # body(x) + shortcut(x)  (a ResNet downsample)
    Parallel(a, b, c)                 # concat(a(x), b(x), c(x)) on channels (Inception)
    Parallel(Identity(), f)           # concat(x, f(x))        (a DenseNet layer, a U-Net skip)
    Parallel(Identity(), gate, merge=Mul())   # x * gate(x)    (squeeze-and-excitation)

A layer keeps what its backward needs from its last forward, so one layer object cannot sit at
two nodes of a graph: Graph refuses that (TypeError), use a separate layer per node.
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _params
from fastconv._kernels import _layout
from fastconv._threads import threads_for_work
from fastconv.layers import Identity, Layer, _SettingsNoted


class Merge(Layer):
    """The base of layers that join two or more arrays: forward(*inputs) -> array,
    backward(grad_output) -> tuple of input gradients."""

    #: how many inputs forward takes (None: two or more)
    num_inputs: int | None = None

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def forward(self, *inputs):
        raise NotImplementedError

    def _inputs(self, inputs) -> list[np.ndarray]:
        if len(inputs) < 2:
            raise TypeError(f"{self!r}: expected two or more inputs, but got {len(inputs)}")
        return [_params.as_array(f"input {i}", x) for i, x in enumerate(inputs)]


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient of an input broadcast to grad's shape: summed over the broadcast axes."""
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes).reshape(shape) if axes else grad


class _Elementwise(Merge):
    _output_is_private = True

    def _broadcast(self, arrays) -> tuple[int, ...]:
        try:
            return np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            shapes = ", ".join(str(a.shape) for a in arrays)
            raise ValueError(f"{self!r}: the input shapes {shapes} do not broadcast to one "
                             f"shape (NumPy's rule: each axis equal or 1)") from None


class Add(_Elementwise):
    """Elementwise sum of two or more arrays, with NumPy broadcasting (PyTorch's `a + b`).
    A shape mismatch is a ValueError naming the shapes."""

    def forward(self, *inputs):
        arrays = self._inputs(inputs)
        self._broadcast(arrays)
        y = arrays[0] + arrays[1]
        for a in arrays[2:]:
            y = y + a
        self._save(shapes=[a.shape for a in arrays], out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        return tuple(_sum_to_shape(grad, shape) for shape in saved["shapes"])


class Mul(_Elementwise):
    """Elementwise product of two or more arrays, with NumPy broadcasting (PyTorch's
    `a * b`; a squeeze-and-excitation gate (N, 1, 1, C) times a map (N, H, W, C)).
    Keeps the inputs for backward. A shape mismatch is a ValueError naming the shapes."""

    def forward(self, *inputs):
        arrays = self._inputs(inputs)
        self._broadcast(arrays)
        y = arrays[0] * arrays[1]
        for a in arrays[2:]:
            y = y * a
        self._save(arrays=arrays, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        arrays = saved["arrays"]
        grads = []
        for i, a in enumerate(arrays):
            g = grad
            for j, other in enumerate(arrays):
                if j != i:
                    g = g * other
            grads.append(_sum_to_shape(g, a.shape))
        return tuple(grads)


class Concat(Merge):
    """Joins two or more arrays along `dim` (default -1: the channels of NHWC maps; PyTorch's
    torch.cat(..., dim=1) on NCHW). The other axes must be equal: a mismatch is a ValueError
    naming the shapes."""

    _output_is_private = True

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = _params.as_int("dim", dim)

    def forward(self, *inputs):
        arrays = self._inputs(inputs)
        ndim = arrays[0].ndim
        dim = self.dim + ndim if self.dim < 0 else self.dim
        shapes = [a.shape for a in arrays]
        if (not 0 <= dim < ndim or any(a.ndim != ndim for a in arrays)
                or len({s[:dim] + s[dim + 1:] for s in shapes}) != 1):
            raise ValueError(f"{self!r}: expected arrays of one rank, equal but on dimension "
                             f"{self.dim}, but got shapes {', '.join(map(str, shapes))}")
        y = np.concatenate(arrays, axis=dim, dtype=_params.float_dtype(*arrays))
        self._save(sizes=[s[dim] for s in shapes], dim=dim, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        ends = np.cumsum(saved["sizes"])[:-1]
        return tuple(np.split(grad, ends, axis=saved["dim"]))

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _apply(op, a, b):
    return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
            "pow": np.power}[op](a, b)


def _partials(op, a, b, y, g):
    """(dL/da, dL/db) of y = op(a, b) given g = dL/dy (before summing over broadcasts)."""
    if op == "add":
        return g, g
    if op == "sub":
        return g, -g
    if op == "mul":
        return g * b, g * a
    if op == "div":
        return g / b, -g * y / b
    with np.errstate(divide="ignore", invalid="ignore"):  # pow
        return g * b * np.power(a, b - 1), g * y * np.log(a)


class Binary(_Elementwise):
    """a - b, a / b or a ** b of two arrays, op "sub", "div" or "pow", with NumPy broadcasting
    (PyTorch's `a - b`, `a / b`, `a ** b`; ONNX's Sub, Div, Pow; Add and Mul do a + b and
    a * b). backward returns both input gradients, summed over the broadcast axes. A shape
    mismatch is a ValueError naming the shapes."""

    num_inputs = 2

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, *inputs):
        a, b = arrays = self._inputs(inputs)
        self._broadcast(arrays)
        y = _apply(self.op, a, b)
        self._save(a=a, b=b, y=y, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, s = self._take(grad_output)
        ga, gb = _partials(self.op, s["a"], s["b"], s["y"], grad)
        return _sum_to_shape(ga, s["a"].shape), _sum_to_shape(gb, s["b"].shape)

    def extra_repr(self) -> str:
        return repr(self.op)


class Constant(Layer):
    """op(x, value) (or op(value, x) with constant_first) for op "add", "sub", "mul", "div"
    or "pow" and a constant array `value` broadcast with x (a bias, a scale, the 3 and 6 of a
    hard swish, the 1 of `1 - x`). A fixed value is cast to a float input's dtype, as PyTorch
    does with a Python number (float32 stays float32); trainable=True (fastconv.onnx: an
    initializer of more than one element) makes it a parameter "value" with a gradient."""

    _output_is_private = True

    def __init__(self, op, value, constant_first=False, trainable=False):
        super().__init__()
        self.op, self.constant_first = op, bool(constant_first)
        value = np.array(value)
        if trainable and op != "pow":
            self.param_names = ("value",)
            self._init_param("value", value)
        else:
            self.value = value

    def forward(self, x):
        x = _params.as_array("input", x)
        c = self._constant(x)
        a, b = (c, x) if self.constant_first else (x, c)
        y = _apply(self.op, a, b)
        if y.dtype != x.dtype and x.dtype.kind == "f":
            y = y.astype(x.dtype)
        self._save(x=x, y=y, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, s = self._take(grad_output)
        x = s["x"]
        c = self._constant(x)
        a, b = (c, x) if self.constant_first else (x, c)
        ga, gb = _partials(self.op, a, b, s["y"], grad)
        gx, gc = (gb, ga) if self.constant_first else (ga, gb)
        if self.param_names:
            self._accumulate("value", _sum_to_shape(gc, c.shape))
        return _sum_to_shape(gx, x.shape).astype(x.dtype, copy=False)

    def _constant(self, x: np.ndarray) -> np.ndarray:
        if self.param_names or x.dtype.kind != "f":
            return self.value
        return self.value.astype(x.dtype, copy=False)

    def extra_repr(self) -> str:
        shown = (f"{self.value.item():g}" if self.value.size == 1
                 else f"array of shape {self.value.shape}")
        return f"{self.op!r}, {shown}" + (", constant_first=True" if self.constant_first else "")



def _pad_indices(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """The source index of each padded position along one axis (-1: the constant)."""
    j = np.arange(-before, n + after)
    if mode == "edge":
        return np.clip(j, 0, n - 1)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(j)
        period = 2 * (n - 1)
        j = np.abs(j) % period
        return np.where(j > n - 1, period - j, j)
    return np.where((j >= 0) & (j < n), j, -1)


class Pad(Layer):
    """Pads each axis of the input by pads[axis] = (before, after) (negative ones crop), mode
    "constant" (with `value`), "reflect" (mirrored about the edge, the edge not repeated) or
    "edge" (the edge repeated): ONNX's Pad, PyTorch's F.pad (mode "replicate" is "edge").
    pads has one pair per input axis (an NHWC map: ((0, 0), (top, bottom), (left, right),
    (0, 0))); another rank is a ValueError."""

    _output_is_private = True

    def __init__(self, pads, mode="constant", value=0.0):
        super().__init__()
        self.pads = tuple((int(b), int(a)) for b, a in pads)
        self.mode, self.value = mode, float(value)

    def forward(self, x):
        x = _params.as_array("input", x)
        if x.ndim != len(self.pads):
            raise ValueError(f"{self!r}: expected a {len(self.pads)}-D input, but got shape "
                             f"{x.shape}")
        taps = []
        y = x
        for axis, (n, (b, a)) in enumerate(zip(x.shape, self.pads)):
            if (b, a) == (0, 0):
                continue
            if self.mode != "constant" and n + min(b, 0) + min(a, 0) < 1:
                raise ValueError(f"{self!r}: cannot pad an axis of size {n} in mode "
                                 f"{self.mode!r}")
            idx = _pad_indices(n, b, a, self.mode)
            taps.append((axis, n, idx))
            y = np.take(y, np.maximum(idx, 0), axis=axis)
            if self.mode == "constant" and (idx < 0).any():
                where = [slice(None)] * y.ndim
                where[axis] = idx < 0
                y[tuple(where)] = self.value
        self._save(taps=taps, out_shape=y.shape)
        return y

    def backward(self, grad_output):
        grad, saved = self._take(grad_output)
        for axis, n, idx in reversed(saved["taps"]):
            g = np.moveaxis(grad, axis, 0)
            out = np.zeros((n,) + g.shape[1:], grad.dtype)
            np.add.at(out, idx[idx >= 0], g[idx >= 0])
            grad = np.moveaxis(out, 0, axis)
        return grad

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode!r}" + (
            f", value={self.value}" if self.mode == "constant" and self.value else "")



class Permute(_SettingsNoted, Layer):
    """x.transpose(perm) (a copy, C-contiguous; perm a permutation of the axes, else a
    ValueError); backward transposes back. An ONNX model's NCHW <-> NHWC transposes at its
    inputs and outputs, and layout changes inside a graph that reshapes a feature map
    (fastconv.onnx). `channels`: at a model input, the channel count (axis 1) the file
    declares; another is a ValueError (an NHWC array given to an NCHW model would fail deep
    inside with transposed shapes)."""

    _output_is_private = True

    def __init__(self, perm, channels=None):
        super().__init__()
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(perm))):
            raise ValueError(f"Permute: perm must be a permutation of 0 .. {len(perm) - 1}, "
                             f"but got {perm}")
        self.perm = perm
        self.channels = channels

    def _check(self, x: np.ndarray) -> None:
        if x.ndim != len(self.perm):
            raise ValueError(f"{self!r}: expected a {len(self.perm)}-D input, but got shape "
                             f"{x.shape}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise ValueError(f"{self!r}: expected the model's input in the file's layout "
                             f"(N, C, H, W) with C = {self.channels}, but got shape {x.shape} "
                             f"(an ONNX model takes NCHW arrays, not NHWC)")

    def forward(self, x):
        x = _params.as_array("input", x)
        self._check(x)
        y = _transposed(x, self.perm)
        self._save(out_shape=y.shape)
        return y

    def _inference_kernel(self, x: np.ndarray):
        """This layer as one copy into an array of the caller's, for an inference graph's
        arena (its output then lies where the next convolution's kept call reads it):
        (output shape, dtype, bind) with bind(x, out) returning the call."""
        self._check(x)
        perm = self.perm

        def bind(x: np.ndarray, out: np.ndarray):
            return lambda: _transposed(x, perm, out)
        return tuple(x.shape[p] for p in perm), x.dtype, bind

    def backward(self, grad_output):
        grad, _ = self._take(grad_output)
        return grad.transpose(np.argsort(self.perm))

    def extra_repr(self) -> str:
        channels = "" if self.channels is None else f", channels={self.channels}"
        return f"perm={self.perm}{channels}"


# the last axis length up to which _transposed copies index by index
_SHORT_AXIS = 8
# the permutations of a 4-D array that are a batch of 2-D transposes (N, R, S) -> (N, S, R):
# how many of x's axes after N make R. NCHW -> NHWC: R = C, S = H * W; NHWC -> NCHW: R = H * W,
# S = C.
_BATCHED_TRANSPOSES = {(0, 2, 3, 1): 1, (0, 3, 1, 2): 2}


def _transposed(x: np.ndarray, perm, out: np.ndarray | None = None) -> np.ndarray:
    """x.transpose(perm) copied into a new C-contiguous array, or into `out` (of its shape
    and dtype). NCHW <-> NHWC of a C-contiguous float array into C-contiguous memory:
    _layout's batched transpose on the threads (AMD EPYC Zen 4, 2 threads, against the copies
    below: 8x3x224x224 to NHWC 454 -> 215 us, 1x3x224x224 62 -> 38 us; 8x56x56x64 to NCHW
    1.33 -> 0.39 ms). Elsewhere, where the last axis is short (an image's 3 channels moved
    last), one strided copy per index of that axis: NumPy's own copy runs its inner loop along
    that short axis (1x3x224x224 to NHWC on a Zen 5: 105 -> 35 us)."""
    t = x.transpose(perm)
    if out is None:
        out = np.empty(t.shape, t.dtype)
    r_axes = _BATCHED_TRANSPOSES.get(tuple(perm))
    if (r_axes is not None and x.dtype in (np.float32, np.float64) and x.flags.c_contiguous
            and x.size and out.shape == t.shape and out.dtype == x.dtype
            and out.flags.c_contiguous and out.flags.writeable):
        n, rows = x.shape[0], math.prod(x.shape[1:1 + r_axes])
        _layout.transpose_batched(x.reshape(n, rows, -1), out.reshape(n, -1, rows),
                                  threads_for_work(x.size))
    elif t.ndim >= 2 and t.shape[-1] <= _SHORT_AXIS and not t.flags.c_contiguous:
        for i in range(t.shape[-1]):
            out[..., i] = t[..., i]
    else:
        np.copyto(out, t)
    return out


def _names(what: str, value) -> tuple[str, ...]:
    """One name or a sequence of names, as a tuple of str."""
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{what} must be a name or a non-empty sequence of names (str), but "
                        f"got {value!r}")
    return names


def _num_inputs(layer: Layer) -> int | None:
    return getattr(layer, "num_inputs", 1)


class Graph(Layer):
    """A network of layers wired by name: see the module docstring.

    nodes: (name, layer, input_names) triples, every input defined earlier (a graph input or
        a node); `input_names` is one name or a sequence (a Merge layer takes two or more, a
        Graph as many as its inputs, any other layer one).
    inputs: the graph's input names (default "x"); forward takes that many arrays.
    outputs: the names of the values returned (default: the last node); several names make
        forward return a tuple and backward take a tuple (None for an output with no gradient).

    A value is freed as soon as the nodes that use it have run. A node that raises ValueError
    or TypeError has the node's name (dotted through nested graphs) added to the message.
    Errors at construction: TypeError for a non-layer, a layer at two nodes or a wrong number
    of inputs; ValueError for a duplicate or undefined name.
    """

    def __init__(self, nodes, inputs=("x",), outputs=None):
        super().__init__()
        self.inputs = _names("Graph inputs", inputs)
        self.nodes: list[tuple[str, Layer, tuple[str, ...]]] = []
        defined = set(self.inputs)
        if len(defined) != len(self.inputs):
            raise ValueError(f"Graph: duplicate input names in {self.inputs}")
        seen: dict[int, str] = {}
        for i, node in enumerate(nodes):
            if not (isinstance(node, tuple) and len(node) == 3):
                raise TypeError(f"Graph: node {i} must be a (name, layer, input_names) tuple, "
                                f"but got {node!r}")
            name, layer, names = node
            if not isinstance(name, str) or not name:
                raise TypeError(f"Graph: node {i}'s name must be a non-empty str, but got "
                                f"{name!r}")
            if not isinstance(layer, Layer):
                raise TypeError(f"Graph: node {name!r}'s layer must be a fastconv.layers.Layer, "
                                f"but got {type(layer).__name__}")
            if id(layer) in seen:
                raise TypeError(f"Graph: node {name!r} has the layer of node "
                                f"{seen[id(layer)]!r}; a layer keeps what its backward needs "
                                f"from its last call, so each node needs a layer of its own")
            seen[id(layer)] = name
            if name in defined:
                raise ValueError(f"Graph: the name {name!r} is defined twice")
            names = _names(f"Graph: node {name!r}'s inputs", names)
            undefined = [n for n in names if n not in defined]
            if undefined:
                raise ValueError(f"Graph: node {name!r} uses {undefined}, which no earlier "
                                 f"node or graph input defines")
            expected = _num_inputs(layer)
            if (len(names) < 2) if expected is None else (len(names) != expected):
                want = "two or more" if expected is None else str(expected)
                raise TypeError(f"Graph: node {name!r} ({type(layer).__name__}) takes {want} "
                                f"inputs, but got {len(names)}: {list(names)}")
            if isinstance(layer, Graph) and len(layer.outputs) != 1:
                raise TypeError(f"Graph: node {name!r} is a graph with {len(layer.outputs)} "
                                f"outputs; a node computes one value")
            defined.add(name)
            self.nodes.append((name, layer, names))
        if outputs is None:
            if not self.nodes:
                raise ValueError("Graph: with no nodes, name the outputs")
            outputs = self.nodes[-1][0]
        self.outputs = _names("Graph outputs", outputs)
        undefined = [n for n in self.outputs if n not in defined]
        if undefined:
            raise ValueError(f"Graph: the outputs {undefined} are not defined")
        # the index of the last node using each value, to free it after that node
        self._last_use: dict[str, int] = {}
        for i, (_, _, names) in enumerate(self.nodes):
            for n in names:
                self._last_use[n] = i

    @property
    def num_inputs(self) -> int:  # type: ignore[override]
        return len(self.inputs)

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def __getitem__(self, name: str) -> Layer:
        """The layer of the node `name`."""
        for node, layer, _ in self.nodes:
            if node == name:
                return layer
        raise KeyError(f"Graph has no node {name!r}")

    def forward(self, *inputs):
        if len(inputs) != len(self.inputs):
            raise TypeError(f"{type(self).__name__}: expected {len(self.inputs)} input(s) "
                            f"{self.inputs}, but got {len(inputs)}")
        values = {}
        for name, x in zip(self.inputs, inputs):
            values[name] = _params.as_array(f"input {name!r}", x)
        in_specs = [(v.shape, v.dtype) for v in values.values()]
        keep = set(self.outputs)
        for i, (name, layer, names) in enumerate(self.nodes):
            args = [values[n] for n in names]
            for n in set(names):
                if self._last_use[n] == i and n not in keep:
                    del values[n]
            values[name] = _at_node(name, layer, args)
        outs = tuple(values[n] for n in self.outputs)
        self._save(in_specs=in_specs, out_shape=tuple(o.shape for o in outs))
        return outs[0] if len(outs) == 1 else outs

    def backward(self, grad_output):
        return self._backward(grad_output, True)

    def _backward_params(self, grad_output) -> None:
        """backward() without the gradients of the graph's inputs (Layer.backward_params):
        a node none of whose inputs needs a gradient runs its backward_params(), or nothing
        when it has no parameters; a value needs a gradient when a node with parameters
        made it, or from a value that needs one."""
        self._backward(grad_output, False)

    def _backward(self, grad_output, input_grads: bool):
        if len(self.outputs) == 1:
            grad_output = (grad_output,)
        elif not isinstance(grad_output, (tuple, list)) or len(grad_output) != len(self.outputs):
            raise TypeError(f"{type(self).__name__}.backward: expected a tuple of "
                            f"{len(self.outputs)} gradients (or None) for the outputs "
                            f"{self.outputs}")
        if self._saved is None:
            self._take(None)  # raises the error saying why there is nothing to go back through
        shapes = self._saved["out_shape"]
        grads: dict[str, np.ndarray] = {}
        for i, (name, g) in enumerate(zip(self.outputs, grad_output)):
            if g is None:
                continue
            g = _params.as_array("grad_output", g)
            if g.shape != shapes[i]:
                raise ValueError(f"{type(self).__name__}.backward: expected the gradient of "
                                 f"output {name!r} of shape {shapes[i]}, but got {g.shape}")
            _add_grad(grads, name, g)
        saved, self._saved = self._saved, None
        wanted = None  # backward_params: the values that need a gradient
        if not input_grads:
            wanted = set()
            for name, layer, names in self.nodes:
                if layer._has_params() or wanted.intersection(names):
                    wanted.add(name)
        for name, layer, names in reversed(self.nodes):
            g = grads.pop(name, None)
            if g is None:  # the node feeds no output that has a gradient
                continue
            if wanted is not None and not wanted.intersection(names):
                if name in wanted:  # it has parameters
                    _at_node(name, layer, [g], backward="backward_params")
                continue
            result = _at_node(name, layer, [g], backward="backward")
            for n, gi in zip(names, result if _num_inputs(layer) != 1 else (result,)):
                _add_grad(grads, n, gi)
        if not input_grads:
            return None
        result = tuple(grads[n] if n in grads else np.zeros(shape, dtype)
                       for n, (shape, dtype) in zip(self.inputs, saved["in_specs"]))
        return result[0] if len(result) == 1 else result

    def train(self, mode: bool = True) -> "Graph":
        super().train(mode)
        for _, layer, _ in self.nodes:
            layer.train(mode)
        return self

    def parameters(self):
        for name, layer, _ in self.nodes:
            for pname, value, grad in layer.parameters():
                yield f"{name}.{pname}", value, grad

    def buffers(self):
        for name, layer, _ in self.nodes:
            for bname, value in layer.buffers():
                yield f"{name}.{bname}", value

    def __repr__(self) -> str:
        lines = [f"  inputs: {', '.join(self.inputs)}"]
        for name, layer, names in self.nodes:
            inner = repr(layer).replace("\n", "\n  ")
            lines.append(f"  ({name}): {inner} <- {', '.join(names)}")
        lines.append(f"  outputs: {', '.join(self.outputs)}")
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _add_grad(grads: dict, name: str, g: np.ndarray) -> None:
    """Adds g to the gradient of the value `name` (a value used by several nodes gets the
    sum of their gradients); never writes into g, which a layer may still hold."""
    grads[name] = g if name not in grads else grads[name] + g


def _at_node(name: str, layer: Layer, args, backward: str = ""):
    """layer(*args), or with `backward` the name of one of its backward methods,
    layer.<backward>(args[0]); its ValueError/TypeError naming the node."""
    try:
        return getattr(layer, backward)(args[0]) if backward else layer(*args)
    except (ValueError, TypeError) as error:
        if type(error) not in (ValueError, TypeError):
            raise
        path = name + ("." + error.node_path if hasattr(error, "node_path") else "")
        message = getattr(error, "message", str(error))
        wrapped = type(error)(f"{message} (at node {path!r})")
        wrapped.node_path, wrapped.message = path, message  # type: ignore[attr-defined]
        raise wrapped from None


def _branches(branches: dict[str, Layer | None], merge: Merge, merge_name: str
              ) -> list[tuple[str, Layer, tuple[str, ...]]]:
    """Nodes running each branch on the input "x" (None or an Identity: x itself) and
    joining their results with `merge`."""
    nodes: list[tuple[str, Layer, tuple[str, ...]]] = []
    joined = []
    for name, branch in branches.items():
        if branch is None or type(branch) is Identity:
            joined.append("x")
        else:
            nodes.append((name, branch, ("x",)))
            joined.append(name)
    nodes.append((merge_name, merge, tuple(joined)))
    return nodes


class Residual(Graph):
    """out = body(x) + shortcut(x), the shortcut the identity by default (a ResNet or
    MobileNetV2 block; a ResNet block with a downsample passes it as `shortcut`).
    Parameters are named "body.<name>" and "shortcut.<name>". `merge` joins the two (default
    Add(); a shape mismatch is a ValueError naming both shapes and the node "add")."""

    def __init__(self, body: Layer, shortcut: Layer | None = None, merge: Merge | None = None):
        merge = Add() if merge is None else merge
        super().__init__(_branches({"body": body, "shortcut": shortcut}, merge, "add"))

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(layer).replace("\n", "\n  ")
                 for name, layer, _ in self.nodes[:-1]]
        if len(self.nodes) == 2:
            lines.append("  (shortcut): identity")
        merge = self.nodes[-1][1]
        if not isinstance(merge, Add):
            lines.append(f"  (merge): {merge!r}")
        return "Residual(\n" + "\n".join(lines) + "\n)"


class Parallel(Graph):
    """Runs every branch on the same input and joins the results with `merge` (default
    Concat(-1): the channels, as PyTorch's torch.cat(..., dim=1)). A branch that is None or an
    Identity passes the input itself (a DenseNet layer: Parallel(Identity(), f)). Parameters
    are named "<branch index>.<name>", as in a Sequential."""

    def __init__(self, *branches: Layer | None, merge: Merge | None = None):
        if len(branches) < 2:
            raise TypeError(f"Parallel: expected two or more branches, but got {len(branches)}")
        merge = Concat() if merge is None else merge
        super().__init__(_branches({str(i): b for i, b in enumerate(branches)}, merge, "merge"))
        self.branches = list(branches)

    def __repr__(self) -> str:
        lines = [f"  ({i}): " + ("identity" if b is None else repr(b).replace("\n", "\n  "))
                 for i, b in enumerate(self.branches)]
        lines.append(f"  (merge): {self.nodes[-1][1]!r}")
        return "Parallel(\n" + "\n".join(lines) + "\n)"
