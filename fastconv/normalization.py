"""Batch normalisation with PyTorch's semantics (torch.nn.functional.batch_norm), channels last.

x is (N, C), (N, L, C) or (N, H, W, C) - any array of 2 or more dimensions whose LAST axis is
the channel axis; the statistics are taken per channel over every other axis. Sums are
accumulated in float64; the result has x's (and weight's) float dtype.
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _algorithms, _params
from fastconv._threads import threads_for_work
from fastconv.functional import NEEDS, _needs

# the kernels, built for this CPU's widest vectors (their sums and stores vectorised: AVX2
# against the baseline build, batch norm at 56x56x64 on a Zen 5: 62 -> 42 us forward,
# 67 -> 41 us backward, 2 threads)
_norm = _algorithms.best_simd("_norm")

# rows summed in this many fixed ranges (partial sums added in order: the same result for any
# thread count, and enough ranges for the threads)
_SUM_CHUNKS = 16

_LAYOUT = "(N, ..., C) [channels last]"


def _per_channel(fn: object, name: str, value, channels: int, required: bool
                 ) -> np.ndarray | None:
    if value is None:
        if required:
            raise ValueError(f"{fn}: {name} must be given (in eval mode the running statistics "
                             f"normalise the input)")
        return None
    arr = _params.as_array(name, value)
    if arr.shape != (channels,):
        raise ValueError(f"{fn}: expected {name} of shape ({channels},) (one value per channel "
                         f"of an input with {channels} channels in its last dimension), but got "
                         f"{arr.shape}")
    return arr


def _input(fn: object, x) -> np.ndarray:
    x = _params.as_array("input", x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input of 2 or more dimensions {_LAYOUT}, but got a "
                         f"{x.ndim}-D array of shape {x.shape}")
    return x


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, ..., C), channels last (torch.nn.functional.batch_norm).

    y = (x - mean) / sqrt(var + eps) * weight + bias per channel. In training mode mean and
    var are the batch's (over every axis but the last; the biased variance), and the running
    statistics (if not None) are updated in place: running = (1 - momentum) * running +
    momentum * batch, with the UNBIASED batch variance for running_var. In eval mode
    (training=False) running_mean and running_var (C,) normalise. weight and bias are (C,) or
    None (1 and 0). Training needs more than one value per channel (ValueError otherwise, as
    PyTorch); an empty batch gives an empty result and leaves the running statistics alone.
    """
    y, _, _ = batch_norm_forward("batch_norm", x, running_mean, running_var, weight, bias,
                                 training, momentum, eps)
    return y


