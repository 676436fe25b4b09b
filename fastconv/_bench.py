"""The standard layer suite and the measurement engine behind `fastconv bench`.

Everything here works with NumPy alone; PyTorch and ONNX Runtime (forward only) are used as
peers when they are importable and tqdm is the CLI's business. Each measured call is first checked against a float64 reference
computed here from the definition (a tap-by-tap sum, independent of fastconv's kernels);
then all implementations are timed round by round on the same arrays, interleaved, and the
median of the rounds is reported.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

DIRECTIONS = ("forward", "backward")
PEERS = ("numpy", "torch", "onnxruntime")
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SIMD_FLAGS = ("sse2", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "amx_tile", "neon", "asimd", "sve")


# ----------------------------------------------------------------------------------------------
# the suite

@dataclass(frozen=True)
class Layer:
    """One convolution of the suite, NHWC fp32.

    A plain layer maps (n, hw, hw, c_in) -> (n, Ho, Wo, c_out) with conv2d and an HWIO weight
    (k, k, c_in // groups, c_out). A transposed layer maps c_in -> c_out with conv_transpose2d,
    weight (k, k, c_out // groups, c_in): the weight of the convolution it is the adjoint of.
    """
    name: str
    n: int
    hw: int
    c_in: int
    c_out: int
    k: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    groups: int = 1
    transposed: bool = False

    def replace(self, **changes) -> Layer:
        return dataclasses.replace(self, **changes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.hw, self.hw, self.c_in)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        if self.transposed:
            return (self.k, self.k, self.c_out // self.groups, self.c_in)
        return (self.k, self.k, self.c_in // self.groups, self.c_out)

    @property
    def out_hw(self) -> int:
        span = self.dilation * (self.k - 1)
        if self.transposed:
            return (self.hw - 1) * self.stride - 2 * self.pad + span + 1
        return (self.hw + 2 * self.pad - span - 1) // self.stride + 1

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.out_hw, self.out_hw, self.c_out)

    # The convolution itself (for a transposed layer: the one it is the adjoint of).
    @property
    def conv_in_channels(self) -> int:
        return self.c_out if self.transposed else self.c_in

    @property
    def conv_out_channels(self) -> int:
        return self.c_in if self.transposed else self.c_out

    @property
    def conv_out_hw(self) -> int:
        return self.hw if self.transposed else self.out_hw

    def flops(self, direction: str = "forward") -> int:
        """Direct-convolution FLOPs: 2 * N * Ho * Wo * C_out * (C_in / groups) * k * k, with
        (Ho, Wo, C_out, C_in) those of the convolution (a transposed layer's input is that
        convolution's output). Backward computes two such products (input and weight grads)."""
        forward = (2 * self.n * self.conv_out_hw ** 2 * self.conv_out_channels
                   * (self.conv_in_channels // self.groups) * self.k * self.k)
        return forward * (2 if direction == "backward" else 1)

    def kwargs(self) -> dict:
        """The geometry keywords of fastconv's functions."""
        return dict(stride=self.stride, padding=self.pad, dilation=self.dilation,
                    groups=self.groups)


def _batches(*layers: Layer) -> tuple[Layer, ...]:
    """Each layer as given and at batch 1 (named with "_b1")."""
    return tuple(x for layer in layers
                 for x in (layer, layer.replace(name=layer.name + "_b1", n=1)))


SUITE: tuple[Layer, ...] = (
    #     name                   N   H=W  C_in C_out k  stride pad dil groups
    Layer("resnet_stem_7x7s2",   1, 224,   3,   64, 7, 2, 3),
    Layer("resnet_3x3_56",       8,  56,  64,   64, 3, 1, 1),
    Layer("resnet_1x1_56",       8,  56,  64,  256, 1, 1, 0),
    Layer("resnet_3x3_28",       8,  28, 128,  128, 3, 1, 1),
    Layer("resnet_3x3_14",       8,  14, 256,  256, 3, 1, 1),
    Layer("resnet_3x3_7",        8,   7, 512,  512, 3, 1, 1),
    Layer("vgg_3x3_112",         1, 112, 128,  128, 3, 1, 1),
    Layer("mobilenet_dw_112",    8, 112,  32,   32, 3, 1, 1, 1, 32),
    Layer("mobilenet_dw_s2",     8,  56, 128,  128, 3, 2, 1, 1, 128),
    Layer("dilated_3x3_d2",      4,  64,  64,   64, 3, 1, 2, 2),
    Layer("grouped_g8",          8,  28, 128,  128, 3, 1, 1, 1, 8),
    Layer("lenet_5x5",          64,  28,   1,    6, 5, 1, 0),
    Layer("cifar_3x3",          64,  32,   3,   32, 3, 1, 1),
    Layer("dcgan_tconv_4x4s2",   8,  16, 256,  128, 4, 2, 1, transposed=True),
    Layer("unet_tconv_2x2s2",    4,  32, 128,   64, 2, 2, 0, transposed=True),
) + _batches(  # the layers of real networks at batch 8 and (name + "_b1") batch 1
    Layer("resnet50_1x1_256to64_56",   8,  56,  256,   64, 1, 1, 0),
    Layer("resnet50_1x1_1024to256_14", 8,  14, 1024,  256, 1, 1, 0),
    Layer("resnet50_1x1_512to2048_7",  8,   7,  512, 2048, 1, 1, 0),
    Layer("wide_3x3_128to256_56",      8,  56,  128,  256, 3, 1, 1),
    Layer("vgg_3x3_512_28",            8,  28,  512,  512, 3, 1, 1),
    Layer("down_3x3s2_128to256_56",    8,  56,  128,  256, 3, 2, 1),
    Layer("mobilenetv2_1x1_96to576_14", 8, 14,   96,  576, 1, 1, 0),
    Layer("mobilenetv2_1x1_960to320_7", 8,  7,  960,  320, 1, 1, 0),
) + (  # batch 1 of old rows (their batch 8 is the old row): 64 -> 256 at 56 (ResNet-50's
    # 1x1 expand), 256 -> 256 at 14, 512 -> 512 at 7
    Layer("resnet_1x1_56_b1",    1,  56,  64,  256, 1, 1, 0),
    Layer("resnet_3x3_14_b1",    1,  14, 256,  256, 3, 1, 1),
    Layer("resnet_3x3_7_b1",     1,   7, 512,  512, 3, 1, 1),
)
LAYERS = {layer.name: layer for layer in SUITE}


def quick_layer(layer: Layer) -> Layer:
    """The --quick version of a layer: an eighth of the batch (at least one image)."""
    return layer.replace(n=max(1, layer.n // 8))


def quick_selection(layers) -> list[Layer]:
    """The --quick versions of `layers`, each geometry once (the first of its name): a
    batch-8 layer's quick version is its "_b1" twin."""
    kept, seen = [], set()
    for layer in map(quick_layer, layers):
        if layer.replace(name="") not in seen:
            seen.add(layer.replace(name=""))
            kept.append(layer)
    return kept


def geometry(layer: Layer):
    """fastconv's checked geometry of the layer (for a transposed layer: of its adjoint conv)."""
    from fastconv import _params

    if layer.transposed:
        return _params.conv_transpose_geometry("bench", layer.input_shape, layer.weight_shape,
                                               layer.stride, layer.pad, 0, layer.dilation,
                                               layer.groups)
    return _params.conv_geometry("bench", layer.input_shape, layer.weight_shape, layer.stride,
                                 layer.pad, layer.dilation, layer.groups)


def serves(layer: Layer, algorithm: str) -> bool:
    """Whether `algorithm` can run the layer (Winograd: 3x3 stride-1 convolutions only)."""
    from fastconv import _algorithms

    if algorithm != "winograd":
        return True
    geo = geometry(layer)
    return _algorithms.winograd_serves(geo.kernel_hw, geo.stride, geo.dilation)


def auto_choices(layer: Layer, threads: int | None = None) -> dict[str, tuple[str, str]]:
    """What "auto" runs for the layer and why (_algorithms.describe, fp32, at `threads`,
    default the current thread count), in the layer's own terms: {"forward": (algorithm,
    reason), "input_gradient": ..., "weight_gradient": ...}. A transposed layer's forward is
    the input gradient of the convolution it is the adjoint of, and its input gradient that
    convolution's forward."""
    from fastconv import _algorithms

    chosen = _algorithms.describe(geometry(layer), "float32", threads)
    if layer.transposed:
        return {"forward": chosen["input_gradient"], "input_gradient": chosen["forward"],
                "weight_gradient": chosen["weight_gradient"]}
    return chosen


def auto_choice(layer: Layer) -> str:
    """What "auto" runs for the layer's forward and for its weight gradient, in one word
    ("direct") or two ("direct/im2col (weight)")."""
    chosen = auto_choices(layer)
    conv, weight = chosen["forward"][0], chosen["weight_gradient"][0]
    return conv if conv == weight else f"{conv}/{weight} (weight)"


# the parts of auto_choices each bench direction runs
CHOICES_OF = {"forward": ("forward",), "backward": ("input_gradient", "weight_gradient")}


# ----------------------------------------------------------------------------------------------
# float64 reference, from the definition:
#     y[p, g, o] = sum_{r, s, c} xp[tap(p, r, s), g, c] * w[r, s, c, g, o]

def _taps(layer: Layer):
    """(r, s, rows, cols): the slices of the padded conv input that tap (r, s) reads."""
    ho, stride, d = layer.conv_out_hw, layer.stride, layer.dilation
    for r in range(layer.k):
        for s in range(layer.k):
            yield (r, s, slice(r * d, r * d + stride * (ho - 1) + 1, stride),
                   slice(s * d, s * d + stride * (ho - 1) + 1, stride))


def _group_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (P, g, i) @ b (g, i, o) per group -> (P, g, o)."""
    groups = b.shape[0]
    if groups == 1:
        return (a[:, 0] @ b[0])[:, None]
    if groups <= 16:
        return np.stack([a[:, j] @ b[j] for j in range(groups)], axis=1)
    return np.einsum("pgi,gio->pgo", a, b)


def _group_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over P of a (P, g, i) (x) b (P, g, o) per group -> (g, i, o)."""
    groups = a.shape[1]
    if groups <= 16:
        return np.stack([a[:, j].T @ b[:, j] for j in range(groups)])
    return np.einsum("pgi,pgo->gio", a, b)


def _pad(a: np.ndarray, p: int) -> np.ndarray:
    return np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))


def _crop(a: np.ndarray, p: int) -> np.ndarray:
    return a[:, p:a.shape[1] - p, p:a.shape[2] - p] if p else a


def _ref_conv(layer: Layer, xp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The convolution of an already padded input xp (float64)."""
    n, g, ho = xp.shape[0], layer.groups, layer.conv_out_hw
    cig, cog = layer.conv_in_channels // g, layer.conv_out_channels // g
    y = np.zeros((n * ho * ho, g, cog))
    for r, s, rows, cols in _taps(layer):
        window = xp[:, rows, cols].reshape(-1, g, cig)
        y += _group_matmul(window, w[r, s].reshape(cig, g, cog).transpose(1, 0, 2))
    return y.reshape(n, ho, ho, g * cog)


def _ref_conv_data(layer: Layer, gy: np.ndarray, w: np.ndarray, padded_hw: int) -> np.ndarray:
    """The adjoint of _ref_conv: gy (conv output shape) scattered back onto the padded input."""
    n, g = gy.shape[0], layer.groups
    cig, cog = layer.conv_in_channels // g, layer.conv_out_channels // g
    gxp = np.zeros((n, padded_hw, padded_hw, g * cig))
    gy_groups = gy.reshape(-1, g, cog)
    for r, s, rows, cols in _taps(layer):
        part = _group_matmul(gy_groups, w[r, s].reshape(cig, g, cog).transpose(1, 2, 0))
        gxp[:, rows, cols] += part.reshape(n, *gy.shape[1:3], g * cig)
    return gxp


def _ref_conv_weight(layer: Layer, xp: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """d<gy, conv(xp, w)>/dw (HWIO)."""
    g = layer.groups
    cig, cog = layer.conv_in_channels // g, layer.conv_out_channels // g
    gw = np.zeros((layer.k, layer.k, cig, g * cog))
    gy_groups = gy.reshape(-1, g, cog)
    for r, s, rows, cols in _taps(layer):
        window = xp[:, rows, cols].reshape(-1, g, cig)
        gw[r, s] = _group_outer(window, gy_groups).transpose(1, 0, 2).reshape(cig, g * cog)
    return gw


def reference(layer: Layer, direction: str, arrays: dict) -> list[np.ndarray]:
    """float64 results: forward [y]; backward [grad_input, grad_weight]."""
    from fastconv._threads import blas_single_thread

    # many small GEMMs: a threaded BLAS is several times slower on them than one thread
    with blas_single_thread():
        return _reference(layer, direction, arrays)


def _reference(layer: Layer, direction: str, arrays: dict) -> list[np.ndarray]:
    a = {name: np.asarray(value, np.float64) for name, value in arrays.items()}
    p = layer.pad
    if direction == "forward":
        if layer.transposed:  # y = C^T x, cropped
            full = (layer.hw - 1) * layer.stride + layer.dilation * (layer.k - 1) + 1
            return [_crop(_ref_conv_data(layer, a["x"], a["w"], full), p)]
        return [_ref_conv(layer, _pad(a["x"], p), a["w"])]
    if layer.transposed:  # the gradients of y = C^T x: C gy and the weight grad of C(gy) vs x
        gyp = _pad(a["gy"], p)
        return [_ref_conv(layer, gyp, a["w"]), _ref_conv_weight(layer, gyp, a["x"])]
    xp = _pad(a["x"], p)
    return [_crop(_ref_conv_data(layer, a["gy"], a["w"], xp.shape[1]), p),
            _ref_conv_weight(layer, xp, a["gy"])]


def summed_terms(layer: Layer, direction: str) -> list[int]:
    """How many products each output element sums, per output (for the fp32 tolerance)."""
    k2, g = layer.k * layer.k, layer.groups
    conv = layer.conv_in_channels // g * k2  # an element of the convolution's output
    adjoint = layer.conv_out_channels // g * k2  # an element of its input gradient
    pixels = layer.n * layer.conv_out_hw ** 2  # a weight-gradient element
    if direction == "forward":
        return [adjoint if layer.transposed else conv]
    return [conv if layer.transposed else adjoint, pixels]


def tolerance(terms: int) -> float:
    """Allowed max|result - reference| / max|reference| for float32: rounding errors of a sum
    of `terms` products grow like sqrt(terms) on random data."""
    return 1e-5 * math.sqrt(max(terms, 1))


def relative_error(result: np.ndarray, ref: np.ndarray) -> float:
    result = np.asarray(result)
    if result.shape != ref.shape:
        return math.inf
    scale = float(np.max(np.abs(ref), initial=0.0)) or 1.0
    err = float(np.max(np.abs(result.astype(np.float64) - ref), initial=0.0)) / scale
    return err if math.isfinite(err) else math.inf


def make_arrays(layer: Layer, direction: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random fp32 operands: x and w, plus gy (shaped as the output) for backward."""
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal(layer.input_shape, np.float32),
              "w": rng.standard_normal(layer.weight_shape, np.float32)}
    if direction == "backward":
        arrays["gy"] = rng.standard_normal(layer.output_shape, np.float32)
    return arrays


# ----------------------------------------------------------------------------------------------
# the implementations under measurement: each a no-argument call plus a conversion of its
# result to NumPy NHWC/HWIO arrays (kept out of the timed call)

@dataclass
class Contender:
    name: str
    run: object  # () -> raw result
    to_numpy: object = list  # raw result -> list of arrays
    # NumPy's multi-threaded BLAS leaves its threads spinning for up to ~0.1 s after a call
    # (OpenBLAS's thread timeout), which halved the speed of whatever ran next: such a
    # contender is timed on its own, after the others, and the process left to go idle after it
    spins: bool = False


def fastconv_contender(layer: Layer, direction: str, arrays: dict, algorithm: str) -> Contender:
    import fastconv

    x, w, kw = arrays["x"], arrays["w"], layer.kwargs()
    if direction == "forward":
        fn = fastconv.conv_transpose2d if layer.transposed else fastconv.conv2d
        return Contender(algorithm, lambda: fn(x, w, algorithm=algorithm, **kw), lambda y: [y])
    fn = fastconv.conv_transpose2d_backward if layer.transposed else fastconv.conv2d_backward
    gy = arrays["gy"]
    return Contender(algorithm, lambda: fn(gy, x, w, algorithm=algorithm,
                                           needs=("input", "weight"), **kw),
                     lambda grads: list(grads[:2]))


def numpy_conv2d(x, w, stride=1, pad=0, dilation=1, groups=1):
    """What a NumPy user writes: an as_strided im2col view, copied by reshape, times the weight."""
    xp = _pad(x, pad) if pad else x
    n, hp, wp, c = xp.shape
    kh, kw, cig, cout = w.shape
    ho = (hp - dilation * (kh - 1) - 1) // stride + 1
    wo = (wp - dilation * (kw - 1) - 1) // stride + 1
    sn, sh, sw, sc = xp.strides
    cols = np.lib.stride_tricks.as_strided(
        xp, (n, ho, wo, kh, kw, c), (sn, sh * stride, sw * stride, sh * dilation,
                                     sw * dilation, sc), writeable=False)
    if groups == 1:
        return (cols.reshape(-1, kh * kw * c) @ w.reshape(-1, cout)).reshape(n, ho, wo, cout)
    cols = cols.reshape(n * ho * wo, kh * kw, groups, cig)
    y = np.einsum("ptgc,tcgo->pgo", cols, w.reshape(kh * kw, cig, groups, cout // groups),
                  optimize=True)
    return y.reshape(n, ho, wo, cout)


def numpy_conv_transpose2d(x, w, stride=1, pad=0, dilation=1):
    """The NumPy user's transposed convolution (groups=1): one matmul gives every tap's
    contribution, then col2im adds them into the output tap by tap."""
    n, h, wd, cin = x.shape
    kh, kw, cout, _ = w.shape
    cols = (x.reshape(-1, cin) @ w.reshape(-1, cin).T).reshape(n, h, wd, kh, kw, cout)
    full_h = (h - 1) * stride + dilation * (kh - 1) + 1
    full_w = (wd - 1) * stride + dilation * (kw - 1) + 1
    y = np.zeros((n, full_h, full_w, cout), x.dtype)
    for r in range(kh):
        for s in range(kw):
            y[:, r * dilation: r * dilation + stride * (h - 1) + 1: stride,
              s * dilation: s * dilation + stride * (wd - 1) + 1: stride] += cols[:, :, :, r, s]
    return _crop(y, pad)


def numpy_contender(layer: Layer, direction: str, arrays: dict) -> Contender | None:
    """The NumPy baseline: forward only (and transposed only without groups)."""
    if direction != "forward" or (layer.transposed and layer.groups != 1):
        return None
    x, w = arrays["x"], arrays["w"]
    if layer.transposed:
        return Contender("numpy", lambda: numpy_conv_transpose2d(
            x, w, layer.stride, layer.pad, layer.dilation), lambda y: [y], spins=True)
    return Contender("numpy", lambda: numpy_conv2d(
        x, w, layer.stride, layer.pad, layer.dilation, layer.groups), lambda y: [y], spins=True)


def torch_module():
    """PyTorch, or None when it is not installed (it is never required)."""
    try:
        import torch
    except Exception:  # ImportError, or a broken installation (e.g. OSError on a missing lib)
        return None
    return torch


def torch_contender(layer: Layer, direction: str, arrays: dict, torch) -> Contender:
    """PyTorch on the same memory, channels_last (an NHWC array viewed as NCHW)."""
    x = torch.from_numpy(arrays["x"]).permute(0, 3, 1, 2)
    # HWIO -> OIHW (IOHW for a transposed layer): the inverse of the API's transpose(2, 3, 1, 0)
    w = torch.from_numpy(np.ascontiguousarray(arrays["w"].transpose(3, 2, 0, 1)))
    w = w.contiguous(memory_format=torch.channels_last)
    s, p, d, g = [layer.stride] * 2, [layer.pad] * 2, [layer.dilation] * 2, layer.groups

    def nhwc(t):
        return t.permute(0, 2, 3, 1).numpy()

    if direction == "forward":
        if layer.transposed:
            def run():
                return torch.nn.functional.conv_transpose2d(x, w, None, s, p, 0, g, d)
        else:
            def run():
                return torch.nn.functional.conv2d(x, w, None, s, p, d, g)
        return Contender("torch", run, lambda y: [nhwc(y)])
    gy = torch.from_numpy(arrays["gy"]).permute(0, 3, 1, 2)

    def run_backward():
        return torch.ops.aten.convolution_backward(gy, x, w, None, s, p, d, layer.transposed,
                                                   [0, 0], g, [True, True, False])
    return Contender("torch", run_backward,
                     lambda grads: [nhwc(grads[0]), grads[1].numpy().transpose(2, 3, 1, 0)])


def onnxruntime_module():
    """onnxruntime, or None when it (or onnx, which builds its models) is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except Exception:  # ImportError, or a broken installation
        return None
    return onnxruntime


def onnx_conv_model(layer: Layer, w: np.ndarray) -> bytes:
    """A one-node ONNX model (opset 17) of the layer's forward: Conv, or ConvTranspose for a
    transposed layer, input "x" NCHW, the weight an initializer in ONNX's layout (OIHW;
    ConvTranspose: (C_in, C_out / groups, kh, kw)), no bias."""
    from onnx import TensorProto, helper, numpy_helper

    n, c_out = layer.n, layer.c_out
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, layer.c_in, layer.hw, layer.hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                      [n, c_out, layer.out_hw, layer.out_hw])
    weight = numpy_helper.from_array(np.ascontiguousarray(w.transpose(3, 2, 0, 1)), "w")
    node = helper.make_node("ConvTranspose" if layer.transposed else "Conv", ["x", "w"], ["y"],
                            kernel_shape=[layer.k] * 2, strides=[layer.stride] * 2,
                            pads=[layer.pad] * 4, dilations=[layer.dilation] * 2,
                            group=layer.groups)
    graph = helper.make_graph([node], layer.name, [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    return model.SerializeToString()


def onnxruntime_session(model, ort, threads: int):
    """An ONNX Runtime CPU session of a model (serialized bytes or a file): all graph
    optimisations, `threads` intra-op threads, one inter-op thread."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnxruntime_contender(layer: Layer, direction: str, arrays: dict, ort) -> Contender | None:
    """ONNX Runtime's convolution (forward only: ORT has no backward), at fastconv's thread
    count, on an NCHW copy of the input made here (outside the timing); the result is
    transposed back to NHWC for the check. Its pool spins after a call: timed on its own."""
    import fastconv

    if direction != "forward":
        return None
    session = onnxruntime_session(onnx_conv_model(layer, arrays["w"]), ort,
                                  fastconv.get_num_threads())
    feed = {"x": np.ascontiguousarray(arrays["x"].transpose(0, 3, 1, 2))}
    return Contender("onnxruntime", lambda: session.run(None, feed)[0],
                     lambda y: [y.transpose(0, 2, 3, 1)], spins=True)


# ----------------------------------------------------------------------------------------------
# measurement

@dataclass
class Entry:
    """One implementation on one layer and direction."""
    status: str  # "ok" | "FAIL" (disagrees with the reference) | "n/a" (cannot run it)
    error: float | None = None  # max relative error against the reference
    seconds: float | None = None  # median of the rounds
    times: list[float] = field(default_factory=list)
    message: str = ""


@dataclass
class Result:
    layer: Layer
    direction: str
    algorithms: tuple[str, ...]
    entries: dict[str, Entry]
    # what "auto" ran in this direction and why: {"forward": (algorithm, reason)}, or the
    # input and weight gradients for backward (auto_choices, taken after the measurement)
    auto: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        return self.layer.flops(self.direction)

    def gflops(self, name: str) -> float | None:
        entry = self.entries.get(name)
        if entry is None or entry.status != "ok" or not entry.seconds:
            return None
        return self.flops / entry.seconds / 1e9

    @property
    def failed(self) -> list[str]:
        return [a for a in self.algorithms if self.entries[a].status == "FAIL"]

    @property
    def best(self) -> str | None:
        """The fastest fastconv algorithm that passed the check."""
        ok = [a for a in self.algorithms if self.gflops(a)]
        return min(ok, key=lambda a: self.entries[a].seconds) if ok else None

    @property
    def vs_torch(self) -> float | None:
        """torch time / fastconv's best time (> 1: fastconv is faster)."""
        return self.vs("torch")

    @property
    def vs_onnxruntime(self) -> float | None:
        """ONNX Runtime's time / fastconv's best time (> 1: fastconv is faster)."""
        return self.vs("onnxruntime")

    def vs(self, peer: str) -> float | None:
        best, theirs = self.best, self.entries.get(peer)
        if best is None or theirs is None or theirs.status != "ok":
            return None
        return theirs.seconds / self.entries[best].seconds

    def of_sgemm(self, sgemm_gflops: float | None) -> float | None:
        """The best fastconv algorithm's GFLOP/s as a fraction of the sgemm rate."""
        best = self.gflops(self.best) if self.best else None
        return best / sgemm_gflops if best and sgemm_gflops else None

    def as_dict(self, sgemm_gflops: float | None = None) -> dict:
        layer = dataclasses.asdict(self.layer)
        return {"layer": self.layer.name, "direction": self.direction, "geometry": layer,
                "flops": self.flops, "auto_choice": auto_choice(self.layer),
                "auto": {part: {"algorithm": algorithm, "reason": reason}
                         for part, (algorithm, reason) in self.auto.items()},
                "best": self.best, "vs_torch": self.vs_torch,
                "vs_onnxruntime": self.vs_onnxruntime,
                "fraction_of_sgemm": self.of_sgemm(sgemm_gflops),
                "failed": self.failed,
                "results": {name: {**dataclasses.asdict(e), "gflops": self.gflops(name)}
                            for name, e in self.entries.items()}}


def _calls_per_sample(seconds: float, min_sample: float) -> int:
    """Calls per timed sample so that a sample lasts about min_sample (timer noise)."""
    return max(1, min(1000, int(min_sample / max(seconds, 1e-9))))


IDLE_SLICE = 0.01  # seconds: wait_until_idle's unit of sleep
IDLE_LIMIT = 2.0  # seconds: the longest wait_until_idle waits


def wait_until_idle(limit: float = IDLE_LIMIT) -> None:
    """Sleep until no thread of this process runs: until a sleep of IDLE_SLICE seconds in
    which the process used less than a tenth of one core, or for at most `limit` seconds.
    Thread pools spin for a while after a call - ONNX Runtime's for about 60 ms on an AMD
    EPYC (Zen 3) KVM guest, OpenMP's and OpenBLAS's for less - and a pool still spinning
    takes a core from the next engine timed: waiting for quiet, not a fixed pause, keeps
    one engine's after-effects out of another's times on any machine."""
    end = time.perf_counter() + limit
    while True:
        used = time.process_time()
        time.sleep(IDLE_SLICE)
        if (time.process_time() - used < IDLE_SLICE / 10
                or time.perf_counter() >= end):
            return


def _sample(c: Contender, number: int, entries: dict) -> None:
    """One timed sample: `number` calls, the mean time recorded."""
    start = time.perf_counter()
    for _ in range(number):
        c.run()
    entries[c.name].times.append((time.perf_counter() - start) / number)


def bench_layer(layer: Layer, direction: str, algorithms, repeats: int = 5, torch=None,
                numpy_baseline: bool = True, min_sample: float = 5e-3, seed: int = 0,
                ort=None) -> Result:
    """Check every implementation against the float64 reference (that call is also its
    warm-up), then time those that passed in `repeats` interleaved rounds."""
    arrays = make_arrays(layer, direction, seed)
    refs = reference(layer, direction, arrays)
    tols = [tolerance(t) for t in summed_terms(layer, direction)]
    contenders = [fastconv_contender(layer, direction, arrays, a) for a in algorithms]
    if numpy_baseline:
        contenders.append(numpy_contender(layer, direction, arrays))
    if torch is not None:
        contenders.append(torch_contender(layer, direction, arrays, torch))
    if ort is not None:
        contenders.append(onnxruntime_contender(layer, direction, arrays, ort))
    contenders = [c for c in contenders if c is not None]

    entries, timed = {}, []
    for c in contenders:
        try:
            start = time.perf_counter()
            raw = c.run()
            warm = time.perf_counter() - start
        except ValueError as exc:  # an algorithm that cannot serve this configuration
            entries[c.name] = Entry("n/a", message=str(exc))
            continue
        except Exception as exc:  # a bug: report it in the table, go on with the others
            entries[c.name] = Entry("FAIL", message=f"{type(exc).__name__}: {exc}")
            continue
        errors = [relative_error(out, ref) for out, ref in zip(c.to_numpy(raw), refs)]
        error = max(errors)
        ok = all(e <= t for e, t in zip(errors, tols))
        entries[c.name] = Entry("ok" if ok else "FAIL", error=error,
                                message="" if ok else f"error {error:.3g} > tolerance")
        del raw
        if ok:  # one more call to size the samples: the first one pays for page faults
            start = time.perf_counter()
            c.run()
            second = time.perf_counter() - start
            timed.append((c, _calls_per_sample(min(warm, second), min_sample)))

    # round by round, each round in a rotated order, so that drifts in machine load and the
    # after-effects of one implementation on the next (caches, spinning threads) hit all alike;
    # contenders that leave threads spinning for long go last, on their own
    together = [(c, n) for c, n in timed if not c.spins]
    alone = [(c, n) for c, n in timed if c.spins]
    wait_until_idle()  # the checks above ran them too
    for round_ in range(repeats):
        shift = round_ % max(1, len(together))
        for c, number in together[shift:] + together[:shift]:
            _sample(c, number, entries)
    for c, number in alone:
        for _ in range(repeats):
            _sample(c, number, entries)
        wait_until_idle()
    for c, _ in timed:
        entries[c.name].seconds = statistics.median(entries[c.name].times)
    chosen = auto_choices(layer)  # after the runs: an autotuned choice is known by now
    return Result(layer, direction, tuple(algorithms), entries,
                  {part: chosen[part] for part in CHOICES_OF[direction]})


@contextmanager
def thread_count(threads: int, torch=None):
    """Everyone on `threads` threads: fastconv's kernels, BLAS (the NumPy baseline) and
    PyTorch's intra-op pool."""
    import fastconv
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads() if torch is not None else None
    with fastconv.num_threads(threads), threadpool_limits(threads, user_api="blas"):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


def geometric_mean(values) -> float | None:
    values = [v for v in values if v]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


# ----------------------------------------------------------------------------------------------
# the machine

def cpu_simd_flags(path: str = "/proc/cpuinfo") -> list[str]:
    """SIMD features the CPU reports (Linux only; empty elsewhere)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in SIMD_FLAGS if flag in have]
    except OSError:
        pass
    return []


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    from fastconv import _machine

    return _machine.cpu_model(path)


def blas_env() -> dict[str, str | None]:
    """The OpenBLAS variables that slow it down when set (read at library load time)."""
    return {name: os.environ.get(name) for name in BLAS_ENV_VARS}


def blas_env_warning() -> str | None:
    set_vars = [f"{k}={v}" for k, v in blas_env().items() if v is not None]
    if not set_vars:
        return None
    return (f"warning: {' '.join(set_vars)} is set; it can halve OpenBLAS speed. For "
            f"benchmarks run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE fastconv bench ...")


def _owner(filepath: str) -> str:
    """Which package ships a shared library (numpy.libs/... -> numpy)."""
    parts = filepath.replace("\\", "/").split("/")
    for part in reversed(parts[:-1]):
        if part.endswith(".libs"):
            return part[:-5]
        if part in ("site-packages", "dist-packages"):
            break
    if "site-packages" in parts:
        i = parts.index("site-packages")
        if i + 1 < len(parts) - 1:
            return parts[i + 1]
    return "system"


def thread_pools() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries, with their owner."""
    from threadpoolctl import threadpool_info

    return [{**info, "owner": _owner(info.get("filepath") or "")} for info in threadpool_info()]


def blas_kernel() -> str:
    """The BLAS fastconv's kernels call (SciPy's) as threadpoolctl names it: library,
    version and the kernel it picked for this CPU ("openblas 0.3.30 Haswell")."""
    pools = [p for p in thread_pools() if p.get("user_api") == "blas"]
    if not pools:
        return "unknown"
    pool = next((p for p in pools if p.get("owner") == "scipy"), pools[0])
    return " ".join(str(pool.get(key)) for key in ("internal_api", "version", "architecture")
                    if pool.get(key))


SGEMM_SIZE = 1024  # the square sgemm that measures the machine's GEMM rate


def sgemm_rate(size: int = SGEMM_SIZE, seconds: float = 0.3) -> float:
    """GFLOP/s of a size x size x size float32 GEMM through the BLAS fastconv's kernels call
    (SciPy's), at its current thread count (set it with thread_count): the fastest of the
    calls made in about `seconds` (at least three), after one untimed call. The ceiling the
    suite's rows are read against."""
    from scipy.linalg import blas

    rng = np.random.default_rng(0)
    a, b = (np.asfortranarray(rng.standard_normal((size, size), np.float32)) for _ in "ab")
    c = np.zeros((size, size), np.float32, order="F")
    blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=True)
    best, calls, start = math.inf, 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        blas.sgemm(1.0, a, b, 0.0, c, overwrite_c=True)
        best = min(best, time.perf_counter() - begin)
        calls += 1
    return 2 * size ** 3 / best / 1e9


def describe_pool(info: dict) -> str:
    extra = [f"{info.get('num_threads')} threads"]
    for key in ("architecture", "threading_layer"):
        if info.get(key):
            extra.append(f"{key} {info[key]}")
    version = info.get("version") or "?"
    return (f"{info.get('internal_api')} {version} (from {info.get('owner')}): "
            f"{', '.join(extra)}")


def machine_info(threads: int | None = None) -> dict:
    import scipy

    import fastconv
    from fastconv import _machine
    from fastconv._kernels import _openmp

    torch = torch_module()
    return {
        "fastconv_version": fastconv.__version__,
        "threads": fastconv.get_num_threads() if threads is None else threads,
        "openmp": _openmp.openmp_enabled(),
        "compile_args": _openmp.compile_args(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "simd": cpu_simd_flags(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": None if torch is None else torch.__version__,
        "blas": thread_pools(),
        "blas_kernel": blas_kernel(),
        "caches": _machine.FACTS.as_dict(),
        "autotune": fastconv.get_autotune(),
        "env": blas_env(),
    }


# ----------------------------------------------------------------------------------------------
# the report

def _cell(value: float | None, width: int, entry: Entry | None = None) -> str:
    if entry is not None and entry.status != "ok":
        return entry.status.rjust(width)
    if value is None:
        return "-".rjust(width)
    text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"  # three significant digits
    return text.rjust(width)


def format_table(results: list[Result], algorithms, peers,
                 sgemm_gflops: float | None = None) -> str:
    """A text table: GFLOP/s per implementation, x vs torch and vs ONNX Runtime, the best
    fastconv algorithm's fraction of the sgemm rate (when given), and the check."""
    name_w = max([len("layer")] + [len(r.layer.name) for r in results])
    cols = list(algorithms) + list(peers)
    width = max(7, *(len(c) for c in cols))
    head = f"{'layer':<{name_w}}  {'dir':<8}" + "".join("  " + c.rjust(width) for c in cols)
    with_torch = "torch" in peers
    with_ort = "onnxruntime" in peers
    if with_torch:
        head += "  x vs torch"
    if with_ort:
        head += "  x vs ort"
    if sgemm_gflops:
        head += "  of sgemm"
    head += "  check"
    lines = [head, "-" * len(head)]
    for r in results:
        line = f"{r.layer.name:<{name_w}}  {r.direction:<8}"
        line += "".join("  " + _cell(r.gflops(c), width, r.entries.get(c)) for c in cols)
        if with_torch:
            ratio = r.vs_torch
            line += f"  {ratio:10.2f}" if ratio else f"  {'-':>10}"
        if with_ort:
            ratio = r.vs_onnxruntime
            line += f"  {ratio:8.2f}" if ratio else f"  {'-':>8}"
        if sgemm_gflops:
            share = r.of_sgemm(sgemm_gflops)
            line += f"  {share:8.2g}" if share else f"  {'-':>8}"
        line += "  " + (f"FAIL ({', '.join(r.failed)})" if r.failed else "ok")
        lines.append(line)
    return "\n".join(lines)


def format_choices(results: list[Result]) -> str:
    """What "auto" ran on each row and why, one line per row."""
    names = {"forward": "forward", "input_gradient": "input grad", "weight_gradient": "weight grad"}
    name_w = max([len(r.layer.name) for r in results] + [5])
    lines = []
    for r in results:
        parts = [f"{names[part]} {algorithm} ({reason})" for part, (algorithm, reason) in
                 r.auto.items()]
        lines.append(f"{r.layer.name:<{name_w}}  {r.direction:<8}  {'; '.join(parts)}")
    return "\n".join(lines)
