# Type stubs of fastconv.onnx: ONNX models as fastconv Graphs (NCHW at the edges, NHWC inside).
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fastconv.graph import Binary as Binary, Constant as Constant, Graph, Merge, Pad as Pad
from fastconv.graph import Permute as Permute
from fastconv.layers import Layer

OPSETS: tuple[int, int]
SUPPORTED: dict[str, str]

class OnnxError(ValueError): ...

class Reshape(Layer):
    shape: tuple[int, ...]
    def __init__(self, shape: Sequence[int]) -> None: ...

class Squeeze(Layer):
    axes: tuple[int, ...]
    unsqueeze: bool
    def __init__(self, axes: Sequence[int], unsqueeze: bool = False) -> None: ...

class Slice(Layer):
    index: tuple[slice, ...]
    def __init__(self, index: Sequence[slice]) -> None: ...

class Gather(Layer):
    indices: np.ndarray
    axis: int
    def __init__(self, indices: npt.ArrayLike, axis: int) -> None: ...

class Reduce(Layer):
    op: str
    axes: tuple[int, ...]
    keepdims: bool
    def __init__(self, op: str, axes: Sequence[int], keepdims: bool = True) -> None: ...

class Elementwise(Layer):
    op: str
    args: tuple[float, ...]
    def __init__(self, op: str, *args: float) -> None: ...

class MatMul(Merge): ...

class Resize(Layer):
    size: tuple[int, ...] | None
    scales: tuple[float, ...] | None
    mode: str
    coordinate_mode: str
    nearest_mode: str
    def __init__(self, size: Sequence[int] | None = None, scales: Sequence[float] | None = None,
                 mode: str = "nearest", coordinate_mode: str = "half_pixel",
                 nearest_mode: str = "round_prefer_floor") -> None: ...

class OnnxModel(Graph):
    names: dict[str, str]
    def __init__(self, nodes: Sequence[tuple[str, Layer, str | Sequence[str]]],
                 inputs: str | Sequence[str], outputs: str | Sequence[str],
                 names: dict[str, str] | None = None) -> None: ...
    def parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]: ...
    def buffers(self) -> Iterator[tuple[str, np.ndarray]]: ...

def load(model: str | os.PathLike[str] | bytes | Any) -> OnnxModel: ...
