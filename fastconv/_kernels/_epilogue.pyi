# Type stubs of the compiled post-operation kernel (_epilogue.pyx). Arrays are C-contiguous
# float32 or float64 of one dtype; the GIL is released.
from fastconv._kernels._direct import _Floats

def apply(
    y: _Floats, bias: _Floats, scale: _Floats, shift: _Floats, act1: int, alpha1: float,
    residual: _Floats, act2: int, alpha2: float, num_threads: int,
) -> int: ...
