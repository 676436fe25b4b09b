"""A depthwise convolution and the 1x1 convolution after it as one kernel
(_direct.depthwise_pointwise, inference.FusedSeparableConv): the definition's values on many
shapes, every instruction-set variant, both dtypes, 1 and 2 threads; where
optimize_for_inference joins them and where not; the fallbacks, the replay, the errors."""
import pickle

import numpy as np
import pytest

import fastconv
import reference
from conftest import assert_threads_ran
from fastconv import _algorithms, functional, models
from fastconv import layers as L
from fastconv._postops import Activation, PostOps
from fastconv.graph import Add, Graph
from fastconv.inference import FusedConv, FusedSeparableConv

TOL = {np.float32: 2e-5, np.float64: 1e-12}
DIRECT = _algorithms.simd_modules("_direct")
BLOCKED = _algorithms.simd_modules("_blocked")


def _expected(x, w_dw, b_dw, w_pw, b_pw, stride, pad, dilation, act1=None, residual=None,
              act2=None):
    """The two convolutions from their definition (tests/reference.py), in float64, with
    NumPy's activations between and after."""
    c = x.shape[3]
    d = reference.conv2d(x, w_dw, b_dw, (stride, stride), ((pad, pad), (pad, pad)),
                         (dilation, dilation), groups=c)
    d = _activate(act1, d)
    y = reference.conv2d(d, w_pw, b_pw)
    if residual is not None:
        y = y + residual
    return _activate(act2, y)


def _activate(name, v):
    if name is None:
        return v
    if name == "relu":
        return np.maximum(v, 0)
    if name == "relu6":
        return np.clip(v, 0, 6)
    if name == "hardswish":  # not applied in the register blocks: the pass after the stores
        return v * np.clip(v + 3, 0, 6) / 6
    raise ValueError(name)


def _close(actual, expected, dtype):
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def _kernel_call(module, blocked, x, w_dw, b_dw, w_pw, b_pw, stride, pad, dilation, y,
                 act1=None, residual=None, act2=None, threads=2, run_pixels=1000):
    """depthwise_pointwise of `module` with the weights prepared as the layer prepares them
    (the 1x1 packed for `blocked`, the module of the same instruction set)."""
    dtype = x.dtype
    c = x.shape[3]
    block = module.CHANNEL_BLOCK[dtype.name]
    w_d, b_d = functional._padded_weight(w_dw, b_dw, c, block)
    xin = np.ascontiguousarray(np.pad(x, ((0, 0),) * 3 + ((0, w_d.shape[3] - c),)))
    packed = functional.pack_weight(w_pw, 1, blocked.OUT_BLOCK[dtype.name])[0]
    pw_bias = functional._blocked_bias(b_pw, 1, packed.shape[5])
    post = PostOps(act1=Activation(act1)).epilogue((*y.shape[:3], c), dtype) if act1 else None
    pw_post = (PostOps(residual=residual is not None,
                       act1=Activation(act2) if act2 and residual is None else None,
                       act2=Activation(act2) if act2 and residual is not None else None)
               .epilogue(y.shape, dtype, residual) if residual is not None or act2 else None)
    return module.depthwise_pointwise(xin, w_d, b_d, post, packed, pw_bias, y, pad, pad,
                                      stride, stride, dilation, dilation, pw_post, run_pixels,
                                      threads)


# (N, H, W, C, C_out, k, stride, pad, dilation): channels around the vector widths (8 and
# 16 floats, 4 and 8 doubles) and the 1x1's output blocks (16 and 64 floats), odd sizes,
# stride > kernel, a 1x1 depthwise kernel, one-pixel images, padding wider than the kernel
CASES = [
    (1, 7, 9, 16, 24, 3, 1, 1, 1),
    (2, 9, 8, 17, 65, 3, 2, 1, 1),
    (1, 5, 11, 3, 5, 5, 1, 2, 1),
    (2, 6, 7, 33, 16, 3, 1, 2, 2),
    (1, 7, 7, 48, 130, 3, 1, 1, 1),
    (1, 1, 1, 8, 1, 3, 1, 1, 1),
    (1, 8, 10, 15, 64, 1, 3, 0, 1),
    (3, 4, 3, 31, 63, 3, 2, 1, 1),
    (1, 12, 13, 2, 7, 3, 1, 3, 1),
]


