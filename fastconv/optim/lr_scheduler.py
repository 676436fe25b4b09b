"""Learning-rate schedules for fastconv's optimizers, PyTorch's torch.optim.lr_scheduler:
StepLR, CosineAnnealingLR and LinearLR (linear warmup).

A scheduler sets "lr" in each of the optimizer's param_groups. Building it applies the value
of epoch 0; each step() (once per epoch or iteration, after optimizer.step()) moves on by one.
The updates are PyTorch's chainable ones: each new lr is computed from the group's current lr,
so schedulers built on one optimizer compose (e.g. LinearLR warmup and CosineAnnealingLR both
stepped) as in PyTorch, and the sequences equal PyTorch's for the same arguments.

Like PyTorch, the first scheduler built on an optimizer records each group's lr as
"initial_lr" in the group: the base learning rates of every scheduler built later.
To resume, save state_dict() and give it to load_state_dict() (PyTorch's `last_epoch`
argument is not offered).
"""
from __future__ import annotations

import math

from fastconv import _params
from fastconv.optim import Optimizer


class LRScheduler:
    """The base class: base_lrs, last_epoch, step(), get_last_lr(), state dicts. A subclass
    gives the learning rates of the next epoch from the current ones in _next_lrs()."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a fastconv.optim "
                            f"optimizer, but got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._set_lrs(self._initial_lrs([group["lr"] for group in optimizer.param_groups]))

    def _initial_lrs(self, lrs: list[float]) -> list[float]:
        """The learning rates at epoch 0 (PyTorch: unchanged, but LinearLR's start)."""
        return lrs

    def _next_lrs(self, lrs: list[float]) -> list[float]:
        """The learning rates of epoch last_epoch from those of the epoch before."""
        raise NotImplementedError

    def _set_lrs(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = list(lrs)

    def step(self) -> None:
        """Move on by one epoch: set each group's lr to the schedule's next value."""
        self.last_epoch += 1
        self._set_lrs(self._next_lrs([group["lr"] for group in self.optimizer.param_groups]))

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group set by the last step (or construction)."""
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer: last_epoch, base_lrs, the last lrs and the schedule's
        arguments."""
        return {key: list(value) if isinstance(value, list) else value
                for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what state_dict() returned (a ValueError when its keys differ)."""
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected the keys "
                             f"{sorted(expected)}, but got {got}")
        for key, value in state_dict.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.state_dict().items()
                              if key not in ("base_lrs", "_last_lr"))
        return f"{type(self).__name__}({arguments})"


class StepLR(LRScheduler):
    """Multiply each group's lr by gamma every step_size epochs (torch.optim.lr_scheduler.
    StepLR): lr = base_lr * gamma ** (epoch // step_size). ValueError for step_size < 1 or a
    negative gamma."""

    def __init__(self, optimizer: Optimizer, step_size, gamma=0.1) -> None:
        self.step_size = _params.as_int("step_size", step_size, 1)
        self.gamma = _params.as_float("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def _next_lrs(self, lrs):
        if self.last_epoch % self.step_size:
            return lrs
        return [lr * self.gamma for lr in lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from each base lr down to eta_min over T_max epochs
    (torch.optim.lr_scheduler.CosineAnnealingLR, without restarts; after T_max epochs the lr
    rises again along the cosine, as PyTorch's):
    lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.
    ValueError for T_max < 1 or a negative eta_min."""

    def __init__(self, optimizer: Optimizer, T_max, eta_min=0.0) -> None:
        self.T_max = _params.as_int("T_max", T_max, 1)
        self.eta_min = _params.as_float("eta_min", eta_min, 0.0)
        super().__init__(optimizer)

    def _next_lrs(self, lrs):
        epoch, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        if (epoch - 1 - period) % (2 * period) == 0:  # the bottom: the ratio below is 0 / 0
            return [lr + (base - eta_min) * (1 - math.cos(math.pi / period)) / 2
                    for lr, base in zip(lrs, self.base_lrs)]
        ratio = ((1 + math.cos(math.pi * epoch / period))
                 / (1 + math.cos(math.pi * (epoch - 1) / period)))
        return [ratio * (lr - eta_min) + eta_min for lr in lrs]


class LinearLR(LRScheduler):
    """Scale each group's lr linearly from start_factor to end_factor times its base lr over
    total_iters epochs, then keep it (torch.optim.lr_scheduler.LinearLR; a linear warmup with
    the defaults): lr = base_lr * (start_factor + (end_factor - start_factor)
    * min(epoch, total_iters) / total_iters).
    ValueError for start_factor outside (0, 1], end_factor outside [0, 1], total_iters < 1."""

    def __init__(self, optimizer: Optimizer, start_factor=1.0 / 3, end_factor=1.0,
                 total_iters=5) -> None:
        self.start_factor = _params.as_float_in("start_factor", start_factor, 0.0, 1.0,
                                                include_low=False)
        self.end_factor = _params.as_float_in("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _params.as_int("total_iters", total_iters, 1)
        super().__init__(optimizer)

    def _initial_lrs(self, lrs):
        return [lr * self.start_factor for lr in lrs]

    def _next_lrs(self, lrs):
        if self.last_epoch > self.total_iters:
            return lrs
        change = self.end_factor - self.start_factor
        factor = 1.0 + change / (self.total_iters * self.start_factor
                                 + (self.last_epoch - 1) * change)
        return [lr * factor for lr in lrs]

