"""fastconv.graph: Add / Mul / Concat, the Graph container and its Residual / Parallel blocks,
against NumPy and finite differences."""
import numpy as np
import pytest

from fastconv import functional as F
from fastconv import layers as L
from fastconv.graph import Add, Concat, Graph, Mul, Parallel, Residual

RNG = np.random.default_rng(0)


def _conv(cin, cout, k=3, seed=0, **kw):
    return L.Conv2d(cin, cout, k, padding=k // 2, dtype=np.float64, rng=seed, **kw)


def _diamond():
    """x -> a = conv(x), b = relu(conv(x)); out = concat(a + b, x * a) - x fans out three
    times, a twice."""
    return Graph([
        ("stem.conv", _conv(3, 4, seed=1), "x"),
        ("a", _conv(4, 3, seed=2), "stem.conv"),
        ("b.conv", _conv(4, 3, 1, seed=3), "stem.conv"),
        ("b", L.ReLU(), "b.conv"),
        ("sum", Add(), ("a", "b")),
        ("prod", Mul(), ("x", "a")),
        ("out", Concat(), ("sum", "prod")),
        ("x2", Add(), ("out", "out")),
    ])


def _diamond_numpy(g, x):
    s = F.conv2d(x, g["stem.conv"].weight, g["stem.conv"].bias, padding=1)
    a = F.conv2d(s, g["a"].weight, g["a"].bias, padding=1)
    b = np.maximum(F.conv2d(s, g["b.conv"].weight, g["b.conv"].bias), 0)
    out = np.concatenate([a + b, x * a], axis=-1)
    return out + out


def _numeric_grad(f, arr, eps=1e-6):
    """d sum(f() * weights) / d arr by central differences (arr perturbed in place)."""
    grad = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        up = f()
        arr[i] = old - eps
        down = f()
        arr[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def test_graph_forward_matches_numpy_and_backward_matches_finite_differences():
    g = _diamond()
    x = RNG.standard_normal((2, 4, 3, 3))
    y = g(x)
    np.testing.assert_allclose(y, _diamond_numpy(g, x), rtol=1e-12, atol=1e-12)
    w = RNG.standard_normal(y.shape)
    gx = g.backward(w)
    loss = lambda: float(np.sum(g.eval()(x) * w))  # noqa: E731
    grads = {name: grad.copy() for name, _, grad in g.parameters()}
    np.testing.assert_allclose(gx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    for name in ("stem.conv.weight", "a.bias", "b.conv.weight"):
        value = dict((n, v) for n, v, _ in g.parameters())[name]
        np.testing.assert_allclose(grads[name], _numeric_grad(loss, value), rtol=1e-6,
                                   atol=1e-7, err_msg=name)


def test_fan_out_gradients_add_up():
    # y = x + 2 x + relu(x): the gradient of x is 1 + 2 + (x > 0)
    g = Graph([("a", Add(), ("x", "x")), ("r", L.ReLU(), "x"), ("y", Add(), ("x", "a", "r"))])
    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(g(x), 3 * x + np.maximum(x, 0))
    np.testing.assert_allclose(g.backward(np.ones((2, 3))), 3 + (x > 0))
    # parameter gradients accumulate across calls and across the nodes of one call
    lin = L.Linear(3, 3, dtype=np.float64, rng=0)
    g = Graph([("lin", lin, "x"), ("y", Mul(), ("lin", "lin"))])
    for _ in range(2):
        y = g(x)
        g.backward(np.ones_like(y))
    z = x @ lin.weight + lin.bias
    np.testing.assert_allclose(lin.grads["bias"], 2 * (2 * z).sum(0))


def test_broadcast_add_and_mul_sum_the_gradient_over_broadcast_axes():
    a = RNG.standard_normal((2, 4, 3, 5))
    gate = RNG.standard_normal((2, 1, 1, 5))
    bias = RNG.standard_normal(5)
    grad = RNG.standard_normal(a.shape)
    mul = Mul()
    np.testing.assert_allclose(mul(a, gate, bias), a * gate * bias)
    ga, gg, gb = mul.backward(grad)
    np.testing.assert_allclose(ga, grad * gate * bias)
    np.testing.assert_allclose(gg, (grad * a * bias).sum(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(gb, (grad * a * gate).sum(axis=(0, 1, 2)))
    add = Add()
    np.testing.assert_allclose(add(a, gate), a + gate)
    ga, gg = add.backward(grad)
    assert ga.shape == a.shape and gg.shape == gate.shape
    np.testing.assert_allclose(gg, grad.sum(axis=(1, 2), keepdims=True))


def test_concat_joins_and_splits_along_dim():
    a, b = RNG.standard_normal((2, 3, 4, 1)), RNG.standard_normal((2, 3, 4, 6))
    cat = Concat()
    y = cat(a, b.astype(np.float32))
    assert y.dtype == np.float64 and y.shape == (2, 3, 4, 7)
    ga, gb = cat.backward(y * 2)
    np.testing.assert_allclose(ga, 2 * a)
    np.testing.assert_allclose(gb, 2 * b, rtol=1e-6)
    cat0 = Concat(dim=0)
    assert cat0(np.zeros((0, 2)), np.ones((3, 2))).shape == (3, 2)


def test_shape_mismatches_name_both_shapes_and_the_node():
    x = np.zeros((1, 4, 4, 3))
    block = Residual(L.Conv2d(3, 8, 1, rng=0))
    with pytest.raises(ValueError, match=r"\(1, 4, 4, 8\), \(1, 4, 4, 3\).*at node 'add'"):
        block(x)
    net = Graph([("layer1.0", Residual(L.Conv2d(3, 3, 3, rng=0)), "x")])
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 3\), \(1, 4, 4, 3\).*'layer1\.0\.add'"):
        net(x)
    with pytest.raises(ValueError, match=r"dimension -1.*\(1, 4, 4, 3\), \(1, 3, 4, 3\)"):
        Concat()(x, np.zeros((1, 3, 4, 3)))
    with pytest.raises(TypeError, match="two or more inputs"):
        Add()(x)


def test_construction_errors():
    relu = L.ReLU()
    with pytest.raises(TypeError, match="has the layer of node 'a'"):
        Graph([("a", relu, "x"), ("b", relu, "a")])
    with pytest.raises(ValueError, match=r"uses \['y'\]"):
        Graph([("a", L.ReLU(), "y")])
    with pytest.raises(ValueError, match="defined twice"):
        Graph([("a", L.ReLU(), "x"), ("a", L.ReLU(), "x")])
    with pytest.raises(TypeError, match=r"takes 1 inputs, but got 2"):
        Graph([("a", L.ReLU(), ("x", "x"))])
    with pytest.raises(TypeError, match="two or more inputs"):
        Graph([("a", Add(), "x")])
    with pytest.raises(TypeError, match="must be a fastconv.layers.Layer"):
        Graph([("a", np.maximum, "x")])
    with pytest.raises(ValueError, match=r"outputs \['z'\]"):
        Graph([("a", L.ReLU(), "x")], outputs="z")
    g = Graph([("a", L.ReLU(), "x")])
    with pytest.raises(TypeError, match=r"expected 1 input"):
        g(np.zeros(2), np.zeros(2))
    with pytest.raises(RuntimeError, match="no forward pass"):
        g.backward(np.zeros(2))
    g(np.zeros(2))
    with pytest.raises(ValueError, match=r"output 'a' of shape \(2,\)"):
        g.backward(np.zeros(3))


def test_several_inputs_and_outputs_and_nested_graphs():
    inner = Graph([("s", Add(), ("p", "q"))], inputs=("p", "q"))
    g = Graph([("inner", inner, ("u", "v")), ("r", L.ReLU(), "inner"), ("dead", L.ReLU(), "v")],
              inputs=("u", "v", "unused"), outputs=("r", "inner"))
    u, v, w = (RNG.standard_normal((2, 3)) for _ in range(3))
    r, s = g(u, v, w)
    np.testing.assert_allclose(s, u + v)
    np.testing.assert_allclose(r, np.maximum(u + v, 0))
    gu, gv, gw = g.backward((np.ones((2, 3)), None))
    np.testing.assert_allclose(gu, (u + v) > 0)
    np.testing.assert_allclose(gv, (u + v) > 0)
    assert not gw.any() and gw.shape == w.shape


def test_state_dict_names_train_eval_and_repr():
    block = Residual(L.Sequential(_conv(2, 2), L.BatchNorm2d(2, dtype=np.float64)),
                     L.Sequential(_conv(2, 2, 1)))
    net = Graph([("layer1.0", block, "x"), ("fc", L.Linear(2, 3, dtype=np.float64), "layer1.0")])
    keys = list(net.state_dict())
    assert keys[:4] == ["layer1.0.body.0.weight", "layer1.0.body.0.bias",
                        "layer1.0.body.1.weight", "layer1.0.body.1.bias"]
    assert "layer1.0.body.1.running_mean" in keys
    assert "layer1.0.shortcut.0.weight" in keys and "fc.bias" in keys
    assert "layer1.0.body.1.num_batches_tracked" in keys
    sd = {k: v + 1 if v.dtype.kind == "f" else v for k, v in net.state_dict().items()}
    net.load_state_dict(sd)
    np.testing.assert_array_equal(net["fc"].bias, sd["fc.bias"])
    net.eval()
    assert not block.training and not block["body"][1].training
    net.train()
    assert block["body"][1].training
    text = repr(net)
    assert "(layer1.0): Residual(" in text and "(shortcut): Sequential(" in text
    assert "<- layer1.0" in text
    par = Parallel(None, L.ReLU(), merge=Add())
    assert "(0): identity" in repr(par) and "(merge): Add()" in repr(par)
    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(par(x), x + np.maximum(x, 0))


def test_blocks_identity_branches():
    x = RNG.standard_normal((1, 3, 3, 2)).astype(np.float32)
    dense = Parallel(L.Identity(), L.Conv2d(2, 4, 3, padding=1, rng=0))
    y = dense(x)
    assert y.shape == (1, 3, 3, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(y[..., :2], x)
    assert [n for n, _, _ in dense.parameters()] == ["1.weight", "1.bias"]
    se = Parallel(None, L.Sequential(L.AdaptiveAvgPool2d(1), L.Sigmoid()), merge=Mul())
    np.testing.assert_allclose(se(x), x / (1 + np.exp(-x.mean(axis=(1, 2), keepdims=True))),
                               rtol=1e-6)
    assert se.backward(np.ones_like(x)).shape == x.shape


# -- fastconv.models ----------------------------------------------------------------------------

def _count(model):
    return sum(value.size for _, value, _ in model.parameters())


def test_model_parameter_counts_are_the_papers():
    from fastconv import models

    # torchvision's counts (BatchNorm weights and biases included, running statistics not)
    assert _count(models.resnet18(rng=0)) == 11_689_512
    assert _count(models.mobilenet_v2(rng=0)) == 3_504_872


@pytest.mark.parametrize("name, kwargs, shape, out", [
    ("resnet18", dict(width=4), (2, 32, 32, 3), (2, 7)),
    ("resnet50", dict(width=2), (2, 32, 32, 3), (2, 7)),
    ("mobilenet_v2", dict(width=4), (2, 32, 32, 3), (2, 7)),
    ("vgg16_bn", dict(width=2), (1, 32, 32, 3), (1, 7)),
    ("unet", dict(width=2, depth=2, in_channels=3), (2, 8, 12, 3), (2, 8, 12, 7)),
])
def test_models_run_forward_and_backward(name, kwargs, shape, out):
    from fastconv import models

    model = getattr(models, name)(num_classes=7, dtype=np.float64, rng=0, **kwargs)
    again = getattr(models, name)(num_classes=7, dtype=np.float64, rng=0, **kwargs)
    for (key, value), other in zip(model.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(value, other, err_msg=key)  # rng=0: the same network
    x = RNG.standard_normal(shape)
    y = model(x)
    assert y.shape == out and y.dtype == np.float64
    assert model.backward(np.ones_like(y)).shape == shape
    assert all(np.isfinite(g).all() for _, _, g in model.parameters())


def test_blocks_compose_as_described():
    from fastconv import models

    block = models.basic_block(4, 8, 2, dtype=np.float64, rng=0)
    res = block[0]
    assert isinstance(res, Residual) and res["shortcut"][0].stride == (2, 2)
    assert models.basic_block(4, 4)[0].nodes[-1][2] == ("body", "x")  # identity shortcut
    se = models.squeeze_excitation(6, 2, dtype=np.float64, rng=0)
    x = RNG.standard_normal((2, 3, 3, 6))
    gate = se["1"](x)
    np.testing.assert_allclose(se(x), x * gate)
    dense = models.dense_block(3, 2, 3, rng=0)
    assert dense(x[..., :3].astype(np.float32)).shape == (2, 3, 3, 9)
