"""Translation equivariance: with circular padding, convolving then shifting (np.roll) is the
same as shifting then convolving. Zero padding breaks it at the borders."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import filters


def roll(a, shift):
    """Shift an NHWC array's H and W axes circularly."""
    return np.roll(a, shift, axis=(1, 2))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(3, 9), w=st.integers(3, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       dilation=st.integers(1, 2), dh=st.integers(-10, 10), dw=st.integers(-10, 10),
       seed=st.integers(0, 2**16))
def test_circular_same_conv2d_commutes_with_roll(h, w, kh, kw, dilation, dh, dw, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, h, w, 3))
    weight = rng.standard_normal((kh, kw, 3, 4))
    kwargs = {"padding": "same", "padding_mode": "circular", "dilation": dilation}
    shifted_then_conv = fastconv.conv2d(roll(x, (dh, dw)), weight, **kwargs)
    conv_then_shifted = roll(fastconv.conv2d(x, weight, **kwargs), (dh, dw))
    np.testing.assert_allclose(shifted_then_conv, conv_then_shifted, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_circular_equivariance_each_algorithm(algorithm, dtype):
    rng = np.random.default_rng(30)
    x = rng.standard_normal((1, 8, 10, 16)).astype(dtype)
    weight = rng.standard_normal((3, 3, 16, 8)).astype(dtype)
    kwargs = {"padding": "same", "padding_mode": "circular", "algorithm": algorithm}
    a = fastconv.conv2d(roll(x, (3, -4)), weight, **kwargs)
    b = roll(fastconv.conv2d(x, weight, **kwargs), (3, -4))
    tol = 1e-5 * np.sqrt(3 * 3 * 16) if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


def test_strided_circular_conv_commutes_with_shifts_by_the_stride():
    """With stride 2 on an even size, shifting the input by 2k shifts the output by k."""
    rng = np.random.default_rng(31)
    x = rng.standard_normal((1, 8, 12, 2))
    weight = rng.standard_normal((3, 3, 2, 2))
    kwargs = {"padding": "same", "padding_mode": "circular", "stride": 2}
    a = fastconv.conv2d(roll(x, (4, -2)), weight, **kwargs)
    b = roll(fastconv.conv2d(x, weight, **kwargs), (2, -1))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_zero_padding_is_not_equivariant_at_the_borders():
    """The contrast: with zero padding only the interior commutes with a shift."""
    rng = np.random.default_rng(32)
    x = rng.standard_normal((1, 10, 10, 1))
    weight = rng.standard_normal((3, 3, 1, 1))
    a = fastconv.conv2d(roll(x, (1, 0)), weight, padding="same")
    b = roll(fastconv.conv2d(x, weight, padding="same"), (1, 0))
    assert np.abs(a - b).max() > 1e-3  # rows 0 and 1 see the wrapped row differently
    np.testing.assert_allclose(a[:, 2:-1], b[:, 2:-1], rtol=1e-12, atol=1e-12)


def test_one_dimensional_circular_conv_commutes_with_roll():
    rng = np.random.default_rng(33)
    x = rng.standard_normal((2, 11, 3))
    weight = rng.standard_normal((4, 3, 2))
    kwargs = {"padding": "same", "padding_mode": "circular"}
    a = fastconv.conv1d(np.roll(x, 5, axis=1), weight, **kwargs)
    b = np.roll(fastconv.conv1d(x, weight, **kwargs), 5, axis=1)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [filters.sobel("y"), filters.laplace(), filters.box((2, 3)),
                                    filters.gaussian(0.8)], ids=["sobel", "laplace", "box",
                                                                 "gaussian"])
@pytest.mark.parametrize("flip", [False, True])
def test_circular_filter2d_commutes_with_roll(kernel, flip):
    img = np.random.default_rng(34).standard_normal((9, 12, 3))
    kwargs = {"padding_mode": "circular", "flip": flip}
    a = filters.filter2d(np.roll(img, (-3, 7), axis=(0, 1)), kernel, **kwargs)
    b = np.roll(filters.filter2d(img, kernel, **kwargs), (-3, 7), axis=(0, 1))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
