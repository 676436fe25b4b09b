"""Blocked direct convolution on NHWC activations and a packed weight (fastconv_blocked.h):
the forward convolution (also each sub-pixel phase of an input gradient) and the weight
gradient.

The weight is packed once (functional.pack_weight) into blocks of OUT_BLOCK output channels,
[group][C_out block][kh][kw][C_in / groups][OUT_BLOCK], zero-padded to whole blocks, so that
one block's weight is one contiguous stream. A register block is FC_BLK_NP output pixels x
OUT_BLOCK channels (FC_BLK_NV vectors): each input value is broadcast once and multiplied
into every output vector, each weight vector loaded once and used for every pixel. The last
block of a C_out that is not a whole number of blocks uses only the vectors it needs, and up
to FC_BLK_PIX_MAX pixels. A post-operation chain whose activations are relu or relu6 (or
none) is applied to the accumulators before they are stored; others after the store.
Input channels are cut into blocks of `in_block` so that a block's weight
(kh * kw * in_block * OUT_BLOCK values) stays in cache while it serves all pixels of a work
item; the partial sums of the earlier input blocks wait in a small per-thread tile, and each
output value is written to y once, after the last.

Zero padding is implicit: a tap that falls outside x reads a shared row of zeros (a tap that
no pixel of a block reaches inside x is skipped), so no padded copy of x is made. That is
not the definition where a weight (or, for the weight gradient, grad_output) is NaN or
infinite (0 * inf): the caller runs the direct kernel then. Stride and dilation are offsets.

Shapes (groups G, C_in = G * cig, C_out = G * cog, n_ob = ceil(cog / OUT_BLOCK)):
    x     (N, H, W, C_in)                   unpadded input
    wp    (G, n_ob, kh, kw, cig, OUT_BLOCK) packed weight
    bias  (G, n_ob * OUT_BLOCK), or (0, 0) for none
    y     (N, Ho, Wo, C_out)                channels contiguous; rows and pixels may be strided
"""
from cython cimport floating
from cython.parallel cimport prange, parallel, threadid
from libc.stdlib cimport malloc, calloc, free

from fastconv._kernels._share cimport fc_share, fc_share_next, share_items

from fastconv._kernels._epilogue cimport (Epilogue, chain_of, chain_span, fc_postops_f32,
                                          fc_postops_f64)


from fastconv._kernels._blocked_block cimport (
    FC_BLK_NP, FC_BLK_PIX_MAX, FC_BLK_NV, FC_BLK_OB_F, FC_BLK_OB_D, FC_VBYTES, FC_BLK_PIX,
    fc_blk_chain_in_registers_f32, fc_blk_chain_in_registers_f64, fc_blocked_f, fc_blocked_d,
    fc_wgrad_blocked_f, fc_wgrad_blocked_d, scalar_block)


cdef extern from "fastconv_simd.h":
    enum:
        FC_HAVE_VECTORS
    const char* FC_ISA
    void fc_store_fence() noexcept nogil


ISA = FC_ISA.decode()
PIXEL_BLOCK = FC_BLK_NP
# output channels per packed weight block: FC_BLK_NV vectors (a few scalars without vectors)
OUT_BLOCK = {"float32": FC_BLK_OB_F, "float64": FC_BLK_OB_D}


