"""Pooling as ONNX and Keras models use it (issue 15, item 7): asymmetric and large pads,
"same", divisor_override, dilation for average pooling, and max_pool1d / avg_pool1d, against
a reference written from the definition (ONNX's MaxPool / AveragePool spec, PyTorch's
divisor_override), against PyTorch where it can express the case, and gradients by finite
differences."""
import math

import numpy as np
import pytest

from fastconv import layers, pooling


def ref_size(n, k, s, pads, d, ceil_mode):
    """floor or ceil of (n + before + after - d(k-1) - 1) / s, plus one; in ceil mode a
    window that would start in the after padding is dropped."""
    exact = (n + pads[0] + pads[1] - d * (k - 1) - 1) / s
    out = (math.ceil(exact) if ceil_mode else math.floor(exact)) + 1
    return out - 1 if ceil_mode and (out - 1) * s >= n + pads[0] else out


def ref_pool(x, kind, k, s, pads, d, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    """max: the largest input pixel of each window (-inf for none; ties: the first).
    avg: the sum of its input pixels over divisor_override, or over the number of its taps
    inside the padded image (count_include_pad) or inside the image (0 when none: 0)."""
    x = np.asarray(x, np.float64)
    n, h, w, c = x.shape
    sizes = (h, w)
    outs = [ref_size(sizes[a], k[a], s[a], pads[a], d[a], ceil_mode) for a in range(2)]
    y = np.zeros((n, *outs, c))
    for i in range(outs[0]):
        for j in range(outs[1]):
            taps = [[o * s[a] - pads[a][0] + r * d[a] for r in range(k[a])]
                    for a, o in enumerate((i, j))]
            inside = [[p for p in taps[a] if 0 <= p < sizes[a]] for a in range(2)]
            values = [x[:, p, q] for p in inside[0] for q in inside[1]]
            if kind == "max":
                y[:, i, j] = np.max(values, axis=0) if values else -np.inf
                continue
            if divisor_override is not None:
                count = divisor_override
            elif count_include_pad:
                count = math.prod(sum(p < sizes[a] + pads[a][1] for p in taps[a])
                                  for a in range(2))
            else:
                count = len(inside[0]) * len(inside[1])
            y[:, i, j] = np.sum(values, axis=0) / count if values and count else 0
    return y


def _x(shape, dtype=np.float64, seed=0):
    """Distinct values (no ties: gradients well defined)."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(math.prod(shape)).reshape(shape) * 0.125 - 5).astype(dtype)


# kernel, stride, padding as passed, the pads it means, dilation, ceil_mode
CASES = [
    ((3, 3), (2, 2), ((0, 2), (1, 0)), ((0, 2), (1, 0)), (1, 1), False),
    ((3, 3), (2, 2), ((0, 2), (1, 0)), ((0, 2), (1, 0)), (1, 1), True),
    ((2, 2), (1, 2), ((3, 0), (0, 4)), ((3, 0), (0, 4)), (1, 1), False),  # pads beyond k
    ((3, 2), (2, 1), ((1, 2), (2, 1)), ((1, 2), (2, 1)), (2, 3), True),  # dilation
    ((3, 3), (2, 2), "same", ((1, 1), (0, 1)), (1, 1), False),  # 7 x 6: out 4 x 3
    ((2, 2), (1, 1), "same", ((0, 1), (0, 1)), (1, 1), False),
    ((2, 3), (1, 1), "valid", ((0, 0), (0, 0)), (1, 2), False),
]
SHAPE = (2, 7, 6, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_max_pool_pads_match_reference(case, dtype):
    k, s, padding, pads, d, ceil_mode = case
    x = _x(SHAPE, dtype)
    y = pooling.max_pool2d(x, k, s, padding, d, ceil_mode)
    np.testing.assert_array_equal(y, ref_pool(x, "max", k, s, pads, d, ceil_mode))
    assert y.dtype == dtype


@pytest.mark.parametrize("divisor_override", [None, 5])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_avg_pool_pads_match_reference(case, count_include_pad, divisor_override):
    k, s, padding, pads, d, ceil_mode = case
    x = _x(SHAPE)
    y = pooling.avg_pool2d(x, k, s, padding, ceil_mode, count_include_pad, divisor_override, d)
    expected = ref_pool(x, "avg", k, s, pads, d, ceil_mode, count_include_pad, divisor_override)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    y32 = pooling.avg_pool2d(x.astype(np.float32), k, s, padding, ceil_mode, count_include_pad,
                             divisor_override, d)
    np.testing.assert_allclose(y32, expected, rtol=1e-6, atol=1e-5)


def _numerical_grad(f, x, gy, eps=1e-4):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (np.sum(f(xp) * gy) - np.sum(f(xm) * gy)) / (2 * eps)
    return g


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3], CASES[4]],
                         ids=["ceil", "large", "dilated", "same"])
def test_gradients_by_finite_differences(case):
    k, s, padding, _, d, ceil_mode = case
    x = _x((1, 7, 6, 2), seed=1)
    rng = np.random.default_rng(2)
    y = pooling.max_pool2d(x, k, s, padding, d, ceil_mode)
    gy = np.where(np.isinf(y), 0, rng.standard_normal(y.shape))  # windows wholly in padding
    expected = _numerical_grad(
        lambda v: np.where(np.isinf(y), 0, pooling.max_pool2d(v, k, s, padding, d, ceil_mode)),
        x, gy)
    np.testing.assert_allclose(pooling.max_pool2d_backward(gy, x, k, s, padding, d, ceil_mode),
                               expected, atol=1e-8)
    for include, override in ((False, None), (True, None), (True, 7)):
        args = (k, s, padding, ceil_mode, include, override, d)
        gy = rng.standard_normal(pooling.avg_pool2d(x, *args).shape)
        expected = _numerical_grad(lambda v: pooling.avg_pool2d(v, *args), x, gy)
        np.testing.assert_allclose(pooling.avg_pool2d_backward(gy, x, *args), expected,
                                   atol=1e-8)


def test_pytorch_forms_keep_pytorchs_limit_and_pairs_lift_it():
    x = _x((1, 5, 5, 1))
    with pytest.raises(ValueError, match=r"\(\(top, bottom\), \(left, right\)\)"):
        pooling.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="half of the dilated"):
        layers.AvgPool2d(2, padding=(0, 2))
    y = pooling.max_pool2d(x, 2, padding=((2, 2), (2, 2)))  # ONNX's pads: any size
    np.testing.assert_array_equal(y, ref_pool(x, "max", (2, 2), (2, 2), ((2, 2), (2, 2)),
                                              (1, 1)))


def test_layers_take_the_new_arguments():
    x = _x((2, 7, 6, 3))
    pool = layers.AvgPool2d(3, 2, ((0, 2), (1, 0)), True, False, divisor_override=4,
                            dilation=(1, 2))
    y = pool(x)
    np.testing.assert_allclose(y, ref_pool(x, "avg", (3, 3), (2, 2), ((0, 2), (1, 0)), (1, 2),
                                           True, False, 4), rtol=1e-12)
    np.testing.assert_allclose(pool.backward(np.ones_like(y)), pooling.avg_pool2d_backward(
        np.ones_like(y), x, 3, 2, ((0, 2), (1, 0)), True, False, 4, (1, 2)))
    assert "divisor_override=4" in repr(pool) and "dilation=(1, 2)" in repr(pool)
    mp = layers.MaxPool2d(3, 2, "same")
    np.testing.assert_array_equal(mp(x), ref_pool(x, "max", (3, 3), (2, 2), ((1, 1), (0, 1)),
                                                  (1, 1)))


# ----------------------------------------------------------------------------------------------
# 1-D: (N, L, C)

ONE_D = [  # kernel, stride, padding as passed, the pads it means, dilation, ceil_mode
    (3, 2, 1, (1, 1), 1, True),
    (3, 1, (1,), (1, 1), 2, False),
    (2, 2, (0, 3), (0, 3), 1, False),
    (4, 3, "same", (0, 1), 1, False),  # L 9: out 3, one padded cell at the end
]


@pytest.mark.parametrize("case", ONE_D, ids=range(len(ONE_D)))
def test_one_d_pooling_matches_reference_and_gradients(case):
    k, s, padding, pads, d, ceil_mode = case
    x = _x((2, 9, 3), seed=3)
    as_2d = ((1, k), (1, s), ((0, 0), pads), (1, d), ceil_mode)
    y, idx = pooling.max_pool1d(x, k, s, padding, d, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, ref_pool(x[:, None], "max", *as_2d)[:, 0])
    assert idx.shape == y.shape and idx.max() < 9
    np.testing.assert_array_equal(np.take_along_axis(x, np.maximum(idx, 0), axis=1)[idx >= 0],
                                  y[idx >= 0])
    ya = pooling.avg_pool1d(x, k, s, padding, ceil_mode, False, dilation=d)
    np.testing.assert_allclose(ya, ref_pool(x[:, None], "avg", *as_2d, False)[:, 0], rtol=1e-12)
    # unbatched (L, C)
    np.testing.assert_array_equal(pooling.max_pool1d(x[1], k, s, padding, d, ceil_mode), y[1])
    rng = np.random.default_rng(4)
    gy = np.where(np.isinf(y), 0, rng.standard_normal(y.shape))  # windows wholly in padding
    expected = _numerical_grad(
        lambda v: np.where(np.isinf(y), 0, pooling.max_pool1d(v, k, s, padding, d, ceil_mode)),
        x, gy)
    np.testing.assert_allclose(pooling.max_pool1d_backward(gy, x, k, s, padding, d, ceil_mode),
                               expected, atol=1e-8)
    np.testing.assert_allclose(pooling.max_pool1d_backward(gy, x, k, s, padding, d, ceil_mode,
                                                           indices=idx), expected, atol=1e-8)
    gy = rng.standard_normal(ya.shape)
    expected = _numerical_grad(
        lambda v: pooling.avg_pool1d(v, k, s, padding, ceil_mode, False, dilation=d), x, gy)
    np.testing.assert_allclose(pooling.avg_pool1d_backward(gy, x, k, s, padding, ceil_mode,
                                                           False, dilation=d), expected,
                               atol=1e-8)


# ----------------------------------------------------------------------------------------------
# PyTorch, where it can express the case

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_divisor_override_matches_pytorch(torch, ceil_mode, count_include_pad):
    x = _x((2, 7, 6, 3))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    yt = torch.nn.functional.avg_pool2d(xt, 3, 2, 1, ceil_mode, count_include_pad, 5)
    y = pooling.avg_pool2d(x, 3, 2, 1, ceil_mode, count_include_pad, 5)
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    gy = np.random.default_rng(5).standard_normal(y.shape)
    yt.backward(torch.from_numpy(gy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(pooling.avg_pool2d_backward(gy, x, 3, 2, 1, ceil_mode,
                                                           count_include_pad, 5),
                               xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-12)


@pytest.mark.parametrize("k,s,p,d,ceil_mode", [(3, 2, 1, 1, True), (2, 1, (1,), 2, False),
                                               (4, 3, 2, 1, True)])
def test_one_d_matches_pytorch(torch, k, s, p, d, ceil_mode):
    x = _x((2, 11, 3), seed=6)
    xt = torch.from_numpy(x.transpose(0, 2, 1).copy())
    F = torch.nn.functional
    y, idx = pooling.max_pool1d(x, k, s, p, d, ceil_mode, return_indices=True)
    yt, it = F.max_pool1d(xt, k, s, p, d, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy().transpose(0, 2, 1))
    np.testing.assert_array_equal(idx, it.numpy().transpose(0, 2, 1))
    for include in (False, True):
        ya = pooling.avg_pool1d(x, k, s, p, ceil_mode, include)
        yta = F.avg_pool1d(xt, k, s, p, ceil_mode, include)
        np.testing.assert_allclose(ya, yta.numpy().transpose(0, 2, 1), rtol=1e-12)


def test_asymmetric_pads_match_pytorch_with_explicit_padding(torch):
    """Without ceil_mode, ONNX's pads are PyTorch's pooling of an explicitly padded input
    (-inf for max; zeros for an average that counts them)."""
    x = _x((2, 7, 6, 3))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    F = torch.nn.functional
    for k, s, pads in (((3, 3), (2, 2), ((0, 2), (1, 0))), ((2, 3), (1, 2), ((3, 1), (0, 4)))):
        torch_pads = (*pads[1], *pads[0])  # F.pad: (left, right, top, bottom)
        expected = F.max_pool2d(F.pad(xt, torch_pads, value=-math.inf), k, s)
        np.testing.assert_array_equal(pooling.max_pool2d(x, k, s, pads),
                                      expected.numpy().transpose(0, 2, 3, 1))
        expected = F.avg_pool2d(F.pad(xt, torch_pads), k, s)
        np.testing.assert_allclose(pooling.avg_pool2d(x, k, s, pads),
                                   expected.numpy().transpose(0, 2, 3, 1), rtol=1e-12)