def batch_norm_forward(fn, x, running_mean, running_var, weight, bias, training, momentum, eps
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """batch_norm, also returning the float64 (mean, var) it normalised with (for backward).
    `fn` names the caller in errors (a string, or a layer: its repr, made only then)."""
    x = _input(fn, x)
    channels = x.shape[-1]
    training = _params.as_bool("training", training)
    momentum = _params.as_float("momentum", momentum)
    eps = _params.as_float("eps", eps, 0.0)
    running_mean = _per_channel(fn, "running_mean", running_mean, channels, not training)
    running_var = _per_channel(fn, "running_var", running_var, channels, not training)
    weight = _per_channel(fn, "weight", weight, channels, False)
    bias = _per_channel(fn, "bias", bias, channels, False)
    dtype = _params.float_dtype(x, *(a for a in (weight, bias) if a is not None))
    x2 = np.ascontiguousarray(x.reshape(_rows(x), channels), dtype)
    count = x2.shape[0]
    threads = threads_for_work(x2.size)
    if training:
        if count == 1:
            raise ValueError(f"{fn}: expected more than 1 value per channel when training, but "
                             f"got input of shape {x.shape}")
        if count == 0:
            return np.empty(x.shape, dtype), np.zeros(channels), np.ones(channels)
        stats = np.empty((2, channels))
        _status(_norm.batch_stats(x2, _chunks(count), stats, threads))
        for running, batch, factor in ((running_mean, stats[0], momentum),
                                       (running_var, stats[1], momentum * count / (count - 1))):
            if running is not None:
                running *= 1 - momentum
                running += factor * batch
    else:
        stats = np.array([running_mean, running_var], np.float64)
    y = np.empty(x2.shape, dtype)
    _status(_norm.normalize(x2, _vector(weight, dtype), _vector(bias, dtype), eps, stats, y,
                            threads))
    return y.reshape(x.shape), stats[0], stats[1]


def _vector(value: np.ndarray | None, dtype) -> np.ndarray:
    """A per-channel parameter as the kernels take it: C-contiguous, of the computing dtype;
    empty for None."""
    if value is None:
        return _NONE[dtype]
    return np.ascontiguousarray(value, dtype)


# the kernels' "no weight" or "no bias"
_NONE = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _status(status: int) -> None:
    if status:
        raise MemoryError("fastconv: could not allocate a batch normalisation kernel's "
                          "scratch memory")


def _rows(x: np.ndarray) -> int:
    """x's values per channel (every axis but the last; reshape(-1, 0) would not say)."""
    return math.prod(x.shape[:-1])


def _chunks(rows: int) -> int:
    """Fixed ranges of rows summed separately (the same for every thread count)."""
    return max(1, min(_SUM_CHUNKS, rows))


def batch_norm_backward(grad_output, x, mean, var, weight=None, training=False, eps=1e-5,
                        needs=NEEDS):
    """Gradients of batch_norm: (grad_input, grad_weight, grad_bias), each None unless named
    in `needs` (a subset of ("input", "weight", "bias")).

    mean and var (C,) are the statistics the forward normalised with: the running ones in
    eval mode (training=False: the statistics are constants, grad_input = grad_output * weight
    / sqrt(var + eps)); in training mode the batch's (biased variance), or None to compute
    them from x, and the gradient also flows through them. grad_weight = sum of grad_output *
    x_hat, grad_bias = sum of grad_output (over every axis but the last); they are given even
    if weight is None (the gradient for a weight of ones, a bias of zeros).
    """
    fn = "batch_norm_backward"
    x = _input(fn, x)
    gy = _params.as_array("grad_output", grad_output)
    _params.check_grad_shape(fn, "grad_output", gy, x.shape, _LAYOUT)
    needs = _needs(needs)
    training = _params.as_bool("training", training)
    eps = _params.as_float("eps", eps, 0.0)
    channels = x.shape[-1]
    weight = _per_channel(fn, "weight", weight, channels, False)
    dtype = _params.float_dtype(gy, x, *(() if weight is None else (weight,)))
    x2 = np.ascontiguousarray(x.reshape(_rows(x), channels), dtype)
    g2 = np.ascontiguousarray(gy.reshape(_rows(x), channels), dtype)
    count = x2.shape[0]
    threads = threads_for_work(x2.size)
    chunks = _chunks(count)
    if training and (mean is None or var is None):
        stats = np.zeros((2, channels))
        if count:
            _status(_norm.batch_stats(x2, chunks, stats, threads))
    else:
        stats = np.array([_per_channel(fn, name, value, channels, True)
                          for name, value in (("mean", mean), ("var", var))], np.float64)
    grads = np.empty((2, channels))  # grad_weight, grad_bias
    grad_input = np.empty(x2.shape if "input" in needs else (0, channels), dtype)
    _status(_norm.train_backward(g2, x2, stats, _vector(weight, dtype), eps,
                                 training and count > 0, chunks, grads, grad_input, threads))
    grad_weight, grad_bias = grads.astype(dtype, copy=False)
    return (grad_input.reshape(x.shape) if "input" in needs else None,
            grad_weight if "weight" in needs else None,
            grad_bias if "bias" in needs else None)
