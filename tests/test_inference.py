"""optimize_for_inference and the fused post-ops: the same outputs as the model in eval
mode, every post-op against separate NumPy passes, buffers that never alias held outputs."""
import copy
import pickle

import numpy as np
import pytest

import fastconv
from fastconv import activations as A
from fastconv import layers as L
from fastconv import models
from fastconv._postops import ACTIVATIONS, Activation, PostOps
from fastconv.graph import Add, Graph, Residual
from fastconv.inference import FusedConv, FusedSeparableConv, InferenceGraph

RNG = np.random.default_rng(160)
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _randomise_norms(model, rng):
    """BatchNorm statistics and affine parameters away from their initial 0 / 1."""
    for name, value in model.buffers():
        if name.endswith("running_mean"):
            value[...] = rng.standard_normal(value.shape) * 0.2
        elif name.endswith("running_var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
    for name, value, _ in model.parameters():
        if value.ndim == 1 and ("bn" in name or name.rsplit(".", 2)[-2].isdigit()):
            value[...] = rng.uniform(0.5, 1.5, value.shape) if name.endswith("weight") \
                else value + rng.standard_normal(value.shape) * 0.1
    return model


def _assert_close(actual, expected, dtype):
    scale = max(float(np.nanmax(np.abs(expected), initial=0.0)), 1e-30)
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


MODELS = {
    "resnet18": (lambda dtype: models.resnet18(5, width=4, dtype=dtype, rng=0), (2, 32, 32, 3)),
    "mobilenet_v2": (lambda dtype: models.mobilenet_v2(5, width=8, dtype=dtype, rng=0),
                     (1, 32, 32, 3)),
    "unet": (lambda dtype: models.unet(2, width=4, depth=2, dtype=dtype, rng=0), (1, 16, 16, 3)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MODELS))
def test_models_equal_their_eval_mode(name, dtype):
    build, shape = MODELS[name]
    model = _randomise_norms(build(dtype), np.random.default_rng(1))
    state = model.state_dict()
    fast = fastconv.optimize_for_inference(model)
    assert model.training  # the user's model is untouched
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    x = RNG.standard_normal(shape).astype(dtype)
    expected = model.eval()(x)
    first = fast(x)
    _assert_close(first, expected, dtype)
    np.testing.assert_array_equal(fast(x), first)  # buffers reused: same answer
    kinds = {type(layer) for _, layer, _ in fast.nodes}
    assert not kinds & {L.BatchNorm2d, L.ReLU, L.ReLU6, Add, L.Dropout}, kinds


def test_resnet_blocks_fuse_bias_act_add_act():
    fast = fastconv.optimize_for_inference(models.resnet18(5, width=4, rng=0))
    chains = [tuple(layer.post_ops.names()) for _, layer, _ in fast.nodes
              if isinstance(layer, FusedConv)]
    assert chains.count(("add", "relu")) == 8  # conv -> bn -> add(x) -> relu, every block
    mobile = fastconv.optimize_for_inference(models.mobilenet_v2(5, width=8, rng=0))
    # a depthwise convolution and the 1x1 after it are joined (FusedSeparableConv)
    convs = [c for _, layer, _ in mobile.nodes for c in (
        (layer.depthwise, layer.pointwise) if isinstance(layer, FusedSeparableConv) else
        (layer,) if isinstance(layer, FusedConv) else ())]
    chains = [tuple(conv.post_ops.names()) for conv in convs]
    assert ("add",) in chains and ("relu6",) in chains


# ----------------------------------------------------------------------------------------------
# post-ops against separate NumPy passes

def _numpy_activation(act, x):
    functions = {"relu": lambda v: np.maximum(v, 0), "relu6": A.relu6,
                 "leaky_relu": lambda v: A.leaky_relu(v, act.alpha), "silu": A.silu,
                 "hardswish": A.hardswish, "hardsigmoid": A.hardsigmoid, "sigmoid": A.sigmoid,
                 "tanh": A.tanh, "gelu": A.gelu, "gelu_tanh": lambda v: A.gelu(v, "tanh"),
                 "elu": lambda v: A.elu(v, act.alpha)}
    return x if act is None else functions[act.name](x)


def _numpy_chain(ops, y, residual):
    y = y.copy()
    for vector, combine in ((ops.bias, np.add), (ops.scale, np.multiply),
                            (ops.shift, np.add)):
        if vector is not None:
            y = combine(y, vector.astype(y.dtype))
    y = _numpy_activation(ops.act1, y)
    if ops.residual:
        y = y + residual
    return _numpy_activation(ops.act2, y)


def _act(name):
    return Activation(name, {"leaky_relu": 0.1, "elu": 0.7}.get(name, 0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_alone_and_in_a_chain(name, dtype):
    y = (RNG.standard_normal((2, 3, 5, 7)) * 4).astype(dtype)
    y[0, 0, 0, :3] = (-3, 3, 0)  # kinks
    c = y.shape[-1]
    vectors = [RNG.standard_normal(c).astype(dtype) for _ in range(3)]
    residual = RNG.standard_normal(y.shape).astype(dtype)
    for ops in (PostOps(act1=_act(name)),
                PostOps(*vectors, act1=_act(name), residual=True, act2=_act(name)),
                PostOps(bias=vectors[0], residual=True, act2=_act(name))):
        _assert_close(ops.apply(y.copy(), residual), _numpy_chain(ops, y, residual), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chains_of_post_ops(dtype):
    y = RNG.standard_normal((3, 4, 4, 16)).astype(dtype)
    bias, scale, shift = (RNG.standard_normal(16).astype(dtype) for _ in range(3))
    residual = RNG.standard_normal(y.shape).astype(dtype)
    for ops in (PostOps(bias), PostOps(scale=scale, shift=shift), PostOps(bias, scale, shift),
                PostOps(residual=True), PostOps(bias, residual=True),
                PostOps(bias, act1=_act("relu"), residual=True, act2=_act("relu")),
                PostOps(scale=scale, act1=_act("silu"), residual=True)):
        _assert_close(ops.apply(y.copy(), residual), _numpy_chain(ops, y, residual), dtype)
    # a residual that broadcasts (a squeeze-and-excitation shape), and a float64 one
    ops = PostOps(bias, act1=_act("relu"), residual=True, act2=_act("hardswish"))
    small = RNG.standard_normal((3, 1, 1, 16)).astype(dtype)
    _assert_close(ops.apply(y.copy(), small), _numpy_chain(ops, y, small), dtype)
    # empty outputs, NaN kept
    assert ops.apply(np.zeros((0, 4, 4, 16), dtype), np.zeros((0, 4, 4, 16))).size == 0
    nan = np.full((1, 1, 1, 16), np.nan, dtype)
    assert np.isnan(PostOps(act1=_act("relu")).apply(nan)).all()


def test_post_ops_refuse_bad_chains():
    with pytest.raises(ValueError, match="act2 follows the residual"):
        PostOps(act2=_act("relu"))
    with pytest.raises(ValueError, match="activation must be one of"):
        PostOps(act1=Activation("softmax"))
    with pytest.raises(ValueError, match="none was given"):
        PostOps(residual=True).apply(np.zeros((1, 2), np.float32))


# ----------------------------------------------------------------------------------------------
# the chain in the kernels' own stores

# (algorithm, module name, N, H, W, C_in, k, C_out, stride, pad, groups): every kernel that
# takes an Epilogue; channel counts around the vector and register-block widths; odd
# sizes, strided, depthwise, grouped
KERNEL_CASES = [
    ("direct", "_direct", 2, 7, 9, 5, 3, 17, 1, 1, 1),
    ("direct", "_direct", 1, 9, 11, 33, 3, 33, 2, 1, 33),
    ("direct", "_direct", 2, 6, 5, 6, 3, 10, 1, 0, 2),
    ("im2col", "_im2col", 2, 8, 7, 16, 1, 65, 1, 0, 1),
    ("im2col", "_im2col", 1, 9, 9, 7, 3, 15, 2, 1, 1),
    ("blocked", "_blocked", 2, 7, 13, 9, 3, 63, 1, 1, 1),
    ("blocked", "_blocked", 1, 10, 10, 40, 1, 129, 1, 0, 1),
    ("blocked", "_blocked", 1, 11, 8, 12, 3, 18, 2, 1, 3),
    ("blocked", "_blocked", 2, 5, 9, 16, 1, 41, 1, 0, 1),
    ("winograd", "_winograd", 2, 9, 10, 16, 3, 17, 1, 1, 1),
]


def _kernel_variants():
    from fastconv import _algorithms

    for case in KERNEL_CASES:
        modules = _algorithms.simd_modules(case[1]) if case[1] != "_im2col" else {
            "baseline": _algorithms.KERNELS["im2col"]}
        for level in sorted(modules):
            yield pytest.param(case, level, id=f"{case[0]}-{level}-{'x'.join(map(str, case[2:]))}")


@pytest.mark.parametrize("streamed", [False, True], ids=["stores", "streamed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, level", list(_kernel_variants()))
def test_every_kernel_applies_the_chain_in_its_stores(case, level, dtype, streamed,
                                                      monkeypatch):
    """Each instruction-set variant of each kernel, given an Epilogue, stores what the kernel
    stores without one followed by the chain in NumPy (bias, scale, shift, act, residual,
    act), on 1 and 2 threads alike; `streamed`: with the non-temporal stores the kernels use
    for outputs of STREAM_BYTES or more (where they can)."""
    from fastconv import _algorithms, functional
    from fastconv._kernels import _epilogue

    algo, module, n, h, w_, c, k, cout, stride, pad, groups = case
    modules = _algorithms.simd_modules(module) if module != "_im2col" else {
        "baseline": _algorithms.KERNELS["im2col"]}
    monkeypatch.setitem(_algorithms.KERNELS, algo, modules[level])
    monkeypatch.setattr(_algorithms, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(_algorithms, "STREAM_BYTES", 0 if streamed else 2 ** 62)
    x = RNG.standard_normal((n, h, w_, c)).astype(dtype)
    x[-1, -1, -1, 0] = np.nan  # stays NaN through every step (in registers too)
    w = RNG.standard_normal((k, k, c // groups, cout)).astype(dtype)
    bias = RNG.standard_normal(cout).astype(dtype)
    prepared = functional.prepare_weight(algo, w, bias, groups)
    ho, wo = ((h + 2 * pad - k) // stride + 1, (w_ + 2 * pad - k) // stride + 1)
    plain = np.full((n, ho, wo, cout), np.nan, dtype)
    run = lambda y, post: functional.run_forward(  # noqa: E731
        prepared, x, (pad, pad), y, (stride, stride), (1, 1), groups,
        lambda other: functional.prepare_weight(other, w, bias, groups), post)
    run(plain, None)
    assert np.isnan(plain).any()
    scale, shift = RNG.uniform(0.5, 1.5, cout), RNG.standard_normal(cout)
    residual = RNG.standard_normal(plain.shape).astype(dtype)
    for ops in (PostOps(act1=_act("relu6")),
                # every step, with activations the blocked kernel applies in its registers
                PostOps(bias, scale, shift, _act("relu"), True, _act("relu6")),
                PostOps(None, scale, shift, _act("leaky_relu"), True, _act("relu")),
                PostOps(bias, act1=_act("hardswish"), residual=True)):
        expected = _numpy_chain(ops, plain, residual)
        for threads in (1, 2):
            with fastconv.num_threads(threads):
                fused = np.full_like(plain, np.nan)
                run(fused, ops.epilogue(fused.shape, dtype, residual))
                _assert_close(fused, expected, dtype)
    with pytest.raises(ValueError, match="made for"):
        run(plain, _epilogue.Epilogue(plain.size // cout + 1, cout, dtype))


def test_fused_convolutions_make_no_second_pass(monkeypatch):
    """optimize_for_inference's convolutions apply their post-ops in the kernel: with the
    separate pass broken, ResNet and MobileNet blocks still give the eval-mode outputs."""
    from fastconv._kernels import _epilogue

    def no_pass(*args):
        raise AssertionError("a separate post-op pass ran")

    for build, shape in (MODELS["resnet18"], MODELS["mobilenet_v2"]):
        model = _randomise_norms(build(np.float32), np.random.default_rng(4))
        x = RNG.standard_normal(shape).astype(np.float32)
        expected = model.eval()(x)
        fast = fastconv.optimize_for_inference(model)
        with monkeypatch.context() as patch:
            patch.setattr(_epilogue, "apply", no_pass)
            _assert_close(fast(x), expected, np.float32)


def test_a_plan_refuses_a_chain_it_cannot_apply():
    layer = L.ConvTranspose2d(4, 4, 3, stride=2, rng=0)
    x = np.ones((1, 3, 3, 4), np.float32)
    from fastconv import _plan

    plan = _plan.plan_for(layer, x)
    assert not plan.fuses_post
    with pytest.raises(ValueError, match="takes no post-op chain"):
        plan.run(x, layer.weight, layer.bias, _plan.packs_of(layer),
                 post=PostOps(act1=_act("relu")).epilogue(plan.out_shape, np.float32))


# ----------------------------------------------------------------------------------------------
# fused convolutions of every kind and algorithm

def _block(conv, channels, dtype, act=L.ReLU, norm=L.BatchNorm2d):
    """relu(bn(conv(x)) + x): a conv, its norm and a residual add with an activation after."""
    body = L.Sequential(conv, norm(channels, dtype=dtype), act())
    return L.Sequential(Residual(body), act())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "winograd", "auto"])
def test_fused_conv_for_every_algorithm(algorithm, dtype):
    conv = L.Conv2d(8, 8, 3, padding=1, dtype=dtype, algorithm=algorithm, rng=1)
    model = _randomise_norms(_block(conv, 8, dtype), np.random.default_rng(2))
    x = RNG.standard_normal((2, 8, 8, 8)).astype(dtype)
    fast = fastconv.optimize_for_inference(model)
    (fused,) = [layer for _, layer, _ in fast.nodes]
    assert fused.post_ops.names() == ["relu", "add", "relu"] and fused.algorithm == algorithm
    _assert_close(fast(x), model.eval()(x), dtype)
    assert fused.describe(x.shape)["post_ops"] == ["bias", "relu", "add", "relu"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_grouped_depthwise_and_linear_folds(dtype):
    rng = np.random.default_rng(3)
    tconv = L.Sequential(L.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dtype=dtype, rng=1),
                         L.BatchNorm2d(6, dtype=dtype), L.LeakyReLU(0.2))
    depthwise = L.Sequential(L.DepthwiseConv2d(6, 3, padding=1, dtype=dtype, rng=1),
                             L.BatchNorm2d(6, dtype=dtype), L.GELU("tanh"))
    grouped = L.Sequential(L.Conv2d(6, 4, 1, groups=2, bias=False, dtype=dtype, rng=1),
                           L.BatchNorm2d(4, dtype=dtype, affine=False), L.Hardswish())
    head = L.Sequential(L.Flatten(), L.Linear(4 * 9 * 9, 5, dtype=dtype, rng=1),
                        L.BatchNorm1d(5, dtype=dtype), L.Sigmoid())
    model = _randomise_norms(L.Sequential(tconv, depthwise, grouped, head), rng)
    x = RNG.standard_normal((2, 4, 4, 4)).astype(dtype)
    fast = fastconv.optimize_for_inference(model)
    assert [type(layer).__name__ for _, layer, _ in fast.nodes] == ["FusedConv"] * 3 + [
        "Flatten", "FusedConv"]
    _assert_close(fast(x), model.eval()(x), dtype)


def test_what_is_not_fused():
    """A value used twice, a model output, batch statistics, and unknown layers stay."""
    conv = L.Conv2d(3, 4, 3, padding=1, rng=0)
    nodes = [("conv", conv, "x"), ("bn", L.BatchNorm2d(4, track_running_stats=False), "conv"),
             ("relu", L.ReLU(), "bn"), ("elu", L.ELU(-1.0), "relu"),
             ("conv2", L.Conv2d(4, 4, 1, rng=0), "relu"), ("pool", L.MaxPool2d(2), "conv2"),
             ("add", Add(), ("conv2", "elu"))]
    model = Graph(nodes, outputs=("add", "pool"))
    fast = fastconv.optimize_for_inference(model)
    names = [name for name, _, _ in fast.nodes]
    assert names == ["conv", "bn", "relu", "elu", "conv2", "pool", "add"]
    x = RNG.standard_normal((2, 6, 6, 3)).astype(np.float32)
    for got, expected in zip(fast(x), model.eval()(x)):
        _assert_close(got, expected, np.float32)


def test_identity_and_dropout_are_dropped_and_a_single_layer_works():
    model = L.Sequential(L.Identity(), L.Conv2d(3, 3, 1, rng=0), L.Dropout(0.5), L.ReLU())
    fast = fastconv.optimize_for_inference(model)
    assert len(fast.nodes) == 1
    x = RNG.standard_normal((1, 3, 3, 3)).astype(np.float32)
    _assert_close(fast(x), model.eval()(x), np.float32)
    single = fastconv.optimize_for_inference(L.Conv2d(3, 3, 1, rng=0))
    assert isinstance(single, InferenceGraph) and single(x).shape == (1, 3, 3, 3)


def test_inference_only_and_errors():
    fast = fastconv.optimize_for_inference(L.Sequential(L.Conv2d(3, 3, 1, rng=0), L.ReLU()))
    x = np.ones((1, 2, 2, 3), np.float32)
    fast(x)
    with pytest.raises(RuntimeError, match="inference only"):
        fast.backward(np.ones((1, 2, 2, 3)))
    with pytest.raises(RuntimeError, match="no training mode"):
        fast.train()
    with pytest.raises(TypeError, match="expected a fastconv layer"):
        fastconv.optimize_for_inference(lambda v: v)
    with pytest.raises(ValueError, match="3 channels.*at node"):
        fast(np.ones((1, 2, 2, 4), np.float32))


# ----------------------------------------------------------------------------------------------
# activation buffers

def test_buffers_never_alias_held_outputs_and_are_reused():
    # the output a view (Flatten) of a fused conv's buffer, and a conv output held by the user
    model = L.Sequential(L.Conv2d(3, 4, 3, padding=1, rng=0), L.ReLU(),
                         L.Conv2d(4, 4, 3, padding=1, rng=1), L.Flatten())
    fast = fastconv.optimize_for_inference(model)
    x1, x2 = (RNG.standard_normal((2, 5, 5, 3)).astype(np.float32) for _ in range(2))
    y1 = fast(x1)
    held = y1.copy()
    y2 = fast(x2)
    np.testing.assert_array_equal(y1, held)  # the second call did not write into y1
    assert not np.shares_memory(y1, y2)
    pool = fast._local.pool
    (arena, *_), = pool.layouts.values()
    fast(x1)
    fast(x2)
    assert not pool.pooled  # steady state: the arena laid out by the first call, no buffers
    (again, *_), = pool.layouts.values()
    assert again is arena and not np.shares_memory(y1, arena) and not np.shares_memory(y2, arena)


def test_later_calls_replay_bound_kernel_calls_and_see_every_change(monkeypatch):
    """From the second call with an input shape, a fused convolution whose arguments are the
    arena's arrays replays the kernel call it bound (no plan.bind); it still reads the
    current input values, and a weight changed in place (weights_changed) or replaced is
    bound anew: the result equals that of a graph that never ran before."""
    from fastconv import _plan

    def model():
        return L.Sequential(L.Conv2d(5, 24, 3, padding=1, rng=0), L.BatchNorm2d(24), L.ReLU6(),
                            L.Conv2d(24, 40, 1, rng=1), L.ReLU(),
                            L.Conv2d(40, 40, 3, padding=1, groups=40, rng=2),
                            L.Conv2d(40, 8, 3, padding=1, rng=3))  # (a 1x1 would join it)
    fast, fresh = (fastconv.optimize_for_inference(model()) for _ in range(2))
    binds = []
    bind = _plan.ConvPlan.bind
    monkeypatch.setattr(_plan.ConvPlan, "bind", lambda *a, **k: binds.append(1) or bind(*a, **k))
    x = RNG.standard_normal((2, 9, 7, 5)).astype(np.float32)
    fast(x)
    fast(x)
    x[...] = RNG.standard_normal(x.shape)  # the same array object, refilled
    expected = fresh(x)
    before = len(binds)
    np.testing.assert_array_equal(fast(x), expected)
    # every fused node on the pool's arrays replayed; the first one, on the caller's array,
    # bound again (a kept call would hold that array alive)
    assert len(binds) == before + 1
    convs = [layer for _, layer, _ in fast.nodes if isinstance(layer, FusedConv)]
    twins = [layer for _, layer, _ in fresh.nodes if isinstance(layer, FusedConv)]
    convs[1].weight *= 2  # in place
    fastconv.weights_changed(convs[1])
    twins[1].weight = twins[1].weight * 2
    convs[2].bias = convs[2].bias + 1  # replaced
    twins[2].bias = twins[2].bias + 1
    expected = fresh(x)
    before = len(binds)
    np.testing.assert_array_equal(fast(x), expected)
    assert len(binds) == before + 1 + 2  # and the two changed nodes, bound anew
    np.testing.assert_array_equal(fast(x), expected)
    assert len(binds) == before + 1 + 2 + 1
    # a new weight at the address of a freed one (same id, same version): bound anew too
    fast.eval()  # drops the layers' packed weights
    convs[1].weight = convs[1].weight * 2
    convs[1].weight = convs[1].weight * 0
    twins[1].weight = convs[1].weight.copy()
    np.testing.assert_array_equal(fast(x), fresh(x))
    # the kept calls (closures) are left out of pickles and copies
    again = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(again(x), fresh(x))


def test_steady_passes_replay_the_recorded_pass_until_anything_changes(monkeypatch):
    """From the third call with an input signature, an InferenceGraph replays the pass it
    recorded over its arena (no pool bookkeeping, no per-node checks): the same outputs as
    a graph that never ran, outputs held by the caller left alone; a changed node list,
    layer setting or thread count gives the replay up (a full pass runs) and is seen."""
    from fastconv import inference

    def model():
        return Graph([("c1", L.Conv2d(3, 8, 3, padding=1, rng=0), "x"), ("r1", L.ReLU(), "c1"),
                      ("c2", L.Conv2d(8, 8, 3, padding=1, rng=1), "r1"),
                      ("add", Add(), ("c2", "r1")), ("r2", L.ReLU(), "add"),
                      ("pool", L.MaxPool2d(2), "r2"), ("c3", L.Conv2d(8, 4, 1, rng=2), "pool"),
                      ("flat", L.Flatten(), "c3")])
    fast, fresh = (fastconv.optimize_for_inference(model()) for _ in range(2))
    full = []
    at_node = inference._fused_at_node
    monkeypatch.setattr(inference, "_fused_at_node", lambda *a: full.append(1) or at_node(*a))
    xs = [RNG.standard_normal((2, 6, 6, 3)).astype(np.float32) for _ in range(6)]
    ys = [fast(x) for x in xs[:4]]
    assert len(full) == 2 * 3  # two full passes (one lays out the arena), then replays
    for x, y in zip(xs, ys):
        np.testing.assert_array_equal(y, fresh(x))  # and no later call wrote into y
    # a node replaced by another layer of the same shapes
    k = next(i for i, (name, _, _) in enumerate(fast.nodes) if name == "c3")
    other = fastconv.optimize_for_inference(L.Conv2d(8, 4, 1, rng=9)).nodes[0][1]
    fast.nodes[k] = (fast.nodes[k][0], other, fast.nodes[k][2])

    def first_call(x):  # of a new graph with that node: a full pass
        graph = fastconv.optimize_for_inference(model())
        graph.nodes[k] = (graph.nodes[k][0], other, graph.nodes[k][2])
        return graph(x)
    np.testing.assert_array_equal(fast(xs[4]), first_call(xs[4]))
    # a layer's algorithm (the first node's, and a later one's: the replay gives up after
    # some nodes ran), and the thread count: new plans
    for change in (lambda: setattr(fast.nodes[0][1], "algorithm", "direct"),
                   lambda: setattr(fast.nodes[1][1], "algorithm", "im2col"),
                   lambda: fastconv.set_num_threads(1)):
        for _ in range(3):
            fast(xs[5])
        change()
        try:
            # the replay runs up to the changed node, the rest as plain layers; then a full
            # pass records anew
            expected = first_call(xs[5])
            np.testing.assert_allclose(fast(xs[5]), expected, rtol=1e-5, atol=1e-6)
            before = len(full)
            np.testing.assert_allclose(fast(xs[5]), expected, rtol=1e-5, atol=1e-6)
            assert len(full) > before
        finally:
            fastconv.set_num_threads(None)


def test_a_steady_replay_plans_once_per_pass_and_sees_changes_made_in_place(monkeypatch):
    """Steady replays run the kept kernel calls without planning each node again (only the
    first convolution, on the caller's array, is planned); a post-op set on a fused chain
    afterwards, or a weight changed in place (weights_changed), is seen at the next call:
    the result equals that of a copy that never ran. A padding given as a list is kept as
    a tuple (changing the list changes nothing)."""
    from fastconv import _plan

    padding = [1, 1]
    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(3, 8, 3, padding=padding, rng=0), L.ReLU(), L.Conv2d(8, 8, 1, rng=1),
        L.ReLU(), L.Conv2d(8, 4, 3, padding=1, rng=2, algorithm="blocked"),  # a packed weight
        L.Flatten()))
    assert fast.nodes[0][1].padding == (1, 1)
    padding[0] = 0
    fast.nodes[0][1].padding = [1, 1]  # set later: a tuple too
    assert fast.nodes[0][1].padding == (1, 1)

    def fresh(x):
        return pickle.loads(pickle.dumps(fast))(x)  # copies leave plans and kept calls out
    planned = []
    plan_for = _plan.plan_for
    monkeypatch.setattr(_plan, "plan_for", lambda *a: planned.append(1) or plan_for(*a))
    x = RNG.standard_normal((1, 7, 6, 3)).astype(np.float32)
    for _ in range(3):
        fast(x)
    expected = fresh(x)
    before = len(planned)
    np.testing.assert_array_equal(fast(x), expected)
    assert len(planned) == before + 1
    fast.nodes[1][1].post_ops.act1 = None  # the ReLU after the second convolution
    expected = fresh(x)
    for _ in range(2):
        np.testing.assert_array_equal(fast(x), expected)
    fast.nodes[2][1].weight[..., 0] = 0
    fastconv.weights_changed(fast.nodes[2][1])
    expected = fresh(x)
    for _ in range(2):
        np.testing.assert_array_equal(fast(x), expected)


def test_a_replay_follows_a_node_that_hands_on_another_arena_array():
    """A layer choosing which of two arena arrays it passes on, changed after the pass was
    kept: the convolution reading it computes from the array it now gets (its kept call,
    bound to the other one, is not used)."""
    from fastconv.graph import Merge

    class Pick(Merge):
        num_inputs, which = 2, 0

        def forward(self, a, b):
            return (a, b)[self.which]

    model = Graph([("c1", L.Conv2d(3, 4, 3, padding=1, rng=0), "x"),
                   ("c2", L.Conv2d(3, 4, 1, rng=1), "x"), ("pick", Pick(), ("c1", "c2")),
                   ("c3", L.Conv2d(4, 4, 3, padding=1, rng=2), "pick"),
                   ("flat", L.Flatten(), "c3")]).eval()
    fast = fastconv.optimize_for_inference(model)
    x = RNG.standard_normal((1, 5, 6, 3)).astype(np.float32)
    for _ in range(3):
        fast(x)
    for layers in (model, fast):
        next(layer for name, layer, _ in layers.nodes if name == "pick").which = 1
    for _ in range(2):
        np.testing.assert_allclose(fast(x), model(x), rtol=1e-5, atol=1e-6)


def test_a_residual_added_into_a_new_array_keeps_the_replay(monkeypatch):
    """A fused residual that broadcasts the output to a larger batch (added into a new
    array, the arena's array given back at once): steady passes still replay, with the
    unfused graph's results."""
    from fastconv import inference

    model = Graph([("c1", L.Conv2d(3, 4, 3, padding=1, rng=0), "x"),
                   ("add", Add(), ("c1", "b")), ("c2", L.Conv2d(4, 4, 3, padding=1, rng=1), "add"),
                   ("c3", L.Conv2d(4, 4, 1, rng=2), "c2"), ("flat", L.Flatten(), "c3")],
                  inputs=("x", "b")).eval()
    fast = fastconv.optimize_for_inference(model)
    assert fast.nodes[0][1].post_ops.residual
    full = []
    at_node = inference._fused_at_node
    monkeypatch.setattr(inference, "_fused_at_node", lambda *a: full.append(1) or at_node(*a))
    x = RNG.standard_normal((1, 5, 6, 3)).astype(np.float32)
    b = RNG.standard_normal((2, 1, 1, 4)).astype(np.float32)
    for _ in range(4):
        np.testing.assert_allclose(fast(x, b), model(x, b), rtol=1e-5, atol=1e-6)
    assert len(full) == 2 * 3  # two full passes (one lays out the arena), then replays


def test_pooling_and_a_few_rows_linear_run_as_kernel_calls_in_the_arena(monkeypatch):
    """Max pooling, global average pooling and a Linear on a few rows (an output too) write
    into the arena and are replayed as kept kernel calls, the Flatten between them as the
    view it made, with the plain model's results; a pooling setting changed afterwards,
    keeping the output's shape, is seen; a subclass with its own forward runs that forward. A list setting is kept as a tuple in the inference copy."""
    from fastconv import inference

    class Halved(L.MaxPool2d):
        def forward(self, x):
            return super().forward(x) * 0.5

    model = L.Sequential(L.Conv2d(3, 8, 3, padding=1, rng=0), L.ReLU(), Halved(2),
                         L.Conv2d(8, 16, 1, rng=1), L.MaxPool2d(3, stride=1, padding=[1, 1]),
                         L.AdaptiveAvgPool2d(1), L.Flatten(), L.Linear(16, 12, rng=2),
                         L.Linear(12, 5, rng=3)).eval()
    fast = fastconv.optimize_for_inference(model)
    # its copy's list setting made a tuple (a kept call would miss a change in place)
    fast_pool = next(layer for _, layer, _ in fast.nodes if type(layer) is L.MaxPool2d)
    assert fast_pool.padding == (1, 1)
    kernels = []
    run = inference._KernelStep.run
    monkeypatch.setattr(inference._KernelStep, "run",
                        lambda self, layer, *a: kernels.append(type(layer)) or run(self, layer, *a))
    xs = [RNG.standard_normal((2, 8, 8, 3)).astype(np.float32) for _ in range(4)]
    ys = [fast(x) for x in xs]
    for x, y in zip(xs, ys):  # and the outputs, copied out of the arena, left alone
        np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-6)
    # recorded in the first two passes (one lays out the arena), then kept calls only (the
    # output Linear's too)
    assert kernels == [L.MaxPool2d, L.AdaptiveAvgPool2d, FusedConv, FusedConv] * 2
    replay, = fast._local.pool.replays.values()
    kinds = {type(layer).__name__ + getattr(layer, "kind", ""): type(step).__name__
             for (_, layer, _), step in zip(fast.nodes, replay.steps) if step is not None}
    assert kinds == {"FusedConvconv2d": "_Step", "MaxPool2d": "_KernelStep",
                     "AdaptiveAvgPool2d": "_KernelStep", "Flatten": "_ViewStep",
                     "FusedConvlinear": "_KernelStep"}
    for pool in (model.layers[4], fast_pool):
        pool.kernel_size, pool.padding = (1, 1), 0  # the same output shape
    for x in xs[:2]:
        np.testing.assert_allclose(fast(x), model(x), rtol=1e-5, atol=1e-6)
    for flatten in (model.layers[6], next(layer for _, layer, _ in fast.nodes
                                          if type(layer) is L.Flatten)):
        flatten.start_dim = 2  # (2, 1, 16): another view
    for x in xs[:3]:
        y = fast(x)
        assert y.shape == (2, 1, 5)
        np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-6)


def test_a_replayed_flatten_hands_on_its_view_only_while_it_is_the_same():
    """A Flatten whose value is a copy (channels_first on a 2x2 map: a transpose first) is
    not replayed as a view (a kept copy would hold the first input's values); a Flatten
    whose setting changed after the recording makes another view, which a replay takes up
    from then on."""
    conv = (3, 4, 3)
    copying = L.Sequential(L.Conv2d(*conv, padding=1, rng=0), L.MaxPool2d(2),
                           L.Flatten(channels_first=True), L.Linear(16, 3, rng=1)).eval()
    viewing = L.Sequential(L.Conv2d(*conv, padding=1, rng=0), L.AdaptiveAvgPool2d(1),
                           L.Flatten(), L.ReLU()).eval()
    xs = [RNG.standard_normal((2, 4, 4, 3)).astype(np.float32) for _ in range(4)]
    for model in (copying, viewing):
        fast = fastconv.optimize_for_inference(model)
        for x in xs:
            np.testing.assert_allclose(fast(x), model(x), rtol=1e-5, atol=1e-6)
    for flatten in (viewing.layers[2], next(layer for _, layer, _ in fast.nodes
                                            if type(layer) is L.Flatten)):
        flatten.start_dim = 2
    for x in xs:
        y = fast(x)
        assert y.shape == (2, 1, 4)
        np.testing.assert_allclose(y, viewing(x), rtol=1e-5, atol=1e-6)


def test_a_replay_ends_where_a_convolution_value_moves_in_the_arena():
    """A fused residual whose dtype changes after the recording (float64: the sum was a new
    array and its arena slot went to a later convolution; float32: the sum lands in the
    slot): the replay sees the value where none was recorded and runs the rest as plain
    layers, so the later convolution does not overwrite it."""
    from fastconv.graph import Mul

    class Residual(L.Layer):  # float64 on the first two calls, float32 after
        calls = 0

        def forward(self, x):
            self.calls += 1
            return (x * 0.5).astype(np.float64 if self.calls <= 2 else np.float32)

    def conv(seed, c_in=8):
        return L.Conv2d(c_in, 8, 3, padding=1, rng=seed)
    model = Graph([("c0", conv(0, 3), "x"), ("r", Residual(), "c0"), ("c1", conv(1), "c0"),
                   ("a", Add(), ("c1", "r")), ("c2", conv(2), "c0"), ("y", Mul(), ("a", "c2"))],
                  outputs="y").eval()
    fast = fastconv.optimize_for_inference(model)
    x = RNG.standard_normal((1, 12, 12, 3)).astype(np.float32)
    for _ in range(4):
        fresh = copy.deepcopy(fast)  # never replayed (copies drop it), at the same call count
        np.testing.assert_allclose(fast(x), fresh(x), rtol=1e-5, atol=1e-6)


def test_a_weight_changed_by_a_layer_during_a_replayed_pass_is_seen_at_once():
    """A layer that changes a later convolution's weight in place (and says so with
    weights_changed) in the middle of a replayed pass: that convolution runs with the new
    weight in the same pass."""
    class Scaler(L.Layer):
        target, scale = None, False

        def forward(self, x):
            if self.scale:
                self.target.weight[...] *= 2
                fastconv.weights_changed(self.target)
            return x + 0

    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(3, 8, 3, padding=1, rng=0), Scaler(), L.Conv2d(8, 32, 3, padding=1, rng=1),
        L.ReLU(), L.Conv2d(32, 32, 3, padding=1, rng=2), L.MaxPool2d(2)))
    scaler = next(layer for _, layer, _ in fast.nodes if type(layer) is Scaler)
    scaler.target = fast.nodes[-2][1]  # the convolution before the pooling
    x = RNG.standard_normal((1, 24, 24, 3)).astype(np.float32)
    for _ in range(3):
        fast(x)
    expected = copy.deepcopy(fast)  # never replayed (copies drop it)
    expected.nodes[-2][1].weight[...] *= 2
    scaler.scale = True
    np.testing.assert_allclose(fast(x), expected(x), rtol=1e-5, atol=1e-6)


def test_tuples_of_views_of_arena_arrays_keep_them_taken_and_are_copied_out():
    """A layer returning a tuple of views of an arena array: the array stays taken while
    the tuple lives (a later node's value does not land on it), and a tuple output is
    returned with its arrays copied out of the arena."""
    class Split(L.Layer):
        def forward(self, x):
            return x, x[:, ::2]

    class First(L.Layer):
        def forward(self, pair):
            return pair[0] + 0

    def model(outputs):
        return Graph([("c0", L.Conv2d(3, 8, 3, padding=1, rng=0), "x"),
                      ("p", L.MaxPool2d(2), "c0"), ("s", Split(), "p"),
                      ("c1", L.Conv2d(3, 8, 3, padding=1, rng=1), "x"),
                      ("p1", L.MaxPool2d(2), "c1"),
                      ("c2", L.Conv2d(8, 8, 3, padding=1, rng=2), "p1"),
                      ("k", First(), "s"), ("a", Add(), ("k", "c2")), ("t", Split(), "p1")],
                     outputs=outputs).eval()
    plain = model(("a", "p1"))  # a plain Graph returns arrays only
    fast = fastconv.optimize_for_inference(model(("a", "t")))
    xs = [RNG.standard_normal((2, 8, 8, 3)).astype(np.float32) for _ in range(4)]
    results = [fast(x) for x in xs]
    for x, (a, (t0, t1)) in zip(xs, results):
        expected_a, expected_p1 = plain(x)
        np.testing.assert_allclose(a, expected_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(t0, expected_p1)
        np.testing.assert_array_equal(t1, expected_p1[:, ::2])


def test_an_input_transpose_runs_into_the_arena_and_the_next_convolution_call_is_kept():
    """An ONNX model's NCHW -> NHWC transpose of its input (Permute) writes into the arena,
    so the convolution reading it replays its kept call (its input is then the pool's own
    array, not the caller's); the NHWC -> NCHW transpose of an output is made outside the
    arena. The same values as the plain graph, pass after pass; an NHWC input is refused
    naming the node."""
    from fastconv.graph import Permute

    def model():
        return Graph([("x/nhwc", Permute((0, 2, 3, 1), channels=3), ["x"]),
                      ("conv", L.Conv2d(3, 16, 3, padding=1, rng=0), ["x/nhwc"]),
                      ("relu", L.ReLU(), ["conv"]),
                      ("head", L.Conv2d(16, 4, 1, rng=1), ["relu"]),
                      ("y", Permute((0, 3, 1, 2)), ["head"])]).eval()
    plain, fast = model(), fastconv.optimize_for_inference(model())
    xs = [RNG.standard_normal((2, 3, 9, 7)).astype(np.float32) for _ in range(4)]
    ys = [fast(x) for x in xs]
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, plain(x), rtol=1e-5, atol=1e-6)
    (arena, *_), = fast._local.pool.layouts.values()
    assert not any(np.shares_memory(y, arena) for y in ys)
    replay, = fast._local.pool.replays.values()
    kinds = [type(step).__name__ if step else None for step in replay.steps]
    assert kinds == ["_KernelStep", "_Step", "_Step", None]  # (relu fused; "y" outside)
    assert replay.steps[1].call is not None and replay.steps[0].call is None
    with pytest.raises(ValueError, match="takes NCHW arrays.*at node 'x/nhwc'"):
        fast(RNG.standard_normal((2, 9, 7, 3)).astype(np.float32))


def test_a_pass_whose_kernels_never_call_blas_leaves_its_threads_alone():
    """A replayed pass holds BLAS on one thread (a setting of OpenBLAS's threads, slow after
    an idle spell) only where its recorded pass had a kernel that asked for it."""
    from fastconv import _threads

    x = RNG.standard_normal((1, 12, 12, 8)).astype(np.float32)
    # (Winograd's forward kernel does its products itself; only its weight gradient uses BLAS)
    for algorithm, asks in (("blocked", False), ("winograd", False), ("im2col", True)):
        model = L.Sequential(L.Conv2d(8, 32, 3, padding=1, algorithm=algorithm, rng=0),
                             L.ReLU(), L.Conv2d(32, 16, 1, rng=1)).eval()
        fast = fastconv.optimize_for_inference(model)
        for _ in range(3):
            fast(x)
        replay, = fast._local.pool.replays.values()
        expected = model(x)
        before = _threads.blas_requests()
        np.testing.assert_allclose(fast(x), expected, rtol=1e-5, atol=1e-5)
        assert replay.uses_blas is asks
        assert (_threads.blas_requests() > before) is asks


def test_a_kernel_node_that_refuses_its_input_runs_as_a_layer():
    """A pooling node whose window does not fit its input raises the layer's error naming
    the node; a Linear on more rows than the few-rows kernel takes (its call refused at
    bind) runs as a plain layer, with the plain model's results, pass after pass."""
    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(3, 4, 3, padding=1, rng=0), L.MaxPool2d(5), L.Flatten()))
    with pytest.raises(ValueError, match="smaller than the dilated kernel.*at node '1'"):
        fast(np.zeros((1, 3, 3, 3), np.float32))
    model = L.Sequential(L.Conv2d(3, 4, 3, padding=1, rng=0), L.AdaptiveAvgPool2d(1),
                         L.Flatten(), L.Linear(4, 6, rng=1), L.Linear(6, 2, rng=2)).eval()
    fast = fastconv.optimize_for_inference(model)
    from fastconv._kernels import _linear
    x = RNG.standard_normal((_linear.MAX_ROWS + 1, 5, 5, 3)).astype(np.float32)
    for _ in range(4):
        np.testing.assert_allclose(fast(x), model(x), rtol=1e-5, atol=1e-6)
    replay, = fast._local.pool.replays.values()
    assert [type(step).__name__ if step else None for step in replay.steps] == [
        "_Step", "_KernelStep", "_ViewStep", None, None]


def test_an_error_in_a_replayed_pass_names_its_node():
    """A layer setting that its plan refuses, made after the pass was kept for replay: the
    error is the full pass's, a ValueError naming the node; the next call again."""
    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(3, 4, 3, padding=1, rng=0), L.ReLU(), L.Conv2d(4, 4, 1, rng=1), L.ReLU(),
        L.Conv2d(4, 2, 1, rng=2)))
    x = RNG.standard_normal((1, 5, 5, 3)).astype(np.float32)
    for _ in range(3):
        fast(x)
    name, layer, _ = fast.nodes[1]
    layer.algorithm = "bogus"
    for _ in range(2):
        with pytest.raises(ValueError, match=f"algorithm must be one of.*at node '{name}'"):
            fast(x)


