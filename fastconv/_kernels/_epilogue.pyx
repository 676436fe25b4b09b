"""Post-operations on a finished convolution output, in place, in one pass (see
fastconv_epilogue.h for the chain and fastconv._postops for its Python description).

Shapes:
    y         (rows, C)   the output as rows of C channels (NHWC: rows = N * H * W)
    bias, scale, shift (C,) or empty (step absent)
    residual  (rows, C) or (0, C) (absent)
"""
from cython cimport floating
from cython.parallel cimport prange

cdef extern from "fastconv_epilogue.h" nogil:
    ctypedef struct fc_postops_f32:
        const float* bias
        const float* scale
        const float* shift
        int act1
        float alpha1
        int act2
        float alpha2
    ctypedef struct fc_postops_f64:
        const double* bias
        const double* scale
        const double* shift
        int act1
        double alpha1
        int act2
        double alpha2
    void fc_postops_row_f32(const fc_postops_f32* p, float* y, const float* residual,
                            Py_ssize_t c)
    void fc_postops_row_f64(const fc_postops_f64* p, double* y, const double* residual,
                            Py_ssize_t c)





def apply(floating[:, ::1] y,                 # IN/OUT (rows, C)
          const floating[::1] bias,           # IN (C,) or (0,)
          const floating[::1] scale,          # IN (C,) or (0,)
          const floating[::1] shift,          # IN (C,) or (0,)
          int act1, double alpha1,
          const floating[:, ::1] residual,    # IN (rows, C) or (0, C)
          int act2, double alpha2,
          int num_threads):
    """y = act2(act1((y + bias) * scale + shift) + residual), row by row, in place."""
    cdef Py_ssize_t rows = y.shape[0], c = y.shape[1], row
    cdef fc_postops_f32 p32
    cdef fc_postops_f64 p64
    cdef bint has_residual = residual.shape[0] > 0
    if rows == 0 or c == 0:
        return 0
    if floating is float:
        p32.bias = &bias[0] if bias.shape[0] else NULL
        p32.scale = &scale[0] if scale.shape[0] else NULL
        p32.shift = &shift[0] if shift.shape[0] else NULL
        p32.act1, p32.alpha1, p32.act2, p32.alpha2 = act1, <float>alpha1, act2, <float>alpha2
        for row in prange(rows, nogil=True, schedule="static", chunksize=16,
                          num_threads=num_threads):
            fc_postops_row_f32(&p32, &y[row, 0], &residual[row, 0] if has_residual else NULL, c)
    else:
        p64.bias = &bias[0] if bias.shape[0] else NULL
        p64.scale = &scale[0] if scale.shape[0] else NULL
        p64.shift = &shift[0] if shift.shape[0] else NULL
        p64.act1, p64.alpha1, p64.act2, p64.alpha2 = act1, alpha1, act2, alpha2
        for row in prange(rows, nogil=True, schedule="static", chunksize=16,
                          num_threads=num_threads):
            fc_postops_row_f64(&p64, &y[row, 0], &residual[row, 0] if has_residual else NULL, c)
    return 0
