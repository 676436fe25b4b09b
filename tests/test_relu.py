"""relu and relu_backward."""
import numpy as np
import pytest

from fastconv import pooling

VALUES = np.array([-2.0, -0.0, 0.0, 1e-30, 3.5, np.nan, np.inf, -np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_is_maximum_with_zero_including_nan(dtype):
    x = VALUES.astype(dtype)
    y = pooling.relu(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, [0, 0, 0, dtype(1e-30), 3.5, np.nan, np.inf, 0])


@pytest.mark.parametrize("dtype,expected", [(np.uint8, np.float32), (np.int16, np.float32),
                                            (np.int64, np.float64), (np.float16, np.float32)])
def test_relu_promotes_like_the_rest_of_fastconv(dtype, expected):
    x = np.array([[-3, 0, 5]]).astype(dtype)
    y = pooling.relu(x)
    assert y.dtype == expected
    np.testing.assert_array_equal(y, np.maximum(x.astype(expected), 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_relu_never_modifies_its_input(dtype):
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 2)) * 10
    x = x.astype(dtype)
    before = x.copy()
    pooling.relu(x)
    pooling.relu(x[:, ::2])  # a non-contiguous view
    np.testing.assert_array_equal(x, before)


def test_relu_out_may_be_the_input_for_an_in_place_relu():
    x = np.array([-1.0, 2.0, np.nan, -0.5])
    y = pooling.relu(x, out=x)
    assert y is x
    np.testing.assert_array_equal(x, [0.0, 2.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="out must be a float64 array of shape"):
        pooling.relu(x, out=np.empty(3))


def test_relu_works_on_read_only_input():
    x = np.array([-1.0, 2.0])
    x.flags.writeable = False
    np.testing.assert_array_equal(pooling.relu(x), [0.0, 2.0])


def test_relu_backward_passes_gradient_where_x_is_positive_or_nan():
    x = VALUES
    g = np.arange(1.0, len(x) + 1)
    got = pooling.relu_backward(g, x)
    # PyTorch's threshold_backward: zero where x <= 0 (NaN is not <= 0, so it passes)
    np.testing.assert_array_equal(got, [0, 0, 0, 4, 5, 6, 7, 0])
    np.testing.assert_array_equal(g, np.arange(1.0, len(x) + 1))  # not modified


def test_relu_backward_from_the_output_or_a_mask_is_the_same():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    x[0, 0, 0, :2] = [0.0, np.nan]
    g = np.random.default_rng(2).standard_normal(x.shape)
    from_x = pooling.relu_backward(g, x)
    np.testing.assert_array_equal(pooling.relu_backward(g, pooling.relu(x)), from_x)
    np.testing.assert_array_equal(pooling.relu_backward(g, ~(x <= 0)), from_x)


def test_relu_backward_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    g = rng.standard_normal(x.shape)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = (np.sum(pooling.relu(x + e) * g) - np.sum(pooling.relu(x - e) * g)) / (2 * eps)
    np.testing.assert_allclose(pooling.relu_backward(g, x), numeric, rtol=1e-9, atol=1e-9)


def test_relu_backward_dtype():
    x = np.array([1.0, -1.0], np.float32)
    assert pooling.relu_backward(np.ones(2, np.float32), x).dtype == np.float32
    assert pooling.relu_backward(np.ones(2, np.float64), x).dtype == np.float64


def test_relu_bad_arguments():
    with pytest.raises(ValueError, match=r"grad_output of shape \(2,\)"):
        pooling.relu_backward(np.ones(3), np.ones(2))
    with pytest.raises(TypeError, match="real numbers"):
        pooling.relu(np.array(["a"]))
    with pytest.raises(TypeError, match="real numbers"):
        pooling.relu(np.ones(2, complex))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_kernel_on_two_threads_zeroes_even_nan_and_inf_gradients(dtype):
    """The branch-free kernel (the gradient's bits masked): where x <= 0 the gradient is 0
    even when grad_output is NaN or inf (threshold_backward), on a strided grad_output, with
    the work shared by two threads."""
    import fastconv

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 200, 300)).astype(dtype)
    g = rng.standard_normal((3, 200, 600)).astype(dtype)[..., ::2]  # not contiguous
    g[0, 0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    x[0, 0, :4] = [-1.0, -1.0, 1.0, 1.0]
    want = np.where(~(x <= 0), g, dtype(0))
    with fastconv.num_threads(2):
        assert fastconv._threads.threads_for_work(x.size) == 2
        got = pooling.relu_backward(g, x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[0, 0, :4], [0, 0, -np.inf, np.nan])


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_layer_training_forward_makes_output_and_mask_in_one_pass(dtype, in_place,
                                                                       monkeypatch):
    """The training forward's kernel (_pool.relu_forward, every SIMD level): np.maximum's
    output (NaN kept) and the mask x > 0 or NaN; in place or not, contiguous or not; its
    backward then as relu_backward from x."""
    import fastconv
    from fastconv import _algorithms
    from fastconv.layers import ReLU

    rng = np.random.default_rng(5)
    base = rng.standard_normal((2, 70, 90, 5)).astype(dtype)
    base[0, 0, 0, :5] = [np.nan, -0.0, 0.0, np.inf, -np.inf]
    g = rng.standard_normal(base.shape).astype(dtype)
    for level, module in sorted(_algorithms.simd_modules("_pool").items()):
        monkeypatch.setattr(pooling, "_pool", module)
        for strided in (False, True):
            source = base.copy() if in_place else base
            x = source[:, :, ::2] if strided else source
            original = x.copy()
            layer = ReLU(inplace=in_place).train()
            with fastconv.num_threads(2):
                y = layer(x)
            want = np.maximum(original, 0)
            np.testing.assert_array_equal(y, want, err_msg=level)
            assert (y is x) == in_place, level
            if not in_place:
                np.testing.assert_array_equal(x, original)
            gx = layer.backward(g[:, :, :y.shape[2]])
            np.testing.assert_array_equal(gx, np.where(~(original <= 0), g[:, :, :y.shape[2]],
                                                       dtype(0)), err_msg=level)
        for n in range(6):  # more threads than values: ranges of 0 and 1 value
            x = base[0, 0, 0, :n].copy()
            y, keep = np.full(n, 7, dtype), np.full(n, 7, np.uint8)
            module.relu_forward(x, y, keep, 4)
            np.testing.assert_array_equal(y, np.maximum(x, 0), err_msg=level)
            np.testing.assert_array_equal(keep, ~(x <= 0), err_msg=level)


@pytest.mark.parametrize("training", [True, False])
def test_relu_layer_in_place_refuses_what_it_cannot_overwrite(training):
    """As the other in-place activations: a TypeError naming the layer, in either mode."""
    from fastconv.layers import ReLU

    layer = ReLU(inplace=True).train(training)
    read_only = np.ones((2, 3), np.float32)
    read_only.flags.writeable = False
    for x, what in ((read_only, "read-only float32"), (np.ones((2, 3), np.int64), "int64")):
        with pytest.raises(TypeError, match=rf"ReLU\(inplace=True\): inplace=True needs a "
                                            rf"writeable float32 or float64 array .* {what}"):
            layer(x)


def test_relu_kernels_refuse_inconsistent_arguments():
    x = np.ones(5, np.float32)
    for args in ((x, np.empty(4, np.float32), np.empty(5, np.uint8), 1),
                 (x, np.empty(5, np.float32), np.empty(4, np.uint8), 1),
                 (x, np.empty(5, np.float32), np.empty(5, np.uint8), 0)):
        with pytest.raises(ValueError):
            pooling._pool.relu_forward(*args)
    for args in ((x, np.ones(4, np.uint8), np.empty(5, np.float32), 1),
                 (x, np.ones(5, np.uint8), np.empty(4, np.float32), 1),
                 (x, np.ones(5, np.uint8), np.empty(5, np.float32), 0)):
        with pytest.raises(ValueError):
            pooling._pool.relu_backward(*args)
