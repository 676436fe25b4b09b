# Type stubs of the compiled batch-normalisation kernels (_norm.pyx). Arrays are C-contiguous;
# activations float32 or float64 (one dtype per call), statistics and sums float64; the GIL
# is released. The functions returning int give 1 when scratch memory could not be allocated.
import numpy as np
import numpy.typing as npt

from fastconv._kernels._direct import _Floats

_Doubles = npt.NDArray[np.float64]

def batch_stats(x: _Floats, chunks: int, stats: _Doubles, num_threads: int) -> int: ...
def train_backward(
    g: _Floats, x: _Floats, stats: _Doubles, weight: _Floats, eps: float, training: bool,
    chunks: int, grads: _Doubles, gx: _Floats, num_threads: int,
) -> int: ...
def normalize(
    x: _Floats, weight: _Floats, bias: _Floats, eps: float, stats: _Doubles, out: _Floats,
    num_threads: int,
) -> int: ...
