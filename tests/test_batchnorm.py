"""fastconv.batch_norm / batch_norm_backward and BatchNorm1d / BatchNorm2d: the definition,
finite differences, PyTorch's running statistics after several steps, modes and errors."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _algorithms
from fastconv import layers as L
from fastconv import normalization as N
from _gradcheck import assert_grad
from conftest import assert_threads_ran

DTYPES = (np.float32, np.float64)


def reference(x, mean, var, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias per channel (the last axis), float64."""
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def batch_stats(x):
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return x2.mean(axis=0), x2.var(axis=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3), (2, 3, 4, 3)])
def test_function_matches_the_definition(dtype, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    weight, bias = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    running_mean, running_var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    # eval: the running statistics, untouched
    rm, rv = running_mean.copy(), running_var.copy()
    y = fc.batch_norm(x, rm, rv, weight, bias, eps=1e-3)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, reference(x, rm, rv, weight, bias, 1e-3), rtol=tol, atol=tol)
    np.testing.assert_array_equal(rm, running_mean)
    # training: the batch's mean and biased variance; running stats move, unbiased variance
    y = fc.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.3, eps=1e-3)
    mean, var = batch_stats(x)
    np.testing.assert_allclose(y, reference(x, mean, var, weight, bias, 1e-3), rtol=tol, atol=tol)
    count = x.size // 3
    stats_tol = 1e-12 if dtype == np.float64 else 1e-6  # float32 centred values
    np.testing.assert_allclose(rm, 0.7 * running_mean + 0.3 * mean, rtol=stats_tol)
    np.testing.assert_allclose(rv, 0.7 * running_var + 0.3 * var * count / (count - 1),
                               rtol=stats_tol)
    # no weight and bias: 1 and 0; no running statistics in training mode
    y = fc.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(y, reference(x, mean, var, 1, 0, 1e-5), rtol=tol, atol=tol)


@pytest.mark.parametrize("training", [True, False])
def test_backward_by_finite_differences(training):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 2, 4)) * 2
    weight, bias = rng.standard_normal(4), rng.standard_normal(4)
    running_mean, running_var = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    g = rng.standard_normal(x.shape)

    def f(v, w=weight, b=bias):
        return fc.batch_norm(v, running_mean.copy(), running_var.copy(), w, b, training,
                             eps=1e-3)

    mean, var = batch_stats(x) if training else (running_mean, running_var)
    gx, gw, gb = fc.batch_norm_backward(g, x, mean, var, weight, training, eps=1e-3)
    assert_grad(gx, f, x.copy(), g, coords=20, rng=0)
    assert_grad(gw, lambda w: f(x, w), weight.copy(), g)
    assert_grad(gb, lambda b: f(x, weight, b), bias.copy(), g)
    if training:  # the statistics found again from x
        for got, want in zip(fc.batch_norm_backward(g, x, None, None, weight, True, 1e-3),
                             (gx, gw, gb)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    only = fc.batch_norm_backward(g, x, mean, var, weight, training, 1e-3, needs=("input",))
    assert only[1] is None and only[2] is None
    np.testing.assert_allclose(only[0], gx, rtol=1e-12, atol=1e-12)


def test_function_errors():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"batch_norm: expected running_mean of shape \(3,\) "
                                         r"\(one value per channel of an input with 3 channels"):
        fc.batch_norm(x, np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="running_mean must be given"):
        fc.batch_norm(x, None, None)
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel when training, "
                                         r"but got input of shape \(1, 3\)"):
        fc.batch_norm(np.zeros((1, 3)), None, None, training=True)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        fc.batch_norm(np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="needs must be drawn from"):
        fc.batch_norm_backward(x, x, np.zeros(3), np.ones(3), needs=("mean",))


# ----------------------------------------------------------------------------------------------
# layers

