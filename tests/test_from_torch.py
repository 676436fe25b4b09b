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


def test_avg_pool_divisor_override_converts():
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                         divisor_override=5)).double()
    x = np.random.default_rng(0).standard_normal((2, 7, 6, 2))
    model = _compare(net, x, 1e-10)
    assert model[1].divisor_override == 5


def test_unsupported_modules_are_clear_errors():
    with pytest.raises(TypeError, match=r"cannot convert Softplus \(module '1'\)"):
        L.from_torch(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Softplus()))
    with pytest.raises(ValueError, match="return_indices"):
        L.from_torch(nn.MaxPool2d(2, return_indices=True))
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


# -- models beyond Sequential (traced with torch.fx) ------------------------------------------

F = torch.nn.functional


class _BasicBlock(nn.Module):
    """torchvision's BasicBlock: one ReLU module called twice, a downsample shortcut."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class _ResNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(_BasicBlock(4, 4, 1), _BasicBlock(4, 6, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV2's block, with MobileNetV3's squeeze-and-excitation and Hardswish."""

    def __init__(self, c, expand, gate):
        super().__init__()
        self.gate = gate
        h = c * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.Hardswish())
        self.fc1 = nn.Conv2d(h, 4, 1)
        self.fc2 = nn.Conv2d(4, h, 1)
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.conv(x)
        scale = self.gate(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return x + self.project(y * scale)


class _MobileNet(nn.Module):
    # PyTorch's hardsigmoid backward multiplies by a float32 1/6 even in float64 (2e-8
    # relative), so the float64 comparison gates with torch.sigmoid
    def __init__(self, gate=F.hardsigmoid):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(inplace=True),
            _InvertedResidual(4, 2, gate), _InvertedResidual(4, 3, gate))
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 3))

    def forward(self, x):
        x = self.features(x)
        x = x.mean((2, 3))
        return self.classifier(x)


class _UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4 + 6, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        mid = self.mid(self.pool(skip))
        y = self.dec(torch.cat([self.up(mid), skip], dim=1))
        wide = F.interpolate(mid, scale_factor=2, mode="nearest")
        return self.head(torch.cat((y, wide), 1)).sigmoid()


class _DenseBlock(nn.Module):
    def __init__(self, c=3, growth=2, layers=3):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(),
                          nn.Conv2d(c + i * growth, growth, 3, padding=1, bias=False))
            for i in range(layers))
        self.fc = nn.Linear((c + layers * growth) * 2 * 2, 4)

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        x = F.avg_pool2d(x, 2)
        return self.fc(x.view(x.size(0), -1))


def _torch_grads_as_fastconv(net):
    """{name: gradient} of every PyTorch parameter, in fastconv's layouts."""
    grads = {name: p.grad for name, p in net.named_parameters()}
    return L.state_dict_from_torch(net, grads)


def _compare_model(net, x, rtol):
    """Outputs (train and eval mode), input gradient, every parameter gradient and the
    running statistics after one training step, against PyTorch."""
    for module in net.modules():  # non-trivial running statistics and affine parameters
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-1, 1)
    net.eval()
    model = L.from_torch(net)
    assert not model.training
    y = model(x)
    expected = net(_nchw(x)).detach().numpy()
    expected = expected.transpose(0, 2, 3, 1) if expected.ndim == 4 else expected
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    net.train()
    model.train()
    _compare(net, x, rtol)  # a fresh conversion in training mode
    model.zero_grad()
    y = model(x)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    model.backward(g)
    torch_grads = _torch_grads_as_fastconv(net)  # from _compare's backward (same g)
    ours = {name: grad for name, _, grad in model.parameters()}
    assert ours.keys() == torch_grads.keys()
    for name, grad in ours.items():
        scale = np.abs(torch_grads[name]).max()
        np.testing.assert_allclose(grad, torch_grads[name], rtol=rtol, atol=rtol * scale,
                                   err_msg=name)
    # one training forward each: the running statistics agree
    state = model.state_dict()
    assert sorted(state) == sorted(net.state_dict())
    for name, value in L.state_dict_from_torch(net).items():
        np.testing.assert_allclose(state[name], value, rtol=rtol, atol=rtol, err_msg=name)
    return model


