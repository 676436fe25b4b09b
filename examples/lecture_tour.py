"""A tour of the convolution lecture, computed with fastconv.

    python examples/lecture_tour.py [--out DIR]

1. the 3x3 * 2x2 worked example            5. the transposed convolution 2x2 -> 4x4
2. output sizes floor((n + 2p - f) / s) + 1  6. C^T C is not the identity
3. edge detection on an RGB image            7. translation equivariance (circular padding)
4. convolution as a matrix C (4 x 16)

Step 3 saves PNG files to --out (default: a new temporary directory) when Pillow is installed.
Runs in a few seconds.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import tempfile

import numpy as np

import fastconv
from fastconv import filters
from fastconv.matrix import conv_matrix


def heading(title: str) -> None:
    print(f"\n== {title} " + "=" * max(3, 76 - len(title)))


def matrix_str(a) -> str:
    return np.array2string(np.asarray(a), precision=2, suppress_small=True, max_line_width=120)


def worked_example() -> None:
    heading("1. A 3x3 input (0..8) cross-correlated with a 2x2 kernel (0..3)")
    x = np.arange(9.0).reshape(3, 3)
    k = np.arange(4.0).reshape(2, 2)
    # NHWC: one image, one channel; HWIO: one input and one output channel
    y = fastconv.conv2d(x[:, :, None], k[:, :, None, None])[:, :, 0]
    print("input:\n" + matrix_str(x))
    print("kernel:\n" + matrix_str(k))
    print("output (top-left: 0*0 + 1*1 + 3*2 + 4*3 = 19):\n" + matrix_str(y))
    print("output == [[19, 25], [37, 43]]:", np.array_equal(y, [[19, 25], [37, 43]]))


def output_sizes() -> None:
    heading("2. Output size = floor((n + 2p - f) / s) + 1")
    print(f"{'n':>5} {'f':>3} {'p':>3} {'s':>3} | {'formula':>7} {'conv2d':>7}")
    for n, f, p, s in [(6, 3, 0, 1), (6, 3, 1, 1), (7, 3, 0, 2), (7, 3, 1, 2), (8, 4, 0, 4),
                       (224, 7, 3, 2), (5, 5, 0, 1)]:
        formula = math.floor((n + 2 * p - f) / s) + 1
        y = fastconv.conv2d(np.zeros((n, n, 1)), np.zeros((f, f, 1, 1)), stride=s, padding=p)
        print(f"{n:>5} {f:>3} {p:>3} {s:>3} | {formula:>7} {y.shape[0]:>7}")
    print("'same' padding keeps the size (stride 1):",
          fastconv.conv2d(np.zeros((6, 6, 1)), np.zeros((3, 3, 1, 1)), padding="same").shape[:2])


def synthetic_image(h: int = 96, w: int = 128) -> np.ndarray:
    """An RGB uint8 test picture: a soft background, a red square, a green disc and a blue
    triangle."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    img[...] = (0.25 + 0.2 * xx / w)[:, :, None]  # a gentle horizontal gradient
    square = (yy >= 15) & (yy < 50) & (xx >= 12) & (xx < 47)
    disc = (yy - 58) ** 2 + (xx - 80) ** 2 < 22 ** 2
    triangle = (yy >= 55) & (yy < 90) & (np.abs(xx - 30) <= (yy - 55) * 0.6)
    img[square] = (0.9, 0.1, 0.1)
    img[disc] = (0.1, 0.8, 0.2)
    img[triangle] = (0.15, 0.2, 0.95)
    return np.round(img * 255).astype(np.uint8)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale a filter response to 0..255 for viewing."""
    a = np.abs(a)
    return np.round(255 * a / max(float(a.max()), 1e-12)).astype(np.uint8)


def edge_detection(out: pathlib.Path) -> None:
    heading("3. Edge detection on an RGB image (one kernel applied to each channel)")
    img = synthetic_image()
    gx = filters.filter2d(img, filters.sobel("x"))  # vertical edges
    gy = filters.filter2d(img, filters.sobel("y"))  # horizontal edges
    magnitude = np.sqrt(gx ** 2 + gy ** 2).max(axis=2)  # strongest channel per pixel
    laplace = filters.filter2d(img, filters.laplace())
    blurred = filters.filter2d(img, filters.gaussian(2.0))
    print(f"image {img.shape} {img.dtype} -> sobel x {gx.shape} {gx.dtype}")
    row = 30  # crosses the red square's left (x=12) and right (x=47) sides
    strongest = np.sort(np.argsort(np.abs(gx[row, :, 0]))[-4:])
    print(f"row {row}: strongest |sobel x| (red channel) at columns {strongest.tolist()} "
          f"(the square spans columns 12..46)")
    print(f"|sobel y| on that row inside the square: {np.abs(gy[row, 20:40]).max():.1f} "
          f"(no horizontal edge there)")
    print(f"edge magnitude: max {magnitude.max():.0f}, median {np.median(magnitude):.1f} "
          f"(most pixels are flat)")
    print(f"gaussian blur keeps the mean: {img.mean():.2f} -> {blurred.mean():.2f}")
    try:
        from PIL import Image
    except ImportError:
        print("Pillow is not installed: not saving the pictures "
              "(pip install 'fastconv[image]' or pip install pillow)")
        return
    out.mkdir(parents=True, exist_ok=True)
    pictures = {"input.png": img, "sobel_x.png": to_uint8(gx), "sobel_y.png": to_uint8(gy),
                "edges.png": to_uint8(magnitude), "laplace.png": to_uint8(laplace),
                "blurred.png": np.clip(np.round(blurred), 0, 255).astype(np.uint8)}
    for name, picture in pictures.items():
        Image.fromarray(picture).save(out / name)
    print(f"saved {len(pictures)} PNG files to {out}: {', '.join(pictures)}")


def convolution_matrix() -> np.ndarray:
    heading("4. Convolution as a matrix: 4x4 input, 3x3 kernel -> 2x2 output")
    w = np.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    c = conv_matrix((4, 4, 1), w)
    print(f"C: {c.shape[0]} x {c.shape[1]} (outputs x inputs), {c.nnz} stored entries; "
          f"C^T: {c.T.shape[0]} x {c.T.shape[1]}")
    print("C (each row is the kernel laid out over the flattened 4x4 input):\n"
          + matrix_str(c.toarray().astype(int)))
    x = np.arange(16.0).reshape(4, 4, 1)
    same = np.allclose(c @ x.ravel(), fastconv.conv2d(x, w).ravel())
    print("C @ x.ravel() == conv2d(x, w).ravel():", same)
    return c.toarray()


def transposed_convolution(c: np.ndarray) -> None:
    heading("5. Transposed convolution: a 2x2 input back to 4x4")
    w = np.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    up = fastconv.conv_transpose2d(y[:, :, None], w)[:, :, 0]
    print("input:\n" + matrix_str(y))
    print(f"conv_transpose2d -> {up.shape}:\n" + matrix_str(up))
    print("== (C^T @ y.ravel()).reshape(4, 4):", np.allclose(up, (c.T @ y.ravel()).reshape(4, 4)))


def not_an_inverse(c: np.ndarray) -> None:
    heading("6. C^T C is not the identity: the transposed convolution is no inverse")
    ctc = c.T @ c
    print(f"C^T C is {ctc.shape[0]} x {ctc.shape[1]} of rank {np.linalg.matrix_rank(ctc)} "
          f"(at most 4: C has 4 rows); identity? {np.allclose(ctc, np.eye(16))}")
    print("its top-left 6 x 6 block:\n" + matrix_str(ctc[:6, :6].astype(int)))
    x = np.arange(16.0)
    print("x            :", matrix_str(x))
    print("C^T (C x)    :", matrix_str(c.T @ (c @ x)))


def translation_equivariance() -> None:
    heading("7. Translation equivariance: shift then convolve == convolve then shift")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 12, 12, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    shift = (2, -3)
    for mode in ("circular", "zeros"):
        a = fastconv.conv2d(np.roll(x, shift, axis=(1, 2)), w, padding="same", padding_mode=mode)
        b = np.roll(fastconv.conv2d(x, w, padding="same", padding_mode=mode), shift, axis=(1, 2))
        print(f"padding_mode={mode!r:10}: max |conv(roll(x)) - roll(conv(x))| = "
              f"{np.abs(a - b).max():.2e}" + ("  (commutes)" if np.allclose(a, b) else
                                             "  (differs at the borders)"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="directory for the PNG files (default: a new temporary directory)")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="fastconv_lecture_"))
    np.set_printoptions(linewidth=120)
    worked_example()
    output_sizes()
    edge_detection(out)
    c = convolution_matrix()
    transposed_convolution(c)
    not_an_inverse(c)
    translation_equivariance()


if __name__ == "__main__":
    main()