@pytest.mark.parametrize("level", sorted(DIRECT))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_every_variant_gives_the_definition(case, dtype, level, rng):
    n, h, w, c, cout, k, stride, pad, dilation = case
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    w_dw = rng.standard_normal((k, k, 1, c)).astype(dtype)
    b_dw = rng.standard_normal(c).astype(dtype)
    w_pw = rng.standard_normal((1, 1, c, cout)).astype(dtype)
    b_pw = rng.standard_normal(cout).astype(dtype)
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    residual = rng.standard_normal((n, ho, wo, cout)).astype(dtype)
    # runs of the depthwise output: whole images, several rows, parts of rows, one pixel
    for act1, res, act2, run in [(None, None, None, 1000), ("relu6", residual, "relu", 7),
                                 ("hardswish", None, "hardswish", 3), ("relu", residual, None, 1)]:
        y = np.full((n, ho, wo, cout), np.nan, dtype)
        assert _kernel_call(DIRECT[level], BLOCKED[level], x, w_dw, b_dw, w_pw, b_pw, stride,
                            pad, dilation, y, act1, res, act2, run_pixels=run) == 0
        _close(y, _expected(x, w_dw, b_dw, w_pw, b_pw, stride, pad, dilation, act1, res, act2),
               dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 7, 7, 32), (2, 9, 12, 48), (1, 3, 40, 16)])
def test_one_and_two_threads_give_the_same_bits(shape, dtype, rng, kernel_threads):
    # a few rows are cut into parts of their columns for the threads
    module, blocked = _algorithms.KERNELS["direct"], _algorithms.KERNELS["blocked"]
    x = rng.standard_normal(shape).astype(dtype)
    c = shape[3]
    args = (x, rng.standard_normal((3, 3, 1, c)).astype(dtype),
            rng.standard_normal(c).astype(dtype),
            rng.standard_normal((1, 1, c, 40)).astype(dtype), rng.standard_normal(40).astype(dtype),
            1, 1, 1)
    ys = []
    for threads in (1, 2):
        y = np.zeros((*shape[:3], 40), dtype)
        _kernel_call(module, blocked, *args, y, "relu6", threads=threads)
        ys.append(y)
    np.testing.assert_array_equal(ys[0], ys[1])
    _close(ys[0], _expected(*args, "relu6"), dtype)
    block = fastconv.optimize_for_inference(_separable_block(c, 40, dtype))
    kernel_threads.clear()  # the model's own kernel call
    with fastconv.num_threads(2):
        block(x)
    assert_threads_ran(kernel_threads)


def test_the_kernel_refuses_weights_that_do_not_match():
    module, blocked = _algorithms.KERNELS["direct"], _algorithms.KERNELS["blocked"]
    x = np.ones((1, 4, 4, 16), np.float32)
    w_d = np.ones((3, 3, 1, 16), np.float32)
    packed = functional.pack_weight(np.ones((1, 1, 16, 8), np.float32), 1,
                                    blocked.OUT_BLOCK["float32"])[0]
    no_bias = np.zeros((0, 0), np.float32)
    y = np.zeros((1, 4, 4, 8), np.float32)
    bad = [  # a depthwise weight of other channels, a 1x1 packed in other blocks, a wide y
        (x, np.ones((3, 3, 1, 32), np.float32), packed, y),
        (x, w_d, functional.pack_weight(np.ones((1, 1, 16, 8), np.float32), 1,
                                        2 * blocked.OUT_BLOCK["float32"])[0], y),
        (x, w_d, packed, np.zeros((1, 4, 4, 8 + packed.shape[1] * packed.shape[5]),
                                  np.float32)),
    ]
    bad.append((np.ones((3, 4, 4, 16), np.float32), w_d, packed, y))  # another batch size
    # channels not padded to whole vectors (the kernel reads whole vectors of x and w)
    bad.append((np.ones((1, 4, 4, 3), np.float32), np.ones((3, 3, 1, 3), np.float32),
                functional.pack_weight(np.ones((1, 1, 3, 8), np.float32), 1,
                                       blocked.OUT_BLOCK["float32"])[0], y))
    for xin, wd, wp, out in bad:
        with pytest.raises(ValueError, match="do not match"):
            module.depthwise_pointwise(xin, wd, np.zeros(0, np.float32), None, wp, no_bias,
                                       out, 1, 1, 1, 1, 1, 1, None, 64, 1)


