# Type stubs of the compiled layout changes (_layout.pyx). Arrays are C-contiguous, of one
# float dtype; the GIL is released.
from fastconv._kernels._direct import _Floats

TILE: int
FEW_ROWS: int

def transpose_batched(x: _Floats, out: _Floats, num_threads: int) -> None: ...
