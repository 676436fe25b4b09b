"""Blocked direct convolution on NHWC activations and a packed weight (fastconv_blocked.h).

The weight is packed once (functional.pack_weight) into blocks of OUT_BLOCK output channels,
[group][C_out block][kh][kw][C_in / groups][OUT_BLOCK], zero-padded to whole blocks, so that
one block's weight is one contiguous stream. A register block is FC_BLK_NP pixels of an
output row x OUT_BLOCK channels (FC_BLK_NV vectors): each input value is broadcast once and
multiplied into every output vector, each weight vector loaded once and used for every pixel.
Input channels are cut into blocks of `in_block` so that a block's weight
(kh * kw * in_block * OUT_BLOCK values) stays in cache while it serves all pixels of a work
item; the partial sums of the earlier input blocks wait in a small per-thread tile, and each
output value is written to y once, after the last.

Zero padding is implicit: a tap that falls outside x reads a shared row of zeros (the taps of
a row outside x are skipped), so no padded copy of x is made. That is not the definition
where a weight is NaN or infinite (0 * inf): the caller uses the direct kernel's exact mode
then. Stride and dilation are offsets.

Shapes (groups G, C_in = G * cig, C_out = G * cog, n_ob = ceil(cog / OUT_BLOCK)):
    x     (N, H, W, C_in)                   unpadded input
    wp    (G, n_ob, kh, kw, cig, OUT_BLOCK) packed weight
    bias  (G, n_ob * OUT_BLOCK), or (0, 0) for none
    y     (N, Ho, Wo, C_out)                channels contiguous; rows and pixels may be strided
"""
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, calloc, free

from fastconv._kernels._taps cimport _end_tap, _first_tap


cdef extern from "fastconv_blocked.h":
    enum:
        FC_BLK_NP       # output pixels per register block
        FC_BLK_OB_F     # float output channels per block
        FC_BLK_OB_D     # double output channels per block
        FC_HAVE_VECTORS
    const char* FC_ISA
    void fc_blocked_f(int npix, const float* const* xp, const float* w, Py_ssize_t ntaps,
                      Py_ssize_t cb, Py_ssize_t w_tap, const float* init, Py_ssize_t init_pix,
                      float* const* out, Py_ssize_t nc) noexcept nogil
    void fc_blocked_d(int npix, const double* const* xp, const double* w, Py_ssize_t ntaps,
                      Py_ssize_t cb, Py_ssize_t w_tap, const double* init, Py_ssize_t init_pix,
                      double* const* out, Py_ssize_t nc) noexcept nogil


ISA = FC_ISA.decode()
PIXEL_BLOCK = FC_BLK_NP
# output channels per packed weight block: FC_BLK_NV vectors (a few scalars without vectors)
OUT_BLOCK = {"float32": FC_BLK_OB_F, "float64": FC_BLK_OB_D}


cdef inline void _scalar_block(int npix, const floating* const* xp, const floating* w,
                               Py_ssize_t ntaps, Py_ssize_t cb, Py_ssize_t w_tap,
                               Py_ssize_t ob, const floating* init, Py_ssize_t init_pix,
                               floating** out, Py_ssize_t nc) noexcept nogil:
    """fc_blocked's result one value at a time, for compilers without vector extensions."""
    cdef Py_ssize_t p, c, t, ci
    cdef floating acc
    for p in range(npix):
        for c in range(nc):
            acc = init[p * init_pix + c] if init != NULL else 0
            for t in range(ntaps):
                if xp[t * FC_BLK_NP] == NULL:
                    continue
                for ci in range(cb):
                    acc = acc + xp[t * FC_BLK_NP + p][ci] * w[t * w_tap + ci * ob + c]
            out[p][c] = acc