# ----------------------------------------------------------------------------------------------
# the layer and optimize_for_inference

def _separable_block(c, cout, dtype=np.float32, stride=1, residual=False, act=L.ReLU6):
    """MobileNetV2's tail of a block: depthwise 3x3, BatchNorm, act, 1x1, BatchNorm (and the
    input added when `residual`)."""
    layers = [("dw", L.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False,
                              dtype=dtype, rng=1), "x"),
              ("bn1", L.BatchNorm2d(c, dtype=dtype), "dw"), ("act", act(), "bn1"),
              ("pw", L.Conv2d(c, cout, 1, bias=False, dtype=dtype, rng=2), "act"),
              ("bn2", L.BatchNorm2d(cout, dtype=dtype), "pw")]
    if residual:
        layers.append(("add", Add(), ("bn2", "x")))
    return with_running_stats(Graph(layers))


def with_running_stats(model):
    """`model` with its BatchNorm layers' running statistics drawn at random (not the
    identity a new layer has), so that folding them is tested."""
    rng = np.random.default_rng(3)
    for name, value in model.buffers():
        if name.endswith("running_var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
        elif name.endswith("running_mean"):
            value[...] = rng.standard_normal(value.shape) * 0.2
    return model


def _kinds(fast):
    return [type(layer).__name__ for _, layer, _ in fast.nodes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, residual", [(1, False), (2, False), (1, True)])
def test_optimize_for_inference_joins_them_and_keeps_the_outputs(stride, residual, dtype, rng):
    model = _separable_block(24, 24, dtype, stride, residual)
    fast = fastconv.optimize_for_inference(model)
    assert _kinds(fast) == ["FusedSeparableConv"]
    node = fast.nodes[0][1]
    assert node.describe((2, 11, 10, 24))["fused"]
    assert [name for name, _, _ in node.parameters()] == [
        "depthwise.weight", "depthwise.bias", "pointwise.weight", "pointwise.bias"]
    x = rng.standard_normal((2, 11, 10, 24)).astype(dtype)
    expected = model.eval()(x)
    held = [fast(x) for _ in range(4)]  # recorded, laid out, replayed
    for y in held:  # each its own array: the node, a graph output, is copied out of the arena
        _close(y, expected, dtype)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(held) for b in held[i + 1:])
    mobilenet = fastconv.optimize_for_inference(models.mobilenet_v2(5, width=8, dtype=dtype,
                                                                    rng=0))
    assert "FusedSeparableConv" in _kinds(mobilenet)


def test_the_mobilenet_v2_pairs_run_as_one_kernel_each(monkeypatch, rng):
    net = models.mobilenet_v2(10, dtype=np.float32, rng=0)
    fast = fastconv.optimize_for_inference(net)
    pairs = _kinds(fast).count("FusedSeparableConv")
    assert pairs > 0  # those whose 1x1 weight stays in this machine's L2
    ran: list = []
    for binder in ("bind_depthwise_pointwise", "bind_expand_depthwise_pointwise"):
        real = getattr(functional, binder)
        monkeypatch.setattr(functional, binder,
                            lambda *a, real=real, **k: ran.append(1) or real(*a, **k))
    x = rng.standard_normal((1, 64, 64, 3)).astype(np.float32)
    _close(fast(x), net.eval()(x), np.float32)
    assert len(ran) == pairs  # (with their expansion or after it)


def test_what_is_not_joined(monkeypatch):
    c = 16
    dw = lambda: L.Conv2d(c, c, 3, padding=1, groups=c, rng=0)  # noqa: E731
    pw = lambda **k: L.Conv2d(c, 8, 1, rng=1, **k)  # noqa: E731
    x = np.random.default_rng(0).standard_normal((1, 6, 6, c)).astype(np.float32)
    graphs = {
        "used twice": [("dw", dw(), "x"), ("pw", pw(), "dw"), ("other", L.ReLU(), "dw"),
                       ("add", Add(), ("pw", "pw"))],
        "an output": [("dw", dw(), "x"), ("pw", pw(), "dw")],
        "strided 1x1": [("dw", dw(), "x"), ("pw", pw(stride=2), "dw")],
        "padded 1x1": [("dw", dw(), "x"), ("pw", pw(padding=1), "dw")],
        "3x3 after": [("dw", dw(), "x"), ("pw", L.Conv2d(c, 8, 3, rng=1), "dw")],
        "grouped first": [("dw", L.Conv2d(c, c, 3, padding=1, groups=4, rng=0), "x"),
                          ("pw", pw(), "dw")],
        "im2col asked": [("dw", dw(), "x"), ("pw", pw(algorithm="im2col"), "dw")],
        "reflect padding": [("dw", L.Conv2d(c, c, 3, padding=1, groups=c,
                                            padding_mode="reflect", rng=0), "x"),
                            ("pw", pw(), "dw")],
        "overwritten between": [("t", L.Conv2d(c, c, 1, rng=2), "x"), ("dw", dw(), "t"),
                                ("relu", L.ReLU(inplace=True), "t"),
                                ("pw", L.Conv2d(c, c, 1, rng=1), "dw"),
                                ("add", Add(), ("pw", "relu"))],
    }
    for what, nodes in graphs.items():
        outputs = ("pw", "dw") if what == "an output" else None
        model = Graph(nodes, outputs=outputs)
        fast = fastconv.optimize_for_inference(model)
        assert "FusedSeparableConv" not in _kinds(fast), what
        expected = model.eval()(x)
        got = fast(x)
        for a, b in zip(got if isinstance(got, tuple) else [got],
                        expected if isinstance(expected, tuple) else [expected]):
            _close(a, b, np.float32)
    # a layer between them that writes in place into a view of the depthwise input (a
    # Flatten's): moved past it, the depthwise would read the changed bytes; the same for a
    # convolution that would absorb the activation after it
    for second in (L.Conv2d(c, 8, 1, rng=2), L.ReLU6()):
        first = dw() if isinstance(second, L.Conv2d) else L.Conv2d(c, 8, 3, padding=1, rng=1)
        model = Graph([("t", L.Conv2d(c, c, 1, rng=0), "x"), ("a", first, "t"),
                       ("f", L.Flatten(), "t"), ("r", L.ReLU(inplace=True), "f"),
                       ("b", second, "a")], outputs=("b", "r"))
        fast = fastconv.optimize_for_inference(model)
        assert [name for name, _, _ in fast.nodes] == ["t", "a", "f", "r", "b"]
        for got, expected in zip(fast(x), model.eval()(x)):
            _close(got, expected, np.float32)
    # a layer kept as one node that holds an in-place layer (a Sequential subclass)
    class Block(L.Sequential):
        pass
    for second in (L.Conv2d(c, c, 1, rng=2), L.BatchNorm2d(c)):
        first = dw() if isinstance(second, L.Conv2d) else L.Conv2d(c, c, 3, padding=1, rng=1)
        model = Graph([("a", first, "x"), ("side", Block(L.ReLU(inplace=True)), "x"),
                       ("b", second, "a"), ("add", Add(), ("b", "side"))])
        fast = fastconv.optimize_for_inference(model)
        # (the 1x1 takes the add as its residual: it does not move for that)
        assert [name for name, _, _ in fast.nodes][:3] == ["a", "side", "b"]
        _close(fast(x.copy()), model.eval()(x.copy()), np.float32)
    # a 1x1 whose packed weight would not stay in L2 while every row reads it
    monkeypatch.setattr(_algorithms, "SEPARABLE_MAX_POINTWISE_BYTES", 16 * 8 * 4 - 1)
    assert "FusedSeparableConv" not in _kinds(fastconv.optimize_for_inference(
        Graph([("dw", dw(), "x"), ("pw", L.Conv2d(c, 64, 1, rng=1), "dw")])))


def _fused(c=16, cout=24, dtype=np.float32, residual=False):
    model = _separable_block(c, cout, dtype, residual=residual)
    fast = fastconv.optimize_for_inference(model)
    return model, fast, fast.nodes[0][1]


def test_what_one_kernel_cannot_take_runs_as_the_two_layers(monkeypatch, rng):
    model, fast, layer = _fused()
    x = rng.standard_normal((2, 7, 9, 16)).astype(np.float32)
    expected = model.eval()(x)
    ran: list = []
    real = functional.bind_depthwise_pointwise
    monkeypatch.setattr(functional, "bind_depthwise_pointwise",
                        lambda *a, **k: ran.append(1) or real(*a, **k))
    _close(layer(x), expected, np.float32)
    assert ran == [1]
    for other in (np.asfortranarray(x), x[:, :, ::-1]):
        _close(layer(other), model.eval()(other), np.float32)
    assert ran == [1]  # not C-contiguous: not through the kernel
    wide = x.astype(np.float64)  # float32 weights, float64 input: the kernel in float64
    _close(layer(wide), model.eval()(wide), np.float32)  # float32 weights, folded
    assert ran == [1, 1]
    # a non-finite 1x1 weight: the blocked kernel does not take it
    _, _, other = _fused()
    other.pointwise.weight[0, 0, 3, 5] = np.inf
    fastconv.weights_changed(other.pointwise)
    with np.errstate(invalid="ignore", over="ignore"):
        np.testing.assert_array_equal(other(x), other.pointwise(other.depthwise(x)))
    assert ran == [1, 1]
    # a setting changed since: the two layers run (a stride-2 1x1 now)
    _, _, layer = _fused()
    layer.pointwise.stride = (2, 2)
    assert not layer.fusable()
    y = layer(x)
    assert y.shape == (2, 4, 5, 24)
    assert ran == [1, 1]


def test_a_non_finite_depthwise_weight_adds_nothing_in_the_padding(monkeypatch, rng):
    # the kernel skips the taps in the zero padding (0 * nan would be nan): the values of
    # the two layers apart, whose depthwise one runs the direct kernel's exact mode
    model, fast, layer = _fused(residual=True, cout=16)
    ran: list = []
    real = functional.bind_depthwise_pointwise
    monkeypatch.setattr(functional, "bind_depthwise_pointwise",
                        lambda *a, **k: ran.append(1) or real(*a, **k))
    x = rng.standard_normal((1, 6, 7, 16)).astype(np.float32)
    layer.depthwise.weight[0, 0, 0, 2] = np.nan  # tap (0, 0): in the padding for row 0
    fastconv.weights_changed(fast)
    for _ in range(3):
        got = fast(x)
        np.testing.assert_array_equal(got, layer.pointwise(layer.depthwise(x), x))
        assert np.isnan(got[:, 1:, 1:]).all() and not np.isnan(got[:, 0]).any()
    assert ran  # through the kernel


def test_a_node_one_kernel_cannot_take_runs_as_its_layers_in_the_graph(rng):
    model, fast, layer = _fused(residual=True, cout=16)
    x = rng.standard_normal((1, 6, 7, 16)).astype(np.float16)  # computed in float32
    for _ in range(3):
        got = fast(x)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, layer.pointwise(layer.depthwise(x), x))


