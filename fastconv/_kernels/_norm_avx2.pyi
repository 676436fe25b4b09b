# _norm.pyx compiled with AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._norm import (
    channel_sums as channel_sums,
    grad_input as grad_input,
    grad_sums as grad_sums,
    normalize as normalize,
)
