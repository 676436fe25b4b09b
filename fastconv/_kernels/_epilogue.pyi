# Type stubs of the compiled post-operation chain (_epilogue.pyx). Arrays are float32 or
# float64; the GIL is released.
from typing import Any

import numpy as np
from typing_extensions import disjoint_base

from fastconv._kernels._direct import _Floats

@disjoint_base
class Epilogue:
    """The chain y = act2(act1((y + bias) * scale + shift) + residual) for an output of
    `pixels` x `channels` values of `dtype`, as the kernels take it."""

    @property
    def itemsize(self) -> int: ...
    @property
    def pixels(self) -> int: ...
    @property
    def channels(self) -> int: ...
    def __init__(
        self, pixels: int, channels: int, dtype: Any, bias: np.ndarray | None = None,
        scale: np.ndarray | None = None, shift: np.ndarray | None = None, act1: int = 0,
        alpha1: float = 0.0, residual: np.ndarray | None = None, act2: int = 0,
        alpha2: float = 0.0,
    ) -> None: ...

def apply(y: _Floats, post: Epilogue | None, num_threads: int) -> int: ...
