# _im2col.pyx compiled with AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._im2col import (
    conv_backward_data as conv_backward_data,
    conv_backward_weight as conv_backward_weight,
    conv_forward as conv_forward,
    transpose_single_tap as transpose_single_tap,
)
