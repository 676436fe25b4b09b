"""Batch normalisation's per-channel reductions and its input gradient, on activations seen
as rows of C channels (NHWC: rows = N * H * W), in one pass each. Sums run in float64 in
`chunks` fixed ranges of rows (partial sums added up by the caller in order), so results do
not depend on the thread count.

Shapes: x, g, out (rows, C); per-channel vectors (C,) float64; partial sums (chunks, C).
"""
from cython cimport floating
from cython.parallel cimport prange


def channel_sums(const floating[:, ::1] x,     # IN  (rows, C)
                 const double[::1] centre,     # IN  (C,), or (0,): sum x; else sum (x - centre)^2
                 double[:, ::1] partial,       # OUT (chunks, C), zeroed
                 int num_threads):
    """partial[k, c] = sum over chunk k's rows of x[r, c] (centre empty) or of
    (x[r, c] - centre[c])^2."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], chunks = partial.shape[0]
    cdef Py_ssize_t k, r, c
    cdef bint squares = centre.shape[0] > 0
    cdef double d
    for k in prange(chunks, nogil=True, schedule="static", num_threads=num_threads):
        for r in range(k * rows // chunks, (k + 1) * rows // chunks):
            if squares:
                for c in range(C):
                    d = x[r, c] - centre[c]
                    partial[k, c] += d * d
            else:
                for c in range(C):
                    partial[k, c] += x[r, c]


def grad_sums(const floating[:, ::1] g,        # IN  (rows, C) grad_output
              const floating[:, ::1] x,        # IN  (rows, C)
              const double[::1] mean,          # IN  (C,)
              double[:, ::1] sum_g,            # OUT (chunks, C), zeroed: sum g
              double[:, ::1] sum_gc,           # OUT (chunks, C), zeroed: sum g * (x - mean)
              int num_threads):
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], chunks = sum_g.shape[0]
    cdef Py_ssize_t k, r, c
    cdef double gv
    for k in prange(chunks, nogil=True, schedule="static", num_threads=num_threads):
        for r in range(k * rows // chunks, (k + 1) * rows // chunks):
            for c in range(C):
                gv = g[r, c]
                sum_g[k, c] += gv
                sum_gc[k, c] += gv * (x[r, c] - mean[c])


def grad_input(const floating[:, ::1] g,       # IN  (rows, C) grad_output
               const floating[:, ::1] x,       # IN  (rows, C)
               const floating[::1] mean,       # IN  (C,)
               const floating[::1] a,          # IN  (C,)
               const floating[::1] b,          # IN  (C,)
               const floating[::1] shift,      # IN  (C,)
               floating[:, ::1] out,           # OUT (rows, C)
               int num_threads):
    """out = g * a + (x - mean) * b + shift, per channel."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r, c
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        for c in range(C):
            out[r, c] = g[r, c] * a[c] + (x[r, c] - mean[c]) * b[c] + shift[c]


def normalize(const floating[:, ::1] x,        # IN  (rows, C)
              const floating[::1] mean,        # IN  (C,)
              const floating[::1] scale,       # IN  (C,)
              const floating[::1] shift,       # IN  (C,)
              floating[:, ::1] out,            # OUT (rows, C)
              int num_threads):
    """out = (x - mean) * scale + shift, per channel."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r, c
    for r in prange(rows, nogil=True, schedule="static", num_threads=num_threads):
        for c in range(C):
            out[r, c] = (x[r, c] - mean[c]) * scale[c] + shift[c]
