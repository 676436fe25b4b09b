"""Direct convolution kernels on NHWC activations and HWIO weights.

All three work on an input that is already padded (the Python layer pads it, so every padding
mode is the same "valid" convolution here) and write into arrays the caller allocated.
The innermost loops run over contiguous channels so the compiler can vectorise them.

Shapes (groups G, C_in = G * cig, C_out = G * cog):
    x  (N, Hp, Wp, C_in)      padded input
    w  (kh, kw, cig, C_out)   weight, HWIO
    y  (N, Ho, Wo, C_out)     output, Ho = (Hp - dh*(kh-1) - 1) // sh + 1
"""
from cython cimport floating
from cython.parallel cimport prange


def conv_forward(const floating[:, :, :, ::1] x,   # IN  (N, Hp, Wp, C_in)
                 const floating[:, :, :, ::1] w,   # IN  (kh, kw, cig, C_out)
                 const floating[::1] bias,         # IN  (C_out,), or (0,) for none
                 floating[:, :, :, ::1] y,         # OUT (N, Ho, Wo, C_out)
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t groups, int num_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3]
    cdef Py_ssize_t kh = w.shape[0], kw = w.shape[1], cig = w.shape[2], Cout = w.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2], cog = Cout // groups
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint depthwise = cig == 1 and cog == 1
    cdef Py_ssize_t row, n, oh, ow, r, s, g, ci, co
    cdef const floating* xp
    cdef const floating* wp
    cdef floating* yp
    cdef floating xv
    if N * Ho * Wo == 0:
        return
    for row in prange(N * Ho, nogil=True, schedule="static", num_threads=num_threads):
        n = row // Ho
        oh = row % Ho
        for ow in range(Wo):
            yp = &y[n, oh, ow, 0]
            for co in range(Cout):
                yp[co] = bias[co] if has_bias else 0
            for r in range(kh):
                for s in range(kw):
                    xp = &x[n, oh * sh + r * dh, ow * sw + s * dw, 0]
                    wp = &w[r, s, 0, 0]
                    if depthwise:
                        for co in range(Cout):
                            yp[co] += xp[co] * wp[co]
                    else:
                        for g in range(groups):
                            for ci in range(cig):
                                xv = xp[g * cig + ci]
                                for co in range(g * cog, (g + 1) * cog):
                                    yp[co] += xv * wp[ci * Cout + co]


def conv_backward_data(const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                       const floating[:, :, :, ::1] wt,  # IN  (kh, kw, C_out, cig): w with I, O swapped
                       const floating[::1] bias,         # IN  (C_in,), or (0,) for none
                       floating[:, :, :, ::1] gx,        # OUT (N, Hp, Wp, C_in), every element written
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t groups, int num_threads):
    """gx = C^T gy (the input gradient, or a transposed convolution), in gather form.

    Each input pixel sums the output pixels whose window covers it: tap (r, s) reaches
    input row ih from output row oh = (ih - r*dh) / sh when that division is exact, so no
    zeros are inserted and each gx element is written by exactly one thread.
    """
    cdef Py_ssize_t N = gx.shape[0], Hp = gx.shape[1], Wp = gx.shape[2], C = gx.shape[3]
    cdef Py_ssize_t kh = wt.shape[0], kw = wt.shape[1], Cout = wt.shape[2], cig = wt.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], cog = Cout // groups
    cdef bint has_bias = bias.shape[0] > 0
    cdef bint depthwise = cig == 1 and cog == 1
    cdef Py_ssize_t row, n, ih, iw, oh, ow, r, s, t, u, g, ci, co
    cdef const floating* gyp
    cdef const floating* wp
    cdef floating* gxp
    cdef floating v
    if N * Hp * Wp == 0:
        return
    for row in prange(N * Hp, nogil=True, schedule="static", num_threads=num_threads):
        n = row // Hp
        ih = row % Hp
        for iw in range(Wp):
            gxp = &gx[n, ih, iw, 0]
            for ci in range(C):
                gxp[ci] = bias[ci] if has_bias else 0
            for r in range(kh):
                t = ih - r * dh
                if t < 0:
                    break
                if t % sh != 0 or t // sh >= Ho:
                    continue
                oh = t // sh
                for s in range(kw):
                    u = iw - s * dw
                    if u < 0:
                        break
                    if u % sw != 0 or u // sw >= Wo:
                        continue
                    ow = u // sw
                    gyp = &gy[n, oh, ow, 0]
                    wp = &wt[r, s, 0, 0]
                    if depthwise:
                        for ci in range(C):
                            gxp[ci] += gyp[ci] * wp[ci]
                    else:
                        for g in range(groups):
                            for co in range(g * cog, (g + 1) * cog):
                                v = gyp[co]
                                for ci in range(cig):
                                    gxp[g * cig + ci] += v * wp[co * cig + ci]


def conv_backward_weight(const floating[:, :, :, ::1] x,   # IN  (N, Hp, Wp, C_in)
                         const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C_out)
                         floating[:, ::1] partial,         # OUT (n_chunks, kh*kw*cig*C_out), zeroed
                         Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t groups, int num_threads):
    """Weight gradient as n_chunks partial sums (the caller adds them up).

    The output rows are split into a fixed number of chunks, each summed into its own
    buffer, so the result does not depend on the thread count and no two threads write
    the same memory.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2], Cout = gy.shape[3]
    cdef Py_ssize_t cig = C // groups, cog = Cout // groups
    cdef Py_ssize_t n_chunks = partial.shape[0], rows = N * Ho
    cdef bint depthwise = cig == 1 and cog == 1
    cdef Py_ssize_t chunk, row, n, oh, ow, r, s, g, ci, co
    cdef const floating* xp
    cdef const floating* gyp
    cdef floating* gwp
    cdef floating xv
    if rows * Wo == 0:
        return
    for chunk in prange(n_chunks, nogil=True, schedule="static", num_threads=num_threads):
        for row in range(chunk * rows // n_chunks, (chunk + 1) * rows // n_chunks):
            n = row // Ho
            oh = row % Ho
            for ow in range(Wo):
                gyp = &gy[n, oh, ow, 0]
                for r in range(kh):
                    for s in range(kw):
                        xp = &x[n, oh * sh + r * dh, ow * sw + s * dw, 0]
                        gwp = &partial[chunk, (r * kw + s) * cig * Cout]
                        if depthwise:
                            for co in range(Cout):
                                gwp[co] += xp[co] * gyp[co]
                        else:
                            for g in range(groups):
                                for ci in range(cig):
                                    xv = xp[g * cig + ci]
                                    for co in range(g * cog, (g + 1) * cog):
                                        gwp[ci * Cout + co] += xv * gyp[co]
