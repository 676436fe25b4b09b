"""max_pool2d / avg_pool2d and their backward passes against a reference written from the
definition (and against PyTorch when it is installed)."""
import itertools
import math

import numpy as np
import pytest

import fastconv
from fastconv import _algorithms, _threads, pooling

DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------------------------------------
# reference, from the definition (PyTorch's documented output size and window rules)

def ref_out_size(n, k, s, p, d, ceil_mode):
    """floor or ceil of (n + 2p - d(k-1) - 1) / s, plus one; in ceil mode a last window that
    would start in the right padding (at or past n + p in padded coordinates) is dropped."""
    exact = (n + 2 * p - d * (k - 1) - 1) / s
    out = (math.ceil(exact) if ceil_mode else math.floor(exact)) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def ref_taps(o, k, s, p, d, n):
    """Image coordinates covered by window o along one axis (padding left out)."""
    return [o * s - p + r * d for r in range(k) if 0 <= o * s - p + r * d < n]


def ref_max_pool(x, k, s, p, d, ceil_mode):
    """(y, indices): the maximum of each window and the flat index ih*W + iw where it is;
    ties go to the first tap in row-major order, NaN to the last NaN (PyTorch's rule),
    a window with no pixel gives -inf and -1."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    ho, wo = (ref_out_size(h, k[0], s[0], p[0], d[0], ceil_mode),
              ref_out_size(w, k[1], s[1], p[1], d[1], ceil_mode))
    y = np.full((n, ho, wo, c), -np.inf)
    idx = np.full((n, ho, wo, c), -1, np.int64)
    for i in range(ho):
        for j in range(wo):
            taps = [(a, b) for a in ref_taps(i, k[0], s[0], p[0], d[0], h)
                    for b in ref_taps(j, k[1], s[1], p[1], d[1], w)]
            if not taps:
                continue
            values = np.stack([x[:, a, b, :] for a, b in taps])  # (taps, N, C)
            flat = np.array([a * w + b for a, b in taps])
            best = values.max(axis=0)  # NaN propagates
            nan = np.isnan(values)
            last_nan = len(taps) - 1 - np.argmax(nan[::-1], axis=0)
            first_max = np.argmax(values == best, axis=0)
            y[:, i, j] = best
            idx[:, i, j] = flat[np.where(nan.any(axis=0), last_nan, first_max)]
    return y, idx


def ref_avg_pool(x, k, s, p, ceil_mode, count_include_pad):
    """Mean of each window: the sum of its pixels over the number of its positions inside
    the padded image (count_include_pad) or inside the image."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    ho, wo = (ref_out_size(h, k[0], s[0], p[0], 1, ceil_mode),
              ref_out_size(w, k[1], s[1], p[1], 1, ceil_mode))
    y = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            rows = [i * s[0] - p[0] + r for r in range(k[0])]
            cols = [j * s[1] - p[1] + r for r in range(k[1])]
            if count_include_pad:
                count = (sum(-p[0] <= a < h + p[0] for a in rows)
                         * sum(-p[1] <= b < w + p[1] for b in cols))
            else:
                count = sum(0 <= a < h for a in rows) * sum(0 <= b < w for b in cols)
            total = sum(x[:, a, b, :] for a in rows for b in cols if 0 <= a < h and 0 <= b < w)
            y[:, i, j] = total / count
    return y


def valid(k, p, d):
    return all(2 * pp <= dd * (kk - 1) + 1 for kk, pp, dd in zip(k, p, d))


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# the grid: kernel, stride (None: the kernel), padding, dilation
GRID = list(itertools.product([1, 2, 3, (2, 3)], [None, 2, (2, 1)], [0, 1, (1, 0)], [1, 2]))
AVG_GRID = sorted({(k, s, p) for k, s, p, _ in GRID}, key=str)
MODES = list(itertools.product(DTYPES, [False, True]))  # dtype, ceil_mode
SHAPE = (2, 7, 6, 3)


