"""fastconv.layers: gradients by finite differences, parameters, state dicts, modes, errors."""
import math
import subprocess
import sys

import numpy as np
import pytest

from fastconv import layers as L
import reference  # tests/reference.py


def _distinct(shape, seed):
    """Well separated values (no ties for max pooling, none near ReLU's kink)."""
    rng = np.random.default_rng(seed)
    v = (rng.permutation(math.prod(shape)) + 0.5) / math.prod(shape) * 4 - 2
    return v.reshape(shape)


def check_gradients(layer, x, seed=0, coords=10, eps=1e-5):
    """layer.backward against central differences of <layer(x), g>, for a sample of the
    input's and of every parameter's coordinates (float64 layers)."""
    rng = np.random.default_rng(seed)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    gx = layer.backward(g)
    assert gx.shape == x.shape
    analytic = {"input": (x, gx)}
    for name, value, grad in layer.parameters():
        analytic[name] = (value, grad.copy())

    def objective():
        return np.sum(layer(x) * g)

    for name, (array, grad) in analytic.items():
        picks = rng.choice(array.size, min(coords, array.size), replace=False)
        for flat in picks:
            i = np.unravel_index(flat, array.shape)
            old = array[i]
            array[i] = old + eps
            up = objective()
            array[i] = old - eps
            down = objective()
            array[i] = old
            numeric = (up - down) / (2 * eps)
            assert abs(grad[i] - numeric) <= 1e-6 * (1 + abs(numeric)), (name, i, grad[i],
                                                                         numeric)
    return gx


F64 = dict(dtype=np.float64)

