"""fastconv.layers.DepthwiseConv2d and SeparableConv2d: forward against plain-NumPy
convolutions, gradients by finite differences, parameters, state dicts, repr, errors."""
import math

import numpy as np
import pytest

from fastconv import layers as L
import reference  # tests/reference.py
from _helpers import ALGORITHMS, DTYPES, assert_close, pair, resolve_padding

F64 = dict(dtype=np.float64)

# (in_channels, out_channels, kernel_size, keyword arguments, input shape)
CASES = [
    (3, 5, 3, dict(), (2, 7, 6, 3)),
    (3, 4, 3, dict(depth_multiplier=2, padding=1), (2, 6, 6, 3)),
    (2, 6, (3, 2), dict(depth_multiplier=3, stride=2, padding="same"), (1, 7, 8, 2)),
    (4, 3, 3, dict(dilation=2, padding=2, padding_mode="reflect", bias=False), (2, 8, 7, 4)),
    (1, 2, 5, dict(stride=(1, 2), padding=((2, 1), (0, 3)), padding_mode="circular"),
     (3, 9, 9, 1)),
    (5, 5, 1, dict(depth_multiplier=2), (2, 4, 4, 5)),
]


def _ref_args(layer, x_shape):
    """The explicit geometry tests/reference.py takes, resolved from API.md's formulas."""
    stride, dilation = pair(layer.stride), pair(layer.dilation)
    pads = resolve_padding(layer.padding, layer.kernel_size, stride, dilation, x_shape[1:3])
    return dict(stride=stride, pads=pads, dilation=dilation, mode=layer.padding_mode)


