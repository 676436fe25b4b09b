# Type stubs of the compiled pooling kernels (_pool.pyx; _pool_avx2 and _pool_avx512 are the
# same source compiled for wider instruction sets). Arrays are C-contiguous NHWC
# float32 or float64 (indices int64); the GIL is released.
import numpy as np
import numpy.typing as npt

from fastconv._kernels._direct import _Floats

def max_pool_forward(
    x: _Floats, y: _Floats, idx: npt.NDArray[np.int64],
    kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, dh: int, dw: int,
    vector_window_taps: int, num_threads: int,
) -> None: ...
def max_pool_backward(
    gy: _Floats, idx: npt.NDArray[np.int64], gx: _Floats, channel_block: int, num_threads: int,
) -> None: ...
def avg_pool_forward(
    x: _Floats, y: _Floats, kh: int, kw: int, sh: int, sw: int, top: int, bottom: int,
    left: int, right: int, dh: int, dw: int, count_include_pad: bool, divisor_override: int,
    num_threads: int,
) -> None: ...
def avg_pool_backward(
    gy: _Floats, gx: _Floats, kh: int, kw: int, sh: int, sw: int, top: int, bottom: int,
    left: int, right: int, dh: int, dw: int, count_include_pad: bool, divisor_override: int,
    num_threads: int,
) -> None: ...
def relu_forward(
    x: _Floats, y: _Floats, keep: npt.NDArray[np.uint8] | npt.NDArray[np.bool_],
    num_threads: int,
) -> None: ...
def relu_backward(
    gy: _Floats, keep: npt.NDArray[np.uint8] | npt.NDArray[np.bool_], gx: _Floats,
    num_threads: int,
) -> None: ...
