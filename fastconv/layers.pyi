# Type stubs of fastconv.layers: PyTorch-style layers on NumPy arrays (NHWC, HWIO weights).
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, Self, overload

import numpy as np
import numpy.typing as npt

from fastconv._plan import ConvPlan
from fastconv.functional import _Algorithm, _Array, _Pair, _Padding, _PaddingMode

class Layer:
    param_names: tuple[str, ...]
    buffer_names: tuple[str, ...]
    training: bool
    grads: dict[str, np.ndarray]
    def __init__(self) -> None: ...
    def __call__(self, x: npt.ArrayLike) -> _Array: ...
    def forward(self, x: npt.ArrayLike) -> _Array: ...
    def backward(self, grad_output: npt.ArrayLike) -> _Array: ...
    def backward_params(self, grad_output: npt.ArrayLike) -> None: ...
    def train(self, mode: bool = True) -> Self: ...
    def eval(self) -> Self: ...
    def parameters(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]: ...
    def zero_grad(self) -> None: ...
    def buffers(self) -> Iterator[tuple[str, np.ndarray]]: ...
    def state_dict(self) -> dict[str, np.ndarray]: ...
    def load_state_dict(self, state_dict: Mapping[str, npt.ArrayLike], strict: bool = True) -> None: ...
    def extra_repr(self) -> str: ...

class _ConvBase(Layer):
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: _Padding
    dilation: tuple[int, int]
    groups: int
    dtype: np.dtype[Any]
    algorithm: _Algorithm
    weight: np.ndarray
    bias: np.ndarray | None
    def plan(self, input_shape: Sequence[int], dtype: npt.DTypeLike | None = None) -> ConvPlan: ...

class Conv2d(_ConvBase):
    padding_mode: str
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Pair,
        stride: _Pair = 1,
        padding: _Padding = 0,
        dilation: _Pair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: _PaddingMode = "zeros",
        dtype: npt.DTypeLike = ...,
        algorithm: _Algorithm = "auto",
        rng: np.random.Generator | int | None = None,
    ) -> None: ...

class ConvTranspose2d(_ConvBase):
    output_padding: tuple[int, int]
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Pair,
        stride: _Pair = 1,
        padding: _Padding = 0,
        output_padding: _Pair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: _Pair = 1,
        dtype: npt.DTypeLike = ...,
        algorithm: _Algorithm = "auto",
        rng: np.random.Generator | int | None = None,
    ) -> None: ...

class DepthwiseConv2d(Conv2d):
    depth_multiplier: int
    def __init__(
        self,
        in_channels: int,
        kernel_size: _Pair,
        depth_multiplier: int = 1,
        stride: _Pair = 1,
        padding: _Padding = 0,
        dilation: _Pair = 1,
        bias: bool = True,
        padding_mode: _PaddingMode = "zeros",
        dtype: npt.DTypeLike = ...,
        algorithm: _Algorithm = "auto",
        rng: np.random.Generator | int | None = None,
    ) -> None: ...

class SeparableConv2d(Layer):
    depthwise: DepthwiseConv2d
    pointwise: Conv2d
    in_channels: int
    out_channels: int
    depth_multiplier: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: _Padding
    dilation: tuple[int, int]
    padding_mode: str
    dtype: np.dtype[Any]
    algorithm: _Algorithm
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _Pair,
        depth_multiplier: int = 1,
        stride: _Pair = 1,
        padding: _Padding = 0,
        dilation: _Pair = 1,
        bias: bool = True,
        padding_mode: _PaddingMode = "zeros",
        dtype: npt.DTypeLike = ...,
        algorithm: _Algorithm = "auto",
        rng: np.random.Generator | int | None = None,
    ) -> None: ...

class Linear(Layer):
    in_features: int
    out_features: int
    dtype: np.dtype[Any]
    weight: np.ndarray
    bias: np.ndarray | None
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: npt.DTypeLike = ...,
        rng: np.random.Generator | int | None = None,
    ) -> None: ...

class ReLU(Layer):
    inplace: bool
    def __init__(self, inplace: bool = False) -> None: ...

