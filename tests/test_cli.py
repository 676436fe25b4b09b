"""The fastconv command line, run in-process through main([...]) on tiny layers."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv
from fastconv import _bench, cli
from fastconv._kernels import _openmp

ROOT = Path(__file__).resolve().parents[1]
# lenet_5x5 shrunk: batch 2, 8x8 images (the hidden --max-hw keeps the tests fast)
TINY = ["bench", "--layers", "lenet_5x5", "--batch", "2", "--max-hw", "8", "--repeats", "2",
        "--no-progress", "--compare", "none"]


def _rows(out: str) -> list[list[str]]:
    """The table rows of a bench report: the lines after the dashed rule, up to a blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def _header(out: str) -> list[str]:
    lines = out.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("---")) - 1].split()


def test_bench_tiny_layer(capsys):
    assert cli.main(TINY) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"fastconv {fastconv.__version__} bench: ")
    assert "BLAS: openblas" in out or "BLAS: " in out
    assert _header(out) == ["layer", "dir", "direct", "im2col", "winograd", "blocked", "auto",
                            "numpy", "of", "sgemm", "check"]
    sgemm = next(line for line in out.splitlines() if line.startswith("sgemm: "))
    assert float(sgemm.split()[1]) > 0 and "float32 through " in sgemm
    rows = _rows(out)
    assert [r[:2] for r in rows] == [["lenet_5x5", "forward"], ["lenet_5x5", "backward"]]
    for row in rows:
        assert row[4] == "n/a"  # Winograd serves 3x3 kernels only
        numbers = row[2:4] + row[5:7] + ([row[7]] if row[1] == "forward" else [])
        assert all(float(v) > 0 for v in numbers), row
        assert float(row[-2]) > 0  # the best algorithm's fraction of the sgemm rate
        assert row[-1] == "ok"
    assert rows[1][7] == "-"  # the NumPy baseline is forward only
    assert "FAIL" not in out + err
    # auto's choice and its reason, per row
    choices = out.split("auto's choices")[1].splitlines()[1:3]
    assert choices[0].split()[:4] == ["lenet_5x5", "forward", "forward", "direct"]
    assert "input grad im2col (rule: " in choices[1] and "weight grad im2col (rule: " in choices[1]


