# _scan.pyx compiled with AVX2 + FMA (x86-64 only; picked at run time when the CPU has them)
from fastconv._kernels._scan import max_abs as max_abs
from fastconv._kernels._scan import same_bytes as same_bytes
