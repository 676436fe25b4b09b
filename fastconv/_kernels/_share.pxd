# The work sharing of fastconv_omp.h (fc_share): each thread its static share of the items,
# a late thread's rest taken over by the others; and part_start, the contiguous equal parts
# of an element-wise kernel. Included per kernel module. (The header's
# ptrdiff_t is Py_ssize_t on every platform CPython runs on.)
from libc.stdlib cimport calloc


cdef extern from "fastconv_omp.h":
    ctypedef struct fc_share:
        Py_ssize_t n
        Py_ssize_t chunks
        unsigned char* taken
    Py_ssize_t fc_share_chunks(Py_ssize_t n, int threads) noexcept nogil
    int fc_share_next(fc_share* share, Py_ssize_t* cursor, Py_ssize_t* first,
                      Py_ssize_t* end) noexcept nogil


cdef inline int share_items(fc_share* share, Py_ssize_t n, int threads) noexcept nogil:
    """Set `share` up for n items and `threads` threads asked for (its flags freed by the
    caller with free(share.taken)); 1 when they could not be allocated, else 0."""
    share.n = n
    share.chunks = fc_share_chunks(n, threads)
    share.taken = <unsigned char*> calloc(share.chunks + 1, 1)
    return share.taken == NULL


cdef inline Py_ssize_t part_start(Py_ssize_t k, Py_ssize_t n, Py_ssize_t parts) noexcept nogil:
    """The first of n items in part k of `parts` contiguous parts of equal size (within one):
    part k is [part_start(k, n, parts), part_start(k + 1, n, parts)), empty when n < parts."""
    return k * n // parts
