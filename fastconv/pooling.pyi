# Type stubs of fastconv.pooling: max/average pooling (PyTorch's semantics, NHWC / NLC) and ReLU.
from collections.abc import Sequence
from typing import Any, Literal, TypeAlias, overload

import numpy as np
import numpy.typing as npt

from fastconv.functional import _Array, _Pair, _Padding

_Pair1d: TypeAlias = int | Sequence[int]  # an int or a 1-tuple
# an int or (p,) (both sides), (before, after), "same" or "valid"
_Padding1d: TypeAlias = int | Sequence[int] | Literal["valid", "same"]

CHANNEL_BLOCK: int

@overload
def max_pool2d(
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None = None,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> _Array: ...
@overload
def max_pool2d(
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None = None,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
) -> tuple[_Array, npt.NDArray[np.int64]]: ...
@overload
def max_pool2d(
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None,
    padding: _Padding,
    dilation: _Pair,
    ceil_mode: bool,
    return_indices: Literal[True],
) -> tuple[_Array, npt.NDArray[np.int64]]: ...
def max_pool2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None = None,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    ceil_mode: bool = False,
    indices: npt.ArrayLike | None = None,
) -> _Array: ...
def avg_pool2d(
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None = None,
    padding: _Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    dilation: _Pair = 1,
) -> _Array: ...
def avg_pool2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    kernel_size: _Pair,
    stride: _Pair | None = None,
    padding: _Padding = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    dilation: _Pair = 1,
) -> _Array: ...
@overload
def max_pool1d(
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None = None,
    padding: _Padding1d = 0,
    dilation: _Pair1d = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> _Array: ...
@overload
def max_pool1d(
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None = None,
    padding: _Padding1d = 0,
    dilation: _Pair1d = 1,
    ceil_mode: bool = False,
    *,
    return_indices: Literal[True],
) -> tuple[_Array, npt.NDArray[np.int64]]: ...
@overload
def max_pool1d(
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None,
    padding: _Padding1d,
    dilation: _Pair1d,
    ceil_mode: bool,
    return_indices: Literal[True],
) -> tuple[_Array, npt.NDArray[np.int64]]: ...
def max_pool1d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None = None,
    padding: _Padding1d = 0,
    dilation: _Pair1d = 1,
    ceil_mode: bool = False,
    indices: npt.ArrayLike | None = None,
) -> _Array: ...
def avg_pool1d(
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None = None,
    padding: _Padding1d = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    dilation: _Pair1d = 1,
) -> _Array: ...
def avg_pool1d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    kernel_size: _Pair1d,
    stride: _Pair1d | None = None,
    padding: _Padding1d = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    dilation: _Pair1d = 1,
) -> _Array: ...
def relu(x: npt.ArrayLike, *, out: npt.NDArray[Any] | None = None) -> _Array: ...
def relu_backward(grad_output: npt.ArrayLike, x: npt.ArrayLike) -> _Array: ...
