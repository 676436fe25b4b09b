"""Optimizers for fastconv layers with PyTorch's update rules (torch.optim's default,
single-tensor implementations): SGD, Adam and AdamW, with parameter groups and state dicts;
gradient clipping by norm (torch.nn.utils.clip_grad_norm_). Learning-rate schedules are in
fastconv.optim.lr_scheduler.

Optimizers update parameters IN PLACE (value -= ...), so references to them stay valid.
`params` is one of:

- a model: anything whose parameters() yields (name, value, grad), read at every step (so
  parameters replaced after construction are followed);
- an iterable of (name, value, grad) triples, e.g. list(model.parameters());
- a list of parameter groups, dicts {"params": model or triples, "lr": ..., ...}: the other
  keys override the optimizer's defaults for that group, as in PyTorch. They are kept in
  `optimizer.param_groups` (a list of dicts holding each group's hyper-parameters), which is
  where learning-rate schedulers change "lr".

The optimizer's state (momentum buffers, Adam's moments) is kept per parameter name, so names
must be unique across its groups (prefix the names of triples taken from several models).

No weight decay on biases and normalisation parameters, the usual idiom:

    optimizer = AdamW(decay_groups(model), lr=1e-3, weight_decay=0.05)

decay_groups(model) is two groups: the weights with 2 or more dimensions (convolutions,
linear layers) with the optimizer's weight_decay, and the rest (biases, BatchNorm's weight and
bias, PReLU's slopes: 1-D) with weight_decay=0.

To resume training, save `optimizer.state_dict()` and give it to `load_state_dict()` of an
optimizer built over the same parameters.
"""
from __future__ import annotations

import math

import numpy as np

from fastconv import _algorithms, _params, _plan
from fastconv._kernels import _optim
from fastconv._threads import bound_call, threads_for_work

# a key that learning-rate schedulers add to the parameter groups (PyTorch's name): kept by the
# optimizer's state dict, never one of its hyper-parameters
_SCHEDULER_KEYS = ("initial_lr",)