LAYERS = {
    "conv": lambda: (L.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rng=1, **F64),
                     (2, 7, 6, 4)),
    "conv_dilated_nobias": lambda: (L.Conv2d(3, 5, (2, 3), dilation=2, bias=False, rng=2,
                                             **F64), (2, 7, 8, 3)),
    "conv_reflect_same": lambda: (L.Conv2d(2, 3, 3, padding="same", padding_mode="reflect",
                                           rng=3, **F64), (1, 5, 6, 2)),
    "conv_im2col": lambda: (L.Conv2d(8, 16, 3, padding=1, algorithm="im2col", rng=4, **F64),
                            (2, 5, 5, 8)),
    "conv_transpose": lambda: (L.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                 output_padding=1, groups=2, rng=5, **F64),
                               (2, 4, 5, 4)),
    "conv_transpose_dilated": lambda: (L.ConvTranspose2d(3, 2, 2, dilation=2, rng=6, **F64),
                                       (1, 3, 4, 3)),
    "linear": lambda: (L.Linear(7, 5, rng=7, **F64), (4, 7)),
    "linear_3d": lambda: (L.Linear(3, 2, rng=8, **F64), (2, 4, 3)),
    "relu": lambda: (L.ReLU(), (2, 3, 4, 5)),
    "maxpool": lambda: (L.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 6, 3)),
    "maxpool_dilated": lambda: (L.MaxPool2d(2, stride=1, dilation=2), (1, 5, 5, 2)),
    "avgpool": lambda: (L.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                        (2, 7, 6, 3)),
    "flatten": lambda: (L.Flatten(), (2, 3, 4, 5)),
    "sequential": lambda: (L.Sequential(
        L.Conv2d(2, 4, 3, padding=1, rng=9, **F64), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(4, 4, 3, padding=1, rng=10, **F64), L.ReLU(), L.AvgPool2d(2),
        L.Flatten(), L.Linear(4 * 2 * 2, 3, rng=11, **F64), L.ReLU(), L.Linear(3, 2, rng=12,
                                                                               **F64)),
        (3, 8, 8, 2)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_by_finite_differences(name):
    layer, shape = LAYERS[name]()
    x = _distinct(shape, seed=len(name))
    check_gradients(layer, x)


def test_sequential_end_to_end_equals_the_functional_composition():
    model = L.Sequential(L.Conv2d(3, 4, 3, padding=1, rng=0, **F64), L.ReLU(), L.MaxPool2d(2),
                         L.Flatten(), L.Linear(4 * 3 * 3, 2, rng=1, **F64))
    conv, lin = model[0], model[4]
    x = _distinct((2, 6, 6, 3), 5)
    g = np.random.default_rng(6).standard_normal((2, 2))
    # forward from the definitions (tests.reference conv2d, NumPy)
    a = reference.conv2d(x, conv.weight, conv.bias, pads=((1, 1), (1, 1)))
    r = np.maximum(a, 0)
    p = r.reshape(2, 3, 2, 3, 2, 4).max(axis=(2, 4))
    f = p.reshape(2, -1)
    y = f @ lin.weight + lin.bias
    np.testing.assert_allclose(model(x), y, rtol=1e-12, atol=1e-12)
    gx = model.backward(g)
    np.testing.assert_allclose(lin.grads["weight"], f.T @ g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.grads["bias"], g.sum(0), rtol=1e-12)
    assert gx.shape == x.shape and np.abs(gx).sum() > 0


def test_gradients_accumulate_and_zero_grad_clears_them():
    layer = L.Conv2d(2, 3, 3, rng=0, **F64)
    x = _distinct((2, 5, 5, 2), 1)
    g = np.ones((2, 3, 3, 3))
    layer(x)
    layer.backward(g)
    once = {n: gr.copy() for n, _, gr in layer.parameters()}
    grad_refs = [gr for _, _, gr in layer.parameters()]
    layer(x)
    layer.backward(g)
    for name, _, grad in layer.parameters():
        np.testing.assert_allclose(grad, 2 * once[name], rtol=1e-14)
    layer.zero_grad()
    for (_, _, grad), ref in zip(layer.parameters(), grad_refs):
        assert grad is ref  # cleared in place
        assert not grad.any()


@pytest.mark.parametrize("algorithm", ["blocked", "winograd", "im2col", "direct"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_gradient_adds_into_the_gradient_held(algorithm, transposed, dtype):
    # the kernel sums into layer.grads["weight"] where it can (the blocked one): what was
    # there stays, once, in the same array
    from fastconv import functional as F
    cls, backward = ((L.ConvTranspose2d, F.conv_transpose2d_backward) if transposed
                     else (L.Conv2d, F.conv2d_backward))
    layer = cls(5, 6, 3, padding=1, algorithm=algorithm, rng=0, dtype=dtype)
    x = _distinct((2, 6, 7, 5), 1).astype(dtype)
    g = _distinct((2, 6, 7, 6), 2).astype(dtype)
    held = layer.grads["weight"]
    held[...] = _distinct(held.shape, 3)
    before = held.copy()
    layer(x)
    layer.backward(g)
    _, gw, _ = backward(g, x, layer.weight, padding=1, algorithm=algorithm,
                        needs=("weight",))
    assert layer.grads["weight"] is held
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(held, before + gw, rtol=tol, atol=tol)


@pytest.mark.parametrize("grads", ["strided", "float64"])
def test_weight_gradient_adds_into_a_gradient_kernels_cannot_write(grads):
    # a gradient array replaced by hand with one the kernel cannot sum into is added to
    layer = L.Conv2d(5, 6, 3, padding=1, algorithm="blocked", rng=0)
    shape = layer.weight.shape
    layer.grads["weight"] = (np.ones((*shape[:3], 2 * shape[3]), np.float32)[..., ::2]
                             if grads == "strided" else np.ones(shape))
    x = _distinct((1, 6, 7, 5), 1).astype(np.float32)
    g = _distinct((1, 6, 7, 6), 2).astype(np.float32)
    layer(x)
    layer.backward(g)
    from fastconv import functional as F
    _, gw, _ = F.conv2d_backward(g, x, layer.weight, padding=1, algorithm="blocked",
                                 needs=("weight",))
    np.testing.assert_allclose(layer.grads["weight"], 1 + gw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [0, 1, 3, 300])
@pytest.mark.parametrize("held", ["contiguous", "strided", "float64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_weight_gradient_adds_x_transposed_times_grad_into_the_gradient_held(
        rows, held, dtype):
    # a 1x1 convolution's weight-gradient kernel sums x.T @ g into grads["weight"] where it
    # can; an array it cannot write (replaced by hand) is added to; what was there stays once
    layer = L.Linear(20, 24, rng=0, dtype=dtype)
    shape = layer.weight.shape
    if held == "strided":
        layer.grads["weight"] = np.ones((shape[0], 2 * shape[1]), dtype)[:, ::2]
    elif held == "float64":
        layer.grads["weight"] = np.ones(shape)
    else:
        layer.grads["weight"][...] = 1
    array = layer.grads["weight"]
    x = _distinct((rows, 20), 1).astype(dtype)
    g = _distinct((rows, 24), 2).astype(dtype)
    layer(x)
    layer.backward(g)
    assert layer.grads["weight"] is array
    expected = 1 + x.astype(np.float64).T @ g.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(array, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("make, shape", [
    (lambda: L.Conv2d(4, 6, 3, padding=1, rng=0), (1, 5, 5, 4)),
    (lambda: L.Linear(4, 6, rng=0), (2, 4)),
])
def test_a_gradient_set_to_none_is_an_error_not_a_lost_gradient(make, shape):
    layer = make()
    layer.grads["weight"] = None
    y = layer(np.ones(shape, np.float32))
    with pytest.raises(TypeError):
        layer.backward(np.ones_like(y))


def test_weight_gradient_measured_by_autotune_is_added_once(monkeypatch):
    # autotuning runs every candidate on a new geometry: the gradient held gets one of them
    import fastconv
    from fastconv import _autotune
    monkeypatch.setattr(_autotune, "_cache", {})
    monkeypatch.setattr(_autotune, "_enabled", True)
    layer = L.Conv2d(5, 6, 3, padding=1, rng=0, **F64)
    x = _distinct((1, 6, 7, 5), 1)
    g = _distinct((1, 6, 7, 6), 2)
    layer(x)
    layer.backward(g)
    assert any(k[0] == "weight_gradient" for k in _autotune._cache)  # it measured
    fastconv.set_autotune(False)
    _, gw, _ = fastconv.conv2d_backward(g, x, layer.weight, padding=1, needs=("weight",))
    np.testing.assert_allclose(layer.grads["weight"], gw, rtol=1e-12, atol=1e-12)


def test_parameters_names_and_shapes():
    model = L.Sequential(L.Conv2d(3, 8, 5, rng=0), L.ReLU(),
                         L.ConvTranspose2d(8, 4, 2, stride=2, groups=2, bias=False, rng=0),
                         L.Flatten(), L.Linear(10, 7, rng=0))
    shapes = {name: (value.shape, grad.shape, value.dtype)
              for name, value, grad in model.parameters()}
    assert shapes == {"0.weight": ((5, 5, 3, 8), (5, 5, 3, 8), np.float32),
                      "0.bias": ((8,), (8,), np.float32),
                      "2.weight": ((2, 2, 2, 8), (2, 2, 2, 8), np.float32),
                      "4.weight": ((10, 7), (10, 7), np.float32),
                      "4.bias": ((7,), (7,), np.float32)}


@pytest.mark.parametrize("make,fan_in", [
    (lambda rng: L.Conv2d(6, 64, (3, 5), groups=2, rng=rng), 3 * 3 * 5),
    (lambda rng: L.ConvTranspose2d(16, 64, 4, groups=2, rng=rng), 32 * 4 * 4),
    (lambda rng: L.Linear(300, 64, rng=rng), 300),
])
def test_default_initialisation_is_pytorch_kaiming_uniform(make, fan_in):
    layer = make(0)
    bound = 1 / math.sqrt(fan_in)
    for name, value, _ in layer.parameters():
        assert np.abs(value).max() <= bound
        # uniform on [-bound, bound]: the extremes are nearly reached
        assert np.abs(value).max() > 0.8 * bound, name
    assert np.abs(layer.weight).max() > 0.99 * bound
    assert abs(layer.weight.std() - bound / math.sqrt(3)) < 0.1 * bound
    # seedable: same int seed, same weights; a Generator works too
    np.testing.assert_array_equal(make(0).weight, layer.weight)
    np.testing.assert_array_equal(make(np.random.default_rng(0)).weight, layer.weight)
    assert not np.array_equal(make(1).weight, layer.weight)


def test_state_dict_round_trip_is_exact():
    def make(seed, dtype=np.float32):
        return L.Sequential(L.Conv2d(2, 3, 3, rng=seed, dtype=dtype), L.ReLU(), L.Flatten(),
                            L.Linear(3 * 4 * 4, 5, rng=seed + 1, dtype=dtype))
    a, b = make(0), make(10)
    state = a.state_dict()
    assert set(state) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    b.load_state_dict(state)
    for (na, va, _), (nb, vb, _) in zip(a.parameters(), b.parameters()):
        assert na == nb and va.dtype == vb.dtype
        np.testing.assert_array_equal(va, vb)
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))
    # the state dict is a copy: changing it changes neither layer
    state["0.weight"][...] = 0
    assert a[0].weight.any() and b[0].weight.any()
    # float64 round trip too
    c, d = make(0, np.float64), make(5, np.float64)
    d.load_state_dict(c.state_dict())
    np.testing.assert_array_equal(c[3].weight, d[3].weight)


def test_load_state_dict_errors_and_strict_false():
    layer = L.Linear(3, 2, rng=0)
    good = layer.state_dict()
    before = layer.weight.copy()
    with pytest.raises(ValueError, match=r"missing keys \['bias'\]"):
        layer.load_state_dict({"weight": good["weight"]})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra'\]"):
        layer.load_state_dict({**good, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"expected 'weight' of shape \(3, 2\), but got \(2, 3\)"):
        layer.load_state_dict({"weight": good["weight"].T, "bias": good["bias"] + 1})
    np.testing.assert_array_equal(layer.weight, before)  # nothing half-loaded
    with pytest.raises(TypeError, match="dict of arrays"):
        layer.load_state_dict([1, 2])
    with pytest.raises(TypeError, match="real numbers"):
        layer.load_state_dict({"weight": np.array([["a"] * 2] * 3), "bias": good["bias"]})
    layer.load_state_dict({"weight": np.ones((3, 2)), "extra": 1}, strict=False)
    np.testing.assert_array_equal(layer.weight, np.ones((3, 2)))
    np.testing.assert_array_equal(layer.bias, good["bias"])


def test_eval_mode_keeps_nothing_and_train_mode_only_what_backward_needs():
    model = L.Sequential(L.Conv2d(2, 4, 3, padding=1, rng=0), L.ReLU(), L.MaxPool2d(2),
                         L.AvgPool2d(2), L.Flatten(), L.Linear(16, 3, rng=0))
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2)).astype(np.float32)
    y_train = model(x)
    conv, relu, maxpool, avgpool = model[0], model[1], model[2], model[3]
    assert conv._saved["x"] is x
    assert relu._saved["mask"].dtype == bool
    # pools keep no activations: indices (output-sized) only, or nothing
    assert set(maxpool._saved) == {"indices", "shape", "dtype", "out_shape"}
    assert maxpool._saved["indices"].shape == (2, 4, 4, 4)
    assert not any(isinstance(v, np.ndarray) for v in avgpool._saved.values())
    model.eval()
    assert all(layer.training is False for layer in model)
    np.testing.assert_array_equal(model(x), y_train)
    assert all(layer._saved is None for layer in model)
    with pytest.raises(RuntimeError, match="eval mode"):
        model.backward(np.ones_like(y_train))
    model.train()
    model(x)
    model.backward(np.ones_like(y_train))
    assert all(layer._saved is None for layer in model)  # released by backward


def test_sequential_never_modifies_the_callers_input_and_relu_in_place_is_correct():
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 3))
    before = x.copy()
    model = L.Sequential(L.ReLU(), L.Conv2d(3, 4, 3, rng=0, **F64), L.ReLU(), L.ReLU())
    y = model(x)
    np.testing.assert_array_equal(x, before)
    conv_out = reference.conv2d(np.maximum(x, 0), model[1].weight, model[1].bias)
    np.testing.assert_allclose(y, np.maximum(conv_out, 0), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    gx = model.backward(g)
    gc = g * (conv_out > 0)
    np.testing.assert_allclose(model[1].grads["bias"], gc.sum(axis=(0, 1, 2)), rtol=1e-12)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx[x <= 0], 0)
    # a lone Flatten then ReLU: the view of the caller's input is not overwritten either
    L.Sequential(L.Flatten(), L.ReLU())(x)
    np.testing.assert_array_equal(x, before)


