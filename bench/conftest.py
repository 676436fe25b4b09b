"""pytest-benchmark suite of fastconv: `pytest bench/bench_conv.py` (or `pytest bench`).

Options (each also an environment variable, handy in CI):
  --fastconv-quick     FASTCONV_BENCH_QUICK=1   an eighth of each batch: a smoke run
  --fastconv-threads N FASTCONV_BENCH_THREADS=N thread count (default: fastconv's default)
Pick layers with -k, e.g. `-k "lenet or resnet_3x3_56"`; compare runs with pytest-benchmark's
--benchmark-autosave / --benchmark-compare. Unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
(`env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench`) for honest numbers.
"""
import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("fastconv benchmarks")
    group.addoption("--fastconv-quick", action="store_true",
                    default=os.environ.get("FASTCONV_BENCH_QUICK", "") not in ("", "0"),
                    help="smaller batches (N / 8) for a smoke run [FASTCONV_BENCH_QUICK=1]")
    group.addoption("--fastconv-threads", type=int,
                    default=int(os.environ.get("FASTCONV_BENCH_THREADS", "0")) or None,
                    help="threads for fastconv [FASTCONV_BENCH_THREADS]")


def pytest_collect_file(parent, file_path):
    # `pytest bench` collects bench_*.py too (pytest's own pattern is test_*.py); files named
    # on the command line are collected by pytest itself
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def quick(request):
    return request.config.getoption("--fastconv-quick")


@pytest.fixture(scope="session")
def threads(request):
    import fastconv

    n = request.config.getoption("--fastconv-threads")
    if n is not None and n < 1:
        raise pytest.UsageError(f"--fastconv-threads must be >= 1, but got {n}")
    return n or fastconv.get_num_threads()
