# Type stubs of the compiled direct-convolution kernels (_direct.pyx; _direct_avx2 and
# _direct_avx512 are the same source compiled for wider instruction sets).
# Arrays are C-contiguous float32 or float64 (one dtype per call); the kernels assume
# validated arguments (fastconv.functional checks them; a stride, dilation or group count
# below 1, a division by zero, is a ValueError here too) and release the GIL.
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from fastconv._kernels._epilogue import Epilogue

_Floats: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]

ISA: str  # "baseline", "avx2" or "avx512": the instruction set this module was built for
CHANNEL_BLOCK: dict[str, int]  # {"float32": n, "float64": n}: output channels per vector
POINTWISE_BLOCK: dict[str, int]  # depthwise_pointwise's 1x1 weight: channels per packed block

def conv_forward(
    x: _Floats, w: _Floats, bias: _Floats, y: _Floats,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, groups: int, exact: bool,
    stream: bool, post: Epilogue | None, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def depthwise_pointwise(
    x: _Floats, w: _Floats, bias: _Floats, post: Epilogue | None, wp: _Floats,
    pw_bias: _Floats, y: _Floats, top: int, left: int, sh: int, sw: int, dh: int, dw: int,
    pw_post: Epilogue | None, item_pixels: int, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def expand_depthwise_pointwise(
    x: _Floats, we: _Floats, e_bias: _Floats, e_post: Epilogue | None, w: _Floats,
    bias: _Floats, post: Epilogue | None, wp: _Floats, pw_bias: _Floats, y: _Floats,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, pw_post: Epilogue | None,
    buffer_rows: int, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
def conv_backward_weight(
    x: _Floats, gy: _Floats, partial: _Floats, kh: int, kw: int,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, groups: int, num_threads: int,
) -> None: ...
def data_depthwise(
    gy: _Floats, w: _Floats, bias: _Floats, out: _Floats,
    top: int, left: int, sh: int, sw: int, dh: int, dw: int, stream: bool, num_threads: int,
) -> int: ...  # 0, or 1 when a scratch buffer could not be allocated
