"""fastconv: Cython-accelerated CPU convolutions for NumPy, in NHWC layout.

Activations are NHWC (N, H, W, C), conv weights HWIO (kh, kw, C_in // groups, C_out).
See README.md and the docstrings of the functions below.
"""
from importlib.metadata import PackageNotFoundError, version

from fastconv import filters, layers, losses, optim
from fastconv._algorithms import get_auto_winograd, set_auto_winograd
from fastconv._autotune import (
    get_autotune,
    load_autotune_cache,
    save_autotune_cache,
    set_autotune,
)
from fastconv._threads import get_num_threads, num_threads, set_num_threads
from fastconv.functional import (
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv_output_shape,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose_output_shape,
)
from fastconv.layers import (
    AvgPool2d,
    Conv2d,
    ConvTranspose2d,
    DepthwiseConv2d,
    Flatten,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    SeparableConv2d,
    Sequential,
)
from fastconv.matrix import conv_matrix
from fastconv.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    relu,
    relu_backward,
)

try:
    __version__ = version("fastconv")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "ConvTranspose2d",
    "DepthwiseConv2d",
    "Flatten",
    "Layer",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "SeparableConv2d",
    "Sequential",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv_matrix",
    "conv_output_shape",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv_transpose_output_shape",
    "filters",
    "get_auto_winograd",
    "get_autotune",
    "get_num_threads",
    "layers",
    "load_autotune_cache",
    "losses",
    "max_pool2d",
    "max_pool2d_backward",
    "num_threads",
    "optim",
    "relu",
    "relu_backward",
    "save_autotune_cache",
    "set_auto_winograd",
    "set_autotune",
    "set_num_threads",
]
