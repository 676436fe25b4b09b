"""Thread counts: OpenMP for the kernels, BLAS kept on one thread while they run."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

from fastconv._kernels import _openmp
from fastconv._params import as_int

_requested: int | None = None  # set_num_threads; None: OpenMP's default (OMP_NUM_THREADS, ...)
# num_threads(n) blocks hold their n per Python thread, so that overlapping blocks in
# different threads neither see nor undo each other
_local = threading.local()
_blas_lock = threading.Lock()
_blas_libs: list | None = None
_blas_users = 0  # kernel calls under way that hold BLAS on one thread
_blas_saved: list = []  # (library, its thread count before the first of them)


def get_num_threads() -> int:
    """The number of threads fastconv's kernels use (in this Python thread)."""
    local = getattr(_local, "n", None)
    if local is not None:
        return local
    if _requested is not None:
        return _requested
    return max(1, _openmp.max_threads())


def set_num_threads(n: int | None) -> None:
    """Use n threads in fastconv's kernels, process-wide (None: back to OpenMP's default)."""
    global _requested
    _requested = None if n is None else as_int("num_threads", n, 1)


@contextmanager
def num_threads(n: int):
    """Context manager: fastconv uses n threads inside the block, in this Python thread."""
    n = as_int("num_threads", n, 1)
    previous = getattr(_local, "n", None)
    _local.n = n
    try:
        yield
    finally:
        _local.n = previous


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries (found once, then cached)."""
    global _blas_libs
    with _blas_lock:
        if _blas_libs is None:
            _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
        return _blas_libs


@contextmanager
def blas_single_thread():
    """Keep BLAS on one thread while the kernels run: they call it from inside their own
    OpenMP threads, and two thread pools spinning on the same cores slow each other down
    several times. Reference-counted, so that calls overlapping from several Python threads
    restore the user's setting only when the last one ends."""
    global _blas_users, _blas_saved
    libraries = _blas_libraries()
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [(lib, lib.num_threads) for lib in libraries]
            for lib, n in _blas_saved:
                if n != 1:
                    lib.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, n in _blas_saved:
                    if n != 1:
                        lib.set_num_threads(n)


def _single_thread_after_fork() -> None:
    """GCC's OpenMP runtime does not survive fork(): a forked child's first parallel region
    would hang. Children made by fork() therefore start on one thread (set_num_threads
    restores more, at the user's risk; spawn and forkserver children are not affected)."""
    set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_single_thread_after_fork)
