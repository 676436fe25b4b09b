"""Winograd F(4x4, 3x3) convolution for 3x3 taps, stride 1, dilation 1, on NHWC activations.

The output is cut into 4x4 tiles; tile (oh0, ow0) reads the 6x6 input patch from
(oh0 - top, ow0 - left). A thread takes a block of `block` tiles and
1. transforms each patch, V = B^T d B per channel, into its buffer V (36 x block x C_in);
2. for each of the 36 points k multiplies V[k] (block x cig) by the transformed weight
   U[k] (cig x cog) per group, into M (36 x block x C_out), with the register blocks of the
   blocked kernel (fastconv_blocked.h) over U packed once in their layout (_products);
3. transforms each tile back, A^T m A (+ bias), into its 4x4 output pixels.
That is 36 products for 16 outputs where direct convolution does 16 x 9: 4x fewer. The weight
transform U = G g G^T is done by the caller. Zero padding is implicit: patch pixels outside x
read a row of zeros, and tile pixels beyond y (the last tiles of a row or column) are written
to a scratch row, so x is never copied.

The weight gradient's products (conv_backward_weight) are BLAS calls: the caller keeps
BLAS on one thread while they run. Parallelism is OpenMP over blocks.
Returns 0, or 1 when a scratch buffer could not be allocated.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from fastconv._kernels._share cimport fc_share, fc_share_next, share_items
from fastconv._kernels._blas cimport gemm
from fastconv._kernels._blocked_block cimport (
    FC_BLK_NP, FC_BLK_PIX_MAX, FC_BLK_OB_F, FC_BLK_OB_D, FC_VBYTES, FC_BLK_PIX, fc_blocked_f,
    fc_blocked_d, scalar_block)
from fastconv._kernels._epilogue cimport Epilogue, chain_of, chain_span


cdef extern from "fastconv_winograd.h":
    # one point per pointer, n channels each (see the header for the matrices)
    void fc_winograd_weight_f(const float* g0, const float* g1, const float* g2, float* o0,
                              float* o1, float* o2, float* o3, float* o4, float* o5,
                              Py_ssize_t n) noexcept nogil
    void fc_winograd_weight_d(const double* g0, const double* g1, const double* g2, double* o0,
                              double* o1, double* o2, double* o3, double* o4, double* o5,
                              Py_ssize_t n) noexcept nogil
    void fc_winograd_weight_adjoint_f(const float* u0, const float* u1, const float* u2,
                                      const float* u3, const float* u4, const float* u5,
                                      float* o0, float* o1, float* o2, Py_ssize_t n) noexcept nogil
    void fc_winograd_weight_adjoint_d(const double* u0, const double* u1, const double* u2,
                                      const double* u3, const double* u4, const double* u5,
                                      double* o0, double* o1, double* o2,
                                      Py_ssize_t n) noexcept nogil
    void fc_winograd_in_f(const float* d0, const float* d1, const float* d2, const float* d3,
                          const float* d4, const float* d5, float* o0, float* o1, float* o2,
                          float* o3, float* o4, float* o5, Py_ssize_t n) noexcept nogil
    void fc_winograd_in_d(const double* d0, const double* d1, const double* d2,
                          const double* d3, const double* d4, const double* d5, double* o0,
                          double* o1, double* o2, double* o3, double* o4, double* o5,
                          Py_ssize_t n) noexcept nogil
    void fc_winograd_out_f(const float* m0, const float* m1, const float* m2, const float* m3,
                           const float* m4, const float* m5, float* o0, float* o1, float* o2,
                           float* o3, const float* bias, Py_ssize_t n) noexcept nogil
    void fc_winograd_out_d(const double* m0, const double* m1, const double* m2,
                           const double* m3, const double* m4, const double* m5, double* o0,
                           double* o1, double* o2, double* o3, const double* bias,
                           Py_ssize_t n) noexcept nogil
    void fc_winograd_out_adjoint_f(const float* y0, const float* y1, const float* y2,
                                   const float* y3, float* o0, float* o1, float* o2, float* o3,
                                   float* o4, float* o5, Py_ssize_t n) noexcept nogil
    void fc_winograd_out_adjoint_d(const double* y0, const double* y1, const double* y2,
                                   const double* y3, double* o0, double* o1, double* o2,
                                   double* o3, double* o4, double* o5, Py_ssize_t n) noexcept nogil

cdef extern from "fastconv_simd.h":
    enum:
        FC_HAVE_VECTORS
    const char* FC_ISA  # the instruction set this module is compiled for


cdef enum:
    POINTS_ = 36  # (4 + 2) ** 2 products per tile and channel pair
    CHANNELS = 64  # channels per slice of a tile transform
    ROWS = 16  # input channels per work unit of the weight transform

ISA = FC_ISA.decode()
TILE = 4  # output pixels per tile side
POINTS = POINTS_
# output channels per block of the packed transformed weight (the blocked kernel's)
OUT_BLOCK = {"float32": FC_BLK_OB_F, "float64": FC_BLK_OB_D}


cdef inline void _transform_weight(const floating** g, floating** o,
                                   Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_winograd_weight_f(g[0], g[1], g[2], o[0], o[1], o[2], o[3], o[4], o[5], n)
    else:
        fc_winograd_weight_d(g[0], g[1], g[2], o[0], o[1], o[2], o[3], o[4], o[5], n)


cdef inline void _transform_weight_adjoint(const floating** u, floating** o,
                                           Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_winograd_weight_adjoint_f(u[0], u[1], u[2], u[3], u[4], u[5], o[0], o[1], o[2], n)
    else:
        fc_winograd_weight_adjoint_d(u[0], u[1], u[2], u[3], u[4], u[5], o[0], o[1], o[2], n)


cdef inline void _transform_in(const floating** d, floating** o, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_winograd_in_f(d[0], d[1], d[2], d[3], d[4], d[5], o[0], o[1], o[2], o[3], o[4],
                         o[5], n)
    else:
        fc_winograd_in_d(d[0], d[1], d[2], d[3], d[4], d[5], o[0], o[1], o[2], o[3], o[4],
                         o[5], n)


cdef inline void _transform_out(const floating** m, floating** o, const floating* bias,
                                Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_winograd_out_f(m[0], m[1], m[2], m[3], m[4], m[5], o[0], o[1], o[2], o[3], bias, n)
    else:
        fc_winograd_out_d(m[0], m[1], m[2], m[3], m[4], m[5], o[0], o[1], o[2], o[3], bias, n)


cdef inline void _transform_out_adjoint(const floating** y, floating** o,
                                        Py_ssize_t n) noexcept nogil:
    if floating is float:
        fc_winograd_out_adjoint_f(y[0], y[1], y[2], y[3], o[0], o[1], o[2], o[3], o[4], o[5], n)
    else:
        fc_winograd_out_adjoint_d(y[0], y[1], y[2], y[3], o[0], o[1], o[2], o[3], o[4], o[5], n)


cdef struct Origin:
    Py_ssize_t n, oh, ow  # image, first output row and column of a tile


cdef inline Origin _tile_origin(Py_ssize_t tile, Py_ssize_t tiles_img,
                                Py_ssize_t tiles_w) noexcept nogil:
    """Tiles run along rows, then down, then over the images."""
    cdef Origin o
    o.n = tile // tiles_img
    o.oh = (tile % tiles_img) // tiles_w * 4
    o.ow = tile % tiles_w * 4
    return o


cdef inline void* _thread_buffers(Py_ssize_t v_size, Py_ssize_t m_size, Py_ssize_t width,
                                  size_t itemsize) noexcept nogil:
    """A thread's buffers in one allocation (NULL when out of memory), in values of
    `itemsize` bytes: V (v_size), M (m_size), the tile transforms' scratch (36 x width), a row
    of `width` zeros, and a row for the tile pixels beyond the output (4 x CHANNELS)."""
    cdef size_t zeros_at = (v_size + m_size + POINTS_ * width) * itemsize
    cdef char* buf = <char*> malloc(zeros_at + (width + 4 * CHANNELS) * itemsize)
    if buf != NULL:
        memset(buf + zeros_at, 0, width * itemsize)
    return buf


cdef inline void _input_tile(const floating* x, const floating* zeros, floating* tmp,
                             floating* v, Py_ssize_t v_stride, Py_ssize_t n, Py_ssize_t ih0,
                             Py_ssize_t iw0, Py_ssize_t H, Py_ssize_t W,
                             Py_ssize_t C) noexcept nogil:
    """v[(6*i + j) * v_stride + c] = (B^T d B)[i, j] for the 6x6 patch d of image n whose
    top-left pixel is (ih0, iw0) (pixels outside x are zeros). In slices of CHANNELS
    channels, so that tmp (36 x CHANNELS) stays in L1."""
    cdef const floating* d[6]
    cdef floating* o[6]
    cdef Py_ssize_t i, j, ih, iw, c0, nc
    for c0 in range(0, C, 64):  # (CHANNELS: Cython wants a literal step here)
        nc = min(CHANNELS, C - c0)
        for i in range(6):  # along each patch row: tmp[i, :] = B^T d[i, :]
            ih = ih0 + i
            for j in range(6):
                iw = iw0 + j
                if 0 <= ih < H and 0 <= iw < W:
                    d[j] = x + ((n * H + ih) * W + iw) * C + c0
                else:
                    d[j] = zeros
                o[j] = tmp + (i * 6 + j) * nc
            _transform_in(d, o, nc)
        for j in range(6):  # along each column: v[:, j] = B^T tmp[:, j]
            for i in range(6):
                d[i] = tmp + (i * 6 + j) * nc
                o[i] = v + (i * 6 + j) * v_stride + c0
            _transform_in(d, o, nc)


cdef inline void _output_tile(const floating* m, Py_ssize_t m_stride, floating* tmp,
                              floating* y, floating* scratch, const floating* bias,
                              Py_ssize_t n, Py_ssize_t oh0, Py_ssize_t ow0, Py_ssize_t Ho,
                              Py_ssize_t Wo, Py_ssize_t y_img, Py_ssize_t y_row,
                              Py_ssize_t y_pix, Py_ssize_t Cout) noexcept nogil:
    """The 4x4 output pixels from (oh0, ow0) of image n: A^T m A (+ bias), where m[k] is at
    m + k * m_stride; pixels beyond the output go to `scratch` (4 x CHANNELS). In slices
    of CHANNELS channels, as _input_tile."""
    cdef const floating* src[6]
    cdef floating* o[6]
    cdef Py_ssize_t i, j, c0, nc
    for c0 in range(0, Cout, 64):  # (CHANNELS)
        nc = min(CHANNELS, Cout - c0)
        for j in range(6):  # along each column: tmp[:, j] = A^T m[:, j]  (4 x 6)
            for i in range(6):
                src[i] = m + (i * 6 + j) * m_stride + c0
            for i in range(4):
                o[i] = tmp + (i * 6 + j) * nc
            _transform_out(src, o, NULL, nc)
        for i in range(4):  # along each row: y[oh0 + i, ow0:ow0 + 4] = tmp[i, :] A
            for j in range(6):
                src[j] = tmp + (i * 6 + j) * nc
            for j in range(4):
                if oh0 + i < Ho and ow0 + j < Wo:
                    o[j] = y + n * y_img + (oh0 + i) * y_row + (ow0 + j) * y_pix + c0
                else:
                    o[j] = scratch + j * CHANNELS
            _transform_out(src, o, bias + c0 if bias != NULL else NULL, nc)


cdef inline void _grad_tile(const floating* gy, const floating* zeros, floating* tmp,
                            floating* dm, Py_ssize_t m_stride, Py_ssize_t n, Py_ssize_t oh0,
                            Py_ssize_t ow0, Py_ssize_t Ho, Py_ssize_t Wo,
                            Py_ssize_t Cout) noexcept nogil:
    """dm[(6*i + j) * m_stride + c] = (A e A^T)[i, j] for the 4x4 tile e of output gradients
    from (oh0, ow0) of image n (zeros beyond the output): the adjoint of _output_tile."""
    cdef const floating* src[4]
    cdef floating* o[6]
    cdef Py_ssize_t i, j
    for i in range(4):  # along each tile row: tmp[i, :] = A e[i, :]  (4 x 6)
        for j in range(4):
            if oh0 + i < Ho and ow0 + j < Wo:
                src[j] = gy + ((n * Ho + oh0 + i) * Wo + ow0 + j) * Cout
            else:
                src[j] = zeros
        for j in range(6):
            o[j] = tmp + (i * 6 + j) * Cout
        _transform_out_adjoint(src, o, Cout)
    for j in range(6):  # along each column: dm[:, j] = A tmp[:, j]
        for i in range(4):
            src[i] = tmp + (i * 6 + j) * Cout
        for i in range(6):
            o[i] = dm + (i * 6 + j) * m_stride
        _transform_out_adjoint(src, o, Cout)


cdef inline void _weight_columns(const floating* w, Py_ssize_t w_tap, floating* u,
                                 Py_ssize_t u_point, floating* tmp, Py_ssize_t nc,
                                 Py_ssize_t width) noexcept nogil:
    """u[(6*i + j) * u_point + c] = (G w[:, :, c] G^T)[i, j] for the nc columns c of w (3 x 3
    taps, w_tap apart), and 0 for nc <= c < width (a packed block's padding); tmp holds 18 x
    nc values."""
    cdef const floating* src[3]
    cdef floating* dst[6]
    cdef Py_ssize_t r, j, k
    for r in range(3):  # along each kernel row: tmp[r, :] = G w[r, :]  (3 x 6)
        for j in range(3):
            src[j] = w + (r * 3 + j) * w_tap
        for j in range(6):
            dst[j] = tmp + (r * 6 + j) * nc
        _transform_weight(src, dst, nc)
    for j in range(6):  # along each column: u[:, j] = G tmp[:, j]
        for r in range(3):
            src[r] = tmp + (r * 6 + j) * nc
        for r in range(6):
            dst[r] = u + (r * 6 + j) * u_point
        _transform_weight(src, dst, nc)
    if nc < width:
        for k in range(POINTS_):
            memset(u + k * u_point + nc, 0, (width - nc) * sizeof(floating))


def transform_weight(const floating[:, :, :, ::1] w,    # IN  (3, 3, cig, C_out): HWIO
                     floating[:, :, :, :, ::1] up,      # OUT (36, G, n_ob, cig, OUT_BLOCK)
                     int num_threads):
    """The weight transform, G w G^T per (input, output) channel pair, straight into the
    packed layout of conv_forward: up is (36, G, ceil(C_out / G / OUT_BLOCK), cig, OUT_BLOCK)
    with this module's OUT_BLOCK for the dtype, each group's output channels in blocks, the
    last one zero-padded."""
    cdef Py_ssize_t cig = w.shape[2], Cout = w.shape[3], G = up.shape[1], n_ob = up.shape[2]
    cdef Py_ssize_t ob = up.shape[4], cog = Cout // G, u_point = G * n_ob * cig * ob
    cdef Py_ssize_t n_chunks = (cig + ROWS - 1) // ROWS
    cdef Py_ssize_t unit, ci, ci0, g, b
    cdef floating* tmp = NULL
    cdef int status = 0
    cdef int* failed = &status
    with nogil, parallel(num_threads=num_threads):
        tmp = <floating*> malloc(18 * ob * sizeof(floating))
        # a unit: ROWS input channels of a group, whose rows of w stay in L2 while each
        # block's 36 points are written in runs of ROWS x ob values
        for unit in prange(G * n_chunks, schedule="static"):
            if tmp == NULL:
                failed[0] = 1
                continue
            g = unit // n_chunks
            ci0 = unit % n_chunks * ROWS
            for b in range(n_ob):
                for ci in range(ci0, min(ci0 + ROWS, cig)):
                    _weight_columns(&w[0, 0, ci, 0] + g * cog + b * ob, cig * Cout,
                                    &up[0, g, b, ci, 0], u_point, tmp,
                                    min(ob, cog - b * ob), ob)
        free(tmp)
    return status


cdef inline void _taps_columns(const floating* partial, Py_ssize_t n_partial, floating* gw,
                               floating* tmp, Py_ssize_t M, Py_ssize_t c0,
                               Py_ssize_t nc) noexcept nogil:
    """gw[3*r + s, c] = (G^T du G)[r, s] for the columns c0 .. c0 + nc - 1, where du (36 x M)
    is the sum of the n_partial partial sums (n_partial x 36 x M), added in order;
    tmp holds 54 x nc values."""
    cdef const floating* src[6]
    cdef floating* dst[3]
    cdef floating* du = tmp
    cdef floating* rows = tmp + 36 * nc
    cdef Py_ssize_t k, p, c, i, j
    for k in range(36):
        for c in range(nc):
            du[k * nc + c] = partial[k * M + c0 + c]
        for p in range(1, n_partial):
            for c in range(nc):
                du[k * nc + c] += partial[(p * 36 + k) * M + c0 + c]
    for i in range(6):  # along each row: rows[i, :] = du[i, :] G  (6 x 3)
        for j in range(6):
            src[j] = du + (i * 6 + j) * nc
        for j in range(3):
            dst[j] = rows + (i * 3 + j) * nc
        _transform_weight_adjoint(src, dst, nc)
    for j in range(3):  # along each column: gw[:, j] = G^T rows[:, j]
        for i in range(6):
            src[i] = rows + (i * 3 + j) * nc
        for i in range(3):
            dst[i] = gw + (i * 3 + j) * M + c0
        _transform_weight_adjoint(src, dst, nc)


def weight_gradient_taps(const floating[:, :, ::1] partial,  # IN  (n_partial, 36, M)
                         floating[:, ::1] gw,                # OUT (9, M): HWIO, I and O merged
                         int num_threads):
    """The partial weight gradients of conv_backward_weight, added up (in a fixed order) and
    taken back from the Winograd domain to 3x3 taps."""
    cdef Py_ssize_t n_partial = partial.shape[0], M = partial.shape[2]
    cdef Py_ssize_t chunk = 256, n_chunks = (M + chunk - 1) // chunk, ic
    cdef floating* tmp = NULL
    cdef int status = 0
    cdef int* failed = &status
    with nogil, parallel(num_threads=num_threads):
        tmp = <floating*> malloc(54 * chunk * sizeof(floating))
        for ic in prange(n_chunks, schedule="static"):
            if tmp == NULL:
                failed[0] = 1
                continue
            _taps_columns(&partial[0, 0, 0], n_partial, &gw[0, 0], tmp, M, ic * chunk,
                          min(chunk, M - ic * chunk))
        free(tmp)
    return status


cdef inline void _products(const floating* v, Py_ssize_t v_stride, Py_ssize_t C,
                           const floating* up, Py_ssize_t groups, Py_ssize_t n_ob,
                           Py_ssize_t cig, Py_ssize_t cog, Py_ssize_t ob, floating* m,
                           Py_ssize_t m_stride, Py_ssize_t Cout, Py_ssize_t nt,
                           const floating** xp, floating** outp) noexcept nogil:
    """M[k] = V[k] @ U[k] for the 36 points k and each group: nt tiles' rows of V (C
    channels each, v_stride apart per point) times the packed U (36, G, n_ob, cig, ob), in
    register blocks of up to FC_BLK_PIX tiles x one block of ob output channels (one tap of
    cig input channels, as the blocked kernel runs a 1x1 convolution). A block's weight
    (cig x ob values) serves all nt tiles from L1 or L2 before the next one is read. xp,
    outp: scratch for FC_BLK_PIX_MAX pointers each."""
    cdef Py_ssize_t k, g, b, blk, n_blocks, t, p, npix, nc, np_max
    cdef Py_ssize_t vl = FC_VBYTES // sizeof(floating)
    cdef const floating* w
    for k in range(POINTS_):
        for g in range(groups):
            for b in range(n_ob):
                w = up + ((k * groups + g) * n_ob + b) * cig * ob
                nc = min(ob, cog - b * ob)
                np_max = FC_BLK_PIX((nc + vl - 1) // vl) if FC_HAVE_VECTORS else FC_BLK_NP
                # the tiles in register blocks of equal size (within one): 7 as 4 + 3
                n_blocks = (nt + np_max - 1) // np_max
                for blk in range(n_blocks):
                    t = blk * nt // n_blocks
                    npix = (blk + 1) * nt // n_blocks - t
                    for p in range(npix):
                        xp[p] = v + k * v_stride + (t + p) * C + g * cig
                        outp[p] = m + k * m_stride + (t + p) * Cout + g * cog + b * ob
                    if not FC_HAVE_VECTORS:
                        scalar_block(<int> npix, xp, w, 1, cig, 0, ob, NULL, 0, outp, nc)
                    elif floating is float:
                        fc_blocked_f(<int> npix, xp, w, 1, cig, 0, NULL, 0, outp, nc, NULL, 0,
                                     0, False)
                    else:
                        fc_blocked_d(<int> npix, xp, w, 1, cig, 0, NULL, 0, outp, nc, NULL, 0,
                                     0, False)


def conv_forward(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                 const floating[:, :, :, :, ::1] up,  # IN  (36, G, n_ob, cig, OUT_BLOCK):
                                                   #     G w G^T per (ci, co), zero-padded
                 const floating[::1] bias,         # IN  (C_out,), or (0,) for none
                 floating[:, :, :, :] y,           # OUT (N, Ho, Wo, C_out), channels contiguous
                                                   #     (pixels may be strided: a phase's view)
                 Py_ssize_t top, Py_ssize_t left,  # zero padding before the first row / column
                 Py_ssize_t groups, Py_ssize_t block, Epilogue post, int num_threads):
    """y = conv(x, w) + bias (up: w transformed and packed), then `post`'s chain (None:
    none) on each 4x4 output tile once it is written."""
    cdef fc_share share
    cdef Py_ssize_t share_cursor = 0, share_first = 0, share_end = 0
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t n_ob = up.shape[2], cig = up.shape[3], ob = up.shape[4]
    cdef Py_ssize_t Cout = y.shape[3], cog = Cout // groups
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2]
    cdef Py_ssize_t y_img = y.strides[0] // sizeof(floating)
    cdef Py_ssize_t y_row = y.strides[1] // sizeof(floating)
    cdef Py_ssize_t y_pix = y.strides[2] // sizeof(floating)
    cdef Py_ssize_t tiles_w = (Wo + 3) // 4, tiles_img = (Ho + 3) // 4 * tiles_w
    cdef Py_ssize_t n_tiles = N * tiles_img, n_blocks = (n_tiles + block - 1) // block
    cdef Py_ssize_t v_stride = block * C, m_stride = block * Cout
    cdef Py_ssize_t ib, t0, nt, t, k, g, i, j
    cdef const void* chain = chain_of(post, sizeof(floating), N * Ho * Wo, Cout)
    cdef Origin o
    cdef const floating* b = &bias[0] if bias.shape[0] > 0 else NULL
    cdef Py_ssize_t width = max(C, Cout)
    cdef floating* v = NULL  # the thread's buffers: V, then M, tmp, zeros, scratch
    cdef floating* m
    cdef floating* tmp
    cdef floating* zeros
    cdef floating* scratch
    cdef const floating** xp
    cdef floating** outp
    cdef int status = 0
    cdef int* failed = &status
    if ob != (FC_BLK_OB_F if sizeof(floating) == sizeof(float) else FC_BLK_OB_D):
        raise ValueError(f"conv_forward: the packed weight's blocks of {ob} channels are not "
                         f"this kernel's ({OUT_BLOCK}): packed for another instruction set")
    if n_tiles == 0:
        return 0
    if share_items(&share, n_blocks, num_threads):
        return 1
    with nogil, parallel(num_threads=num_threads):
        v = <floating*> _thread_buffers(POINTS_ * v_stride, POINTS_ * m_stride, width,
                                        sizeof(floating))
        xp = <const floating**> malloc(2 * FC_BLK_PIX_MAX * sizeof(floating*))
        outp = <floating**> (xp + FC_BLK_PIX_MAX) if xp != NULL else NULL
        if v != NULL:
            m = v + POINTS_ * v_stride
            tmp = m + POINTS_ * m_stride
            zeros = tmp + POINTS_ * width
            scratch = zeros + width
        # chunks in static order, a late thread's taken over (assigned here: private)
        share_cursor, share_first, share_end = 0, 0, 0
        while fc_share_next(&share, &share_cursor, &share_first, &share_end):
            for ib in range(share_first, share_end):
                if v == NULL or xp == NULL:
                    failed[0] = 1
                    continue
                t0 = ib * block
                nt = min(block, n_tiles - t0)
                for t in range(nt):
                    o = _tile_origin(t0 + t, tiles_img, tiles_w)
                    _input_tile(&x[0, 0, 0, 0], zeros, tmp, v + t * C, v_stride, o.n, o.oh - top,
                                o.ow - left, H, W, C)
                _products(v, v_stride, C, &up[0, 0, 0, 0, 0], groups, n_ob, cig, cog, ob, m,
                          m_stride, Cout, nt, xp, outp)
                for t in range(nt):
                    o = _tile_origin(t0 + t, tiles_img, tiles_w)
                    _output_tile(m + t * Cout, m_stride, tmp, &y[0, 0, 0, 0], scratch, b, o.n, o.oh,
                                 o.ow, Ho, Wo, y_img, y_row, y_pix, Cout)
                    if chain != NULL:
                        for i in range(o.oh, min(o.oh + 4, Ho)):
                            chain_span(chain, &y[0, 0, 0, 0] + o.n * y_img + i * y_row + o.ow * y_pix,
                                       (o.n * Ho + i) * Wo + o.ow, min(4, Wo - o.ow), y_pix, 0, Cout)
        free(xp)
        free(v)
    free(share.taken)
    return status


def conv_backward_weight(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C_in), unpadded
                         const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                         floating[:, :, :, ::1] partial,   # OUT (n_chunks, 36, cig, C_out), zeroed
                         Py_ssize_t top, Py_ssize_t left,  # zero padding, as in conv_forward
                         Py_ssize_t groups, Py_ssize_t block, int num_threads):
    """The weight gradient in the Winograd domain, dU[k] = sum over tiles of V[k]^T (A e A^T)[k]
    (e: a tile of output gradients), as n_chunks partial sums over fixed ranges of tiles (the
    result does not depend on the thread count). The caller adds them up and takes
    G^T dU G back to 3x3 taps."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t cig = C // groups, cog = Cout // groups, width = max(C, Cout)
    cdef Py_ssize_t tiles_w = (Wo + 3) // 4, tiles_img = (Ho + 3) // 4 * tiles_w
    cdef Py_ssize_t n_tiles = N * tiles_img, n_chunks = partial.shape[0]
    cdef Py_ssize_t v_stride = block * C, m_stride = block * Cout
    cdef Py_ssize_t chunk, t0, t_end, nt, t, k, g
    cdef Origin o
    cdef floating* v = NULL  # the thread's buffers: V, then M, tmp, zeros
    cdef floating* m
    cdef floating* tmp
    cdef floating* zeros
    cdef int status = 0
    cdef int* failed = &status
    if n_tiles == 0:
        return 0
    with nogil, parallel(num_threads=num_threads):
        v = <floating*> _thread_buffers(POINTS_ * v_stride, POINTS_ * m_stride, width,
                                        sizeof(floating))
        if v != NULL:
            m = v + POINTS_ * v_stride
            tmp = m + POINTS_ * m_stride
            zeros = tmp + POINTS_ * width
        for chunk in prange(n_chunks, schedule="static"):
            if v == NULL:
                failed[0] = 1
                continue
            t0 = chunk * n_tiles // n_chunks
            t_end = (chunk + 1) * n_tiles // n_chunks
            while t0 < t_end:
                nt = min(block, t_end - t0)
                for t in range(nt):
                    o = _tile_origin(t0 + t, tiles_img, tiles_w)
                    _input_tile(&x[0, 0, 0, 0], zeros, tmp, v + t * C, v_stride, o.n,
                                o.oh - top, o.ow - left, H, W, C)
                    _grad_tile(&gy[0, 0, 0, 0], zeros, tmp, m + t * Cout, m_stride, o.n, o.oh,
                               o.ow, Ho, Wo, Cout)
                for k in range(POINTS_):
                    for g in range(groups):
                        # partial[chunk, k] (cig x C_out, group block) += V[k]^T @ dM[k]
                        gemm(True, False, <int> cig, <int> cog, <int> nt, <floating> 1.0,
                             v + k * v_stride + g * cig, <int> C,
                             m + k * m_stride + g * cog, <int> Cout, <floating> 1.0,
                             &partial[chunk, k, 0, 0] + g * cog, <int> Cout)
                t0 = t0 + nt
        free(v)
    return status
