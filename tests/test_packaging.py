"""What a wheel ships and promises: type information, a baseline build that runs on any
x86-64, the run-time choice of instruction set, the scalar fallback for compilers without
vector extensions. These also run against the installed wheel in CI (.ci/run)."""
import importlib
import importlib.machinery
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import fastconv
from fastconv import _algorithms
from fastconv._kernels import _openmp

PACKAGE = Path(fastconv.__file__).resolve().parent
KERNELS = PACKAGE / "_kernels"
PUBLIC_MODULES = ("functional", "pooling", "layers", "filters", "matrix", "losses",
                  "optim/__init__", "optim/lr_scheduler", "serialization", "_threads", "graph",
                  "models", "_autotune", "inference", "onnx")
SIMD_SUFFIXES = ("_avx2", "_avx512")


def compiled_modules() -> dict[str, Path]:
    """{module name: file} of the extension modules in fastconv/_kernels."""
    found = {}
    for path in KERNELS.iterdir():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if path.name.endswith(suffix):
                found[path.name[:-len(suffix)]] = path
                break
    return found


def test_the_installed_wheel_is_under_test():
    """CI's wheel stage sets FASTCONV_EXPECT_INSTALLED=1: the package must then come from
    site-packages, never from a source tree."""
    if os.environ.get("FASTCONV_EXPECT_INSTALLED") != "1":
        pytest.skip("only in CI's installed-wheel stage (FASTCONV_EXPECT_INSTALLED=1)")
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert PACKAGE.is_relative_to(site), f"fastconv imported from {PACKAGE}, not {site}"


def test_py_typed_and_a_stub_for_every_compiled_and_public_module():
    assert (PACKAGE / "py.typed").is_file()
    modules = compiled_modules()
    assert {"_direct", "_im2col", "_pool", "_openmp"} <= set(modules)
    missing = [name for name in modules if not (KERNELS / f"{name}.pyi").is_file()]
    missing += [name for name in PUBLIC_MODULES if not (PACKAGE / f"{name}.pyi").is_file()]
    assert not missing, f"no .pyi stub for {missing}"


def _disassembly(path: Path) -> str:
    run = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


# AVX and later: 256/512-bit registers, or any VEX/EVEX-encoded instruction (v-prefixed
# mnemonic on xmm registers, e.g. vmovss, vfmadd231ps)
AVX = re.compile(r"%[yz]mm\d|\tv[a-z0-9]+\s+[^\n]*%xmm\d")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or shutil.which("objdump") is None,
                    reason="needs x86-64 and objdump")
def test_baseline_modules_contain_no_avx_instructions():
    """The default modules must run on any x86-64 CPU (a wheel must not SIGILL): only the
    *_avx2 / *_avx512 variants, chosen at run time, may use AVX."""
    modules = compiled_modules()
    baseline = {name: path for name, path in modules.items() if not name.endswith(SIMD_SUFFIXES)}
    assert "_direct" in baseline
    offenders = {}
    for name, path in baseline.items():
        hits = AVX.findall(_disassembly(path))
        if hits:
            offenders[name] = sorted(set(hits))[:5]
    assert not offenders, f"AVX instructions in baseline modules: {offenders}"
    # the pattern does find AVX where it is expected (else the check above proves nothing)
    if "_direct_avx512" in modules:
        assert re.search(r"%zmm\d", _disassembly(modules["_direct_avx512"]))
    if "_direct_avx2" in modules:
        assert re.search(r"%ymm\d", _disassembly(modules["_direct_avx2"]))


def _info(env_extra: dict) -> str:
    env = {**os.environ, **env_extra}
    run = subprocess.run([sys.executable, "-m", "fastconv", "info"], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_info_names_the_instruction_set_that_runs():
    picked = _algorithms.KERNELS["direct"].ISA
    available = list(_algorithms.simd_modules("_direct"))
    assert picked == available[-1]  # the widest variant this CPU runs
    assert re.search(rf"^direct kernel: {picked} \(", _info({}), re.M)
    # capped at run time, without a rebuild
    assert re.search(r"^direct kernel: baseline \(", _info({"FASTCONV_SIMD": "baseline"}), re.M)


def _c_compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name.split()[0]):
            return name.split()[0]
    return None


