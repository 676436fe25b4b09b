"""The whole-network benchmark behind `fastconv bench --models`.

Each network is built with fastconv.models (random weights; BatchNorm's running statistics
taken from one training-mode pass over random images, so activations have realistic scales),
then mirrored layer by layer into a plain torch.nn twin holding the same weights
(`torch_twin`), which is exported to ONNX for ONNX Runtime. Every engine's result is checked
against PyTorch's before it is timed; then the engines run in turn, one call each per round,
and the median of the rounds is reported. PyTorch and ONNX Runtime are optional peers.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fastconv import _bench
from fastconv import layers as L
from fastconv import models
from fastconv.graph import Add, Concat, Graph, Mul

ENGINES = ("fastconv", "torch", "onnxruntime")
PEERS = ENGINES[1:]
# the PyTorch CPU wheel (the default PyPI wheel brings CUDA libraries too)
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
ORT_INSTALL = "pip install 'fastconv[bench]' (or pip install onnxruntime onnx)"
INSTALL = {"torch": TORCH_INSTALL, "onnxruntime": ORT_INSTALL}
# allowed max |engine - torch| / max |torch|, float32: inference; a training step's logits
# and its parameter gradients (against PyTorch in float64; train-mode BatchNorm on small
# maps amplifies rounding: at batch 8, 112 px, PyTorch's own float32 step is off by 6e-3
# and fastconv's by 1.3e-2)
INFERENCE_TOLERANCE = 1e-4
TRAIN_TOLERANCE = 5e-2


@dataclass(frozen=True)
class Model:
    """A network of the benchmark: its fastconv.models constructor and image size."""
    name: str
    build: Callable[..., L.Layer]  # (width, rng, classes) -> fastconv model
    image: int  # H = W of the input images
    width: int  # the paper's channel count of the first stage
    classes: int = 1000


MODELS = {m.name: m for m in (
    Model("resnet18", lambda w, rng, c: models.resnet18(c, width=w, rng=rng), 224, 64),
    Model("resnet50", lambda w, rng, c: models.resnet50(c, width=w, rng=rng), 224, 64),
    Model("mobilenetv2", lambda w, rng, c: models.mobilenet_v2(c, width=w, rng=rng), 224, 32),
    Model("vgg16", lambda w, rng, c: models.vgg16_bn(c, width=w, rng=rng), 224, 64),
    # a U-Net at 128 x 128 (at 256 its batch 8 takes several seconds per call on 2 cores)
    Model("unet", lambda w, rng, c: models.unet(c, width=w, rng=rng), 128, 64, 2),
)}
QUICK = ("resnet18", "mobilenetv2")  # --quick: these at batch 1
TRAIN_MODELS = ("resnet18",)  # the training step (no dropout: both engines do the same step)
TRAIN_IMAGE = 112  # the training step's image size


def missing_peer_note(name: str) -> str:
    what = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}[name]
    return f"{what} is not installed: no {name} column ({INSTALL[name]})"


# ----------------------------------------------------------------------------------------------
# the networks

def _walk(layer: L.Layer):
    """The layer and every layer inside it."""
    yield layer
    children = (layer.layers if isinstance(layer, L.Sequential) else
                [child for _, child, _ in layer.nodes] if isinstance(layer, Graph) else [])
    for child in children:
        yield from _walk(child)


def build(model: Model, width: int | None = None, image: int | None = None, seed: int = 0,
          classes: int | None = None) -> L.Layer:
    """The fastconv network in eval mode, its BatchNorm running statistics those of one
    training-mode pass over two random images (cumulative average: exactly that batch's)."""
    rng = np.random.default_rng(seed)
    net = model.build(width or model.width, rng, classes or model.classes)
    norms = [m for m in _walk(net) if isinstance(m, L._BatchNorm)]
    for m in norms:
        m.momentum = None
    image = image or model.image
    net.train()(rng.standard_normal((2, image, image, 3), np.float32))
    for m in norms:
        m.momentum = 0.1
    return net.eval()


def torch_twin(layer: L.Layer, torch):
    """A torch.nn module computing what the fastconv layer computes (on NCHW tensors), with
    its weights and buffers, under the same state_dict names (PyTorch's layouts). Covers the
    layers fastconv.models use; another layer is a TypeError naming it."""
    nn, own = torch.nn, _twin_classes(torch)

    def copy(param, array, perm=None):
        value = np.array(array if perm is None else array.transpose(perm), order="C")
        param.data.copy_(torch.from_numpy(value))

    def convert(m):
        kind = type(m)
        if isinstance(m, L.Sequential):
            return nn.Sequential(*(convert(child) for child in m.layers))
        if isinstance(m, Graph):
            return own["Graph"]([(name, convert(child), names)
                                 for name, child, names in m.nodes], m.outputs[0])
        if kind in (L.Conv2d, L.ConvTranspose2d):
            common = dict(stride=m.stride, dilation=m.dilation, groups=m.groups,
                          bias=m.bias is not None)
            if kind is L.Conv2d:
                twin = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size,
                                 padding=m.padding, padding_mode=m.padding_mode, **common)
            else:
                twin = nn.ConvTranspose2d(m.in_channels, m.out_channels, m.kernel_size,
                                          padding=m.padding, output_padding=m.output_padding,
                                          **common)
            copy(twin.weight, m.weight, (3, 2, 0, 1))  # HWIO -> OIHW, HW(O/g)I -> IOHW
            if m.bias is not None:
                copy(twin.bias, m.bias)
            return twin
        if kind is L.BatchNorm2d:
            twin = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine,
                                  m.track_running_stats)
            for name, value in [*((n, v) for n, v, _ in m.parameters()), *m.buffers()]:
                copy(getattr(twin, name), value)
            return twin
        if kind is L.Linear:
            twin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            copy(twin.weight, m.weight, (1, 0))
            if m.bias is not None:
                copy(twin.bias, m.bias)
            return twin
        if kind is L.MaxPool2d:
            return nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                ceil_mode=m.ceil_mode)
        if kind is L.AdaptiveAvgPool2d:
            return nn.AdaptiveAvgPool2d(m.output_size)
        if kind is L.Flatten and (m.start_dim, m.end_dim) == (1, -1):
            return nn.Flatten() if m.channels_first else own["FlattenNHWC"]()
        if kind is L.Dropout:
            return nn.Dropout(m.p)
        if kind in (L.ReLU, L.ReLU6, L.Hardsigmoid, L.Hardswish, L.SiLU, L.Sigmoid, L.Tanh,
                    L.Identity):
            return getattr(nn, kind.__name__)()
        if kind in (Add, Mul) or (kind is Concat and m.dim in (-1, 3)):
            return own["Merge"](kind.__name__)
        raise TypeError(f"torch_twin: no PyTorch twin for {m!r}")

    return convert(layer).train(layer.training)


