"""fastconv._kernels._layout: NCHW <-> NHWC as batched 2-D transposes, and the Permute layer's
copy that uses it, against NumPy's transpose."""
import numpy as np
import pytest

import fastconv as fc
from conftest import assert_threads_ran
from fastconv._kernels import _layout
from fastconv.graph import Permute, _transposed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, _layout.TILE - 1, _layout.TILE,
                                  _layout.TILE + 1, 2 * _layout.TILE + 1])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_transpose_batched_is_the_transpose(dtype, rows, threads):
    # rows up to FEW_ROWS are interleaved value by value, more go by tiles: both paths, with
    # columns around the tile size and a part per thread that can be empty
    rng = np.random.default_rng(rows)
    for n, cols in [(1, 1), (2, 7), (1, _layout.TILE + 1), (3, 2 * _layout.TILE - 1)]:
        x = rng.standard_normal((n, rows, cols)).astype(dtype)
        out = np.full((n, cols, rows), np.nan, dtype)
        with fc.num_threads(threads):
            _layout.transpose_batched(x, out, threads)
        np.testing.assert_array_equal(out, x.transpose(0, 2, 1))
    if threads > 1:  # OpenMP ran the region on as many threads as it was given
        assert_threads_ran([threads])


def test_transpose_batched_refuses_a_wrong_output_or_thread_count():
    x = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"expected out of shape \(2, 5, 3\), got \(2, 3, 5\)"):
        _layout.transpose_batched(x, np.zeros((2, 3, 5), np.float32), 1)
    with pytest.raises(ValueError, match="num_threads must be >= 1, got 0"):
        _layout.transpose_batched(x, np.zeros((2, 5, 3), np.float32), 0)


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_nchw_nhwc_copies_equal_numpy(perm, dtype):
    # float arrays go through the kernel, others (and views) through NumPy; an output given
    # is written whole
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 224, 224), (2, 5, 7, 9), (3, 17, 33, 1), (2, 64, 6, 5), (1, 1, 1, 1)]:
        x = (rng.standard_normal(shape) * 100).astype(dtype)
        expected = x.transpose(perm)
        got = _transposed(x, perm)
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)
        out = np.zeros(expected.shape, dtype)
        spaced = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        spaced[..., ::2] = x  # a view equal to x: NumPy's copy
        assert _transposed(spaced[..., ::2], perm, out) is out
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(Permute(perm)(x), expected)
        fortran = np.zeros(expected.shape, dtype, order="F")  # written whole by NumPy's copy
        assert _transposed(x, perm, fortran) is fortran
        np.testing.assert_array_equal(fortran, expected)
        if expected.shape[1] != expected.shape[2]:  # a wrong shape of the same size
            with pytest.raises(ValueError):
                _transposed(x, perm, np.zeros(expected.shape[:1] + expected.shape[2:0:-1]
                                              + expected.shape[3:], dtype))
