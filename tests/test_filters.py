"""fastconv.filters: kernel constructors and filter2d against scipy.ndimage."""
from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi

from fastconv import filters

# fastconv (NumPy) boundary names -> scipy.ndimage's
SCIPY_MODE = {"reflect": "mirror", "symmetric": "reflect", "replicate": "nearest",
              "circular": "wrap", "zeros": "constant"}

RNG = np.random.default_rng(11)
KERNELS = {
    "sobel_x": filters.sobel("x"),
    "sobel_y": filters.sobel("y"),
    "prewitt_x": filters.prewitt("x"),
    "laplace": filters.laplace(),
    "sharpen": filters.sharpen(),
    "gaussian": filters.gaussian(1.0),
    "box3": filters.box(3),
    "box_2x4": filters.box((2, 4)),  # even sizes: the anchor convention matters
    "random_4x3": RNG.standard_normal((4, 3)),
    "random_1x5": RNG.standard_normal((1, 5)),
    "rank1_4x2": np.outer(RNG.standard_normal(4), RNG.standard_normal(2)),
}
SHAPES = [(9, 11), (8, 10, 3), (2, 7, 9, 2)]


def scipy_filter(image, kernel, mode, flip):
    """scipy.ndimage on the image's spatial axes (the kernel gets size-1 axes elsewhere)."""
    k = np.asarray(kernel, np.float64)
    if image.ndim == 3:
        k = k[:, :, None]
    elif image.ndim == 4:
        k = k[None, :, :, None]
    fn = ndi.convolve if flip else ndi.correlate
    return fn(np.asarray(image, np.float64), k, mode=SCIPY_MODE[mode], cval=0.0)


