"""Direct convolution kernels on NHWC activations and HWIO weights.

Both work on an input that is already padded (the Python layer pads it, so every padding
mode is the same "valid" convolution here) and write into arrays the caller allocated.
The innermost loops run over contiguous channels so the compiler can vectorise them.
The input gradient mostly needs no kernel of its own: functional.py writes it as stride-1
convolutions (one per sub-pixel phase) that run through conv_forward; a strided depthwise
one has data_depthwise, which writes all phases of an output row in one pass.

Shapes (groups G, C_in = G * cig, C_out = G * cog):
    x  (N, Hp, Wp, C_in)      padded input
    w  (kh, kw, cig, C_out)   weight, HWIO
    y  (N, Ho, Wo, C_out)     output, Ho = (Hp - dh*(kh-1) - 1) // sh + 1
"""
from cython cimport floating
from cython.parallel cimport prange, parallel

from fastconv._kernels._share cimport fc_share, fc_share_next, share_items
from fastconv._kernels._epilogue cimport (Epilogue, chain_of, chain_span, fc_postops_f32,
                                          fc_postops_f64)
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memmove

from fastconv._kernels._taps cimport _end_tap, _first_tap


cdef extern from "fastconv_simd.h":
    # register-block sizes of the instruction set this module is compiled for
    enum:
        FC_PB       # output pixels per block
        FC_CB_F     # float channels per block (one vector)
        FC_CB_D     # double channels per block
        FC_CI       # input channels per weight-gradient block
        FC_HAVE_VECTORS
    const char* FC_ISA
    void fc_dense_block_f(int npix, const float* x, const float* w, float* y, const float* bias,
                          Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t ks, Py_ssize_t kw,
                          Py_ssize_t cig, Py_ssize_t w_ci, Py_ssize_t y_pix, Py_ssize_t x_pix,
                          Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_dense_block_d(int npix, const double* x, const double* w, double* y,
                          const double* bias, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t ks,
                          Py_ssize_t kw, Py_ssize_t cig, Py_ssize_t w_ci, Py_ssize_t y_pix,
                          Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_depthwise_block_f(int npix, const float* x, const float* w, float* y,
                              const float* bias, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t ks,
                              Py_ssize_t w_row, Py_ssize_t w_col, Py_ssize_t unused, Py_ssize_t y_pix,
                              Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_depthwise_block_d(int npix, const double* x, const double* w, double* y,
                              const double* bias, Py_ssize_t nc, Py_ssize_t kh, Py_ssize_t ks,
                              Py_ssize_t w_row, Py_ssize_t w_col, Py_ssize_t unused, Py_ssize_t y_pix,
                              Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_depthwise3_run_f(Py_ssize_t npix, Py_ssize_t C, const float* x, const float* w,
                             float* y, const float* bias, Py_ssize_t w_row, Py_ssize_t w_col,
                             Py_ssize_t y_pix, Py_ssize_t x_pix, Py_ssize_t x_row,
                             Py_ssize_t x_col) noexcept nogil
    void fc_depthwise3_run_d(Py_ssize_t npix, Py_ssize_t C, const double* x, const double* w,
                             double* y, const double* bias, Py_ssize_t w_row, Py_ssize_t w_col,
                             Py_ssize_t y_pix, Py_ssize_t x_pix, Py_ssize_t x_row,
                             Py_ssize_t x_col) noexcept nogil
    void fc_depthwise_run_f(Py_ssize_t npix, Py_ssize_t C, const float* x, const float* w,
                            float* y, const float* bias, Py_ssize_t kh, Py_ssize_t ks,
                            Py_ssize_t w_row, Py_ssize_t w_col, Py_ssize_t y_pix,
                            Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_depthwise_run_d(Py_ssize_t npix, Py_ssize_t C, const double* x, const double* w,
                            double* y, const double* bias, Py_ssize_t kh, Py_ssize_t ks,
                            Py_ssize_t w_row, Py_ssize_t w_col, Py_ssize_t y_pix,
                            Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil
    void fc_wgrad_depthwise3_f(const float* x, const float* gy, float* gw, Py_ssize_t npix,
                               Py_ssize_t nr, Py_ssize_t ns, Py_ssize_t x_pix, Py_ssize_t x_row,
                               Py_ssize_t x_col, Py_ssize_t y_pix, Py_ssize_t g_row,
                               Py_ssize_t g_col) noexcept nogil
    void fc_wgrad_depthwise3_d(const double* x, const double* gy, double* gw, Py_ssize_t npix,
                               Py_ssize_t nr, Py_ssize_t ns, Py_ssize_t x_pix, Py_ssize_t x_row,
                               Py_ssize_t x_col, Py_ssize_t y_pix, Py_ssize_t g_row,
                               Py_ssize_t g_col) noexcept nogil
    void fc_stream_copy(void* dst, const void* src, size_t nbytes) noexcept nogil
    void fc_store_fence() noexcept nogil
    void fc_wgrad_dense_block_f(const float* x, const float* gy, float* gw, Py_ssize_t npix,
                                Py_ssize_t x_pix, Py_ssize_t y_pix, Py_ssize_t w_ci) noexcept nogil
    void fc_wgrad_dense_block_d(const double* x, const double* gy, double* gw, Py_ssize_t npix,
                                Py_ssize_t x_pix, Py_ssize_t y_pix, Py_ssize_t w_ci) noexcept nogil
    void fc_wgrad_depthwise_block_f(const float* x, const float* gy, float* gw, Py_ssize_t npix,
                                    Py_ssize_t x_pix, Py_ssize_t y_pix) noexcept nogil
    void fc_wgrad_depthwise_block_d(const double* x, const double* gy, double* gw,
                                    Py_ssize_t npix, Py_ssize_t x_pix, Py_ssize_t y_pix) noexcept nogil


# the blocked kernel's register block, for depthwise_pointwise's 1x1
from fastconv._kernels._blocked_block cimport (
    FC_BLK_PIX_MAX, FC_BLK_NV, FC_BLK_OB_F, FC_BLK_OB_D, FC_BLK_PIX,
    fc_blk_chain_in_registers_f32, fc_blk_chain_in_registers_f64, fc_blocked_f, fc_blocked_d)


ISA = FC_ISA.decode()
# conv_forward wants each group's output channels in the weight (and a depthwise input's
# channels) padded to a multiple of this, so that whole-vector loads stay inside the arrays
CHANNEL_BLOCK = {"float32": FC_CB_F, "float64": FC_CB_D}
# depthwise_pointwise wants the 1x1 weight packed in blocks of this many output channels
# (_blocked.OUT_BLOCK of the same instruction set)
POINTWISE_BLOCK = {"float32": FC_BLK_OB_F, "float64": FC_BLK_OB_D}


cdef inline void _scalar_block(const floating* x, const floating* w, floating* y,
                               const floating* bias, Py_ssize_t npix, Py_ssize_t nc,
                               bint depthwise, Py_ssize_t kh, Py_ssize_t ks, Py_ssize_t kw,
                               Py_ssize_t cig, Py_ssize_t w_ci, Py_ssize_t y_pix,
                               Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil:
    """A block one element at a time, for compilers without vector extensions:
    y[p, c] = bias[c] + sum_{r<kh, s<ks, ci} x[p*x_pix + r*x_row + s*x_col + ci] * w[r, s, ci, c]
    (depthwise: ci runs with c, one input channel per output channel)."""
    cdef Py_ssize_t p, c, r, s, ci
    cdef const floating* xt
    cdef floating acc
    for p in range(npix):
        for c in range(nc):
            acc = bias[c] if bias != NULL else 0
            for r in range(kh):
                for s in range(ks):
                    xt = x + p * x_pix + r * x_row + s * x_col
                    if depthwise:
                        acc = acc + xt[c] * w[(r * kw + s) * w_ci + c]
                    else:
                        for ci in range(cig):
                            acc = acc + xt[ci] * w[((r * kw + s) * cig + ci) * w_ci + c]
            y[p * y_pix + c] = acc


cdef inline void _block(const floating* x, const floating* w, floating* y, const floating* bias,
                        Py_ssize_t npix, Py_ssize_t nc, bint depthwise,
                        Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t s0, Py_ssize_t ns,
                        Py_ssize_t kw, Py_ssize_t cig, Py_ssize_t w_ci, Py_ssize_t y_pix,
                        Py_ssize_t x_pix, Py_ssize_t x_row, Py_ssize_t x_col) noexcept nogil:
    """One register block over the taps [r0, r0+nr) x [s0, s0+ns) (the others fall in the zero
    padding); x points at tap (r0, s0) of the first pixel, w at tap (0, 0) of the block's
    first output channel."""
    w = w + (r0 * kw + s0) * cig * w_ci
    if not FC_HAVE_VECTORS:
        _scalar_block(x, w, y, bias, npix, nc, depthwise, nr, ns, kw, cig, w_ci, y_pix, x_pix,
                      x_row, x_col)
    elif floating is float:
        if depthwise:
            fc_depthwise_block_f(npix, x, w, y, bias, nc, nr, ns, kw * w_ci, w_ci, 0, y_pix, x_pix,
                                 x_row, x_col)
        else:
            fc_dense_block_f(npix, x, w, y, bias, nc, nr, ns, kw, cig, w_ci, y_pix, x_pix, x_row,
                             x_col)
    else:
        if depthwise:
            fc_depthwise_block_d(npix, x, w, y, bias, nc, nr, ns, kw * w_ci, w_ci, 0, y_pix, x_pix,
                                 x_row, x_col)
        else:
            fc_dense_block_d(npix, x, w, y, bias, nc, nr, ns, kw, cig, w_ci, y_pix, x_pix, x_row,
                             x_col)


cdef inline void _gather_window(const floating* x, floating* out, Py_ssize_t ih, Py_ssize_t nr,
                                Py_ssize_t dh, Py_ssize_t iw, Py_ssize_t npix, Py_ssize_t sw,
                                Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t span, bint by_tap,
                                Py_ssize_t W, Py_ssize_t C) noexcept nogil:
    """A block's receptive field, rows ih + rr*dh for rr < nr, with its zero padding made
    explicit (zero where a column falls outside [0, W)):
    - by_tap: only the columns the taps read, out[rr, p, s, :] = x[., iw + p*sw + s*dw, :]
      for p < npix, s < kw (rows FC_PB*kw pixels apart): bounded by the block's work
      however large the stride or dilation;
    - otherwise every column of the block's span, out[rr, j, :] = x[., iw + j, :] for
      j < span: fewer copies when the taps overlap (small stride and dilation)."""
    cdef Py_ssize_t rr, j, c, col, n_cols = npix * kw if by_tap else span
    cdef Py_ssize_t row_len = FC_PB * kw if by_tap else span
    cdef const floating* src
    cdef floating* dst
    for rr in range(nr):
        for j in range(n_cols):
            dst = out + (rr * row_len + j) * C
            col = iw + (j // kw) * sw + (j % kw) * dw if by_tap else iw + j
            if 0 <= col < W:
                src = x + ((ih + rr * dh) * W + col) * C
                for c in range(C):
                    dst[c] = src[c]
            else:
                for c in range(C):
                    dst[c] = 0


cdef inline void _segment(const floating* x, Py_ssize_t x_row, const floating* w,
                          const floating* bias, floating* y, Py_ssize_t npix, Py_ssize_t r0,
                          Py_ssize_t nr, Py_ssize_t s0, Py_ssize_t ns, Py_ssize_t n_groups,
                          Py_ssize_t width, Py_ssize_t cog, Py_ssize_t cog_padded, Py_ssize_t cb,
                          bint depthwise, Py_ssize_t kw, Py_ssize_t cig, Py_ssize_t w_ci,
                          Py_ssize_t y_pix, Py_ssize_t x_pix, Py_ssize_t x_col) noexcept nogil:
    """npix output pixels from y on, all groups and channel blocks, over the taps
    [r0, r0+nr) x [s0, s0+ns); x points at tap (r0, s0) of the first pixel, channel 0 (NULL
    when no tap lands inside the input: y = bias)."""
    cdef Py_ssize_t g, c_block, c0, w0
    for g in range(n_groups):
        for c_block in range((width + cb - 1) // cb):
            c0 = g * cog + c_block * cb          # first output channel of the block
            w0 = g * cog_padded + c_block * cb   # its column in w and bias
            _block(x + (c0 if depthwise else g * cig) if x != NULL else x, w + w0, y + c0,
                   bias + w0 if bias != NULL else NULL, npix, min(cb, width - c_block * cb),
                   depthwise, r0, nr if x != NULL else 0, s0, ns, kw, cig, w_ci, y_pix, x_pix,
                   x_row, x_col)


cdef inline void _depthwise3_run(const floating* x, const floating* w, const floating* bias,
                                 floating* y, Py_ssize_t npix, Py_ssize_t C, Py_ssize_t w_ci,
                                 Py_ssize_t y_pix, Py_ssize_t x_pix, Py_ssize_t x_row,
                                 Py_ssize_t x_col) noexcept nogil:
    """y[p, c] = bias[c] + sum_{r, s < 3} x[p*x_pix + r*x_row + s*x_col + c] * w[r, s, c] for
    p < npix, c < C: a 3 x 3 depthwise weight (3, 3, 1, w_ci), every tap inside x."""
    if floating is float:
        fc_depthwise3_run_f(npix, C, x, w, y, bias, 3 * w_ci, w_ci, y_pix, x_pix, x_row, x_col)
    else:
        fc_depthwise3_run_d(npix, C, x, w, y, bias, 3 * w_ci, w_ci, y_pix, x_pix, x_row, x_col)


cdef struct _Rows:
    # what every output row of one conv_forward call shares (_row computes one): x's and
    # the weight's shape, y's pixel pitch, the geometry and the choices made from it
    Py_ssize_t H, W, C, kh, kw, cig, w_ci, Wo, Cout, y_pix, cog, cog_padded, n_groups, width
    Py_ssize_t x_pix, x_col, cb, inner_lo, inner_hi, span, window_cols
    Py_ssize_t top, left, sh, sw, dh, dw
    bint depthwise, by_tap, run3, exact


cdef int _check_geometry(Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t groups) except -1:
    """A stride, dilation or group count below 1, a division by zero further on (the kernels
    divide without checks), as a ValueError."""
    if min(sh, sw, dh, dw, groups) < 1:
        raise ValueError(f"stride, dilation and groups must be >= 1, got stride ({sh}, {sw}), "
                         f"dilation ({dh}, {dw}) and groups {groups}")
    return 0


cdef int _rows_of(_Rows* g, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t kh,
                  Py_ssize_t kw, Py_ssize_t cig, Py_ssize_t w_ci, Py_ssize_t Wo,
                  Py_ssize_t Cout, Py_ssize_t y_pix, Py_ssize_t groups, Py_ssize_t top,
                  Py_ssize_t left, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                  bint exact, Py_ssize_t cb) except -1:
    """Fills g for the rows of a convolution (see conv_forward); _check_geometry's
    ValueError first."""
    _check_geometry(sh, sw, dh, dw, groups)
    g.H, g.W, g.C, g.kh, g.kw, g.cig, g.w_ci, g.Wo, g.Cout, g.y_pix = \
        H, W, C, kh, kw, cig, w_ci, Wo, Cout, y_pix
    g.top, g.left, g.sh, g.sw, g.dh, g.dw, g.exact, g.cb = top, left, sh, sw, dh, dw, exact, cb
    g.cog = Cout // groups
    g.cog_padded = w_ci // groups
    # depthwise: one "group" as wide as all channels, x indexed along with the output channel
    # (a single channel, groups = 1, runs as dense: its input is not widened to a vector)
    g.depthwise = cig == 1 and g.cog == 1 and groups > 1
    g.n_groups = 1 if g.depthwise else groups
    g.width = Cout if g.depthwise else g.cog
    g.x_pix = sw * C
    g.x_col = dw * C
    # output columns whose taps all lie inside x: [inner_lo, inner_hi)
    # (left < 0: an input gradient's phase that crops x; then every column starts inside)
    g.inner_lo = min(Wo, max(0, left + sw - 1) // sw)
    g.inner_hi = g.inner_lo if W - 1 + left - (kw - 1) * dw < 0 else \
        max(g.inner_lo, min(Wo, (W - 1 + left - (kw - 1) * dw) // sw + 1))
    # input columns one block of pixels spans; when the taps read fewer (a large stride or
    # dilation), the padded window holds only those, so its size is bounded by the work
    g.span = (FC_PB - 1) * sw + (kw - 1) * dw + 1
    g.by_tap = FC_PB * kw < g.span
    g.window_cols = FC_PB * kw if g.by_tap else g.span
    g.run3 = g.depthwise and kh == 3 and kw == 3 and FC_HAVE_VECTORS
    return 0


cdef inline void _row(const _Rows* g, const floating* x_img, const floating* w,
                      const floating* bias, floating* y_lo, floating* window,
                      Py_ssize_t oh, Py_ssize_t ow_lo, Py_ssize_t ow_hi) noexcept nogil:
    """Columns [ow_lo, ow_hi) of output row oh of one image (x_img: its input), column ow_lo
    at y_lo and the next ones g.y_pix apart (window: the thread's buffer of
    kh * window_cols * C values)."""
    cdef Py_ssize_t H = g.H, W = g.W, C = g.C, kw = g.kw, Wo = g.Wo, y_pix = g.y_pix
    cdef Py_ssize_t sw = g.sw, dh = g.dh, dw = g.dw, left = g.left
    cdef Py_ssize_t inner_lo = g.inner_lo, inner_hi = g.inner_hi
    cdef Py_ssize_t ih, r0, nr, ow, iw, npix, p, s0, ns, run_lo, run_hi, end
    cdef floating* y_blk
    ih = oh * g.sh - g.top  # input row of tap 0
    r0 = _first_tap(ih, dh)
    nr = max(0, _end_tap(ih, dh, g.kh, H) - r0)
    # a 3 x 3 depthwise row with all its taps inside x: the columns whose taps all
    # lie inside x in one run with the taps unrolled, the few edge columns one pixel
    # at a time over their taps inside x (cheaper than copying a padded window)
    run_lo = max(inner_lo, ow_lo)
    run_hi = min(inner_hi, ow_hi)
    if not (g.run3 and nr == 3 and run_hi - run_lo >= FC_PB):
        run_lo = 0
        run_hi = 0
    else:
        _depthwise3_run(x_img + (ih * W + run_lo * sw - left) * C, w, bias,
                        y_lo + (run_lo - ow_lo) * y_pix, run_hi - run_lo, g.Cout, g.w_ci, y_pix,
                        g.x_pix, dh * W * C, g.x_col)
    ow = ow_lo
    while ow < ow_hi:
        if ow == run_lo and run_hi > run_lo:
            ow = run_hi
            continue
        if g.depthwise:  # blocks inside or outside the inner columns, never across:
            # a depthwise block's padded window would be a copy as large as its work
            end = inner_lo if ow < inner_lo else inner_hi if ow < inner_hi else Wo
        else:
            end = run_lo if ow < run_lo else Wo
        npix = min(<Py_ssize_t> FC_PB, min(end, ow_hi) - ow)
        iw = ow * sw - left  # input column of the block's first tap
        y_blk = y_lo + (ow - ow_lo) * y_pix
        if inner_lo <= ow and ow + npix <= inner_hi or nr == 0:
            _segment(x_img + ((ih + r0 * dh) * W + iw) * C if nr > 0 else NULL,
                     dh * W * C, w, bias, y_blk, npix, r0, nr, 0, kw,
                     g.n_groups, g.width, g.cog, g.cog_padded, g.cb, g.depthwise, kw, g.cig,
                     g.w_ci, y_pix, g.x_pix, g.x_col)
        elif not g.exact and run_hi == 0 and not g.depthwise:  # it reaches into the padding
            _gather_window(x_img, window, ih + r0 * dh, nr, dh, iw, npix, sw, kw, dw, g.span,
                           g.by_tap, W, C)
            _segment(window, g.window_cols * C, w, bias, y_blk, npix, r0, nr, 0, kw, g.n_groups,
                     g.width, g.cog, g.cog_padded, g.cb, g.depthwise, kw, g.cig, g.w_ci, y_pix,
                     kw * C if g.by_tap else g.x_pix, C if g.by_tap else g.x_col)
        else:  # pixel by pixel, each with the columns of taps that land inside x
            for p in range(npix):
                s0 = _first_tap(iw + p * sw, dw)
                ns = max(0, _end_tap(iw + p * sw, dw, kw, W) - s0)
                _segment(x_img + ((ih + r0 * dh) * W + iw + p * sw + s0 * dw) * C
                         if nr > 0 and ns > 0 else NULL,
                         dh * W * C, w, bias, y_blk + p * y_pix, 1, r0, nr, s0, ns,
                         g.n_groups, g.width, g.cog, g.cog_padded, g.cb, g.depthwise, kw,
                         g.cig, g.w_ci, y_pix, g.x_pix, g.x_col)
        ow = ow + npix


def conv_forward(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_x), unpadded
                 const floating[:, :, :, ::1] w,   # IN  (kh, kw, cig, groups * cog_padded)
                 const floating[::1] bias,         # IN  (groups * cog_padded,), or (0,) for none
                 floating[:, :, :, :] y,           # OUT (N, Ho, Wo, C_out), channels contiguous
                 Py_ssize_t top, Py_ssize_t left,  # zero padding before the first row / column
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t groups, bint exact, bint stream, Epilogue post, int num_threads):
    """y = conv(x, w) + bias, then `post`'s chain (None: none) on each output row once it is
    computed. Each thread takes whole output rows; within a row, blocks of up to FC_PB pixels x one
    vector of output channels are accumulated in registers over all taps and input channels.

    Zero padding is implicit: output pixel (oh, ow), tap (r, s) reads
    x[oh*sh + r*dh - top, ow*sw + s*dw - left], and no padded copy of x is made. Rows of taps
    that fall outside x are skipped; a block of pixels whose columns of taps reach outside x
    first copies its receptive field (only the columns its taps read, when a large stride
    or dilation leaves gaps between them: the buffer stays as small as the block's work)
    into a small zero-padded buffer of its thread — unless
    `exact`: then its pixels run one by one over the taps inside x, so that taps in the
    padding contribute nothing even where a weight is NaN or infinite (0 * inf is NaN).
    y's shape says how far the output goes. `stream` (y C-contiguous): each row is computed
    into a buffer and written out with non-temporal stores (for an output far larger than
    the caches: no read of each line before it is written).
    Each group's output channels are padded in w and bias to cog_padded (a multiple of
    CHANNEL_BLOCK); only y's C_out = groups * cog channels are written. Depthwise (cig = 1,
    cog = 1, groups > 1): w is (kh, kw, 1, C_padded) and x has C_x = C_padded >= C_out
    channels too.
    Returns 0, or 1 when a scratch buffer could not be allocated.
    """
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], Cout = y.shape[3]
    cdef Py_ssize_t cb = (FC_CB_F if floating is float else FC_CB_D) if FC_HAVE_VECTORS else 1
    cdef _Rows g
    # y_pix: y may be a strided view; a row streamed out is made in a contiguous buffer
    _rows_of(
        &g, x.shape[1], x.shape[2], C, w.shape[0], w.shape[1], w.shape[2], w.shape[3], Wo,
        Cout, Cout if stream else y.strides[2] // sizeof(floating), groups, top, left, sh, sw,
        dh, dw, exact, cb)
    cdef Py_ssize_t row, n, oh
    cdef bint has_bias = bias.shape[0] > 0
    cdef const void* chain = chain_of(post, sizeof(floating), N * Ho * Wo, Cout)
    cdef floating* window = NULL
    cdef floating* buf = NULL
    cdef floating* y_row
    cdef int status = 0
    cdef int* failed = &status
    if N * Ho * Wo == 0:
        return 0
    if share_items(&share, N * Ho, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        window = <floating*> malloc(g.kh * g.window_cols * C * sizeof(floating))
        buf = <floating*> malloc(Wo * Cout * sizeof(floating) + 64) if stream else NULL
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for row in range(share_first, share_end):
                if window == NULL or (stream and buf == NULL):
                    failed[0] = 1
                    continue
                n = row // Ho
                oh = row % Ho
                # the row: straight into y, or into an aligned buffer streamed out after
                y_row = <floating*> (<char*> buf + (-<size_t> buf) % 64) if stream else &y[n, oh, 0, 0]
                _row(&g, &x[n, 0, 0, 0], &w[0, 0, 0, 0], &bias[0] if has_bias else NULL, y_row,
                     window, oh, 0, Wo)
                chain_span(chain, y_row, row * Wo, Wo, g.y_pix, 0, Cout)
                if stream:
                    fc_stream_copy(&y[n, oh, 0, 0], y_row, Wo * Cout * sizeof(floating))
        if stream:
            fc_store_fence()
        free(buf)
        free(window)
    free(share.taken)
    return status


cdef inline void _pointwise_row(const floating* a, Py_ssize_t a_pix, Py_ssize_t C,
                                Py_ssize_t npix_row, const floating* wp, Py_ssize_t n_ob,
                                Py_ssize_t ob, const floating* bias, floating* y,
                                Py_ssize_t Cout, Py_ssize_t y_pix, const void* in_registers,
                                const void* chain, Py_ssize_t pixel0, const floating** xp,
                                floating** outp) noexcept nogil:
    """y[p*y_pix + co] = bias[co] + sum_{c < C} a[p*a_pix + c] * w[c, co] for co < Cout and
    the npix_row pixels of a row, w packed as the blocked kernel's 1 x 1 weight (n_ob blocks of
    C x ob); the chain (pixels from pixel0 on) in the register blocks' stores when
    in_registers, else after them. Block by block of output channels, so that each block's
    weight serves the whole row while in cache. xp, outp: FC_BLK_PIX_MAX pointers each."""
    cdef Py_ssize_t vl = ob // FC_BLK_NV  # lanes per vector
    cdef Py_ssize_t b, nc, np_max, n_blocks, blk, pix, npix, p, c, co
    cdef const floating* wb
    cdef floating acc
    for b in range(n_ob):
        nc = min(ob, Cout - b * ob)
        wb = wp + b * C * ob
        np_max = FC_BLK_PIX((nc + vl - 1) // vl) if FC_HAVE_VECTORS else FC_BLK_PIX_MAX
        n_blocks = (npix_row + np_max - 1) // np_max
        for blk in range(n_blocks):  # blocks of equal size (within one)
            pix = blk * npix_row // n_blocks
            npix = (blk + 1) * npix_row // n_blocks - pix
            for p in range(npix):
                xp[p] = a + (pix + p) * a_pix
                outp[p] = y + (pix + p) * y_pix + b * ob
            if not FC_HAVE_VECTORS:
                for p in range(npix):
                    for co in range(nc):
                        acc = bias[b * ob + co] if bias != NULL else 0
                        for c in range(C):
                            acc = acc + xp[p][c] * wb[c * ob + co]
                        outp[p][co] = acc
            elif floating is float:
                fc_blocked_f(<int> npix, xp, wb, 1, C, C * ob,
                             bias + b * ob if bias != NULL else NULL, 0, outp, nc,
                             <const fc_postops_f32*> in_registers, pixel0 + pix, b * ob, 0)
            else:
                fc_blocked_d(<int> npix, xp, wb, 1, C, C * ob,
                             bias + b * ob if bias != NULL else NULL, 0, outp, nc,
                             <const fc_postops_f64*> in_registers, pixel0 + pix, b * ob, 0)
            if in_registers == NULL:
                chain_span(chain, outp[0], pixel0 + pix, npix, y_pix, b * ob, nc)


def depthwise_pointwise(const floating[:, :, :, ::1] x,          # IN  (N, H, W, C_padded)
                        const floating[:, :, :, ::1] w,          # IN  (kh, kw, 1, C_padded)
                        const floating[::1] bias,                # IN  (C_padded,), or (0,)
                        Epilogue post,
                        const floating[:, :, :, :, :, ::1] wp,   # IN  (1, n_ob, 1, 1, C, OB)
                        const floating[:, ::1] pw_bias,          # IN  (1, n_ob * OB), or (0, 0)
                        floating[:, :, :, ::1] y,                # OUT (N, Ho, Wo, C_out)
                        Py_ssize_t top, Py_ssize_t left,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                        Epilogue pw_post, Py_ssize_t item_pixels, int num_threads):
    """y = a 1 x 1 convolution of the output of a depthwise convolution of x, without that
    output in memory: a thread computes a run of at most item_pixels consecutive output
    pixels of one image (row-major; each image in as many equal runs as that takes, or more
    so that the threads get as many runs each) of the depthwise convolution (as
    conv_forward would, its C = wp.shape[4] channels, `post`'s chain on them) into a
    buffer of its own, and at once the 1 x 1 convolution of that run (the blocked kernel's
    register block; wp and pw_bias packed as _blocked.conv_forward takes them, for one
    group, and `pw_post`'s chain) into y's row. y's shape is the depthwise output's (Ho,
    Wo) with C_out channels. x has C_padded channels (the depthwise weight's, a multiple
    of CHANNEL_BLOCK, zeros beyond C); taps in the zero padding are skipped, as conv_forward
    skips them for a depthwise convolution in either mode (so a NaN or infinite depthwise
    weight adds nothing there: its exact mode's result). Each output value is computed by one thread in a fixed order: the result does
    not depend on the thread count.
    Returns 0, or 1 when a scratch buffer could not be allocated."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = x.shape[0], Cp = x.shape[3], C = wp.shape[4]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], Cout = y.shape[3]
    cdef Py_ssize_t n_ob = wp.shape[1], ob = wp.shape[5]
    cdef Py_ssize_t cb = (FC_CB_F if floating is float else FC_CB_D) if FC_HAVE_VECTORS else 1
    cdef Py_ssize_t block = FC_BLK_OB_F if floating is float else FC_BLK_OB_D
    if (y.shape[0] != N or Cp % cb or w.shape[2] != 1 or w.shape[3] != Cp or C > Cp
            or bias.shape[0] not in (0, Cp)
            or wp.shape[0] != 1 or wp.shape[2] != 1 or wp.shape[3] != 1
            or n_ob * ob < Cout or ob != block
            or pw_bias.shape[0] not in (0, 1) or pw_bias.shape[0] * pw_bias.shape[1] not in (
                0, n_ob * ob)):
        raise ValueError("depthwise_pointwise: the weights do not match x and y")
    if item_pixels < 1 or num_threads < 1:
        raise ValueError(f"depthwise_pointwise: item_pixels and num_threads must be >= 1, got "
                         f"{item_pixels} and {num_threads}")
    cdef _Rows g
    _rows_of(
        &g, x.shape[1], x.shape[2], Cp, w.shape[0], w.shape[1], 1, Cp, Wo, C, Cp, C, top, left,
        sh, sw, dh, dw, False, cb)
    # each image's output pixels in runs of at most item_pixels, row-major, as many more as
    # give every thread as many runs (7 x 7 at batch 1, 2 threads: 25 + 24 pixels): a run's
    # depthwise values, made row by row, wait in the thread's buffer for the 1x1 to go
    # through them in whole register blocks
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t runs = max(1, (P + item_pixels - 1) // item_pixels)
    while (N * runs) % num_threads and runs < P:
        runs = runs + 1
    cdef Py_ssize_t run_max = (P + runs - 1) // runs
    cdef Py_ssize_t item, n, run, p0, p1, r, lo, hi
    cdef bint has_bias = bias.shape[0] > 0, has_pw_bias = pw_bias.shape[0] > 0
    cdef const void* chain = chain_of(post, sizeof(floating), N * Ho * Wo, C)
    cdef const void* pw_chain = chain_of(pw_post, sizeof(floating), N * Ho * Wo, Cout)
    cdef const void* in_registers = NULL  # pw_chain, when the register blocks apply it
    cdef floating* window = NULL
    cdef floating* buf = NULL
    cdef const floating** xp = NULL
    cdef floating** outp = NULL
    cdef floating* a
    cdef int status = 0
    cdef int* failed = &status
    if N * Ho * Wo == 0:
        return 0
    if pw_chain != NULL and FC_HAVE_VECTORS:
        if (fc_blk_chain_in_registers_f32(<const fc_postops_f32*> pw_chain) if floating is float
                else fc_blk_chain_in_registers_f64(<const fc_postops_f64*> pw_chain)):
            in_registers = pw_chain
    if share_items(&share, N * runs, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        window = <floating*> malloc(g.kh * g.window_cols * Cp * sizeof(floating))
        buf = <floating*> malloc(run_max * Cp * sizeof(floating) + 64)
        xp = <const floating**> malloc(FC_BLK_PIX_MAX * sizeof(floating*))
        outp = <floating**> malloc(FC_BLK_PIX_MAX * sizeof(floating*))
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for item in range(share_first, share_end):
                if window == NULL or buf == NULL or xp == NULL or outp == NULL:
                    failed[0] = 1
                    continue
                n = item // runs
                run = item % runs
                p0 = run * P // runs  # the run: pixels [p0, p1) of image n
                p1 = (run + 1) * P // runs
                a = <floating*> (<char*> buf + (-<size_t> buf) % 64)  # pixel p0
                for r in range(p0 // Wo, (p1 - 1) // Wo + 1):
                    lo = max(p0 - r * Wo, 0)  # the row's columns [lo, hi) in the run
                    hi = min(p1 - r * Wo, Wo)
                    _row(&g, &x[n, 0, 0, 0], &w[0, 0, 0, 0], &bias[0] if has_bias else NULL,
                         a + (r * Wo + lo - p0) * Cp, window, r, lo, hi)
                chain_span(chain, a, n * P + p0, p1 - p0, Cp, 0, C)
                _pointwise_row(a, Cp, C, p1 - p0, &wp[0, 0, 0, 0, 0, 0], n_ob, ob,
                               &pw_bias[0, 0] if has_pw_bias else NULL, &y[n, 0, 0, 0] + p0 * Cout,
                               Cout, Cout, in_registers, pw_chain, n * P + p0, xp, outp)
        free(outp)
        free(xp)
        free(buf)
        free(window)
    free(share.taken)
    return status


def expand_depthwise_pointwise(
        const floating[:, :, :, ::1] x,          # IN  (N, H, W, C_in)
        const floating[:, :, :, :, :, ::1] we,   # IN  (1, n_eb, 1, 1, C_in, OB) packed expand
        const floating[:, ::1] e_bias,           # IN  (1, n_eb * OB), or (0, 0)
        Epilogue e_post,
        const floating[:, :, :, ::1] w,          # IN  (kh, kw, 1, C_padded) depthwise
        const floating[::1] bias,                # IN  (C_padded,), or (0,)
        Epilogue post,
        const floating[:, :, :, :, :, ::1] wp,   # IN  (1, n_ob, 1, 1, C, OB) packed 1x1
        const floating[:, ::1] pw_bias,          # IN  (1, n_ob * OB), or (0, 0)
        floating[:, :, :, ::1] y,                # OUT (N, Ho, Wo, C_out)
        Py_ssize_t top, Py_ssize_t left, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh,
        Py_ssize_t dw, Epilogue pw_post, Py_ssize_t buffer_rows, int num_threads):
    """y = pointwise(depthwise(expand(x))): a 1x1 convolution of x to C channels (`we`,
    `e_bias`, `e_post`'s chain), a depthwise convolution of that (as depthwise_pointwise
    computes it: w, bias, `post`) and a 1x1 convolution of the result (wp, pw_bias,
    `pw_post`), MobileNetV2's inverted residual block, with neither intermediate in memory.
    Each image's output rows are cut into as many bands as give every thread as many; a
    thread keeps the expanded input rows that its band's depthwise rows read in a buffer of
    buffer_rows rows (>= the (kh - 1) * dh + 1 rows a depthwise row reads), expanding each
    row once within its band (the rows around a band's edge are expanded by both bands that
    read them), expanding as many rows at once as the buffer or the band allow, and each
    depthwise output row goes at once through the 1x1 into y. The
    arithmetic of each value is the blocked kernel's (expand, 1x1) and the direct kernel's
    (depthwise), in a fixed order: the result does not depend on the thread count.
    y must not overlap x (rows of x are expanded after rows of y are written).
    Returns 0, or 1 when a scratch buffer could not be allocated."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], Cin = x.shape[3]
    cdef Py_ssize_t Cp = w.shape[3], C = wp.shape[4], kh = w.shape[0]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], Cout = y.shape[3]
    cdef Py_ssize_t n_eb = we.shape[1], n_ob = wp.shape[1], ob = wp.shape[5]
    cdef Py_ssize_t cb = (FC_CB_F if floating is float else FC_CB_D) if FC_HAVE_VECTORS else 1
    cdef Py_ssize_t block = FC_BLK_OB_F if floating is float else FC_BLK_OB_D
    cdef Py_ssize_t span = (kh - 1) * dh + 1  # input rows a depthwise output row reads
    if (y.shape[0] != N or Cp % cb or w.shape[2] != 1 or C > Cp
            or bias.shape[0] not in (0, Cp)
            or we.shape[0] != 1 or we.shape[2] != 1 or we.shape[3] != 1 or we.shape[4] != Cin
            or n_eb * we.shape[5] < C or we.shape[5] != block
            or e_bias.shape[0] not in (0, 1) or e_bias.shape[0] * e_bias.shape[1] not in (
                0, n_eb * block)
            or wp.shape[0] != 1 or wp.shape[2] != 1 or wp.shape[3] != 1
            or n_ob * ob < Cout or ob != block
            or pw_bias.shape[0] not in (0, 1) or pw_bias.shape[0] * pw_bias.shape[1] not in (
                0, n_ob * ob)):
        raise ValueError("expand_depthwise_pointwise: the weights do not match x and y")
    if buffer_rows < span or num_threads < 1:
        raise ValueError(f"expand_depthwise_pointwise: buffer_rows must be >= {span} and "
                         f"num_threads >= 1, got {buffer_rows} and {num_threads}")
    # a row read lies in x: more than H rows are never needed (nor allocated)
    buffer_rows = min(buffer_rows, H)
    cdef _Rows g
    _rows_of(&g, H, W, Cp, kh, w.shape[1], 1, Cp, Wo, C, Cp, C, top, left, sh, sw, dh, dw,
             False, cb)
    # bands of output rows: as many per image as give every thread as many
    cdef Py_ssize_t bands = 1
    while (N * bands) % num_threads and bands < Ho:
        bands = bands + 1
    cdef Py_ssize_t item, n, band, oh, oh_end, band_end, ih0, lo, hi, e_lo, e_hi, e_end
    cdef Py_ssize_t e_row = W * Cp  # values per expanded row
    cdef bint has_bias = bias.shape[0] > 0, has_pw_bias = pw_bias.shape[0] > 0
    cdef bint has_e_bias = e_bias.shape[0] > 0
    cdef const void* e_chain = chain_of(e_post, sizeof(floating), N * H * W, C)
    cdef const void* chain = chain_of(post, sizeof(floating), N * Ho * Wo, C)
    cdef const void* pw_chain = chain_of(pw_post, sizeof(floating), N * Ho * Wo, Cout)
    cdef const void* e_in_registers = NULL  # e_chain, when the register blocks apply it
    cdef const void* in_registers = NULL  # pw_chain, likewise
    cdef _Rows* rows = NULL  # the thread's copy of g, its rows those of the buffer
    cdef floating* window = NULL
    cdef floating* e_buf = NULL
    cdef floating* buf = NULL
    cdef const floating** xp = NULL
    cdef floating** outp = NULL
    cdef floating* e
    cdef floating* a
    cdef int status = 0
    cdef int* failed = &status
    if N * Ho * Wo == 0:
        return 0
    if FC_HAVE_VECTORS:
        if e_chain != NULL and (
                fc_blk_chain_in_registers_f32(<const fc_postops_f32*> e_chain) if floating is float
                else fc_blk_chain_in_registers_f64(<const fc_postops_f64*> e_chain)):
            e_in_registers = e_chain
        if pw_chain != NULL and (
                fc_blk_chain_in_registers_f32(<const fc_postops_f32*> pw_chain) if floating is float
                else fc_blk_chain_in_registers_f64(<const fc_postops_f64*> pw_chain)):
            in_registers = pw_chain
    if share_items(&share, N * bands, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        rows = <_Rows*> malloc(sizeof(_Rows))
        window = <floating*> malloc(g.kh * g.window_cols * Cp * sizeof(floating))
        # zeros: the channels from C to Cp are never written (the depthwise rows read them)
        e_buf = <floating*> calloc(buffer_rows * e_row * sizeof(floating) + 64, 1)
        buf = <floating*> malloc(Wo * Cp * sizeof(floating) + 64)
        xp = <const floating**> malloc(FC_BLK_PIX_MAX * sizeof(floating*))
        outp = <floating**> malloc(FC_BLK_PIX_MAX * sizeof(floating*))
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for item in range(share_first, share_end):
                if (rows == NULL or window == NULL or e_buf == NULL or buf == NULL or xp == NULL
                        or outp == NULL):
                    failed[0] = 1
                    continue
                n = item // bands
                band = item % bands
                e = <floating*> (<char*> e_buf + (-<size_t> e_buf) % 64)
                a = <floating*> (<char*> buf + (-<size_t> buf) % 64)
                rows[0] = g
                e_lo = 0  # the buffer holds expanded rows [e_lo, e_hi) of image n
                e_hi = 0
                oh_end = (band + 1) * Ho // bands
                band_end = min((oh_end - 1) * sh - top + span, H)  # the band reads rows below it
                for oh in range(band * Ho // bands, oh_end):
                    ih0 = oh * sh - top
                    lo = max(ih0, 0)  # the input rows this output row reads: [lo, hi)
                    hi = min(ih0 + span, H)
                    if hi > e_lo + buffer_rows:  # no room: keep the rows from lo on, at the start
                        if lo < e_hi:
                            memmove(e, e + (lo - e_lo) * e_row, (e_hi - lo) * e_row * sizeof(floating))
                        else:
                            e_hi = lo
                        e_lo = lo
                    if e_hi < lo:
                        e_lo = lo
                        e_hi = lo
                    if hi > e_hi:  # expand the rows up to the buffer's or the band's end at once:
                        # rows lie one after the other in x and in the buffer, and the more
                        # pixels a pass over the expand weight serves, the fewer passes
                        e_end = min(e_lo + buffer_rows, band_end)
                        _pointwise_row(&x[n, e_hi, 0, 0], Cin, Cin, (e_end - e_hi) * W,
                                       &we[0, 0, 0, 0, 0, 0], n_eb, block,
                                       &e_bias[0, 0] if has_e_bias else NULL,
                                       e + (e_hi - e_lo) * e_row, C, Cp, e_in_registers, e_chain,
                                       (n * H + e_hi) * W, xp, outp)
                        e_hi = e_end
                    # the depthwise row reads the buffer as an image of rows [e_lo, e_hi):
                    # the rows outside are outside x or not read by this output row
                    rows[0].H = max(e_hi - e_lo, 0)
                    rows[0].top = top + e_lo
                    _row(rows, e, &w[0, 0, 0, 0], &bias[0] if has_bias else NULL, a, window, oh,
                         0, Wo)
                    chain_span(chain, a, (n * Ho + oh) * Wo, Wo, Cp, 0, C)
                    _pointwise_row(a, Cp, C, Wo, &wp[0, 0, 0, 0, 0, 0], n_ob, ob,
                                   &pw_bias[0, 0] if has_pw_bias else NULL, &y[n, oh, 0, 0], Cout,
                                   Cout, in_registers, pw_chain, (n * Ho + oh) * Wo, xp, outp)
        free(outp)
        free(xp)
        free(buf)
        free(e_buf)
        free(window)
        free(rows)
    free(share.taken)
    return status


cdef inline void _wgrad_depthwise_pixels(const floating* xp, const floating* gyp, floating* gwp,
                                        Py_ssize_t npix, Py_ssize_t nc, Py_ssize_t x_pix,
                                        Py_ssize_t C) noexcept nogil:
    """gwp[c] += sum_{p < npix} xp[p*x_pix + c] * gyp[p*C + c] for c < nc (one vector)."""
    cdef Py_ssize_t p, c
    cdef floating acc
    if npix <= 0:
        return
    if floating is float and FC_HAVE_VECTORS and nc == FC_CB_F:
        fc_wgrad_depthwise_block_f(xp, gyp, gwp, npix, x_pix, C)
    elif floating is double and FC_HAVE_VECTORS and nc == FC_CB_D:
        fc_wgrad_depthwise_block_d(xp, gyp, gwp, npix, x_pix, C)
    else:
        for c in range(nc):
            acc = 0
            for p in range(npix):
                acc = acc + gyp[p * C + c] * xp[p * x_pix + c]
            gwp[c] += acc


cdef inline void _wgrad_depthwise_row(const floating* x, const floating* gy, floating* gw,
                                      Py_ssize_t ih0, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                                      Py_ssize_t Wo, Py_ssize_t kh, Py_ssize_t kw,
                                      Py_ssize_t left, Py_ssize_t sw, Py_ssize_t dh,
                                      Py_ssize_t dw) noexcept nogil:
    """One output row's share of a depthwise weight gradient (x: the image, gy: the row, gw:
    (kh, kw, 1, C), ih0: the input row of tap 0): kernels up to 3 x 3 sum all their taps in
    one pass over the pixels whose taps all land inside x (fc_wgrad_depthwise3), the other
    pixels and kernels tap by tap over the pixels where the tap lands inside x."""
    cdef Py_ssize_t cb = (FC_CB_F if floating is float else FC_CB_D) if FC_HAVE_VECTORS else 1
    cdef Py_ssize_t x_pix = sw * C
    cdef Py_ssize_t r_lo = _first_tap(ih0, dh), r_hi = _end_tap(ih0, dh, kh, H)
    # the pixels whose kw taps all land inside x: [p_lo, p_hi)
    cdef Py_ssize_t p_lo = min(Wo, _first_tap(-left, sw))
    cdef Py_ssize_t p_hi = max(p_lo, _end_tap(-left + (kw - 1) * dw, sw, Wo, W))
    cdef bint three = FC_HAVE_VECTORS and kh <= 3 and kw <= 3 and p_hi > p_lo and r_hi > r_lo
    cdef Py_ssize_t co_block, co0, nc, a, b, r, s, iw, ow0, ow1
    cdef const floating* xr
    for co_block in range((C + cb - 1) // cb):
        co0 = co_block * cb
        nc = min(cb, C - co0)
        a = 0  # [a, b): the pixels summed by the 3 x 3 pass
        b = 0
        if three and nc == cb:
            a = p_lo
            b = p_hi
            xr = x + ((ih0 + r_lo * dh) * W + p_lo * sw - left) * C + co0
            if floating is float:
                fc_wgrad_depthwise3_f(xr, gy + p_lo * C + co0, gw + r_lo * kw * C + co0, b - a,
                                      r_hi - r_lo, kw, x_pix, dh * W * C, dw * C, C, kw * C, C)
            else:
                fc_wgrad_depthwise3_d(xr, gy + p_lo * C + co0, gw + r_lo * kw * C + co0, b - a,
                                      r_hi - r_lo, kw, x_pix, dh * W * C, dw * C, C, kw * C, C)
        for r in range(r_lo, r_hi):
            xr = x + (ih0 + r * dh) * W * C + co0
            for s in range(kw):
                # the pixels [ow0, ow1) whose tap s lands inside x, less [a, b)
                iw = s * dw - left  # input column of pixel 0
                ow0 = _first_tap(iw, sw)
                ow1 = max(ow0, _end_tap(iw, sw, Wo, W))
                _wgrad_depthwise_pixels(xr + (iw + ow0 * sw) * C, gy + ow0 * C + co0,
                                        gw + (r * kw + s) * C + co0,
                                        min(ow1, a) - ow0 if b > a else ow1 - ow0, nc, x_pix, C)
                if b > a and ow1 > b:
                    ow0 = max(ow0, b)
                    _wgrad_depthwise_pixels(xr + (iw + ow0 * sw) * C, gy + ow0 * C + co0,
                                            gw + (r * kw + s) * C + co0, ow1 - ow0, nc, x_pix, C)


def conv_backward_weight(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                         const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                         floating[:, ::1] partial,         # OUT (n_chunks, kh*kw*cig*C_out), zeroed
                         Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t top, Py_ssize_t left,  # zero padding, as in conv_forward
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t groups, int num_threads):
    """Weight gradient as n_chunks partial sums (the caller adds them up).

    The output rows are split into a fixed number of chunks, each summed into its own
    buffer, so the result does not depend on the thread count and no two threads write
    the same memory. For one output row and one tap, a weight block (FC_CI input channels x
    one vector of output channels, or one vector of channels when depthwise) sums over the
    row's pixels whose tap lands inside x, in registers.
    """
    _check_geometry(sh, sw, dh, dw, groups)
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t cig = C // groups, cog = Cout // groups
    cdef Py_ssize_t n_chunks = partial.shape[0], rows = N * Ho
    cdef bint depthwise = cig == 1 and cog == 1 and groups > 1
    cdef Py_ssize_t width = Cout if depthwise else cog
    cdef Py_ssize_t cb = FC_CB_F if floating is float else FC_CB_D
    cdef Py_ssize_t x_pix = sw * C
    cdef Py_ssize_t chunk, row, n, oh, ih, iw, ow, ow0, npix, r, s, g, ci, ci0, ci_block
    cdef Py_ssize_t co, co0, co_block, nci, nco
    cdef const floating* xp
    cdef const floating* gyp
    cdef floating* gwp
    cdef floating acc
    if rows * Wo == 0:
        return
    for chunk in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        for row in range(chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks):
            n = row // Ho
            oh = row % Ho
            if depthwise:
                _wgrad_depthwise_row(&x[n, 0, 0, 0], &gy[n, oh, 0, 0], &partial[chunk, 0],
                                     oh * sh - top, H, W, C, Wo, kh, kw, left, sw, dh, dw)
                continue
            for r in range(kh):
                ih = oh * sh + r * dh - top
                if ih < 0 or ih >= H:
                    continue
                for s in range(kw):
                    # the pixels ow0 .. ow0 + npix - 1 whose tap s lands inside x
                    iw = s * dw - left  # input column of pixel 0
                    ow0 = _first_tap(iw, sw)
                    npix = _end_tap(iw, sw, Wo, W) - ow0
                    if npix <= 0:
                        continue
                    xp = &x[n, ih, 0, 0] + (iw + ow0 * sw) * C  # pixel ow0 + p at xp + p*x_pix
                    gyp = &gy[n, oh, ow0, 0]                    # at gyp + p*Cout
                    gwp = &partial[chunk, (r * kw + s) * cig * Cout]
                    for g in range(1 if depthwise else groups):
                        for ci_block in range(1 if depthwise else (cig + FC_CI - 1) // FC_CI):
                            ci0 = ci_block * FC_CI
                            nci = 1 if depthwise else min(<Py_ssize_t> FC_CI, cig - ci0)
                            for co_block in range((width + cb - 1) // cb):
                                co0 = g * cog + co_block * cb
                                nco = min(cb, width - co_block * cb)
                                if FC_HAVE_VECTORS and nco == cb and depthwise:
                                    if floating is float:
                                        fc_wgrad_depthwise_block_f(xp + co0, gyp + co0, gwp + co0,
                                                                   npix, x_pix, Cout)
                                    else:
                                        fc_wgrad_depthwise_block_d(xp + co0, gyp + co0, gwp + co0,
                                                                   npix, x_pix, Cout)
                                elif FC_HAVE_VECTORS and nco == cb and nci == FC_CI:
                                    if floating is float:
                                        fc_wgrad_dense_block_f(
                                            xp + g * cig + ci0, gyp + co0,
                                            gwp + ci0 * Cout + co0, npix, x_pix, Cout, Cout)
                                    else:
                                        fc_wgrad_dense_block_d(
                                            xp + g * cig + ci0, gyp + co0,
                                            gwp + ci0 * Cout + co0, npix, x_pix, Cout, Cout)
                                else:  # edges, one weight element at a time
                                    for ci in range(ci0, ci0 + nci):
                                        for co in range(co0, co0 + nco):
                                            acc = 0
                                            for ow in range(npix):
                                                acc = acc + gyp[ow * Cout + co] * (
                                                    xp[ow * x_pix + co] if depthwise
                                                    else xp[ow * x_pix + g * cig + ci])
                                            gwp[(0 if depthwise else ci * Cout) + co] += acc


cdef inline Py_ssize_t _gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """floor(a / b) for b > 0 (C division truncates towards zero)."""
    return a // b - (1 if a % b != 0 and a < 0 else 0)


cdef inline void _dw_pixels(const floating* gy, const floating* w, const floating* bias,
                            floating* y, Py_ssize_t npix, Py_ssize_t nr, Py_ssize_t ns,
                            Py_ssize_t C, Py_ssize_t w_row, Py_ssize_t w_col,
                            Py_ssize_t y_pix, Py_ssize_t x_pix, Py_ssize_t x_row,
                            Py_ssize_t x_col) noexcept nogil:
    """y[p, c] = bias[c] + sum_{r < nr, s < ns} gy[p*x_pix + r*x_row + s*x_col + c]
    * w[r*w_row + s*w_col + c] for p < npix, c < C (gy unused when nr or ns is 0: y = bias)."""
    cdef Py_ssize_t p, c, r, s
    cdef floating acc
    if nr <= 0 or ns <= 0:
        nr = 0
        ns = 0
    if FC_HAVE_VECTORS:
        if floating is float:
            fc_depthwise_run_f(npix, C, gy, w, y, bias, nr, ns, w_row, w_col, y_pix, x_pix,
                               x_row, x_col)
        else:
            fc_depthwise_run_d(npix, C, gy, w, y, bias, nr, ns, w_row, w_col, y_pix, x_pix,
                               x_row, x_col)
    else:
        for p in range(npix):
            for c in range(C):
                acc = bias[c] if bias != NULL else 0
                for r in range(nr):
                    for s in range(ns):
                        acc = acc + gy[p * x_pix + r * x_row + s * x_col + c] * w[r * w_row + s * w_col + c]
                y[p * y_pix + c] = acc


def data_depthwise(const floating[:, :, :, ::1] gy,  # IN  (N, Hg, Wg, Cp) grad_output
                   const floating[:, :, :, ::1] w,   # IN  (kh, kw, 1, Cp)
                   const floating[::1] bias,         # IN  (Cp,), or (0,) for none
                   floating[:, :, :, ::1] out,       # OUT (N, Ho, Wo, C), C <= Cp
                   Py_ssize_t top, Py_ssize_t left,  # out's first row / column in the padded input
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, bint stream,
                   int num_threads):
    """Input gradient of a strided depthwise convolution (or a depthwise transposed
    convolution), all sub-pixel phases in one pass over the output rows:

        out[n, i, j, c] = bias[c] + sum_{r, s} gy[n, m, q, c] * w[r, s, 0, c]

    over the taps with i + top = m*sh + r*dh and j + left = q*sw + s*dw, (m, q) inside gy.
    A row's taps r are those of its phase, r0, r0 + step_r, ... (gy rows m0, m0 - dr, ...);
    its pixels are taken phase by phase (every sw-th pixel), in register blocks of up to
    FC_PB pixels x one vector of channels over the phase's taps, walked backwards through
    gy. Pixels whose taps leave gy (the edges) go one by one over the taps inside it, so the
    result is that of the definition even for non-finite weights. Each thread writes whole
    rows of out while their gy rows are in cache: gy is read about once, out written once.
    Cp: the channels padded to a whole number of vectors (whole-vector loads stay inside)."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    _check_geometry(sh, sw, dh, dw, 1)
    cdef Py_ssize_t N = gy.shape[0], Hg = gy.shape[1], Wg = gy.shape[2], Cp = gy.shape[3]
    cdef Py_ssize_t kh = w.shape[0], kw = w.shape[1]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2], C = out.shape[3]
    # consecutive taps of a phase: step_r taps apart, dr rows of gy apart
    cdef Py_ssize_t step_r = sh // _gcd(sh, dh), step_s = sw // _gcd(sw, dw)
    cdef Py_ssize_t dr = step_r * dh // sh, ds = step_s * dw // sw
    cdef Py_ssize_t x_row = -dr * Wg * Cp, x_col = -ds * Cp, w_row = step_r * kw * Cp
    cdef Py_ssize_t w_col = step_s * Cp, y_pix = sw * C
    cdef Py_ssize_t row, n, i, r, r0, m0, nk, k_lo, k_hi, j0, s, s0, q0, ns_full, nt, t
    cdef Py_ssize_t t_lo, t_hi, npix, kc_lo, kc_hi
    cdef bint has_bias = bias.shape[0] > 0
    cdef const floating* b_ptr
    cdef const floating* g_row
    cdef const floating* w_tap
    cdef floating* buf = NULL
    cdef floating* y_row
    cdef int status = 0
    cdef int* failed = &status
    if N * Ho * Wo == 0:
        return 0
    if share_items(&share, N * Ho, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        buf = <floating*> malloc(Wo * C * sizeof(floating) + 64) if stream else NULL
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for row in range(share_first, share_end):
                n = row // Ho
                i = row % Ho
                if stream and buf == NULL:
                    failed[0] = 1
                    continue
                # the row: straight into out, or into an aligned buffer streamed out after
                y_row = <floating*> (<char*> buf + (-<size_t> buf) % 64) if stream else &out[n, i, 0, 0]
                b_ptr = &bias[0] if has_bias else NULL
                # the row's taps r0 + k*step_r, k in [k_lo, k_hi), reading gy row m0 - k*dr
                r0 = -1
                for r in range(min(kh, step_r)):
                    if r0 < 0 and (i + top - r * dh) % sh == 0:
                        r0 = r
                k_lo = 0
                k_hi = 0
                m0 = 0
                if r0 >= 0:
                    nk = (kh - 1 - r0) // step_r + 1
                    m0 = (i + top - r0 * dh) // sh
                    k_lo = max(0, -_floor_div(Hg - 1 - m0, dr))
                    k_hi = min(nk, _floor_div(m0, dr) + 1)
                g_row = &gy[n, 0, 0, 0] + (m0 - k_lo * dr) * Wg * Cp if k_hi > k_lo else &gy[n, 0, 0, 0]
                for j0 in range(min(sw, Wo)):  # the row's pixels j0, j0 + sw, ...: one column phase
                    nt = (Wo - j0 + sw - 1) // sw
                    s0 = -1
                    for s in range(min(kw, step_s)):
                        if s0 < 0 and (j0 + left - s * dw) % sw == 0:
                            s0 = s
                    if s0 < 0 or k_hi <= k_lo:  # no tap reaches these pixels
                        _dw_pixels(&gy[0, 0, 0, 0], &w[0, 0, 0, 0], b_ptr, y_row + j0 * C, nt, 0, 0,
                                   C, w_row, w_col, y_pix, Cp, x_row, x_col)
                        continue
                    ns_full = (kw - 1 - s0) // step_s + 1
                    q0 = (j0 + left - s0 * dw) // sw  # gy column of pixel t = 0, tap s0 (q0 + t)
                    w_tap = &w[0, 0, 0, 0] + ((r0 + k_lo * step_r) * kw + s0) * Cp
                    # pixels whose taps all lie inside gy: [t_lo, t_hi)
                    t_lo = min(nt, max(0, (ns_full - 1) * ds - q0))
                    t_hi = max(t_lo, min(nt, Wg - q0))
                    t = 0
                    while t < nt:
                        if t_lo <= t < t_hi:  # the inner pixels, all taps inside gy
                            npix = t_hi - t
                            _dw_pixels(g_row + (q0 + t) * Cp, w_tap, b_ptr,
                                       y_row + j0 * C + t * y_pix, npix, k_hi - k_lo, ns_full,
                                       C, w_row, w_col, y_pix, Cp, x_row, x_col)
                        else:  # an edge pixel: its taps kc in [kc_lo, kc_hi) land inside gy
                            npix = 1
                            kc_lo = max(0, -_floor_div(Wg - 1 - q0 - t, ds))
                            kc_hi = min(ns_full, _floor_div(q0 + t, ds) + 1)
                            _dw_pixels(g_row + (q0 + t - kc_lo * ds) * Cp, w_tap + kc_lo * w_col, b_ptr,
                                       y_row + j0 * C + t * y_pix, 1, k_hi - k_lo, kc_hi - kc_lo,
                                       C, w_row, w_col, y_pix, Cp, x_row, x_col)
                        t = t + npix
                if stream:
                    fc_stream_copy(&out[n, i, 0, 0], y_row, Wo * C * sizeof(floating))
        if stream:
            fc_store_fence()
        free(buf)
    free(share.taken)
    return status

