"""Thread counts: OpenMP for the kernels, BLAS kept on one thread while they run."""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

from fastconv import _algorithms
from fastconv._kernels import _openmp
from fastconv._params import MAX_THREADS, as_thread_count

_requested: int | None = None  # set_num_threads; None: OpenMP's default (OMP_NUM_THREADS, ...)


class _PerThread(threading.local):
    """What is kept per Python thread: num_threads(n) blocks hold their n here, so that
    overlapping blocks in different threads neither see nor undo each other; and where
    place_workers last placed this thread's team. Defaults as class attributes: reading
    them never misses (getattr with a default on a thread-local costs a microsecond, and
    get_num_threads runs about 400 times per ResNet-18 training step)."""
    n: int | None = None
    placed: tuple[int, int] | None = None


_local = _PerThread()
_blas_lock = threading.Lock()
_blas_libs: list | None = None
_blas_users = 0  # kernel calls under way that hold BLAS on one thread
_blas_saved: list = []  # (library, its thread count before the first of them)
_blas_requests = 0  # blas_single_thread's entries so far (see blas_requests)


def get_num_threads() -> int:
    """The number of threads fastconv's kernels use (in this Python thread)."""
    local = _local.n
    if local is not None:
        return local
    if _requested is not None:
        return _requested
    return _openmp_default()


# below this many element visits per thread, more threads cost more than they save (waking a
# thread on a busy machine can take a scheduler time slice, milliseconds)
MIN_WORK_PER_THREAD = 1 << 16


def threads_for_work(work: int) -> int:
    """Threads for an element-wise kernel doing `work` element visits (its results never
    depend on the count)."""
    return max(1, min(get_num_threads(), work // MIN_WORK_PER_THREAD))


def place_workers(n: int) -> None:
    """Keep the OpenMP workers of the calling thread's n-thread team off the CPU it runs on
    (fastconv_omp.h: on virtual machines, a worker woken on its master's CPU made each of
    the next parallel regions wait a scheduler tick, 4-6 ms). Done again when the calling
    thread has moved to another CPU; the workers may run on every other CPU the process
    may use. Nothing for one thread, a single allowed CPU, or where the OS cannot."""
    if n < 2:
        return
    cpu = _openmp.current_cpu()
    if cpu < 0 or _local.placed == (cpu, n):
        return
    _openmp.keep_workers_off(sorted(os.sched_getaffinity(0)), cpu, n)
    _local.placed = (cpu, n)


def _openmp_default() -> int:
    """OpenMP's default thread count (OMP_NUM_THREADS, threadpoolctl's limit), capped at
    MAX_THREADS with a warning: libgomp crashes when a region asks for ~40000 threads."""
    global _warned_cap
    n = _openmp.max_threads()
    if n > MAX_THREADS:
        if not _warned_cap:
            _warned_cap = True
            warnings.warn(f"fastconv: OpenMP's default of {n} threads (OMP_NUM_THREADS?) is "
                          f"more than 4 x os.cpu_count() = {MAX_THREADS}; fastconv uses "
                          f"{MAX_THREADS}", RuntimeWarning, stacklevel=3)
        return MAX_THREADS
    return n if n >= 1 else 1


_warned_cap = False


def set_num_threads(n: int | None) -> None:
    """Use n threads in fastconv's kernels, process-wide (None: back to OpenMP's default).

    n must be in [1, 4 x os.cpu_count()] (ValueError otherwise); OpenMP's default
    (OMP_NUM_THREADS) is capped at that bound, with a RuntimeWarning.
    """
    global _requested
    _requested = None if n is None else as_thread_count("num_threads", n)


@contextmanager
def num_threads(n: int):
    """Context manager: fastconv uses n threads inside the block, in this Python thread
    (n in [1, 4 x os.cpu_count()], as for set_num_threads)."""
    n = as_thread_count("num_threads", n)
    previous = _local.n
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
    global _blas_users, _blas_saved, _blas_requests
    libraries = _blas_libraries()
    with _blas_lock:
        _blas_requests += 1
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


def blas_requests() -> int:
    """How many times blas_single_thread has been entered (by any thread): a caller that
    holds BLAS on one thread around many kernel calls learns whether any of them asked."""
    return _blas_requests


_linear = _algorithms.best_simd("_linear")


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None,
           bias: np.ndarray | None = None) -> np.ndarray:
    """np.matmul(a, b), plus bias when given (a Linear layer's y = x @ w + bias). A product
    of a few rows (few_rows_call) runs on fastconv's own threads, the bias added in its
    stores; the rest through NumPy with BLAS on one thread. A multi-threaded BLAS leaves its
    threads spinning for a while after a call, and they take the cores from the OpenMP
    kernels that follow: a Linear layer's products slowed the next convolutions up to 3x
    (ResNet-18 training step, 112x112, batch 8, 2 threads, AMD Zen 5: 199 -> 126 ms with
    this; in inference, batch 8, the stem and max pooling after a call ran 2x slower)."""
    if (out is None and a.ndim >= 1 and b.ndim == 2 and a.shape[-1] > 0
            and 1 <= a.size // a.shape[-1] <= _linear.MAX_ROWS):
        rows = a.reshape(-1, a.shape[-1])
        y = np.empty((rows.shape[0], b.shape[1]), np.result_type(a, b))
        call = few_rows_call(rows, b, bias, y)
        if call is not None:
            call()
            return y.reshape(*a.shape[:-1], b.shape[1])
    with blas_single_thread():
        y = np.matmul(a, b, out=out)
    if bias is not None:
        y += bias
    return y


def few_rows_call(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, out: np.ndarray):
    """The call computing out = a @ b (+ bias) with _linear.few_rows_matmul (it streams b
    once, where BLAS on one thread copies it first: a classifier's weight at small batch
    sizes), bound to these arrays; None unless a is (M, K) with 1 <= M <= _linear.MAX_ROWS,
    b (K, N), bias None or (N,), out (M, N), all C-contiguous float32 or float64 of one
    dtype and non-empty."""
    arrays = (a, b, out) if bias is None else (a, b, bias, out)
    if (a.ndim != 2 or b.ndim != 2 or out.shape != (a.shape[0], b.shape[1])
            or a.shape[1] != b.shape[0] or not 1 <= a.shape[0] <= _linear.MAX_ROWS
            or b.size == 0
            or (bias is not None and bias.shape != (b.shape[1],))
            or a.dtype not in (np.float32, np.float64)
            or any(v.dtype != a.dtype or not v.flags.c_contiguous for v in arrays)):
        return None
    return bound_call(_linear.few_rows_matmul, a, b, np.empty(0, a.dtype) if bias is None
                      else bias, out, threads=threads_for_work(out.size * b.shape[0]))


def bound_call(kernel, *args, threads: int) -> Callable[[], None]:
    """kernel(*args, threads) as a call with its arguments fixed (a kernel that returns no
    status), the calling thread's OpenMP workers placed first (place_workers)."""
    def call() -> None:
        place_workers(threads)
        kernel(*args, threads)
    return call


def _single_thread_after_fork() -> None:
    """GCC's OpenMP runtime does not survive fork(): a forked child's first parallel region
    would hang. Children made by fork() therefore start on one thread (set_num_threads
    restores more, at the user's risk; spawn and forkserver children are not affected), also
    when the parent forked inside a num_threads(n) block (the child's copy of this thread's
    settings is cleared: it would override the one thread)."""
    _local.n = _local.placed = None
    set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_single_thread_after_fork)