def test_bench_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    args = TINY + ["--layers", "lenet_5x5,unet_tconv_2x2s2", "--algorithms", "im2col,direct",
                   "--direction", "forward", "--threads", "1", "--json", str(path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"results written to {path}" in out
    report = json.loads(path.read_text())
    assert set(report) >= {"machine", "config", "results", "geomean_vs_torch", "failed"}
    machine = report["machine"]
    assert machine["fastconv_version"] == fastconv.__version__
    assert machine["threads"] == 1
    assert set(machine["env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert any(pool["user_api"] == "blas" and "internal_api" in pool
               for pool in machine["blas"])
    assert report["config"]["algorithms"] == ["im2col", "direct"]
    assert report["config"]["layers"] == ["lenet_5x5", "unet_tconv_2x2s2"]
    assert report["failed"] == 0
    assert machine["sgemm_gflops"] > 0 and machine["blas_kernel"]
    assert machine["caches"]["l2"] > 0 and machine["cpu"]
    for r in report["results"]:
        best = r["results"][r["best"]]["gflops"]
        assert r["fraction_of_sgemm"] == pytest.approx(best / machine["sgemm_gflops"])
        assert set(r["auto"]) == {"forward"}
        assert r["auto"]["forward"]["reason"].startswith("rule: ")
    assert report["results"][1]["auto"]["forward"]["algorithm"] == "im2col"  # one tap a phase
    assert [(r["layer"], r["direction"]) for r in report["results"]] == [
        ("lenet_5x5", "forward"), ("unet_tconv_2x2s2", "forward")]
    for r in report["results"]:
        assert set(r["results"]) == {"im2col", "direct", "numpy"}
        for entry in r["results"].values():
            assert entry["status"] == "ok" and entry["gflops"] > 0
            assert entry["seconds"] == pytest.approx(r["flops"] / entry["gflops"] / 1e9)
    assert report["results"][1]["geometry"]["transposed"] is True
    assert report["results"][0]["geometry"]["n"] == 2
    assert _header(out)[2:4] == ["im2col", "direct"]  # the order asked for


def test_bench_threads_in_header(capsys):
    assert cli.main(TINY + ["--threads", "1", "--direction", "backward"]) == 0
    out = capsys.readouterr().out
    assert " 1 threads" in out.splitlines()[0]
    assert [r[1] for r in _rows(out)] == ["backward"]


def test_bench_quick_lenet(capsys):
    """The README's smoke run, on one layer: --quick is an eighth of the batch."""
    assert cli.main(["bench", "--quick", "--layers", "lenet_5x5", "--no-progress",
                     "--compare", "none", "--direction", "forward", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out.splitlines()[0]
    assert [r[:2] + r[-1:] for r in _rows(out)] == [["lenet_5x5", "forward", "ok"]]


def test_bench_progress_counter_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    args = [a for a in TINY if a != "--no-progress"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "[1/2] lenet_5x5 forward" in err and "[2/2] lenet_5x5 backward" in err


def test_bench_reports_fail(monkeypatch, capsys):
    real = _bench.fastconv_contender

    def wrong_im2col(layer, direction, arrays, algorithm):
        c = real(layer, direction, arrays, algorithm)
        if algorithm == "im2col":
            return _bench.Contender(algorithm, c.run, lambda res: [2 * a for a in c.to_numpy(res)])
        return c

    monkeypatch.setattr(_bench, "fastconv_contender", wrong_im2col)
    assert cli.main(TINY + ["--direction", "forward"]) == 1
    out, err = capsys.readouterr()
    (row,) = _rows(out)
    assert row[3] == "FAIL" and row[-2:] == ["FAIL", "(im2col)"]
    assert "FAIL lenet_5x5 forward im2col" in err


def test_bench_warns_about_openblas_env(monkeypatch, capsys):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert cli.main(TINY + ["--direction", "forward"]) == 0
    err = capsys.readouterr().err
    assert "OPENBLAS_CORETYPE=Haswell" in err
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in err


def test_bench_compare_torch(capsys):
    pytest.importorskip("torch")
    assert cli.main(TINY + ["--compare", "torch", "--algorithms", "im2col"]) == 0
    out = capsys.readouterr().out
    assert _header(out) == ["layer", "dir", "im2col", "numpy", "torch", "x", "vs", "torch",
                            "of", "sgemm", "check"]
    for row in _rows(out):
        assert float(row[-3]) > 0 and float(row[-2]) > 0 and row[-1] == "ok"
    assert "geometric mean of x vs torch" in out and "over 2 rows" in out


def test_compare_torch_without_torch(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert _bench.torch_module() is None
    assert cli.main(TINY + ["--compare", "torch"]) == 2
    out, err = capsys.readouterr()
    assert "--compare torch needs PyTorch" in err
    assert out == ""  # nothing was run


@pytest.mark.parametrize("args, message", [
    (["bench", "--layers", "resnet_9x9"], "unknown layer 'resnet_9x9'"),
    (["bench", "--layers", "lenet_5x5,nope"], "unknown layer 'nope'"),
    (["bench", "--algorithms", "fft"], "unknown algorithm 'fft'"),
    (["bench", "--threads", "0"], "--threads must be >= 1, but got 0"),
    (["bench", "--threads", "two"], "--threads must be an integer"),
    (["bench", "--direction", "sideways"], "invalid choice: 'sideways'"),
    (["bench", "--repeats", "-1"], "--repeats must be >= 1"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
])
def test_bad_arguments_exit_2(args, message, capsys):
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert message in err
    assert "Traceback" not in err and out == ""


def test_help(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--layers" in out and "dcgan_tconv_4x4s2" in out and "env -u OPENBLAS_CORETYPE" in out
    assert "--max-hw" not in out  # hidden, for tests


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"fastconv {fastconv.__version__}"
    assert f"OpenMP: {'on' if _openmp.openmp_enabled() else 'off'}" in out
    assert f"threads: {fastconv.get_num_threads()}" in out
    assert f"compile args: {_openmp.compile_args()}" in out
    assert any(line.startswith("  openblas ") for line in out)  # SciPy's BLAS, via threadpoolctl
    assert any(line.startswith("OPENBLAS_CORETYPE: ") for line in out)
    assert any(line.startswith("caches (") and " L2 " in line for line in out)
    assert f"autotune: {'on' if fastconv.get_autotune() else 'off'}" in out
    # every suite layer with auto's choice in each direction, the reasons numbered below
    rows = {line.split()[0]: line.split()[1:] for line in out if line.startswith("  ")
            and line.split()[0] in _bench.LAYERS}
    assert set(rows) == set(_bench.LAYERS)
    for name in ("resnet_1x1_56", "resnet_3x3_14"):  # the rows show auto's own choices
        chosen = _bench.auto_choices(_bench.LAYERS[name])
        assert rows[name][0::2] == [chosen[d][0] for d in
                                    ("forward", "input_gradient", "weight_gradient")]
    assert all(cells[0::2] and set(cells[0::2]) <= {"direct", "im2col", "winograd", "blocked"}
               for cells in rows.values())
    assert any(line.startswith("  [1] rule: ") for line in out)


def test_info_says_how_much_l3_auto_counts_on():
    # a guest told its host's whole L3: the line gives both figures; a CPU's own L3 one
    told = {"caches_from": "sysfs", "l1d": 48 * 1024, "l2": 2**21, "l3": 480 * 2**20,
            "l3_shared_by": 2, "last_level": 32 * 2**20, "vector_bytes": 64, "simd": "avx512"}
    assert ("L3 480 MiB (shared by 2), of which auto counts on 32 MiB; vectors 512 bits"
            in cli._caches_line(told))
    own = dict(told, l3=32 * 2**20)
    assert "L3 32 MiB (shared by 2); vectors" in cli._caches_line(own)


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["threads"] == fastconv.get_num_threads()
    assert info["compile_args"] == _openmp.compile_args()


def test_python_dash_m():
    run = subprocess.run([sys.executable, "-m", "fastconv", "info"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("fastconv ")
    bad = subprocess.run([sys.executable, "-m", "fastconv", "bench", "--layers", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "unknown layer 'nope'" in bad.stderr and "Traceback" not in bad.stderr
