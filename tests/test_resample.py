"""Adaptive pooling, interpolate / Upsample, Dropout / Dropout2d and Identity: references from
the definitions (loops), adjoint identities and finite differences, PyTorch cross-checks."""
import math

import numpy as np
import pytest

import fastconv as fc
from fastconv import layers as L
from _gradcheck import assert_grad

DTYPES = (np.float32, np.float64)
SIZES = [1, (3, 2), (5, None), (4, 9), (10, 3)]  # input 5 x 7: shrink, keep, grow


def _bin(i, size, out):
    return math.floor(i * size / out), math.ceil((i + 1) * size / out)


def adaptive_reference(x, out_hw, reduce):
    n, h, w, c = x.shape
    y = np.empty((n, *out_hw, c))
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            (h0, h1), (w0, w1) = _bin(i, h, out_hw[0]), _bin(j, w, out_hw[1])
            y[:, i, j] = reduce(x[:, h0:h1, w0:w1].reshape(n, -1, c), axis=1)
    return y


def _out_hw(size, hw):
    size = (size, size) if not isinstance(size, tuple) else size
    return tuple(s if o is None else o for o, s in zip(size, hw))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_pooling_matches_the_definition(size, dtype):
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 5 * 7 * 3).reshape(2, 5, 7, 3).astype(dtype)  # no ties
    out_hw = _out_hw(size, (5, 7))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    avg = fc.adaptive_avg_pool2d(x, size)
    assert avg.dtype == dtype
    np.testing.assert_allclose(avg, adaptive_reference(x, out_hw, np.mean), rtol=tol)
    y, idx = fc.adaptive_max_pool2d(x, size, return_indices=True)
    np.testing.assert_array_equal(y, adaptive_reference(x, out_hw, np.max))
    flat = x.reshape(2, 35, 3)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx.reshape(2, -1, 3), 1),
                                  y.reshape(2, -1, 3))
    # one unbatched image gives a 3-D result
    np.testing.assert_array_equal(fc.adaptive_max_pool2d(x[1], size), y[1])


@pytest.mark.parametrize("shape", [(0, 3, 3, 5), (1, 1, 1, 1), (3, 7, 7, 129), (2, 4, 9, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_global_average_pooling_is_the_mean_of_each_map(shape, dtype):
    """output_size 1 (one window over the whole map): the float64 mean per image and
    channel, on contiguous and strided inputs, in the result dtype of the input."""
    rng = np.random.default_rng(2)
    big = rng.standard_normal((shape[0], shape[1], 2 * shape[2], shape[3] + 1)) * 100
    for x in (big[:, :, ::2, 1:].astype(dtype), np.ascontiguousarray(big[:, :, :shape[2], :-1]
                                                                       .astype(dtype))):
        y = fc.adaptive_avg_pool2d(x, 1)
        out_dtype = np.float64 if dtype == np.float64 else np.float32
        assert y.shape == (shape[0], 1, 1, shape[3]) and y.dtype == out_dtype
        tol = 1e-12 if out_dtype == np.float64 else 1e-5
        np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(1, 2), keepdims=True),
                                   rtol=tol, atol=tol * 100)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_adaptive_average_pooling_to_the_input_size_is_a_copy(dtype):
    # one pixel per bin (VGG's 7x7 -> 7x7): the input's values, in a new C-contiguous array
    # of the result dtype, on contiguous, strided and channels-last views of NCHW memory;
    # an inf stays in its own pixel (the two averaging products spread it as NaN)
    x = np.random.default_rng(3).standard_normal((2, 7, 14, 5)).astype(dtype)
    if dtype != np.int16:
        x[1, 3, 4, 2] = np.inf
    channels_last = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    for view in (x, x[:, :, ::2], channels_last):
        y = fc.adaptive_avg_pool2d(view, (7, None))
        assert y.dtype == (np.float64 if dtype == np.float64 else np.float32)
        assert y.flags.c_contiguous and not np.shares_memory(y, view)
        np.testing.assert_array_equal(y, view.astype(y.dtype))


@pytest.mark.parametrize("size", [(3, 2), (4, 9)])
def test_adaptive_pooling_backward(size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 7, 2))
    g = rng.standard_normal((2, *size, 2))
    gx = fc.adaptive_avg_pool2d_backward(g, x, size)
    assert_grad(gx, lambda v: fc.adaptive_avg_pool2d(v, size), x.copy(), g, coords=20, rng=0)
    gx = fc.adaptive_max_pool2d_backward(g, x, size)
    assert_grad(gx, lambda v: fc.adaptive_max_pool2d(v, size), x.copy(), g, coords=20, rng=0)
    _, idx = fc.adaptive_max_pool2d(x, size, return_indices=True)
    np.testing.assert_array_equal(fc.adaptive_max_pool2d_backward(g, x, size, indices=idx), gx)


