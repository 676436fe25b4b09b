"""`fastconv bench --plot FILE`: the bar chart of fastconv._plot, and the CLI option."""
import sys

import pytest

import fastconv
from fastconv import _bench, cli

pytest.importorskip("matplotlib")
from fastconv import _plot  # noqa: E402  (needs matplotlib)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# lenet_5x5 shrunk by the hidden test options: batch 2, 8x8 images, forward only
TINY = ["bench", "--quick", "--layers", "lenet_5x5", "--direction", "forward", "--batch", "2",
        "--max-hw", "8", "--repeats", "2", "--no-progress", "--compare", "none"]


def test_bench_plot_writes_a_png(tmp_path, capsys):
    path = tmp_path / "bench.png"
    assert cli.main(TINY + ["--plot", str(path)]) == 0
    assert f"plot written to {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    from matplotlib.image import imread
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0  # something is drawn


def _result(layer, direction, seconds, statuses=None):
    """A Result with the given median seconds per implementation (None: no entry)."""
    statuses = statuses or {}
    entries = {name: _bench.Entry(statuses.get(name, "ok"), seconds=s)
               for name, s in seconds.items() if s is not None}
    return _bench.Result(layer, direction, ("direct", "im2col", "auto"), entries)


def test_figure_has_a_panel_per_direction_and_bars_of_gflops():
    lenet = _bench.LAYERS["lenet_5x5"]  # 64 x 24 x 24 x 6 outputs, 1 x 5 x 5 terms each
    cifar = _bench.LAYERS["cifar_3x3"]  # 64 x 32 x 32 x 32 outputs, 3 x 3 x 3 terms each
    lenet_gflop = 2 * 64 * 24 * 24 * 6 * 1 * 5 * 5 / 1e9
    cifar_gflop = 2 * 64 * 32 * 32 * 32 * 3 * 3 * 3 / 1e9
    results = [
        _result(lenet, "forward", {"direct": 0.01, "im2col": 0.02, "auto": 0.01,
                                   "numpy": 0.04, "torch": 0.005}),
        _result(lenet, "backward", {"direct": 0.05, "im2col": 0.04, "auto": 0.04,
                                    "torch": 0.1}),
        _result(cifar, "forward", {"direct": 0.1, "im2col": 0.2, "auto": 0.1, "numpy": 0.4,
                                   "torch": 0.08}, {"im2col": "FAIL"}),
        _result(cifar, "backward", {"direct": 0.5, "im2col": 0.4, "auto": 0.4, "torch": 1.0}),
    ]
    fig = _plot.figure(results, ["direct", "im2col", "auto"], ["numpy", "torch"], "a title")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["forward", "backward (input + weight gradients)"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["lenet_5x5", "cifar_3x3"]
    bars = {}
    for ax, direction in zip(axes, ("forward", "backward")):
        for container in ax.containers:
            heights = [patch.get_height() for patch in container.patches]
            bars[direction, container.get_label()] = heights
    assert bars["forward", "direct"] == pytest.approx([lenet_gflop / 0.01, cifar_gflop / 0.1])
    assert bars["forward", "torch"] == pytest.approx([lenet_gflop / 0.005, cifar_gflop / 0.08])
    assert bars["forward", "im2col"] == pytest.approx([lenet_gflop / 0.02])  # cifar: FAIL
    assert bars["backward", "im2col"] == pytest.approx([2 * lenet_gflop / 0.04,
                                                        2 * cifar_gflop / 0.4])
    assert ("backward", "numpy") not in bars  # NumPy has no backward: no bar, no gap filler
    assert "FAIL" in [t.get_text() for t in axes[0].texts]
    assert "FAIL" not in [t.get_text() for t in axes[1].texts]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["direct", "im2col", "auto",
                                                                 "numpy", "torch"]
    assert fig.get_suptitle() == "a title"


def test_save_other_formats(tmp_path):
    results = [_result(_bench.LAYERS["lenet_5x5"], "forward", {"direct": 0.01, "auto": 0.01})]
    _plot.save(results, ["direct", "auto"], [], str(tmp_path / "p.svg"))
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")
    assert _plot.check_path("a/b.pdf") is None and _plot.check_path("B.PNG") is None
    assert "extension .xyz" in _plot.check_path("out.xyz")
    assert "extension (none)" in _plot.check_path("dir.d/out")


def test_bad_plot_path_is_refused_before_the_run(tmp_path, capsys):
    assert cli.main(TINY + ["--plot", str(tmp_path / "out.xyz")]) == 2
    out, err = capsys.readouterr()
    assert "cannot tell the image format from the extension .xyz" in err and ".png" in err
    assert out == ""  # nothing was measured


def test_unwritable_plot_exit_1(tmp_path, capsys):
    path = tmp_path / "missing" / "dir" / "out.png"
    assert cli.main(TINY + ["--plot", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"could not write --plot {path}" in err and "Traceback" not in err


def test_matplotlib_missing_exit_2(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` now fails
    monkeypatch.delitem(sys.modules, "fastconv._plot")  # so it is imported afresh
    monkeypatch.delattr(fastconv, "_plot")
    path = tmp_path / "out.png"
    assert cli.main(TINY + ["--plot", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "--plot needs matplotlib" in err and "pip install 'fastconv[plot]'" in err
    assert out == "" and not path.exists()


def test_bench_help_mentions_plot(capsys):
    assert cli.main(["bench", "--help"]) == 0
    assert "--plot FILE" in capsys.readouterr().out
