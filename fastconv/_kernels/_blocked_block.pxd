# The blocked kernel's register block (fastconv_blocked.h) as the kernels that run it
# declare it: _blocked.pyx (convolutions, weight gradient), _direct.pyx (the 1x1 of
# depthwise_pointwise) and _winograd.pyx (the products of the transformed tiles). Included
# per instruction-set variant: the sizes are the variant's.
from cython cimport floating

from fastconv._kernels._epilogue cimport fc_postops_f32, fc_postops_f64


cdef extern from "fastconv_blocked.h":
    enum:
        FC_BLK_NP       # output pixels of a full-width register block; the weight
                        # gradient's input channels per block
        FC_BLK_PIX_MAX  # the most output pixels of any register block
        FC_BLK_NV       # vectors per packed weight row
        FC_BLK_OB_F     # float output channels per block
        FC_BLK_OB_D     # double output channels per block
    int FC_VBYTES
    int FC_BLK_PIX(Py_ssize_t nv) noexcept nogil  # pixels of a block of nv vectors
    bint fc_blk_chain_in_registers_f32(const fc_postops_f32* p) noexcept nogil
    bint fc_blk_chain_in_registers_f64(const fc_postops_f64* p) noexcept nogil
    void fc_blocked_f(int npix, const float* const* xp, const float* w, Py_ssize_t ntaps,
                      Py_ssize_t cb, Py_ssize_t w_tap, const float* init, Py_ssize_t init_pix,
                      float* const* out, Py_ssize_t nc, const fc_postops_f32* post,
                      Py_ssize_t pixel, Py_ssize_t c0, bint stream) noexcept nogil
    void fc_blocked_d(int npix, const double* const* xp, const double* w, Py_ssize_t ntaps,
                      Py_ssize_t cb, Py_ssize_t w_tap, const double* init, Py_ssize_t init_pix,
                      double* const* out, Py_ssize_t nc, const fc_postops_f64* post,
                      Py_ssize_t pixel, Py_ssize_t c0, bint stream) noexcept nogil
    void fc_wgrad_blocked_f(int nci, const float* const* xp, Py_ssize_t ci0, const float* gy,
                            Py_ssize_t gy_pix, Py_ssize_t npix, float* gw, Py_ssize_t w_ci,
                            Py_ssize_t nc) noexcept nogil
    void fc_wgrad_blocked_d(int nci, const double* const* xp, Py_ssize_t ci0, const double* gy,
                            Py_ssize_t gy_pix, Py_ssize_t npix, double* gw, Py_ssize_t w_ci,
                            Py_ssize_t nc) noexcept nogil


cdef inline void scalar_block(int npix, const floating* const* xp, const floating* w,
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
                if xp[t * FC_BLK_PIX_MAX] == NULL:
                    continue
                for ci in range(cb):
                    acc = acc + xp[t * FC_BLK_PIX_MAX + p][ci] * w[t * w_tap + ci * ob + c]
            out[p][c] = acc
