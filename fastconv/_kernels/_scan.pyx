"""Passes that only read arrays, in one contiguous range per thread: a byte comparison (a
plain layer's check, at every call, that its weight still holds the values it packed:
fastconv._plan.Packs with verify=True) and the largest magnitude (the kernels' checks that
operands are finite, or small enough for Winograd's transforms).

NumPy's versions make a temporary as large as their operands (np.array_equal, np.abs) or
pass over the array once per reduction (min, then max), on one thread. ResNet-18's weights
(44.7 MB) against their copy, per eval-mode call: 6.9 ms with np.array_equal, 5.4 with
memcmp on one thread, 3.6 on two (AMD EPYC Zen 4)."""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport INT32_MAX, INT64_MAX, int32_t, int64_t
from libc.string cimport memcmp, memcpy

from fastconv._kernels._share cimport part_start

DEF MAX_PARTS = 64  # per-thread results of max_abs, kept on the stack


def same_bytes(const unsigned char[::1] a, const unsigned char[::1] b, int num_threads):
    """Whether a and b (flat byte views of C-contiguous arrays) hold the same bytes."""
    cdef Py_ssize_t n = a.shape[0], k, lo, hi
    cdef int differ = 0
    if num_threads < 1:
        raise ValueError(f"same_bytes: num_threads must be >= 1, got {num_threads}")
    if b.shape[0] != n:
        return False
    if n == 0:
        return True
    for k in prange(num_threads, nogil=True, schedule="static", num_threads=num_threads):
        lo = part_start(k, n, num_threads)
        hi = part_start(k + 1, n, num_threads)
        if hi > lo and memcmp(&a[lo], &b[lo], <size_t>(hi - lo)) != 0:
            differ += 1
    return differ == 0


ctypedef fused _bits:  # a float's bits as a signed integer of its size
    int32_t
    int64_t


cdef inline int64_t _magnitude(const _bits* bits, Py_ssize_t n) noexcept nogil:
    """max over bits[:n] without their sign bit, as signed integers (a vectorisable
    reduction)."""
    cdef Py_ssize_t i
    cdef _bits m = 0, v, no_sign
    if _bits is int32_t:
        no_sign = INT32_MAX
    else:
        no_sign = INT64_MAX
    for i in range(n):
        v = bits[i] & no_sign
        m = v if v > m else m
    return m


def max_abs(const floating[::1] a, int num_threads):
    """max |a| of a flat array as a Python float (0.0 for an empty one), NaN when a holds NaN.

    An IEEE float without its sign bit, read as an integer, grows with its magnitude, and
    infinity and NaN (all exponent bits set) are the largest: so this is one integer max
    reduction, which compilers vectorise (a float max would have to keep NaN's order)."""
    cdef Py_ssize_t n = a.shape[0], k, lo, hi
    cdef int t
    cdef int parts = min(num_threads, MAX_PARTS)  # the result does not depend on them
    cdef int64_t[MAX_PARTS] maxima
    cdef int64_t m = 0
    cdef int32_t m32
    cdef float f32
    cdef double f64
    if num_threads < 1:
        raise ValueError(f"max_abs: num_threads must be >= 1, got {num_threads}")
    if n == 0:
        return 0.0
    for k in prange(parts, nogil=True, schedule="static", num_threads=parts):
        lo = part_start(k, n, parts)
        hi = part_start(k + 1, n, parts)
        if floating is float:
            maxima[k] = _magnitude(<const int32_t*>&a[0] + lo, hi - lo)
        else:
            maxima[k] = _magnitude(<const int64_t*>&a[0] + lo, hi - lo)
    for t in range(parts):
        m = maxima[t] if maxima[t] > m else m
    if floating is float:
        m32 = <int32_t>m
        memcpy(&f32, &m32, 4)
        f64 = f32
    else:
        memcpy(&f64, &m, 8)
    return f64  # NaN for a NaN's bits