_TWIN_CLASSES: dict = {}


def _twin_classes(torch) -> dict:
    """The twin's own module classes, defined once torch is imported: "Graph" (fastconv's
    Graph: children named by node, run in the nodes' order), "Merge" (Add, Mul, Concat on
    channels) and "FlattenNHWC" (fastconv's Flatten, in (H, W, C) order, so a Linear after it
    takes the same weight)."""
    if _TWIN_CLASSES:
        return _TWIN_CLASSES
    nn: Any = torch.nn

    # classes made with type(): they exist only once torch is imported (and mypy's stubtest
    # would look for classes defined in a function at the module's top level)
    def graph_init(self, nodes, output):
        nn.Module.__init__(self)
        self.wiring = [(name, tuple(names)) for name, _, names in nodes]
        self.output = output
        for name, module, _ in nodes:
            self.add_module(name, module)

    def graph_forward(self, x):
        values = {"x": x}
        for name, names in self.wiring:
            values[name] = getattr(self, name)(*(values[n] for n in names))
        return values[self.output]

    def merge_init(self, op):
        nn.Module.__init__(self)
        self.op = op

    def merge_forward(self, *xs):
        if self.op == "Concat":  # NHWC channels = NCHW dimension 1
            return torch.cat(xs, 1)
        y = xs[0]
        for x in xs[1:]:
            y = y + x if self.op == "Add" else y * x
        return y

    def flatten_forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)

    TorchGraph = type("TorchGraph", (nn.Module,), {"__init__": graph_init,
                                                   "forward": graph_forward})
    TorchMerge = type("TorchMerge", (nn.Module,), {"__init__": merge_init,
                                                   "forward": merge_forward})
    FlattenNHWC = type("FlattenNHWC", (nn.Module,), {"forward": flatten_forward})
    _TWIN_CLASSES.update(Graph=TorchGraph, Merge=TorchMerge, FlattenNHWC=FlattenNHWC)
    return _TWIN_CLASSES


