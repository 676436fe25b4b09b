"""Fully connected products on a few rows (fastconv._threads.matmul): y = x @ w for x of at
most MAX_ROWS rows, a classifier's last layers at small batch sizes. There the time goes
into reading w (MobileNetV2's 1280 x 1000 weight is 5 MB, VGG-16's first one 411 MB), which
BLAS's GEMM also copies into its packed layout first, on the one thread fastconv lets it
have. Here the threads stream chunks of whole rows of w, each row once, for all rows of x.

Arrays are C-contiguous, of one float dtype; the caller has checked the shapes:
    x     (M, K), M <= MAX_ROWS
    w     (K, N)
    bias  (N,) or (0,) for none
    y     (M, N)
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free


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
    # a thread's run sums, M x (the columns of w it sums at a time), in bytes: each row of w
    # is added into them M times, so they stay in L1; for one row, whole rows of w up to
    # 4096 float32 columns. Measured on a Xeon, 2 threads, old and new builds in alternating
    # processes: 32 KiB of sums made 8 x 2048 x 1000 0.52-0.59 ms and 8 x 25088 x 4096 42-44
    # ms, 16 KiB 0.55-0.61 and 39.4-39.8 ms, 8 KiB 0.49-0.50 and 38.0-38.3 ms but 1 x 25088 x
    # 4096 19-20 ms against 16 KiB's 12.7-13.4 (the 256-column strips before: 0.44-0.49,
    # 38.9-40.0 and 26.3-26.7 ms)
    _PART_BYTES = 16384
    _PART = _PART_BYTES // 4  # their capacity in values (float32)
    _RUN = 64  # terms summed in the input's precision before they join a double sum
    _CHUNKS = 8  # K is cut into at most this many chunks of whole runs (see few_rows_matmul)
    # rows of w ahead whose part of a block is asked for early: a row's part lies N values
    # after the last one's, on another page once N * itemsize >= 4 KiB, where the hardware's
    # prefetchers stop (a 2048 x 1000 float32 weight read from memory, Zen 5, 2 threads,
    # without and with it side by side in one process: 520-710 -> 390-430 us)
    _AHEAD = 32
    _LINE = 64  # bytes per cache line

MAX_ROWS = MAX_ROWS_
# fewer chunks for a very wide w: their double sums (chunks x MAX_ROWS x N) within this
# many bytes where more than one chunk
SCRATCH_BYTES = 16 * 1024 * 1024


cdef void _chunk(const floating* x, const floating* w, double* total, Py_ssize_t M,
                 Py_ssize_t K, Py_ssize_t N, Py_ssize_t k_start, Py_ssize_t k_end,
                 Py_ssize_t c0, Py_ssize_t width) noexcept nogil:
    """total[:, c0:c0 + width] (M x N, row stride N) = x[:, k_start:k_end] @ w[k_start:k_end,
    c0:c0 + width]: summed over k in order, in runs of _RUN terms in the input's precision
    whose sums are added in double (a sum of K float32 terms in float32 loses up to K
    roundings: 8e-6 relative at K = 25088, VGG's first Linear; runs lose _RUN + K / _RUN). A
    run that overflows gives inf, and runs of opposite infinities NaN, where one float32 sum
    would have stayed at inf: both are far from the exact sum."""
    cdef floating part[_PART]  # M x width
    cdef const floating* row
    cdef const char* ahead
    cdef floating xv
    cdef Py_ssize_t k, k0, r, m, j
    for m in range(M):
        for j in range(width):
            total[m * N + c0 + j] = 0
    for r in range((k_end - k_start + _RUN - 1) // _RUN):
        k0 = k_start + r * _RUN
        for j in range(M * width):
            part[j] = 0
        for k in range(k0, min(k0 + _RUN, k_end)):
            row = w + k * N + c0
            if width < N and k + _AHEAD < k_end:  # (whole rows: one stream, prefetched)
                ahead = <const char*> (row + _AHEAD * N)
                for j in range((width * <Py_ssize_t> sizeof(floating) + _LINE - 1) // _LINE):
                    FC_PREFETCH(ahead + j * _LINE)
            for m in range(M):
                xv = x[m * K + k]
                for j in range(width):
                    part[m * width + j] += xv * row[j]
        for m in range(M):
            for j in range(width):
                total[m * N + c0 + j] += part[m * width + j]


def chunks(Py_ssize_t K, Py_ssize_t N):
    """How many chunks of rows of w few_rows_matmul sums apart for w (K, N): up to _CHUNKS,
    at most one per run of _RUN rows, the double sums of MAX_ROWS rows of x (chunks x
    MAX_ROWS x N) within SCRATCH_BYTES; at least one. Not a function of x's rows, so that a
    row of y is the same whatever rows come with it."""
    return max(1, min(_CHUNKS, (K + _RUN - 1) // _RUN,
                      SCRATCH_BYTES // max(1, MAX_ROWS_ * N * <Py_ssize_t> sizeof(double))))


def few_rows_matmul(const floating[:, ::1] x,   # IN  (M, K), M <= MAX_ROWS
                    const floating[:, ::1] w,   # IN  (K, N)
                    const floating[::1] bias,   # IN  (N,), or (0,): none
                    floating[:, ::1] y,         # OUT (M, N)
                    int num_threads):
    """y = x @ w (+ bias). K is cut into chunks(K, N) chunks of whole runs and N into
    blocks of _PART_BYTES / (M x itemsize) columns; the threads share the (chunk, block) pairs, each pair's
    rows of w summed into the chunk's double sums (chunks x M x N doubles, malloc'd), and
    then the columns, each adding its chunks' sums in chunk order to the bias: the result
    depends neither on the thread count nor on the other rows of x. Raises MemoryError when
    the sums cannot be allocated."""
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[1]
    cdef Py_ssize_t columns, n_blocks, n_runs, n_chunks
    cdef Py_ssize_t unit, s, b, c0, width, m, j
    cdef const floating* b_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef double* totals
    cdef double acc
    if M == 0 or K == 0 or N == 0:
        return  # the caller fills an empty sum
    columns = min(N, _PART_BYTES // (M * <Py_ssize_t> sizeof(floating)))  # a block's columns
    n_blocks = (N + columns - 1) // columns
    n_runs = (K + _RUN - 1) // _RUN
    n_chunks = chunks(K, N)
    totals = <double*> malloc(n_chunks * M * N * sizeof(double))
    if totals == NULL:
        raise MemoryError(f"few_rows_matmul: no memory for {n_chunks} x {M} x {N} sums")
    try:
        for unit in prange(n_chunks * n_blocks, nogil=True, schedule="static",
                           num_threads=num_threads):
            s = unit // n_blocks
            c0 = (unit % n_blocks) * columns
            _chunk(&x[0, 0], &w[0, 0], totals + s * M * N, M, K, N,
                   (s * n_runs // n_chunks) * _RUN,
                   min(K, ((s + 1) * n_runs // n_chunks) * _RUN), c0, min(columns, N - c0))
        for b in prange(n_blocks, nogil=True, schedule="static", num_threads=num_threads):
            c0 = b * columns
            width = min(columns, N - c0)
            for m in range(M):
                for j in range(c0, c0 + width):
                    acc = b_ptr[j] if b_ptr != NULL else 0
                    for s in range(n_chunks):
                        acc = acc + totals[(s * M + m) * N + j]
                    y[m, j] = <floating> acc
    finally:
        free(totals)
