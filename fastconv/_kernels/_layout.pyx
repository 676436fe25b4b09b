"""Layout changes of activations: NCHW <-> NHWC, each a batch of 2-D transposes.

An ONNX model takes and returns NCHW arrays while fastconv computes in NHWC, so its
inference pass starts (and may end) with such a copy. NumPy's copy of a transposed view
runs on one thread, its inner loop along one axis of the result, striding through the
other. Here the work is shared among the threads: a few rows (an image's channels) are
interleaved value by value, in a loop the compiler vectorises; more rows go by square tiles
of TILE x TILE values (out written along its rows, x read down its columns, the tile's
lines of both in L1).
"""
from cython cimport floating
from cython.parallel cimport prange

from fastconv._kernels._share cimport part_start

cdef enum:
    # values per side of a tile: 16 x 16 float32 (or float64) values, 1-2 KB, in L1 with
    # its transposed copy
    TILE_ = 16
    # up to this many rows (_interleave's cases), they are interleaved value by value
    FEW_ROWS_ = 4

TILE = TILE_
FEW_ROWS = FEW_ROWS_


def transpose_batched(const floating[:, :, ::1] x,   # IN  (N, R, S)
                      floating[:, :, ::1] out,       # OUT (N, S, R)
                      int num_threads):
    """out[n, s, r] = x[n, r, s]. NCHW -> NHWC is R = C, S = H * W; NHWC -> NCHW is
    R = H * W, S = C."""
    cdef Py_ssize_t N = x.shape[0], R = x.shape[1], S = x.shape[2]
    cdef Py_ssize_t T = TILE_, r_tiles = (R + T - 1) // T, s_tiles = (S + T - 1) // T
    cdef Py_ssize_t item, n, r0, s0, r, s, lo, hi, parts
    if out.shape[0] != N or out.shape[1] != S or out.shape[2] != R:
        raise ValueError(f"transpose_batched: expected out of shape ({N}, {S}, {R}), got "
                         f"({out.shape[0]}, {out.shape[1]}, {out.shape[2]})")
    if num_threads < 1:
        raise ValueError(f"transpose_batched: num_threads must be >= 1, got {num_threads}")
    if N == 0 or R == 0 or S == 0:
        return
    if R <= FEW_ROWS_:
        # each image cut into a part of S per thread
        parts = num_threads
        for item in prange(N * parts, nogil=True, schedule="static", num_threads=num_threads):
            n = item // parts
            lo = part_start(item % parts, S, parts)
            hi = part_start(item % parts + 1, S, parts)
            if hi > lo:
                _interleave(&x[n, 0, 0], &out[n, 0, 0], R, S, lo, hi)
        return
    for item in prange(N * r_tiles * s_tiles, nogil=True, schedule="static",
                       num_threads=num_threads):
        n = item // (r_tiles * s_tiles)
        r0 = (item // s_tiles) % r_tiles * T
        s0 = item % s_tiles * T
        for s in range(s0, min(s0 + T, S)):
            for r in range(r0, min(r0 + T, R)):
                out[n, s, r] = x[n, r, s]


cdef void _interleave(const floating* x, floating* out, Py_ssize_t R, Py_ssize_t S,
                      Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """out[s * R + r] = x[r * S + s] for s in [lo, hi), R <= FEW_ROWS: a loop per row count,
    whose constant stride the compiler vectorises with shuffles."""
    cdef Py_ssize_t s
    if R == 1:
        for s in range(lo, hi):
            out[s] = x[s]
    elif R == 2:
        for s in range(lo, hi):
            out[2 * s] = x[s]
            out[2 * s + 1] = x[S + s]
    elif R == 3:
        for s in range(lo, hi):
            out[3 * s] = x[s]
            out[3 * s + 1] = x[S + s]
            out[3 * s + 2] = x[2 * S + s]
    else:
        for s in range(lo, hi):
            out[4 * s] = x[s]
            out[4 * s + 1] = x[S + s]
            out[4 * s + 2] = x[2 * S + s]
            out[4 * s + 3] = x[3 * S + s]
