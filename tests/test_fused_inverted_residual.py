"""A 1x1 expansion, a depthwise convolution and a 1x1 projection as one kernel
(_direct.expand_depthwise_pointwise; FusedSeparableConv with `expand`, MobileNetV2's inverted
residual block): the definition's values on many shapes, every instruction-set variant, both
dtypes, buffers of a few rows up to whole images, 1 to 3 threads; where optimize_for_inference
joins the expansion and where not; the rule for small images; the fallbacks and errors."""
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
from test_fused_separable import _kernel_call as separable_call, with_running_stats

TOL = {np.float32: 3e-5, np.float64: 1e-12}
DIRECT = _algorithms.simd_modules("_direct")
BLOCKED = _algorithms.simd_modules("_blocked")


def _close(actual, expected, dtype):
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def _act(name, v):
    if name is None:
        return v
    if name == "relu6":
        return np.clip(v, 0, 6)
    if name == "hardswish":  # not applied in the register blocks: the pass after the stores
        return v * np.clip(v + 3, 0, 6) / 6
    raise ValueError(name)


def _expected(x, we, be, wd, bd, wp, bp, stride, pad, dilation, acts, residual):
    """The three convolutions from their definition (tests/reference.py), in float64."""
    e = _act(acts[0], reference.conv2d(x, we, be))
    d = _act(acts[1], reference.conv2d(e, wd, bd, (stride, stride), ((pad, pad), (pad, pad)),
                                       (dilation, dilation), groups=e.shape[3]))
    y = reference.conv2d(d, wp, bp)
    return _act(acts[2], y if residual is None else y + residual)


def _weights(rng, c_in, c, c_out, k, dtype):
    draw = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    return (draw(1, 1, c_in, c), draw(c), draw(k, k, 1, c), draw(c), draw(1, 1, c, c_out),
            draw(c_out))


def _kernel_call(module, blocked, x, weights, stride, pad, dilation, y, acts=(None,) * 3,
                 residual=None, threads=2, buffer_rows=None):
    """expand_depthwise_pointwise of `module` with the weights prepared as the layers
    prepare them (1x1 weights packed for `blocked`, the module of the same instruction set)."""
    we, be, wd, bd, wp, bp = weights
    dtype, (n, h, w, _), c = x.dtype, x.shape, wd.shape[3]
    block = blocked.OUT_BLOCK[dtype.name]
    w_d, b_d = functional._padded_weight(wd, bd, c, module.CHANNEL_BLOCK[dtype.name])
    packed_e = functional.pack_weight(we, 1, block)[0]
    packed_p = functional.pack_weight(wp, 1, block)[0]
    e_post = PostOps(act1=Activation(acts[0])).epilogue((n, h, w, c), dtype) if acts[0] else None
    post = PostOps(act1=Activation(acts[1])).epilogue((*y.shape[:3], c), dtype) if acts[1] else None
    pw_post = (PostOps(residual=residual is not None,
                       act2=Activation(acts[2]) if acts[2] and residual is not None else None,
                       act1=Activation(acts[2]) if acts[2] and residual is None else None)
               .epilogue(y.shape, dtype, residual) if residual is not None or acts[2] else None)
    span = (wd.shape[0] - 1) * dilation + 1
    return module.expand_depthwise_pointwise(
        x, packed_e, functional._blocked_bias(be, 1, block), e_post, w_d, b_d, post, packed_p,
        functional._blocked_bias(bp, 1, block), y, pad, pad, stride, stride, dilation, dilation,
        pw_post, buffer_rows or span, threads)


# (N, H, W, C_in, C, C_out, k, stride, pad, dilation): expanded channels around the vector
# widths (8 and 16 floats, 4 and 8 doubles) and the 1x1's output blocks (16, 32 and 64
# floats), odd sizes, stride > kernel, a 1x1 depthwise kernel, one-pixel images, padding
# wider than the kernel, dilation
CASES = [
    (1, 9, 7, 5, 24, 8, 3, 1, 1, 1),
    (2, 11, 8, 3, 17, 65, 3, 2, 1, 1),
    (1, 5, 11, 16, 33, 5, 5, 1, 2, 1),
    (3, 8, 9, 4, 16, 16, 3, 1, 2, 2),
    (1, 1, 1, 2, 8, 1, 3, 1, 1, 1),
    (2, 8, 10, 7, 15, 64, 1, 3, 0, 1),
    (1, 12, 13, 1, 130, 7, 3, 1, 3, 1),
    (5, 4, 3, 9, 31, 63, 3, 2, 1, 1),
]


