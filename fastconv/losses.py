"""Softmax cross-entropy: the loss of a classifier's logits and its gradient."""
from __future__ import annotations

import numpy as np

from fastconv import _params

REDUCTIONS = ("mean", "sum")


def softmax_cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of softmax(logits) against integer class labels, and its gradient.

    logits: (N, K) float array; target: (N,) ints in [0, K). Returns (loss, grad_logits),
    loss a Python float, -sum_n log softmax(logits[n])[target[n]] (divided by N for
    reduction="mean"), and grad_logits = softmax(logits) - one_hot(target) (divided by N for
    "mean") in the logits' float dtype. Stable for large logits (the row maximum is
    subtracted first).
    """
    fn = "softmax_cross_entropy"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, but got {reduction!r}")
    z = _params.as_array("logits", logits)
    _params.check_ndim("logits", z, (2,), "(N, classes)")
    if z.shape[1] < 1:
        raise ValueError(f"{fn}: logits of shape {z.shape} have no classes")
    n = z.shape[0]
    labels = _params.class_labels(fn, target, n, z.shape[1])
    z = np.asarray(z, _params.float_dtype(z))
    shifted = z - z.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    losses = np.log(total[:, 0]) - shifted[rows, labels]
    grad = exp / total
    grad[rows, labels] -= 1
    loss = float(losses.sum(dtype=np.float64))
    if reduction == "mean" and n:
        loss /= n
        grad /= n
    return loss, grad


class CrossEntropyLoss:
    """loss = criterion(logits, target) (see softmax_cross_entropy); criterion.backward()
    then returns the gradient with respect to those logits."""

    def __init__(self, reduction="mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, but got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    def __call__(self, logits, target) -> float:
        loss, self._grad = softmax_cross_entropy(logits, target, self.reduction)
        return loss

    def backward(self) -> np.ndarray:
        if self._grad is None:
            raise RuntimeError("CrossEntropyLoss.backward: call the loss on logits first")
        grad, self._grad = self._grad, None
        return grad

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(reduction={self.reduction!r})"
