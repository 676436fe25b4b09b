"""fastconv bench --models and the layer suite's ONNX Runtime column, on tiny networks and
layers (no timing assertions)."""
import json

import numpy as np
import pytest

from fastconv import _bench, _bench_models, cli

# a ResNet-18 of first-stage width 4 on 64 x 64 images, 10 classes
TINY = ["bench", "--models", "resnet18", "--width", "4", "--image", "64", "--classes", "10",
        "--repeats", "1", "--no-progress"]


def test_torch_twin_holds_the_same_weights():
    torch = pytest.importorskip("torch")
    import fastconv

    model = _bench_models.MODELS["unet"]  # Sequential, Parallel, Concat, ConvTranspose2d
    net = _bench_models.build(model, width=2, image=16, classes=3)
    twin = _bench_models.torch_twin(net, torch)
    back = fastconv.state_dict_from_torch(twin)
    mine = net.state_dict()
    assert set(back) == set(mine)
    for key, value in mine.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3), np.float32)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert _bench_models.relative_error(net(x), expected) < 1e-5


def test_twin_refuses_a_layer_it_does_not_know():
    torch = pytest.importorskip("torch")
    from fastconv.layers import ELU, Sequential

    with pytest.raises(TypeError, match="no PyTorch twin for ELU"):
        _bench_models.torch_twin(Sequential(ELU()), torch)


def test_models_bench_checks_and_writes_json(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "models.json"
    code = cli.main(TINY + ["--batch", "1,2", "--train", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(path.read_text())
    rows = {(r["model"], r["mode"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {("resnet18", m, b) for m in ("inference", "train") for b in (1, 2)}
    inference = rows["resnet18", "inference", 2]
    assert set(inference["engines"]) == {"fastconv", "torch", "onnxruntime"}
    for engine in inference["engines"].values():
        assert engine["error_vs_torch"] <= _bench_models.INFERENCE_TOLERANCE
        assert engine["ms"] > 0 and engine["images_per_s"] == pytest.approx(
            2e3 / engine["ms"])
    assert inference["vs_torch"] > 0 and inference["vs_onnxruntime"] > 0
    train = rows["resnet18", "train", 1]
    assert set(train["engines"]) == {"fastconv", "torch"}
    assert 0 < train["engines"]["fastconv"]["error_vs_torch"] < 0.1  # vs float64
    assert report["config"]["engines"] == ["fastconv", "torch", "onnxruntime"]
    assert report["machine"]["onnxruntime"] and report["failed"] == 0
    assert "x vs torch" in out and "x vs ort" in out and "FAIL" not in out


def test_a_wrong_engine_is_reported_as_fail(monkeypatch, capsys):
    pytest.importorskip("torch")
    real = _bench_models.inference_form

    def off_by_one_percent(net):
        model, description = real(net)
        return (lambda x: model(x) * 1.01), description
    monkeypatch.setattr(_bench_models, "inference_form", off_by_one_percent)
    assert cli.main(TINY + ["--batch", "1", "--compare", "torch"]) == 1
    captured = capsys.readouterr()
    assert "FAIL (fastconv" in captured.out and "FAIL resnet18 batch 1" in captured.err


def _hide(monkeypatch, name):
    """Make `import name` fail, as on a machine without it."""
    import builtins

    real_import = builtins.__import__

    def fake_import(module, *args, **kwargs):
        if module == name or module.startswith(name + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(module, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_torch_names_it_and_how_to_install_it(monkeypatch, capsys):
    _hide(monkeypatch, "torch")
    assert cli.main(TINY + ["--batch", "1"]) == 0
    captured = capsys.readouterr()
    assert "PyTorch is not installed" in captured.err
    assert "download.pytorch.org/whl/cpu" in captured.err
    assert "unchecked (no torch)" in captured.out
    assert cli.main(TINY + ["--compare", "torch"]) == 2
    assert "--compare torch needs PyTorch" in capsys.readouterr().err


def test_missing_onnxruntime_names_it_and_how_to_install_it(monkeypatch, capsys):
    _hide(monkeypatch, "onnxruntime")
    layer = ["bench", "--layers", "lenet_5x5", "--batch", "2", "--max-hw", "8", "--repeats",
             "1", "--no-progress", "--direction", "forward", "--algorithms", "direct"]
    assert cli.main(layer + ["--compare", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "--compare onnxruntime needs ONNX Runtime" in err and "fastconv[bench]" in err
    assert cli.main(layer) == 0
    captured = capsys.readouterr()
    assert "ONNX Runtime is not installed" in captured.err and "fastconv[bench]" in captured.err
    assert "x vs ort" not in captured.out


@pytest.mark.parametrize("layer", [
    _bench.Layer("strided", 2, 9, 4, 6, 3, 2, 1),
    _bench.Layer("grouped_dilated", 1, 10, 6, 4, 3, 1, 2, 2, 2),
    _bench.Layer("transposed", 2, 5, 4, 3, 4, 2, 1, transposed=True),
])
def test_onnxruntime_conv_equals_fastconv(layer):
    ort = _bench.onnxruntime_module()
    if ort is None:
        pytest.skip("onnxruntime is not installed")
    arrays = _bench.make_arrays(layer, "forward")
    contender = _bench.onnxruntime_contender(layer, "forward", arrays, ort)
    (got,) = contender.to_numpy(contender.run())
    (expected,) = _bench.reference(layer, "forward", arrays)  # float64, from the definition
    assert got.shape == layer.output_shape
    assert _bench.relative_error(got, expected) < 1e-5
    assert _bench.onnxruntime_contender(layer, "backward", arrays, ort) is None


def test_layer_suite_has_an_onnxruntime_column(tmp_path, capsys):
    if _bench.onnxruntime_module() is None:
        pytest.skip("onnxruntime is not installed")
    path = tmp_path / "layers.json"
    assert cli.main(["bench", "--layers", "lenet_5x5", "--batch", "2", "--max-hw", "8",
                     "--repeats", "1", "--no-progress", "--algorithms", "direct",
                     "--compare", "onnxruntime", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime" in out and "x vs ort" in out
    report = json.loads(path.read_text())
    forward = next(r for r in report["results"] if r["direction"] == "forward")
    assert forward["results"]["onnxruntime"]["status"] == "ok"
    assert forward["vs_onnxruntime"] > 0 and report["geomean_vs_onnxruntime"] > 0


def test_model_options_are_checked(capsys):
    assert cli.main(["bench", "--models", "resnet19"]) == 2
    assert "unknown model 'resnet19'" in capsys.readouterr().err
    assert cli.main(["bench", "--batch", "1,8", "--layers", "lenet_5x5"]) == 2
    assert "one batch size" in capsys.readouterr().err
    assert cli.main(["bench", "--compare", "tensorflow"]) == 2
    assert "unknown peer 'tensorflow'" in capsys.readouterr().err


def test_models_plot_draws_images_per_second_and_marks_fail():
    pytest.importorskip("matplotlib")
    from fastconv import _plot

    ok = _bench_models.Result("resnet18", 8, 224, "inference",
                              seconds={"fastconv": 0.2, "torch": 0.4})
    bad = _bench_models.Result("unet", 1, 128, "inference", failed=["fastconv"],
                               seconds={"fastconv": 0.1, "torch": 0.3})
    fig = _plot.models_figure([ok, bad], ["fastconv", "torch"], "title")
    (ax,) = fig.axes
    heights = sorted(round(p.get_height()) for p in ax.patches)
    assert heights == [3, 20, 40]  # images/s: unet's fastconv bar is left out
    assert "FAIL" in [t.get_text() for t in ax.texts]
