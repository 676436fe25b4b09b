# Type stubs of the compiled batch-normalisation kernels (_norm.pyx). Arrays are C-contiguous;
# activations float32 or float64 (one dtype per call), sums float64; the GIL is released.
import numpy as np
import numpy.typing as npt

from fastconv._kernels._direct import _Floats

_Doubles = npt.NDArray[np.float64]

def channel_sums(x: _Floats, centre: _Doubles, partial: _Doubles, num_threads: int) -> None: ...
def grad_sums(
    g: _Floats, x: _Floats, mean: _Doubles, sum_g: _Doubles, sum_gc: _Doubles,
    num_threads: int,
) -> None: ...
def grad_input(
    g: _Floats, x: _Floats, mean: _Floats, a: _Floats, b: _Floats, shift: _Floats,
    out: _Floats, num_threads: int,
) -> None: ...
def normalize(
    x: _Floats, mean: _Floats, scale: _Floats, shift: _Floats, out: _Floats, num_threads: int,
) -> None: ...
