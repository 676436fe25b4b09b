# Type stubs of fastconv.losses: softmax cross-entropy and its gradient.
from typing import Literal

import numpy.typing as npt

from fastconv.functional import _Array

REDUCTIONS: tuple[str, str]

def softmax_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, reduction: Literal["mean", "sum"] = "mean"
) -> tuple[float, _Array]: ...

class CrossEntropyLoss:
    reduction: str
    def __init__(self, reduction: Literal["mean", "sum"] = "mean") -> None: ...
    def __call__(self, logits: npt.ArrayLike, target: npt.ArrayLike) -> float: ...
    def backward(self) -> _Array: ...