def test_adaptive_pooling_errors():
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match=r"output_size\[0\] must be >= 1, but got 0"):
        fc.adaptive_avg_pool2d(x, 0)
    with pytest.raises(TypeError, match="output_size must be an int or a pair"):
        fc.adaptive_avg_pool2d(x, (1, 2, 3))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(1, 2, 2, 2\)"):
        fc.adaptive_max_pool2d_backward(np.zeros((1, 3, 3, 2)), x, 2)
    with pytest.raises(ValueError, match=r"indices must be flat indices into each image's "
                                         r"H \* W = 16 plane"):
        fc.adaptive_max_pool2d_backward(np.zeros((1, 2, 2, 2)), x, 2,
                                        indices=np.full((1, 2, 2, 2), 16))
    with pytest.raises(ValueError, match="expected input to be 3-D or 4-D"):
        fc.adaptive_avg_pool2d(np.zeros((4, 4)), 1)
    assert fc.adaptive_avg_pool2d(np.zeros((0, 4, 4, 2)), 2).shape == (0, 2, 2, 2)


# ----------------------------------------------------------------------------------------------
# interpolate

def interpolate_reference(x, out_hw, mode, align_corners=False, scales=(None, None)):
    """The definition per output pixel (float64; 'nearest' in float32 as PyTorch computes it)."""
    n, h, w, c = x.shape
    y = np.zeros((n, *out_hw, c))

    def source(dst, size, out, scale):
        if mode == "nearest":
            s = np.float32(1 / scale) if scale else np.float32(size) / np.float32(out)
            return min(int(np.floor(np.float32(dst) * s)), size - 1)
        if align_corners:
            return dst * (size - 1) / (out - 1) if out > 1 else 0.0
        s = 1 / scale if scale else size / out
        return max((dst + 0.5) * s - 0.5, 0.0)

    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            sh, sw = source(i, h, out_hw[0], scales[0]), source(j, w, out_hw[1], scales[1])
            if mode == "nearest":
                y[:, i, j] = x[:, sh, sw]
                continue
            h0, w0 = int(sh), int(sw)
            h1, w1 = min(h0 + 1, h - 1), min(w0 + 1, w - 1)
            a, b = sh - h0, sw - w0
            y[:, i, j] = ((1 - a) * ((1 - b) * x[:, h0, w0] + b * x[:, h0, w1])
                          + a * ((1 - b) * x[:, h1, w0] + b * x[:, h1, w1]))
    return y


INTERPOLATIONS = [
    dict(size=(9, 11)), dict(size=(3, 2)), dict(size=(10, 14)), dict(scale_factor=1.5),
    dict(scale_factor=(0.7, 2.3)), dict(scale_factor=1.5, recompute_scale_factor=True),
    dict(size=(9, 11), mode="bilinear"), dict(size=(3, 2), mode="bilinear"),
    dict(scale_factor=1.7, mode="bilinear"), dict(size=(1, 3), mode="bilinear", align_corners=True),
    dict(size=(9, 11), mode="bilinear", align_corners=True),
    dict(scale_factor=(0.6, 3), mode="bilinear", align_corners=False),
]


def _case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items()).replace(" ", "")