def test_layer_defaults_buffers_and_state_dict():
    bn = L.BatchNorm2d(3)
    np.testing.assert_array_equal(bn.weight, np.ones(3))
    np.testing.assert_array_equal(bn.bias, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked"]
    assert repr(bn) == ("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, "
                        "track_running_stats=True)")
    plain = L.BatchNorm1d(4, affine=False, track_running_stats=False, dtype=np.float64)
    assert plain.weight is None and plain.running_mean is None
    assert plain.state_dict() == {} and list(plain.parameters()) == []
    assert repr(plain) == ("BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=False, "
                           "track_running_stats=False, dtype=float64)")
    model = L.Sequential(L.Conv2d(2, 3, 1, rng=0), bn)
    assert [k for k, _ in model.buffers()] == ["1.running_mean", "1.running_var",
                                              "1.num_batches_tracked"]


def test_layer_modes_and_gradients():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 3, 4)) + 2
    bn = L.BatchNorm2d(4, momentum=0.5, dtype=np.float64)
    bn.weight[:] = rng.standard_normal(4)
    g = rng.standard_normal(x.shape)
    y = bn(x)
    mean, var = batch_stats(x)
    np.testing.assert_allclose(y, reference(x, mean, var, bn.weight, 0, 1e-5), atol=1e-12)
    assert bn.num_batches_tracked == 1
    np.testing.assert_allclose(bn.running_mean, 0.5 * mean)
    gx = bn.backward(g)
    want = fc.batch_norm_backward(g, x, mean, var, bn.weight, True)
    np.testing.assert_allclose(gx, want[0], atol=1e-12)
    np.testing.assert_allclose(bn.grads["weight"], want[1], atol=1e-12)
    np.testing.assert_allclose(bn.grads["bias"], want[2], atol=1e-12)
    # eval: the running statistics, which stay put; no backward (forward keeps nothing)
    bn.eval()
    before = bn.running_mean.copy()
    np.testing.assert_allclose(bn(x), reference(x, bn.running_mean, bn.running_var, bn.weight,
                                                bn.bias, 1e-5), atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, before)
    assert bn.num_batches_tracked == 1
    with pytest.raises(RuntimeError, match="eval mode"):
        bn.backward(g)
    # without running statistics: batch statistics in both modes
    free = L.BatchNorm2d(4, track_running_stats=False, dtype=np.float64).eval()
    np.testing.assert_allclose(free(x), reference(x, mean, var, 1, 0, 1e-5), atol=1e-12)
    # affine=False: no parameters, input gradient only
    plain = L.BatchNorm2d(4, affine=False, dtype=np.float64)
    plain(x)
    np.testing.assert_allclose(plain.backward(g),
                               fc.batch_norm_backward(g, x, mean, var, None, True)[0], atol=1e-12)


def test_momentum_none_is_the_cumulative_average():
    rng = np.random.default_rng(3)
    bn = L.BatchNorm1d(2, momentum=None, dtype=np.float64)
    batches = [rng.standard_normal((5, 2)) * (i + 1) for i in range(3)]
    for b in batches:
        bn(b)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0))
    np.testing.assert_allclose(bn.running_var, np.mean([b.var(0, ddof=1) for b in batches],
                                                       axis=0))
    assert bn.num_batches_tracked == 3


