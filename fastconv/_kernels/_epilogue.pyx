# cython: auto_pickle=False
"""Post-operations on a convolution's output (fastconv_epilogue.h's chain
y = act2(act1((y + bias) * scale + shift) + residual)): the Epilogue that kernels take to
apply it in their stores, and apply(), the same chain as one pass over a finished output.

Shapes (P output pixels of C channels, NHWC: P = N * H * W):
    y                   (P, C)
    bias, scale, shift  (C,) or None (step absent)
    residual            (P, C) C-contiguous, or None (absent)
"""
import numpy as np
from cython.parallel cimport prange


cdef class Epilogue:
    """The chain for an output of `pixels` x `channels` values of `dtype` (float32 or
    float64); activation codes are fastconv._postops.ACTIVATIONS' (0: none). The arrays are
    converted to `dtype` and kept alive here."""

    def __init__(self, Py_ssize_t pixels, Py_ssize_t channels, dtype, bias=None, scale=None,
                 shift=None, int act1=0, double alpha1=0.0, residual=None, int act2=0,
                 double alpha2=0.0):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Epilogue: dtype must be float32 or float64, but got {dtype}")
        if pixels < 0 or channels < 0:
            raise ValueError(f"Epilogue: pixels and channels must be >= 0, but got "
                             f"{pixels} and {channels}")
        self.itemsize, self.pixels, self.channels = dtype.itemsize, pixels, channels
        vectors = []
        for name, v in (("bias", bias), ("scale", scale), ("shift", shift)):
            if v is not None:
                v = np.ascontiguousarray(v, dtype)
                if v.shape != (channels,):
                    raise ValueError(f"Epilogue: {name} must have shape ({channels},), but "
                                     f"got {v.shape}")
            vectors.append(v)
        if residual is not None:
            residual = np.ascontiguousarray(residual, dtype).reshape(-1, channels) \
                if np.size(residual) else np.zeros((0, channels), dtype)
            if residual.shape != (pixels, channels):
                raise ValueError(f"Epilogue: residual must have {pixels} x {channels} values, "
                                 f"but got shape {residual.shape}")
        self._arrays = (*vectors, residual)
        if dtype == np.float32:
            self.f32.bias = <const float*> _address(vectors[0])
            self.f32.scale = <const float*> _address(vectors[1])
            self.f32.shift = <const float*> _address(vectors[2])
            self.f32.residual = <const float*> _address(residual)
            self.f32.residual_pixel = channels
            self.f32.act1, self.f32.alpha1, self.f32.act2, self.f32.alpha2 = \
                act1, <float> alpha1, act2, <float> alpha2
        else:
            self.f64.bias = <const double*> _address(vectors[0])
            self.f64.scale = <const double*> _address(vectors[1])
            self.f64.shift = <const double*> _address(vectors[2])
            self.f64.residual = <const double*> _address(residual)
            self.f64.residual_pixel = channels
            self.f64.act1, self.f64.alpha1, self.f64.act2, self.f64.alpha2 = \
                act1, alpha1, act2, alpha2


cdef size_t _address(a):
    """The first element's address of a C-contiguous array kept alive by the Epilogue (0,
    a NULL pointer, for None or an empty array: the step is absent)."""
    return 0 if a is None or a.size == 0 else <size_t> a.ctypes.data


def apply(floating[:, ::1] y, Epilogue post, int num_threads):
    """The chain on y (P, C) in place, row by row (OpenMP over rows); None: nothing."""
    cdef Py_ssize_t rows = y.shape[0], c = y.shape[1], row
    cdef const void* chain = chain_of(post, sizeof(floating), rows, c)
    if rows == 0 or c == 0:
        return 0
    cdef Py_ssize_t chunk = 16
    for row in prange(0, rows, chunk, nogil=True, schedule="static", num_threads=num_threads):
        chain_span(chain, &y[row, 0], row, min(chunk, rows - row), c, 0, c)
    return 0