def test_the_replay_sees_changed_weights_and_settings(rng):
    model, fast, layer = _fused(residual=True, cout=16)
    x = rng.standard_normal((1, 8, 8, 16)).astype(np.float32)

    def apart(x):  # the two layers one after the other: their own kernels
        return layer.pointwise(layer.depthwise(x), x)
    for _ in range(3):
        _close(fast(x), model.eval()(x), np.float32)
    before = fast(x)
    layer.pointwise.weight *= 2  # in place: stale packs unless told
    fastconv.weights_changed(fast)
    _close(fast(x), apart(x), np.float32)
    assert not np.allclose(fast(x), before)
    layer.depthwise.post_ops = PostOps(act1=Activation("relu"))  # ReLU6 -> ReLU
    x = x * 10  # values beyond 6
    _close(fast(x), apart(x), np.float32)
    assert not np.allclose(fast(x), fast(x / 10) * 10)


def test_a_replaced_1x1_weight_of_another_dtype_or_shape_is_seen(rng):
    x = rng.standard_normal((1, 5, 5, 16)).astype(np.float32)
    for change in ("dtype", "shape"):
        _, _, layer = _fused(cout=8)
        layer(x)  # plans made for the weights as they were
        if change == "dtype":
            layer.pointwise.weight = layer.pointwise.weight.astype(np.float64)
        else:
            layer.pointwise.weight = rng.standard_normal((1, 1, 16, 40)).astype(np.float32)
            layer.pointwise.bias = np.zeros(40, np.float32)
            layer.pointwise.out_channels = 40
        expected = layer.pointwise(layer.depthwise(x))
        got = layer(x)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        _close(got, expected, np.float32)