@pytest.mark.parametrize("level", sorted(DIRECT))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
def test_every_variant_gives_the_definition(case, dtype, level, rng):
    n, h, w, c_in, c, c_out, k, stride, pad, dilation = case
    x = rng.standard_normal((n, h, w, c_in)).astype(dtype)
    weights = _weights(rng, c_in, c, c_out, k, dtype)
    ho = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    residual = rng.standard_normal((n, ho, wo, c_out)).astype(dtype)
    span = (k - 1) * dilation + 1
    # buffers of the rows one output row reads (a shift at every row), a few rows, whole
    # images; chains in the register blocks and after the stores; 1 to 3 threads
    for acts, res, rows, threads in [((None,) * 3, None, span, 1),
                                     (("relu6", "relu6", None), residual, span + 1, 2),
                                     (("hardswish", None, "hardswish"), None, span + 3, 3),
                                     (("relu6", "hardswish", "relu6"), residual, 1000, 2)]:
        y = np.full((n, ho, wo, c_out), np.nan, dtype)
        assert _kernel_call(DIRECT[level], BLOCKED[level], x, weights, stride, pad, dilation,
                            y, acts, res, threads, rows) == 0
        _close(y, _expected(x, *weights, stride, pad, dilation, acts, res), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, stride", [((1, 9, 7, 8), 1), ((1, 14, 6, 3), 2),
                                           ((3, 5, 5, 16), 1)])
def test_the_same_bits_as_the_kernels_apart_at_any_thread_count(shape, stride, dtype, rng):
    # the expansion by the blocked kernel, then depthwise_pointwise: what the node computes
    # where it does not join the expansion; bands cut at every thread count
    module, blocked = _algorithms.KERNELS["direct"], _algorithms.KERNELS["blocked"]
    x = rng.standard_normal(shape).astype(dtype)
    weights = _weights(rng, shape[3], 40, 24, 3, dtype)
    we, be, wd, bd, wp, bp = weights
    ho, wo = (shape[1] - 1) // stride + 1, (shape[2] - 1) // stride + 1
    expand = FusedConv(L.Conv2d(shape[3], 40, 1, dtype=dtype))
    expand.weight[...], expand.bias[...] = we, be
    expand.post_ops.act1 = Activation("relu6")
    apart = np.zeros((shape[0], ho, wo, 24), dtype)
    separable_call(module, blocked, expand(x), wd, bd, wp, bp, stride, 1, 1, apart, "relu6")
    for threads in (1, 2, 3, 5):
        y = np.zeros_like(apart)
        _kernel_call(module, blocked, x, weights, stride, 1, 1, y, ("relu6", "relu6", None),
                     threads=threads, buffer_rows=4)
        np.testing.assert_array_equal(y, apart)


