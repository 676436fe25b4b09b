"""fastconv._bench: the layer suite, FLOP counts, the float64 reference and the measurement."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
from fastconv import _bench
from fastconv._bench import Entry, Layer, Result

ROOT = Path(__file__).resolve().parents[1]

# rows copied from the suite table of DESIGN.md:
# name | N | H=W | C_in | C_out | k | stride | pad | dil | groups
DESIGN_ROWS = """
| resnet_stem_7x7s2 | 1 | 224 | 3 | 64 | 7 | 2 | 3 | 1 | 1 |
| resnet_1x1_56 | 8 | 56 | 64 | 256 | 1 | 1 | 0 | 1 | 1 |
| mobilenet_dw_s2 | 8 | 56 | 128 | 128 | 3 | 2 | 1 | 1 | 128 |
| dilated_3x3_d2 | 4 | 64 | 64 | 64 | 3 | 1 | 2 | 2 | 1 |
| lenet_5x5 | 64 | 28 | 1 | 6 | 5 | 1 | 0 | 1 | 1 |
| dcgan_tconv_4x4s2 (transposed) | 8 | 16 | 256 | 128 | 4 | 2 | 1 | 1 | 1 |
| unet_tconv_2x2s2 (transposed) | 4 | 32 | 128 | 64 | 2 | 2 | 0 | 1 | 1 |
"""


def _design_rows():
    for line in DESIGN_ROWS.strip().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, transposed = cells[0].split(" ")[0], "(transposed)" in cells[0]
        yield name, tuple(int(c) for c in cells[1:]), transposed


@pytest.mark.parametrize("name, numbers, transposed", list(_design_rows()))
def test_suite_matches_design(name, numbers, transposed):
    layer = _bench.LAYERS[name]
    got = (layer.n, layer.hw, layer.c_in, layer.c_out, layer.k, layer.stride, layer.pad,
           layer.dilation, layer.groups)
    assert got == numbers
    assert layer.transposed == transposed


OLD_ROWS = ["resnet_stem_7x7s2", "resnet_3x3_56", "resnet_1x1_56", "resnet_3x3_28",
            "resnet_3x3_14", "resnet_3x3_7", "vgg_3x3_112", "mobilenet_dw_112",
            "mobilenet_dw_s2", "dilated_3x3_d2", "grouped_g8", "lenet_5x5", "cifar_3x3",
            "dcgan_tconv_4x4s2", "unet_tconv_2x2s2"]


def test_suite_keeps_the_fifteen_old_layers_first():
    names = [layer.name for layer in _bench.SUITE]
    assert len(names) == len(set(names)) == 34
    assert names[:15] == OLD_ROWS
    assert [n for n in names if _bench.LAYERS[n].transposed] == ["dcgan_tconv_4x4s2",
                                                                  "unet_tconv_2x2s2"]


# issue 14's layers of real networks: (C_in, C_out, k, stride, H=W) -> a layer at batch 8 and
# one at batch 1 (an old row serves as the batch-8 one of three of them)
REAL_NETWORK_LAYERS = [(256, 64, 1, 1, 56), (64, 256, 1, 1, 56), (1024, 256, 1, 1, 14),
                       (512, 2048, 1, 1, 7), (128, 256, 3, 1, 56), (256, 256, 3, 1, 14),
                       (512, 512, 3, 1, 28), (512, 512, 3, 1, 7), (128, 256, 3, 2, 56),
                       (96, 576, 1, 1, 14), (960, 320, 1, 1, 7)]


@pytest.mark.parametrize("c_in, c_out, k, stride, hw", REAL_NETWORK_LAYERS)
def test_suite_has_real_network_layers_at_batch_1_and_8(c_in, c_out, k, stride, hw):
    found = [layer for layer in _bench.SUITE
             if (layer.c_in, layer.c_out, layer.k, layer.stride, layer.hw) == (c_in, c_out, k,
                                                                               stride, hw)]
    assert sorted(layer.n for layer in found) == [1, 8]
    batch1 = next(layer for layer in found if layer.n == 1)
    batch8 = next(layer for layer in found if layer.n == 8)
    assert batch1.name == batch8.name + "_b1"
    assert all(layer.pad == k // 2 and layer.groups == 1 for layer in found)


def test_quick_selection_runs_each_geometry_once():
    quick = _bench.quick_selection(_bench.SUITE)
    names = [layer.name for layer in quick]
    assert names[:15] == OLD_ROWS  # the old rows keep their names and order
    assert not any(name.endswith("_b1") for name in names)  # = their batch-8 twin's quick one
    assert len(names) == 34 - 11  # the eleven _b1 twins
    assert all(layer.n <= 8 for layer in quick)
    # asked for alone, a _b1 layer is kept
    assert [l.name for l in _bench.quick_selection([_bench.LAYERS["resnet_3x3_7_b1"]])] == [
        "resnet_3x3_7_b1"]


def test_shapes_of_plain_and_transposed_layers():
    stem = _bench.LAYERS["resnet_stem_7x7s2"]
    assert stem.weight_shape == (7, 7, 3, 64)
    assert stem.output_shape == (1, 112, 112, 64)  # (224 + 6 - 6 - 1) // 2 + 1
    dw = _bench.LAYERS["mobilenet_dw_s2"]
    assert dw.weight_shape == (3, 3, 1, 128)
    assert dw.output_shape == (8, 28, 28, 128)
    dcgan = _bench.LAYERS["dcgan_tconv_4x4s2"]  # C_in 256 -> C_out 128, 16 -> 32 pixels
    assert dcgan.weight_shape == (4, 4, 128, 256)
    assert dcgan.output_shape == (8, 32, 32, 128)
    unet = _bench.LAYERS["unet_tconv_2x2s2"]
    assert unet.weight_shape == (2, 2, 64, 128)
    assert unet.output_shape == (4, 64, 64, 64)


@pytest.mark.parametrize("name, expected", [
    ("resnet_3x3_56", 2 * 8 * 56 * 56 * 64 * 64 * 9),
    ("resnet_stem_7x7s2", 2 * 1 * 112 * 112 * 64 * 3 * 49),
    ("mobilenet_dw_s2", 2 * 8 * 28 * 28 * 128 * 1 * 9),
    ("grouped_g8", 2 * 8 * 28 * 28 * 128 * 16 * 9),
    ("lenet_5x5", 2 * 64 * 24 * 24 * 6 * 1 * 25),
    # transposed: the adjoint convolution maps the 32x32x128 output to the 16x16x256 input
    ("dcgan_tconv_4x4s2", 2 * 8 * 16 * 16 * 256 * 128 * 16),
])
def test_flops(name, expected):
    layer = _bench.LAYERS[name]
    assert layer.flops("forward") == expected
    assert layer.flops("backward") == 2 * expected


@pytest.mark.parametrize("layer", _bench.SUITE, ids=lambda l: l.name)
def test_suite_geometry_agrees_with_fastconv(layer):
    """Output shape and FLOPs against fastconv's own geometry (_params), for every layer."""
    geo = _bench.geometry(layer)
    if layer.transposed:
        assert geo.in_hw == (layer.out_hw,) * 2 and geo.out_hw == (layer.hw,) * 2
        assert (geo.in_channels, geo.out_channels) == (layer.c_out, layer.c_in)
    else:
        assert geo.out_hw == (layer.out_hw,) * 2
    assert layer.flops() == geo.flops
    assert _bench.auto_choice(layer).split("/")[0] in ("direct", "im2col", "winograd", "blocked")