def test_a_replay_that_gives_up_runs_no_node_twice_and_follows_the_outputs():
    """A replay that meets a changed plan after a node that works in place on the graph's
    input: that node ran once (the input halved once where negative), the rest as plain
    layers. Outputs changed after the recording: the replay is not used."""
    model = Graph([("act", L.LeakyReLU(0.5, inplace=True), "x"),
                   ("c1", L.Conv2d(3, 4, 3, padding=1, rng=0), "act"),
                   ("r", L.ReLU(), "c1"), ("c2", L.Conv2d(4, 4, 1, rng=1), "r")])
    fast = fastconv.optimize_for_inference(model)
    x0 = RNG.standard_normal((1, 6, 6, 3)).astype(np.float32)
    expected = model.eval()(x0.copy())
    for _ in range(3):
        fast(x0.copy())
    next(layer for name, layer, _ in fast.nodes if name == "c1").algorithm = "im2col"
    x = x0.copy()
    np.testing.assert_allclose(fast(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, np.where(x0 < 0, x0 * np.float32(0.5), x0))
    for _ in range(3):
        fast(x0.copy())
    fast.outputs = ("c1", "c2")
    y1, y2 = fast(x0.copy())
    np.testing.assert_allclose(y2, expected, rtol=1e-5, atol=1e-6)
    assert y1.shape == (1, 6, 6, 4)


def _as_strided(x):
    return np.lib.stride_tricks.as_strided(x, x.shape, x.strides)


@pytest.mark.parametrize("view", [
    _as_strided, lambda x: _as_strided(_as_strided(x)),
    lambda x: np.lib.stride_tricks.sliding_window_view(x, 1, axis=3)[..., 0],
    lambda x: np.asarray(memoryview(x))], ids=["as_strided", "twice", "window", "memoryview"])
def test_views_made_through_other_objects_are_followed_to_their_buffer(view):
    """A layer returning a view of its input made through another object (whose .base is
    not the buffer): the buffer stays taken while the view is alive, and an output viewing
    it is copied out."""
    class Strided(L.Layer):
        def forward(self, x):
            return view(x)

    model = Graph([("c1", L.Conv2d(4, 4, 3, padding=1, rng=0), "x"), ("v", Strided(), "c1"),
                   ("c2", L.Conv2d(4, 4, 3, padding=1, rng=1), "v"),
                   ("c3", L.Conv2d(4, 4, 1, rng=2), "c2"), ("out", Strided(), "c3")]).eval()
    fast = fastconv.optimize_for_inference(model)
    xs = [RNG.standard_normal((1, 6, 6, 4)).astype(np.float32) for _ in range(5)]
    ys = [fast(x) for x in xs]
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, model(x), rtol=1e-5, atol=1e-6)