@pytest.mark.parametrize("case", INTERPOLATIONS, ids=_case_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_interpolate_matches_the_definition(case, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 7, 3)).astype(dtype)
    y = fc.interpolate(x, **case)
    factor = case.get("scale_factor")
    factors = (factor, factor) if not isinstance(factor, tuple) else factor
    out_hw = case.get("size") or tuple(math.floor(n * f) for n, f in zip((5, 7), factors))
    scales = (None, None) if factor is None or case.get("recompute_scale_factor") else factors
    expected = interpolate_reference(x.astype(np.float64), out_hw, case.get("mode", "nearest"),
                                     bool(case.get("align_corners")), scales)
    assert y.dtype == dtype and y.shape == expected.shape
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)
    # the backward is the adjoint: <interpolate(x), g> = <x, interpolate_backward(g)>
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = fc.interpolate_backward(g, x, **case)
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_allclose(np.sum(y * g, dtype=np.float64), np.sum(x * gx, dtype=np.float64),
                               rtol=tol * 10)


def test_interpolate_backward_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 5, 2))
    for case in (dict(scale_factor=2), dict(size=(7, 3), mode="bilinear")):
        y = fc.interpolate(x, **case)
        g = rng.standard_normal(y.shape)
        assert_grad(fc.interpolate_backward(g, x, **case), lambda v: fc.interpolate(v, **case),
                    x.copy(), g)


def test_interpolate_errors():
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        fc.interpolate(x, size=2, scale_factor=2)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        fc.interpolate(x)
    with pytest.raises(ValueError, match="align_corners can only be set with mode='bilinear'"):
        fc.interpolate(x, size=2, align_corners=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        fc.interpolate(x, size=2, mode="bicubic")
    with pytest.raises(ValueError, match="recompute_scale_factor is not meaningful"):
        fc.interpolate(x, size=2, recompute_scale_factor=True)
    with pytest.raises(ValueError, match=r"every output size must be >= 1"):
        fc.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match=r"scale_factor\[0\] must be a finite number > 0"):
        fc.interpolate(x, scale_factor=-1)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(1, 8, 8, 2\)"):
        fc.interpolate_backward(np.zeros((1, 4, 4, 2)), x, scale_factor=2)


# ----------------------------------------------------------------------------------------------
# layers

def test_pooling_and_upsample_layers():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, 6, 3))
    g1 = rng.standard_normal((2, 1, 1, 3))
    gap = L.AdaptiveAvgPool2d(1)
    np.testing.assert_allclose(gap(x), x.mean(axis=(1, 2), keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(gap.backward(g1), np.broadcast_to(g1 / 30, x.shape), rtol=1e-12)
    amp = L.AdaptiveMaxPool2d((2, None))
    y = amp(x)
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(amp.backward(g), fc.adaptive_max_pool2d_backward(g, x, (2, None)))
    up = L.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    y = up(x)
    g = rng.standard_normal(y.shape)
    np.testing.assert_array_equal(y, fc.interpolate(x, scale_factor=2.0, mode="bilinear",
                                                    align_corners=True))
    np.testing.assert_array_equal(up.backward(g), fc.interpolate_backward(
        g, x, scale_factor=2.0, mode="bilinear", align_corners=True))
    assert [repr(m) for m in (gap, amp, up, L.Upsample((3, 4)), L.Identity())] == [
        "AdaptiveAvgPool2d(output_size=1)", "AdaptiveMaxPool2d(output_size=(2, None))",
        "Upsample(scale_factor=2.0, mode='bilinear')", "Upsample(size=(3, 4), mode='nearest')",
        "Identity()"]
    with pytest.raises(ValueError, match="align_corners can only be set"):
        L.Upsample(size=3, align_corners=False)
    with pytest.raises(ValueError, match=r"output_size\[1\] must be >= 1"):
        L.AdaptiveAvgPool2d((1, 0))


def test_dropout():
    x = np.ones((4, 50, 50))
    layer = L.Dropout(0.3, rng=0)
    y = layer(x)
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7)
    g = np.random.default_rng(5).standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(g), np.where(kept, g / 0.7, 0), rtol=1e-15)
    np.testing.assert_array_equal(L.Dropout(0.3, rng=0)(x), y)  # seedable
    assert not np.array_equal(layer(x), y)  # the generator moves on
    assert layer.eval()(x) is x  # eval: the identity
    assert not L.Dropout(1.0, rng=0)(x).any() and L.Dropout(0.0)(x).dtype == np.float64
    inplace = x.astype(np.float32)
    assert L.Dropout(0.5, inplace=True, rng=1)(inplace) is inplace
    inplace.flags.writeable = False  # and what it cannot overwrite: the layer's TypeError
    for bad, what in ((inplace, "float32 array .* read-only float32"),
                      (np.ones((2, 3), np.int64), "float64 array .* int64")):
        with pytest.raises(TypeError, match=rf"Dropout\(p=0.5, inplace=True\): inplace=True "
                                            rf"needs a writeable {what} array"):
            L.Dropout(0.5, inplace=True, rng=1)(bad)
    assert repr(layer) == "Dropout(p=0.3, inplace=False)"
    with pytest.raises(ValueError, match="between 0 and 1, but got 1.5"):
        L.Dropout(1.5)


