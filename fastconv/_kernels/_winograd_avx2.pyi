# _winograd.pyx compiled with AVX2 (x86-64 only; picked at run time when the CPU has it)
from fastconv._kernels._winograd import (
    ISA as ISA,
    OUT_BLOCK as OUT_BLOCK,
    POINTS as POINTS,
    conv_backward_weight as conv_backward_weight,
    TILE as TILE,
    conv_forward as conv_forward,
    transform_weight as transform_weight,
    weight_gradient_taps as weight_gradient_taps,
)
