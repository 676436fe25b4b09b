"""Optimizer updates in one pass over a parameter (fastconv.optim): NumPy's in-place steps
each pass over the whole array, the parameter and its state read and written several
times over.

Arrays are flattened, C-contiguous, of one float dtype; the caller has checked them."""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastconv._kernels._share cimport part_start

cdef extern from "fastconv_simd.h":
    void fc_stream_zero(void* dst, size_t nbytes) noexcept nogil
    void fc_store_fence() noexcept nogil


def zero(floating[::1] a, bint stream, int num_threads):
    """a[:] = 0, in one contiguous range of a per thread (a gradient of ResNet-18's, 9.4 MB:
    one thread's fill is bound by what one core can write); with `stream`, by non-temporal
    stores, which do not read each line before writing it (for an array far larger than
    the caches, which the fill would evict anyway)."""
    cdef Py_ssize_t n = a.shape[0], k, lo, hi
    if num_threads < 1:
        raise ValueError(f"zero: num_threads must be >= 1, got {num_threads}")
    if n == 0:
        return
    for k in prange(num_threads, nogil=True, schedule="static", num_threads=num_threads):
        lo = part_start(k, n, num_threads)
        hi = part_start(k + 1, n, num_threads)
        if hi > lo:
            if stream:
                fc_stream_zero(&a[lo], (hi - lo) * sizeof(floating))
                fc_store_fence()
            else:
                memset(&a[lo], 0, (hi - lo) * sizeof(floating))


def sgd_step(floating[::1] p,        # IN/OUT the parameter
             floating[::1] buf,      # IN/OUT its momentum buffer (empty without momentum)
             const floating[::1] g,  # IN  its gradient
             double lr, double momentum, double weight_decay, bint nesterov, bint first,
             int num_threads):
    """PyTorch's SGD update (without dampening), element by element, each product and sum
    rounded on its own (as NumPy's steps; PyTorch fuses some into multiply-adds, so the two
    agree within an ulp or so):
        d = g + weight_decay * p
        buf = d (first step) or momentum * buf + d        (with momentum)
        d = d + momentum * buf (nesterov) or buf           (with momentum)
        p = p - lr * d
    The result does not depend on the thread count."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating a = lr, m = momentum, wd = weight_decay, d, b
    cdef bint with_momentum = momentum != 0
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        d = g[i]
        if wd != 0:
            d = d + wd * p[i]
        if with_momentum:
            b = d if first else m * buf[i] + d
            buf[i] = b
            d = d + m * b if nesterov else b
        p[i] = p[i] - a * d
