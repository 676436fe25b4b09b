"""Post-operations of a fused convolution, oneDNN-style: the chain

    y = act2(act1((y + bias) * scale + shift) + residual)

on a convolution's NHWC output, every step optional: a per-channel bias, a per-channel scale
and shift (a BatchNorm that could not be folded into the weights), an activation, the
addition of a residual tensor of the output's shape, an activation. PostOps describes the
chain; epilogue() gives it as the kernels take it (the C struct fc_postops_f32 / _f64 of
_kernels/fastconv_epilogue.h, applied by the convolution kernels in their own stores, so that
each activation is written once), and apply() runs it in place as one pass over a finished
output (_kernels/_epilogue.pyx, OpenMP over rows).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from fastconv import _plan
from fastconv._kernels import _epilogue
from fastconv._threads import get_num_threads

# the codes of fastconv_epilogue.h's FC_ACT_*
ACTIVATIONS = {"relu": 1, "relu6": 2, "leaky_relu": 3, "silu": 4, "hardswish": 5,
               "hardsigmoid": 6, "sigmoid": 7, "tanh": 8, "gelu": 9, "gelu_tanh": 10, "elu": 11}
# below this many elements one thread does the pass (waking another costs more)
PARALLEL_MIN_ELEMENTS = 1 << 15


class Activation(NamedTuple):
    """An activation of the chain: its name (a key of ACTIVATIONS) and parameter (the slope
    of leaky_relu, the alpha of elu; 0 for the others)."""

    name: str
    alpha: float = 0.0

    def __str__(self) -> str:
        return self.name if self.name not in ("leaky_relu", "elu") else f"{self.name}({self.alpha})"


def activation_of(layer) -> Activation | None:
    """The Activation a layer computes, or None when it is not one of the chain's."""
    from fastconv import layers as L

    kind = type(layer)
    if kind is L.LeakyReLU:
        return Activation("leaky_relu", layer.negative_slope)
    if kind is L.ELU:
        return Activation("elu", layer.alpha) if layer.alpha >= 0 else None
    if kind is L.GELU:
        return Activation("gelu" if layer.approximate == "none" else "gelu_tanh")
    simple = {L.ReLU: "relu", L.ReLU6: "relu6", L.SiLU: "silu", L.Hardswish: "hardswish",
              L.Hardsigmoid: "hardsigmoid", L.Sigmoid: "sigmoid", L.Tanh: "tanh"}
    return Activation(simple[kind]) if kind in simple else None


class PostOps:
    """The chain's description: bias, scale, shift ((C,) arrays or None), act1 and act2
    (Activation or None), residual (whether a residual tensor is added between them)."""

    __slots__ = ("bias", "scale", "shift", "act1", "residual", "act2")

    def __init__(self, bias=None, scale=None, shift=None, act1: Activation | None = None,
                 residual: bool = False, act2: Activation | None = None):
        if act2 is not None and not residual:
            raise ValueError("PostOps: act2 follows the residual add; without one, use act1")
        for act in (act1, act2):
            if act is not None and act.name not in ACTIVATIONS:
                raise ValueError(f"PostOps: activation must be one of {tuple(ACTIVATIONS)}, "
                                 f"but got {act.name!r}")
        self.bias, self.scale, self.shift = bias, scale, shift
        self.act1, self.residual, self.act2 = act1, bool(residual), act2

    def __setattr__(self, name: str, value) -> None:
        if hasattr(self, name):  # a change after construction: kept kernel calls are stale
            _plan.note_change()
        object.__setattr__(self, name, value)

    @property
    def is_empty(self) -> bool:
        """Whether the chain has no step (the output stays as the kernel left it)."""
        return (self.bias is None and self.scale is None and self.shift is None
                and self.act1 is None and not self.residual)

    def names(self) -> list[str]:
        """The steps, in order, e.g. ["bias", "relu", "add", "relu"]."""
        steps = [name for name in ("bias", "scale", "shift") if getattr(self, name) is not None]
        steps += [str(self.act1)] if self.act1 is not None else []
        steps += ["add"] if self.residual else []
        steps += [str(self.act2)] if self.act2 is not None else []
        return steps

    def __repr__(self) -> str:
        return f"PostOps({', '.join(self.names())})"

    def epilogue(self, y_shape, dtype, residual: np.ndarray | None = None,
                 bias: bool = True) -> "_epilogue.Epilogue | None":
        """The chain as the kernels take it, for an output of shape `y_shape` (channels
        last) and `dtype`; None when the residual does not have the output's shape (it is
        then added by NumPy, see apply). bias=False leaves out the bias (a kernel adds it)."""
        if self.residual and (residual is None or residual.shape != tuple(y_shape)):
            return None
        channels = y_shape[-1]
        act1, alpha1 = _code(self.act1)
        act2, alpha2 = _code(self.act2)
        return _epilogue.Epilogue(math.prod(y_shape) // max(1, channels), channels, dtype,
                                  self.bias if bias else None, self.scale, self.shift, act1,
                                  alpha1, residual if self.residual else None, act2, alpha2)

    def apply(self, y: np.ndarray, residual: np.ndarray | None = None,
              bias: bool = True) -> np.ndarray:
        """Runs the chain on y (C-contiguous float32 or float64, channels last) in place and
        returns it; `residual` is required when self.residual (the output's shape: another
        shape that broadcasts to it is added by NumPy between two passes). bias=False leaves
        out the bias (a kernel added it already)."""
        if self.residual and residual is None:
            raise ValueError("PostOps.apply: the chain adds a residual, but none was given")
        if not y.flags.c_contiguous:
            raise ValueError("PostOps.apply: y must be C-contiguous (it is changed in place)")
        if y.size == 0:
            return y
        rows = y.reshape(-1, y.shape[-1])
        threads = get_num_threads() if y.size >= PARALLEL_MIN_ELEMENTS else 1
        post = self.epilogue(y.shape, y.dtype, residual, bias)
        if post is not None:
            _epilogue.apply(rows, post, threads)
            return y
        # a residual that broadcasts (e.g. (N, 1, 1, C)): the add in NumPy between two passes
        assert residual is not None
        before = PostOps(self.bias if bias else None, self.scale, self.shift, self.act1)
        _epilogue.apply(rows, before.epilogue(y.shape, y.dtype), threads)
        np.add(y, residual, out=y, casting="unsafe")
        if self.act2 is not None:
            _epilogue.apply(rows, PostOps(act1=self.act2).epilogue(y.shape, y.dtype), threads)
        return y


def _code(act: Activation | None) -> tuple[int, float]:
    return (0, 0.0) if act is None else (ACTIVATIONS[act.name], float(act.alpha))