def test_quick_layer_divides_the_batch():
    assert _bench.quick_layer(_bench.LAYERS["lenet_5x5"]).n == 8
    assert _bench.quick_layer(_bench.LAYERS["resnet_3x3_56"]).n == 1
    assert _bench.quick_layer(_bench.LAYERS["resnet_stem_7x7s2"]).n == 1
    assert _bench.quick_layer(_bench.LAYERS["cifar_3x3"]).hw == 32


# ----------------------------------------------------------------------------------------------
# the float64 reference against tests/reference.py (written independently from the definition)

SMALL = [
    Layer("plain", 2, 7, 3, 4, 3, 1, 1),
    Layer("strided", 2, 9, 4, 6, 3, 2, 1),
    Layer("dilated", 1, 9, 3, 5, 3, 1, 2, 2),
    Layer("grouped", 2, 6, 6, 9, 3, 1, 1, 1, 3),
    Layer("depthwise", 2, 8, 20, 20, 3, 2, 1, 1, 20),  # more than 16 groups: the einsum path
    Layer("pointwise", 1, 5, 4, 7, 1),
    Layer("tconv", 2, 5, 6, 4, 4, 2, 1, transposed=True),
    Layer("tconv_grouped", 1, 4, 6, 4, 3, 2, 1, 2, 2, transposed=True),
]


def _forward64(layer, x, w):
    s, p, d = (layer.stride,) * 2, ((layer.pad,) * 2,) * 2, (layer.dilation,) * 2
    if layer.transposed:
        return reference.conv_transpose2d(x, w, None, s, p, (0, 0), d, layer.groups)
    return reference.conv2d(x, w, None, s, p, d, layer.groups)


