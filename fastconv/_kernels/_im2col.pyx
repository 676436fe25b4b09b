"""Tiled im2col + GEMM convolution kernels on NHWC activations and HWIO weights.

The output pixels are cut into tiles of `tile` pixels. A thread unrolls one tile's receptive
fields (zero padding included: it is implicit, x is never copied) into its own column buffer (tile x kh*kw*cig, sized by the caller to stay near L2) and
multiplies it by the weight, seen as a (kh*kw*cig) x C_out matrix, with one single-threaded
BLAS call per group. The full column matrix never exists. A 1x1 stride-1 convolution needs no
column buffer at all: its input already is the column matrix (when no row or column of the
input lies beyond the last output pixel). transpose_single_tap serves the transposed
convolutions whose sub-pixel phases have one tap each (kernel <= stride): a GEMM of the input
pixels by all taps at once; conv_backward_data the input gradient as a GEMM per tap, its
products added to the input pixels (col2im).

The caller keeps BLAS on one thread while these run: parallelism is OpenMP over tiles.
Functions return 0, or 1 when a scratch buffer could not be allocated.
Shapes are those of _direct.pyx.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free

from fastconv._kernels._share cimport fc_share, fc_share_next, share_items
from fastconv._kernels._blas cimport gemm
from fastconv._kernels._epilogue cimport Epilogue, chain_of, chain_span


cdef inline void unroll_tile(const floating* x, floating* col, Py_ssize_t p0, Py_ssize_t T,
                             Py_ssize_t g, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                             Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t cig, Py_ssize_t top, Py_ssize_t left, Py_ssize_t sh,
                             Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """col[t, (r*kw + s)*cig + ci] = x[n, oh*sh + r*dh - top, ow*sw + s*dw - left, g*cig + ci]
    for output pixel p0 + t, and 0 where that falls in the zero padding outside x."""
    cdef Py_ssize_t K = kh * kw * cig, run = kw * cig
    cdef Py_ssize_t t, p, n, oh, ow, r, s, ci, ih, iw, j
    cdef const floating* src
    cdef floating* dst
    # a row of taps of one group spanning all channels (cig == C), adjacent (dw == 1) and
    # inside the image is one run of kw * C values of x: copied as one (with few channels,
    # e.g. a first layer's 1 or 3, per-tap copies of cig values spent their time on indices)
    cdef bint runs = dw == 1 and cig == C
    for t in range(T):
        p = p0 + t
        ow = p % Wo
        oh = (p // Wo) % Ho
        n = p // (Wo * Ho)
        for r in range(kh):
            ih = oh * sh + r * dh - top
            iw = ow * sw - left
            if runs and 0 <= ih < H and 0 <= iw and iw + kw <= W:
                src = x + ((n * H + ih) * W + iw) * C
                dst = col + t * K + r * run
                for j in range(run):
                    dst[j] = src[j]
                continue
            for s in range(kw):
                iw = ow * sw + s * dw - left
                dst = col + t * K + (r * kw + s) * cig
                if 0 <= ih < H and 0 <= iw < W:
                    src = x + ((n * H + ih) * W + iw) * C + g * cig
                    for ci in range(cig):
                        dst[ci] = src[ci]
                else:
                    for ci in range(cig):
                        dst[ci] = 0


cdef inline const floating* tile_columns(
        const floating* x, floating* col, bint pointwise, Py_ssize_t p0, Py_ssize_t T,
        Py_ssize_t g, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t Ho, Py_ssize_t Wo,
        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t cig, Py_ssize_t top, Py_ssize_t left,
        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """The column matrix of output pixels p0 .. p0+T-1, group g: x itself for a pointwise
    convolution (leading dimension C), else unrolled into col (leading dimension kh*kw*cig)."""
    if pointwise:
        return x + p0 * C + g * cig
    unroll_tile(x, col, p0, T, g, H, W, C, Ho, Wo, kh, kw, cig, top, left, sh, sw, dh, dw)
    return col


cdef inline bint is_pointwise(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t top, Py_ssize_t left, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """Whether the input already is the column matrix: 1x1 taps, stride 1, and the input
    and output grids coincide."""
    return kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0 and \
        H == Ho and W == Wo


def conv_forward(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                 const floating[:, :, :, ::1] w,   # IN  (kh, kw, cig, C_out)
                 const floating[::1] bias,         # IN  (C_out,), or (0,) for none
                 floating[:, :, :, ::1] y,         # OUT (N, Ho, Wo, C_out)
                 Py_ssize_t top, Py_ssize_t left,  # zero padding before the first row / column
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t groups, Py_ssize_t tile, Epilogue post, int num_threads):
    """y = conv(x, w) + bias, then `post`'s chain (None: none) on each tile while it is in
    cache."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t kh = w.shape[0], kw = w.shape[1], cig = w.shape[2], Cout = w.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], cog = Cout // groups
    cdef Py_ssize_t K = kh * kw * cig, P = N * Ho * Wo
    cdef Py_ssize_t n_tiles = (P + tile - 1) // tile
    cdef bint pointwise = is_pointwise(kh, kw, sh, sw, top, left, H, W, Ho, Wo)
    cdef int lda = <int> (C if pointwise else K)
    cdef bint has_bias = bias.shape[0] > 0
    cdef const void* chain = chain_of(post, sizeof(floating), P, Cout)
    cdef Py_ssize_t it, p0, T, g, t, co
    cdef floating* col = NULL
    cdef floating* yp
    cdef int status = 0
    cdef int* failed = &status
    if P == 0:
        return 0
    if share_items(&share, n_tiles, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        col = NULL if pointwise else <floating*> malloc(tile * K * sizeof(floating))
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for it in range(share_first, share_end):
                if not pointwise and col == NULL:
                    failed[0] = 1
                    continue
                p0 = it * tile
                T = min(tile, P - p0)
                yp = &y[0, 0, 0, 0] + p0 * Cout
                for g in range(groups):
                    gemm(False, False, <int> T, <int> cog, <int> K, <floating> 1.0,
                         tile_columns(&x[0, 0, 0, 0], col, pointwise, p0, T, g, H, W, C, Ho, Wo,
                                      kh, kw, cig, top, left, sh, sw, dh, dw), lda,
                         &w[0, 0, 0, 0] + g * cog, <int> Cout, <floating> 0.0, yp + g * cog,
                         <int> Cout)
                if has_bias:
                    for t in range(T):
                        for co in range(Cout):
                            yp[t * Cout + co] += bias[co]
                chain_span(chain, yp, p0, T, Cout, 0, Cout)
        free(col)
    free(share.taken)
    return status


def conv_backward_weight(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                         const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                         floating[:, ::1] partial,         # OUT (n_chunks, kh*kw*cig*C_out), zeroed
                         Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t top, Py_ssize_t left,  # zero padding, as in conv_forward
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t groups, Py_ssize_t tile, int num_threads):
    """Weight gradient as n_chunks partial sums: chunk k covers a fixed range of output
    pixels, so the result does not depend on the thread count; the caller adds them up."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t cig = C // groups, cog = Cout // groups
    cdef Py_ssize_t K = kh * kw * cig, P = N * Ho * Wo
    cdef Py_ssize_t n_chunks = partial.shape[0]
    cdef bint pointwise = is_pointwise(kh, kw, sh, sw, top, left, H, W, Ho, Wo)
    cdef int lda = <int> (C if pointwise else K)
    cdef Py_ssize_t chunk, p0, p_end, T, g
    cdef floating* col = NULL
    cdef int status = 0
    cdef int* failed = &status
    if P == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        col = NULL if pointwise else <floating*> malloc(tile * K * sizeof(floating))
        for chunk in prange(n_chunks, schedule="static"):
            if not pointwise and col == NULL:
                failed[0] = 1
                continue
            p0 = chunk * P // n_chunks
            p_end = (chunk + 1) * P // n_chunks
            while p0 < p_end:
                T = min(tile, p_end - p0)
                for g in range(groups):
                    # partial[chunk] (K x C_out, group block) += col^T (K x T) @ gy (T x cog)
                    gemm(True, False, <int> K, <int> cog, <int> T, <floating> 1.0,
                         tile_columns(&x[0, 0, 0, 0], col, pointwise, p0, T, g, H, W, C, Ho,
                                      Wo, kh, kw, cig, top, left, sh, sw, dh, dw), lda,
                         &gy[0, 0, 0, 0] + p0 * Cout + g * cog, <int> Cout, <floating> 1.0,
                         &partial[chunk, 0] + g * cog, <int> Cout)
                p0 = p0 + T
        free(col)
    return status


def conv_backward_data(const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                       const floating[:, :, :, ::1] w,   # IN  (kh, kw, C_in, C_out): one group
                       floating[:, :, :, ::1] out,       # IN/OUT (N, H, W, C_in): added to
                       Py_ssize_t top, Py_ssize_t left,  # the crop of the padded input grid
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t tile, Py_ssize_t chunk, int num_threads):
    """The input gradient of a convolution (one group) added into `out`, GEMM + col2im:

        out[n, oh*sh + r*dh - top, ow*sw + s*dw - left, c]
            += sum_co gy[n, oh, ow, co] * w[r, s, c, co]

    for the positions inside `out`. Per tap, a GEMM of a tile of `tile` pixels of gy by the
    tap's weight read transposed (BLAS packs it as it goes: no transposed copy of the whole
    weight), its product rows then added to the input pixels they belong to. The work items
    are chunks of `chunk` input channels: a thread adds to its own chunk's channels only, in
    a fixed order, so that for given `tile` and `chunk` (the caller's are not functions of
    the thread count) the result does not depend on the thread count. With all
    pixels in one tile the weight is read once, where the phase route packs it transposed
    first: the input gradient of a layer with few pixels and a large weight."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = gy.shape[0], Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t kh = w.shape[0], kw = w.shape[1], C = w.shape[2]
    cdef Py_ssize_t H = out.shape[1], W = out.shape[2]
    cdef Py_ssize_t P = N * Ho * Wo, n_chunks = (C + chunk - 1) // chunk
    cdef Py_ssize_t item, c0, cn, p0, T, r, s, t, p, n, oh, ow, ih, iw, j
    cdef floating* col = NULL
    cdef const floating* src
    cdef floating* dst
    cdef int status = 0
    cdef int* failed = &status
    if P == 0 or C == 0 or Cout == 0:  # nothing to add (and BLAS wants lda >= 1)
        return 0
    if share_items(&share, n_chunks, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        col = <floating*> malloc(tile * chunk * sizeof(floating))
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for item in range(share_first, share_end):
                if col == NULL:
                    failed[0] = 1
                    continue
                c0 = item * chunk
                cn = min(chunk, C - c0)
                p0 = 0
                while p0 < P:  # a tile's grad_output stays in cache for all its taps
                    T = min(tile, P - p0)
                    for r in range(kh):
                        for s in range(kw):
                            # col (T x cn) = gy's tile (T x C_out) @ w[r, s, c0:c0+cn]^T
                            gemm(False, True, <int> T, <int> cn, <int> Cout, <floating> 1.0,
                                 &gy[0, 0, 0, 0] + p0 * Cout, <int> Cout, &w[r, s, c0, 0],
                                 <int> Cout, <floating> 0.0, col, <int> cn)
                            for t in range(T):
                                p = p0 + t
                                ow = p % Wo
                                oh = (p // Wo) % Ho
                                n = p // (Wo * Ho)
                                ih = oh * sh + r * dh - top
                                iw = ow * sw + s * dw - left
                                if ih < 0 or ih >= H or iw < 0 or iw >= W:
                                    continue
                                src = col + t * cn
                                dst = &out[n, ih, iw, c0]
                                for j in range(cn):
                                    dst[j] += src[j]
                    p0 = p0 + T
        free(col)
    free(share.taken)
    return status


def transpose_single_tap(const floating[:, :, :, ::1] x,    # IN  (N, H, W, C_x)
                         const floating[:, :, ::1] wg,      # IN  (groups, gx, kh*kw*gy)
                         const floating[::1] bias,          # IN  (C_y,), or (0,) for none
                         floating[:, :, :, ::1] out,        # OUT (N, Ho, Wo, C_y)
                         Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t top, Py_ssize_t left,   # the crop of the full output
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t tile, bint rows, int num_threads):
    """A transposed convolution (the input gradient of a convolution) whose sub-pixel phases
    have one tap each (kernel <= stride, e.g. 2x2 stride 2): every input pixel's weighted
    kernel lands on its own kh x kw output pixels, which no other pixel touches,

        out[n, h*sh + r*dh - top, w*sw + s*dw - left, g*gy + j]
            = bias[g*gy + j] + sum_i x[n, h, w, g*gx + i] * wg[g, i, (r*kw + s)*gy + j].

    So all taps are one GEMM: a tile of input pixels (as they lie in x) times wg[g], into a
    column buffer of the thread, whose rows are then copied to their output pixels (those
    cropped away are skipped). Output pixels that no tap reaches are left untouched: the
    caller fills them. Each output pixel is written by one tile: the result does not depend
    on the thread count.

    `rows` (no groups, dw = 1, no column cropped away): no buffer. The tile is one input row
    of x, and tap row r of it is an output row: out[n, h*sh + r*dh - top] seen as
    (W, sw*C_y) is x[n, h] (W x C_x) times wg's columns of taps (r, 0..kw-1), one GEMM with
    ldc = sw*C_y (the columns s >= kw of an output pixel group, when kw < sw, are skipped)."""
    if rows:
        return _transpose_rows(x, wg, bias, out, kh, kw, top, sh, sw, dh, num_threads)
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], Cx = x.shape[3]
    cdef Py_ssize_t groups = wg.shape[0], gx = wg.shape[1], K = wg.shape[2]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], Cy = out.shape[3], gy = Cy // groups
    cdef Py_ssize_t P = N * H * W, n_tiles = (P + tile - 1) // tile
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t it, p0, T, g, t, p, n, h, iw, r, s, oh, ow, j
    cdef floating* col = NULL
    cdef const floating* src
    cdef floating* dst
    cdef int status = 0
    cdef int* failed = &status
    if P == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        col = <floating*> malloc(tile * K * sizeof(floating))
        for it in prange(n_tiles, schedule="static"):
            if col == NULL:
                failed[0] = 1
                continue
            p0 = it * tile
            T = min(tile, P - p0)
            for g in range(groups):
                gemm(False, False, <int> T, <int> K, <int> gx, <floating> 1.0,
                     &x[0, 0, 0, 0] + p0 * Cx + g * gx, <int> Cx, &wg[g, 0, 0], <int> K,
                     <floating> 0.0, col, <int> K)
                for t in range(T):
                    p = p0 + t
                    iw = p % W
                    h = (p // W) % H
                    n = p // (W * H)
                    for r in range(kh):
                        oh = h * sh + r * dh - top
                        if oh < 0 or oh >= Ho:
                            continue
                        for s in range(kw):
                            ow = iw * sw + s * dw - left
                            if ow < 0 or ow >= Wo:
                                continue
                            src = col + t * K + (r * kw + s) * gy
                            dst = &out[n, oh, ow, 0] + g * gy
                            if has_bias:
                                for j in range(gy):
                                    dst[j] = src[j] + bias[g * gy + j]
                            else:
                                for j in range(gy):
                                    dst[j] = src[j]
        free(col)
    return status


cdef int _transpose_rows(const floating[:, :, :, ::1] x, const floating[:, :, ::1] wg,
                         const floating[::1] bias, floating[:, :, :, ::1] out,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t top, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t dh, int num_threads) noexcept:
    """transpose_single_tap's `rows` form: one GEMM per input row and tap row, straight into
    the output."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], Cx = x.shape[3]
    cdef Py_ssize_t K = wg.shape[2]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], Cy = out.shape[3]
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t row, n, h, r, s, oh, iw, j
    cdef floating* dst
    if N * H * W == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        for row in prange(N * H, schedule="static"):
            n = row // H
            h = row % H
            for r in range(kh):
                oh = h * sh + r * dh - top
                if oh < 0 or oh >= Ho:
                    continue
                dst = &out[n, oh, 0, 0]
                gemm(False, False, <int> W, <int> (kw * Cy), <int> Cx, <floating> 1.0,
                     &x[n, h, 0, 0], <int> Cx, &wg[0, 0, 0] + r * kw * Cy, <int> K,
                     <floating> 0.0, dst, <int> (sw * Cy))
                if has_bias:
                    for iw in range(W):
                        for s in range(kw):
                            for j in range(Cy):
                                dst[(iw * sw + s) * Cy + j] += bias[j]
    return 0