def test_a_replayed_output_in_the_arena_is_copied_out():
    """An output node that comes to return its input (an arena array) after the pass was
    recorded: the replay copies it out too, so a later call never writes into it."""
    from fastconv.graph import Pad

    fast = fastconv.optimize_for_inference(Graph([
        ("c1", L.Conv2d(3, 4, 3, padding=1, rng=0), "x"),
        ("pad", Pad(((0, 0), (1, 1), (1, 1), (0, 0))), "c1")]))
    x1, x2 = (RNG.standard_normal((1, 5, 5, 3)).astype(np.float32) for _ in range(2))
    for _ in range(3):
        fast(x1)
    fast.nodes[-1][1].pads = ((0, 0),) * 4  # Pad now returns its input
    y1 = fast(x1)
    held = y1.copy()
    y2 = fast(x2)
    np.testing.assert_array_equal(y1, held)
    assert not np.shares_memory(y1, y2)


def test_the_arena_never_overlaps_arrays_alive_together():
    """_arena_layout on random lifetimes: two takes alive at the same step never share a
    byte; the arena is no larger than all takes side by side."""
    from fastconv.inference import _arena_layout

    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        takes = []
        for step in rng.permutation(2 * n).reshape(n, 2):
            taken, back = sorted(int(v) for v in step)
            takes.append((int(rng.integers(0, 5000)), taken, back))
        arena, offsets = _arena_layout(takes)
        assert arena.nbytes <= sum(-(-max(t[0], 1) // 64) * 64 for t in takes)
        for i, (nb_i, t_i, b_i) in enumerate(takes):
            o_i = offsets[i][0]
            assert offsets[i][1] == nb_i and o_i % 64 == 0 and o_i + nb_i <= arena.nbytes
            for j, (nb_j, t_j, b_j) in enumerate(takes[:i]):
                o_j = offsets[j][0]
                if t_i <= b_j and t_j <= b_i and nb_i and nb_j:
                    assert o_i + nb_i <= o_j or o_j + nb_j <= o_i, (takes, offsets)


def test_an_arena_per_input_shape_and_a_pass_it_did_not_foresee():
    from fastconv.inference import _BufferPool

    model = L.Sequential(L.Conv2d(3, 4, 3, padding=1, rng=0), L.ReLU(),
                         L.Conv2d(4, 6, 1, rng=1), L.ReLU(), L.Conv2d(6, 4, 1, rng=2))
    fast = fastconv.optimize_for_inference(model)
    xs = [RNG.standard_normal(shape).astype(np.float32)
          for shape in ((2, 5, 5, 3), (1, 7, 6, 3), (2, 5, 5, 3))]
    for x in xs + xs:
        np.testing.assert_allclose(fast(x), model.eval()(x), rtol=1e-5, atol=1e-5)
    assert len(fast._local.pool.layouts) == 2
    # a pass that takes another size than its layout foresaw goes on from the free list:
    # nothing it takes overlaps what it took from the arena
    pool = _BufferPool()
    pool.begin("x")
    first, second = pool.take((4, 8), np.float32), pool.take((2, 8), np.float32)
    pool.track(first)
    pool.release(first)
    pool.give_back(second)
    pool.end()
    pool.begin("x")
    a = pool.take((4, 8), np.float32)
    pool.track(a)
    b = pool.take((3, 8), np.float32)  # not the (2, 8) of the layout
    assert not np.shares_memory(a, b) and pool.owns(a) and pool.owns(b)
    assert "x" not in pool.layouts
    # a pass that never gave an array back lays out no arena (its lifetime has no end)
    pool.begin("y")
    pool.take((4, 8), np.float32)
    pool.end()
    assert "y" not in pool.layouts


def test_activations_and_packed_weights_are_aligned_for_the_vector_units():
    """fastconv's own outputs, pooled buffers and packed weights start on 64-byte
    boundaries (NumPy's own allocations are only 16-byte aligned)."""
    from fastconv import _memory, functional

    assert _memory.ALIGNMENT == 64
    for shape, dtype in (((3, 5, 7), np.float32), ((2, 4), np.float64), (11, np.float32)):
        a = _memory.empty(shape, dtype)
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == dtype
    assert _memory.empty((0, 4), np.float64).shape == (0, 4)
    raw = _memory.empty(5 * 5 * 3 + 4, np.float32)
    x = raw[4:].reshape(1, 5, 5, 3)  # 16 bytes past a boundary
    x[...] = 1
    copy = _memory.aligned(x)
    assert x.ctypes.data % 64 == 16 and copy.ctypes.data % 64 == 0 and np.array_equal(copy, x)
    assert _memory.aligned(copy) is copy
    w = RNG.standard_normal((3, 3, 3, 8)).astype(np.float32)
    assert fastconv.conv2d(x, w, padding=1).ctypes.data % 64 == 0
    for algo in ("blocked", "winograd"):  # the packed layouts (the others use w as it is)
        prepared = functional.prepare_weight(algo, w, np.zeros(8, np.float32), 1)
        assert prepared.weight.ctypes.data % 64 == 0, algo
    fast = fastconv.optimize_for_inference(L.Sequential(L.Conv2d(3, 4, 3, padding=1, rng=0),
                                                        L.ReLU(), L.Conv2d(4, 4, 1, rng=0)))
    fast(x)
    pool = fast._local.pool
    (arena, offsets, *_), = pool.layouts.values()  # the arena and every array laid out in it
    assert arena.ctypes.data % 64 == 0 and all(offset % 64 == 0 for offset, _ in offsets)
    pool.begin("another signature")  # the free list's buffers: aligned too
    taken = [pool.take((1, 5, 5, 4), np.float32) for _ in range(2)]
    assert all(a.ctypes.data % 64 == 0 for a in taken)


def test_torch_model_through_from_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)) + x)

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(), Block())
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    module.eval()
    fast = fastconv.optimize_for_inference(fastconv.from_torch(module))
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
    _assert_close(fast(x.transpose(0, 2, 3, 1)), expected, np.float32)
    assert sum(isinstance(layer, FusedConv) for _, layer, _ in fast.nodes) == 2


