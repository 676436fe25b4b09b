# _blocked.pyx compiled with AVX-512 (F, VL, BW, DQ) + AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._blocked import (
    ISA as ISA,
    OUT_BLOCK as OUT_BLOCK,
    PIXEL_BLOCK as PIXEL_BLOCK,
    conv_backward_weight as conv_backward_weight,
    conv_forward as conv_forward,
    pack_weight as pack_weight,
    team_size as team_size,
)
