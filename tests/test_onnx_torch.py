"""Models exported by torch.onnx (the TorchScript exporter) loaded by fastconv.onnx.load and
compared with ONNX Runtime: ResNet-, MobileNetV2/V3- and U-Net-style modules at small widths,
with dynamic batch and image sizes."""
import io
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn
F = torch.nn.functional

import fastconv.onnx as fo  # noqa: E402


class Basic(nn.Module):
    def __init__(self, c, o, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o)
        self.conv2, self.bn2 = nn.Conv2d(o, o, 3, 1, 1, bias=False), nn.BatchNorm2d(o)
        self.down = (nn.Sequential(nn.Conv2d(c, o, 1, stride, bias=False), nn.BatchNorm2d(o))
                     if stride != 1 or c != o else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(Basic(8, 8, 1), Basic(8, 16, 2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1))


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c // 2, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class Inverted(nn.Module):
    def __init__(self, c, o, stride, act, se):
        super().__init__()
        h = 2 * c
        self.body = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), act(),
                                  nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False),
                                  nn.BatchNorm2d(h), act(), SE(h) if se else nn.Identity(),
                                  nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))
        self.residual = stride == 1 and c == o

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNet(nn.Module):  # V2 blocks with ReLU6, V3 blocks with Hardswish and SE
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
            Inverted(8, 8, 1, nn.ReLU6, False), Inverted(8, 12, 2, nn.Hardswish, True),
            Inverted(12, 12, 1, nn.Hardswish, True))
        self.classifier = nn.Sequential(nn.Linear(12, 16), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(16, 5))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return F.softmax(self.classifier(x), dim=1)


class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        def block(c, o):
            return nn.Sequential(nn.Conv2d(c, o, 3, padding=1), nn.BatchNorm2d(o),
                                 nn.LeakyReLU(0.1), nn.Conv2d(o, o, 3, padding=1), nn.SiLU())
        self.enc1, self.enc2, self.mid = block(3, 8), block(8, 16), block(16, 16)
        self.up = nn.ConvTranspose2d(16, 16, 2, 2)
        self.dec2, self.dec1 = block(32, 8), block(16, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.avg_pool2d(e2, 2, ceil_mode=True, count_include_pad=False))
        d2 = self.dec2(torch.cat([self.up(m), e2], 1))
        d1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([d1, e1], 1))
        return torch.sigmoid(self.head(F.interpolate(d1, scale_factor=0.5, mode="nearest")))


def export(module, shape, opset):
    torch.manual_seed(0)
    for m in module.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    module.eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(*shape),), f, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
    return f.getvalue()


@pytest.mark.parametrize("make, opset", [(ResNet, 11), (ResNet, 17), (MobileNet, 13),
                                         (MobileNet, 18), (UNet, 14), (UNet, 20)])
def test_exported_model_matches_onnxruntime(make, opset):
    torch.manual_seed(1)
    data = export(make(), (1, 3, 32, 32), opset)
    net = fo.load(data)
    sess = ort.InferenceSession(data)
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 32, 32), (3, 3, 48, 40)]:  # other batch and image sizes
        x = rng.standard_normal(shape).astype(np.float32)
        expected = sess.run(None, {"x": x})[0]
        got = net(x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_exported_model_fine_tunes():
    torch.manual_seed(2)
    net = fo.load(export(ResNet(), (1, 3, 16, 16), 13)).train()
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = net(x)
    gx = net.backward(np.ones_like(y))
    assert gx.shape == x.shape and np.isfinite(gx).all()
    grads = {name: g for name, _, g in net.parameters()}
    assert "fc.weight" in grads and np.abs(grads["fc.weight"]).sum() > 0