@pytest.mark.parametrize("layer", SMALL, ids=lambda l: l.name)
def test_reference_forward(layer):
    arrays = _bench.make_arrays(layer, "forward", seed=1)
    (y,) = _bench.reference(layer, "forward", arrays)
    expected = _forward64(layer, arrays["x"], arrays["w"])
    assert y.shape == expected.shape == layer.output_shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layer", SMALL, ids=lambda l: l.name)
def test_reference_backward(layer):
    """grad_input and grad_weight of <gy, f(x, w)>, f linear in each: checked by the
    identities <grad, v> = <gy, f(v, w)> and <gy, f(x, v)> for random directions v."""
    arrays = _bench.make_arrays(layer, "backward", seed=2)
    x, w, gy = (arrays[k].astype(np.float64) for k in ("x", "w", "gy"))
    gx, gw = _bench.reference(layer, "backward", arrays)
    assert gx.shape == x.shape and gw.shape == w.shape
    rng = np.random.default_rng(3)
    for _ in range(2):
        vx, vw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
        assert np.vdot(gx, vx) == pytest.approx(np.vdot(gy, _forward64(layer, vx, w)), rel=1e-10)
        assert np.vdot(gw, vw) == pytest.approx(np.vdot(gy, _forward64(layer, x, vw)), rel=1e-10)


@pytest.mark.parametrize("layer", SMALL, ids=lambda l: l.name)
def test_numpy_baseline_agrees_with_reference(layer):
    arrays = _bench.make_arrays(layer, "forward", seed=4)
    contender = _bench.numpy_contender(layer, "forward", arrays)
    expected = _forward64(layer, arrays["x"], arrays["w"])
    if layer.transposed and layer.groups > 1:
        assert contender is None  # not offered: the baseline has no grouped col2im
        return
    (y,) = contender.to_numpy(contender.run())
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_numpy_baseline_is_forward_only():
    layer = SMALL[0]
    assert _bench.numpy_contender(layer, "backward", _bench.make_arrays(layer, "backward")) is None


def test_summed_terms():
    layer = Layer("t", 2, 10, 6, 8, 3, 1, 1, 1, 2)  # output 10x10
    assert _bench.summed_terms(layer, "forward") == [3 * 9]
    assert _bench.summed_terms(layer, "backward") == [4 * 9, 2 * 10 * 10]
    tconv = Layer("t", 2, 5, 6, 4, 4, 2, 1, transposed=True)  # conv: 4 -> 6 channels, out 5x5
    assert _bench.summed_terms(tconv, "forward") == [6 * 16]
    assert _bench.summed_terms(tconv, "backward") == [4 * 16, 2 * 5 * 5]


def test_relative_error():
    ref = np.array([1.0, -4.0, 2.0])
    assert _bench.relative_error(np.array([1.0, -4.0, 2.5]), ref) == pytest.approx(0.125)
    assert _bench.relative_error(np.array([1.0, np.nan, 2.0]), ref) == math.inf
    assert _bench.relative_error(np.zeros(2), ref) == math.inf  # wrong shape
    assert _bench.tolerance(100) == pytest.approx(1e-4)


def test_geometric_mean():
    assert _bench.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert _bench.geometric_mean([None, 0.5, 2.0]) == pytest.approx(1.0)
    assert _bench.geometric_mean([]) is None


# ----------------------------------------------------------------------------------------------
# measurement

TINY = [Layer("tiny", 2, 6, 3, 4, 3, 1, 1), Layer("tiny_t", 1, 4, 4, 3, 2, 2, 0, transposed=True)]


@pytest.mark.parametrize("layer", TINY, ids=lambda l: l.name)
@pytest.mark.parametrize("direction", _bench.DIRECTIONS)
def test_bench_layer_checks_and_times(layer, direction):
    result = _bench.bench_layer(layer, direction, ["direct", "im2col", "auto"], repeats=3)
    names = ["direct", "im2col", "auto"] + (["numpy"] if direction == "forward" else [])
    assert list(result.entries) == names
    terms = _bench.summed_terms(layer, direction)
    for name, entry in result.entries.items():
        assert entry.status == "ok", (name, entry.message)
        assert entry.error <= _bench.tolerance(max(terms))
        assert len(entry.times) == 3 and entry.seconds == sorted(entry.times)[1]
        assert result.gflops(name) == pytest.approx(layer.flops(direction) / entry.seconds / 1e9)
    assert result.best in ("direct", "im2col", "auto")
    assert result.failed == [] and result.vs_torch is None
    json.dumps(result.as_dict())  # serialisable


