# Type stubs of fastconv.models: classic CNNs from fastconv layers (NHWC input).
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fastconv.graph import Parallel, Residual
from fastconv.layers import Layer, Sequential

_Rng = np.random.Generator | int | None

def conv_bn(
    cin: int,
    cout: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: Callable[[], Layer] | None = ...,
    *,
    dtype: npt.DTypeLike = ...,
    rng: _Rng = None,
) -> list[Layer]: ...
def basic_block(
    cin: int, cout: int, stride: int = 1, *, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def bottleneck(
    cin: int, width: int, stride: int = 1, *, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def resnet18(
    num_classes: int = 1000, *, width: int = 64, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def resnet50(
    num_classes: int = 1000, *, width: int = 64, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def squeeze_excitation(
    channels: int, squeezed: int, *, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Parallel: ...
def inverted_residual(
    cin: int, cout: int, stride: int, expand: int, *, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Residual | Sequential: ...
def mobilenet_v2(
    num_classes: int = 1000, *, width: int = 32, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def vgg16_bn(
    num_classes: int = 1000, *, width: int = 64, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
def unet(
    num_classes: int = 2,
    in_channels: int = 3,
    *,
    width: int = 64,
    depth: int = 4,
    dtype: npt.DTypeLike = ...,
    rng: _Rng = None,
) -> Sequential: ...
def dense_block(
    channels: int, growth: int, layers: int, *, dtype: npt.DTypeLike = ..., rng: _Rng = None
) -> Sequential: ...