def onnx_session(twin, x_nchw: np.ndarray, ort, threads: int):
    """An ONNX Runtime session (_bench.onnxruntime_session: CPU, ORT_ENABLE_ALL, intra-op
    threads = `threads`, inter-op 1) of the twin exported by torch.onnx's TorchScript exporter
    (dynamo=False: it works offline), with a dynamic batch dimension. Input "x" NCHW."""
    import torch

    with tempfile.TemporaryDirectory() as folder, torch.no_grad(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own notice
        path = os.path.join(folder, "model.onnx")
        torch.onnx.export(twin, (torch.from_numpy(x_nchw),), path, dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17,
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        return _bench.onnxruntime_session(path, ort, threads)


# ----------------------------------------------------------------------------------------------
# measurement

@dataclass
class Result:
    """One network at one batch size, inference or a training step."""
    model: str
    batch: int
    image: int
    mode: str  # "inference" | "train"
    seconds: dict[str, float] = field(default_factory=dict)  # engine -> median time
    times: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)  # engine -> error vs torch
    failed: list[str] = field(default_factory=list)  # engines beyond the tolerance
    checked: bool = True  # False: no PyTorch to check against

    def ms(self, engine: str) -> float | None:
        s = self.seconds.get(engine)
        return None if s is None else 1e3 * s

    def images_per_s(self, engine: str) -> float | None:
        s = self.seconds.get(engine)
        return None if not s else self.batch / s

    def ratio(self, peer: str) -> float | None:
        """peer time / fastconv time (> 1: fastconv is faster)."""
        mine, theirs = self.seconds.get("fastconv"), self.seconds.get(peer)
        return theirs / mine if mine and theirs else None

    def as_dict(self) -> dict:
        return {"model": self.model, "batch": self.batch, "image": self.image,
                "mode": self.mode, "checked": self.checked, "failed": self.failed,
                "engines": {e: {"ms": self.ms(e), "images_per_s": self.images_per_s(e),
                                "times_ms": [1e3 * t for t in self.times[e]],
                                "error_vs_torch": self.errors.get(e)}
                            for e in self.seconds},
                "vs_torch": self.ratio("torch"), "vs_onnxruntime": self.ratio("onnxruntime")}


def _nhwc(a):
    """A peer's NCHW map (a U-Net's output) as NHWC; a tensor as a NumPy array."""
    a = a.numpy() if hasattr(a, "numpy") else np.asarray(a)
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def relative_error(result, expected) -> float:
    result, expected = np.asarray(result, np.float64), np.asarray(expected, np.float64)
    if result.shape != expected.shape:
        return math.inf
    scale = float(np.max(np.abs(expected), initial=0.0)) or 1.0
    error = float(np.max(np.abs(result - expected), initial=0.0)) / scale
    return error if math.isfinite(error) else math.inf


def timed_rounds(runs: dict, repeats: int) -> dict[str, list[float]]:
    """`repeats` rounds, each calling every engine once, in an order rotated per round."""
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            _bench.wait_until_idle()  # no pool of the last call still spinning
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def inference_description() -> str:
    """What fastconv's inference column runs."""
    import fastconv

    if getattr(fastconv, "optimize_for_inference", None) is None:
        return "the model in eval mode (this fastconv has no optimize_for_inference)"
    return "fastconv.optimize_for_inference(model) (BatchNorm folded, epilogues fused)"


def inference_form(net: L.Layer):
    """(the network fastconv's inference column runs, its description):
    fastconv.optimize_for_inference(net) where fastconv has it, else net in eval mode."""
    import fastconv

    optimize = getattr(fastconv, "optimize_for_inference", None)
    return (net.eval() if optimize is None else optimize(net)), inference_description()


def bench_inference(model: Model, batches, engines, threads: int, repeats: int,
                    width: int | None = None, image: int | None = None, seed: int = 0,
                    classes: int | None = None, notes: list | None = None) -> list[Result]:
    """The network's inference at each batch size on each engine ("fastconv", "torch",
    "onnxruntime"; the peers need PyTorch, ORT its twin too), each checked against PyTorch
    (without it: fastconv's optimized form against its plain eval form). Why a peer could
    not run is appended to `notes`."""
    notes = [] if notes is None else notes
    torch: Any = (_bench.torch_module() if "torch" in engines or "onnxruntime" in engines
                  else None)
    image = image or model.image
    net = build(model, width, image, seed, classes)
    twin = torch_twin(net, torch).to(memory_format=torch.channels_last) if torch else None
    fast, _ = inference_form(net)
    rng = np.random.default_rng(seed + 1)
    session = None
    results = []
    for n in batches:
        x = rng.standard_normal((n, image, image, 3), np.float32)  # NHWC
        x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        runs = {"fastconv": lambda: fast(x)}
        if twin is not None:
            x_torch = torch.from_numpy(x).permute(0, 3, 1, 2)  # channels_last view

            def run_torch():
                with torch.inference_mode():
                    return twin(x_torch)
            expected = _nhwc(run_torch().numpy())
            if "torch" in engines:
                runs["torch"] = run_torch
            if "onnxruntime" in engines:
                if session is None:
                    try:
                        session = onnx_session(twin, x_nchw, _bench.onnxruntime_module(),
                                               threads)
                    except Exception as exc:  # an export ORT cannot take: go on without it
                        session = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                if isinstance(session, str):
                    notes.append(f"{model.name}: no ONNX Runtime column ({session})")
                else:
                    runs["onnxruntime"] = lambda: session.run(None, {"x": x_nchw})[0]
        else:
            expected = net.eval()(x)
        result = Result(model.name, n, image, "inference", checked=twin is not None)
        for name, run in runs.items():
            result.errors[name] = relative_error(_nhwc(run()) if name != "fastconv" else run(),
                                                 expected)  # also the warm-up
            run()
            if result.errors[name] > INFERENCE_TOLERANCE:
                result.failed.append(name)
        result.times = timed_rounds(runs, repeats)
        result.seconds = {name: statistics.median(t) for name, t in result.times.items()}
        results.append(result)
    return results


def bench_train(model: Model, batches, engines, repeats: int, width: int | None = None,
                image: int = TRAIN_IMAGE, seed: int = 0, classes: int | None = None,
                lr: float = 0.01) -> list[Result]:
    """One training step (forward, cross-entropy loss, backward, SGD with momentum) of the
    network in training mode, fastconv against PyTorch (channels_last). The first step of
    each is checked against PyTorch's in float64: the logits and all parameter gradients
    (relative to the largest gradient) within TRAIN_TOLERANCE."""
    import fastconv
    from fastconv.losses import CrossEntropyLoss
    from fastconv.optim import SGD

    torch: Any = _bench.torch_module() if "torch" in engines else None
    rng = np.random.default_rng(seed + 2)
    results = []
    for n in batches:
        # a fresh network per batch size: steps at batch 1 (BatchNorm on one image) would
        # make the two engines' weights drift apart before the check
        net = build(model, width, image, seed, classes).train()
        twin = torch_twin(net, torch).to(memory_format=torch.channels_last) if torch else None
        criterion, optimizer = CrossEntropyLoss(), SGD(net, lr=lr, momentum=0.9)
        if twin is not None:
            torch_criterion = torch.nn.CrossEntropyLoss()
            torch_optimizer = torch.optim.SGD(twin.parameters(), lr=lr, momentum=0.9)
        x = rng.standard_normal((n, image, image, 3), np.float32)
        labels = rng.integers(0, classes or model.classes, n)

        def step_fastconv():
            optimizer.zero_grad()
            logits = net(x)
            criterion(logits, labels)
            net.backward_params(criterion.backward())
            optimizer.step()
            return logits

        runs = {"fastconv": step_fastconv}
        result = Result(model.name, n, image, "train", checked=twin is not None)
        if twin is not None:
            x_torch = torch.from_numpy(x).permute(0, 3, 1, 2)
            labels_torch = torch.from_numpy(labels)

            def step_torch():
                torch_optimizer.zero_grad()
                logits = twin(x_torch)
                torch_criterion(logits, labels_torch).backward()
                torch_optimizer.step()
                return logits

            runs["torch"] = step_torch
            # the check, on the first step (both engines start from the same weights):
            # the logits, and all parameter gradients together (max |difference| over all
            # of them / max |gradient| over all of them: a single gradient that is mostly
            # cancellation, such as a conv's before train-mode BatchNorm on 4x4 maps, is off
            # by percents in any float32 engine), against PyTorch in float64
            exact_logits, exact_grads = _torch_step_float64(twin, x, labels, torch)
            scale = max(float(np.max(np.abs(g))) for g in exact_grads.values()) or 1.0
            for name, step in (("torch", step_torch), ("fastconv", step_fastconv)):
                logits = _nhwc(step().detach() if name == "torch" else step())
                grads = (fastconv.state_dict_from_torch(
                    twin, {k: p.grad for k, p in twin.named_parameters()})
                    if name == "torch" else {k: g for k, _, g in net.parameters()})
                worst = max(float(np.max(np.abs(grads[k].astype(np.float64) - g)))
                            for k, g in exact_grads.items()) / scale
                result.errors[name] = max(worst, relative_error(logits, exact_logits))
                if result.errors[name] > TRAIN_TOLERANCE:
                    result.failed.append(name)
        else:
            step_fastconv()
        for run in runs.values():
            run()
        result.times = timed_rounds(runs, repeats)
        result.seconds = {name: statistics.median(t) for name, t in result.times.items()}
        results.append(result)
    return results


def _torch_step_float64(twin, x: np.ndarray, labels: np.ndarray, torch):
    """(logits, {name: gradient} in fastconv's layouts) of a float64 copy of the twin in
    training mode: the reference of the training step's check."""
    import copy

    import fastconv

    exact = copy.deepcopy(twin).double().to(memory_format=torch.contiguous_format)
    logits = exact(torch.from_numpy(x).double().permute(0, 3, 1, 2).contiguous())
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()
    grads = fastconv.state_dict_from_torch(
        exact, {k: p.grad for k, p in exact.named_parameters()})
    return logits.detach().numpy(), grads


def geometric_mean(values) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


# ----------------------------------------------------------------------------------------------
# the report

def _num(value: float | None, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return (f"{value:.0f}" if value >= 100 else f"{value:.3g}").rjust(width)


def format_table(results: list[Result], engines) -> str:
    """ms per batch and images/s per engine, the ratios vs each peer (peer time / fastconv
    time: > 1 fastconv faster), and the check against PyTorch."""
    peers = [e for e in engines if e != "fastconv"]
    short = {"fastconv": "fastconv", "torch": "torch", "onnxruntime": "ort"}
    head = f"{'model':<12} {'mode':<9} {'batch':>5} {'image':>5}"
    head += "".join(f" {short[e] + ' ms':>11}" for e in engines)
    head += "".join(f" {short[e] + ' img/s':>12}" for e in engines)
    head += "".join(f" {'x vs ' + short[p]:>9}" for p in peers) + "  check"
    lines = [head, "-" * len(head)]
    for r in results:
        line = f"{r.model:<12} {r.mode:<9} {r.batch:>5} {r.image:>5}"
        line += "".join(f" {_num(r.ms(e), 11)}" for e in engines)
        line += "".join(f" {_num(r.images_per_s(e), 12)}" for e in engines)
        line += "".join(f" {_num(r.ratio(p), 9)}" for p in peers)
        worst = max((v for v in r.errors.values() if v is not None), default=None)
        if r.failed:
            line += f"  FAIL ({', '.join(r.failed)}: {max(r.errors[e] for e in r.failed):.2g})"
        elif not r.checked:
            line += "  unchecked (no torch)"
        else:
            line += f"  ok ({worst:.1g})" if worst else "  ok"
        lines.append(line)
    return "\n".join(lines)


def summary(results: list[Result]) -> list[str]:
    """Geometric means of the ratios per mode and peer, and the lowest ratio vs ORT."""
    lines = []
    for mode in ("inference", "train"):
        rows = [r for r in results if r.mode == mode]
        for peer in PEERS:
            ratios = [r.ratio(peer) for r in rows if r.ratio(peer)]
            if not ratios:
                continue
            worst = min(rows, key=lambda r: r.ratio(peer) or math.inf)
            lines.append(f"{mode}: geometric mean of x vs {peer} over {len(ratios)} rows "
                         f"{geometric_mean(ratios):.2f} (lowest {worst.ratio(peer):.2f}: "
                         f"{worst.model} batch {worst.batch})")
    return lines