def _triples(owner: str, items) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, value, grad) triples from an iterable, checked: floating-point value arrays with a
    gradient array of the same shape."""
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{owner}: params must be a model, (name, value, grad) triples or a "
                        f"list of parameter groups, but got {type(items).__name__}") from None
    checked = []
    for item in items:
        try:
            name, value, grad = item
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: params must be a layer or (name, value, grad) triples, "
                            f"but got an item {item!r}") from None
        if not isinstance(value, np.ndarray) or not isinstance(grad, np.ndarray) \
                or value.shape != grad.shape:
            raise TypeError(f"{owner}: parameter {name!r} and its gradient must be NumPy arrays "
                            f"of one shape")
        if value.dtype.kind != "f":
            raise TypeError(f"{owner}: parameter {name!r} must be a floating-point array, but "
                            f"got dtype {value.dtype}")
        checked.append((name, value, grad))
    return checked


def _group_params(group: dict):
    """A group's (name, value, grad) triples: its model's current ones, or its fixed list."""
    source = group["params"]
    return source.parameters() if hasattr(source, "parameters") else source


class Optimizer:
    """The base class of the optimizers: parameter groups, per-parameter state, zero_grad and
    state dicts. A subclass gives its defaults to __init__, checks a group's hyper-parameters
    in _check and updates one parameter in _update."""

    def __init__(self, params, defaults: dict) -> None:
        name = type(self).__name__
        self.defaults = self._check(defaults)
        self.param_groups: list[dict] = []
        #: {parameter name: {state name: value}}, e.g. Adam's "step", "exp_avg", "exp_avg_sq"
        self.state: dict[str, dict] = {}
        if hasattr(params, "parameters"):
            groups = [{"params": params}]
        else:
            if isinstance(params, (dict, str, np.ndarray)) or not hasattr(params, "__iter__"):
                raise TypeError(f"{name}: params must be a model, (name, value, grad) triples "
                                f"or a list of parameter groups (dicts), but got "
                                f"{type(params).__name__}")
            items = list(params)
            is_group = [isinstance(item, dict) for item in items]
            if any(is_group) and not all(is_group):
                raise TypeError(f"{name}: params must be all parameter groups (dicts) or all "
                                f"(name, value, grad) triples, not a mixture")
            groups = items if items and all(is_group) else [{"params": items}]
        for group in groups:
            self.add_param_group(group)
        if not any(True for group in self.param_groups for _ in _group_params(group)):
            raise ValueError(f"{name}: got an empty parameter list")

    def _check(self, hyper: dict) -> dict:
        """The hyper-parameters of one group, checked and normalised."""
        raise NotImplementedError

    def _update(self, group: dict, value: np.ndarray, grad: np.ndarray, state: dict) -> None:
        """Update one parameter in place from its gradient (of value's dtype) and its state."""
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        """Add a group {"params": model or triples, hyper-parameter: value, ...}; the keys it
        does not give take the optimizer's defaults. ValueError for an unknown key or a
        parameter name that is already in the optimizer."""
        name = type(self).__name__
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"{name}: a parameter group must be a dict with a 'params' key, but "
                            f"got {param_group!r}")
        index = len(self.param_groups)
        unknown = [key for key in param_group if key != "params" and key not in self.defaults]
        if unknown:
            raise ValueError(f"{name}: unknown key {unknown[0]!r} in parameter group {index}; "
                             f"the keys are 'params' and {', '.join(map(repr, self.defaults))}")
        source = param_group["params"]
        if not hasattr(source, "parameters"):
            if isinstance(source, (dict, str, np.ndarray)):
                raise TypeError(f"{name}: 'params' of parameter group {index} must be a model "
                                f"or (name, value, grad) triples, but got {type(source).__name__}")
            source = _triples(name, source)
        hyper = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        group = {"params": source, **self._check(hyper)}
        seen = {n for other in self.param_groups for n, _, _ in _group_params(other)}
        for param_name, _, _ in _group_params(group):
            if param_name in seen:
                raise ValueError(f"{name}: parameter {param_name!r} appears twice (the state is "
                                 f"kept per name, so names must be unique across the groups)")
            seen.add(param_name)
        self.param_groups.append(group)

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero (in place)."""
        for group in self.param_groups:
            for _, _, grad in _group_params(group):
                threads = threads_for_work(grad.size)
                if threads > 1 and _flat_writable(grad):
                    # large gradients on every thread (ResNet-18's 47 MB on a Zen 5, 2
                    # threads: 1.87 -> 1.40 ms)
                    bound_call(_optim.zero, grad.reshape(-1),
                               grad.nbytes >= _algorithms.STREAM_BYTES, threads=threads)()
                else:
                    grad.fill(0)

    def step(self) -> None:
        """One update of every parameter from its gradient. A read-only parameter is a
        ValueError raised before anything (parameter or state) is changed."""
        groups = [(group, list(_group_params(group))) for group in self.param_groups]
        for _, params in groups:
            for name, value, _ in params:
                if isinstance(value, np.ndarray) and not value.flags.writeable:
                    raise ValueError(f"{type(self).__name__}.step: the parameter {name!r} is "
                                     f"read-only")
        for group, params in groups:
            for name, value, grad in params:
                state = self.state.get(name)
                # a parameter replaced by one of another shape starts afresh
                if state is None or any(isinstance(item, np.ndarray) and item.shape != value.shape
                                        for item in state.values()):
                    state = self.state[name] = {}
                self._update(group, value, grad.astype(value.dtype, copy=False), state)
                _plan.bump(value)  # weights packed from it are stale

    def state_dict(self) -> dict:
        """{"state": {parameter name: {state name: copy}}, "param_groups": [{hyper-parameter:
        value, ..., "params": [parameter names]}]} (PyTorch's layout, with names for indices)."""
        state = {name: {key: item.copy() if isinstance(item, np.ndarray) else item
                        for key, item in entries.items()}
                 for name, entries in self.state.items()}
        groups = [{**{key: item for key, item in group.items() if key != "params"},
                   "params": [name for name, _, _ in _group_params(group)]}
                  for group in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the hyper-parameters and state saved by state_dict() (arrays copied, cast to
        each parameter's dtype). The groups must hold the same parameter names in the same
        order; everything is checked (ValueError/TypeError) before anything changes."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise TypeError(f"{name}.load_state_dict: expected a dict with the keys 'state' and "
                            f"'param_groups' (from state_dict()), but got {state_dict!r:.80}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, but the optimizer has {len(self.param_groups)}")
        params = {}
        groups = []
        for index, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            names = [n for n, _, _ in _group_params(group)]
            if list(saved.get("params", ())) != names:
                raise ValueError(f"{name}.load_state_dict: parameter group {index} holds "
                                 f"{names}, but the state dict's holds {saved.get('params')}")
            params.update((n, value) for n, value, _ in _group_params(group))
            hyper = {key: item for key, item in saved.items()
                     if key != "params" and key not in _SCHEDULER_KEYS}
            unknown = [key for key in hyper if key not in self.defaults]
            if unknown:
                raise ValueError(f"{name}.load_state_dict: unknown key {unknown[0]!r} in "
                                 f"parameter group {index}")
            extras = {key: saved[key] for key in _SCHEDULER_KEYS if key in saved}
            groups.append({**self._check({**self.defaults, **hyper}), **extras})
        state = {}
        for param_name, entries in state_dict["state"].items():
            if param_name not in params:
                raise ValueError(f"{name}.load_state_dict: state for {param_name!r}, which is "
                                 f"not a parameter of this optimizer")
            value = params[param_name]
            state[param_name] = {}
            for key, item in entries.items():
                if isinstance(item, np.ndarray):
                    if item.shape != value.shape:
                        raise ValueError(f"{name}.load_state_dict: expected state "
                                         f"{param_name!r}[{key!r}] of shape {value.shape}, but "
                                         f"got {item.shape}")
                    item = np.array(item, dtype=value.dtype)
                state[param_name][key] = item
        for group, loaded in zip(self.param_groups, groups):
            for key in _SCHEDULER_KEYS:
                group.pop(key, None)
            group.update(loaded)
        self.state = state

    def __repr__(self) -> str:
        def hyper(group):
            return ", ".join(f"{key}={group[key]!r}" for key in self.defaults)
        if len(self.param_groups) == 1:
            return f"{type(self).__name__}({hyper(self.param_groups[0])})"
        lines = [f"  group {i}: {hyper(group)}" for i, group in enumerate(self.param_groups)]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


def _flat_writable(a: np.ndarray) -> bool:
    """Whether an _optim kernel can write `a` as a flat float array: a plain ndarray (a
    subclass's reshape may keep its dimensions), float32 or float64, C-contiguous,
    writeable, not 0-d."""
    return (type(a) is np.ndarray and a.ndim > 0 and a.dtype in (np.float32, np.float64)
            and a.flags.c_contiguous and a.flags.writeable)


def _one_pass(value: np.ndarray, grad: np.ndarray, buf: np.ndarray | None) -> bool:
    """Whether an update can run as one kernel pass: parameter and state _flat_writable, of
    one dtype and the parameter's shape (the kernel reads them flat), the gradient
    C-contiguous and either the parameter itself or apart from it. Views, other dtypes and
    overlaps go through NumPy."""
    return (_flat_writable(value)
            and grad.dtype == value.dtype and grad.shape == value.shape
            and grad.flags.c_contiguous
            and (grad is value or not np.may_share_memory(grad, value))
            and (buf is None or (_flat_writable(buf) and buf.dtype == value.dtype
                                 and buf.shape == value.shape)))


class SGD(Optimizer):
    """SGD with optional momentum (heavy-ball or Nesterov) and weight decay (L2), PyTorch's
    torch.optim.SGD update (without dampening), per parameter p with gradient g:

        d = g + weight_decay * p
        buf = d (first step), then buf = momentum * buf + d
        d = d + momentum * buf (nesterov) or buf
        p -= lr * d

    `params`: a model, (name, value, grad) triples or parameter groups (see the module).
    ValueError for a negative lr, momentum or weight_decay, or nesterov without momentum.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def _check(self, hyper: dict) -> dict:
        checked = dict(lr=_params.as_float("lr", hyper["lr"], 0.0),
                       momentum=_params.as_float("momentum", hyper["momentum"], 0.0),
                       weight_decay=_params.as_float("weight_decay", hyper["weight_decay"], 0.0),
                       nesterov=_params.as_bool("nesterov", hyper["nesterov"]))
        if checked["nesterov"] and checked["momentum"] == 0:
            raise ValueError("nesterov=True needs a momentum > 0, but got momentum=0")
        return checked

    def _update(self, group, value, grad, state):
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        buf = state.get("momentum_buffer")
        if _one_pass(value, grad, buf if momentum else None):
            # one pass over the arrays (_optim.sgd_step), not one per step of the formula
            first = bool(momentum) and buf is None
            if first:
                buf = state["momentum_buffer"] = np.empty_like(value)
            _optim.sgd_step(value.reshape(-1), (buf if momentum else value[:0]).reshape(-1),
                            grad.reshape(-1), group["lr"], momentum, weight_decay,
                            group["nesterov"], first, threads_for_work(value.size))
            return
        d = grad
        if weight_decay:
            d = d + weight_decay * value
        if momentum:
            if buf is None:  # an array even for a 0-d parameter, whose d is a scalar
                buf = state["momentum_buffer"] = np.array(d, copy=True)
            else:
                buf *= momentum
                buf += d
            d = d + momentum * buf if group["nesterov"] else buf
        value -= group["lr"] * d


class Adam(Optimizer):
    """Adam (Kingma and Ba), PyTorch's torch.optim.Adam update, per parameter p with gradient
    g at step t = 1, 2, ...:

        g = g + weight_decay * p                       (L2 penalty; AdamW instead decays p)
        m = m + (1 - beta1) * (g - m)                  (state "exp_avg")
        v = beta2 * v + (1 - beta2) * g * g            (state "exp_avg_sq")
        v_max = max(v_max, v); v = v_max               (amsgrad only, "max_exp_avg_sq")
        denom = sqrt(v) / sqrt(1 - beta2 ** t) + eps
        p -= lr / (1 - beta1 ** t) * m / denom

    eps is added after the square root of the bias-corrected second moment, as PyTorch does.
    `params`: a model, (name, value, grad) triples or parameter groups (see the module).
    ValueError for a negative lr, eps or weight_decay, or betas outside [0, 1).
    """

    #: AdamW's decoupled weight decay (p *= 1 - lr * weight_decay before the update)
    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _check(self, hyper: dict) -> dict:
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers in [0, 1), but got {betas!r}")
        return dict(lr=_params.as_float("lr", hyper["lr"], 0.0),
                    betas=tuple(_params.as_float_in(f"betas[{i}]", beta, 0.0, 1.0,
                                                    include_high=False)
                                for i, beta in enumerate(betas)),
                    eps=_params.as_float("eps", hyper["eps"], 0.0),
                    weight_decay=_params.as_float("weight_decay", hyper["weight_decay"], 0.0),
                    amsgrad=_params.as_bool("amsgrad", hyper["amsgrad"]))

    def _update(self, group, value, grad, state):
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(value), exp_avg_sq=np.zeros_like(value))
        state["step"] += 1
        step = state["step"]
        if weight_decay:
            if self._decoupled_weight_decay:
                value *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * value
        exp_avg, second_moment = state["exp_avg"], state["exp_avg_sq"]
        exp_avg += (1 - beta1) * (grad - exp_avg)
        second_moment *= beta2
        second_moment += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            max_second_moment = state.setdefault("max_exp_avg_sq", np.zeros_like(value))
            np.maximum(max_second_moment, second_moment, out=max_second_moment)
            second_moment = max_second_moment
        denom = np.sqrt(second_moment) / (1 - beta2 ** step) ** 0.5 + group["eps"]
        value -= lr / (1 - beta1 ** step) * exp_avg / denom


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter), PyTorch's torch.optim.AdamW: Adam whose weight decay is
    decoupled from the gradient, p *= 1 - lr * weight_decay before Adam's update (default
    weight_decay=1e-2). Arguments, state and errors as Adam's."""

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


def decay_groups(params, weight_decay=None, no_decay=None) -> list[dict]:
    """Two parameter groups for an optimizer: the parameters to decay, and the others with
    weight_decay=0.

    params: a model or (name, value, grad) triples. no_decay(name, value) -> bool picks the
    parameters not to decay; by default those with at most one dimension (biases, BatchNorm's
    weight and bias, PReLU's slopes), so only convolution and linear weights decay. The first
    group takes the optimizer's weight_decay unless `weight_decay` is given.
    Usage: AdamW(decay_groups(model), lr=1e-3, weight_decay=0.05).
    """
    triples = _triples("decay_groups", params.parameters() if hasattr(params, "parameters")
                       else params)
    if no_decay is None:
        def no_decay(name, value):
            return value.ndim <= 1
    elif not callable(no_decay):
        raise TypeError(f"no_decay must be a function (name, value) -> bool, but got "
                        f"{no_decay!r}")
    decay: dict = {"params": [t for t in triples if not no_decay(t[0], t[1])]}
    if weight_decay is not None:
        decay["weight_decay"] = _params.as_float("weight_decay", weight_decay, 0.0)
    return [decay, {"params": [t for t in triples if no_decay(t[0], t[1])], "weight_decay": 0.0}]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False) -> float:
    """Scale the gradients in place so that their total norm is at most max_norm, as
    torch.nn.utils.clip_grad_norm_: the total norm is the norm of the vector of every
    gradient's norm (all gradients seen as one vector), and each gradient is multiplied by
    min(max_norm / (total_norm + 1e-6), 1).

    parameters: a model or (name, value, grad) triples. norm_type: a number > 0 or inf (max
    of absolute values). Returns the total norm before clipping (a float, computed in
    float64). RuntimeError when it is nan or inf and error_if_nonfinite=True (else the
    gradients are scaled by the non-finite factor, as PyTorch does).
    """
    triples = _triples("clip_grad_norm_", parameters.parameters()
                       if hasattr(parameters, "parameters") else parameters)
    max_norm = _params.as_float("max_norm", max_norm, 0.0)
    if norm_type != math.inf:
        norm_type = _params.as_positive_real("norm_type", norm_type)
    error_if_nonfinite = _params.as_bool("error_if_nonfinite", error_if_nonfinite)
    norms = [np.linalg.norm(grad.ravel().astype(np.float64, copy=False), norm_type)
             for _, _, grad in triples if grad.size]
    total = float(np.linalg.norm(norms, norm_type)) if norms else 0.0
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total}, so they cannot be clipped (pass "
                           f"error_if_nonfinite=False to scale them by it anyway)")
    coefficient = max_norm / (total + 1e-6)
    if not coefficient >= 1.0:  # also when nan, as PyTorch
        for _, _, grad in triples:
            grad *= coefficient
    return total


# the schedules, as fastconv.optim.lr_scheduler after `import fastconv.optim` (as in PyTorch)
from fastconv.optim import lr_scheduler  # noqa: E402
