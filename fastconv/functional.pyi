# Type stubs of fastconv.functional (the runtime module is unannotated; stubtest keeps the
# two in step). Activations are NHWC, conv weights HWIO; see API.md and the docstrings.
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from fastconv._kernels._epilogue import Epilogue

# shared by the other stubs of the package (stub-only names: private)
_Array: TypeAlias = npt.NDArray[np.floating[Any]]
_Pair: TypeAlias = int | Sequence[int]
_Padding: TypeAlias = int | Sequence[int] | Sequence[Sequence[int]] | Literal["valid", "same"]
_PaddingMode: TypeAlias = Literal["zeros", "reflect", "symmetric", "replicate", "circular"]
_Algorithm: TypeAlias = str  # "auto", "direct", "im2col", "winograd", "blocked" (_algorithms.ALGORITHMS)
_Needs: TypeAlias = str | Iterable[str]  # drawn from "input", "weight", "bias"
_Grads: TypeAlias = tuple[_Array | None, _Array | None, _Array | None]

NEEDS: tuple[str, str, str]
WINOGRAD_GAIN: dict[str, float]

BLOCKED_WEIGHT_BYTES: int
BLOCKED_CACHE_BYTES: int
BLOCKED_CHUNK_PIXELS: int
BLOCKED_GRAD_UNITS: int

def winograd_weight(w: np.ndarray, groups: int) -> np.ndarray: ...
def pack_weight(w: np.ndarray, groups: int, block: int | None = None) -> tuple[np.ndarray, bool]: ...
def unpack_weight(packed: np.ndarray, out_channels: int) -> np.ndarray: ...
def contiguous_weight(w: np.ndarray) -> np.ndarray: ...

class PreparedWeight:
    algo: str
    weight: np.ndarray
    bias: np.ndarray
    shape: tuple[int, int, int, int]
    exact: bool
    max_weight: float
    max_bias: float
    def __init__(self, algo: str, weight: np.ndarray, bias: np.ndarray,
                 shape: tuple[int, int, int, int], exact: bool, max_weight: float,
                 max_bias: float) -> None: ...

def prepare_weight(algo: str, w: np.ndarray, bias: np.ndarray, groups: int) -> PreparedWeight: ...
def run_forward(prepared: PreparedWeight, x: np.ndarray, offsets: Any, y: np.ndarray,
                stride: Any, dilation: Any, groups: int,
                prepare_other: Callable[[str], PreparedWeight],
                post: Epilogue | None = None) -> None: ...
def bind_forward(prepared: PreparedWeight, x: np.ndarray, offsets: Any, y: np.ndarray,
                 stride: Any, dilation: Any, groups: int,
                 prepare_other: Callable[[str], PreparedWeight],
                 post: Epilogue | None = None) -> Callable[[], None]: ...
def bind_depthwise_pointwise(depthwise: PreparedWeight, pointwise: PreparedWeight,
                             x: np.ndarray, offsets: Any, y: np.ndarray, stride: Any,
                             dilation: Any, post: Epilogue | None = None,
                             pointwise_post: Epilogue | None = None) -> Callable[[], None]: ...
def bind_expand_depthwise_pointwise(
    expand: PreparedWeight, depthwise: PreparedWeight, pointwise: PreparedWeight,
    x: np.ndarray, offsets: Any, y: np.ndarray, stride: Any, dilation: Any,
    expand_post: Epilogue | None = None, post: Epilogue | None = None,
    pointwise_post: Epilogue | None = None,
) -> Callable[[], None]: ...
def expansion_joins(
    x_shape: Any, depthwise: PreparedWeight, pointwise: PreparedWeight, y_shape: Any,
    offsets: Any, stride: Any, dilation: Any,
) -> bool: ...
def pad(x: np.ndarray, pads: Any, mode: str, dtype: Any) -> np.ndarray: ...
def unpad(grad_padded: np.ndarray, pads: Any, mode: str, in_hw: Any) -> np.ndarray: ...
def conv2d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    padding_mode: _PaddingMode = "zeros",
    algorithm: _Algorithm = "auto",
) -> _Array: ...
def conv2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    padding_mode: _PaddingMode = "zeros",
    algorithm: _Algorithm = "auto",
    needs: _Needs = ("input", "weight", "bias"),
) -> _Grads: ...
def conv_transpose2d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: _Pair = 1,
    padding: _Padding = 0,
    output_padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    algorithm: _Algorithm = "auto",
) -> _Array: ...
def conv_transpose2d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    stride: _Pair = 1,
    padding: _Padding = 0,
    output_padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    algorithm: _Algorithm = "auto",
    needs: _Needs = ("input", "weight", "bias"),
) -> _Grads: ...
def conv_output_shape(
    input_hw: _Pair,
    kernel_size: _Pair,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
) -> tuple[int, int]: ...
def conv_transpose_output_shape(
    input_hw: _Pair,
    kernel_size: _Pair,
    stride: _Pair = 1,
    padding: _Padding = 0,
    output_padding: _Pair = 0,
    dilation: _Pair = 1,
) -> tuple[int, int]: ...
def conv1d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    padding_mode: _PaddingMode = "zeros",
    algorithm: _Algorithm = "auto",
) -> _Array: ...
def conv1d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    padding_mode: _PaddingMode = "zeros",
    algorithm: _Algorithm = "auto",
    needs: _Needs = ("input", "weight", "bias"),
) -> _Grads: ...
def conv_transpose1d(
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    bias: npt.ArrayLike | None = None,
    stride: _Pair = 1,
    padding: _Padding = 0,
    output_padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    algorithm: _Algorithm = "auto",
) -> _Array: ...
def conv_transpose1d_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    weight: npt.ArrayLike,
    stride: _Pair = 1,
    padding: _Padding = 0,
    output_padding: _Pair = 0,
    dilation: _Pair = 1,
    groups: int = 1,
    algorithm: _Algorithm = "auto",
    needs: _Needs = ("input", "weight", "bias"),
) -> _Grads: ...

# private helpers that other modules of the package use
def _as_2d(x: Any, weight: Any, stride: Any, padding: Any, dilation: Any,
           output_padding: Any = 0) -> tuple[Any, Any, Any, Any, Any, Any]: ...
def _conv_inputs(fn: str, x: Any, weight: Any, groups: Any, transposed: bool = ...) -> tuple[np.ndarray, np.ndarray, bool]: ...
# helpers that fastconv._plan shares
def _check_copied_padding(fn: str, mode: str, geo: Any) -> None: ...
def _bias_arg(bias: np.ndarray | None, dtype: Any) -> np.ndarray: ...
def _bounded(a: np.ndarray) -> bool: ...
def _max_abs(a: np.ndarray) -> float: ...
def _winograd_fits(dtype: Any, bound: float) -> bool: ...
def _padded_weight(w: np.ndarray, bias: np.ndarray, groups: int,
                   block: int) -> tuple[np.ndarray, np.ndarray]: ...
def _padded_depthwise_input(x: np.ndarray, channels: int) -> np.ndarray: ...
def _data_kernel(algorithm: str, gy: np.ndarray, w: np.ndarray, bias: np.ndarray,
                 out: np.ndarray, geo: Any, crop: Any = ...) -> None: ...
def _needs(needs: Any) -> frozenset[str]: ...
def _conv2d_gradients(gy: np.ndarray, x: np.ndarray, weight: np.ndarray, geo: Any, mode: str,
                      algorithm: str, wanted: Any, grad_weight_into: Any = ...) -> _Grads: ...
