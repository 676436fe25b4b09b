"""Optional cross-checks against PyTorch: conv2d, its gradients (autograd), conv_transpose2d and
its gradients, with NCHW <-> NHWC activations and weights converted by permute(2, 3, 1, 0)."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastconv  # noqa: E402
from _helpers import ALGORITHMS, DTYPES, case_id, rand  # noqa: E402

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
TORCH_PAD_MODE = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
    """The machine is shared: one torch thread is plenty for these sizes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def hwio(t):
    """OIHW (conv) or IOHW (transposed conv) torch weight -> fastconv's layout."""
    return np.ascontiguousarray(t.detach().permute(2, 3, 1, 0).numpy())


def assert_close(actual, expected, dtype, what):
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: {actual.shape} != {expected.shape}"
    tol = 1e-10 if dtype == np.float64 else 2e-4
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


# torch-layout shapes: x (N, C_in, H, W), weight (C_out, C_in // groups, kh, kw)
CONV_CASES = [
    dict(x=(2, 3, 8, 7), w=(4, 3, 3, 3)),
    dict(x=(2, 4, 9, 8), w=(6, 4, 3, 3), stride=2, padding=1),
    dict(x=(1, 2, 10, 9), w=(3, 2, 2, 3), stride=(3, 2), padding=(1, 0), dilation=(1, 2)),
    dict(x=(2, 4, 9, 9), w=(4, 2, 3, 3), padding=2, dilation=2, groups=2),
    dict(x=(1, 6, 7, 8), w=(6, 1, 3, 3), padding=1, groups=6),  # depthwise
    dict(x=(2, 16, 8, 8), w=(12, 16, 3, 3), padding=1),
    dict(x=(1, 3, 7, 6), w=(2, 3, 4, 4), padding="same"),  # odd total: extra at bottom/right
    dict(x=(1, 3, 8, 7), w=(4, 3, 3, 3), stride=2, padding=((2, 1), (0, 1))),  # via F.pad
    dict(x=(2, 3, 7, 8), w=(2, 3, 3, 3), stride=2, padding=2, padding_mode="reflect"),
    dict(x=(1, 4, 6, 7), w=(4, 2, 3, 2), padding=(1, 2), groups=2, padding_mode="replicate"),
    dict(x=(1, 3, 6, 6), w=(3, 3, 3, 3), dilation=2, padding=2, padding_mode="circular"),
]


def torch_conv(case, x, w, b):
    """torch's conv2d of a case; asymmetric padding and padding modes through F.pad."""
    padding, mode = case.get("padding", 0), case.get("padding_mode", "zeros")
    kw = dict(stride=case.get("stride", 1), dilation=case.get("dilation", 1),
              groups=case.get("groups", 1))
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (top, bottom), (left, right) = padding
        x = F.pad(x, (left, right, top, bottom))
        padding = 0
    elif mode != "zeros":
        ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
        x = F.pad(x, (pw, pw, ph, ph), mode=TORCH_PAD_MODE[mode])
        padding = 0
    with warnings.catch_warnings():  # 'same' with an even kernel warns about a padded copy
        warnings.simplefilter("ignore", UserWarning)
        return F.conv2d(x, w, b, padding=padding, **kw)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_and_its_gradients(case, dtype, algorithm):
    rng = np.random.default_rng(0)
    xt = torch.from_numpy(rand(rng, case["x"], dtype)).requires_grad_()
    wt = torch.from_numpy(rand(rng, case["w"], dtype)).requires_grad_()
    bt = torch.from_numpy(rand(rng, (case["w"][0],), dtype)).requires_grad_()
    yt = torch_conv(case, xt, wt, bt)
    gyt = torch.from_numpy(rand(rng, tuple(yt.shape), dtype))
    yt.backward(gyt)

    x, w, b, gy = nhwc(xt), hwio(wt), bt.detach().numpy(), nhwc(gyt)
    args = {k: v for k, v in case.items() if k not in ("x", "w")}
    y = fastconv.conv2d(x, w, b, **args, algorithm=algorithm)
    assert y.dtype == dtype
    assert_close(y, nhwc(yt), dtype, "conv2d")
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, **args, algorithm=algorithm)
    assert_close(gx, nhwc(xt.grad), dtype, "grad_input")
    assert_close(gw, hwio(wt.grad), dtype, "grad_weight")
    assert_close(gb, bt.grad.numpy(), dtype, "grad_bias")


