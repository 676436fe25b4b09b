# Type stubs of fastconv.optim: SGD (PyTorch's update rule), updating parameters in place.
from collections.abc import Iterable

import numpy as np

from fastconv.layers import Layer

class SGD:
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    def __init__(
        self,
        params: Layer | Iterable[tuple[str, np.ndarray, np.ndarray]],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None: ...
    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