def test_the_kernel_refuses_weights_and_buffers_that_do_not_match():
    module, blocked = _algorithms.KERNELS["direct"], _algorithms.KERNELS["blocked"]
    block = blocked.OUT_BLOCK["float32"]
    ones = lambda *shape: np.ones(shape, np.float32)  # noqa: E731
    x, wd, y = ones(1, 5, 5, 4), ones(3, 3, 1, 16), ones(1, 5, 5, 8)
    expand = functional.pack_weight(ones(1, 1, 4, 16), 1, block)[0]
    project = functional.pack_weight(ones(1, 1, 16, 8), 1, block)[0]
    no_bias, no_bias2 = np.zeros(0, np.float32), np.zeros((0, 0), np.float32)

    def call(x=x, expand=expand, wd=wd, project=project, y=y, rows=3, steps=(1, 1, 1, 1)):
        return module.expand_depthwise_pointwise(x, expand, no_bias2, None, wd, no_bias, None,
                                                 project, no_bias2, y, 1, 1, *steps, None,
                                                 rows, 1)
    assert call() == 0 and np.all(y > 0)
    # a buffer asked larger than the image (or than memory) holds the image's rows
    expected, y[:] = y.copy(), 0
    assert call(rows=2**60) == 0
    np.testing.assert_array_equal(y, expected)
    for steps in ((0, 1, 1, 1), (1, 0, 1, 1), (1, 1, 0, 1), (1, 1, 1, -1)):
        with pytest.raises(ValueError, match="stride, dilation and groups must be >= 1"):
            call(steps=steps)
    bad = {
        "x of other channels": dict(x=ones(1, 5, 5, 6)),
        "another batch size": dict(y=ones(2, 5, 5, 8)),
        "expansion packed in other blocks": dict(
            expand=functional.pack_weight(ones(1, 1, 4, 16), 1, 2 * block)[0]),
        "1x1 packed in other blocks": dict(
            project=functional.pack_weight(ones(1, 1, 16, 8), 1, 2 * block)[0]),
        "y wider than the 1x1": dict(y=ones(1, 5, 5, 8 + project.shape[1] * project.shape[5])),
        "a 1x1 from more channels than the depthwise": dict(
            project=functional.pack_weight(ones(1, 1, 32, 8), 1, block)[0]),
        # channels not padded to whole vectors (the depthwise rows read whole vectors)
        "depthwise channels not whole vectors": dict(
            wd=ones(3, 3, 1, 3), project=functional.pack_weight(ones(1, 1, 3, 8), 1, block)[0]),
    }
    for what, change in bad.items():
        with pytest.raises(ValueError, match="do not match"):
            call(**change)
            pytest.fail(what)
    with pytest.raises(ValueError, match="buffer_rows must be >= 3"):
        call(rows=2)


# ----------------------------------------------------------------------------------------------
# the layer and optimize_for_inference

def _inverted_block(c_in, c, c_out, dtype=np.float32, stride=1, residual=False):
    """MobileNetV2's inverted residual block: 1x1 expansion, BatchNorm, ReLU6, depthwise 3x3,
    BatchNorm, ReLU6, 1x1 projection, BatchNorm (and the input added when `residual`)."""
    layers = [("expand", L.Conv2d(c_in, c, 1, bias=False, dtype=dtype, rng=0), "x"),
              ("bn0", L.BatchNorm2d(c, dtype=dtype), "expand"), ("act0", L.ReLU6(), "bn0"),
              ("dw", L.Conv2d(c, c, 3, stride=stride, padding=1, groups=c, bias=False,
                              dtype=dtype, rng=1), "act0"),
              ("bn1", L.BatchNorm2d(c, dtype=dtype), "dw"), ("act1", L.ReLU6(), "bn1"),
              ("pw", L.Conv2d(c, c_out, 1, bias=False, dtype=dtype, rng=2), "act1"),
              ("bn2", L.BatchNorm2d(c_out, dtype=dtype), "pw")]
    if residual:
        layers.append(("add", Add(), ("bn2", "x")))
    return with_running_stats(Graph(layers))


def _kinds(fast):
    return [type(layer).__name__ for _, layer, _ in fast.nodes]


def _counting(monkeypatch) -> dict:
    """Counts of the calls bound through each joined kernel's binding."""
    counts = {"separable": 0, "expand": 0}
    for key, binder in (("separable", "bind_depthwise_pointwise"),
                        ("expand", "bind_expand_depthwise_pointwise")):
        real = getattr(functional, binder)

        def counted(*a, real=real, key=key, **k):
            counts[key] += 1
            return real(*a, **k)
        monkeypatch.setattr(functional, binder, counted)
    return counts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, residual", [(1, False), (2, False), (1, True)])
def test_optimize_for_inference_joins_the_block_and_keeps_its_outputs(stride, residual, dtype,
                                                                      monkeypatch, rng):
    model = _inverted_block(8, 48, 8, dtype, stride, residual)
    fast = fastconv.optimize_for_inference(model)
    assert _kinds(fast) == ["FusedSeparableConv"]
    node = fast.nodes[0][1]
    assert node.expand is not None and node.describe((2, 17, 16, 8))["expand_fused"]
    assert [name for name, _, _ in node.parameters()] == [
        "expand.weight", "expand.bias", "depthwise.weight", "depthwise.bias",
        "pointwise.weight", "pointwise.bias"]
    counts = _counting(monkeypatch)
    x = rng.standard_normal((2, 17, 16, 8)).astype(dtype)
    expected = model.eval()(x)
    held = [fast(x) for _ in range(4)]  # recorded, laid out, replayed
    for y in held:
        _close(y, expected, dtype)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(held) for b in held[i + 1:])
    assert counts == {"separable": 0, "expand": counts["expand"]} and counts["expand"] >= 1


