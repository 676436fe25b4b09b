"""fastconv.activations and the activation layers: NumPy references from the definitions,
finite differences for every backward, PyTorch's values at the kinks, in-place layers."""
import math

import numpy as np
import pytest

import fastconv as fc
from fastconv import layers as L
from _gradcheck import assert_grad

DTYPES = (np.float32, np.float64)
_erf = np.vectorize(math.erf)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


# name: (function, backward, extra args, reference, backward reads the output)
CASES = {
    "relu6": (fc.relu6, fc.relu6_backward, (), lambda x: np.minimum(np.maximum(x, 0), 6), False),
    "leaky_relu": (fc.leaky_relu, fc.leaky_relu_backward, (0.2,),
                   lambda x: np.where(x > 0, x, 0.2 * x), False),
    "elu": (fc.elu, fc.elu_backward, (1.5,), lambda x: np.where(x > 0, x, 1.5 * (np.exp(x) - 1)),
            True),
    "silu": (fc.silu, fc.silu_backward, (), lambda x: x * _sigmoid(x), False),
    "hardswish": (fc.hardswish, fc.hardswish_backward, (),
                  lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6, False),
    "hardsigmoid": (fc.hardsigmoid, fc.hardsigmoid_backward, (),
                    lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6, False),
    "sigmoid": (fc.sigmoid, fc.sigmoid_backward, (), _sigmoid, True),
    "tanh": (fc.tanh, fc.tanh_backward, (), lambda x: np.sinh(x) / np.cosh(x), True),
    "gelu": (fc.gelu, fc.gelu_backward, ("none",), lambda x: x / 2 * (1 + _erf(x / math.sqrt(2))),
             False),
    "gelu_tanh": (fc.gelu, fc.gelu_backward, ("tanh",), lambda x: x / 2 * (1 + np.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), False),
    "softmax": (fc.softmax, fc.softmax_backward, (1,), lambda x: _softmax(x, 1), True),
    "log_softmax": (fc.log_softmax, fc.log_softmax_backward, (-1,),
                    lambda x: np.log(_softmax(x, -1)), True),
}


def _smooth_input(shape, seed=0):
    """Values in (-7, 7) kept away from every kink (0, +-3, 6) by more than the FD step."""
    x = np.random.default_rng(seed).uniform(-7, 7, shape)
    for kink in (0.0, 3.0, -3.0, 6.0):
        near = np.abs(x - kink) < 0.05
        x[near] += 0.1
    return x


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_matches_the_definition(name, dtype):
    fn, _, args, reference, _ = CASES[name]
    x = _smooth_input((2, 3, 4, 5)).astype(dtype)
    before = x.copy()
    y = fn(x, *args)
    assert y.dtype == dtype and y.shape == x.shape
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y, reference(x.astype(np.float64)), rtol=tol, atol=tol)
    np.testing.assert_array_equal(x, before)  # never modified
    # integers compute in float64 (NumPy's promotion with float32); empty arrays work
    assert fn(np.arange(-3, 3).reshape(2, 3), *args).dtype == np.float64
    assert fn(np.zeros((0, 5), dtype), *args).shape == (0, 5)


@pytest.mark.parametrize("name", CASES)
def test_backward_by_finite_differences(name):
    fn, backward, args, _, reads_output = CASES[name]
    x = _smooth_input((2, 3, 5))
    g = np.random.default_rng(1).standard_normal(x.shape)
    y = fn(x, *args)
    gx = backward(g, y if reads_output else x, *args)
    assert gx.shape == x.shape and gx.dtype == np.float64
    assert_grad(gx, lambda v: fn(v, *args), x, g)
    assert backward(g.astype(np.float32), (y if reads_output else x).astype(np.float32),
                    *args).dtype == np.float32


@pytest.mark.parametrize("name", [n for n in CASES if n not in ("softmax", "log_softmax")])
def test_out_writes_in_place(name):
    fn, _, args, _, _ = CASES[name]
    x = _smooth_input((3, 4)).astype(np.float32)
    expected = fn(x, *args)
    assert fn(x, *args, out=x) is x
    np.testing.assert_array_equal(x, expected)
    with pytest.raises(ValueError, match=rf"{name.replace('_tanh', '')}: out must be a float32 "
                                         r"array of shape \(3, 4\), but got float64 array"):
        fn(x, *args, out=np.zeros((3, 4)))


def test_gradients_at_the_kinks_are_pytorchs():
    x = np.array([-3.0, 0.0, 3.0, 6.0])
    g = np.ones(4)
    np.testing.assert_array_equal(fc.relu6_backward(g, x), [0, 0, 1, 0])
    np.testing.assert_array_equal(fc.leaky_relu_backward(g, x, 0.1), [0.1, 0.1, 1, 1])
    np.testing.assert_array_equal(fc.hardswish_backward(g, x), [0, 0.5, 1, 1])
    np.testing.assert_array_equal(fc.hardsigmoid_backward(g, x), [0, 1 / 6, 0, 0])
    np.testing.assert_allclose(fc.elu_backward(g, fc.elu(x, 2.0), 2.0),
                               [2 * math.exp(-3), 2, 1, 1], rtol=1e-15)