def conv_forward(const floating[:, :, :, ::1] x,             # IN  (N, H, W, C_in), unpadded
                 const floating[:, :, :, :, :, ::1] wp,      # IN  packed weight (see above)
                 const floating[:, ::1] bias,                # IN  (G, n_ob * OUT_BLOCK) or (0, 0)
                 floating[:, :, :, :] y,                     # OUT (N, Ho, Wo, C_out)
                 Py_ssize_t top, Py_ssize_t left,            # zero padding before row / column 0
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t in_block, Py_ssize_t rows, int num_threads):
    """y = conv(x, w) + bias. Work items are (group, output-channel block, image, `rows`
    output rows), in that order, split between the threads in equal contiguous runs (a
    thread keeps one weight block while it can); every output value is computed by one
    thread in a fixed order, so the result does not depend on the thread count.
    Returns 0, or 1 when a scratch buffer could not be allocated."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t G = wp.shape[0], n_ob = wp.shape[1], kh = wp.shape[2], kw = wp.shape[3]
    cdef Py_ssize_t cig = wp.shape[4], ob = wp.shape[5]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], cog = y.shape[3] // G
    cdef Py_ssize_t y_img = y.strides[0] // sizeof(floating), y_row = y.strides[1] // sizeof(floating)
    cdef Py_ssize_t y_pix = y.strides[2] // sizeof(floating)
    cdef Py_ssize_t n_rb = (Ho + rows - 1) // rows, n_items = G * n_ob * N * n_rb
    cdef Py_ssize_t ntaps = kh * kw, w_tap = cig * ob
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint split = in_block < cig  # partial sums wait in the tile between input blocks
    cdef Py_ssize_t item, rest, g, b, n, oh0, oh1, oh, ih, ow, iw, npix, p, r, s, t
    cdef Py_ssize_t ci0, cb, nc, n_out, pix, n_pix, n_blocks, blk
    cdef bint reached, last
    cdef const floating* zeros = NULL
    cdef const floating* x_img
    cdef const floating* w_blk
    cdef const floating* b_blk
    cdef const floating* init
    cdef const floating** xp = NULL
    cdef floating* tile = NULL
    cdef floating** outp = NULL
    cdef Py_ssize_t init_pix
    cdef int status = 0
    cdef int* failed = &status
    if N * Ho * Wo == 0:
        return 0
    zeros = <const floating*> calloc(in_block + 64, sizeof(floating))
    if zeros == NULL:
        return 1
    with nogil, parallel(num_threads=num_threads):
        xp = <const floating**> malloc(ntaps * FC_BLK_NP * sizeof(floating*))
        outp = <floating**> malloc(FC_BLK_NP * sizeof(floating*))
        tile = <floating*> malloc(rows * Wo * ob * sizeof(floating)) if split else NULL
        for item in prange(n_items, schedule="static"):
            if xp == NULL or outp == NULL or (split and tile == NULL):
                failed[0] = 1
                continue
            g = item // (n_ob * N * n_rb)
            rest = item % (n_ob * N * n_rb)
            b = rest // (N * n_rb)           # output-channel block within the group
            rest = rest % (N * n_rb)
            n = rest // n_rb
            oh0 = (rest % n_rb) * rows
            oh1 = min(Ho, oh0 + rows)
            nc = min(ob, cog - b * ob)
            x_img = &x[n, 0, 0, 0] + g * cig
            b_blk = &bias[g, b * ob] if has_bias else NULL
            n_pix = (oh1 - oh0) * Wo
            n_blocks = (n_pix + FC_BLK_NP - 1) // FC_BLK_NP
            ci0 = 0
            while ci0 < cig:
                cb = min(in_block, cig - ci0)
                last = ci0 + cb >= cig
                w_blk = &wp[g, b, 0, 0, ci0, 0]
                # the item's pixels (row-major over its rows) in n_blocks blocks of equal size
                # (within one): 7 pixels run as 4 + 3, not 6 + 1
                for blk in range(n_blocks):
                    pix = blk * n_pix // n_blocks
                    npix = (blk + 1) * n_pix // n_blocks - pix
                    for p in range(npix):
                        oh = oh0 + (pix + p) // Wo
                        ow = (pix + p) % Wo
                        # where the pixel's sum goes: the tile, or y after the last input block
                        outp[p] = (&y[0, 0, 0, 0] + n * y_img + oh * y_row + ow * y_pix
                                   + g * cog + b * ob) if last else tile + (pix + p) * ob
                        # each tap's input pointer: into x, or at the zeros
                        for r in range(kh):
                            ih = oh * sh + r * dh - top
                            for s in range(kw):
                                iw = ow * sw + s * dw - left
                                xp[(r * kw + s) * FC_BLK_NP + p] = \
                                    x_img + (ih * W + iw) * C + ci0 if 0 <= ih < H and 0 <= iw < W \
                                    else zeros
                    for t in range(ntaps):  # taps that reach x from no pixel are skipped
                        reached = False
                        for p in range(npix):
                            if xp[t * FC_BLK_NP + p] != zeros:
                                reached = True
                        if not reached:
                            xp[t * FC_BLK_NP] = NULL
                    # start from the bias (first input block) or the tile
                    init = b_blk if ci0 == 0 else tile + pix * ob
                    init_pix = 0 if ci0 == 0 else ob
                    n_out = nc if last else ob
                    if not FC_HAVE_VECTORS:
                        _scalar_block(<int> npix, xp, w_blk, ntaps, cb, w_tap, ob, init,
                                      init_pix, outp, n_out)
                    elif floating is float:
                        fc_blocked_f(<int> npix, xp, w_blk, ntaps, cb, w_tap, init, init_pix,
                                     outp, n_out)
                    else:
                        fc_blocked_d(<int> npix, xp, w_blk, ntaps, cb, w_tap, init, init_pix,
                                     outp, n_out)
                ci0 = ci0 + cb
        free(tile)
        free(outp)
        free(xp)
    free(<void*> zeros)
    return status



def team_size(int num_threads):
    """The number of threads an OpenMP parallel region asking for num_threads gets here (the
    region conv_forward opens): 1 without OpenMP, fewer than asked under a thread limit."""
    cdef int* seen = <int*> calloc(max(num_threads, 1), sizeof(int))
    cdef int i, size = 0
    if seen == NULL:
        raise MemoryError()
    with nogil, parallel(num_threads=num_threads):
        seen[threadid()] = 1
    for i in range(max(num_threads, 1)):
        size += seen[i]
    free(seen)
    return size