def test_the_expansion_joins_where_few_rows_are_expanded_twice():
    # two threads, batch 1: each image in two bands; a 3x3 depthwise of stride 1 reads two
    # rows of the other band, of stride 2 one
    joins = _algorithms.expand_joins
    assert joins(1, 112, 3, 2, 1, 1, 56, 2)
    assert joins(1, 28, 3, 1, 1, 1, 28, 2)  # 2 of 28 rows twice
    assert joins(1, 14, 3, 1, 1, 1, 14, 2)  # 2 of 14
    assert joins(1, 8, 3, 1, 1, 1, 8, 2)  # 2 of 8: a quarter, the most
    assert not joins(1, 7, 3, 1, 1, 1, 7, 2)
    assert joins(2, 7, 3, 1, 1, 1, 7, 2)  # one band per image
    assert joins(1, 7, 3, 1, 1, 1, 7, 1)
    assert not joins(3, 7, 3, 1, 1, 1, 7, 2)  # 3 images, 2 threads: 2 bands each
    assert joins(1, 7, 1, 1, 1, 0, 7, 2)  # a 1x1 depthwise reads no shared row


def test_a_small_image_runs_its_expansion_apart_with_the_same_values(monkeypatch, rng):
    # 1x7x7, 16 -> 96 -> 16: enough work for two threads (PARALLEL_MIN_DEPTHWISE_FLOPS)
    model = _inverted_block(16, 96, 16, residual=True)
    fast = fastconv.optimize_for_inference(model)
    node = fast.nodes[0][1]
    counts = _counting(monkeypatch)
    x = rng.standard_normal((1, 7, 7, 16)).astype(np.float32)
    with fastconv.num_threads(2):
        assert not node.describe(x.shape)["expand_fused"] and node.describe(x.shape)["fused"]
        for _ in range(3):
            _close(fast(x), model.eval()(x), np.float32)
    assert counts["expand"] == 0 and counts["separable"] >= 1
    with fastconv.num_threads(1):  # one band: no row expanded twice
        assert node.describe(x.shape)["expand_fused"]
        _close(fast(x), model.eval()(x), np.float32)
    assert counts["expand"] >= 1
    # too little work for two threads: the kernel runs on one, so the expansion joins it
    small = fastconv.optimize_for_inference(_inverted_block(8, 48, 8, residual=True))
    with fastconv.num_threads(2):
        assert small.nodes[0][1].describe((1, 7, 7, 8))["expand_fused"]


def test_one_and_two_threads_give_the_same_bits_in_the_model(rng, kernel_threads):
    model = _inverted_block(8, 40, 16, residual=False)
    fast = fastconv.optimize_for_inference(model)
    x = rng.standard_normal((2, 20, 9, 8)).astype(np.float32)
    ys = []
    for threads in (1, 2):
        kernel_threads.clear()
        with fastconv.num_threads(threads):
            ys.append(fast(x))
    assert_threads_ran(kernel_threads)
    np.testing.assert_array_equal(ys[0], ys[1])
    _close(ys[1], model.eval()(x), np.float32)