@pytest.mark.skipif(_c_compiler() is None, reason="needs a C compiler")
def test_simd_header_falls_back_for_compilers_without_vector_extensions(tmp_path):
    """MSVC has no GCC vector extensions: fastconv_simd.h must then compile to the scalar
    fallback (FC_HAVE_VECTORS 0). Checked here by compiling it with __GNUC__ and __clang__
    undefined, against minimal stand-ins for the two C headers it includes."""
    (tmp_path / "stddef.h").write_text("typedef long ptrdiff_t;\ntypedef unsigned long size_t;\n"
                                       "#define NULL ((void *)0)\n")
    (tmp_path / "string.h").write_text("#include <stddef.h>\n"
                                       "void *memcpy(void *, const void *, size_t);\n")
    source = tmp_path / "fallback.c"
    source.write_text('#include "fastconv_simd.h"\n'
                      "#if FC_HAVE_VECTORS\n#error vector extensions without __GNUC__\n#endif\n"
                      "int fc_check(void) { return FC_CB_F + FC_CB_D + FC_CI + FC_PB; }\n")
    run = subprocess.run([_c_compiler(), "-fsyntax-only", "-nostdinc", "-U__GNUC__",
                          "-U__clang__", f"-I{tmp_path}", f"-I{KERNELS}", str(source)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[:3000]


MYPY_ALLOWLIST = "\n".join([
    "fastconv.__main__",                   # runs the command line when imported
    r"fastconv\._kernels\.\w+\.__test__",  # Cython's doctest dictionary
])


# fastconv modules that import an optional library when they are imported
OPTIONAL_MODULES = {"fastconv._plot": "matplotlib", "fastconv.dask": "dask"}


def test_mypy_and_stubtest_pass(tmp_path):
    """mypy on the package (with pyproject.toml's configuration) and mypy.stubtest of the
    .pyi stubs against the modules as built. Needs mypy (CI installs it)."""
    pytest.importorskip("mypy")
    config = Path.cwd() / "pyproject.toml"
    if not config.is_file():
        pytest.skip("run from the project root (or a copy of its pyproject.toml)")
    env = {**os.environ, "MYPY_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                          "-p", "fastconv"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    # the AVX variants are built on x86-64 only (their stubs are there everywhere)
    absent = [f"fastconv._kernels._direct{suffix}" for suffix in SIMD_SUFFIXES
              if f"_direct{suffix}" not in compiled_modules()]
    allowlist = tmp_path / "allowlist.txt"
    # modules whose optional dependency is not installed here cannot be imported
    optional = [module for module, needs in OPTIONAL_MODULES.items()
                if importlib.util.find_spec(needs) is None]
    # variants for instruction sets this CPU lacks: importing one can kill the process
    # (SIGILL), so stubtest's process refuses to import them, and they are allowlisted
    runs = _openmp.cpu_instruction_sets()
    unrunnable = [f"fastconv._kernels.{name}" for name in compiled_modules()
                  if name.endswith(SIMD_SUFFIXES) and name.rsplit("_", 1)[1] not in runs]
    allowlist.write_text("\n".join([MYPY_ALLOWLIST, *map(re.escape, absent + optional),
                                    *(re.escape(name) + r"(\..*)?" for name in unrunnable)])
                         + "\n")
    stubtest = ("import sys\n"
                "from mypy.stubtest import main\n"
                "class Refuse:\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name in REFUSED:\n"
                "            raise ImportError(f'{name}: not for this CPU')\n"
                "sys.meta_path.insert(0, Refuse())\n"
                "sys.argv[0] = 'stubtest'\n"
                "sys.exit(main())\n").replace("REFUSED", repr(set(unrunnable)))
    run = subprocess.run([sys.executable, "-c", stubtest, "fastconv", "--mypy-config-file",
                          str(config), "--allowlist", str(allowlist)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