def test_sequential_indexing_and_repr():
    model = L.Sequential(L.Conv2d(1, 6, 5, padding=2, rng=0), L.ReLU(), L.MaxPool2d(2),
                         L.Flatten(), L.Linear(6 * 14 * 14, 10, bias=False, rng=0))
    assert len(model) == 5 and isinstance(model[1], L.ReLU)
    assert isinstance(model[1:3], L.Sequential) and len(model[1:3]) == 2
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1), padding=2)\n"
        "  (1): ReLU()\n"
        "  (2): MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=0, ceil_mode=False)\n"
        "  (3): Flatten(start_dim=1, end_dim=-1)\n"
        "  (4): Linear(in_features=1176, out_features=10, bias=False)\n"
        ")")
    assert repr(L.ConvTranspose2d(4, 2, 3, stride=2, output_padding=1, groups=2,
                                  dtype=np.float64)) == (
        "ConvTranspose2d(4, 2, kernel_size=(3, 3), stride=(2, 2), output_padding=(1, 1), "
        "groups=2, dtype=float64)")
    assert repr(L.AvgPool2d(3, 1, 1, count_include_pad=False)) == (
        "AvgPool2d(kernel_size=(3, 3), stride=(1, 1), padding=1, ceil_mode=False, "
        "count_include_pad=False)")