class _PoolBase(Layer): ...

class MaxPool2d(_PoolBase):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: _Padding
    dilation: tuple[int, int]
    ceil_mode: bool
    def __init__(
        self,
        kernel_size: _Pair,
        stride: _Pair | None = None,
        padding: _Padding = 0,
        dilation: _Pair = 1,
        *,
        ceil_mode: bool = False,
    ) -> None: ...

class AvgPool2d(_PoolBase):
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: _Padding
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    dilation: tuple[int, int]
    def __init__(
        self,
        kernel_size: _Pair,
        stride: _Pair | None = None,
        padding: _Padding = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        dilation: _Pair = 1,
    ) -> None: ...

class Flatten(Layer):
    start_dim: int
    end_dim: int
    channels_first: bool
    def __init__(
        self, start_dim: int = 1, end_dim: int = -1, *, channels_first: bool = False
    ) -> None: ...

class _BatchNorm(Layer):
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool
    dtype: np.dtype[Any]
    weight: np.ndarray | None
    bias: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    num_batches_tracked: npt.NDArray[np.int64] | None
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: npt.DTypeLike = ...,
    ) -> None: ...

class BatchNorm2d(_BatchNorm): ...
class BatchNorm1d(_BatchNorm): ...

class _Activation(Layer):
    inplace: bool

class ReLU6(_Activation):
    def __init__(self, inplace: bool = False) -> None: ...

class LeakyReLU(_Activation):
    negative_slope: float
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None: ...

class ELU(_Activation):
    alpha: float
    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None: ...

class SiLU(_Activation):
    def __init__(self, inplace: bool = False) -> None: ...

class Hardswish(_Activation):
    def __init__(self, inplace: bool = False) -> None: ...

class Hardsigmoid(_Activation):
    def __init__(self, inplace: bool = False) -> None: ...

class Sigmoid(_Activation): ...
class Tanh(_Activation): ...

class GELU(_Activation):
    approximate: str
    def __init__(self, approximate: Literal["none", "tanh"] = "none") -> None: ...

class Softmax(_Activation):
    dim: int
    def __init__(self, dim: int = -1) -> None: ...

class LogSoftmax(Softmax): ...

class PReLU(Layer):
    num_parameters: int
    dtype: np.dtype[Any]
    weight: np.ndarray
    def __init__(self, num_parameters: int = 1, init: float = 0.25, dtype: npt.DTypeLike = ...) -> None: ...

_OutputSize = int | None | Sequence[int | None]

class AdaptiveAvgPool2d(_PoolBase):
    output_size: _OutputSize
    def __init__(self, output_size: _OutputSize) -> None: ...

class AdaptiveMaxPool2d(_PoolBase):
    output_size: _OutputSize
    def __init__(self, output_size: _OutputSize) -> None: ...

class Upsample(_PoolBase):
    size: int | Sequence[int] | None
    scale_factor: float | tuple[float, ...] | None
    mode: str
    align_corners: bool | None
    recompute_scale_factor: bool | None
    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
        mode: Literal["nearest", "bilinear"] = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None: ...

class Dropout(Layer):
    p: float
    inplace: bool
    rng: np.random.Generator
    def __init__(
        self, p: float = 0.5, inplace: bool = False, rng: np.random.Generator | int | None = None
    ) -> None: ...

class Dropout2d(Dropout): ...
class Identity(Layer): ...

class Sequential(Layer):
    layers: list[Layer]
    def __init__(self, *layers: Layer) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Layer]: ...
    @overload
    def __getitem__(self, index: int) -> Layer: ...
    @overload
    def __getitem__(self, index: slice) -> Sequential: ...

def from_torch(module: Any, input_shape: Sequence[int] | None = None) -> Layer: ...
def state_dict_from_torch(
    module: Any, state_dict: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]: ...

from fastconv.graph import Add as Add
from fastconv.graph import Concat as Concat
from fastconv.graph import Graph as Graph
from fastconv.graph import Merge as Merge
from fastconv.graph import Mul as Mul
from fastconv.graph import Parallel as Parallel
from fastconv.graph import Residual as Residual
