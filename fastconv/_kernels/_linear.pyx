"""Fully connected products on a few rows (fastconv._threads.matmul): y = x @ w for x of at
most MAX_ROWS rows, a classifier's last layers at small batch sizes. There the time goes
into reading w (MobileNetV2's 1280 x 1000 weight is 5 MB, VGG-16's first one 411 MB), which
BLAS's GEMM also copies into its packed layout first, on the one thread fastconv lets it
have. Here every thread streams its own columns of w once, for all rows of x.

Arrays are C-contiguous, of one float dtype; the caller has checked the shapes:
    x     (M, K), M <= MAX_ROWS
    w     (K, N)
    bias  (N,) or (0,) for none
    y     (M, N)
"""
from cython cimport floating
from cython.parallel cimport prange


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define FC_PREFETCH(address) __builtin_prefetch(address)
    #else  /* MSVC: no hint */
    #define FC_PREFETCH(address) ((void)(address))
    #endif
    """
    void FC_PREFETCH(const void* address) noexcept nogil

cdef enum:
    MAX_ROWS_ = 8
    _COLUMNS = 256  # columns of y one thread sums at a time (their sums stay in L1)
    _RUN = 64  # terms summed in the input's precision before they join a double sum
    # rows of w ahead whose part of a block is asked for early: a row's part lies N values
    # after the last one's, on another page once N * itemsize >= 4 KiB, where the hardware's
    # prefetchers stop (a 2048 x 1000 float32 weight read from memory, Zen 5, 2 threads,
    # without and with it side by side in one process: 520-710 -> 390-430 us)
    _AHEAD = 32
    _LINE = 64  # bytes per cache line

MAX_ROWS = MAX_ROWS_


cdef void _columns(const floating* x, const floating* w, const floating* bias, floating* y,
                   Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, Py_ssize_t c0,
                   Py_ssize_t width) noexcept nogil:
    """y[:, c0:c0 + width] = (bias[c0:c0 + width] when bias is not NULL) + x @ w[:, c0:c0 +
    width]: summed over k in order, in runs of _RUN terms in the input's precision whose
    sums are added in double (a sum of K float32 terms in float32 loses up to K roundings:
    8e-6 relative at K = 25088, VGG's first Linear; runs lose _RUN + K / _RUN). A run that
    overflows gives inf, and runs of opposite infinities NaN, where one float32 sum would
    have stayed at inf: both are far from the exact sum."""
    cdef floating part[MAX_ROWS_][_COLUMNS]
    cdef double total[MAX_ROWS_][_COLUMNS]
    cdef const floating* row
    cdef const char* ahead
    cdef floating xv
    cdef Py_ssize_t k, k0, run, m, j
    for m in range(M):
        for j in range(width):
            total[m][j] = bias[c0 + j] if bias != NULL else 0
    for run in range((K + _RUN - 1) // _RUN):
        k0 = run * _RUN
        for m in range(M):
            for j in range(width):
                part[m][j] = 0
        for k in range(k0, min(k0 + _RUN, K)):
            row = w + k * N + c0
            if k + _AHEAD < K:
                ahead = <const char*> (row + _AHEAD * N)
                for j in range((width * <Py_ssize_t> sizeof(floating) + _LINE - 1) // _LINE):
                    FC_PREFETCH(ahead + j * _LINE)
            for m in range(M):
                xv = x[m * K + k]
                for j in range(width):
                    part[m][j] += xv * row[j]
        for m in range(M):
            for j in range(width):
                total[m][j] += part[m][j]
    for m in range(M):
        for j in range(width):
            y[m * N + c0 + j] = <floating> total[m][j]


def few_rows_matmul(const floating[:, ::1] x,   # IN  (M, K), M <= MAX_ROWS
                    const floating[:, ::1] w,   # IN  (K, N)
                    const floating[::1] bias,   # IN  (N,), or (0,): none
                    floating[:, ::1] y,         # OUT (M, N)
                    int num_threads):
    """y = x @ w (+ bias), the columns of y in blocks of _COLUMNS shared among the threads
    (each sum over k in order: the result does not depend on the thread count)."""
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[1]
    cdef Py_ssize_t n_blocks = (N + _COLUMNS - 1) // _COLUMNS
    cdef Py_ssize_t b, c0
    cdef const floating* b_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    if M == 0 or K == 0 or N == 0:
        return  # the caller fills an empty sum
    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=num_threads):
        c0 = b * _COLUMNS
        _columns(&x[0, 0], &w[0, 0], b_ptr, &y[0, 0], M, K, N, c0, min(_COLUMNS, N - c0))