def test_a_dilated_asymmetric_block_on_float64_input_at_many_thread_counts(monkeypatch, rng):
    # a 4x4 depthwise kernel of dilation 3, padding "same": (k - 1) * d = 9 rows split as
    # PyTorch splits it, 4 above and 5 below (and columns likewise), float32 weights on a
    # float64 input (computed in float64), 1, 3 and 4 threads
    c = 24
    model = with_running_stats(Graph([
        ("e", L.Conv2d(8, c, 1, bias=False, rng=0), "x"), ("bn0", L.BatchNorm2d(c), "e"),
        ("act0", L.ReLU6(), "bn0"),
        ("dw", L.Conv2d(c, c, 4, padding="same", dilation=3, groups=c, rng=1), "act0"),
        ("act1", L.ReLU6(), "dw"), ("pw", L.Conv2d(c, 16, 1, rng=2), "act1")]))
    fast = fastconv.optimize_for_inference(model)
    assert _kinds(fast) == ["FusedSeparableConv"] and fast.nodes[0][1].expand is not None
    assert fast.nodes[0][1].depthwise.describe((1, 40, 11, c))["padding"] == ((4, 5), (4, 5))
    counts = _counting(monkeypatch)
    x = rng.standard_normal((1, 40, 11, 8))
    expected = model.eval()(x)
    for threads in (1, 3, 4):
        with fastconv.num_threads(threads):
            y = fast(x)
        assert y.dtype == np.float64
        _close(y, expected, np.float32)  # the weights were folded in float32
    # joined on one thread; on 3 and 4 threads, the bands' cuts would expand 9 rows each
    # twice (the dilated kernel spans 10 rows): the expansion apart
    assert counts == {"expand": 1, "separable": 2}
    x = rng.standard_normal((3, 40, 11, 8))  # an image per thread: joined
    with fastconv.num_threads(3):
        _close(fast(x), model.eval()(x), np.float32)
    assert counts == {"expand": 2, "separable": 2}


def test_the_mobilenet_v2_blocks_join_their_expansions(monkeypatch, rng):
    net = models.mobilenet_v2(10, dtype=np.float32, rng=0)
    fast = fastconv.optimize_for_inference(net)
    nodes = [layer for _, layer, _ in fast.nodes if type(layer) is FusedSeparableConv]
    # each block whose depthwise and 1x1 are joined (those whose 1x1 weight stays in this
    # machine's L2), but the first, which has no expansion
    assert [layer.expand is not None for layer in nodes] == [False] + [True] * (len(nodes) - 1)
    assert len(nodes) > 10
    counts = _counting(monkeypatch)
    for batch in (1, 2):
        x = rng.standard_normal((batch, 64, 64, 3)).astype(np.float32)
        _close(fast(x), net.eval()(x), np.float32)
    assert counts["expand"] > 0 and counts["expand"] + counts["separable"] == 2 * len(nodes)


def test_what_is_not_joined_as_an_expansion(monkeypatch, rng):
    c = 16
    one = lambda c_out=c, **k: L.Conv2d(8, c_out, 1, rng=0, **k)  # noqa: E731
    dw = lambda: L.Conv2d(c, c, 3, padding=1, groups=c, rng=1)  # noqa: E731
    pw = lambda: L.Conv2d(c, 8, 1, rng=2)  # noqa: E731
    graphs = {
        "used twice": [("e", one(), "x"), ("dw", dw(), "e"), ("pw", pw(), "dw"),
                       ("other", L.Conv2d(c, 8, 1, rng=3), "e"), ("add", Add(), ("pw", "other"))],
        "an output": [("e", one(), "x"), ("dw", dw(), "e"), ("pw", pw(), "dw")],
        "strided": [("e", one(stride=2), "x"), ("dw", dw(), "e"), ("pw", pw(), "dw")],
        "padded": [("e", one(padding=1), "x"), ("dw", dw(), "e"), ("pw", pw(), "dw")],
        "3x3": [("e", L.Conv2d(8, c, 3, padding=1, rng=0), "x"), ("dw", dw(), "e"),
                ("pw", pw(), "dw")],
        "grouped": [("e", one(groups=2), "x"), ("dw", dw(), "e"), ("pw", pw(), "dw")],
        "im2col asked": [("e", one(algorithm="im2col"), "x"), ("dw", dw(), "e"),
                         ("pw", pw(), "dw")],
        "a residual added": [("e", L.Conv2d(c, c, 1, rng=0), "x"), ("add", Add(), ("e", "x")),
                             ("dw", dw(), "add"), ("pw", pw(), "dw")],
        "overwritten between": [("t", one(), "x"), ("e", L.Conv2d(c, c, 1, rng=4), "t"),
                                ("relu", L.ReLU(inplace=True), "t"), ("dw", dw(), "e"),
                                ("pw", L.Conv2d(c, c, 1, rng=2), "dw"),
                                ("add", Add(), ("pw", "relu"))],
    }
    for what, nodes in graphs.items():
        outputs = ("pw", "e") if what == "an output" else None
        model = Graph(nodes, outputs=outputs)
        fast = fastconv.optimize_for_inference(model)
        assert not any(getattr(layer, "expand", None) is not None
                       for _, layer, _ in fast.nodes), what
        assert "FusedSeparableConv" in _kinds(fast), what  # the depthwise and 1x1 still are
        x = rng.standard_normal((1, 6, 6, c if what in ("a residual added",) else 8))
        x = x.astype(np.float32)
        expected, got = model.eval()(x), fast(x)
        for a, b in zip(got if isinstance(got, tuple) else [got],
                        expected if isinstance(expected, tuple) else [expected]):
            _close(a, b, np.float32)
    # an expansion whose packed weight would not stay in L2 while every band reads it
    monkeypatch.setattr(_algorithms, "SEPARABLE_MAX_POINTWISE_BYTES", 8 * 64 * 4 - 1)
    fast = fastconv.optimize_for_inference(
        Graph([("e", one(c_out=64), "x"), ("dw", L.Conv2d(64, 64, 3, padding=1, groups=64),
                                              "e"), ("pw", L.Conv2d(64, 8, 1), "dw")]))
    assert [layer.expand for _, layer, _ in fast.nodes if type(layer) is FusedSeparableConv] \
        in ([], [None])


