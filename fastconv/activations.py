"""Activation functions and their backward passes, with PyTorch's semantics (torch.nn.functional).

Every function takes an array of any shape and returns float32 or float64
(np.result_type(x, float32)). The elementwise ones take `out=` (a float array of x's shape and
the result dtype, x itself for an in-place activation); otherwise x is never modified.
softmax / log_softmax work along `dim` (default -1: the channels of an NHWC array), prelu has
one learnable slope per channel (the last axis) or one shared.

Each backward takes grad_output = dL/dy and what it needs: the input x, or the output y for
sigmoid, tanh, elu, softmax and log_softmax (as PyTorch's autograd keeps them). At the kinks
the gradients are PyTorch's (e.g. relu6: 0 at 0 and 6; leaky_relu: negative_slope at 0;
hardswish: 0 at -3, 1 at 3; hardsigmoid: 0 at +-3). relu and relu_backward live in
fastconv.pooling.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special

from fastconv import _params

GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715


def _input(x) -> np.ndarray:
    x = _params.as_array("input", x)
    return x.astype(_params.float_dtype(x), copy=False)


def _result(fn: str, x: np.ndarray, out) -> np.ndarray | None:
    """`out` checked: None, or a float array of x's shape and (result) dtype."""
    if out is not None and (not isinstance(out, np.ndarray) or out.shape != x.shape
                            or out.dtype != x.dtype):
        got = (f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray)
               else type(out).__name__)
        raise ValueError(f"{fn}: out must be a {x.dtype} array of shape {x.shape}, but got "
                         f"{got}")
    return out


def _store(y: np.ndarray, out) -> np.ndarray:
    if out is None:
        return y
    np.copyto(out, y)
    return out


def _grad_and(fn: str, grad_output, x, what: str = "input") -> tuple[np.ndarray, np.ndarray]:
    """grad_output and x (the input or output of the forward), same shape, common float dtype."""
    gy = _params.as_array("grad_output", grad_output)
    x = _params.as_array(what, x)
    if gy.shape != x.shape:
        raise ValueError(f"{fn}: expected grad_output of shape {x.shape} (the shape of the "
                         f"{what}), but got {gy.shape}")
    dtype = _params.float_dtype(gy, x)
    return gy.astype(dtype, copy=False), x.astype(dtype, copy=False)


def _dim(fn: str, dim, ndim: int) -> int:
    dim = _params.as_int("dim", dim)
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"{fn}: dim must be in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] for a "
                         f"{ndim}-D input, but got {dim}")
    return dim


# ----------------------------------------------------------------------------------------------
# piecewise linear

def relu6(x, *, out=None):
    """min(max(x, 0), 6) elementwise (torch.nn.functional.relu6); NaN propagates."""
    x = _input(x)
    return np.clip(x, 0, 6, out=_result("relu6", x, out))


def relu6_backward(grad_output, x):
    """Gradient of relu6: grad_output where 0 < x < 6, else 0 (0 at 0 and at 6, PyTorch's
    hardtanh_backward; a NaN passes its gradient). x may also be relu6's output."""
    gy, x = _grad_and("relu6_backward", grad_output, x)
    return np.where((x <= 0) | (x >= 6), gy.dtype.type(0), gy)


def leaky_relu(x, negative_slope=0.01, *, out=None):
    """x where x > 0, negative_slope * x elsewhere (torch.nn.functional.leaky_relu)."""
    x = _input(x)
    slope = _params.as_float("negative_slope", negative_slope)
    factor = np.where(x > 0, x.dtype.type(1), x.dtype.type(slope))
    return np.multiply(x, factor, out=_result("leaky_relu", x, out))


def leaky_relu_backward(grad_output, x, negative_slope=0.01):
    """Gradient of leaky_relu: grad_output where x > 0, negative_slope * grad_output where
    x <= 0 (PyTorch's choice at 0). With negative_slope >= 0, x may be the output."""
    gy, x = _grad_and("leaky_relu_backward", grad_output, x)
    slope = _params.as_float("negative_slope", negative_slope)
    return gy * np.where(x > 0, gy.dtype.type(1), gy.dtype.type(slope))


def hardsigmoid(x, *, out=None):
    """relu6(x + 3) / 6 elementwise (torch.nn.functional.hardsigmoid)."""
    x = _input(x)
    out = _result("hardsigmoid", x, out)
    y = np.add(x, 3, out=out)
    np.clip(y, 0, 6, out=y)
    return np.divide(y, 6, out=y)


