# Type stubs of _scan.pyx: passes that only read arrays (flat, C-contiguous).
import numpy as np
import numpy.typing as npt

from fastconv._kernels._direct import _Floats

def same_bytes(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], num_threads: int) -> bool: ...
def max_abs(a: _Floats, num_threads: int) -> float: ...
