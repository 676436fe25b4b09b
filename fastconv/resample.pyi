# Type stubs of fastconv.resample: adaptive pooling and interpolation (PyTorch's semantics, NHWC).
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from fastconv.functional import _Array

_OutputSize = int | None | Sequence[int | None]
_Mode = Literal["nearest", "bilinear"]
_Scale = float | Sequence[float]

INTERPOLATE_MODES: tuple[str, str]

def adaptive_avg_pool2d(x: npt.ArrayLike, output_size: _OutputSize) -> _Array: ...
def adaptive_avg_pool2d_backward(
    grad_output: npt.ArrayLike, x: npt.ArrayLike, output_size: _OutputSize
) -> _Array: ...
@overload
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: _OutputSize, return_indices: Literal[False] = False
) -> _Array: ...
@overload
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: _OutputSize, return_indices: Literal[True]
) -> tuple[_Array, npt.NDArray[np.int64]]: ...
def adaptive_max_pool2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    output_size: _OutputSize,
    indices: npt.ArrayLike | None = None,
) -> _Array: ...
def interpolate(
    x: npt.ArrayLike,
    size: int | Sequence[int] | None = None,
    scale_factor: _Scale | None = None,
    mode: _Mode = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> _Array: ...
def interpolate_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    size: int | Sequence[int] | None = None,
    scale_factor: _Scale | None = None,
    mode: _Mode = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
) -> _Array: ...
