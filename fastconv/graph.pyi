# Type stubs of fastconv.graph: multi-input layers and the Graph container (NHWC).
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from fastconv.functional import _Array
from fastconv.layers import Layer

_Names = str | Sequence[str]

class Merge(Layer):
    num_inputs: int | None
    def __call__(self, *inputs: npt.ArrayLike) -> _Array: ...
    def forward(self, *inputs: npt.ArrayLike) -> _Array: ...
    def backward(self, grad_output: npt.ArrayLike) -> tuple[_Array, ...]: ...  # type: ignore[override]

class _Elementwise(Merge): ...
class Add(_Elementwise): ...
class Mul(_Elementwise): ...

class Binary(_Elementwise):
    op: str
    def __init__(self, op: str) -> None: ...

class Constant(Layer):
    op: str
    constant_first: bool
    value: np.ndarray
    def __init__(self, op: str, value: npt.ArrayLike, constant_first: bool = False,
                 trainable: bool = False) -> None: ...

class Pad(Layer):
    pads: tuple[tuple[int, int], ...]
    mode: str
    value: float
    def __init__(self, pads: Sequence[tuple[int, int]], mode: str = "constant",
                 value: float = 0.0) -> None: ...

class Permute(Layer):
    perm: tuple[int, ...]
    channels: int | None
    def __init__(self, perm: Sequence[int], channels: int | None = None) -> None: ...

class Concat(Merge):
    dim: int
    def __init__(self, dim: int = -1) -> None: ...

class Graph(Layer):
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: list[tuple[str, Layer, tuple[str, ...]]]
    def __init__(
        self,
        nodes: Sequence[tuple[str, Layer, _Names]],
        inputs: _Names = ("x",),
        outputs: _Names | None = None,
    ) -> None: ...
    @property
    def num_inputs(self) -> int: ...
    def __call__(self, *inputs: npt.ArrayLike) -> _Array | tuple[_Array, ...]: ...  # type: ignore[override]
    def __getitem__(self, name: str) -> Layer: ...
    def forward(self, *inputs: npt.ArrayLike) -> _Array | tuple[_Array, ...]: ...  # type: ignore[override]
    def backward(  # type: ignore[override]
        self, grad_output: npt.ArrayLike | Sequence[npt.ArrayLike | None]
    ) -> _Array | tuple[_Array, ...]: ...
    def backward_params(
        self, grad_output: npt.ArrayLike | Sequence[npt.ArrayLike | None]
    ) -> None: ...
    def buffers(self) -> Iterator[tuple[str, np.ndarray]]: ...

class Residual(Graph):
    def __init__(
        self, body: Layer, shortcut: Layer | None = None, merge: Merge | None = None
    ) -> None: ...

class Parallel(Graph):
    branches: list[Layer | None]
    def __init__(self, *branches: Layer | None, merge: Merge | None = None) -> None: ...