def test_out_and_errors(rng):
    model, fast, layer = _fused(residual=True, cout=16)
    x = rng.standard_normal((1, 5, 6, 16)).astype(np.float32)
    r = rng.standard_normal((1, 5, 6, 16)).astype(np.float32)
    out = np.empty((1, 5, 6, 16), np.float32)
    assert layer.forward(x, r, out=out) is out
    _close(out, layer.pointwise(layer.depthwise(x), r), np.float32)
    with pytest.raises(ValueError, match="out must be"):
        layer.forward(x, r, out=np.empty((1, 5, 6, 8), np.float32))
    with pytest.raises(TypeError, match="two inputs"):
        layer(x)
    with pytest.raises(ValueError, match="16 channels"):
        layer(np.ones((1, 5, 6, 8), np.float32), r)
    with pytest.raises(RuntimeError, match="inference only"):
        layer.backward(np.ones((1, 5, 6, 16)))
    with pytest.raises(RuntimeError, match="inference only"):
        layer.train()
    with pytest.raises(TypeError, match="expected FusedConv layers, but got Conv2d"):
        FusedSeparableConv(L.Conv2d(4, 4, 3, groups=4), L.Conv2d(4, 4, 1))
    copied = pickle.loads(pickle.dumps(fast))
    _close(copied(x), fast(x), np.float32)
    assert "->" in repr(layer)


