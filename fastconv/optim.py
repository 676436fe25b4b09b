"""Stochastic gradient descent for fastconv layers (PyTorch's torch.optim.SGD update rule)."""
from __future__ import annotations

import numpy as np

from fastconv import _params


class SGD:
    """SGD with optional momentum (heavy-ball or Nesterov) and weight decay (L2), updating
    parameters in place:

        d = grad + weight_decay * p
        buf = d (first step), then buf = momentum * buf + d
        d = d + momentum * buf (nesterov) or buf
        p -= lr * d

    `params` is a layer (its parameters() are read at every step, so parameters replaced
    after construction are followed) or an iterable of (name, value, grad) triples.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        self.lr = _params.as_float("lr", lr, 0.0)
        self.momentum = _params.as_float("momentum", momentum, 0.0)
        self.weight_decay = _params.as_float("weight_decay", weight_decay, 0.0)
        self.nesterov = _params.as_bool("nesterov", nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0, but got momentum=0")
        if hasattr(params, "parameters"):
            self._source = params
            self._fixed = None
        else:
            self._source = None
            self._fixed = [self._triple(item) for item in params]
        self._buffers: dict[str, np.ndarray] = {}

    @staticmethod
    def _triple(item):
        try:
            name, value, grad = item
        except (TypeError, ValueError):
            raise TypeError(f"SGD: params must be a layer or (name, value, grad) triples, but "
                            f"got an item {item!r}") from None
        if not isinstance(value, np.ndarray) or not isinstance(grad, np.ndarray) \
                or value.shape != grad.shape:
            raise TypeError(f"SGD: parameter {name!r} and its gradient must be NumPy arrays of "
                            f"one shape")
        return name, value, grad

    def _params(self):
        return self._source.parameters() if self._source is not None else self._fixed

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for _, _, grad in self._params():
            grad.fill(0)

    def step(self) -> None:
        """One update of every parameter from its gradient."""
        for name, value, grad in self._params():
            d = grad
            if self.weight_decay:
                d = d + self.weight_decay * value
            if self.momentum:
                buf = self._buffers.get(name)
                if buf is None or buf.shape != value.shape:
                    buf = self._buffers[name] = np.array(d, dtype=value.dtype)
                else:
                    buf *= self.momentum
                    buf += d
                d = d + self.momentum * buf if self.nesterov else buf
            value -= (self.lr * d).astype(value.dtype, copy=False)

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov})")
