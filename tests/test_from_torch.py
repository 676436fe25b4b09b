"""fastconv.layers.from_torch: the converted network computes what the PyTorch one does,
forward and backward (skipped without PyTorch)."""
import numpy as np
import pytest

from fastconv import layers as L

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(autouse=True)
def _torch_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def _torch_grad_as_fastconv(module, param):
    """A PyTorch parameter gradient in fastconv's layout (the converter's permutations)."""
    grad = param.grad.numpy()
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and grad.ndim == 4:
        return grad.transpose(2, 3, 1, 0)
    if isinstance(module, nn.Linear) and grad.ndim == 2:
        return grad.T
    return grad


def _leaves(module):
    return [m for m in module.modules() if not isinstance(m, nn.Sequential)]


def _compare(net, x, rtol, **kwargs):
    """Run both networks forward and backward; compare outputs, input and parameter grads."""
    model = L.from_torch(net, **kwargs)
    xt = _nchw(x).requires_grad_()
    yt = net(xt)
    y = model(x)
    out_nhwc = yt.ndim == 4
    expected = _nhwc(yt) if out_nhwc else yt.detach().numpy()
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    yt.backward(_nchw(g) if out_nhwc else torch.from_numpy(g))
    gx = model.backward(g)
    np.testing.assert_allclose(gx, _nhwc(xt.grad), rtol=rtol,
                               atol=rtol * np.abs(_nhwc(xt.grad)).max())
    return model


def test_lenet_matches_pytorch_outputs_and_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(16 * 3 * 2, 20), nn.ReLU(), nn.Linear(20, 10),
    ).double()
    x = np.random.default_rng(0).standard_normal((4, 14, 12, 3))
    model = _compare(net, x, 1e-11, input_shape=(14, 12, 3))
    assert isinstance(model, L.Sequential) and len(model) == 10
    assert model[0].weight.dtype == np.float64
    # parameter gradients, in fastconv's layouts (the Flatten keeps PyTorch's (C, H, W) order)
    for i, (module, layer) in enumerate(zip(net, model)):
        for name, param in module.named_parameters():
            expected = _torch_grad_as_fastconv(module, param)
            np.testing.assert_allclose(layer.grads[name], expected, rtol=1e-10,
                                       atol=1e-12, err_msg=f"{i}.{name}")


def test_float32_network_with_transposed_convs_and_nesting():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2, padding_mode="reflect"),
        nn.ReLU(),
        nn.Sequential(nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1,
                                         groups=2),
                      nn.ReLU(inplace=True)),
        nn.ConvTranspose2d(6, 3, 2, dilation=2, bias=False),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
    )
    x = np.random.default_rng(2).standard_normal((2, 9, 10, 4)).astype(np.float32)
    model = _compare(net, x, 2e-5)
    assert isinstance(model[2], L.Sequential)
    assert [name for name, _, _ in model.parameters()] == [
        "0.weight", "0.bias", "2.0.weight", "2.0.bias", "3.weight"]
    assert set(model.state_dict()) == set(net.state_dict())
    assert model[0].weight.dtype == np.float32


def test_flatten_of_a_one_by_one_map_needs_no_input_shape():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 5, 4), nn.ReLU(), nn.Flatten(), nn.Linear(5, 3)).double()
    x = np.random.default_rng(3).standard_normal((3, 4, 4, 2))
    _compare(net, x, 1e-11)


def test_flatten_needs_no_input_shape():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 5, 3), nn.Flatten(), nn.Linear(5 * 4 * 3, 3)).double()
    x = np.random.default_rng(4).standard_normal((2, 6, 5, 2))
    model = _compare(net, x, 1e-11)
    np.testing.assert_array_equal(model[2].weight, net[2].weight.detach().numpy().T)


def test_unsupported_modules_are_clear_errors():
    with pytest.raises(TypeError, match=r"cannot convert Softplus \(module '1'\)"):
        L.from_torch(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Softplus()))
    with pytest.raises(ValueError, match="return_indices"):
        L.from_torch(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match="divisor_override"):
        L.from_torch(nn.AvgPool2d(2, divisor_override=3))
    with pytest.raises(TypeError, match="float32 and float64"):
        L.from_torch(nn.Linear(2, 2).half())
    with pytest.raises(ValueError, match="acts on W in PyTorch"):
        L.from_torch(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Linear(4, 2)), input_shape=(4, 4, 1))


def test_single_modules_convert_alone():
    lin = nn.Linear(4, 3)
    layer = L.from_torch(lin)
    assert isinstance(layer, L.Linear)
    np.testing.assert_array_equal(layer.weight, lin.weight.detach().numpy().T)
    np.testing.assert_array_equal(layer.bias, lin.bias.detach().numpy())
    conv = nn.Conv2d(3, 4, (2, 3), stride=(1, 2), padding=(1, 0), bias=False)
    layer = L.from_torch(conv)
    assert layer.bias is None and layer.stride == (1, 2)
    np.testing.assert_array_equal(layer.weight, conv.weight.detach().numpy().transpose(2, 3, 1, 0))
