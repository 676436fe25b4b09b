"""Classic image filters: kernel constructors and filter2d, a depthwise 2-D filter.

The constructors return 2-D float64 kernels. filter2d applies one kernel to every channel
of an image with fastconv.conv2d; kernels of rank 1 (Gaussian, box, Sobel, Prewitt, and any
single row or column) run as a vertical then a horizontal 1-D pass.

Boundary modes use fastconv's (NumPy's) names, which differ from scipy.ndimage's:

    fastconv / NumPy    scipy.ndimage          extension of  a b c d
    "reflect"           "mirror"               c b | a b c d | c b
    "symmetric"         "reflect"              b a | a b c d | d c
    "replicate"         "nearest"              a a | a b c d | d d
    "circular"          "wrap"                 c d | a b c d | a b
    "zeros"             "constant", cval=0     0 0 | a b c d | 0 0
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _params
from fastconv.functional import conv2d

__all__ = ["box", "filter2d", "gaussian", "laplace", "prewitt", "sharpen", "sobel"]


# ----------------------------------------------------------------------------------------------
# kernels

def _edge_kernel(name: str, axis, centre: float) -> np.ndarray:
    if axis not in ("x", "y"):
        raise ValueError(f"{name}: axis must be 'x' (vertical edges, the derivative along x) or "
                         f"'y' (horizontal edges), but got {axis!r}")
    kernel = np.array([[-1.0, 0.0, 1.0], [-centre, 0.0, centre], [-1.0, 0.0, 1.0]])
    return kernel if axis == "x" else np.ascontiguousarray(kernel.T)


def sobel(axis) -> np.ndarray:
    """Sobel derivative kernel. "x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], which responds to
    vertical edges (intensity changing along x); "y": its transpose (horizontal edges)."""
    return _edge_kernel("sobel", axis, 2.0)


def prewitt(axis) -> np.ndarray:
    """Prewitt derivative kernel. "x": [[-1, 0, 1]] * 3 (vertical edges); "y": its transpose."""
    return _edge_kernel("prewitt", axis, 1.0)


def laplace() -> np.ndarray:
    """The 8-neighbour Laplacian [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]] (sums to 0)."""
    kernel = -np.ones((3, 3))
    kernel[1, 1] = 8.0
    return kernel


def sharpen() -> np.ndarray:
    """[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]: the image plus its 4-neighbour Laplacian."""
    return np.array([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])


def gaussian(sigma, size=None) -> np.ndarray:
    """A (size, size) Gaussian kernel with standard deviation `sigma` pixels, summing to 1.

    size: an odd int >= 1; default 2 * ceil(3 * sigma) + 1 (covers +-3 sigma).
    """
    sigma = _params.as_positive_real("sigma", sigma)
    if size is None:
        size = 2 * math.ceil(3 * sigma) + 1
    size = _params.as_int("size", size, 1)
    if size % 2 == 0:
        raise ValueError(f"gaussian: size must be odd (so the kernel has a centre), but got {size}")
    offsets = np.arange(size) - size // 2
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def box(size) -> np.ndarray:
    """The mean filter: a (size, size) kernel (or (h, w) for a pair) of equal weights summing
    to 1."""
    h, w = _params.as_pair("size", size, 1)
    return np.full((h, w), 1.0 / (h * w))


# ----------------------------------------------------------------------------------------------
# filter2d

def check_filter_args(image, kernel, padding_mode):
    """filter2d's checks of an image (any array with .ndim) and a kernel; returns the kernel
    as an array and the padding mode. Shared with fastconv.dask.filter2d."""
    _params.check_ndim("image", image, (2, 3, 4), "(H, W), (H, W, C) or (N, H, W, C)")
    kernel = _params.as_array("kernel", kernel)
    _params.check_ndim("kernel", kernel, (2,), "(kh, kw)")
    if min(kernel.shape) < 1:
        raise ValueError(f"filter2d: kernel of shape {kernel.shape} must have every dimension "
                         f">= 1")
    return kernel, _params.padding_mode(padding_mode)


def filter2d(image, kernel, padding="same", padding_mode="reflect", flip=False):
    """Apply one 2-D `kernel` to every channel of `image` (a depthwise filter).

    image: (H, W), (H, W, C) or (N, H, W, C); any real dtype (uint8 images are fine).
    kernel: a 2-D array (kh, kw), e.g. from sobel(), gaussian(), ...
    padding: "same" (default: the output has the input's shape), "valid", or the conv2d
        forms (int, (ph, pw), ((top, bottom), (left, right))).
    padding_mode: "reflect" (default; edge not repeated), "symmetric", "replicate",
        "circular" or "zeros" -- NumPy's names, see the module docstring for SciPy's.
    flip: False computes the cross-correlation used by CNNs,
        out[i, j] = sum_{r, s} kernel[r, s] * image[i + r - ch, j + s - cw];
        True flips the kernel, giving the mathematical convolution
        out[i, j] = sum_{r, s} kernel[r, s] * image[i - r + ch, j - s + cw].

    With padding="same" the kernel's anchor is (ch, cw) = (kh // 2, kw // 2) of the kernel
    as given, for both values of flip, so for even kernel sizes the result equals
    scipy.ndimage.correlate (flip=False) and scipy.ndimage.convolve (flip=True) with their
    default origin=0. (This differs from conv2d's padding="same", which always puts the odd
    padded pixel at the bottom/right.)

    Returns an array of the input's number of dimensions, in floating point: float32 for
    uint8/int8/int16/uint16/float16/float32 images, float64 for int32/int64/float64 images
    (np.result_type(image, float32)); the kernel is used in that precision.
    """
    image = _params.as_array("image", image)
    kernel, mode = check_filter_args(image, kernel, padding_mode)
    dtype = _params.float_dtype(image)
    x = _batch(image)
    kh, kw = kernel.shape
    if flip:
        kernel = kernel[::-1, ::-1]
    if isinstance(padding, str) and padding == "same":
        # anchor at (kh // 2, kw // 2) of the kernel as given, as scipy.ndimage's origin=0
        before = ((kh - 1) // 2, (kw - 1) // 2) if flip else (kh // 2, kw // 2)
        padding = ((before[0], kh - 1 - before[0]), (before[1], kw - 1 - before[1]))
    # checked once here, so errors name filter2d and the image's layout
    geo = _params.conv_geometry("filter2d", (x.shape[0], x.shape[1], x.shape[2], 1), (kh, kw, 1, 1),
                                1, padding, 1, 1)
    if x.shape[0] == 0 or x.shape[3] == 0:  # no images or no channels: nothing to filter
        y = np.zeros((x.shape[0], *geo.out_hw, x.shape[3]), dtype)
        return _unbatch(y, image.ndim)
    x = np.ascontiguousarray(x, dtype)
    kernel = np.asarray(kernel, dtype)
    factors = _rank_one_factors(kernel)
    if factors is None:
        y = _depthwise(x, kernel, geo.padding, mode)
    else:
        y = _separable(x, *factors, geo.padding, mode)
    return _unbatch(y, image.ndim)


def _batch(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, C) or (N, H, W, C) as a view (N, H, W, C)."""
    if image.ndim == 2:
        return image[None, :, :, None]
    return image[None] if image.ndim == 3 else image


def _unbatch(y: np.ndarray, ndim: int) -> np.ndarray:
    """(N, H, W, C) back to the image's own number of dimensions."""
    if ndim == 2:
        return y[0, :, :, 0]
    return y[0] if ndim == 3 else y


def _rank_one_factors(kernel: np.ndarray):
    """(column, row) with kernel == outer(column, row) to rounding when the kernel has
    numerical rank 1 (at the precision of its dtype), else None."""
    kh, kw = kernel.shape
    one = np.ones(1, kernel.dtype)
    if kw == 1:
        return kernel[:, 0], one
    if kh == 1:
        return one, kernel[0]
    k64 = kernel.astype(np.float64)
    if not np.all(np.isfinite(k64)):
        return None  # the SVD would fail; the direct path propagates NaN as it should
    singular = np.linalg.svd(k64, compute_uv=False)
    tol = singular[0] * max(kh, kw) * np.finfo(kernel.dtype).eps  # matrix_rank's default
    if singular[0] == 0 or singular[1] > tol:
        return None
    # Factors from the largest entry (pivot): exact for integer kernels such as Sobel, where
    # the singular vectors would add rounding.
    i, j = np.unravel_index(np.argmax(np.abs(k64)), k64.shape)
    return k64[:, j].astype(kernel.dtype), (k64[i, :] / k64[i, j]).astype(kernel.dtype)


def _depthwise(x: np.ndarray, kernel: np.ndarray, pads, mode: str) -> np.ndarray:
    """The direct path: conv2d with groups=C and weight (kh, kw, 1, C)."""
    c = x.shape[3]
    weight = np.broadcast_to(kernel[:, :, None, None], (*kernel.shape, 1, c))
    return conv2d(x, weight, padding=pads, groups=c, padding_mode=mode)


def _vertical(x: np.ndarray, taps: np.ndarray, pads, mode: str) -> np.ndarray:
    """A 1-D filter down H of a contiguous (N, H, W, C) array.

    Viewed as (N, H, 1, W * C), it is a depthwise (k, 1) conv2d over W * C channels: the
    kernel's inner loop then runs over whole rows instead of C (often 1 or 3) channels.
    """
    n, h, w, c = x.shape
    weight = np.broadcast_to(taps[:, None, None, None], (taps.size, 1, 1, w * c))
    y = conv2d(x.reshape(n, h, 1, w * c), weight, padding=(pads, (0, 0)), groups=w * c,
               padding_mode=mode)
    return y.reshape(n, y.shape[1], w, c)


def _separable(x: np.ndarray, column: np.ndarray, row: np.ndarray, pads, mode: str
               ) -> np.ndarray:
    """outer(column, row) as a pass down H then a pass along W (on the transposed array).

    Every padding mode pads each axis independently, so padding per pass is the same as
    padding the 2-D image once. A pass that is the single tap 1 without padding is skipped.
    """
    def identity(taps, pad):
        return taps.size == 1 and taps[0] == 1 and pad == (0, 0)

    y = x if identity(column, pads[0]) else _vertical(x, column, pads[0], mode)
    if identity(row, pads[1]):
        return y
    y = _vertical(np.ascontiguousarray(y.transpose(0, 2, 1, 3)), row, pads[1], mode)
    return np.ascontiguousarray(y.transpose(0, 2, 1, 3))