def test_layer_errors_and_empty_batches():
    bn = L.BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, .*\) expected input \(N, H, W, C\) "
                                         r"\[NHWC\] with 3 channels in its last dimension, but "
                                         r"got input of shape \(2, 4, 4, 5\) with 5 channels"):
        bn(np.zeros((2, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"expected input to be 4-D \(N, H, W, C\)"):
        bn(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(np.zeros((1, 1, 1, 3)))
    with pytest.raises(ValueError, match=r"expected input to be 2-D or 3-D \(N, C\) or "
                                         r"\(N, L, C\)"):
        L.BatchNorm1d(3)(np.zeros((2, 2, 2, 3)))
    # an empty batch: empty output and zero gradients; the statistics stay (PyTorch's)
    y = bn(np.zeros((0, 4, 4, 3), np.float32))
    assert y.shape == (0, 4, 4, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(bn.running_var, np.ones(3))
    assert bn.num_batches_tracked == 1
    assert bn.backward(np.zeros((0, 4, 4, 3))).shape == (0, 4, 4, 3)
    np.testing.assert_array_equal(bn.grads["weight"], np.zeros(3))
    assert bn.eval()(np.zeros((0, 2, 2, 3))).shape == (0, 2, 2, 3)


# ----------------------------------------------------------------------------------------------
# PyTorch

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_three_training_steps_equal_pytorch(dtype, momentum):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    module = torch.nn.BatchNorm2d(3, momentum=momentum, eps=1e-4).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.standard_normal(3)))
        module.bias.copy_(torch.tensor(rng.standard_normal(3)))
    bn = L.BatchNorm2d(3, momentum=momentum, eps=1e-4, dtype=dtype)
    bn.load_state_dict({k: v.numpy() for k, v in module.state_dict().items()})
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    for step in range(3):
        x = (rng.standard_normal((2, 4, 5, 3)) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
        yt = module(xt)
        yt.backward(torch.tensor(g.transpose(0, 3, 1, 2).copy()))
        np.testing.assert_allclose(bn(x), yt.detach().numpy().transpose(0, 2, 3, 1), **tol)
        np.testing.assert_allclose(bn.backward(g), xt.grad.numpy().transpose(0, 2, 3, 1), **tol)
    for name, value in module.state_dict().items():
        np.testing.assert_allclose(bn.state_dict()[name], value.numpy(), **tol)
    np.testing.assert_allclose(bn.grads["weight"], module.weight.grad.numpy(), **tol)
    np.testing.assert_allclose(bn.grads["bias"], module.bias.grad.numpy(), **tol)
    module.eval()
    bn.eval()
    x = rng.standard_normal((2, 3, 3, 3)).astype(dtype)
    np.testing.assert_allclose(bn(x), module(torch.tensor(x.transpose(0, 3, 1, 2).copy()))
                               .detach().numpy().transpose(0, 2, 3, 1), **tol)


@pytest.mark.parametrize("shape", [(6, 3), (2, 5, 3)])
def test_batchnorm1d_equals_pytorch(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    module = torch.nn.BatchNorm1d(3, affine=False).double()
    bn = L.BatchNorm1d(3, affine=False, dtype=np.float64)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    to_torch = (lambda a: a) if len(shape) == 2 else (lambda a: a.transpose(0, 2, 1))
    xt = torch.tensor(to_torch(x).copy(), requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(to_torch(g).copy()))
    np.testing.assert_allclose(bn(x), to_torch(yt.detach().numpy()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.backward(g), to_torch(xt.grad.numpy()), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(bn.running_var, module.running_var.numpy(), rtol=1e-12)
    # the state dict loads into PyTorch as it is
    module.load_state_dict({k: torch.tensor(v) for k, v in bn.state_dict().items()})


def test_batch_norm_gives_the_same_bits_on_one_and_two_threads(monkeypatch):
    """The per-channel sums run in fixed ranges of rows: the thread count cannot change them."""
    from fastconv import normalization as N
    _norm = N._norm

    seen = []

    class Spy:  # records the thread count each pass was given
        def __getattr__(self, name):
            def call(*args):
                seen.append(args[-1])
                return getattr(_norm, name)(*args)
            return call

    monkeypatch.setattr(N, "_norm", Spy())

    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 33, 35, 19)).astype(np.float32) * 3 + 1  # 2 x 2**16 values+
    gy = rng.standard_normal(x.shape).astype(np.float32)
    weight, bias = rng.standard_normal(19), rng.standard_normal(19)
    results = []
    for threads in (1, 2):
        with fc.num_threads(threads):
            del seen[:]
            y, mean, var = N.batch_norm_forward("batch_norm", x, None, None, weight, bias, True,
                                                0.1, 1e-5)
            grads = N.batch_norm_backward(gy, x, mean, var, weight, True, 1e-5)
            results.append((y, mean, var, *grads))
            assert set(seen) == {threads}  # every pass got the work shared out
    assert_threads_ran(seen)  # the last round's passes ran on two threads
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_norm")))
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_instruction_set_gives_the_definition(level, dtype, monkeypatch):
    """The kernels of each instruction-set build (normalization._norm is the widest the CPU
    runs), training-mode forward and backward, channel counts around the vector widths."""
    monkeypatch.setattr(N, "_norm", _algorithms.simd_modules("_norm")[level])
    rng = np.random.default_rng(3)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    eps = 1e-5
    for channels in (1, 3, 7, 8, 9, 16, 17, 33):
        x = (rng.standard_normal((2, 5, 7, channels)) * 3 + 1).astype(dtype)
        gy = rng.standard_normal(x.shape).astype(dtype)
        weight, bias = rng.standard_normal(channels), rng.standard_normal(channels)
        y, mean, var = N.batch_norm_forward("batch_norm", x, None, None, weight.astype(dtype),
                                            bias.astype(dtype), True, 0.1, eps)
        m, v = batch_stats(x)
        np.testing.assert_allclose(mean, m, rtol=tol, atol=tol)
        np.testing.assert_allclose(var, v, rtol=tol, atol=tol)
        np.testing.assert_allclose(y, reference(x.astype(np.float64), m, v, weight, bias, eps),
                                   rtol=tol, atol=10 * tol)
        gx, gw, gb = N.batch_norm_backward(gy, x, mean, var, weight.astype(dtype), True, eps)
        g = gy.reshape(-1, channels).astype(np.float64)
        x_hat = (x.reshape(-1, channels) - m) / np.sqrt(v + eps)
        np.testing.assert_allclose(gb, g.sum(axis=0), rtol=tol, atol=10 * tol)
        np.testing.assert_allclose(gw, (g * x_hat).sum(axis=0), rtol=tol, atol=10 * tol)
        expected = weight / np.sqrt(v + eps) * (g - g.mean(axis=0)
                                                - x_hat * (g * x_hat).mean(axis=0))
        np.testing.assert_allclose(gx.reshape(-1, channels), expected, rtol=tol, atol=10 * tol)


def test_kernels_refuse_vectors_of_another_channel_count():
    # the kernels index every per-channel vector by channel with bounds checks off: one of
    # another length, or chunks outside [1, rows], is a ValueError naming it
    _norm = N._norm
    x = np.zeros((6, 4), np.float32)
    four, three, none = np.ones(4, np.float32), np.ones(3, np.float32), np.ones(0, np.float32)
    stats, out, grads = np.zeros((2, 4)), np.zeros((6, 4), np.float32), np.zeros((2, 4))
    per_channel = r"expected {} with one value per channel \(4\){}, but got 3"
    with pytest.raises(ValueError, match=per_channel.format("weight", " or none")):
        _norm.normalize(x, three, four, 1e-5, stats, out, 1)
    with pytest.raises(ValueError, match=per_channel.format("stats", "")):
        _norm.normalize(x, none, none, 1e-5, np.zeros((2, 3)), out, 1)
    with pytest.raises(ValueError, match=r"expected stats \(2, 4\) and out \(6, 4\)"):
        _norm.normalize(x, four, four, 1e-5, stats, np.zeros((5, 4), np.float32), 1)
    with pytest.raises(ValueError, match=r"expected stats \(2, 4\) .* got \(1, 4\)"):
        _norm.normalize(x, four, four, 1e-5, stats[:1], out, 1)
    with pytest.raises(ValueError, match=per_channel.format("stats", "")):
        _norm.batch_stats(x, 2, np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="expected stats of 2 rows, got 3"):
        _norm.batch_stats(x, 2, np.zeros((3, 4)), 1)
    with pytest.raises(ValueError, match=r"chunks must be in \[1, 6\], got 7"):
        _norm.batch_stats(x, 7, stats, 1)
    with pytest.raises(ValueError, match="num_threads must be >= 1, got 0"):
        _norm.batch_stats(x, 1, stats, 0)
    with pytest.raises(ValueError, match="no values to take statistics of"):
        _norm.batch_stats(x[:0], 1, stats, 1)
    with pytest.raises(ValueError, match=per_channel.format("gx", "")):
        _norm.train_backward(x, x, stats, four, 1e-5, True, 2, grads,
                             np.zeros((6, 3), np.float32), 1)
    with pytest.raises(ValueError, match=r"expected g \(6, 4\).* but got g \(5, 4\)"):
        _norm.train_backward(x[:5], x, stats, four, 1e-5, True, 2, grads,
                             np.zeros((0, 4), np.float32), 1)


def test_a_kernel_out_of_scratch_memory_is_a_memory_error(monkeypatch):
    class OutOfMemory:  # every kernel reports a failed allocation
        def __getattr__(self, name):
            return lambda *args: 1
    monkeypatch.setattr(N, "_norm", OutOfMemory())
    x = np.ones((4, 3), np.float32)
    with pytest.raises(MemoryError, match="batch normalisation kernel's scratch memory"):
        fc.batch_norm(x, None, None, training=True)
    with pytest.raises(MemoryError, match="batch normalisation kernel's scratch memory"):
        fc.batch_norm_backward(x, x, np.zeros(3), np.ones(3), training=True)


def test_backward_without_the_input_gradient_and_with_statistics_from_x():
    # needs without "input": no input gradient; training statistics left out (None): taken
    # from x as the forward would
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 4, 5, 6)) * 2 + 1).astype(np.float32)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    weight = rng.standard_normal(6).astype(np.float32)
    _, mean, var = N.batch_norm_forward("batch_norm", x, None, None, weight, None, True, 0.1,
                                        1e-5)
    full = fc.batch_norm_backward(gy, x, mean, var, weight, training=True)
    gx, gw, gb = fc.batch_norm_backward(gy, x, None, None, weight, training=True,
                                        needs=("weight", "bias"))
    assert gx is None
    np.testing.assert_allclose(gw, full[1], rtol=1e-6)
    np.testing.assert_allclose(gb, full[2], rtol=1e-6)
    gx, gw, gb = fc.batch_norm_backward(gy, x, None, None, weight, training=True,
                                        needs=("input",))
    assert gw is None and gb is None
    np.testing.assert_allclose(gx, full[0], rtol=1e-5, atol=1e-6)