def test_bench_layer_with_torch():
    torch = pytest.importorskip("torch")
    for layer in TINY:
        for direction in _bench.DIRECTIONS:
            result = _bench.bench_layer(layer, direction, ["im2col"], repeats=1, torch=torch)
            assert result.entries["torch"].status == "ok", result.entries["torch"].message
            assert result.vs_torch == pytest.approx(result.entries["torch"].seconds
                                                    / result.entries["im2col"].seconds)


def test_bench_layer_marks_wrong_results(monkeypatch):
    real = _bench.fastconv_contender

    def broken(layer, direction, arrays, algorithm):
        c = real(layer, direction, arrays, algorithm)
        if algorithm == "im2col":
            return _bench.Contender(algorithm, c.run, lambda y: [y * 1.01])
        if algorithm == "direct":
            def crash():
                raise RuntimeError("kernel exploded")
            return _bench.Contender(algorithm, crash)
        if algorithm == "auto":
            def refuse():
                raise ValueError("auto cannot serve this")
            return _bench.Contender(algorithm, refuse)
        return c

    monkeypatch.setattr(_bench, "fastconv_contender", broken)
    result = _bench.bench_layer(TINY[0], "forward", ["direct", "im2col", "auto"], repeats=2,
                                numpy_baseline=False)
    assert result.entries["im2col"].status == "FAIL"
    assert result.entries["im2col"].error == pytest.approx(0.01, rel=1e-3)
    assert result.entries["im2col"].times == []  # a wrong result is not timed
    assert result.entries["direct"].status == "FAIL"
    assert "kernel exploded" in result.entries["direct"].message
    assert result.entries["auto"].status == "n/a"
    assert result.failed == ["direct", "im2col"] and result.best is None
    table = _bench.format_table([result], ["direct", "im2col", "auto"], ["numpy"])
    row = table.splitlines()[2]
    assert row.split() == ["tiny", "forward", "FAIL", "FAIL", "n/a", "-", "FAIL", "(direct,",
                           "im2col)"]


def test_vs_torch_and_best():
    layer = TINY[0]
    entries = {"direct": Entry("ok", 0.0, 4.0), "im2col": Entry("ok", 0.0, 2.0),
               "torch": Entry("ok", 0.0, 3.0)}
    result = Result(layer, "forward", ("direct", "im2col"), entries)
    assert result.best == "im2col"
    assert result.vs_torch == pytest.approx(1.5)
    assert result.gflops("direct") == pytest.approx(layer.flops() / 4.0 / 1e9)
    table = _bench.format_table([result], ["direct", "im2col"], ["numpy", "torch"])
    header, _, row = table.splitlines()
    assert header.split() == ["layer", "dir", "direct", "im2col", "numpy", "torch", "x", "vs",
                              "torch", "check"]
    assert row.split()[-2:] == ["1.50", "ok"]


# ----------------------------------------------------------------------------------------------
# the machine

def test_cpu_simd_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nmodel name : Test CPU 9000\n"
                       "flags : fpu sse2 avx2 avx512f fma\n")
    assert _bench.cpu_simd_flags(str(cpuinfo)) == ["sse2", "avx2", "fma", "avx512f"]
    assert _bench.cpu_model(str(cpuinfo)) == "Test CPU 9000"
    assert _bench.cpu_simd_flags(str(tmp_path / "missing")) == []