def _x(dtype, shape=SHAPE, seed=0):
    """Distinct values (no ties), so gradients are well defined and exact comparisons fair."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(math.prod(shape)).reshape(shape) * 0.125 - 7).astype(dtype)


# ----------------------------------------------------------------------------------------------
# forward against the reference

@pytest.mark.parametrize("k,s,p,d", GRID)
def test_max_pool_matches_reference(k, s, p, d):
    kk, pp, dd = pair(k), pair(p), pair(d)
    ss = kk if s is None else pair(s)
    for dtype, ceil_mode in MODES:
        x = _x(dtype)
        if not valid(kk, pp, dd):
            with pytest.raises(ValueError, match="half of the dilated kernel"):
                pooling.max_pool2d(x, k, s, p, d, ceil_mode)
            continue
        y, idx = pooling.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
        y_ref, idx_ref = ref_max_pool(x, kk, ss, pp, dd, ceil_mode)
        assert y.dtype == dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(y, y_ref.astype(dtype), err_msg=f"{dtype} {ceil_mode}")
        np.testing.assert_array_equal(idx, idx_ref, err_msg=f"{dtype} {ceil_mode}")
        np.testing.assert_array_equal(pooling.max_pool2d(x, k, s, p, d, ceil_mode), y)


@pytest.mark.parametrize("level", sorted(_algorithms.simd_modules("_pool")))
@pytest.mark.parametrize("per_tap", [False, True], ids=["vectorised", "per_tap"])
@pytest.mark.parametrize("channels", [1, 15, 16, 17, 33, 63, 64, 65, 129])
def test_max_pool_for_channel_counts_around_the_kernels_blocks(channels, per_tap, level,
                                                               monkeypatch):
    """The kernel keeps 64 channels' maxima and taps at a time (with indices or not): ties
    (the first wins), NaN (the last wins), dilation and padding in every block and its tail,
    in every instruction-set variant built; windows of more than 64 taps, whose indices are
    computed rather than looked up. per_tap: every window through the loop that windows of
    2**31 taps or more take."""
    monkeypatch.setattr(pooling, "_pool", _algorithms.simd_modules("_pool")[level])
    if per_tap:
        monkeypatch.setattr(pooling, "_VECTOR_WINDOW_TAPS", 0)
    rng = np.random.default_rng(channels)
    x = rng.integers(0, 4, (2, 10, 9, channels)).astype(np.float32)  # many ties
    x[0, 1, 2, ::3] = np.nan
    x[1, 4, 0, 1::2] = np.nan
    x[1, 4, 1, 1::4] = np.nan
    for k, s, p, d in [(3, 2, 1, 1), ((2, 3), 1, (1, 0), 2), (2, None, 0, 1),
                       ((9, 8), 1, 4, 1)]:
        y, idx = pooling.max_pool2d(x, k, s, p, d, return_indices=True)
        y_ref, idx_ref = ref_max_pool(x, pair(k), pair(k if s is None else s), pair(p),
                                      pair(d), False)
        np.testing.assert_array_equal(y, y_ref.astype(np.float32))
        np.testing.assert_array_equal(idx, idx_ref)
        np.testing.assert_array_equal(pooling.max_pool2d(x, k, s, p, d), y)


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("k,s,p", AVG_GRID)
def test_avg_pool_matches_reference(k, s, p, count_include_pad):
    kk, pp = pair(k), pair(p)
    ss = kk if s is None else pair(s)
    for dtype, ceil_mode in MODES:
        x = _x(dtype)
        if not valid(kk, pp, (1, 1)):
            with pytest.raises(ValueError, match="half of the dilated kernel"):
                pooling.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
            continue
        y = pooling.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
        y_ref = ref_avg_pool(x, kk, ss, pp, ceil_mode, count_include_pad)
        assert y.dtype == dtype
        rtol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=rtol * 10,
                                   err_msg=f"{dtype} {ceil_mode}")


def test_ceil_mode_drops_the_window_that_starts_in_the_padding():
    # H = 5, k = 2, s = 2, p = 1: windows start at -1, 1, 3 and (ceil) 5 = H + ... in padding
    x = _x(np.float64, (1, 5, 5, 1))
    assert pooling.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 3, 3, 1)
    # H = 6, k = 3, s = 2, p = 0: ceil gives a last window starting at 4, inside the image
    x = _x(np.float64, (1, 6, 6, 1))
    y = pooling.avg_pool2d(x, 3, 2, 0, ceil_mode=True, count_include_pad=True)
    assert y.shape == (1, 3, 3, 1)
    # the last window holds rows 4 and 5 only: its divisor counts 2 rows, not 3
    np.testing.assert_allclose(y[0, 2, 2, 0], x[0, 4:, 4:, 0].mean(), rtol=1e-14)


def test_unbatched_input_gives_unbatched_output():
    x = _x(np.float32, (5, 6, 2))
    y, idx = pooling.max_pool2d(x, 2, return_indices=True)
    y4, idx4 = pooling.max_pool2d(x[None], 2, return_indices=True)
    assert y.shape == idx.shape == (2, 3, 2)
    np.testing.assert_array_equal(y, y4[0])
    np.testing.assert_array_equal(idx, idx4[0])
    np.testing.assert_array_equal(pooling.avg_pool2d(x, 2), pooling.avg_pool2d(x[None], 2)[0])
    gy = np.ones((2, 3, 2), np.float32)
    assert pooling.max_pool2d_backward(gy, x, 2).shape == x.shape
    assert pooling.avg_pool2d_backward(gy, x, 2).shape == x.shape


def test_integer_noncontiguous_readonly_input():
    base = np.arange(2 * 8 * 9 * 4, dtype=np.int16).reshape(2, 8, 9, 4)
    x = base[:, ::2, 1::2, ::-1]  # non-contiguous
    x.flags.writeable = False
    before = x.copy()
    y = pooling.max_pool2d(x, 2)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ref_max_pool(x, (2, 2), (2, 2), (0, 0), (1, 1), False)[0])
    a = pooling.avg_pool2d(x.astype(np.int64), 2)
    assert a.dtype == np.float64
    np.testing.assert_allclose(a, ref_avg_pool(x, (2, 2), (2, 2), (0, 0), False, True))
    np.testing.assert_array_equal(x, before)


def test_empty_batch():
    x = np.zeros((0, 4, 4, 3), np.float32)
    y, idx = pooling.max_pool2d(x, 2, return_indices=True)
    assert y.shape == idx.shape == (0, 2, 2, 3)
    assert pooling.avg_pool2d_backward(np.zeros((0, 2, 2, 3)), x, 2).shape == x.shape


# ----------------------------------------------------------------------------------------------
# NaN and infinities

def test_max_pool_propagates_nan_with_the_index_of_the_last_nan():
    x = np.array([1.0, np.nan, 3.0, np.nan, 0.5, 2.0]).reshape(1, 1, 6, 1)
    y, idx = pooling.max_pool2d(x, (1, 4), stride=(1, 2), return_indices=True)
    # windows [1, nan, 3, nan] and [3, nan, 0.5, 2]
    assert np.isnan(y).all()
    np.testing.assert_array_equal(idx.ravel(), [3, 3])
    np.testing.assert_array_equal(idx.ravel(), ref_max_pool(x, (1, 4), (1, 2), (0, 0),
                                                            (1, 1), False)[1].ravel())


def test_max_pool_of_all_minus_inf_points_at_the_first_pixel():
    x = np.full((1, 2, 2, 1), -np.inf, np.float32)
    y, idx = pooling.max_pool2d(x, 2, stride=1, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    # each window's first pixel inside the image
    np.testing.assert_array_equal(idx[0, :, :, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_window_wholly_in_padding_gives_minus_inf_and_index_minus_one():
    # k = 2, dilation 3, padding 1 on a 2 x 2 image: the taps are at -1 and 2, both outside
    x = _x(np.float64, (1, 2, 2, 1))
    y, idx = pooling.max_pool2d(x, 2, stride=1, padding=1, dilation=3, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -np.inf and idx[0, 0, 0, 0] == -1
    gx = pooling.max_pool2d_backward(np.ones_like(y), x, 2, 1, 1, 3, indices=idx)
    np.testing.assert_array_equal(gx, np.zeros_like(x))


# ----------------------------------------------------------------------------------------------
# gradients

def _numerical_grad(f, x, gy, eps):
    """d <f(x), gy> / dx by central differences."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (np.sum(f(xp) * gy) - np.sum(f(xm) * gy)) / (2 * eps)
    return g