# torch-layout shapes: x (N, C_in, H, W), weight (C_in, C_out // groups, kh, kw)
TRANSPOSE_CASES = [
    dict(x=(2, 3, 4, 5), w=(3, 2, 3, 3)),
    dict(x=(2, 8, 5, 4), w=(8, 4, 4, 4), stride=2, padding=1),  # DCGAN-style
    dict(x=(1, 4, 4, 4), w=(4, 3, 2, 2), stride=2),  # U-Net-style
    dict(x=(2, 3, 4, 3), w=(3, 5, 3, 3), stride=2, padding=1, output_padding=1),
    dict(x=(1, 2, 3, 4), w=(2, 3, 2, 3), stride=(3, 2), padding=(1, 0),
         output_padding=(2, 1)),
    dict(x=(1, 3, 4, 4), w=(3, 2, 3, 3), dilation=2, padding=1, output_padding=1),
    dict(x=(2, 4, 4, 3), w=(4, 3, 3, 3), stride=2, padding=1, groups=2, output_padding=1),
    dict(x=(1, 6, 5, 4), w=(6, 1, 3, 3), padding=1, groups=6),
    dict(x=(2, 16, 4, 4), w=(16, 12, 3, 3), stride=2, padding=1, output_padding=1),
    dict(x=(2, 3, 4, 4), w=(3, 2, 1, 1), dilation=2, output_padding=1),  # 1x1, op >= stride
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=case_id)
def test_conv_transpose2d_and_its_gradients(case, dtype, algorithm):
    rng = np.random.default_rng(1)
    args = {k: v for k, v in case.items() if k not in ("x", "w")}
    groups = case.get("groups", 1)
    xt = torch.from_numpy(rand(rng, case["x"], dtype)).requires_grad_()
    wt = torch.from_numpy(rand(rng, case["w"], dtype)).requires_grad_()
    bt = torch.from_numpy(rand(rng, (case["w"][1] * groups,), dtype)).requires_grad_()
    yt = F.conv_transpose2d(xt, wt, bt, **args)
    gyt = torch.from_numpy(rand(rng, tuple(yt.shape), dtype))
    yt.backward(gyt)

    x, w, b, gy = nhwc(xt), hwio(wt), bt.detach().numpy(), nhwc(gyt)
    y = fastconv.conv_transpose2d(x, w, b, **args, algorithm=algorithm)
    assert y.dtype == dtype
    assert_close(y, nhwc(yt), dtype, "conv_transpose2d")
    gx, gw, gb = fastconv.conv_transpose2d_backward(gy, x, w, **args, algorithm=algorithm)
    assert_close(gx, nhwc(xt.grad), dtype, "grad_input")
    assert_close(gw, hwio(wt.grad), dtype, "grad_weight")
    assert_close(gb, bt.grad.numpy(), dtype, "grad_bias")


def test_conv1d_and_conv_transpose1d_match_torch():
    rng = np.random.default_rng(2)
    xt = torch.from_numpy(rand(rng, (2, 4, 11))).requires_grad_()  # (N, C, L)
    wt = torch.from_numpy(rand(rng, (6, 2, 3))).requires_grad_()  # (C_out, C_in // g, k)
    yt = F.conv1d(xt, wt, stride=2, padding=1, dilation=2, groups=2)
    gyt = torch.from_numpy(rand(rng, tuple(yt.shape)))
    yt.backward(gyt)
    x, w = xt.detach().numpy().transpose(0, 2, 1), wt.detach().permute(2, 1, 0).numpy()
    gy = gyt.numpy().transpose(0, 2, 1)
    args = dict(stride=2, padding=1, dilation=2, groups=2)
    assert_close(fastconv.conv1d(x, w, **args), yt.detach().numpy().transpose(0, 2, 1),
                 np.float64, "conv1d")
    gx, gw, _ = fastconv.conv1d_backward(gy, x, w, **args)
    assert_close(gx, xt.grad.numpy().transpose(0, 2, 1), np.float64, "grad_input")
    assert_close(gw, wt.grad.permute(2, 1, 0).numpy(), np.float64, "grad_weight")
    # torch's ConvTranspose1d weight (C_in, C_out // g, k) -> (k, C_out // g, C_in)
    wtt = torch.from_numpy(rand(rng, (4, 3, 3)))
    tt = F.conv_transpose1d(xt.detach(), wtt, stride=2, padding=1, output_padding=1)
    y = fastconv.conv_transpose1d(x, wtt.permute(2, 1, 0).numpy(), stride=2, padding=1,
                                  output_padding=1)
    assert_close(y, tt.numpy().transpose(0, 2, 1), np.float64, "conv_transpose1d")
