# The work sharing of fastconv_omp.h (fc_share): a static schedule whose late threads'
# chunks the others take over. Included per kernel module.
cdef extern from "fastconv_omp.h":
    int FC_CHUNKS_PER_THREAD
    ctypedef struct fc_share:
        Py_ssize_t n
        Py_ssize_t chunks
        unsigned char* taken
    Py_ssize_t fc_share_chunks(Py_ssize_t n, int threads) noexcept nogil
    int fc_share_next(fc_share* share, Py_ssize_t* cursor, Py_ssize_t* first,
                      Py_ssize_t* end) noexcept nogil

from libc.stdlib cimport calloc


cdef inline int share_items(fc_share* share, Py_ssize_t n, int threads) noexcept nogil:
    """Set `share` up for n items and `threads` threads asked for (its flags freed by the
    caller with free(share.taken)); 1 when they could not be allocated, else 0."""
    share.n = n
    share.chunks = fc_share_chunks(n, threads)
    share.taken = <unsigned char*> calloc(share.chunks + 1, 1)
    return share.taken == NULL
