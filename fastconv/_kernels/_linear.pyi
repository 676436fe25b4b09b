# Type stubs of the compiled few-rows product (_linear.pyx; _linear_avx2 and _linear_avx512 are
# the same source compiled for wider instruction sets). Arrays are 2-D, C-contiguous, of one
# float dtype; the GIL is released.
from fastconv._kernels._direct import _Floats

MAX_ROWS: int
SCRATCH_BYTES: int

def chunks(K: int, N: int) -> int: ...
def few_rows_matmul(
    x: _Floats, w: _Floats, bias: _Floats, y: _Floats, num_threads: int,
) -> None: ...
