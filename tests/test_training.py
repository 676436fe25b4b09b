"""SGD, softmax cross-entropy, and a short training run."""
import numpy as np
import pytest
from scipy.special import logsumexp

from fastconv import layers as L
from fastconv.losses import CrossEntropyLoss, softmax_cross_entropy
from fastconv.optim import SGD


# ----------------------------------------------------------------------------------------------
# cross-entropy

def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 4)) * 3
    t = np.array([0, 3, 1, 1, 2])
    loss, grad = softmax_cross_entropy(z, t)
    per_row = logsumexp(z, axis=1) - z[np.arange(5), t]
    assert loss == pytest.approx(per_row.mean(), rel=1e-13)
    numeric = np.zeros_like(z)
    eps = 1e-6
    for i in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[i] = eps
        numeric[i] = (softmax_cross_entropy(z + e, t)[0] - softmax_cross_entropy(z - e, t)[0]) \
            / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    loss_sum, grad_sum = softmax_cross_entropy(z, t, reduction="sum")
    assert loss_sum == pytest.approx(per_row.sum(), rel=1e-13)
    np.testing.assert_allclose(grad_sum, grad * 5, rtol=1e-13)


def test_cross_entropy_is_stable_for_huge_logits_and_keeps_float32():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]], np.float32)
    loss, grad = softmax_cross_entropy(z, [0, 1])
    assert loss == pytest.approx(np.log(2) / 2, rel=1e-6)
    assert grad.dtype == np.float32 and np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[0, 0, 0], [0, -0.25, 0.25]], atol=1e-7)


def test_cross_entropy_loss_object():
    criterion = CrossEntropyLoss()
    with pytest.raises(RuntimeError, match="call the loss on logits first"):
        criterion.backward()
    z = np.array([[2.0, 1.0]])
    assert criterion(z, [1]) == pytest.approx(np.log(1 + np.e))
    np.testing.assert_allclose(criterion.backward(), softmax_cross_entropy(z, [1])[1])


@pytest.mark.parametrize("logits,target,error,match", [
    (np.zeros((2, 3)), [0, 3], ValueError, r"in \[0, 3\)"),
    (np.zeros((2, 3)), [0, -1], ValueError, r"in \[0, 3\)"),
    (np.zeros((2, 3)), [0.0, 1.0], TypeError, "integer class indices"),
    (np.zeros((2, 3)), [0, 1, 2], ValueError, r"target of shape \(2,\)"),
    (np.zeros(3), [0], ValueError, "expected logits to be 2-D"),
    (np.zeros((2, 0)), [0, 0], ValueError, "no classes"),
])
def test_cross_entropy_bad_arguments(logits, target, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(logits, target)


def test_cross_entropy_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        CrossEntropyLoss("none")


# ----------------------------------------------------------------------------------------------
# SGD

def _one_param(value, grad):
    return [("w", np.array(value, float), np.array(grad, float))]


def test_sgd_plain_step_is_in_place():
    params = _one_param([1.0, 2.0], [0.5, -1.0])
    value = params[0][1]
    SGD(params, lr=0.1).step()
    assert params[0][1] is value
    np.testing.assert_allclose(value, [0.95, 2.1], rtol=1e-15)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_and_weight_decay_follow_pytorchs_rule(nesterov):
    lr, mu, wd = 0.1, 0.9, 0.01
    params = _one_param([1.0, -2.0], [0.0, 0.0])
    _, p, g = params[0]
    opt = SGD(params, lr=lr, momentum=mu, weight_decay=wd, nesterov=nesterov)
    grads = [np.array([0.3, -0.2]), np.array([0.1, 0.4]), np.array([-0.5, 0.2])]
    expected = np.array([1.0, -2.0])
    buf = None
    for step_grad in grads:
        g[...] = step_grad
        opt.step()
        # torch.optim.SGD's documented algorithm
        d = step_grad + wd * expected
        buf = d.copy() if buf is None else mu * buf + d
        expected = expected - lr * (d + mu * buf if nesterov else buf)
        np.testing.assert_allclose(p, expected, rtol=1e-14)


def test_sgd_matches_torch_on_a_layer():
    torch = pytest.importorskip("torch")
    layer = L.Linear(3, 2, rng=0, dtype=np.float64)
    tw = torch.tensor(layer.weight.copy(), requires_grad=True)
    opt_t = torch.optim.SGD([tw], lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)
    opt = SGD(layer, lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)
    for step in range(3):
        g = np.random.default_rng(step).standard_normal((3, 2))
        layer.grads["weight"][...] = g
        layer.grads["bias"][...] = 0
        tw.grad = torch.tensor(g)
        opt.step()
        opt_t.step()
    np.testing.assert_allclose(layer.weight, tw.detach().numpy(), rtol=1e-13)


def test_sgd_zero_grad_and_layer_parameters():
    layer = L.Linear(2, 2, rng=0)
    layer.grads["weight"][...] = 1
    opt = SGD(layer, lr=0.1)
    opt.zero_grad()
    assert not layer.grads["weight"].any()


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lr=-0.1), ValueError, "lr must be a finite number >= 0"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(lr=0.1, momentum=-1), ValueError, "momentum must be"),
    (dict(lr=0.1, nesterov=True), ValueError, "nesterov=True needs a momentum"),
])
def test_sgd_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SGD(L.Linear(2, 2), **kwargs)


def test_sgd_bad_params():
    with pytest.raises(TypeError, match="layer or \\(name, value, grad\\) triples"):
        SGD([1, 2], lr=0.1)
    with pytest.raises(TypeError, match="arrays of one shape"):
        SGD([("w", np.zeros(2), np.zeros(3))], lr=0.1)


# ----------------------------------------------------------------------------------------------
# training

def test_a_short_training_run_on_a_fixed_batch_cuts_the_loss():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    model = L.Sequential(L.Conv2d(1, 8, 3, padding=1, rng=rng), L.ReLU(), L.MaxPool2d(2),
                         L.Conv2d(8, 8, 3, padding=1, rng=rng), L.ReLU(), L.AvgPool2d(2),
                         L.Flatten(), L.Linear(8 * 2 * 2, 4, rng=rng))
    criterion = CrossEntropyLoss()
    opt = SGD(model, lr=0.1, momentum=0.9)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        losses.append(criterion(model(x), y))
        model.backward(criterion.backward())
        opt.step()
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    accuracy = np.mean(model(x).argmax(axis=1) == y)
    assert accuracy >= 0.9
