"""Thread counts: OpenMP for the kernels, BLAS kept on one thread while they run."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from fastconv._kernels import _openmp
from fastconv._params import as_int

_requested: int | None = None  # None: follow OpenMP's default (OMP_NUM_THREADS, threadpoolctl)
_controller: ThreadpoolController | None = None
_controller_lock = threading.Lock()


def get_num_threads() -> int:
    """The number of threads fastconv's kernels use."""
    if _requested is not None:
        return _requested
    return max(1, _openmp.max_threads())


def set_num_threads(n: int | None) -> None:
    """Use n threads in fastconv's kernels (None: back to OpenMP's default)."""
    global _requested
    _requested = None if n is None else as_int("num_threads", n, 1)


@contextmanager
def num_threads(n: int):
    """Context manager: fastconv uses n threads inside the block."""
    global _requested
    previous = _requested
    set_num_threads(n)
    try:
        yield
    finally:
        _requested = previous


def blas_controller() -> ThreadpoolController:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (found once, then cached)."""
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


@contextmanager
def blas_single_thread():
    """Keep BLAS on one thread: the kernels call it from inside their own OpenMP threads,
    and two thread pools spinning on two cores would slow each other down several times."""
    with blas_controller().limit(limits=1, user_api="blas"):
        yield