def hardsigmoid_backward(grad_output, x):
    """Gradient of hardsigmoid: grad_output / 6 where -3 < x < 3, else 0 (PyTorch's)."""
    gy, x = _grad_and("hardsigmoid_backward", grad_output, x)
    return np.where((x > -3) & (x < 3), gy / 6, gy.dtype.type(0))


def hardswish(x, *, out=None):
    """x * relu6(x + 3) / 6 elementwise (torch.nn.functional.hardswish, MobileNetV3)."""
    x = _input(x)
    gate = np.clip(x + 3, 0, 6)
    gate /= 6
    return np.multiply(x, gate, out=_result("hardswish", x, out))


def hardswish_backward(grad_output, x):
    """Gradient of hardswish, PyTorch's (2.x): 0 for x <= -3, grad_output * (x / 3 + 1/2) for
    -3 < x < 3, grad_output for x >= 3."""
    gy, x = _grad_and("hardswish_backward", grad_output, x)
    slope = np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1)).astype(gy.dtype, copy=False)
    return gy * slope


# ----------------------------------------------------------------------------------------------
# smooth

def elu(x, alpha=1.0, *, out=None):
    """x where x > 0, alpha * (exp(x) - 1) elsewhere (torch.nn.functional.elu)."""
    x = _input(x)
    alpha = _params.as_float("alpha", alpha)
    out = _result("elu", x, out)
    negative = np.expm1(np.minimum(x, 0))
    negative *= alpha
    return _store(np.where(x > 0, x, negative), out)


def elu_backward(grad_output, output, alpha=1.0):
    """Gradient of elu from its OUTPUT y (as PyTorch's in-place ELU): grad_output where y > 0,
    grad_output * (y + alpha) (= alpha * exp(x)) where y <= 0, so alpha * grad_output at 0.
    Needs alpha >= 0 (with alpha < 0, y does not tell the two branches apart): ValueError."""
    alpha = _params.as_float("alpha", alpha)
    if alpha < 0:
        raise ValueError(f"elu_backward: the gradient from the output needs alpha >= 0, but got "
                         f"alpha={alpha}")
    gy, y = _grad_and("elu_backward", grad_output, output, "output")
    return np.where(y > 0, gy, gy * (y + gy.dtype.type(alpha)))


def sigmoid(x, *, out=None):
    """1 / (1 + exp(-x)) elementwise (torch.sigmoid; scipy.special.expit)."""
    x = _input(x)
    return special.expit(x, out=_result("sigmoid", x, out))


def sigmoid_backward(grad_output, output):
    """Gradient of sigmoid from its output y: grad_output * y * (1 - y)."""
    gy, y = _grad_and("sigmoid_backward", grad_output, output, "output")
    return gy * y * (1 - y)


def tanh(x, *, out=None):
    """tanh(x) elementwise (torch.tanh)."""
    x = _input(x)
    return np.tanh(x, out=_result("tanh", x, out))


def tanh_backward(grad_output, output):
    """Gradient of tanh from its output y: grad_output * (1 - y**2)."""
    gy, y = _grad_and("tanh_backward", grad_output, output, "output")
    return gy * (1 - y * y)


def silu(x, *, out=None):
    """x * sigmoid(x) elementwise (torch.nn.functional.silu, "swish")."""
    x = _input(x)
    return np.multiply(x, special.expit(x), out=_result("silu", x, out))


def silu_backward(grad_output, x):
    """Gradient of silu: grad_output * s * (1 + x * (1 - s)), s = sigmoid(x)."""
    gy, x = _grad_and("silu_backward", grad_output, x)
    s = special.expit(x)
    return gy * s * (1 + x * (1 - s))


def _approximate(approximate) -> str:
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {GELU_APPROXIMATIONS}, but got "
                         f"{approximate!r}")
    return approximate


def gelu(x, approximate="none", *, out=None):
    """x * Phi(x), Phi the standard normal CDF (torch.nn.functional.gelu): exactly,
    x / 2 * (1 + erf(x / sqrt 2)), or with approximate="tanh",
    x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x**3)))."""
    x = _input(x)
    approximate = _approximate(approximate)
    out = _result("gelu", x, out)
    if approximate == "none":
        inner = special.erf(x * x.dtype.type(math.sqrt(0.5)))
    else:
        inner = np.tanh(x.dtype.type(_SQRT_2_OVER_PI) * (x + _GELU_TANH_CUBIC * x ** 3))
    inner += 1
    inner *= 0.5
    return np.multiply(x, inner, out=out)


