"""Shared fixtures and helpers for the fastconv tests."""
import math

import numpy as np
import pytest

ALGORITHMS = ("direct", "im2col", "blocked", "auto")
FLOAT_DTYPES = (np.float32, np.float64)

# Relative accuracy per summed term: float32 errors grow about like sqrt(terms),
# float64 is checked tightly.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def tolerance(dtype, terms: int) -> float:
    """rtol for a result that sums `terms` products in `dtype`."""
    return RTOL[np.dtype(dtype)] * math.sqrt(max(terms, 1))


def assert_close(actual, expected, dtype, terms: int) -> None:
    """actual (computed in dtype) against a float64 reference summing `terms` products.

    The absolute part is scaled with the largest expected magnitude, so elements that cancel
    to nearly zero are judged against the size of the numbers that were summed.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    rtol = tolerance(dtype, terms)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0))


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (tests do not depend on their order)."""
    return np.random.default_rng(20240611)


def random_array(rng, shape, dtype=np.float64):
    """Standard-normal data in dtype (integers: small values that survive any int dtype)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 8, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)
