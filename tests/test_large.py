"""Convolutions whose input has more than 2**31 elements: index arithmetic is Py_ssize_t end
to end (an int32 index would wrap around and read or write the wrong memory).

Opt-in, never in CI: marked slow (deselected by pyproject.toml's addopts) because it needs
about 14 GB of memory (13.2 GiB peak measured) and about 3 minutes:

    pytest -m slow tests/test_large.py -s

The input is one channel, (1, 2**15, 2**16 + 1, 1) float32 (8.6 GB), holding small integers,
and the kernels small integers too, so every result is exact and compared exactly. The
output is smaller (stride 2), so the input's indices pass 2**31 while the output's need not.
BLAS (im2col) takes int32 sizes, but a tile keeps m, n, k and the leading dimensions at most
a few thousand (see tile_pixels in fastconv/_algorithms.py).
"""
import numpy as np
import pytest

import fastconv

H, W = 2**15, 2**16 + 1
ROWS = 512  # rows per chunk when filling and checking, to keep temporaries small
KERNEL = np.array([[1, 2], [-1, 3]], np.float32)  # (2, 2) taps


def pattern(i0: int, i1: int) -> np.ndarray:
    """x[0, i, j, 0] for rows i0 <= i < i1: integers in [-8, 8], different along both axes."""
    i = np.arange(i0, i1, dtype=np.int64)[:, None]
    j = np.arange(W, dtype=np.int64)[None, :]
    return ((7 * i + 3 * j) % 17 - 8).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    assert H * W > 2**31
    try:
        x = np.empty((1, H, W, 1), np.float32)
    except MemoryError:
        pytest.skip("needs 8.6 GB for the input")
    for i0 in range(0, H, ROWS):
        x[0, i0:i0 + ROWS, :, 0] = pattern(i0, min(H, i0 + ROWS))
    return x


def expected_rows(o0: int, o1: int, channel_weights) -> np.ndarray:
    """conv2d(x, w, stride=2) for output rows o0 <= o < o1, computed from the pattern."""
    xs = pattern(2 * o0, 2 * o1).astype(np.int64)
    out = np.zeros((o1 - o0, (W - 2) // 2 + 1), np.int64)
    for r in range(2):
        for s in range(2):
            out += int(KERNEL[r, s]) * xs[r::2, s:s + 2 * out.shape[1] - 1:2]
    return np.stack([c * out for c in channel_weights], axis=-1)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, channels", [("im2col", 1), ("direct", 2)])
def test_forward_over_2_31_input_elements(x, algorithm, channels):
    """im2col: one output channel; direct: two (one input and one output channel would be
    taken as a depthwise convolution, whose input is first copied to a whole SIMD vector of
    channels: 16 x 8.6 GB)."""
    scale = [1, -2][:channels]
    w = np.stack([c * KERNEL for c in scale], axis=-1)[:, :, None, :]  # (2, 2, 1, channels)
    y = fastconv.conv2d(x, w, stride=2, algorithm=algorithm)
    assert y.shape == (1, H // 2, (W - 2) // 2 + 1, channels)
    for o0 in range(0, y.shape[1], ROWS):
        o1 = min(y.shape[1], o0 + ROWS)
        np.testing.assert_array_equal(y[0, o0:o1], expected_rows(o0, o1, scale),
                                      err_msg=f"rows {o0}..{o1}")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["im2col", "direct"])
def test_weight_gradient_over_2_31_input_elements(x, algorithm):
    """grad_output is zero except at a few pixels, the last ones among them (whose taps read
    x beyond element 2**31): the weight gradient is their windows' sum, exact."""
    ho, wo = H // 2, (W - 2) // 2 + 1
    gy = np.zeros((1, ho, wo, 1), np.float32)
    hits = [(0, 0), (ho // 2, 123), (ho - 1, wo - 1), (ho - 1, 0), (ho - 2, wo - 7)]
    for oh, ow in hits:
        gy[0, oh, ow, 0] = 1
    _, gw, _ = fastconv.conv2d_backward(gy, x, np.ones((2, 2, 1, 1), np.float32), stride=2,
                                        algorithm=algorithm, needs=("weight",))
    want = np.zeros((2, 2))
    for oh, ow in hits:
        want += pattern(2 * oh, 2 * oh + 2)[:, 2 * ow:2 * ow + 2]
    np.testing.assert_array_equal(gw[:, :, 0, 0], want)