def _data(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


# ----------------------------------------------------------------------------------------------
# forward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_separable_forward_is_depthwise_then_pointwise(case, algorithm, dtype):
    cin, cout, k, kwargs, shape = CASES[case]
    layer = L.SeparableConv2d(cin, cout, k, dtype=dtype, algorithm=algorithm, rng=case,
                              **kwargs)
    x = _data(shape, dtype, seed=case)
    y = layer(x)
    dw, pw = layer.depthwise.weight, layer.pointwise.weight
    h = reference.conv2d(x, dw, groups=cin, **_ref_args(layer, shape))
    expected = reference.conv2d(h, pw, layer.pointwise.bias)
    kh, kw = layer.kernel_size
    assert_close(y, expected, dtype, kh * kw * dw.shape[3], f"case {case}")
    # the depthwise layer alone is the first step, with its bias
    dlayer = L.DepthwiseConv2d(cin, k, algorithm=algorithm, dtype=dtype, rng=case,
                               **{key: v for key, v in kwargs.items() if key != "bias"})
    expected = reference.conv2d(x, dlayer.weight, dlayer.bias, groups=cin,
                                **_ref_args(dlayer, shape))
    assert_close(dlayer(x), expected, dtype, kh * kw, f"depthwise case {case}")


def test_depthwise_output_channels_follow_keras_layout():
    """Output channel c * M + m is input channel c filtered by Keras' kernel[:, :, c, m]."""
    c, m, k = 3, 2, 3
    layer = L.DepthwiseConv2d(c, k, depth_multiplier=m, **F64, rng=0)
    keras_kernel = layer.weight.reshape(k, k, c, m)  # the documented correspondence
    x = _data((2, 5, 6, c), seed=1)
    y = layer(x)
    assert y.shape == (2, 3, 4, c * m)
    for ci in range(c):
        for mi in range(m):
            expected = sum(keras_kernel[r, s, ci, mi] * x[:, r:r + 3, s:s + 4, ci]
                           for r in range(k) for s in range(k)) + layer.bias[ci * m + mi]
            np.testing.assert_allclose(y[..., ci * m + mi], expected, rtol=1e-12, atol=1e-12)


def test_unbatched_input_and_dtype_promotion():
    layer = L.SeparableConv2d(2, 3, 3, padding=1, rng=0)
    x8 = np.random.default_rng(0).integers(0, 255, (5, 4, 2), dtype=np.uint8)
    y = layer(x8)
    assert y.shape == (5, 4, 3) and y.dtype == np.float32
    expected = layer(x8[None].astype(np.float32))[0]
    np.testing.assert_array_equal(y, expected)
    gx = layer.backward(np.ones((1, 5, 4, 3), np.float32))
    assert gx.shape == (1, 5, 4, 2)


def test_matches_pytorch_depthwise_and_pointwise_convs():
    torch = pytest.importorskip("torch")
    layer = L.SeparableConv2d(3, 4, 3, depth_multiplier=2, stride=2, padding=1, **F64, rng=0)
    depthwise = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=False).double()
    pointwise = torch.nn.Conv2d(6, 4, 1).double()
    with torch.no_grad():  # fastconv's HWIO weights in PyTorch's OIHW layout
        depthwise.weight.copy_(torch.from_numpy(layer.depthwise.weight.transpose(3, 2, 0, 1)))
        pointwise.weight.copy_(torch.from_numpy(layer.pointwise.weight.transpose(3, 2, 0, 1)))
        pointwise.bias.copy_(torch.from_numpy(layer.pointwise.bias))
    x = _data((2, 7, 6, 3), seed=2)
    expected = pointwise(depthwise(torch.from_numpy(x).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(layer(x), expected.detach().permute(0, 2, 3, 1).numpy(),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# backward

def _check_gradients(layer, x, seed=0, coords=8, eps=1e-6):
    """layer.backward against central differences of <layer(x), g> on a sample of the
    coordinates of the input and of every parameter (float64)."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(layer(x).shape)
    layer.zero_grad()
    gx = layer.backward(g)
    assert gx.shape == x.shape
    checked = [("input", x, gx)] + [(n, v, gr.copy()) for n, v, gr in layer.parameters()]
    for name, array, grad in checked:
        for flat in rng.choice(array.size, min(coords, array.size), replace=False):
            i = np.unravel_index(flat, array.shape)
            old = array[i]
            array[i] = old + eps
            up = np.sum(layer(x) * g)
            array[i] = old - eps
            down = np.sum(layer(x) * g)
            array[i] = old
            numeric = (up - down) / (2 * eps)
            assert abs(grad[i] - numeric) <= 1e-6 * (1 + abs(numeric)), (name, i, grad[i],
                                                                         numeric)
    return [name for name, _, _ in checked]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_separable_backward_by_finite_differences(case):
    cin, cout, k, kwargs, shape = CASES[case]
    layer = L.SeparableConv2d(cin, cout, k, **F64, rng=case, **kwargs)
    names = _check_gradients(layer, _data(shape, seed=case), seed=case)
    assert names[:3] == ["input", "depthwise.weight", "pointwise.weight"]
    assert ("pointwise.bias" in names) == kwargs.get("bias", True)


@pytest.mark.parametrize("kwargs", [dict(), dict(depth_multiplier=3, stride=2, padding=1),
                                    dict(padding="same", padding_mode="symmetric",
                                         dilation=(2, 1), bias=False)])
def test_depthwise_backward_by_finite_differences(kwargs):
    layer = L.DepthwiseConv2d(3, 3, **F64, rng=1, **kwargs)
    names = _check_gradients(layer, _data((2, 6, 7, 3), seed=3))
    assert ("bias" in names) == kwargs.get("bias", True)


def test_backward_equals_the_composed_reference_gradients():
    layer = L.SeparableConv2d(2, 3, 3, depth_multiplier=2, padding=1, **F64, rng=0)
    x = _data((2, 5, 4, 2), seed=4)
    g = _data((2, 5, 4, 3), seed=5)
    layer(x)
    gx = layer.backward(g)
    args = dict(pads=((1, 1), (1, 1)), groups=2)
    h = reference.conv2d(x, layer.depthwise.weight, **args)
    gh, gpw, gb = reference.conv2d_backward(g, h, layer.pointwise.weight)[:3]
    gx_ref, gdw = reference.conv2d_backward(gh, x, layer.depthwise.weight, **args)[:2]
    grads = {n: gr for n, _, gr in layer.parameters()}
    for actual, expected in [(gx, gx_ref), (grads["depthwise.weight"], gdw),
                             (grads["pointwise.weight"], gpw), (grads["pointwise.bias"], gb)]:
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
    # gradients accumulate (PyTorch's rule); zero_grad clears them in place
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(grads["pointwise.weight"], 2 * gpw, rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    assert not any(gr.any() for _, _, gr in layer.parameters())


def test_in_a_sequential_with_relu_and_eval_mode():
    model = L.Sequential(L.SeparableConv2d(2, 4, 3, padding=1, **F64, rng=0), L.ReLU(),
                         L.DepthwiseConv2d(4, 3, **F64, rng=1))
    x = _data((1, 6, 6, 2), seed=6)
    sep, dw = model[0], model[2]
    h = np.maximum(reference.conv2d(
        reference.conv2d(x, sep.depthwise.weight, pads=((1, 1), (1, 1)), groups=2),
        sep.pointwise.weight, sep.pointwise.bias), 0)
    expected = reference.conv2d(h, dw.weight, dw.bias, groups=4)
    y = model(x)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    assert [n for n, _, _ in model.parameters()] == [
        "0.depthwise.weight", "0.pointwise.weight", "0.pointwise.bias", "2.weight", "2.bias"]
    model.eval()
    assert not sep.depthwise.training and not sep.pointwise.training
    np.testing.assert_array_equal(model(x), y)
    assert sep._saved is None and sep.depthwise._saved is None and sep.pointwise._saved is None
    with pytest.raises(RuntimeError, match="SeparableConv2d.backward.*eval mode"):
        sep.backward(np.ones((1, 6, 6, 4)))
    model.train()
    model(x)
    assert model.backward(np.ones_like(y)).shape == x.shape


# ----------------------------------------------------------------------------------------------
# parameters, initialisation, state dict, repr

def test_parameters_and_initialisation_like_pytorch():
    layer = L.SeparableConv2d(16, 32, 5, depth_multiplier=4, rng=0)
    shapes = {n: (v.shape, g.shape, v.dtype) for n, v, g in layer.parameters()}
    assert shapes == {"depthwise.weight": ((5, 5, 1, 64), (5, 5, 1, 64), np.float32),
                      "pointwise.weight": ((1, 1, 64, 32), (1, 1, 64, 32), np.float32),
                      "pointwise.bias": ((32,), (32,), np.float32)}
    assert layer.depthwise.bias is None
    # Kaiming-uniform, a=sqrt(5): U(+-1/sqrt(fan_in)), fan_in = k*k, then C*M
    for value, fan_in in [(layer.depthwise.weight, 25), (layer.pointwise.weight, 64),
                          (layer.pointwise.bias, 64)]:
        bound = 1 / math.sqrt(fan_in)
        assert bound * 0.9 < np.abs(value).max() <= bound
    dw = L.DepthwiseConv2d(8, 3, depth_multiplier=2, rng=0)
    assert dw.weight.shape == (3, 3, 1, 16) and dw.bias.shape == (16,)
    assert 0.9 / 3 < np.abs(dw.weight).max() <= 1 / 3
    # seedable: the same seed or Generator gives the same weights, another seed others
    again = L.SeparableConv2d(16, 32, 5, depth_multiplier=4, rng=np.random.default_rng(0))
    for (_, a, _), (_, b, _) in zip(layer.parameters(), again.parameters()):
        np.testing.assert_array_equal(a, b)
    other = L.SeparableConv2d(16, 32, 5, depth_multiplier=4, rng=1)
    assert not np.array_equal(other.depthwise.weight, layer.depthwise.weight)


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_round_trip_is_exact(dtype):
    a = L.SeparableConv2d(3, 4, 3, depth_multiplier=2, padding=1, dtype=dtype, rng=0)
    b = L.SeparableConv2d(3, 4, 3, depth_multiplier=2, padding=1, dtype=dtype, rng=7)
    state = a.state_dict()
    assert set(state) == {"depthwise.weight", "pointwise.weight", "pointwise.bias"}
    refs = [v for _, v, _ in b.parameters()]
    b.load_state_dict(state)
    for (_, va, _), (_, vb, _), ref in zip(a.parameters(), b.parameters(), refs):
        assert vb is ref and vb.dtype == np.dtype(dtype)  # loaded in place
        np.testing.assert_array_equal(va, vb)
    x = _data((2, 5, 5, 3), dtype, seed=8)
    np.testing.assert_array_equal(a(x), b(x))
    state["depthwise.weight"][...] = 0  # a copy: the layer is unchanged
    assert a.depthwise.weight.any()
    d = L.DepthwiseConv2d(3, 3, depth_multiplier=2, dtype=dtype, rng=0)
    e = L.DepthwiseConv2d(3, 3, depth_multiplier=2, dtype=dtype, rng=1)
    assert set(d.state_dict()) == {"weight", "bias"}
    e.load_state_dict(d.state_dict())
    np.testing.assert_array_equal(d(x), e(x))


def test_load_state_dict_errors():
    layer = L.SeparableConv2d(3, 4, 3, bias=False, rng=0)
    good = layer.state_dict()
    assert set(good) == {"depthwise.weight", "pointwise.weight"}
    with pytest.raises(ValueError, match=r"missing keys \['pointwise.weight'\]"):
        layer.load_state_dict({"depthwise.weight": good["depthwise.weight"]})
    with pytest.raises(ValueError, match=r"unexpected keys \['pointwise.bias'\]"):
        layer.load_state_dict({**good, "pointwise.bias": np.zeros(4)})
    with pytest.raises(ValueError, match=r"SeparableConv2d.load_state_dict: expected "
                                         r"'depthwise.weight' of shape \(3, 3, 1, 3\)"):
        layer.load_state_dict({**good, "depthwise.weight": np.zeros((3, 3, 3, 1))})


def test_repr():
    assert repr(L.DepthwiseConv2d(3, 3)) == "DepthwiseConv2d(3, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(L.DepthwiseConv2d(8, (3, 5), depth_multiplier=2, stride=2, padding=1,
                                  bias=False, padding_mode="reflect", dtype=np.float64)) == (
        "DepthwiseConv2d(8, kernel_size=(3, 5), depth_multiplier=2, stride=(2, 2), "
        "padding=1, bias=False, padding_mode='reflect', dtype=float64)")
    assert repr(L.SeparableConv2d(3, 8, 3)) == (
        "SeparableConv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))")
    assert repr(L.SeparableConv2d(3, 8, 3, depth_multiplier=2, padding="same", dilation=2,
                                  bias=False, algorithm="direct")) == (
        "SeparableConv2d(3, 8, kernel_size=(3, 3), depth_multiplier=2, stride=(1, 1), "
        "padding='same', dilation=(2, 2), bias=False, algorithm='direct')")


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("make,error,match", [
    (lambda: L.DepthwiseConv2d(3, 3, depth_multiplier=0), ValueError,
     "depth_multiplier must be >= 1, but got 0"),
    (lambda: L.SeparableConv2d(3, 4, 3, depth_multiplier=1.5), TypeError,
     "depth_multiplier must be an int"),
    (lambda: L.DepthwiseConv2d(0, 3), ValueError, "in_channels must be >= 1, but got 0"),
    (lambda: L.SeparableConv2d(3, 0, 3), ValueError, "out_channels must be >= 1, but got 0"),
    (lambda: L.SeparableConv2d(3, 4, 0), ValueError, r"kernel_size\[0\]|kernel_size must"),
    (lambda: L.SeparableConv2d(3, 4, 3, stride=0), ValueError, "stride"),
    (lambda: L.SeparableConv2d(3, 4, 3, padding="full"), ValueError, "padding must be"),
    (lambda: L.DepthwiseConv2d(3, 3, padding_mode="edge"), ValueError, "padding_mode must be"),
    (lambda: L.SeparableConv2d(3, 4, 3, algorithm="fft"), ValueError, "algorithm must be"),
    (lambda: L.SeparableConv2d(3, 4, 3, dtype=np.int32), TypeError, "dtype must be"),
    (lambda: L.SeparableConv2d(3, 4, 3, bias=1), TypeError, "bias must be a bool"),
    (lambda: L.SeparableConv2d(3, 4, 3, rng="seed"), TypeError, "rng must be None"),
    (lambda: L.DepthwiseConv2d(3, 3, groups=3), TypeError, "groups"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("make", [lambda: L.SeparableConv2d(3, 4, 3),
                                  lambda: L.DepthwiseConv2d(3, 3)])
def test_wrong_input(make):
    layer = make()
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"{name}\(3, .*with 3 channels.*got input of shape "
                                         r"\(1, 5, 5, 2\)"):
        layer(np.zeros((1, 5, 5, 2)))
    with pytest.raises(ValueError, match="3-D or 4-D"):
        layer(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="padded input size"):
        layer(np.zeros((1, 2, 2, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        layer(np.zeros((1, 5, 5, 3), complex))


def test_backward_errors_name_the_layer():
    layer = L.SeparableConv2d(2, 3, 3, rng=0)
    with pytest.raises(RuntimeError, match="SeparableConv2d.backward: .*no forward pass"):
        layer.backward(np.zeros((1, 3, 3, 3)))
    y = layer(np.ones((1, 5, 5, 2)))
    with pytest.raises(ValueError, match=r"SeparableConv2d.backward: expected grad_output of "
                                         r"shape \(1, 3, 3, 3\)"):
        layer.backward(np.zeros((1, 3, 3, 2)))
    assert layer.backward(np.zeros(y.shape)).shape == (1, 5, 5, 2)
    with pytest.raises(RuntimeError, match="since the last backward"):
        layer.backward(np.zeros(y.shape))