MAX_GRAD_CASES = [(2, None, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 1, 2, False),
                  ((2, 3), (2, 1), (1, 0), 1, True), (3, 2, 1, (2, 1), True)]


@pytest.mark.parametrize("k,s,p,d,ceil_mode", MAX_GRAD_CASES)
def test_max_pool_backward_by_finite_differences(k, s, p, d, ceil_mode):
    x = _x(np.float64, (2, 5, 6, 2), seed=1)
    y, idx = pooling.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
    gy = np.random.default_rng(2).standard_normal(y.shape)
    expected = _numerical_grad(lambda v: pooling.max_pool2d(v, k, s, p, d, ceil_mode), x, gy,
                               1e-4)
    from_x = pooling.max_pool2d_backward(gy, x, k, s, p, d, ceil_mode)
    from_indices = pooling.max_pool2d_backward(gy, x, k, s, p, d, ceil_mode, indices=idx)
    np.testing.assert_allclose(from_x, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(from_indices, from_x)


def test_max_pool_backward_writes_every_value(nan_filled_memory):
    """The input gradient comes from _memory.empty, not np.zeros: the kernel zeroes it
    itself, pixels that are no window's maximum included. Here that memory starts as NaN."""
    x = _x(np.float64, (2, 7, 9, 70), seed=4)  # channel blocks of 64 and a tail
    for k, s, p, d, ceil_mode in MAX_GRAD_CASES:
        y, idx = pooling.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
        gy = np.random.default_rng(5).standard_normal(y.shape)
        gx = pooling.max_pool2d_backward(gy, x, k, s, p, d, ceil_mode, indices=idx)
        want = np.zeros(x.shape)
        for n, oh, ow, c in np.ndindex(*y.shape):  # the scatter, from the definition
            flat = idx[n, oh, ow, c]
            if flat >= 0:  # -1: a window wholly in the padding
                want[n, flat // x.shape[2], flat % x.shape[2], c] += gy[n, oh, ow, c]
        np.testing.assert_allclose(gx, want, rtol=1e-12, atol=1e-12)
        assert (gx == 0).any()  # pixels that no window took


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("k,s,p,ceil_mode", [(2, None, 0, False), (3, 2, 1, True),
                                             ((2, 3), (1, 2), (1, 1), True), (3, 1, 1, False)])
def test_avg_pool_backward_by_finite_differences(k, s, p, ceil_mode, count_include_pad):
    x = _x(np.float64, (2, 5, 6, 2), seed=3)
    y = pooling.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
    gy = np.random.default_rng(4).standard_normal(y.shape)
    expected = _numerical_grad(lambda v: pooling.avg_pool2d(v, k, s, p, ceil_mode,
                                                            count_include_pad), x, gy, 1e-3)
    got = pooling.avg_pool2d_backward(gy, x, k, s, p, ceil_mode, count_include_pad)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_dtypes_and_float32_accuracy(dtype):
    x = _x(dtype, (2, 6, 6, 3))
    y = pooling.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    gy = np.random.default_rng(5).standard_normal(y.shape).astype(dtype)
    got = pooling.avg_pool2d_backward(gy, x, 3, 1, 1, count_include_pad=False)
    # the adjoint identity <avg(x), gy> = <x, avg_backward(gy)>, in float64
    lhs = np.sum(pooling.avg_pool2d(x.astype(np.float64), 3, 1, 1, count_include_pad=False)
                 * gy.astype(np.float64))
    rhs = np.sum(x.astype(np.float64) * got.astype(np.float64))
    assert got.dtype == dtype
    scale = np.sum(np.abs(x)) * np.abs(gy).max()
    assert abs(lhs - rhs) <= (1e-5 if dtype == np.float32 else 1e-13) * scale
    gm = pooling.max_pool2d_backward(gy[:, :2, :2], x, 3)
    assert gm.dtype == dtype


# ----------------------------------------------------------------------------------------------
# PyTorch

@pytest.fixture(scope="module")
def torch_f():
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: threads only add waiting on a busy machine
    yield torch, torch.nn.functional
    torch.set_num_threads(threads)


def _nchw(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k,s,p,d", [g for g in GRID if valid(pair(g[0]), pair(g[2]),
                                                             pair(g[3]))])
