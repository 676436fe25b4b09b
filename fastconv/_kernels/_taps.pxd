# Which kernel taps land inside the input: shared by the convolution and pooling kernels.
# Tap t of a window starting at input position `start` (negative in the padding) reads
# position start + t*dil.


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t dil) noexcept nogil:
    """The first tap t >= 0 whose input position start + t*dil is >= 0."""
    return 0 if start >= 0 else (-start + dil - 1) // dil


cdef inline Py_ssize_t _end_tap(Py_ssize_t start, Py_ssize_t dil, Py_ssize_t k,
                                Py_ssize_t size) noexcept nogil:
    """One past the last tap t < k whose input position start + t*dil is < size."""
    return 0 if start >= size else min(k, (size - 1 - start) // dil + 1)
