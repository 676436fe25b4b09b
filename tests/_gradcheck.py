"""Central finite differences for the tests of activations, normalisation and resampling."""
import numpy as np


def numeric_grad(f, x, g, eps=1e-6, coords=None, rng=None):
    """d<f(x), g>/dx by central differences (float64), at every coordinate or at `coords`
    random ones (the others left 0); returns (gradient, mask of the coordinates checked)."""
    grad = np.zeros_like(x, dtype=np.float64)
    checked = np.zeros(x.shape, bool)
    flat = range(x.size) if coords is None else np.random.default_rng(rng).choice(
        x.size, min(coords, x.size), replace=False)
    for i in flat:
        i = np.unravel_index(i, x.shape)
        old = x[i]
        x[i] = old + eps
        plus = np.sum(f(x) * g)
        x[i] = old - eps
        minus = np.sum(f(x) * g)
        x[i] = old
        grad[i] = (plus - minus) / (2 * eps)
        checked[i] = True
    return grad, checked


def assert_grad(analytic, f, x, g, rtol=1e-6, **kwargs):
    numeric, checked = numeric_grad(f, x, g, **kwargs)
    np.testing.assert_allclose(np.asarray(analytic)[checked], numeric[checked], rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(numeric).max(initial=0))))