def test_dropout2d_zeroes_whole_channels():
    x = np.ones((8, 3, 4, 16), np.float32)
    layer = L.Dropout2d(0.5, rng=0)
    y = layer(x)
    assert y.dtype == np.float32
    per_channel = y.reshape(8, 12, 16)
    assert np.all(per_channel == per_channel[:, :1])  # one decision per (sample, channel)
    assert set(np.unique(y)) == {0.0, 2.0} and 0.3 < (y == 0).mean() < 0.7
    g = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(g), y)
    assert L.Dropout2d(0.5, rng=0)(x[0]).shape == (3, 4, 16)  # one image
    with pytest.raises(ValueError, match="expected input to be 3-D or 4-D"):
        layer(np.ones((2, 3)))


def test_identity():
    layer = L.Identity()
    x = np.arange(6.0).reshape(2, 3)
    assert layer(x) is x
    assert layer.backward(x) is x
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(2, 3\)"):
        layer(x), layer.backward(np.zeros(3))


# ----------------------------------------------------------------------------------------------
# PyTorch

def _nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 7, 3)).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    calls = [(fc.adaptive_avg_pool2d, fc.adaptive_avg_pool2d_backward, F.adaptive_avg_pool2d,
              dict(output_size=s)) for s in SIZES]
    calls += [(fc.adaptive_max_pool2d, fc.adaptive_max_pool2d_backward, F.adaptive_max_pool2d,
               dict(output_size=s)) for s in SIZES]
    calls += [(fc.interpolate, fc.interpolate_backward, F.interpolate, c) for c in INTERPOLATIONS]
    calls += [(fc.interpolate, fc.interpolate_backward, F.interpolate, dict(scale_factor=2))]
    for forward, backward, theirs, kwargs in calls:
        xt = torch.tensor(_nchw(x), requires_grad=True)
        yt = theirs(xt, **kwargs)
        g = rng.standard_normal(yt.shape).astype(dtype)
        yt.backward(torch.tensor(g))
        g = g.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(forward(x, **kwargs), _nhwc(yt), **tol, err_msg=str(kwargs))
        np.testing.assert_allclose(backward(g, x, **kwargs), _nhwc(xt.grad), **tol,
                                   err_msg=str(kwargs))
    _, idx = fc.adaptive_max_pool2d(x, (3, 2), return_indices=True)
    _, idx_t = F.adaptive_max_pool2d(torch.tensor(_nchw(x)), (3, 2), return_indices=True)
    np.testing.assert_array_equal(idx, idx_t.numpy().transpose(0, 2, 3, 1))


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    for ours, theirs in [(L.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d(1)),
                         (L.AdaptiveMaxPool2d((2, None)), nn.AdaptiveMaxPool2d((2, None))),
                         (L.Upsample(scale_factor=2), nn.Upsample(scale_factor=2)),
                         (L.Upsample((3, 4), mode="bilinear"), nn.Upsample((3, 4), mode="bilinear")),
                         (L.Dropout(), nn.Dropout()), (L.Dropout2d(0.2), nn.Dropout2d(0.2)),
                         (L.Identity(), nn.Identity())]:
        assert repr(ours) == repr(theirs)
