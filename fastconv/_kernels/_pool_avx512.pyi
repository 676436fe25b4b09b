# _pool.pyx compiled with AVX-512 (F, VL, BW, DQ) + AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._pool import (
    avg_pool_backward as avg_pool_backward,
    avg_pool_forward as avg_pool_forward,
    max_pool_backward as max_pool_backward,
    max_pool_forward as max_pool_forward,
    relu_backward as relu_backward,
    relu_forward as relu_forward,
)