@pytest.mark.parametrize("make, shape", [
    (_ResNet, (2, 8, 8, 3)), (lambda: _MobileNet(torch.sigmoid), (2, 8, 8, 3)),
    (_UNet, (2, 6, 4, 2)), (_DenseBlock, (3, 4, 4, 3))])
def test_graph_models_match_pytorch_float64(make, shape):
    torch.manual_seed(0)
    net = make().double()
    x = np.random.default_rng(0).standard_normal(shape)
    model = _compare_model(net, x, 1e-10)
    assert isinstance(model, L.Graph)


def test_mobilenet_v3_style_float32():
    torch.manual_seed(4)
    x = np.random.default_rng(6).standard_normal((2, 8, 8, 3)).astype(np.float32)
    model = _compare_model(_MobileNet(), x, 1e-4)
    assert isinstance(model["features.3.conv.5"], L.Hardswish)  # fx inlines the Sequentials
    assert any(isinstance(layer, L.Hardsigmoid) for _, layer, _ in model.nodes)


def test_resnet_float32_and_its_structure():
    torch.manual_seed(1)
    net = _ResNet()
    x = np.random.default_rng(5).standard_normal((2, 8, 8, 3)).astype(np.float32)
    model = _compare_model(net, x, 1e-4)
    assert model["layer1.0.conv1"].weight.dtype == np.float32
    assert "layer1.1.downsample.0.weight" in model.state_dict()
    assert "bn1.num_batches_tracked" in model.state_dict()
    # self.relu, called twice per block, is one node per call
    assert {"layer1.0.relu", "layer1_0_relu_1"} <= {name for name, _, _ in model.nodes}


def test_state_dict_from_torch_round_trips_into_a_fresh_model():
    torch.manual_seed(2)
    net = _ResNet().double()
    model = L.from_torch(net)
    torch.manual_seed(3)
    other = _ResNet().double()
    model.load_state_dict(L.state_dict_from_torch(other, other.state_dict()))
    net.load_state_dict(other.state_dict())
    x = np.random.default_rng(0).standard_normal((1, 6, 6, 3))
    np.testing.assert_allclose(model.eval()(x), net.eval()(_nchw(x)).detach().numpy(),
                               rtol=1e-12)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, L.state_dict_from_torch(other)[name])


def test_unsupported_ops_name_the_op_and_its_place():
    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 1)

        def forward(self, x):
            return self.conv(x)[:, :4]

    with pytest.raises(TypeError, match=r"cannot convert operator.getitem.*fx node 'getitem'"):
        L.from_torch(Sliced())

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(TypeError, match=r"module 'conv' \(Conv2d\) is called twice"):
        L.from_torch(Shared())

    class Floored(nn.Module):
        def forward(self, x):
            return torch.div(torch.relu(x), 2, rounding_mode="floor")

    with pytest.raises(ValueError, match=r"torch.div: rounding_mode='floor'.*fx node 'div'"):
        L.from_torch(Floored())

    class Circular(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 1), mode="circular")

    with pytest.raises(ValueError, match=r"padding mode 'circular' is not supported.*'pad'"):
        L.from_torch(Circular())

    class PadFlat(nn.Module):
        def forward(self, x):
            return F.pad(torch.flatten(x, 1), (1, 1))

    with pytest.raises(ValueError, match=r"only a 4-D \(N, C, H, W\) feature map pads"):
        L.from_torch(PadFlat())

    class BadCat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return torch.cat([self.conv(x), x], dim=1).view(-1, 3)

    with pytest.raises(TypeError, match=r"x.view\(x.size\(0\), -1\).*fx node 'view'"):
        L.from_torch(BadCat())
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        L.from_torch(np.zeros(3))


