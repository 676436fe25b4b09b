# Type stubs of the compiled Winograd F(4x4, 3x3) kernel (_winograd.pyx).
# Arrays are float32 or float64 (one dtype per call); the GIL is released.
from fastconv._kernels._direct import _Floats
from fastconv._kernels._epilogue import Epilogue

ISA: str
TILE: int
POINTS: int
OUT_BLOCK: dict[str, int]

def transform_weight(w: _Floats, up: _Floats, num_threads: int) -> int: ...
def conv_forward(
    x: _Floats, up: _Floats, bias: _Floats, y: _Floats,
    top: int, left: int, groups: int, block: int, post: Epilogue | None, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def conv_backward_weight(
    x: _Floats, gy: _Floats, partial: _Floats, top: int, left: int, groups: int, block: int,
    num_threads: int,
) -> int: ...
def weight_gradient_taps(partial: _Floats, gw: _Floats, num_threads: int) -> int: ...