def test_large_outputs_run_a_few_images_at_a_time(monkeypatch):
    """Where the post-ops run as a pass after the kernel (a transposed convolution), past
    half the last-level cache the conv and its post-ops run per group of images."""
    conv = L.ConvTranspose2d(8, 8, 3, padding=1, rng=1)
    model = _randomise_norms(_block(conv, 8, np.float32, act=L.SiLU), np.random.default_rng(4))
    fast = fastconv.optimize_for_inference(model)
    x = RNG.standard_normal((5, 6, 6, 8)).astype(np.float32)
    whole = fast(x)
    monkeypatch.setattr(fastconv._algorithms, "STREAM_BYTES", 2 * 6 * 6 * 8 * 4)
    (fused,) = [layer for _, layer, _ in fast.nodes]
    assert fused.kind == "conv_transpose2d"
    fused._plans.clear()
    np.testing.assert_array_equal(fast(x), whole)
    assert {(2, 6, 6, 8), (1, 6, 6, 8)} <= {key[0] for key in fused._plans}
    _assert_close(fast(x), model.eval()(x), np.float32)


# ----------------------------------------------------------------------------------------------
# found by a review: residuals the output cannot take in place, refilled inputs, bad `out`

def _residual_block(dtype=np.float32):
    rng = np.random.default_rng(11)
    return Residual(L.Sequential(L.Conv2d(3, 8, 3, padding=1, rng=rng, dtype=dtype), L.ReLU(),
                                 L.Conv2d(8, 3, 3, padding=1, rng=rng, dtype=dtype)))


