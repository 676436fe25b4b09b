# Type stubs of the compiled blocked direct-convolution kernel (_blocked.pyx; _blocked_avx2
# and _blocked_avx512 are the same source compiled for wider instruction sets).
# Arrays are C-contiguous float32 or float64 (one dtype per call; y may be a view with
# strided rows and pixels); the kernel assumes validated arguments and releases the GIL.
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from fastconv._kernels._epilogue import Epilogue

_Floats: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

ISA: str  # "baseline", "avx2" or "avx512": the instruction set this module was built for
PIXEL_BLOCK: int  # output pixels per register block
OUT_BLOCK: dict[str, int]  # {"float32": n, "float64": n}: output channels per packed block

def conv_forward(
    x: _Floats, wp: _Floats, bias: _Floats, y: _Floats,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, in_block: int,
    item_pixels: int,
    weight_outer: bool, stream: bool, post: Epilogue | None, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def conv_backward_weight(
    x: _Floats, gy: _Floats, gw: _Floats, top: int, left: int, sh: int, sw: int, dh: int,
    dw: int, groups: int, out_ranges: int, in_ranges: int, chunk_pixels: int,
    num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def pack_weight(w: _Floats, wp: _Floats, num_threads: int) -> bool: ...  # True: w all finite
def team_size(num_threads: int) -> int: ...  # threads an OpenMP region of num_threads gets