def test_max_pool_matches_torch(torch_f, k, s, p, d):
    torch, F = torch_f
    for dtype, ceil_mode in MODES:
        x = np.random.default_rng(6).standard_normal(SHAPE).astype(dtype)
        xt = _nchw(torch, x).requires_grad_()
        yt, it = F.max_pool2d(xt, k, s, p, d, ceil_mode, return_indices=True)
        gy = np.random.default_rng(7).standard_normal(_nhwc(yt).shape).astype(dtype)
        yt.backward(_nchw(torch, gy))
        y, idx = pooling.max_pool2d(x, k, s, p, d, ceil_mode, return_indices=True)
        np.testing.assert_array_equal(y, _nhwc(yt))
        np.testing.assert_array_equal(idx, _nhwc(it))
        gx = pooling.max_pool2d_backward(gy, x, k, s, p, d, ceil_mode, indices=idx)
        tol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(gx, _nhwc(xt.grad), rtol=tol, atol=tol,
                                   err_msg=f"{dtype} {ceil_mode}")


@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("k,s,p", [g for g in AVG_GRID if valid(pair(g[0]), pair(g[2]),
                                                                (1, 1))])
def test_avg_pool_matches_torch(torch_f, k, s, p, count_include_pad):
    torch, F = torch_f
    for dtype, ceil_mode in MODES:
        x = np.random.default_rng(8).standard_normal(SHAPE).astype(dtype)
        xt = _nchw(torch, x).requires_grad_()
        yt = F.avg_pool2d(xt, k, s, p, ceil_mode, count_include_pad)
        gy = np.random.default_rng(9).standard_normal(_nhwc(yt).shape).astype(dtype)
        yt.backward(_nchw(torch, gy))
        tol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(pooling.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad),
                                   _nhwc(yt), rtol=tol, atol=tol, err_msg=f"{dtype} {ceil_mode}")
        np.testing.assert_allclose(pooling.avg_pool2d_backward(gy, x, k, s, p, ceil_mode,
                                                               count_include_pad),
                                   _nhwc(xt.grad), rtol=tol, atol=tol,
                                   err_msg=f"{dtype} {ceil_mode}")