def conv_forward(const floating[:, :, :, ::1] x,             # IN  (N, H, W, C_in), unpadded
                 const floating[:, :, :, :, :, ::1] wp,      # IN  packed weight (see above)
                 const floating[:, ::1] bias,                # IN  (G, n_ob * OUT_BLOCK) or (0, 0)
                 floating[:, :, :, :] y,                     # OUT (N, Ho, Wo, C_out)
                 Py_ssize_t top, Py_ssize_t left,            # zero padding before row / column 0
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t in_block, Py_ssize_t item_pixels, bint weight_outer,
                 bint stream, Epilogue post, int num_threads):
    """y = conv(x, w) + bias, then `post`'s chain (None: none) on each register block as
    it is stored. A work item is one output-channel block of one group over a run
    of at most item_pixels consecutive output pixels (row-major) of one image, each image's
    pixels cut into runs of equal length (within one). The items are shared out (fc_share:
    each thread an equal contiguous run, a late thread's rest taken over by the others) in
    the order (group, block, image, run) when `weight_outer` (a thread keeps one block's
    weight: for weights larger than the cache), else (group, image, run, block) (a thread
    keeps a run's input while it goes through all blocks). Every output value is computed
    by one thread in a fixed order, so the result does not depend on the thread count or on
    which thread computes it. `stream`: y's whole vectors are written with
    non-temporal stores (for an output far larger than the caches: no read of each line
    before it is written), where y's pixels and channel blocks lie on vector boundaries.
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
    cdef const void* chain = chain_of(post, sizeof(floating), N * P, y.shape[3])
    cdef const void* in_registers = NULL  # the chain, when the register blocks apply it
    cdef Py_ssize_t vl = ob // FC_BLK_NV  # lanes per vector
    cdef bint split = in_block < cig  # partial sums wait in the tile between input blocks
    # a row of kw taps over all C input channels reads kw * C consecutive values of x (no
    # dilation, one group, channels not cut): a block whose rows all lie inside x
    # horizontally runs them as kh taps of kw * C channels (a 3-channel stem: 7 taps of 21
    # values instead of 49 of 3)
    cdef bint rows_merge = dw == 1 and cig == C and not split and kw > 1
    cdef bint merged
    cdef Py_ssize_t taps, tap_len, tap_step
    cdef Py_ssize_t item, rest, g, b, n, run, p0, n_pix, n_blocks, blk, pix, npix, p, t, np_max
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
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    if N * P == 0:
        return 0
    if chain != NULL and FC_HAVE_VECTORS:
        if (fc_blk_chain_in_registers_f32(<const fc_postops_f32*> chain) if floating is float
                else fc_blk_chain_in_registers_f64(<const fc_postops_f64*> chain)):
            in_registers = chain
    # non-temporal stores need every vector of y aligned, and no chain reading y back
    stream = stream and FC_HAVE_VECTORS and (chain == NULL or in_registers != NULL) and (<size_t> &y[0, 0, 0, 0]) % FC_VBYTES == 0 and (
        (y_img * sizeof(floating)) % FC_VBYTES == 0 and (y_row * sizeof(floating)) % FC_VBYTES == 0
        and (y_pix * sizeof(floating)) % FC_VBYTES == 0 and (cog * sizeof(floating)) % FC_VBYTES == 0)
    zeros = <const floating*> calloc(max(in_block, kw * cig if rows_merge else 0) + 64,
                                     sizeof(floating))
    if zeros == NULL or share_items(&share, n_items, num_threads):
        free(<void*> zeros)
        return 1
    with nogil, parallel(num_threads=num_threads):
        xp = <const floating**> malloc(ntaps * FC_BLK_PIX_MAX * sizeof(floating*))
        outp = <floating**> malloc(FC_BLK_PIX_MAX * sizeof(floating*))
        tile = <floating*> malloc(item_pixels * ob * sizeof(floating)) if split else NULL
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for item in range(share_first, share_end):
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
                nc = min(ob, cog - b * ob)
                np_max = FC_BLK_PIX((nc + vl - 1) // vl) if FC_HAVE_VECTORS else FC_BLK_NP
                n_blocks = (n_pix + np_max - 1) // np_max
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
                        # rows merged when every pixel's rows of taps lie inside x horizontally:
                        # the block's columns run from ow (0 once it wraps to the next row) to
                        # ow + npix - 1 (Wo - 1 once it wraps)
                        merged = rows_merge and (0 if ow + npix > Wo else ow) * sw >= left and (
                            (Wo - 1 if ow + npix > Wo else ow + npix - 1) * sw - left + kw <= W)
                        for p in range(npix):
                            # the pixel's sums go to the tile, or to y after the last input block
                            outp[p] = y_blk + oh * y_row + ow * y_pix if last else tile + (pix + p) * ob
                            # merged (ci0 is 0 then): each row's first tap
                            _tap_pointers(xp + p, x_img + ci0, zeros, oh * sh - top, ow * sw - left,
                                          kh, 1 if merged else kw, dh, dw, H, W, C)
                            ow = ow + 1
                            if ow == Wo:
                                ow = 0
                                oh = oh + 1
                        # merged: kh taps of kw * cb values, kw taps of the packed weight apart
                        taps = kh if merged else ntaps
                        tap_len = cb * kw if merged else cb
                        tap_step = w_tap * kw if merged else w_tap
                        for t in range(taps):  # a tap that reaches x from no pixel is skipped
                            for p in range(npix):
                                if xp[t * FC_BLK_PIX_MAX + p] != zeros:
                                    break
                            else:
                                xp[t * FC_BLK_PIX_MAX] = NULL
                        # start from the bias (first input block) or the tile
                        init = b_blk if ci0 == 0 else tile + pix * ob
                        init_pix = 0 if ci0 == 0 else ob
                        # y gets nc channels, the tile whole vectors (as the next pass reads them)
                        n_out = nc if last else (nc + vl - 1) // vl * vl
                        if not FC_HAVE_VECTORS:
                            scalar_block(<int> npix, xp, w_blk, taps, tap_len, tap_step, ob, init,
                                         init_pix, outp, n_out)
                        elif floating is float:
                            fc_blocked_f(<int> npix, xp, w_blk, taps, tap_len, tap_step, init,
                                         init_pix, outp, n_out,
                                         <const fc_postops_f32*> in_registers if last else NULL,
                                         n * P + p0 + pix, g * cog + b * ob, stream and last)
                        else:
                            fc_blocked_d(<int> npix, xp, w_blk, taps, tap_len, tap_step, init,
                                         init_pix, outp, n_out,
                                         <const fc_postops_f64*> in_registers if last else NULL,
                                         n * P + p0 + pix, g * cog + b * ob, stream and last)
                        if last and chain != NULL and in_registers == NULL:
                            # the block's pixels lie y_pix apart in a row
                            if outp[npix - 1] - outp[0] == (npix - 1) * y_pix:
                                chain_span(chain, outp[0], n * P + p0 + pix, npix, y_pix,
                                           g * cog + b * ob, nc)
                            else:
                                for p in range(npix):
                                    chain_span(chain, outp[p], n * P + p0 + pix + p, 1, y_pix,
                                               g * cog + b * ob, nc)
                    ci0 = ci0 + cb
        if stream:
            fc_store_fence()
        free(tile)
        free(outp)
        free(xp)
    free(<void*> zeros)
    free(share.taken)
    return status


cdef inline void _tap_pointers(const floating** xp, const floating* x, const floating* zeros,
                               Py_ssize_t ih0, Py_ssize_t iw0, Py_ssize_t kh, Py_ssize_t kw,
                               Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t C) noexcept nogil:
    """xp[(r*kw + s) * FC_BLK_PIX_MAX] = x's pixel (ih0 + r*dh, iw0 + s*dw) for one output pixel
    whose tap (0, 0) reads input pixel (ih0, iw0), or `zeros` where that is outside x."""
    cdef Py_ssize_t r, s, ih, iw
    for r in range(kh):
        ih = ih0 + r * dh
        for s in range(kw):
            iw = iw0 + s * dw
            xp[(r * kw + s) * FC_BLK_PIX_MAX] = x + (ih * W + iw) * C if 0 <= ih < H and 0 <= iw < W \
                else zeros

def conv_backward_weight(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                         const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                         floating[:, :, :, ::1] gw,        # IN/OUT (kh, kw, cig, C_out): += sums
                         Py_ssize_t top, Py_ssize_t left,  # zero padding, as in conv_forward
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t groups, Py_ssize_t out_ranges, Py_ssize_t in_ranges,
                         Py_ssize_t chunk_pixels, int num_threads):
    """Weight gradient gw[r, s, ci, co] = sum over output pixels of x at tap (r, s) times gy,
    without partial sums: a work unit is (group, one of `out_ranges` ranges of the blocks of
    OUT_BLOCK output channels, one of `in_ranges` ranges of input channels), and owns its
    part of gw. It goes through all output pixels in chunks of chunk_pixels (the chunk's gy,
    its blocks of channels, stays in cache while every tap and input channel of the range
    uses it; a last block narrower than OUT_BLOCK is first copied into a zero-padded
    buffer), for each tap and register block of FC_BLK_NP input channels through its blocks
    of output channels, each summed over the chunk's pixels (a tap in the padding reads
    zeros), the sums added to what gw holds. With one block per range, a unit's part of gw
    is a column of rows OUT_BLOCK wide, C_out apart; with all blocks in one range, its
    group's part of each row, one row after another (for a gw larger than the caches, read
    and written from memory: a stream, not a stride). Each element of gw is summed by one
    thread in a fixed order: the result does not depend on the thread count.
    Returns 0, or 1 when a scratch buffer could not be allocated."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t kh = gw.shape[0], kw = gw.shape[1], cig = gw.shape[2], cog = Cout // groups
    cdef Py_ssize_t ob = FC_BLK_OB_F if floating is float else FC_BLK_OB_D
    cdef Py_ssize_t n_ob = (cog + ob - 1) // ob, ntaps = kh * kw
    cdef Py_ssize_t n_ci_blocks = (cig + FC_BLK_NP - 1) // FC_BLK_NP
    cdef Py_ssize_t P = N * Ho * Wo, n_chunks = (P + chunk_pixels - 1) // chunk_pixels
    cdef Py_ssize_t n_units = groups * out_ranges * in_ranges
    cdef Py_ssize_t unit, g, b, j, k, nc, ci_lo, ci_hi, chunk, p0, npix, p, c, n, oh, ow, t, r, s
    cdef Py_ssize_t ci, nci, ih, iw, b_lo, b_hi
    cdef Py_ssize_t nc_last = cog - (n_ob - 1) * ob  # channels of the last block
    cdef bint padded
    cdef const floating* zeros = NULL
    cdef const floating** xp = NULL
    cdef floating* gbuf = NULL
    cdef const floating* g_chunk
    cdef floating* gw_blk
    cdef Py_ssize_t g_pix
    cdef int status = 0
    cdef int* failed = &status
    if P == 0:
        return 0
    zeros = <const floating*> calloc(cig + 64, sizeof(floating))
    if zeros == NULL:
        return 1
    with nogil, parallel(num_threads=num_threads):
        xp = <const floating**> malloc(ntaps * chunk_pixels * sizeof(floating*))
        gbuf = <floating*> malloc(chunk_pixels * ob * sizeof(floating))
        for unit in prange(n_units, schedule="static"):
            if xp == NULL or gbuf == NULL:
                failed[0] = 1
                continue
            g = unit // (out_ranges * in_ranges)
            j = (unit // in_ranges) % out_ranges
            k = unit % in_ranges
            b_lo = j * n_ob // out_ranges
            b_hi = (j + 1) * n_ob // out_ranges
            # the range's input channels, whole register blocks but for the last
            ci_lo = min(cig, k * n_ci_blocks // in_ranges * FC_BLK_NP)
            ci_hi = min(cig, (k + 1) * n_ci_blocks // in_ranges * FC_BLK_NP)
            if ci_hi <= ci_lo or b_hi <= b_lo:
                continue
            # a last block narrower than ob in the range: its gy chunk is read zero-padded
            padded = b_hi == n_ob and nc_last < ob
            for chunk in range(n_chunks):
                p0 = chunk * chunk_pixels
                npix = min(chunk_pixels, P - p0)
                n = p0 // (Ho * Wo)
                oh = p0 // Wo % Ho
                ow = p0 % Wo
                if padded:
                    g_chunk = &gy[0, 0, 0, 0] + p0 * Cout + g * cog + (n_ob - 1) * ob
                    for p in range(npix):
                        for c in range(ob):
                            gbuf[p * ob + c] = g_chunk[p * Cout + c] if c < nc_last else 0
                for p in range(npix):
                    # each tap's input pixel (at the group's first channel), or the zeros
                    for r in range(kh):
                        ih = oh * sh + r * dh - top
                        for s in range(kw):
                            iw = ow * sw + s * dw - left
                            xp[(r * kw + s) * chunk_pixels + p] = \
                                &x[n, ih, iw, g * cig] if 0 <= ih < H and 0 <= iw < W else zeros
                    ow = ow + 1
                    if ow == Wo:
                        ow = 0
                        oh = oh + 1
                        if oh == Ho:
                            oh = 0
                            n = n + 1
                for t in range(ntaps):
                    ci = ci_lo
                    while ci < ci_hi:
                        nci = min(<Py_ssize_t> FC_BLK_NP, ci_hi - ci)
                        for b in range(b_lo, b_hi):
                            # the chunk's gy, the block's channels: in place, or zero-padded
                            nc = min(ob, cog - b * ob)
                            g_chunk = &gy[0, 0, 0, 0] + p0 * Cout + g * cog + b * ob
                            g_pix = Cout
                            if nc < ob:
                                g_chunk = gbuf
                                g_pix = ob
                            gw_blk = &gw[0, 0, 0, 0] + (t * cig + ci) * Cout + g * cog + b * ob
                            if not FC_HAVE_VECTORS:
                                _scalar_wgrad(<int> nci, xp + t * chunk_pixels, ci, g_chunk,
                                              g_pix, npix, gw_blk, Cout, nc)
                            elif floating is float:
                                fc_wgrad_blocked_f(<int> nci, xp + t * chunk_pixels, ci, g_chunk,
                                                   g_pix, npix, gw_blk, Cout, nc)
                            else:
                                fc_wgrad_blocked_d(<int> nci, xp + t * chunk_pixels, ci, g_chunk,
                                                   g_pix, npix, gw_blk, Cout, nc)
                        ci = ci + nci
        free(gbuf)
        free(xp)
    free(<void*> zeros)
    return status


cdef inline void _scalar_wgrad(int nci, const floating* const* xp, Py_ssize_t ci0,
                               const floating* gy, Py_ssize_t gy_pix, Py_ssize_t npix,
                               floating* gw, Py_ssize_t w_ci, Py_ssize_t nc) noexcept nogil:
    """fc_wgrad_blocked's result one value at a time, for compilers without vector extensions."""
    cdef Py_ssize_t i, c, p
    cdef floating acc
    for i in range(nci):
        for c in range(nc):
            acc = 0
            for p in range(npix):
                acc = acc + xp[p][ci0 + i] * gy[p * gy_pix + c]
            gw[i * w_ci + c] += acc


cdef inline bint _transpose_tile(const floating* src, Py_ssize_t src_row, floating* dst,
                                 Py_ssize_t dst_row) noexcept nogil:
    """dst[j * dst_row + i] = src[i * src_row + j] for i, j < 16, through a local tile (rows
    read and written whole); whether every value is finite."""
    cdef floating tile[16][16]
    cdef floating spread[16]
    cdef int i, j
    for i in range(16):
        for j in range(16):
            tile[i][j] = src[i * src_row + j]
    for j in range(16):
        spread[j] = 0
    for i in range(16):
        for j in range(16):
            spread[j] = spread[j] + (tile[i][j] - tile[i][j])  # NaN once any is not finite
    for j in range(16):
        for i in range(16):
            dst[j * dst_row + i] = tile[i][j]
    for j in range(16):
        if spread[j] != 0:
            return False
    return True


cdef enum:
    PACK_ROWS = 16  # input channels per work unit of pack_weight: their rows stay in L1


cdef inline bint _pack_rows(const floating* w, Py_ssize_t w_ci, floating* wp, Py_ssize_t wp_ob,
                            Py_ssize_t n_ci, Py_ssize_t cog, Py_ssize_t n_ob,
                            Py_ssize_t block) noexcept nogil:
    """n_ci rows (input channels, w_ci apart) of one tap of one group of an HWIO weight (w at
    the group's first output channel) into their blocks (wp_ob apart):
    wp[ob * wp_ob + ci * block + c] = w[ci * w_ci + ob * block + c], zeros beyond cog; whether
    every value read is finite. Each row is read once, in order (reading a block's column of
    every row instead, 64 bytes a row, ran 5x slower than a copy: 3x3 512 -> 512, AMD EPYC
    Zen 3)."""
    cdef Py_ssize_t ci, ob, c, nc
    cdef floating v
    cdef bint bad = False
    for ci in range(n_ci):
        for ob in range(n_ob):
            nc = min(block, cog - ob * block)
            for c in range(nc):
                v = w[ci * w_ci + ob * block + c]
                wp[ob * wp_ob + ci * block + c] = v
                bad = bad | (v - v != 0)
            for c in range(nc, block):
                wp[ob * wp_ob + ci * block + c] = 0
    return not bad


cdef inline bint _pack_tile(const floating* w, Py_ssize_t w_ci, Py_ssize_t w_co,
                            floating* wp, Py_ssize_t cig, Py_ssize_t nc,
                            Py_ssize_t block) noexcept nogil:
    """One tap of one block of a weight view whose output channels are not contiguous (an
    input gradient's, channel axes swapped): wp[ci, c] = w[ci * w_ci + c * w_co] for c < nc,
    zeros after, a transpose in 16 x 16 tiles (whole ones through _transpose_tile); whether
    every value read is finite (v - v is 0 only for a finite v)."""
    cdef Py_ssize_t ci, c, ci0, c0
    cdef const floating* column
    cdef floating v
    cdef bint bad = False
    for c0 in range(0, nc, 16):
        for ci0 in range(0, cig, 16):
            if w_ci == 1 and c0 + 16 <= nc and ci0 + 16 <= cig:
                bad = bad | (not _transpose_tile(w + c0 * w_co + ci0, w_co,
                                                 wp + ci0 * block + c0, block))
                continue
            for c in range(c0, min(c0 + 16, nc)):
                column = w + c * w_co
                for ci in range(ci0, min(ci0 + 16, cig)):
                    # a unit stride the compiler knows: 1.25x faster (3x3 512 -> 512)
                    v = column[ci] if w_ci == 1 else column[ci * w_ci]
                    wp[ci * block + c] = v
                    bad = bad | (v - v != 0)
    for ci in range(cig):
        for c in range(nc, block):
            wp[ci * block + c] = 0
    return not bad


def pack_weight(const floating[:, :, :, :] w,             # IN  (kh, kw, cig, G * cog), any strides
                floating[:, :, :, :, :, ::1] wp,          # OUT (G, n_ob, kh, kw, cig, block)
                int num_threads):
    """Copy the HWIO weight w into the packed layout wp (the last block of each group
    zero-padded) in one pass; True when every value of w is finite."""
    cdef Py_ssize_t G = wp.shape[0], n_ob = wp.shape[1], kh = wp.shape[2], kw = wp.shape[3]
    cdef Py_ssize_t cig = wp.shape[4], block = wp.shape[5], cog = w.shape[3] // G
    cdef Py_ssize_t w_ci = w.strides[2] // <Py_ssize_t> sizeof(floating)
    cdef Py_ssize_t w_co = w.strides[3] // <Py_ssize_t> sizeof(floating)
    cdef Py_ssize_t unit, g, ob, r, s, c0, ci0
    cdef Py_ssize_t n_chunks = (cig + PACK_ROWS - 1) // PACK_ROWS
    cdef int nonfinite = 0
    if cig == 0:
        return True
    if w_co == 1:  # an HWIO weight: rows of channels read whole, each into all its blocks
        for unit in prange(G * kh * kw * n_chunks, nogil=True, num_threads=num_threads,
                           schedule="static"):
            ci0 = (unit % n_chunks) * PACK_ROWS
            s = (unit // n_chunks) % kw
            r = (unit // (n_chunks * kw)) % kh
            g = unit // (n_chunks * kw * kh)
            nonfinite += not _pack_rows(&w[r, s, ci0, g * cog], w_ci, &wp[g, 0, r, s, ci0, 0],
                                        kh * kw * cig * block, min(PACK_ROWS, cig - ci0), cog,
                                        n_ob, block)
        return nonfinite == 0
    for unit in prange(G * n_ob * kh * kw, nogil=True, num_threads=num_threads,
                       schedule="static"):
        s = unit % kw
        r = (unit // kw) % kh
        ob = (unit // (kw * kh)) % n_ob
        g = unit // (kw * kh * n_ob)
        c0 = ob * block
        nonfinite += not _pack_tile(&w[r, s, 0, g * cog + c0], w_ci, w_co,
                                    &wp[g, ob, r, s, 0, 0], cig, min(block, cog - c0), block)
    return nonfinite == 0


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
