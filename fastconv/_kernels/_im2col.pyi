# Type stubs of the compiled tiled im2col + BLAS GEMM kernels (_im2col.pyx).
# Arrays are C-contiguous float32 or float64 (one dtype per call); the GIL is released.
from fastconv._kernels._direct import _Floats
from fastconv._kernels._epilogue import Epilogue

def conv_forward(
    x: _Floats, w: _Floats, bias: _Floats, y: _Floats,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, groups: int, tile: int,
    post: Epilogue | None, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def conv_backward_weight(
    x: _Floats, gy: _Floats, partial: _Floats, kh: int, kw: int,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, groups: int, tile: int,
    num_threads: int,
) -> int: ...
def conv_backward_data(
    gy: _Floats, w: _Floats, out: _Floats, top: int, left: int, sh: int, sw: int, dh: int,
    dw: int, tile: int, chunk: int, num_threads: int,
) -> int: ...
def transpose_single_tap(
    x: _Floats, wg: _Floats, bias: _Floats, out: _Floats, kh: int, kw: int,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, tile: int, rows: bool,
    num_threads: int,
) -> int: ...