def test_unbatched_input_through_conv_and_pool_layers():
    conv = L.Conv2d(2, 3, 3, padding=1, rng=0, **F64)
    pool = L.MaxPool2d(2)
    x = _distinct((4, 4, 2), 0)
    y = pool(conv(x))
    assert y.shape == (2, 2, 3)
    gx = conv.backward(pool.backward(np.ones(y.shape)))
    assert gx.shape == x.shape


def test_layer_dtypes_follow_numpy_promotion():
    conv = L.Conv2d(1, 2, 3, rng=0)
    x8 = np.random.default_rng(0).integers(0, 255, (2, 5, 5, 1), dtype=np.uint8)
    y = conv(x8)
    assert y.dtype == np.float32
    gx = conv.backward(np.ones(y.shape, np.float32))
    assert gx.dtype == np.float32 and conv.grads["weight"].dtype == np.float32
    pool = L.MaxPool2d(2)
    assert pool(x8).dtype == np.float32
    assert pool.backward(np.ones((2, 2, 2, 1), np.float32)).shape == x8.shape
    lin = L.Linear(3, 2, rng=0)
    assert lin(np.ones((1, 3), np.float64)).dtype == np.float64


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("make,x,match", [
    (lambda: L.Conv2d(3, 4, 3), np.zeros((1, 5, 5, 2)), "with 3 channels.*got input of shape"),
    (lambda: L.ConvTranspose2d(4, 2, 3), np.zeros((1, 5, 5, 3)), "with 4 channels"),
    (lambda: L.Linear(5, 2), np.zeros((2, 4)), "with 5 features"),
    (lambda: L.Conv2d(3, 4, 3), np.zeros((5, 3)), "3-D or 4-D"),
    (lambda: L.MaxPool2d(2), np.zeros((4, 4)), "3-D or 4-D"),
    (lambda: L.Flatten(2, 5), np.zeros((2, 3, 4)), "cannot flatten dimensions"),
])
def test_wrong_input_is_a_clear_error(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


@pytest.mark.parametrize("make,shape", [
    (lambda: L.Conv2d(2, 3, 3, rng=0), (1, 5, 5, 2)),
    (lambda: L.ConvTranspose2d(2, 3, 3, rng=0), (1, 5, 5, 2)),
    (lambda: L.Linear(2, 3, rng=0), (4, 2)),
    (lambda: L.ReLU(), (2, 3)),
    (lambda: L.MaxPool2d(2), (1, 4, 4, 1)),
    (lambda: L.AvgPool2d(2), (1, 4, 4, 1)),
    (lambda: L.Flatten(), (2, 3, 4)),
    (lambda: L.Sequential(L.ReLU(), L.Flatten()), (2, 3, 4)),
])
def test_backward_errors(make, shape):
    layer = make()
    with pytest.raises(RuntimeError, match="no forward pass"):
        layer.backward(np.zeros(shape))
    y = layer(np.ones(shape))
    with pytest.raises(ValueError, match="expected grad_output of shape"):
        layer.backward(np.zeros(y.shape + (1,)))
    layer.backward(np.zeros(y.shape))
    with pytest.raises(RuntimeError, match="since the last backward"):
        layer.backward(np.zeros(y.shape))


def test_a_layer_used_twice_in_a_network_is_refused_at_backward_with_the_reason():
    """One backward per forward: the second use overwrites what the first kept, so the
    backward of the first use says so (instead of a gradient for the wrong input)."""
    conv = L.Conv2d(2, 2, 3, padding=1, rng=0)
    net = L.Sequential(conv, L.ReLU(), conv)
    y = net(np.ones((1, 4, 4, 2), np.float32))
    with pytest.raises(RuntimeError, match="used at two places in a network keeps only"):
        net.backward(np.ones_like(y))


@pytest.mark.parametrize("make,error,match", [
    (lambda: L.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels must be divisible by groups"),
    (lambda: L.Conv2d(4, 6, 3, groups=4), ValueError, "out_channels must be divisible"),
    (lambda: L.Conv2d(0, 4, 3), ValueError, "in_channels must be >= 1"),
    (lambda: L.Conv2d(3, 4, 3, padding_mode="edge"), ValueError, "padding_mode must be one of"),
    (lambda: L.Conv2d(3, 4, 3, algorithm="fft"), ValueError, "algorithm must be one of"),
    (lambda: L.Conv2d(3, 4, 3, dtype=np.int32), TypeError, "dtype must be np.float32"),
    (lambda: L.Conv2d(3, 4, 3, padding="full"), ValueError, "padding must be"),
    (lambda: L.Linear(3, 4, rng="seed"), TypeError, "rng must be None, an int seed"),
    (lambda: L.Linear(3, 4, bias=1), TypeError, "bias must be a bool"),
    (lambda: L.MaxPool2d(3, padding=2), ValueError, "half of the dilated kernel"),
    (lambda: L.AvgPool2d(2, padding=(0, 2)), ValueError, "half of the dilated kernel"),
    (lambda: L.Sequential(L.ReLU(), "relu"), TypeError, "layer 1 must be a fastconv"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_fastconv_import_does_not_import_torch():
    code = ("import sys, fastconv, fastconv.layers, fastconv.optim, fastconv.losses; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _first_layer_nets():
    """Networks whose first layers take the input: each kind of layer that skips the
    input's gradient, inside a Sequential and a graph (a Residual block, whose two branches
    both take it, a SeparableConv2d, and a graph with a ReLU on the input)."""
    from fastconv.graph import Add, Graph, Residual
    return [
        L.Sequential(L.Conv2d(3, 8, 3, stride=2, padding=1, rng=0), L.ReLU(),
                     L.Flatten(), L.Linear(8 * 3 * 3, 4, rng=1)),
        L.Sequential(L.ConvTranspose2d(3, 5, 3, stride=2, rng=2), L.BatchNorm2d(5)),
        L.Sequential(Residual(L.Sequential(L.Conv2d(3, 3, 3, padding=1, rng=3), L.ReLU()),
                              L.Conv2d(3, 3, 1, rng=4)),
                     L.SeparableConv2d(3, 6, 3, padding=1, rng=5)),
        L.Sequential(L.SeparableConv2d(3, 4, 3, rng=6), L.ReLU()),
        L.Sequential(L.ReLU(), L.Conv2d(3, 2, 3, rng=7)),  # a first layer with no parameters
        L.Sequential(L.Flatten(), L.Linear(75, 3, rng=8)),
        Graph([("relu", L.ReLU(), "x"), ("a", L.Conv2d(3, 4, 3, rng=9), "relu"),
               ("b", L.Conv2d(3, 4, 3, rng=10), "x"), ("sum", Add(), ("a", "b")),
               ("c", L.Conv2d(4, 2, 1, rng=11), "sum")]),
    ]


@pytest.mark.parametrize("index", range(7))
def test_backward_params_accumulates_what_backward_does(index, monkeypatch):
    """backward_params gives every parameter the gradient backward gives (added to what is
    there), returns None, and asks no input gradient of the convolutions and Linear layers
    that take the network's input, directly or through layers without parameters (their
    kernels' calls recorded); the others still get theirs. Without a forward it is refused
    as backward is."""
    from fastconv import functional
    net = _first_layer_nets()[index]
    x = np.random.default_rng(index).standard_normal((2, 5, 5, 3)).astype(np.float32)
    gy = np.random.default_rng(10 + index).standard_normal(net(x).shape).astype(np.float32)
    net.zero_grad()
    net(x)
    assert net.backward(gy).shape == x.shape
    expected = {name: 2 * grad.copy() for name, _, grad in net.parameters()}
    asked = []  # (weight, whether the input's gradient was asked for)

    def recording(original):
        def call(*args):  # (fn, one_d, grad_output, x, weight, ..., needs, grad_weight_into)
            asked.append((args[4], "input" in args[-2]))
            return original(*args)
        return call
    for name in ("_conv2d_backward", "_conv_transpose2d_backward"):
        monkeypatch.setattr(functional, name, recording(getattr(functional, name)))
    original_matmul = L.matmul

    def matmul(a, b, **kwargs):  # a Linear layer's input gradient: grad_output @ weight.T
        if b.base is not None:
            asked.append((b, True))
        return original_matmul(a, b, **kwargs)
    monkeypatch.setattr(L, "matmul", matmul)
    net(x)
    assert net.backward_params(gy) is None
    for name, _, grad in net.parameters():
        np.testing.assert_allclose(grad, expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    takes_input = [layer.weight for layer in _takes_input(net)]
    for weight, with_input in asked:
        reads_input = any(weight is w or weight.base is w for w in takes_input)
        assert with_input != reads_input, (weight.shape, with_input)
    with pytest.raises(RuntimeError, match="nothing to go back through"):
        net.backward_params(gy)


def test_backward_params_runs_a_subclass_s_own_backward():
    """A Conv2d or Linear subclass with a backward of its own (here: the gradient doubled)
    gets it run by backward_params too, not skipped."""
    class Doubled(L.Conv2d):
        def backward(self, grad_output):
            return super().backward(2 * grad_output)

    class DoubledLinear(L.Linear):
        def backward(self, grad_output):
            return super().backward(2 * grad_output)

    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32)
    for layer in (Doubled(3, 5, 3, rng=0), DoubledLinear(3, 5, rng=1)):
        gy = np.ones(layer(x).shape, np.float32)
        layer.backward(gy)
        expected = {name: grad.copy() for name, _, grad in layer.parameters()}
        layer.zero_grad()
        layer(x)
        assert layer.backward_params(gy) is None
        for name, _, grad in layer.parameters():
            np.testing.assert_array_equal(grad, expected[name])


def test_backward_params_of_an_inference_model_is_refused():
    import fastconv
    model = L.Sequential(L.Conv2d(3, 4, 3, rng=0), L.ReLU()).eval()
    fast = fastconv.optimize_for_inference(model)
    x = np.zeros((1, 5, 5, 3), np.float32)
    y = fast(x)
    for call in (fast.backward, fast.backward_params):
        with pytest.raises(RuntimeError, match="for inference only"):
            call(np.ones_like(y))


def _takes_input(net):
    """The convolution and Linear layers of a _first_layer_nets network that read its
    input, or only a layer without parameters (ReLU, Flatten) between them and it."""
    from fastconv.graph import Residual
    if not isinstance(net, L.Sequential):  # the graph: a and b
        return [net["a"], net["b"]]
    first = net.layers[0]
    if isinstance(first, (L.ReLU, L.Flatten)):
        return [net.layers[1]]
    if isinstance(first, Residual):
        return [first.nodes[0][1].layers[0], first.nodes[1][1]]
    if isinstance(first, L.SeparableConv2d):
        return [first.depthwise]
    return [first]
