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
                 Py_ssize_t in_block, Py_ssize_t item_pixels, bint weight_outer,
                 int num_threads):
    """y = conv(x, w) + bias. A work item is one output-channel block of one group over a run
    of at most item_pixels consecutive output pixels (row-major) of one image, each image's
    pixels cut into runs of equal length (within one). The items are split between the
    threads in equal contiguous runs of the order (group, block, image, run) when
    `weight_outer` (a thread keeps one block's weight: for weights larger than the cache),
    else (group, image, run, block) (a thread keeps a run's input while it goes through all
    blocks). Every output value is computed by one thread in a fixed order, so the result
    does not depend on the thread count.
    Returns 0, or 1 when a scratch buffer could not be allocated."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t G = wp.shape[0], n_ob = wp.shape[1], kh = wp.shape[2], kw = wp.shape[3]
    cdef Py_ssize_t cig = wp.shape[4], ob = wp.shape[5]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], cog = y.shape[3] // G
    cdef Py_ssize_t y_img = y.strides[0] // sizeof(floating), y_row = y.strides[1] // sizeof(floating)
    cdef Py_ssize_t y_pix = y.strides[2] // sizeof(floating)
    cdef Py_ssize_t P = Ho * Wo, n_runs = (P + item_pixels - 1) // item_pixels
    cdef Py_ssize_t n_items = G * n_ob * N * n_runs, per_group = n_ob * N * n_runs
    cdef Py_ssize_t ntaps = kh * kw, w_tap = cig * ob
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint split = in_block < cig  # partial sums wait in the tile between input blocks
    cdef Py_ssize_t item, rest, g, b, n, run, p0, n_pix, n_blocks, blk, pix, npix, p, t
    cdef Py_ssize_t oh, ow, ih, iw, r, s, ci0, cb, nc, n_out, init_pix
    cdef bint last
    cdef const floating* zeros = NULL
    cdef const floating* x_img
    cdef const floating* w_blk
    cdef const floating* b_blk
    cdef const floating* init
    cdef const floating** xp = NULL
    cdef floating** outp = NULL
    cdef floating* tile = NULL
    cdef floating* y_blk
    cdef int status = 0
    cdef int* failed = &status
    if N * P == 0:
        return 0
    zeros = <const floating*> calloc(in_block + 64, sizeof(floating))
    if zeros == NULL:
        return 1
    with nogil, parallel(num_threads=num_threads):
        xp = <const floating**> malloc(ntaps * FC_BLK_NP * sizeof(floating*))
        outp = <floating**> malloc(FC_BLK_NP * sizeof(floating*))
        tile = <floating*> malloc(item_pixels * ob * sizeof(floating)) if split else NULL
        for item in prange(n_items, schedule="static"):
            if xp == NULL or outp == NULL or (split and tile == NULL):
                failed[0] = 1
                continue
            g = item // per_group
            rest = item % per_group
            if weight_outer:  # (block, image, run)
                b = rest // (N * n_runs)
                rest = rest % (N * n_runs)
            else:  # (image, run, block)
                b = rest % n_ob
                rest = rest // n_ob
            n = rest // n_runs
            run = rest % n_runs
            p0 = run * P // n_runs  # the run: pixels [p0, p0 + n_pix) of image n
            n_pix = (run + 1) * P // n_runs - p0
            n_blocks = (n_pix + FC_BLK_NP - 1) // FC_BLK_NP
            nc = min(ob, cog - b * ob)
            x_img = &x[n, 0, 0, 0] + g * cig
            y_blk = &y[0, 0, 0, 0] + n * y_img + g * cog + b * ob
            b_blk = &bias[g, b * ob] if has_bias else NULL
            ci0 = 0
            while ci0 < cig:
                cb = min(in_block, cig - ci0)
                last = ci0 + cb >= cig
                w_blk = &wp[g, b, 0, 0, ci0, 0]
                # the run in n_blocks register blocks of equal size (within one): 7 pixels
                # run as 4 + 3, not 6 + 1
                for blk in range(n_blocks):
                    pix = blk * n_pix // n_blocks  # within the run
                    npix = (blk + 1) * n_pix // n_blocks - pix
                    oh = (p0 + pix) // Wo
                    ow = (p0 + pix) % Wo
                    for p in range(npix):
                        # the pixel's sums go to the tile, or to y after the last input block
                        outp[p] = y_blk + oh * y_row + ow * y_pix if last else tile + (pix + p) * ob
                        _tap_pointers(xp + p, x_img + ci0, zeros, oh * sh - top, ow * sw - left,
                                      kh, kw, dh, dw, H, W, C)
                        ow = ow + 1
                        if ow == Wo:
                            ow = 0
                            oh = oh + 1
                    for t in range(ntaps):  # a tap that reaches x from no pixel is skipped
                        for p in range(npix):
                            if xp[t * FC_BLK_NP + p] != zeros:
                                break
                        else:
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


cdef inline void _tap_pointers(const floating** xp, const floating* x, const floating* zeros,
                               Py_ssize_t ih0, Py_ssize_t iw0, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t C) noexcept nogil:
    """xp[(r*kw + s) * FC_BLK_NP] = x's pixel (ih0 + r*dh, iw0 + s*dw) for one output pixel
    whose tap (0, 0) reads input pixel (ih0, iw0), or `zeros` where that is outside x."""
    cdef Py_ssize_t r, s, ih, iw
    for r in range(kh):
        ih = ih0 + r * dh
        for s in range(kw):
            iw = iw0 + s * dw
            xp[(r * kw + s) * FC_BLK_NP] = x + (ih * W + iw) * C if 0 <= ih < H and 0 <= iw < W \
                else zeros

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
