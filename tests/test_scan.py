"""The read-only passes of _kernels._scan: byte comparison and max |a|, on every thread
range (a difference or an extreme at the first and last element of each)."""
import numpy as np
import pytest

from fastconv import _algorithms, functional
from fastconv._kernels import _scan

RNG = np.random.default_rng(7)


def _range_edges(n: int, threads: int) -> list[int]:
    """The first and last index of every thread's range."""
    return sorted({i for k in range(threads + 1)
                   for i in (k * n // threads, k * n // threads - 1) if 0 <= i < n})


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_bytes_sees_a_difference_in_any_thread_range(threads):
    a = RNG.integers(0, 256, 100_003, dtype=np.uint8)
    assert _scan.same_bytes(a, a.copy(), threads)
    assert not _scan.same_bytes(a, a[:-1].copy(), threads)
    assert _scan.same_bytes(a[:0], a[:0].copy(), threads)
    for i in _range_edges(a.size, threads):
        b = a.copy()
        b[i] ^= 1
        assert not _scan.same_bytes(a, b, threads), i
    with pytest.raises(ValueError, match="num_threads"):
        _scan.same_bytes(a, a, 0)


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_scan")))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_max_abs_is_numpys_in_any_thread_range(level, dtype, threads):
    scan = _algorithms.simd_modules("_scan")[level]
    tiny = np.finfo(dtype).smallest_subnormal
    for n in (1, 2, 5, 17, 20_003):
        a = RNG.standard_normal(n).astype(dtype)
        assert scan.max_abs(a, threads) == np.abs(a).max()
        for i in _range_edges(n, threads):
            for value in (-1e30, np.inf, -np.inf, -0.0, -tiny):
                b = a.copy() * (0 if abs(value) < 1 else 1)  # the small ones on zeros
                b[i] = value
                assert scan.max_abs(b, threads) == np.abs(b).max(), (n, i, value)
            b = a.copy()
            b[i] = np.nan
            assert np.isnan(scan.max_abs(b, threads)), (n, i)
            b[i] = -np.nan
            assert np.isnan(scan.max_abs(b, threads)), (n, i)
    assert scan.max_abs(np.zeros(0, dtype), threads) == 0.0
    assert scan.max_abs(a, 100) == np.abs(a).max()  # more threads than it keeps results for
    with pytest.raises(ValueError, match="num_threads"):
        scan.max_abs(a, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounded_and_max_abs_on_large_and_strided_arrays(dtype):
    """functional's checks give NumPy's answers whichever path computes them."""
    for a in (RNG.standard_normal((40, 30, 20)).astype(dtype),
              RNG.standard_normal((40, 30, 40)).astype(dtype)[:, :, ::2],
              RNG.standard_normal(7).astype(dtype)):
        assert functional._bounded(a) and functional._max_abs(a) == np.abs(a).max()
        for value, bounded, max_abs in ((np.inf, False, np.inf), (np.nan, False, np.inf),
                                        (-3e3, True, 3e3)):
            b = a.copy()
            b[(-1,) * b.ndim] = value
            assert functional._bounded(b) is bounded
            assert functional._max_abs(b) == max_abs
