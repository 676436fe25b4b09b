# Type stubs of fastconv.optim: SGD, Adam and AdamW (PyTorch's update rules) with parameter
# groups, updating parameters in place; gradient clipping by norm.
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

from fastconv.optim import lr_scheduler as lr_scheduler

_Triple = tuple[str, np.ndarray, np.ndarray]

class _Model(Protocol):
    def parameters(self) -> Iterable[_Triple]: ...

_Params = _Model | Iterable[_Triple] | Iterable[dict[str, Any]]

class Optimizer:
    defaults: dict[str, Any]
    param_groups: list[dict[str, Any]]
    state: dict[str, dict[str, Any]]
    def __init__(self, params: _Params, defaults: dict[str, Any]) -> None: ...
    def add_param_group(self, param_group: dict[str, Any]) -> None: ...
    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...

class SGD(Optimizer):
    def __init__(
        self,
        params: _Params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None: ...

class Adam(Optimizer):
    def __init__(
        self,
        params: _Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None: ...

class AdamW(Adam):
    def __init__(
        self,
        params: _Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None: ...

def decay_groups(
    params: _Model | Iterable[_Triple],
    weight_decay: float | None = None,
    no_decay: Callable[[str, np.ndarray], bool] | None = None,
) -> list[dict[str, Any]]: ...
def clip_grad_norm_(
    parameters: _Model | Iterable[_Triple],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float: ...
