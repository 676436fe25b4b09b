# Type stubs of _compare.pyx: byte comparison of two flat C-contiguous byte arrays.
import numpy as np
import numpy.typing as npt

def same_bytes(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], num_threads: int) -> bool: ...
