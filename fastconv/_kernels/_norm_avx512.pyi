# _norm.pyx compiled with AVX-512 (F, VL, BW, DQ) + AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._norm import (
    batch_stats as batch_stats,
    normalize as normalize,
    train_backward as train_backward,
)
