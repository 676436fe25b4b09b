# _linear.pyx compiled with AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._linear import MAX_ROWS as MAX_ROWS
from fastconv._kernels._linear import SCRATCH_BYTES as SCRATCH_BYTES
from fastconv._kernels._linear import chunks as chunks
from fastconv._kernels._linear import few_rows_matmul as few_rows_matmul