def test_a_separable_node_joins_only_fused_convs():
    assert not FusedSeparableConv.pairs(FusedConv(L.Conv2d(4, 4, 3, groups=4)),
                                        FusedConv(L.Linear(4, 4)))
    for padding in (0, "valid", "same", (0, 0), ((0, 0), (0, 0))):  # every spelling of none
        assert FusedSeparableConv.pairs(FusedConv(L.Conv2d(4, 4, 3, groups=4, padding=1)),
                                        FusedConv(L.Conv2d(4, 6, 1, padding=padding)))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_a_separable_conv2d_layer_runs_as_its_two_convolutions(multiplier, rng):
    model = L.Sequential(L.SeparableConv2d(8, 16, 3, depth_multiplier=multiplier, padding=1,
                                           rng=0), L.BatchNorm2d(16), L.ReLU())
    _, value = next(iter(model.buffers()))
    value[...] = rng.standard_normal(value.shape)  # a running mean to fold
    fast = fastconv.optimize_for_inference(model)
    # one filter per channel: joined; a depth multiplier of 2: two FusedConv nodes
    assert _kinds(fast) == (["FusedSeparableConv"] if multiplier == 1
                            else ["FusedConv", "FusedConv"])
    assert fast.nodes[-1][0] == "0.pointwise"
    x = rng.standard_normal((2, 9, 7, 8)).astype(np.float32)
    _close(fast(x), model.eval()(x), np.float32)
