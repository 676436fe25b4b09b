# Type stubs of the compiled optimizer updates (_optim.pyx). Arrays are flattened,
# C-contiguous, of one float dtype; the GIL is released.
from fastconv._kernels._direct import _Floats

def sgd_step(
    p: _Floats, buf: _Floats, g: _Floats, lr: float, momentum: float, weight_decay: float,
    nesterov: bool, first: bool, num_threads: int,
) -> None: ...
def zero(a: _Floats, stream: bool, num_threads: int) -> None: ...