def test_prelu_reference_and_gradients():
    rng = np.random.default_rng(0)
    x = _smooth_input((2, 3, 4, 3))
    for weight in (np.array([0.25]), np.array([0.1, -0.2, 0.3])):
        y = fc.prelu(x, weight)
        np.testing.assert_array_equal(y, np.where(x > 0, x, x * weight))
        g = rng.standard_normal(x.shape)
        gx, gw = fc.prelu_backward(g, x, weight)
        assert gw.shape == weight.shape
        assert_grad(gx, lambda v: fc.prelu(v, weight), x, g)
        assert_grad(gw, lambda w: fc.prelu(x, w), weight.copy(), g)
    with pytest.raises(ValueError, match=r"weight has 3 slopes, one per channel, so the input's "
                                         r"last dimension must be 3"):
        fc.prelu(np.zeros((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match="1-D array of 1 or C slopes"):
        fc.prelu(np.zeros((2, 4)), np.ones((1, 4)))


def test_argument_errors():
    with pytest.raises(ValueError, match=r"softmax: dim must be in \[-2, 1\] for a 2-D input, but "
                                         r"got 2"):
        fc.softmax(np.zeros((2, 3)), dim=2)
    with pytest.raises(ValueError, match="approximate must be one of"):
        fc.gelu(np.zeros(3), approximate="erf")
    with pytest.raises(ValueError, match="needs alpha >= 0"):
        fc.elu_backward(np.zeros(3), np.zeros(3), alpha=-1.0)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(3,\) \(the shape of "
                                         r"the input\), but got \(4,\)"):
        fc.silu_backward(np.zeros(4), np.zeros(3))
    with pytest.raises(TypeError, match="real numbers"):
        fc.tanh(np.array(["a"]))
    with pytest.raises(TypeError, match="negative_slope must be a real number"):
        L.LeakyReLU("0.1")


# ----------------------------------------------------------------------------------------------
# layers

LAYERS = {
    "ReLU6": (lambda inplace: L.ReLU6(inplace), "relu6"),
    "LeakyReLU": (lambda inplace: L.LeakyReLU(0.2, inplace), "leaky_relu"),
    "ELU": (lambda inplace: L.ELU(1.5, inplace), "elu"),
    "SiLU": (lambda inplace: L.SiLU(inplace), "silu"),
    "Hardswish": (lambda inplace: L.Hardswish(inplace), "hardswish"),
    "Hardsigmoid": (lambda inplace: L.Hardsigmoid(inplace), "hardsigmoid"),
}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("inplace", [False, True])
def test_layer_backward_right_in_place_or_not(name, inplace):
    make, fn_name = LAYERS[name]
    fn, backward, args, _, reads_output = CASES[fn_name]
    x = _smooth_input((2, 3, 4, 3))
    g = np.random.default_rng(2).standard_normal(x.shape)
    layer = make(inplace)
    given = x.copy()
    y = layer(given)
    assert (y is given) == inplace
    np.testing.assert_array_equal(y, fn(x, *args))
    np.testing.assert_array_equal(layer.backward(g), backward(g, y if reads_output else x, *args))
    assert_grad(backward(g, y if reads_output else x, *args), lambda v: fn(v, *args), x, g,
                coords=8, rng=0)
    with pytest.raises(RuntimeError, match="no forward pass"):
        layer.backward(g)


def test_leaky_relu_in_place_with_a_negative_slope_keeps_the_input():
    x = np.array([-2.0, 1.0, 3.0])
    layer = L.LeakyReLU(-0.5, inplace=True)
    y = layer(x)  # [1, 1, 3]: the output's sign no longer tells the branch
    np.testing.assert_array_equal(y, [1.0, 1.0, 3.0])
    np.testing.assert_array_equal(layer.backward(np.ones(3)), [-0.5, 1, 1])


def test_in_place_needs_a_writeable_float_array():
    with pytest.raises(TypeError, match=r"SiLU\(inplace=True\): inplace=True needs a writeable "
                                        r"float32 or float64 array"):
        L.SiLU(inplace=True)(np.arange(3))
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(TypeError, match="read-only float64"):
        L.ELU(inplace=True)(frozen)


@pytest.mark.parametrize("layer,fn_name", [(L.Sigmoid(), "sigmoid"), (L.Tanh(), "tanh"),
                                           (L.GELU(), "gelu"), (L.GELU("tanh"), "gelu_tanh"),
                                           (L.Softmax(1), "softmax"),
                                           (L.LogSoftmax(), "log_softmax")])
def test_other_layers_match_the_functions(layer, fn_name):
    fn, backward, args, _, reads_output = CASES[fn_name]
    x = _smooth_input((2, 4, 3))
    g = np.random.default_rng(3).standard_normal(x.shape)
    y = layer(x)
    np.testing.assert_array_equal(y, fn(x, *args))
    np.testing.assert_array_equal(layer.backward(g), backward(g, y if reads_output else x, *args))


def test_a_layer_keeping_its_output_is_not_overwritten_by_the_relu_after_it():
    """Sequential runs a ReLU in place only on outputs that no layer keeps."""
    x = np.linspace(-3, 3, 12).reshape(2, 6)
    model = L.Sequential(L.Tanh(), L.ReLU())
    y = model(x)
    np.testing.assert_array_equal(y, np.maximum(np.tanh(x), 0))
    gx = model.backward(np.ones_like(x))
    np.testing.assert_allclose(gx, np.where(x > 0, 1 - np.tanh(x) ** 2, 0))


def test_prelu_layer():
    layer = L.PReLU(3, init=0.1, dtype=np.float64)
    np.testing.assert_array_equal(layer.weight, [0.1] * 3)
    assert list(layer.state_dict()) == ["weight"]
    x = _smooth_input((2, 2, 2, 3))
    g = np.random.default_rng(4).standard_normal(x.shape)
    layer(x)
    gx = layer.backward(g)
    layer(x)
    layer.backward(g)  # parameter gradients accumulate
    _, gw = fc.prelu_backward(g, x, layer.weight)
    np.testing.assert_allclose(layer.grads["weight"], 2 * gw)
    np.testing.assert_array_equal(gx, fc.prelu_backward(g, x, layer.weight)[0])
    with pytest.raises(ValueError, match=r"PReLU\(num_parameters=3, dtype=float64\) expected "
                                         r"input \(\.\.\., C\) \[channels last\] with 3 channels"):
        layer(np.zeros((2, 4)))
    assert L.PReLU().weight.dtype == np.float32


def test_reprs():
    assert [repr(m) for m in (L.ReLU6(), L.LeakyReLU(), L.ELU(inplace=True), L.SiLU(True),
                              L.Hardswish(True), L.Sigmoid(), L.GELU("tanh"), L.Softmax(),
                              L.LogSoftmax(1), L.PReLU(), L.ReLU(inplace=True), L.ReLU())] == [
        "ReLU6()", "LeakyReLU(negative_slope=0.01)", "ELU(alpha=1.0, inplace=True)",
        "SiLU(inplace=True)", "Hardswish()", "Sigmoid()", "GELU(approximate='tanh')",
        "Softmax(dim=-1)", "LogSoftmax(dim=1)", "PReLU(num_parameters=1)", "ReLU(inplace=True)",
        "ReLU()"]


# ----------------------------------------------------------------------------------------------
# PyTorch

TORCH_FUNCTIONS = {
    "relu6": lambda F, t: F.relu6(t), "leaky_relu": lambda F, t: F.leaky_relu(t, 0.2),
    "elu": lambda F, t: F.elu(t, 1.5), "silu": lambda F, t: F.silu(t),
    "hardswish": lambda F, t: F.hardswish(t), "hardsigmoid": lambda F, t: F.hardsigmoid(t),
    "sigmoid": lambda F, t: F.sigmoid(t), "tanh": lambda F, t: F.tanh(t),
    "gelu": lambda F, t: F.gelu(t), "gelu_tanh": lambda F, t: F.gelu(t, approximate="tanh"),
    "softmax": lambda F, t: F.softmax(t, 1), "log_softmax": lambda F, t: F.log_softmax(t, -1),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_including_the_kinks(name, dtype):
    torch = pytest.importorskip("torch")
    fn, backward, args, _, reads_output = CASES[name]
    x = np.random.default_rng(5).uniform(-7, 7, (2, 3, 8)).astype(dtype)
    x[0, 0] = [-3, 0, 3, 6, -3, 0, 3, 6]
    g = np.random.default_rng(6).standard_normal(x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = TORCH_FUNCTIONS[name](torch.nn.functional, xt)
    yt.backward(torch.tensor(g))
    y = fn(x, *args)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    if name == "hardsigmoid":  # PyTorch multiplies by 1/6 rounded to float32 even in float64
        tol = max(tol, 1e-7)
    np.testing.assert_allclose(backward(g, y if reads_output else x, *args), xt.grad.numpy(),
                               rtol=tol, atol=tol)


def test_prelu_and_reprs_match_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 5))
    g = np.random.default_rng(8).standard_normal(x.shape)
    module = nn.PReLU(5, init=0.3).double()
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    module(xt).backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    layer = L.PReLU(5, init=0.3, dtype=np.float64)
    np.testing.assert_allclose(layer(x), module(xt).detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(layer.backward(g), xt.grad.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_allclose(layer.grads["weight"], module.weight.grad.numpy())
    for ours, theirs in [(L.ReLU6(True), nn.ReLU6(True)), (L.LeakyReLU(0.2), nn.LeakyReLU(0.2)),
                         (L.ELU(), nn.ELU()), (L.SiLU(), nn.SiLU()),
                         (L.Hardswish(True), nn.Hardswish(True)),
                         (L.Hardsigmoid(), nn.Hardsigmoid()), (L.Tanh(), nn.Tanh()),
                         (L.GELU(), nn.GELU()), (L.Softmax(), nn.Softmax(dim=-1)),
                         (L.PReLU(), nn.PReLU()), (L.ReLU(inplace=True), nn.ReLU(True))]:
        assert repr(ours) == repr(theirs)