class _Functional(nn.Module):
    """The functional calls from_torch maps, with NCHW dims (softmax, cat) to move."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.prelu = nn.PReLU(4)
        self.fc = nn.Linear(4 * 2 * 2 + 4, 5)

    def forward(self, x):
        y = self.prelu(self.conv(x))
        a = F.gelu(F.max_pool2d(y, 2), approximate="tanh") + F.silu(F.avg_pool2d(y, 2))
        b = torch.mul(F.leaky_relu(a, 0.2), torch.tanh(F.elu(a))).relu()
        wide = F.interpolate(a, size=(4, 4), mode="bilinear", align_corners=False)
        c = F.softmax(F.relu6(b), dim=1) * F.adaptive_max_pool2d(wide, 2)
        flat = c.reshape(c.shape[0], -1)
        pooled = F.dropout(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1), 0.3, training=False)
        return F.log_softmax(self.fc(torch.cat([flat, pooled], dim=1)), dim=1)


def test_functional_calls_match_pytorch():
    torch.manual_seed(5)
    x = np.random.default_rng(7).standard_normal((2, 4, 4, 3))
    model = _compare_model(_Functional().double(), x, 1e-10)
    assert isinstance(model["softmax"], L.Softmax) and model["softmax"].dim == 3
    assert model["flatten"].channels_first


class _Hardswish(nn.Module):
    """A hard swish written out, x * relu6(x + 3) / 6, and the other number operands."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        h = y * F.relu6(y + 3) / 6
        z = (1 - h) + 3 * y - (y - 1) * 0.5 + 2 / (3 + torch.sigmoid(y)) + 2 - (-y)
        return self.fc(z.mean((2, 3))) / 4


def test_number_operands_match_pytorch():
    torch.manual_seed(2)
    x = np.random.default_rng(3).standard_normal((2, 5, 4, 3))
    model = _compare_model(_Hardswish().double(), x, 1e-10)
    assert type(model["sub"]).__name__ == "Constant" and model["sub"].constant_first


def test_number_operands_keep_float32():
    torch.manual_seed(2)
    net = _Hardswish().eval()
    model = L.from_torch(net)
    x = np.random.default_rng(4).standard_normal((1, 3, 3, 3)).astype(np.float32)
    y = model(x)
    assert y.dtype == np.float32  # a Python number does not promote to float64
    np.testing.assert_allclose(y, net(_nchw(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


class _TensorOps(nn.Module):
    """tensor - tensor, tensor / tensor with broadcasting both ways, torch.sub / torch.div,
    torch.add(alpha=...) and an in-place -=."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        g = torch.sigmoid(self.gate(F.adaptive_avg_pool2d(y, 1))) + 0.5  # (N, C, 1, 1)
        a = torch.sub(y, g) / g - g / (y * y + 1)
        b = torch.div(a, 2 + y.sigmoid()) + torch.add(a, y, alpha=-0.5)
        b -= torch.sub(g, b, alpha=2)
        return b


def test_tensor_sub_and_div_match_pytorch():
    torch.manual_seed(4)
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 3))
    model = _compare_model(_TensorOps().double(), x, 1e-10)
    assert type(model["sub"]).__name__ == "Binary" and model["sub"].op == "sub"


class _Padded(nn.Module):
    """F.pad in every mode it converts, and the padding modules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.reflect = nn.ReflectionPad2d((1, 0, 2, 1))
        self.conv2 = nn.Conv2d(6, 2, 3)

    def forward(self, x):
        y = self.conv(F.pad(x, (1, 2, 0, 1), mode="replicate"))
        y = F.pad(y, (1, 1, 1, 1), mode="reflect") + F.pad(y, [1, 1, 1, 1], value=0.25)
        y = self.conv2(self.reflect(F.pad(y, (0, 0, 0, 0, 1, 1))))  # two zero channels
        return nn.functional.pad(y, (-1, 1))  # a negative pad crops


def test_pads_match_pytorch():
    torch.manual_seed(6)
    x = np.random.default_rng(7).standard_normal((2, 4, 5, 3))
    model = _compare_model(_Padded().double(), x, 1e-10)
    assert model["pad"].mode == "edge"
    assert model["pad"].pads == ((0, 0), (0, 1), (1, 2), (0, 0))
    assert model["pad_2"].value == 0.25


@pytest.mark.parametrize("module, mode", [
    (nn.ZeroPad2d((1, 2, 0, 3)), "constant"),
    (nn.ConstantPad2d(1, -2.0), "constant"),
    (nn.ReplicationPad2d(2), "edge"),
])
def test_padding_modules_match_pytorch(module, mode):
    net = nn.Sequential(nn.Conv2d(2, 3, 1), module).double()
    x = np.random.default_rng(8).standard_normal((1, 3, 4, 2))
    model = _compare(net, x, 1e-12)
    assert model[1].mode == mode
