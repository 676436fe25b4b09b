"""`fastconv filter IN OUT --kernel NAME`: generated images in, filter2d's result scaled to
0-255 out (the scaling documented in `fastconv filter --help`), and every error path."""
import sys

import numpy as np
import pytest

from fastconv import cli, filters
from fastconv.filters import filter2d


def _pil():
    return pytest.importorskip("PIL.Image")


def _image(shape, seed=0):
    """A uint8 test image: a bright disc on a gradient, plus noise (edges everywhere)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    base = 40 + 3 * x + 2 * y + 120 * ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2)
    base = base if len(shape) == 2 else base[..., None] * np.linspace(0.6, 1, shape[2])
    return np.clip(base + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)


def _write(tmp_path, pixels, name="in.png"):
    path = tmp_path / name
    _pil().fromarray(pixels).save(path)
    return path


def _read(path):
    with _pil().open(path) as img:
        return img.mode, np.asarray(img)


def _edges(response):
    """The documented edge scaling: round(255 * |r| / max |r|)."""
    r = np.abs(np.asarray(response, np.float64))
    return np.rint(255.0 * r / r.max()).astype(np.uint8)


def _clipped(response):
    """The documented scaling of blurs and sharpen: rounded and clipped to 0-255."""
    return np.clip(np.rint(np.asarray(response, np.float64)), 0, 255).astype(np.uint8)


# (options, the expected output from the input pixels)
CASES = {
    "sobel_x": (["--kernel", "sobel", "--axis", "x"],
                lambda p: _edges(filter2d(p, filters.sobel("x")))),
    "sobel_magnitude": (["--kernel", "sobel"],
                        lambda p: _edges(np.hypot(filter2d(p, filters.sobel("x")),
                                                  filter2d(p, filters.sobel("y"))))),
    "prewitt_y_zeros": (["--kernel", "prewitt", "--axis", "y", "--mode", "zeros"],
                        lambda p: _edges(filter2d(p, filters.prewitt("y"),
                                                  padding_mode="zeros"))),
    "laplace_flip_circular": (["--kernel", "laplace", "--flip", "--mode", "circular"],
                              lambda p: _edges(filter2d(p, filters.laplace(), flip=True,
                                                        padding_mode="circular"))),
    "gaussian_default": (["--kernel", "gaussian"],
                         lambda p: _clipped(filter2d(p, filters.gaussian(1.0)))),
    "gaussian_sigma_size": (["--kernel", "gaussian", "--sigma", "2.5", "--size", "5",
                             "--mode", "replicate"],
                            lambda p: _clipped(filter2d(p, filters.gaussian(2.5, 5),
                                                        padding_mode="replicate"))),
    "box_default": (["--kernel", "box"], lambda p: _clipped(filter2d(p, filters.box(3)))),
    "box_size": (["--kernel", "box", "--size", "4", "--mode", "symmetric"],
                 lambda p: _clipped(filter2d(p, filters.box(4), padding_mode="symmetric"))),
    "sharpen": (["--kernel", "sharpen"], lambda p: _clipped(filter2d(p, filters.sharpen()))),
}


@pytest.mark.parametrize("shape", [(13, 17), (13, 17, 3)], ids=["gray", "rgb"])
@pytest.mark.parametrize("case", list(CASES))
def test_output_is_filter2d_scaled_to_0_255(tmp_path, capsys, case, shape):
    options, expected = CASES[case]
    pixels = _image(shape, seed=len(case))
    src, out = _write(tmp_path, pixels), tmp_path / "out.png"
    assert cli.main(["filter", str(src), str(out)] + options) == 0
    mode, result = _read(out)
    assert mode == ("L" if len(shape) == 2 else "RGB")
    assert result.shape == shape  # the input's size
    want = expected(pixels)
    np.testing.assert_array_equal(result, want)
    assert 0 < want.mean() < 255  # a non-trivial picture (not all black or all white)
    assert str(out) in capsys.readouterr().out


def test_sharpen_and_edges_differ_from_plain_casting(tmp_path):
    """Sharpen overshoots 0-255 (clipped); edge responses are signed (absolute value)."""
    pixels = _image((13, 17))
    src = _write(tmp_path, pixels)
    raw = filter2d(pixels, filters.sharpen())
    assert raw.min() < 0 and raw.max() > 255  # so clipping is exercised
    assert cli.main(["filter", str(src), str(tmp_path / "s.png"), "--kernel", "sharpen"]) == 0
    _, result = _read(tmp_path / "s.png")
    assert result[raw < 0].max() == 0 and result[raw > 255].min() == 255
    assert cli.main(["filter", str(src), str(tmp_path / "e.png"), "--kernel", "sobel",
                     "--axis", "x"]) == 0
    _, result = _read(tmp_path / "e.png")
    sx = filter2d(pixels, filters.sobel("x"))
    assert result.max() == 255 and result[sx < 0].max() > 0  # negative edges show as bright


def test_rgba_keeps_alpha_unfiltered_and_jpeg_drops_it(tmp_path):
    pixels = _image((12, 10, 4), seed=3)
    src = _write(tmp_path, pixels)
    assert cli.main(["filter", str(src), str(tmp_path / "o.png"), "--kernel", "box"]) == 0
    mode, result = _read(tmp_path / "o.png")
    assert mode == "RGBA"
    np.testing.assert_array_equal(result[..., 3], pixels[..., 3])
    np.testing.assert_array_equal(result[..., :3],
                                  _clipped(filter2d(pixels[..., :3], filters.box(3))))
    assert cli.main(["filter", str(src), str(tmp_path / "o.jpg"), "--kernel", "box"]) == 0
    mode, result = _read(tmp_path / "o.jpg")
    assert mode == "RGB" and result.shape == (12, 10, 3)


def test_grayscale_with_alpha(tmp_path):
    pixels = _image((9, 11, 2), seed=4)
    src = _write(tmp_path, pixels)
    assert cli.main(["filter", str(src), str(tmp_path / "o.png"), "--kernel", "laplace"]) == 0
    mode, result = _read(tmp_path / "o.png")
    assert mode == "LA"
    np.testing.assert_array_equal(result[..., 1], pixels[..., 1])
    np.testing.assert_array_equal(result[..., 0],
                                  _edges(filter2d(pixels[..., 0], filters.laplace())))


def test_16_bit_and_palette_images(tmp_path):
    Image = _pil()
    deep = np.random.default_rng(5).integers(0, 65536, (8, 9)).astype(np.uint16)
    src = tmp_path / "deep.png"
    Image.fromarray(deep).save(src)
    assert cli.main(["filter", str(src), str(tmp_path / "d.png"), "--kernel", "box"]) == 0
    mode, result = _read(tmp_path / "d.png")
    assert mode == "L"
    np.testing.assert_array_equal(result, _clipped(filter2d(deep / 257.0, filters.box(3))))
    pal = Image.fromarray(_image((8, 9, 3))).convert("P")
    pal.save(tmp_path / "pal.png")
    rgb = np.asarray(pal.convert("RGB"))
    assert cli.main(["filter", str(tmp_path / "pal.png"), str(tmp_path / "p.png"),
                     "--kernel", "sharpen"]) == 0
    mode, result = _read(tmp_path / "p.png")
    assert mode == "RGB"
    np.testing.assert_array_equal(result, _clipped(filter2d(rgb, filters.sharpen())))


def test_the_input_may_be_the_output(tmp_path):
    pixels = _image((10, 10))
    src = _write(tmp_path, pixels)
    assert cli.main(["filter", str(src), str(src), "--kernel", "box"]) == 0
    np.testing.assert_array_equal(_read(src)[1], _clipped(filter2d(pixels, filters.box(3))))


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("options,message", [
    (["--kernel", "blur"], "invalid choice: 'blur'"),
    ([], "the following arguments are required: --kernel"),
    (["--kernel", "gaussian", "--sigma", "-1"],
     "--sigma must be a finite number > 0, but got '-1'"),
    (["--kernel", "gaussian", "--sigma", "0"], "--sigma must be a finite number > 0"),
    (["--kernel", "gaussian", "--sigma", "nan"], "--sigma must be a finite number > 0"),
    (["--kernel", "gaussian", "--sigma", "wide"], "--sigma must be a number > 0, but got 'wide'"),
    (["--kernel", "gaussian", "--size", "4"], "gaussian: size must be odd"),
    (["--kernel", "box", "--size", "0"], "--size must be >= 1, but got 0"),
    (["--kernel", "box", "--size", "three"], "--size must be an integer"),
    (["--kernel", "box", "--sigma", "2"], "--sigma does not apply to --kernel box (it takes only "
                                          "--size)"),
    (["--kernel", "sharpen", "--axis", "x", "--size", "3"],
     "--axis and --size do not apply to --kernel sharpen (it takes no options)"),
    (["--kernel", "gaussian", "--axis", "y"], "--axis does not apply to --kernel gaussian"),
    (["--kernel", "sobel", "--axis", "z"], "invalid choice: 'z'"),
    (["--kernel", "box", "--mode", "edge"], "invalid choice: 'edge'"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, options, message):
    out = tmp_path / "out.png"
    assert cli.main(["filter", str(tmp_path / "in.png"), str(out)] + options) == 2
    stdout, err = capsys.readouterr()
    assert message in err
    assert "Traceback" not in err and stdout == "" and not out.exists()


def test_unknown_output_extension_exit_2(tmp_path, capsys):
    src = _write(tmp_path, _image((6, 6)))
    assert cli.main(["filter", str(src), str(tmp_path / "out.xyz"), "--kernel", "box"]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the image format" in err and "'.xyz'" in err
    assert not (tmp_path / "out.xyz").exists()


@pytest.mark.parametrize("make_input,message", [
    (lambda d: d / "missing.png", "No such file or directory"),
    (lambda d: d, "Is a directory"),
    (lambda d: (d / "text.png").write_text("not an image") and d / "text.png",
     "cannot identify image file"),
    (lambda d: (d / "cut.png").write_bytes((d / "good.png").read_bytes()[:60]) and d / "cut.png",
     ""),
])
def test_unreadable_input_exit_1(tmp_path, capsys, make_input, message):
    _write(tmp_path, _image((20, 20, 3)), "good.png")
    src = make_input(tmp_path)
    out = tmp_path / "out.png"
    assert cli.main(["filter", str(src), str(out), "--kernel", "box"]) == 1
    stdout, err = capsys.readouterr()
    assert f"fastconv filter: cannot read image {str(src)!r}: " in err and message in err
    assert "Traceback" not in err and stdout == "" and not out.exists()


def test_unwritable_output_exit_1(tmp_path, capsys):
    src = _write(tmp_path, _image((6, 6)))
    out = tmp_path / "no" / "such" / "dir" / "out.png"
    assert cli.main(["filter", str(src), str(out), "--kernel", "box"]) == 1
    err = capsys.readouterr().err
    assert f"fastconv filter: cannot write {str(out)!r}: " in err and "Traceback" not in err
    assert cli.main(["filter", str(src), str(tmp_path), "--kernel", "box"]) == 2  # no extension


def test_pillow_missing_exit_2(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now fails
    out = tmp_path / "out.png"
    assert cli.main(["filter", str(tmp_path / "in.png"), str(out), "--kernel", "sobel"]) == 2
    stdout, err = capsys.readouterr()
    assert "needs Pillow" in err and "pip install 'fastconv[image]'" in err
    assert "Traceback" not in err and stdout == "" and not out.exists()


def test_help_lists_kernels_and_scaling(capsys):
    assert cli.main(["filter", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("sobel", "prewitt", "laplace", "gaussian", "box", "sharpen"):
        assert name in out
    assert "round(255 * |r| / max |r|)" in out and "clipped to 0-255" in out
    assert cli.main(["--help"]) == 0
    assert "filter" in capsys.readouterr().out
