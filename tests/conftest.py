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


class _RecordingKernels:
    """A kernel module whose functions record the thread count they are called with (their
    last argument, see functional._run)."""

    def __init__(self, module, seen: list):
        self._module, self._seen = module, seen

    def __getattr__(self, name):
        attr = getattr(self._module, name)
        if not callable(attr):
            return attr

        def call(*args):
            self._seen.append(args[-1])
            return attr(*args)
        return call


@pytest.fixture
def kernel_threads(monkeypatch):
    """For thread tests: every kernel call shares its work however small it is
    (PARALLEL_MIN_FLOPS and PARALLEL_MIN_DEPTHWISE_FLOPS lowered to 0), and the thread
    counts the kernels were given are recorded in the list returned. A test then calls assert_threads_ran(list), so that it
    cannot pass with everything on one thread."""
    from fastconv import _algorithms

    seen: list = []
    monkeypatch.setattr(_algorithms, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(_algorithms, "PARALLEL_MIN_DEPTHWISE_FLOPS", 0)
    for algo, module in list(_algorithms.KERNELS.items()):
        monkeypatch.setitem(_algorithms.KERNELS, algo, _RecordingKernels(module, seen))
    monkeypatch.setattr("fastconv.functional._algorithms", _algorithms)
    return seen


@pytest.fixture
def nan_filled_memory(monkeypatch):
    """fastconv._memory.empty hands out memory filled with NaN: an output a kernel is
    trusted to write whole (allocated so rather than with np.zeros) shows every value it
    left unset."""
    from fastconv import _memory
    empty = _memory.empty

    def nan_filled(shape, dtype):
        a = empty(shape, dtype)
        a.fill(np.nan)
        return a
    monkeypatch.setattr(_memory, "empty", nan_filled)


def assert_threads_ran(seen: list) -> None:
    """Some kernel call was given more than one thread, and OpenMP runs a region asked for
    that many threads on that many (seen from inside the region, _openmp.team_size)."""
    from fastconv._kernels import _openmp

    if not _openmp.openmp_enabled():
        pytest.skip("built without OpenMP: the kernels run on one thread")
    most = max(seen, default=0)
    assert most > 1, f"no kernel call was given more than one thread: {sorted(set(seen))}"
    assert _openmp.team_size(most) == most, "OpenMP ran fewer threads than asked"