def test_a_refilled_input_that_had_to_be_converted_is_read_anew():
    """x + body(x) with x a reused uint8 frame, or a strided NCHW view refilled in place:
    the kernel's chain must not keep reading last call's converted copy."""
    model = _residual_block()
    fast = fastconv.optimize_for_inference(model)
    rng = np.random.default_rng(12)
    frame = np.zeros((1, 9, 9, 3), np.uint8)
    for _ in range(3):  # the same array object at every call
        frame[...] = rng.integers(0, 256, frame.shape)
        _assert_close(fast(frame), model.eval()(frame), np.float32)
    nchw = np.zeros((1, 3, 9, 9), np.float32)
    view = nchw.transpose(0, 2, 3, 1)
    for _ in range(3):
        nchw[...] = rng.standard_normal(nchw.shape)
        _assert_close(fast(view), model.eval()(view), np.float32)


def test_residuals_that_widen_or_promote_the_output_are_added_as_the_add_would():
    """Add(conv(pooled x), x) broadcasts the conv's (N, 1, 1, C) output up to x's shape, and a
    float64 or integer operand promotes a float32 conv's result: the fused model gives the
    unfused Add's shape and dtype."""
    squeeze = Graph([("pool", L.AdaptiveAvgPool2d(1), "x"), ("fc", L.Conv2d(8, 8, 1, rng=3), "pool"),
                     ("add", Add(), ("fc", "x"))])
    x = RNG.standard_normal((2, 6, 6, 8)).astype(np.float32)
    _assert_close(fastconv.optimize_for_inference(squeeze)(x), squeeze.eval()(x), np.float32)
    two = Graph([("conv", L.Conv2d(3, 4, 3, padding=1, rng=4), "x"), ("add", Add(), ("conv", "r")),
                 ("relu", L.ReLU(), "add")], inputs=("x", "r"))
    fast = fastconv.optimize_for_inference(two)
    x = RNG.standard_normal((2, 5, 5, 3)).astype(np.float32)
    for r in (RNG.standard_normal((2, 5, 5, 4)), np.arange(4), np.ones((2, 5, 5, 4), np.int16)):
        expected = two.eval()(x, r)
        got = fast(x, r)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_no_conv_moves_past_a_layer_that_overwrites_its_input():
    nodes = [("t", L.Conv2d(3, 4, 1, rng=5), "x"), ("a", L.Conv2d(4, 4, 1, rng=6), "t"),
             ("b", L.ReLU(inplace=True), "t"), ("add", Add(), ("a", "b"))]
    model = Graph(nodes)
    x = RNG.standard_normal((1, 4, 4, 3)).astype(np.float32)
    _assert_close(fastconv.optimize_for_inference(model)(x), Graph(nodes).eval()(x), np.float32)