def gelu_backward(grad_output, x, approximate="none"):
    """Gradient of gelu (exact: Phi(x) + x * phi(x), phi the normal density; or the
    derivative of the tanh form)."""
    gy, x = _grad_and("gelu_backward", grad_output, x)
    approximate = _approximate(approximate)
    if approximate == "none":
        cdf = 0.5 * (1 + special.erf(x * x.dtype.type(math.sqrt(0.5))))
        pdf = np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))
        return gy * (cdf + x * pdf)
    c = x.dtype.type(_SQRT_2_OVER_PI)
    t = np.tanh(c * (x + _GELU_TANH_CUBIC * x ** 3))
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * _GELU_TANH_CUBIC * x * x)
    return gy * slope


# ----------------------------------------------------------------------------------------------
# along an axis

def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along `dim` (torch.softmax; default -1, the channels of NHWC),
    computed with the maximum subtracted."""
    x = _input(x)
    dim = _dim("softmax", dim, x.ndim)
    e = np.exp(x - np.max(x, axis=dim, keepdims=True)) if x.size else x.copy()
    e /= np.sum(e, axis=dim, keepdims=True)
    return e


def softmax_backward(grad_output, output, dim=-1):
    """Gradient of softmax from its output y: y * (grad_output - sum(grad_output * y, dim))."""
    gy, y = _grad_and("softmax_backward", grad_output, output, "output")
    dim = _dim("softmax_backward", dim, y.ndim)
    return y * (gy - np.sum(gy * y, axis=dim, keepdims=True))


def log_softmax(x, dim=-1):
    """log(softmax(x)) along `dim` (torch.log_softmax), as x - max - log(sum(exp(x - max)))."""
    x = _input(x)
    dim = _dim("log_softmax", dim, x.ndim)
    if not x.size:
        return x.copy()
    shifted = x - np.max(x, axis=dim, keepdims=True)
    shifted -= np.log(np.sum(np.exp(shifted), axis=dim, keepdims=True))
    return shifted


def log_softmax_backward(grad_output, output, dim=-1):
    """Gradient of log_softmax from its output y: grad_output - exp(y) * sum(grad_output, dim)."""
    gy, y = _grad_and("log_softmax_backward", grad_output, output, "output")
    dim = _dim("log_softmax_backward", dim, y.ndim)
    return gy - np.exp(y) * np.sum(gy, axis=dim, keepdims=True)


# ----------------------------------------------------------------------------------------------
# learnable

def _prelu_weight(fn: str, x: np.ndarray, weight) -> np.ndarray:
    """PReLU's weight: 1-D, one slope for all (size 1) or one per channel (the last axis)."""
    weight = _params.as_array("weight", weight)
    if weight.ndim != 1 or weight.size < 1:
        raise ValueError(f"{fn}: expected weight to be a 1-D array of 1 or C slopes, but got "
                         f"shape {weight.shape}")
    if weight.size != 1 and (x.ndim == 0 or x.shape[-1] != weight.size):
        raise ValueError(f"{fn}: weight has {weight.size} slopes, one per channel, so the "
                         f"input's last dimension must be {weight.size} [channels last], but got "
                         f"input of shape {x.shape}")
    return weight


def prelu(x, weight):
    """x where x > 0, weight * x elsewhere (torch.nn.functional.prelu), weight (1,) shared or
    (C,) per channel, C = x.shape[-1] (channels last: PyTorch's dim 1 of NCHW)."""
    x = _params.as_array("input", x)
    weight = _prelu_weight("prelu", x, weight)
    dtype = _params.float_dtype(x, weight)
    x = x.astype(dtype, copy=False)
    return np.where(x > 0, x, x * weight.astype(dtype, copy=False))


def prelu_backward(grad_output, x, weight):
    """Gradients of prelu: (grad_input, grad_weight). grad_input is grad_output where x > 0 and
    weight * grad_output elsewhere; grad_weight sums grad_output * x over x <= 0 (over every
    axis but the last for C slopes, over all for one), shaped like weight."""
    gy, x = _grad_and("prelu_backward", grad_output, x)
    weight = _prelu_weight("prelu_backward", x, weight)
    dtype = _params.float_dtype(gy, weight)
    gy, x = gy.astype(dtype, copy=False), x.astype(dtype, copy=False)
    positive = x > 0
    grad_input = np.where(positive, gy, gy * weight.astype(dtype, copy=False))
    contribution = np.where(positive, dtype.type(0), gy * x)
    if weight.size == 1:
        grad_weight = np.sum(contribution, dtype=np.float64).reshape(1)
    else:
        grad_weight = contribution.reshape(-1, weight.size).sum(axis=0, dtype=np.float64)
    return grad_input, grad_weight.astype(dtype)