def test_blas_env_warning(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert _bench.blas_env_warning() is None
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    warning = _bench.blas_env_warning()
    assert "OPENBLAS_L2_SIZE=1048576" in warning and "env -u OPENBLAS_CORETYPE" in warning
    assert _bench.blas_env() == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": "1048576"}


@pytest.mark.parametrize("path, owner", [
    ("/v/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_.so", "numpy"),
    ("/v/lib/python3.11/site-packages/torch/lib/libgomp.so.1", "torch"),
    ("/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0", "system"),
])
def test_library_owner(path, owner):
    assert _bench._owner(path) == owner


def test_machine_info():
    from fastconv._kernels import _openmp
    import fastconv

    info = _bench.machine_info(threads=3)
    assert info["threads"] == 3
    assert info["fastconv_version"] == fastconv.__version__
    assert info["openmp"] == _openmp.openmp_enabled()
    assert info["numpy"] == np.__version__
    assert set(info["env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert any(p["user_api"] == "blas" for p in info["blas"])  # SciPy's BLAS at least
    json.dumps(info)


def test_bench_files_are_collected_only_when_asked():
    """bench/bench_conv.py: every layer x direction x algorithm, not part of plain pytest."""
    env = {**os.environ, "FASTCONV_BENCH_QUICK": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "bench/bench_conv.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    items = [line for line in out.stdout.splitlines() if "::" in line]
    from fastconv._algorithms import ALGORITHMS
    winograd_layers = [layer.name for layer in _bench.SUITE if _bench.serves(layer, "winograd")]
    assert winograd_layers == ["resnet_3x3_56", "resnet_3x3_28", "resnet_3x3_14", "resnet_3x3_7",
                               "vgg_3x3_112", "mobilenet_dw_112", "grouped_g8", "cifar_3x3",
                               "wide_3x3_128to256_56", "wide_3x3_128to256_56_b1",
                               "vgg_3x3_512_28", "vgg_3x3_512_28_b1", "resnet_3x3_14_b1",
                               "resnet_3x3_7_b1"]
    assert len(items) == 2 * (len(_bench.SUITE) * (len(ALGORITHMS) - 1) + len(winograd_layers))
    assert any("lenet_5x5-backward-im2col" in item for item in items)
    assert any("vgg_3x3_112-forward-winograd" in item for item in items)
    assert not any("lenet_5x5-forward-winograd" in item for item in items)
    import tomllib
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_sgemm_rate():
    assert 0 < _bench.sgemm_rate(64, seconds=0.0) < 1e6  # GFLOP/s, finite


def test_fraction_of_sgemm_and_choices_in_the_table():
    layer = TINY[0]
    result = _bench.bench_layer(layer, "backward", ["direct", "im2col"], repeats=1)
    assert set(result.auto) == {"input_gradient", "weight_gradient"}
    assert result.auto == {part: _bench.auto_choices(layer)[part]
                           for part in ("input_gradient", "weight_gradient")}
    best = result.gflops(result.best)
    assert result.of_sgemm(2 * best) == pytest.approx(0.5)
    assert result.of_sgemm(None) is None
    table = _bench.format_table([result], ["direct", "im2col"], [], sgemm_gflops=4 * best)
    assert table.splitlines()[0].split()[-3:] == ["of", "sgemm", "check"]
    assert table.splitlines()[2].split()[-2:] == ["0.25", "ok"]
    assert "of sgemm" not in _bench.format_table([result], ["direct"], [])
    line = _bench.format_choices([result])
    assert line.split()[:2] == [layer.name, "backward"]
    assert f"input grad {result.auto['input_gradient'][0]} (" in line
    assert result.as_dict(4 * best)["fraction_of_sgemm"] == pytest.approx(0.25)


def test_auto_choices_of_a_transposed_layer():
    """A transposed layer's forward is its adjoint convolution's input gradient."""
    from fastconv import _algorithms

    layer = _bench.LAYERS["unet_tconv_2x2s2"]
    conv = _algorithms.describe(_bench.geometry(layer))
    mine = _bench.auto_choices(layer)
    assert mine["forward"] == conv["input_gradient"]
    assert mine["input_gradient"] == conv["forward"]
    assert mine["forward"][0] == "im2col"  # one tap per sub-pixel phase


def test_wait_until_idle_waits_for_spinning_threads(monkeypatch):
    """Engines are timed one after the other: wait_until_idle sleeps until a slice in which
    the process used (almost) no CPU time - a pool still spinning would take a core from the
    next call - and gives up after its limit. On a fake clock (a real spinning thread can be
    descheduled for a whole slice on a loaded machine): the process is busy for 5 slices."""
    clock = {"wall": 0.0, "cpu": 0.0, "busy": 5}

    def sleep(seconds):
        clock["wall"] += seconds
        if clock["busy"] > 0:  # another thread spun through the whole slice
            clock["busy"] -= 1
            clock["cpu"] += seconds
    monkeypatch.setattr(_bench.time, "sleep", sleep)
    monkeypatch.setattr(_bench.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(_bench.time, "perf_counter", lambda: clock["wall"])
    _bench.wait_until_idle()
    assert clock["busy"] == 0
    assert clock["wall"] == pytest.approx(6 * _bench.IDLE_SLICE)  # 5 busy slices, 1 idle
    clock.update(wall=0.0, busy=10**9)  # never idle
    _bench.wait_until_idle(limit=0.05)
    assert clock["wall"] == pytest.approx(0.05, abs=_bench.IDLE_SLICE)