def test_a_fused_conv_refuses_an_out_it_cannot_fill():
    fused = fastconv.optimize_for_inference(L.Sequential(L.Conv2d(4, 4, 3, padding=1, rng=0),
                                                         L.ReLU())).nodes[0][1]
    x = np.ones((3, 5, 5, 4), np.float32)
    for out in (np.zeros((1, 5, 5, 4), np.float32), np.zeros((3, 5, 5, 4)),
                np.zeros((3, 5, 5, 8), np.float32)[..., ::2], [0.0]):
        with pytest.raises(ValueError, match="out must be a C-contiguous float32 array of "
                                             r"shape \(3, 5, 5, 4\)"):
            fused.forward(x, out=out)
    good = np.zeros((3, 5, 5, 4), np.float32)
    assert fused.forward(x, out=good) is good
    # an out that overlaps the residual: the kernels would read what they already wrote
    with_residual = FusedConv(L.Conv2d(4, 4, 3, padding=1, rng=0),
                              PostOps(act1=_act("leaky_relu"), residual=True))
    residual = np.ones((3, 5, 5, 4), np.float32)
    with pytest.raises(ValueError, match="out must not overlap the residual"):
        with_residual.forward(x, residual, out=residual)


def test_a_pass_that_raised_leaves_no_live_values_behind():
    """The next pass starts with no values counted as live: the free list's buffers go once
    an arena is laid out, as after passes that never raised."""
    class Boom(L.Layer):
        armed = False

        def forward(self, x):
            if Boom.armed:
                raise RuntimeError("boom")
            return x

    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(4, 8, 3, padding=1, rng=0), L.Conv2d(8, 8, 1, rng=1), Boom(),
        L.Conv2d(8, 8, 1, rng=2), L.Conv2d(8, 4, 1, rng=3)))
    x = np.ones((1, 6, 6, 4), np.float32)
    fast(x)
    Boom.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        fast(x)
    Boom.armed = False
    pool = fast._local.pool
    for h in (7, 8):
        fast(np.ones((1, h, 6, 4), np.float32))
        assert not pool.users and not pool.pooled and len(pool.layouts) == h - 5


def test_the_pool_reuses_empty_and_tiny_buffers():
    fast = fastconv.optimize_for_inference(L.Sequential(
        L.Conv2d(3, 4, 3, padding=1, rng=0), L.ReLU(), L.Conv2d(4, 2, 1, rng=0), L.ReLU(),
        L.Conv2d(2, 3, 1, rng=0)))
    for n in (0, 1):
        x = np.zeros((n, 1, 1, 3), np.float32)
        fast(x)
        count = len(fast._local.pool.pooled)
        for _ in range(5):
            fast(x)
        assert len(fast._local.pool.pooled) == count
