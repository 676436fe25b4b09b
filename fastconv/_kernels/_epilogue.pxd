# The post-operation chain of fastconv_epilogue.h as kernels take it: an Epilogue made in
# Python (fastconv._postops) and, inside a kernel, chain_span on each stretch it stores.
from cython cimport floating

cdef extern from "fastconv_epilogue.h" nogil:
    ctypedef struct fc_postops_f32:
        const float* bias
        const float* scale
        const float* shift
        int act1
        float alpha1
        const float* residual
        Py_ssize_t residual_pixel
        int act2
        float alpha2
    ctypedef struct fc_postops_f64:
        const double* bias
        const double* scale
        const double* shift
        int act1
        double alpha1
        const double* residual
        Py_ssize_t residual_pixel
        int act2
        double alpha2
    void fc_postops_pixels_f32(const fc_postops_f32* p, float* y, Py_ssize_t pixel,
                               Py_ssize_t npix, Py_ssize_t y_pix, Py_ssize_t c0, Py_ssize_t n)
    void fc_postops_pixels_f64(const fc_postops_f64* p, double* y, Py_ssize_t pixel,
                               Py_ssize_t npix, Py_ssize_t y_pix, Py_ssize_t c0, Py_ssize_t n)


cdef class Epilogue:
    cdef fc_postops_f32 f32
    cdef fc_postops_f64 f64
    cdef readonly Py_ssize_t itemsize, pixels, channels
    cdef object _arrays  # keeps the vectors and the residual the pointers point into


cdef inline const void* chain_of(Epilogue post, Py_ssize_t itemsize, Py_ssize_t pixels,
                                 Py_ssize_t channels) except? NULL:
    """The chain for a kernel's output of `pixels` x `channels` values of `itemsize` bytes
    (NULL for none); ValueError when `post` was made for another output."""
    if post is None:
        return NULL
    if post.itemsize != itemsize or post.pixels != pixels or post.channels != channels:
        raise ValueError(f"Epilogue: made for {post.pixels} x {post.channels} values of "
                         f"{post.itemsize} bytes, but the output has {pixels} x {channels} "
                         f"of {itemsize}")
    return <const void*> &post.f32 if itemsize == 4 else <const void*> &post.f64


cdef inline void chain_span(const void* chain, floating* y, Py_ssize_t pixel, Py_ssize_t npix,
                            Py_ssize_t y_pix, Py_ssize_t c0, Py_ssize_t n) noexcept nogil:
    """The chain on channels [c0, c0 + n) of the npix output pixels from `pixel` on
    (row-major over N, H, W), stored y_pix values apart from y on; nothing when chain is
    NULL."""
    if chain == NULL:
        return
    if floating is float:
        fc_postops_pixels_f32(<const fc_postops_f32*> chain, y, pixel, npix, y_pix, c0, n)
    else:
        fc_postops_pixels_f64(<const fc_postops_f64*> chain, y, pixel, npix, y_pix, c0, n)
