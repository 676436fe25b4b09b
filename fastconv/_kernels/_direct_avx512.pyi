# _direct.pyx compiled with AVX-512 (F, VL, BW, DQ) (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._direct import (
    CHANNEL_BLOCK as CHANNEL_BLOCK,
    ISA as ISA,
    POINTWISE_BLOCK as POINTWISE_BLOCK,
    conv_backward_weight as conv_backward_weight,
    conv_forward as conv_forward,
    data_depthwise as data_depthwise,
    depthwise_pointwise as depthwise_pointwise,
    expand_depthwise_pointwise as expand_depthwise_pointwise,
)