def test_what_one_kernel_cannot_take_runs_as_the_layers(monkeypatch, rng):
    model = _inverted_block(8, 32, 8, residual=True)
    fast = fastconv.optimize_for_inference(model)
    node = fast.nodes[0][1]

    def apart(x):
        return node.pointwise(node.depthwise(node.expand(x)), x)
    counts = _counting(monkeypatch)
    x = rng.standard_normal((2, 9, 9, 8)).astype(np.float32)
    # float16 is computed in float32 by the layers: not the kernel's dtype
    half = x.astype(np.float16)
    np.testing.assert_array_equal(fast(half), apart(half))
    for other in (np.asfortranarray(x), x[:, :, ::-1]):  # not C-contiguous
        np.testing.assert_array_equal(node(other, other), apart(other))
    assert counts == {"separable": 0, "expand": 0}
    # a non-finite expansion weight: the blocked kernel does not take it, so the expansion
    # runs as its own kernel and the depthwise and 1x1 still as one
    node.expand.weight[0, 0, 3, 5] = np.inf
    fastconv.weights_changed(fast)
    assert node.describe(x.shape)["fused"] and not node.describe(x.shape)["expand_fused"]
    with np.errstate(invalid="ignore", over="ignore"):
        for _ in range(3):
            np.testing.assert_array_equal(fast(x), apart(x))
    assert counts["expand"] == 0 and counts["separable"] >= 1
    counts.update(separable=0)
    # a setting changed since: a strided expansion
    node.expand.weight[0, 0, 3, 5] = 1
    node.expand.stride = (2, 2)
    fastconv.weights_changed(fast)
    assert not node.fusable()
    assert node(x[:, :, :, :], x[:, ::2, ::2]).shape == (2, 5, 5, 8)
    assert counts == {"separable": 0, "expand": 0}


def test_the_replay_sees_a_changed_expansion(rng):
    model = _inverted_block(8, 32, 8, residual=True)
    fast = fastconv.optimize_for_inference(model)
    node = fast.nodes[0][1]
    x = rng.standard_normal((2, 12, 12, 8)).astype(np.float32)
    for _ in range(3):
        _close(fast(x), model.eval()(x), np.float32)
    before = fast(x)
    node.expand.weight *= 2  # in place: stale packs unless told
    fastconv.weights_changed(fast)
    _close(fast(x), node.pointwise(node.depthwise(node.expand(x)), x), np.float32)
    assert not np.allclose(fast(x), before)


def test_repr_describe_and_errors(rng):
    model = _inverted_block(8, 32, 8, residual=True)
    fast = fastconv.optimize_for_inference(model)
    node = fast.nodes[0][1]
    assert repr(node).count("->") == 2
    described = node.describe((1, 20, 20, 8))
    assert described["expand"]["post_ops"] and described["fused"]
    with pytest.raises(ValueError, match="8 channels"):
        node(np.ones((1, 5, 6, 32), np.float32), np.ones((1, 5, 6, 8), np.float32))
    with pytest.raises(TypeError, match="expected FusedConv layers, but got Conv2d"):
        FusedSeparableConv(node.depthwise, node.pointwise, L.Conv2d(8, 32, 1))