def assert_close(actual, expected, dtype, terms):
    """float64 tight; float32 scaled with the summed terms and the result's magnitude."""
    rtol = (1e-5 if np.dtype(dtype) == np.float32 else 1e-12) * math.sqrt(terms)
    scale = max(float(np.max(np.abs(expected))), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------------------------
# kernel constructors

def test_sobel_values():
    np.testing.assert_array_equal(filters.sobel("x"), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(filters.sobel("y"), [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])


def test_prewitt_values():
    np.testing.assert_array_equal(filters.prewitt("x"), [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
    np.testing.assert_array_equal(filters.prewitt("y"), [[-1, -1, -1], [0, 0, 0], [1, 1, 1]])


def test_laplace_and_sharpen_values():
    np.testing.assert_array_equal(filters.laplace(), [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(filters.sharpen(), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    assert filters.laplace().sum() == 0
    assert filters.sharpen().sum() == 1


@pytest.mark.parametrize("make", [lambda: filters.sobel("x"), lambda: filters.sobel("y"),
                                  lambda: filters.prewitt("x"), filters.laplace,
                                  filters.sharpen, lambda: filters.gaussian(1.5),
                                  lambda: filters.box(4)])
def test_constructors_return_fresh_2d_float64(make):
    k = make()
    assert k.ndim == 2 and k.dtype == np.float64
    k[...] = 0  # a fresh array each call: changing it changes nothing else
    assert np.any(make() != 0)


@pytest.mark.parametrize("sigma, size", [(1.0, 7), (0.5, 5), (1.2, 9), (2.0, 13), (0.1, 3)])
def test_gaussian_default_size_and_values(sigma, size):
    k = filters.gaussian(sigma)
    assert k.shape == (size, size)
    assert size == 2 * math.ceil(3 * sigma) + 1
    assert abs(k.sum() - 1.0) < 1e-12
    i = np.arange(size)[:, None] - size // 2
    j = np.arange(size)[None, :] - size // 2
    expected = np.exp(-(i**2 + j**2) / (2 * sigma**2))
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-12, atol=1e-15)
    assert np.unravel_index(np.argmax(k), k.shape) == (size // 2, size // 2)


def test_gaussian_explicit_size():
    k = filters.gaussian(2.0, size=5)
    assert k.shape == (5, 5)
    assert abs(k.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(k, k.T, rtol=0, atol=0)


@pytest.mark.parametrize("sigma, radius", [(1.0, 4), (2.0, 3), (0.7, 2)])
@pytest.mark.parametrize("mode", ["reflect", "symmetric", "zeros"])
def test_gaussian_filter2d_equals_scipy_gaussian_filter(sigma, radius, mode):
    img = np.random.default_rng(12).standard_normal((20, 17, 2))
    ours = filters.filter2d(img, filters.gaussian(sigma, size=2 * radius + 1), padding_mode=mode)
    ref = ndi.gaussian_filter(img, sigma, radius=radius, mode=SCIPY_MODE[mode], axes=(0, 1))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, shape", [(1, (1, 1)), (3, (3, 3)), (4, (4, 4)), ((2, 5), (2, 5))])
def test_box(size, shape):
    k = filters.box(size)
    assert k.shape == shape
    np.testing.assert_allclose(k, np.full(shape, 1 / math.prod(shape)), rtol=1e-15)
    assert abs(k.sum() - 1) < 1e-12


@pytest.mark.parametrize("call, error, match", [
    (lambda: filters.sobel("z"), ValueError, "axis"),
    (lambda: filters.sobel(0), ValueError, "axis"),
    (lambda: filters.prewitt("X"), ValueError, "axis"),
    (lambda: filters.gaussian(0), ValueError, "sigma"),
    (lambda: filters.gaussian(-1.0), ValueError, "sigma"),
    (lambda: filters.gaussian(float("nan")), ValueError, "sigma"),
    (lambda: filters.gaussian(float("inf")), ValueError, "sigma"),
    (lambda: filters.gaussian("1"), TypeError, "sigma"),
    (lambda: filters.gaussian(True), TypeError, "sigma"),
    (lambda: filters.gaussian(1.0, size=4), ValueError, "size must be odd"),
    (lambda: filters.gaussian(1.0, size=0), ValueError, "size"),
    (lambda: filters.gaussian(1.0, size=-3), ValueError, "size"),
    (lambda: filters.gaussian(1.0, size=5.0), TypeError, "size"),
    (lambda: filters.box(0), ValueError, "size"),
    (lambda: filters.box(2.5), TypeError, "size"),
])
def test_constructor_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ----------------------------------------------------------------------------------------------
# filter2d against scipy.ndimage

@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("mode", list(SCIPY_MODE))
@pytest.mark.parametrize("flip", [False, True])
def test_filter2d_equals_scipy_float64(name, mode, flip):
    kernel = KERNELS[name]
    rng = np.random.default_rng(13)
    for shape in SHAPES:
        img = rng.standard_normal(shape)
        out = filters.filter2d(img, kernel, padding_mode=mode, flip=flip)
        assert out.shape == img.shape and out.dtype == np.float64
        assert_close(out, scipy_filter(img, kernel, mode, flip), np.float64, kernel.size)


@pytest.mark.parametrize("name", ["sobel_x", "laplace", "gaussian", "box_2x4", "random_4x3"])
@pytest.mark.parametrize("mode", list(SCIPY_MODE))
@pytest.mark.parametrize("flip", [False, True])
def test_filter2d_equals_scipy_float32(name, mode, flip):
    kernel = KERNELS[name]
    img = np.random.default_rng(14).standard_normal((2, 12, 10, 3)).astype(np.float32)
    out = filters.filter2d(img, kernel, padding_mode=mode, flip=flip)
    assert out.dtype == np.float32
    assert_close(out, scipy_filter(img, kernel, mode, flip), np.float32, kernel.size)


def test_filter2d_default_is_reflect_correlation():
    img = np.random.default_rng(15).standard_normal((7, 8))
    k = KERNELS["random_4x3"]
    np.testing.assert_allclose(filters.filter2d(img, k), ndi.correlate(img, k, mode="mirror"),
                               rtol=1e-12, atol=1e-12)


def test_flip_is_correlation_with_the_flipped_kernel_for_odd_sizes():
    img = np.random.default_rng(16).standard_normal((9, 9, 2))
    k = filters.sobel("x")
    np.testing.assert_allclose(filters.filter2d(img, k, flip=True),
                               filters.filter2d(img, -k), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, expected", [
    (np.uint8, np.float32), (np.int16, np.float32), (np.float16, np.float32),
    (np.int32, np.float64), (np.int64, np.float64), (np.float64, np.float64),
])
@pytest.mark.parametrize("name", ["sobel_x", "laplace", "gaussian"])
def test_integer_and_small_float_images(dtype, expected, name):
    kernel = KERNELS[name]
    img = np.random.default_rng(17).integers(0, 256, (10, 12, 3)).astype(dtype)
    out = filters.filter2d(img, kernel, padding_mode="symmetric")
    assert out.dtype == expected
    assert_close(out, scipy_filter(img, kernel, "symmetric", False), expected, kernel.size)


def test_uint8_sobel_keeps_negative_responses():
    img = np.zeros((5, 6), np.uint8)
    img[:, 3:] = 200  # a dark-to-bright vertical edge
    out = filters.filter2d(img, filters.sobel("x"), padding_mode="replicate")
    # columns 2 and 3 straddle the edge: 4 * 200 = 800, beyond uint8 (no wrap-around)
    np.testing.assert_array_equal(out[:, 2:4], 800)
    np.testing.assert_array_equal(out[:, :2], 0)
    np.testing.assert_array_equal(filters.filter2d(255 - img, filters.sobel("x"))[:, 2], -800)


def test_valid_and_explicit_padding():
    img = np.random.default_rng(18).standard_normal((9, 10, 2))
    k = KERNELS["random_4x3"]  # anchor (2, 1): 2 rows above, 1 below; 1 column each side
    full = ndi.correlate(img, k[:, :, None], mode="constant")
    valid = filters.filter2d(img, k, padding="valid")
    assert valid.shape == (6, 8, 2)
    np.testing.assert_allclose(valid, full[2:-1, 1:-1], rtol=1e-12, atol=1e-12)
    padded = filters.filter2d(img, k, padding=((2, 1), (1, 1)), padding_mode="zeros")
    np.testing.assert_allclose(padded, full, rtol=1e-12, atol=1e-12)
    wide = filters.filter2d(img, k, padding=3, padding_mode="circular")
    ref = ndi.correlate(np.pad(img, ((3, 3), (3, 3), (0, 0)), mode="wrap"), k[:, :, None],
                        mode="constant")[2:-1, 1:-1]
    assert wide.shape == (12, 14, 2)
    np.testing.assert_allclose(wide, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", list(SCIPY_MODE))
def test_kernel_larger_than_the_image(mode):
    img = np.random.default_rng(19).standard_normal((3, 4))
    k = filters.gaussian(1.0)  # 7 x 7: padding beyond the image on every side
    np.testing.assert_allclose(filters.filter2d(img, k, padding_mode=mode),
                               scipy_filter(img, k, mode, False), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(0, 6, 5, 3), (6, 5, 0), (2, 6, 5, 0)])
def test_empty_batch_or_channels(shape):
    out = filters.filter2d(np.zeros(shape, np.uint8), filters.sobel("x"))
    assert out.shape == shape and out.dtype == np.float32
    valid = filters.filter2d(np.zeros(shape), filters.sobel("x"), padding="valid")
    assert valid.shape == (*shape[:-3], 4, 3, shape[-1])


def test_non_contiguous_input_is_not_modified():
    base = np.random.default_rng(20).standard_normal((12, 20, 3))
    img = base[::2, ::3, ::-1]
    before = base.copy()
    out = filters.filter2d(img, filters.sharpen(), padding_mode="replicate")
    np.testing.assert_array_equal(base, before)
    assert_close(out, scipy_filter(np.ascontiguousarray(img), filters.sharpen(), "replicate",
                                   False), np.float64, 9)


# ----------------------------------------------------------------------------------------------
# the separable path

@pytest.mark.parametrize("name, rank_one", [
    ("sobel_x", True), ("sobel_y", True), ("prewitt_x", True), ("gaussian", True),
    ("box3", True), ("box_2x4", True), ("rank1_4x2", True),
    ("laplace", False), ("sharpen", False), ("random_4x3", False),
    ("random_1x5", True),  # a single row: one pass
])
def test_rank_one_detection(name, rank_one):
    factors = filters._rank_one_factors(KERNELS[name])
    assert (factors is not None) == rank_one
    if rank_one:
        np.testing.assert_allclose(np.outer(*factors), KERNELS[name], rtol=1e-13, atol=1e-15)


def test_rank_one_factors_of_integer_kernels_are_exact():
    column, row = filters._rank_one_factors(filters.sobel("x"))
    np.testing.assert_array_equal(np.outer(column, row), filters.sobel("x"))


def test_single_row_and_column_kernels_factor_exactly():
    row = KERNELS["random_1x5"]
    np.testing.assert_array_equal(np.outer(*filters._rank_one_factors(row)), row)
    np.testing.assert_array_equal(np.outer(*filters._rank_one_factors(row.T)), row.T)


@pytest.mark.parametrize("padding", ["same", 2, ((1, 0), (0, 3))])
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_single_row_and_column_kernels_with_padding(padding, mode):
    """A 1-row kernel still pads the rows (a pass of the single tap 1 does the padding)."""
    img = np.random.default_rng(23).standard_normal((6, 9, 2))
    for kernel in (KERNELS["random_1x5"], KERNELS["random_1x5"].T):
        ours = filters.filter2d(img, kernel, padding=padding, padding_mode=mode)
        if padding == "same":
            pads = tuple((k // 2, k - 1 - k // 2) for k in kernel.shape)
        else:
            pads = ((2, 2), (2, 2)) if padding == 2 else padding
        padded = np.pad(img, (*pads, (0, 0)), mode={"reflect": "reflect",
                                                    "zeros": "constant"}[mode])
        kh, kw = kernel.shape
        ref = ndi.correlate(padded, kernel[:, :, None], mode="constant")
        ref = ref[kh // 2: padded.shape[0] - (kh - 1 - kh // 2),
                  kw // 2: padded.shape[1] - (kw - 1 - kw // 2)]
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_nan_kernel_propagates():
    img = np.ones((5, 5))
    k = filters.box(3)
    k[1, 1] = np.nan
    assert np.isnan(filters.filter2d(img, k)).all()


def test_a_nearly_rank_one_kernel_is_not_separated():
    k = filters.gaussian(1.0)
    k[0, 0] += 1e-9  # far above float64 rounding
    assert filters._rank_one_factors(k) is None
    img = np.random.default_rng(21).standard_normal((9, 9))
    np.testing.assert_allclose(filters.filter2d(img, k), ndi.correlate(img, k, mode="mirror"),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["sobel_x", "prewitt_x", "gaussian", "box_2x4", "rank1_4x2"])
@pytest.mark.parametrize("mode", list(SCIPY_MODE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_separable_equals_direct(name, mode, dtype):
    kernel = KERNELS[name].astype(dtype)
    x = np.random.default_rng(22).standard_normal((2, 9, 8, 3)).astype(dtype)
    kh, kw = kernel.shape
    pads = ((kh // 2, kh - 1 - kh // 2), (kw // 2 + 1, kw - 1 - kw // 2))  # asymmetric
    direct = filters._depthwise(x, kernel, pads, mode)
    separable = filters._separable(x, *filters._rank_one_factors(kernel), pads, mode)
    assert separable.shape == direct.shape and separable.dtype == direct.dtype == dtype
    assert_close(separable, direct, dtype, kernel.size)


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("image, kernel, kwargs, error, match", [
    (np.ones(5), np.ones((3, 3)), {}, ValueError, "image"),
    (np.ones((1, 2, 5, 5, 1)), np.ones((3, 3)), {}, ValueError, "image"),
    (np.ones((5, 5)), np.ones(3), {}, ValueError, "kernel"),
    (np.ones((5, 5)), np.ones((3, 3, 1)), {}, ValueError, "kernel"),
    (np.ones((5, 5)), np.ones((0, 3)), {}, ValueError, "kernel"),
    (np.ones((5, 5)), np.ones((3, 3)), {"padding_mode": "mirror"}, ValueError, "padding_mode"),
    (np.ones((5, 5)), np.ones((3, 3)), {"padding": "full"}, ValueError, "padding"),
    (np.ones((5, 5)), np.ones((3, 3)), {"padding": -1}, ValueError, "padding"),
    (np.ones((2, 2)), np.ones((3, 3)), {"padding": "valid"}, ValueError, "filter2d.*kernel size"),
    (np.ones((5, 5), complex), np.ones((3, 3)), {}, TypeError, "image"),
    (np.ones((5, 5)), np.ones((3, 3), complex), {}, TypeError, "kernel"),
    (np.array([["a"]]), np.ones((3, 3)), {}, TypeError, "image"),
])
def test_filter2d_errors(image, kernel, kwargs, error, match):
    with pytest.raises(error, match=match):
        filters.filter2d(image, kernel, **kwargs)


# ----------------------------------------------------------------------------------------------
# the lecture tour example

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOUR = ROOT / "examples" / "lecture_tour.py"


def run_tour(*args, block_pillow=False):
    """Run examples/lecture_tour.py in a fresh interpreter on the in-tree package."""
    prelude = "import sys; sys.modules['PIL'] = None; " if block_pillow else ""
    code = (f"{prelude}import runpy, sys; sys.argv = [{str(TOUR)!r}] + {list(args)!r}; "
            f"runpy.run_path({str(TOUR)!r}, run_name='__main__')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_lecture_tour_runs_and_saves_pictures(tmp_path):
    out = run_tour("--out", str(tmp_path / "pics"))
    assert "output == [[19, 25], [37, 43]]: True" in out
    assert "C: 4 x 16 (outputs x inputs), 36 stored entries; C^T: 16 x 4" in out
    assert "identity? False" in out
    assert "padding_mode='circular': max |conv(roll(x)) - roll(conv(x))| = 0.00e+00" in out
    try:
        from PIL import Image
    except ImportError:
        assert "Pillow is not installed" in out
        return
    with Image.open(tmp_path / "pics" / "edges.png") as picture:
        assert picture.size == (128, 96)
    assert len(list((tmp_path / "pics").glob("*.png"))) == 6


def test_lecture_tour_without_pillow(tmp_path):
    out = run_tour("--out", str(tmp_path / "pics"), block_pillow=True)
    assert "Pillow is not installed: not saving the pictures" in out
    assert not (tmp_path / "pics").exists()
    assert "[[19. 25.]" in out