# ----------------------------------------------------------------------------------------------
# threads

def test_same_results_with_one_and_two_threads(monkeypatch):
    monkeypatch.setattr(_threads, "MIN_WORK_PER_THREAD", 1)  # thread even small problems
    x = np.random.default_rng(10).standard_normal((3, 9, 10, 70)).astype(np.float32)
    results = []
    for n in (1, 2):
        with fastconv.num_threads(n):
            y, idx = pooling.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
            gy = np.cos(y)
            a = pooling.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
            results.append([y, idx, pooling.max_pool2d_backward(gy, x, 3, 2, 1, ceil_mode=True),
                            pooling.max_pool2d_backward(gy, x, 3, 2, 1, ceil_mode=True,
                                                        indices=idx),
                            a, pooling.avg_pool2d_backward(np.sin(a), x, 3, 1, 1,
                                                           count_include_pad=False)])
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------------------------------------------
# bad arguments

X = np.zeros((1, 6, 6, 2), np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: pooling.max_pool2d(X, 3, padding=2), ValueError, "half of the dilated kernel"),
    (lambda: pooling.avg_pool2d(X, 2, padding=(0, 2)), ValueError, "half of the dilated"),
    (lambda: pooling.max_pool2d(X, 7), ValueError, "padded input size"),
    (lambda: pooling.max_pool2d(X, 3, dilation=3), ValueError, "dilated kernel size"),
    (lambda: pooling.max_pool2d(X, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: pooling.max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: pooling.max_pool2d(X, 2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: pooling.max_pool2d(X, 2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: pooling.max_pool2d(X, 2, padding="full"), ValueError, "'valid' or 'same'"),
    (lambda: pooling.max_pool2d(X, 2, padding=1.5), TypeError, "padding must be an int"),
    (lambda: pooling.avg_pool2d(X, 2, padding=(1, 1, 1)), TypeError, r"\(top, bottom\)"),
    (lambda: pooling.avg_pool2d(X, 2, padding=((0, -1), (0, 1))), ValueError, ">= 0"),
    (lambda: pooling.avg_pool2d(X, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: pooling.avg_pool2d(X, 2, divisor_override=2.5), TypeError, "divisor_override"),
    (lambda: pooling.max_pool1d(X, 2), ValueError, r"\(L, C\) or \(N, L, C\)"),
    (lambda: pooling.avg_pool1d_backward(np.zeros((1, 2, 2)), X[:, 0], 2), ValueError,
     r"grad_output of shape \(1, 3, 2\) \[NLC\]"),
    (lambda: pooling.max_pool1d(X[:, 0], 3, padding=2), ValueError, "half of the dilated"),
    (lambda: pooling.max_pool2d(X, 2.0), TypeError, "kernel_size must be an int"),
    (lambda: pooling.max_pool2d(X, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda: pooling.max_pool2d(X, 2, return_indices="yes"), TypeError, "return_indices"),
    (lambda: pooling.avg_pool2d(X, 2, count_include_pad=None), TypeError, "count_include_pad"),
    (lambda: pooling.max_pool2d(X[0, 0], 2), ValueError, "expected input to be 3-D or 4-D"),
    (lambda: pooling.avg_pool2d(X.astype(complex), 2), TypeError, "real numbers"),
    (lambda: pooling.max_pool2d(X.astype(np.longdouble), 2), TypeError, "real numbers of at most 64 bits"),
    (lambda: pooling.max_pool2d_backward(np.zeros((1, 2, 2, 2)), X, 2), ValueError,
     r"grad_output of shape \(1, 3, 3, 2\)"),
    (lambda: pooling.avg_pool2d_backward(np.zeros((1, 3, 3, 1)), X, 2), ValueError,
     r"grad_output of shape \(1, 3, 3, 2\)"),
    (lambda: pooling.max_pool2d_backward(np.zeros((1, 3, 3, 2)), X, 2,
                                         indices=np.zeros((1, 3, 3, 1), np.int64)),
     ValueError, "indices of shape"),
    (lambda: pooling.max_pool2d_backward(np.zeros((1, 3, 3, 2)), X, 2,
                                         indices=np.full((1, 3, 3, 2), 36)),
     ValueError, "H \\* W = 36"),
    (lambda: pooling.max_pool2d_backward(np.zeros((1, 3, 3, 2)), X, 2,
                                         indices=np.full((1, 3, 3, 2), -2)),
     ValueError, "flat indices"),
    (lambda: pooling.max_pool2d_backward(np.zeros((1, 3, 3, 2)), X, 2,
                                         indices=np.zeros((1, 3, 3, 2))),
     TypeError, "indices must be integers"),
])
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("forms, plain", [
    (dict(kernel_size=(3,), stride=(), padding=(1,)), dict(kernel_size=3, padding=1)),
    (dict(kernel_size=(2,), stride=[]), dict(kernel_size=2)),
    (dict(kernel_size=3, stride=(2,), padding=(1,), dilation=(1,)),
     dict(kernel_size=3, stride=2, padding=1)),
])
def test_pytorch_one_tuple_and_empty_stride_forms(forms, plain, rng):
    """PyTorch's pool2d takes 1-tuples for both axes and stride=() for the default; so do
    the functions and the layers (issue: 1-D and PyTorch argument forms)."""
    x = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **forms), fastconv.max_pool2d(x, **plain))
    avg_forms = {k: v for k, v in forms.items() if k != "dilation"}
    np.testing.assert_array_equal(fastconv.avg_pool2d(x, **avg_forms),
                                  fastconv.avg_pool2d(x, **plain))
    np.testing.assert_array_equal(fastconv.MaxPool2d(**forms)(x), fastconv.max_pool2d(x, **plain))
    np.testing.assert_array_equal(fastconv.AvgPool2d(**avg_forms)(x),
                                  fastconv.avg_pool2d(x, **plain))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    expected = torch.nn.functional.max_pool2d(t, **forms).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **forms), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=2),
                                    dict(kernel_size=3, dilation=2, padding=2, ceil_mode=True)])
def test_max_pool_without_indices_equals_the_indexed_kernel(dtype, kwargs, rng):
    """max_pool2d(return_indices=False) and an eval-mode MaxPool2d run a kernel that finds
    the maxima alone; its values (NaN and infinities included) are the indexed kernel's."""
    x = rng.standard_normal((2, 9, 9, 19)).astype(dtype)
    x[0, 3, 4, 5], x[1, 0, 0, :], x[1, 2, 2, 3] = np.nan, np.inf, -np.inf
    indexed, _ = fastconv.max_pool2d(x, return_indices=True, **kwargs)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **kwargs), indexed)
    layer = fastconv.MaxPool2d(kwargs["kernel_size"], kwargs.get("stride"),
                               kwargs.get("padding", 0), kwargs.get("dilation", 1),
                               ceil_mode=kwargs.get("ceil_mode", False))
    np.testing.assert_array_equal(layer.eval()(x), indexed)
