"""fastconv.optim: Adam, AdamW and SGD against their definitions and torch.optim, parameter
groups, state dicts, learning-rate schedules and gradient clipping."""
import copy
import math

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm_, decay_groups
from fastconv.optim.lr_scheduler import CosineAnnealingLR, LinearLR, StepLR

TOL = {np.float32: 1e-6, np.float64: 1e-12}


def _model(dtype=np.float64, seed=0):
    """A tiny model with 4-D, 2-D and 1-D parameters."""
    return L.Sequential(L.Conv2d(2, 3, 3, rng=seed, dtype=dtype), L.Flatten(),
                        L.Linear(3, 2, rng=seed + 1, dtype=dtype))


def _set_grads(model, seed):
    """Fill every gradient with seeded random numbers; returns them (copies)."""
    rng = np.random.default_rng(seed)
    grads = []
    for _, value, grad in model.parameters():
        grad[...] = rng.standard_normal(value.shape)
        grads.append(grad.copy())
    return grads


def _assert_params(model, tensors, dtype):
    for (name, value, _), tensor in zip(model.parameters(), tensors, strict=True):
        np.testing.assert_allclose(value, tensor.detach().numpy(), rtol=TOL[dtype],
                                   atol=TOL[dtype], err_msg=name)


# ----------------------------------------------------------------------------------------------
# Adam and AdamW from their definition (torch.optim.Adam's documented algorithm, the maximum
# of amsgrad taken over the raw second moments as torch computes it)

def _adam_reference(p, grads, lr, betas, eps, weight_decay, amsgrad, decoupled):
    p = p.astype(np.float64)
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    v_max = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_max = np.maximum(v_max, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (v_max if amsgrad else v) / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_sgd_updates_parameters_in_place_whatever_their_layout(strided, dtype):
    """SGD's update (one kernel pass for contiguous arrays, NumPy for views) writes into the
    parameter itself, and nowhere else."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 600)).astype(dtype)
    value = base[:, ::2] if strided else base
    untouched = base[:, 1::2].copy()
    grads = [rng.standard_normal(value.shape).astype(dtype) for _ in range(3)]
    p, buf = value.astype(np.float64), None
    grad = np.zeros_like(value)
    optimizer = SGD([("w", value, grad)], lr=0.1, momentum=0.9, weight_decay=0.01)
    for g in grads:
        grad[...] = g
        optimizer.step()
        d = g + 0.01 * p
        buf = d if buf is None else 0.9 * buf + d
        p = p - 0.1 * buf
    np.testing.assert_allclose(value, p, rtol=10 * TOL[dtype], atol=10 * TOL[dtype])
    if strided:
        np.testing.assert_array_equal(base[:, 1::2], untouched)


def test_sgd_refuses_a_read_only_parameter_and_lets_nan_through_at_lr_0():
    """Refuse to write into a read-only array before changing any parameter or state, and
    take NaN * 0 = NaN into the parameter at lr=0 (as torch.optim.SGD does), in one pass
    and in NumPy's steps."""
    first, value = np.ones(4, np.float32), np.ones(4, np.float32)
    opt = SGD([("a", first, np.ones(4, np.float32)), ("w", value, np.ones(4, np.float32))],
              lr=0.5, momentum=0.9)
    opt.step()
    value.setflags(write=False)
    for _ in range(2):
        with pytest.raises(ValueError, match="'w' is read-only"):
            opt.step()
    np.testing.assert_array_equal(first, 0.5)
    np.testing.assert_array_equal(opt.state["w"]["momentum_buffer"], 1)
    np.testing.assert_array_equal(value, 0.5)
    for p in (np.ones(3, np.float32), np.ones((3, 2), np.float32)[:, 0]):
        with np.errstate(invalid="ignore"):  # inf * 0
            SGD([("p", p, np.array([np.nan, np.inf, 1], np.float32))], lr=0.0).step()
        np.testing.assert_array_equal(p, [np.nan, np.nan, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,weight_decay,nesterov", [
    (0.0, 0.0, False), (0.0, 0.01, False), (0.9, 0.0, False), (0.9, 0.01, False),
    (0.9, 0.01, True)])
def test_sgd_in_one_pass_equals_its_steps_in_numpy(momentum, weight_decay, nesterov, dtype,
                                                   monkeypatch):
    """The one-pass kernel (C-contiguous parameters) against NumPy's steps (what views
    take), over four updates, on one thread and on two (the same bits; two did run)."""
    from conftest import _RecordingKernels, assert_threads_ran

    from fastconv import optim

    given: list = []
    monkeypatch.setattr(optim, "_optim", _RecordingKernels(optim._optim, given))

    rng = np.random.default_rng(2)
    start = rng.standard_normal((3, 70000)).astype(dtype)  # 2 threads from 2 * 65536
    grads = [rng.standard_normal(start.shape).astype(dtype) for _ in range(4)]

    def run(threads, one_pass=True):
        value, grad = start.copy(), np.zeros_like(start)
        opt = SGD([("w", value, grad)], lr=0.05, momentum=momentum, weight_decay=weight_decay,
                  nesterov=nesterov)
        with monkeypatch.context() as patch, fastconv.num_threads(threads):
            if not one_pass:
                patch.setattr(optim, "_one_pass", lambda *a: False)
            for g in grads:
                grad[...] = g
                opt.step()
        return value

    one, two = run(1), run(2)
    assert given[:4] == [1] * 4 and given[4:] == [2] * 4
    assert_threads_ran(given)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, run(2, one_pass=False), rtol=10 * TOL[dtype],
                               atol=10 * TOL[dtype])
    assert not np.array_equal(one, start)


@pytest.mark.parametrize("n", [11, 200_000])
def test_sgd_with_a_gradient_overlapping_its_parameter(n):
    """A gradient that is a shifted view of the parameter's memory: NumPy's steps (read the
    whole gradient, then write), not the element-wise pass."""
    base = np.arange(1.0, n + 1, dtype=np.float32)
    SGD([("p", base[1:], base[:-1])], lr=1.0).step()
    np.testing.assert_array_equal(base[1:], 1.0)


def test_sgd_momentum_of_a_0d_parameter():
    """A 0-d parameter's d is a NumPy scalar: its momentum buffer must still be an array
    updated in place."""
    value, grad = np.array(1.0), np.array(0.5)
    optimizer = SGD([("s", value, grad)], lr=0.1, momentum=0.9, weight_decay=0.1)
    p, buf = 1.0, None
    for _ in range(3):
        optimizer.step()
        d = 0.5 + 0.1 * p
        buf = d if buf is None else 0.9 * buf + d
        p -= 0.1 * buf
    assert value == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("cls,weight_decay,amsgrad", [
    (Adam, 0.0, False), (Adam, 0.1, False), (Adam, 0.1, True), (AdamW, 0.1, False),
    (AdamW, 0.1, True)])
def test_adam_follows_its_definition(cls, weight_decay, amsgrad):
    rng = np.random.default_rng(1)
    p = rng.standard_normal((4, 3))
    # shrinking gradients, so that amsgrad's maximum differs from the current moment
    grads = [rng.standard_normal((4, 3)) * scale for scale in (2.0, 1.0, 0.3, 0.1)]
    expected = _adam_reference(p, grads, 0.01, (0.8, 0.9), 1e-6, weight_decay, amsgrad,
                               cls is AdamW)
    value, grad = p.copy(), np.zeros_like(p)
    opt = cls([("p", value, grad)], lr=0.01, betas=(0.8, 0.9), eps=1e-6,
              weight_decay=weight_decay, amsgrad=amsgrad)
    for g in grads:
        grad[...] = g
        opt.step()
    np.testing.assert_allclose(value, expected, rtol=1e-13, atol=1e-15)
    assert opt.state["p"]["step"] == 4
    assert ("max_exp_avg_sq" in opt.state["p"]) == amsgrad


def test_adamw_defaults_and_amsgrad_make_a_difference():
    p = np.ones(3)
    assert AdamW([("p", p, p)]).param_groups[0]["weight_decay"] == 1e-2
    assert Adam([("p", p, p)]).param_groups[0]["weight_decay"] == 0.0
    # with the test above's numbers, the maximum changes the result: that test can fail
    rng = np.random.default_rng(1)
    p = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) * scale for scale in (2.0, 1.0, 0.3, 0.1)]
    with_max = _adam_reference(p, grads, 0.01, (0.8, 0.9), 1e-6, 0.0, True, False)
    without = _adam_reference(p, grads, 0.01, (0.8, 0.9), 1e-6, 0.0, False, False)
    assert np.abs(with_max - without).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kwargs", [
    (Adam, dict(lr=0.01)),
    (Adam, dict(lr=0.02, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.1, amsgrad=True)),
    (AdamW, dict(lr=0.01)),
    (AdamW, dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)),
])
def test_three_steps_equal_torch(cls, kwargs, dtype):
    torch = pytest.importorskip("torch")
    model = _model(dtype)
    tensors = [torch.tensor(value.copy(), requires_grad=True) for _, value, _ in model.parameters()]
    opt = cls(model, **kwargs)
    opt_torch = getattr(torch.optim, cls.__name__)(tensors, **kwargs)
    for step in range(3):
        for tensor, grad in zip(tensors, _set_grads(model, step)):
            tensor.grad = torch.tensor(grad)
        opt.step()
        opt_torch.step()
    _assert_params(model, tensors, dtype)
    assert all(value.dtype == dtype for _, value, _ in model.parameters())


def test_parameter_groups_with_their_own_lr_and_weight_decay_equal_torch():
    torch = pytest.importorskip("torch")
    model = _model()
    groups = decay_groups(model, weight_decay=0.2)
    groups[1]["lr"] = 0.05
    tensors = [torch.tensor(value.copy(), requires_grad=True) for _, value, _ in model.parameters()]
    by_name = dict(zip([name for name, _, _ in model.parameters()], tensors))
    torch_groups = [{"params": [by_name[name] for name, _, _ in groups[0]["params"]],
                     "weight_decay": 0.2},
                    {"params": [by_name[name] for name, _, _ in groups[1]["params"]],
                     "weight_decay": 0.0, "lr": 0.05}]
    opt = AdamW(groups, lr=0.01, weight_decay=0.5)
    opt_torch = torch.optim.AdamW(torch_groups, lr=0.01, weight_decay=0.5)
    for step in range(3):
        for tensor, grad in zip(tensors, _set_grads(model, step)):
            tensor.grad = torch.tensor(grad)
        opt.step()
        opt_torch.step()
    _assert_params(model, tensors, np.float64)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]


def test_decay_groups_split_weights_from_biases():
    model = _model()
    decay, no_decay = decay_groups(model)
    assert [n for n, _, _ in decay["params"]] == ["0.weight", "2.weight"]
    assert [n for n, _, _ in no_decay["params"]] == ["0.bias", "2.bias"]
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    opt = SGD(decay_groups(model), lr=0.1, weight_decay=0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    # a predicate by name
    decay, no_decay = decay_groups(model.parameters(), 0.1, lambda name, _: name.startswith("2."))
    assert [n for n, _, _ in no_decay["params"]] == ["2.weight", "2.bias"]
    assert decay["weight_decay"] == 0.1
    with pytest.raises(TypeError, match="no_decay must be a function"):
        decay_groups(model, no_decay="bias")


def test_a_group_without_decay_keeps_its_parameters_when_gradients_are_zero():
    model = _model()
    before = model.state_dict()
    opt = AdamW(decay_groups(model), lr=0.1, weight_decay=0.5)
    opt.zero_grad()
    opt.step()
    after = model.state_dict()
    np.testing.assert_array_equal(after["0.bias"], before["0.bias"])
    np.testing.assert_allclose(after["0.weight"], before["0.weight"] * (1 - 0.1 * 0.5),
                               rtol=1e-15)


def test_a_model_is_read_at_every_step_and_zero_grad_clears_every_group():
    model = _model()
    opt = Adam(decay_groups(model), lr=0.1)
    _set_grads(model, 0)
    opt.zero_grad()
    assert not any(grad.any() for _, _, grad in model.parameters())
    layer = L.Linear(2, 2, rng=0, dtype=np.float64)
    opt = SGD(layer, lr=1.0)
    layer._init_param("weight", np.zeros((2, 2)))  # replaced after construction: followed
    layer.grads["weight"][...] = 1
    opt.step()
    np.testing.assert_array_equal(layer.weight, -np.ones((2, 2)))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's
def test_zero_grad_clears_large_gradients_on_every_thread(monkeypatch):
    from conftest import assert_threads_ran
    from fastconv import optim

    seen = []
    real = optim._optim.zero
    monkeypatch.setattr(optim._optim, "zero",
                        lambda a, stream, n: (seen.append(n), real(a, stream, n))[1])
    model = fastconv.Sequential(L.Conv2d(128, 129, 3, rng=0), L.Linear(3, 2, rng=0))
    for _, _, grad in model.parameters():
        grad[...] = 1
    with fastconv.num_threads(2):
        SGD(model, lr=0.1).zero_grad()
    assert not any(grad.any() for _, _, grad in model.parameters())
    assert seen == [2]  # the 3x3x128x129 weight's gradient; the small ones filled at once
    assert_threads_ran(seen)
    with pytest.raises(ValueError, match="num_threads must be >= 1, got 0"):
        real(np.ones(3, np.float32), False, 0)
    # non-temporal stores: every value, ranges of any alignment and length, on 1-3 threads
    for stream in (False, True):
        for threads in (1, 2, 3):
            for start, n in ((0, 1000), (1, 997), (3, 64), (5, 15), (7, 0)):
                a = np.ones(start + n + 9, np.float32)
                real(a[start:start + n], stream, threads)
                assert not a[start:start + n].any() and a[:start].all() and a[start + n:].all()
    # an ndarray subclass, a read-only gradient: NumPy's fill, its own error
    matrix = np.asmatrix(np.ones((512, 512)))  # its reshape(-1) keeps two dimensions
    SGD([("m", np.zeros((512, 512)), matrix)], lr=0.1).zero_grad()
    assert not matrix.any()
    frozen = np.ones(300_000)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="assignment destination is read-only"):  # NumPy's
        SGD([("f", np.zeros(300_000), frozen)], lr=0.1).zero_grad()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's
def test_an_ndarray_subclass_parameter_steps_through_numpy():
    # np.matrix's reshape(-1) keeps two dimensions: the flat kernels are not for it
    value, grad = np.asmatrix(np.ones((64, 64))), np.full((64, 64), 2.0)
    opt = SGD([("p", value, grad)], lr=0.5, momentum=0.9)
    opt.step()
    opt.step()
    np.testing.assert_allclose(np.asarray(value), 1 - 0.5 * 2 - 0.5 * (0.9 * 2 + 2))


# ----------------------------------------------------------------------------------------------
# state dicts

@pytest.mark.parametrize("cls,kwargs", [(Adam, dict(lr=0.01, amsgrad=True)),
                                        (SGD, dict(lr=0.1, momentum=0.9))])
def test_state_dict_round_trip_resumes_identically(cls, kwargs):
    model = _model()
    opt = cls(decay_groups(model), **kwargs)
    for step in range(2):
        _set_grads(model, step)
        opt.step()
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    snapshot = copy.deepcopy(saved_opt)
    # the original runs on two more steps; its state dict was a copy
    for step in (2, 3):
        _set_grads(model, step)
        opt.step()
    for name, entries in snapshot["state"].items():
        for key, item in entries.items():
            np.testing.assert_array_equal(saved_opt["state"][name][key], item)
    # a fresh model and optimizer resume from the saved state
    resumed = _model(seed=5)
    resumed.load_state_dict(saved_model)
    opt2 = cls(decay_groups(resumed), lr=0.5)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]  # hyper-parameters restored
    for step in (2, 3):
        _set_grads(resumed, step)
        opt2.step()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)


def test_state_dict_layout_is_pytorchs_with_names():
    model = L.Linear(2, 1, rng=0, dtype=np.float64)
    opt = Adam(model, lr=0.1)
    opt.step()
    state = opt.state_dict()
    assert state["param_groups"] == [dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8,
                                          weight_decay=0.0, amsgrad=False,
                                          params=["weight", "bias"])]
    assert set(state["state"]["weight"]) == {"step", "exp_avg", "exp_avg_sq"}


def test_load_state_dict_errors_change_nothing():
    model = _model()
    opt = Adam(model, lr=0.1)
    _set_grads(model, 0)
    opt.step()
    good = opt.state_dict()
    other = Adam(decay_groups(_model()), lr=0.1)
    with pytest.raises(ValueError, match="has 1 parameter groups, but the optimizer has 2"):
        other.load_state_dict(good)
    bad = copy.deepcopy(good)
    bad["state"]["0.weight"]["exp_avg"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"state '0.weight'\['exp_avg'\] of shape"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["params"] = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="parameter group 0 holds"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["param_groups"][0]["momentum"] = 0.9
    with pytest.raises(ValueError, match="unknown key 'momentum'"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(good)
    bad["state"]["nope"] = {}
    with pytest.raises(ValueError, match="'nope', which is not a parameter"):
        opt.load_state_dict(bad)
    with pytest.raises(TypeError, match="keys 'state' and 'param_groups'"):
        opt.load_state_dict(model.state_dict())
    assert opt.param_groups[0]["lr"] == 0.1 and opt.state["0.weight"]["step"] == 1


# ----------------------------------------------------------------------------------------------
# bad arguments

@pytest.mark.parametrize("make,error,match", [
    (lambda p: Adam(p, lr=-0.1), ValueError, "lr must be a finite number >= 0"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be in \[0.0, 1.0\)"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be in \[0.0, 1.0\)"),
    (lambda p: AdamW(p, betas=0.9), TypeError, "betas must be a pair"),
    (lambda p: Adam(p, eps=-1e-8), ValueError, "eps must be"),
    (lambda p: AdamW(p, weight_decay=-1), ValueError, "weight_decay must be"),
    (lambda p: Adam(p, amsgrad=1), TypeError, "amsgrad must be a bool"),
    (lambda p: SGD(p, lr=0.1, momentum=-1), ValueError, "momentum must be"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), ValueError, "nesterov=True needs a momentum"),
    (lambda p: Adam([{"params": p, "momentum": 0.9}]), ValueError,
     "unknown key 'momentum' in parameter group 0; the keys are 'params' and 'lr'"),
    (lambda p: Adam([{"params": p, "lr": -1}]), ValueError, "lr must be a finite number >= 0"),
    (lambda p: Adam([{"lr": 0.1}]), TypeError, "a dict with a 'params' key"),
    (lambda p: Adam([{"params": p}, {"params": p}]), ValueError, "'0.weight' appears twice"),
    (lambda p: Adam([{"params": p}, ("w", np.zeros(1), np.zeros(1))]), TypeError,
     "not a mixture"),
    (lambda p: Adam(L.ReLU()), ValueError, "empty parameter list"),
    (lambda p: Adam([]), ValueError, "empty parameter list"),
    (lambda p: Adam(3), TypeError, "params must be a model"),
    (lambda p: Adam({"params": p}), TypeError, "params must be a model"),
    (lambda p: SGD([1, 2], lr=0.1), TypeError, r"layer or \(name, value, grad\) triples"),
    (lambda p: SGD([("w", np.zeros(2), np.zeros(3))], lr=0.1), TypeError, "arrays of one shape"),
    (lambda p: SGD([("w", np.zeros(2, int), np.zeros(2, int))], lr=0.1), TypeError,
     "floating-point array"),
])
def test_bad_optimizer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(_model())


# ----------------------------------------------------------------------------------------------
# learning-rate schedules

def _lrs(make_scheduler, steps=20, lrs=(0.1, 0.03), framework=None):
    """The lr of every group after construction and after each of `steps` steps."""
    if framework is None:
        opt = SGD([{"params": [(f"p{i}", np.zeros(1), np.zeros(1))], "lr": lr}
                   for i, lr in enumerate(lrs)], lr=1.0)
    else:
        opt = framework.optim.SGD([{"params": [framework.zeros(1, requires_grad=True)],
                                    "lr": lr} for lr in lrs], lr=1.0)
    schedulers = make_scheduler(opt, framework.optim.lr_scheduler if framework else None)
    sequence = [[group["lr"] for group in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        for scheduler in schedulers:
            scheduler.step()
        sequence.append(list(schedulers[-1].get_last_lr()))
    return np.array(sequence)


SCHEDULES = {
    "step": lambda opt, m: [(m.StepLR if m else StepLR)(opt, step_size=3, gamma=0.5)],
    "cosine": lambda opt, m: [(m.CosineAnnealingLR if m else CosineAnnealingLR)(
        opt, T_max=7, eta_min=0.001)],
    "warmup": lambda opt, m: [(m.LinearLR if m else LinearLR)(opt, start_factor=0.25,
                                                               total_iters=4)],
    "decay": lambda opt, m: [(m.LinearLR if m else LinearLR)(opt, start_factor=1.0,
                                                              end_factor=0.1, total_iters=10)],
    "warmup+cosine": lambda opt, m: [(m.LinearLR if m else LinearLR)(opt, total_iters=5),
                                     (m.CosineAnnealingLR if m else CosineAnnealingLR)(
                                         opt, T_max=20)],
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_equal_torchs(name):
    torch = pytest.importorskip("torch")
    ours = _lrs(SCHEDULES[name])
    theirs = _lrs(SCHEDULES[name], framework=torch)
    np.testing.assert_allclose(ours, theirs, rtol=1e-14, atol=0)


def test_schedules_follow_their_closed_forms():
    base = np.array([0.1, 0.03])
    epochs = np.arange(21)[:, None]
    np.testing.assert_allclose(_lrs(SCHEDULES["step"]), base * 0.5 ** (epochs // 3), rtol=1e-14)
    # cosine: the closed form up to T_max (after it PyTorch's recursion is the reference)
    cosine = 0.001 + (base - 0.001) * (1 + np.cos(np.pi * epochs / 7)) / 2
    np.testing.assert_allclose(_lrs(SCHEDULES["cosine"])[:8], cosine[:8], rtol=1e-12)
    warmup = base * (0.25 + 0.75 * np.minimum(epochs, 4) / 4)
    np.testing.assert_allclose(_lrs(SCHEDULES["warmup"]), warmup, rtol=1e-14)
    decay = base * (1.0 - 0.9 * np.minimum(epochs, 10) / 10)
    np.testing.assert_allclose(_lrs(SCHEDULES["decay"]), decay, rtol=1e-14)


def test_scheduler_state_dict_round_trip():
    opt = Adam([("p", np.zeros(1), np.zeros(1))], lr=0.1)
    scheduler = CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        scheduler.step()
    state, opt_state = scheduler.state_dict(), opt.state_dict()
    assert state["last_epoch"] == 3 and state["base_lrs"] == [0.1]
    expected = [scheduler.step() or scheduler.get_last_lr()[0] for _ in range(4)]
    opt2 = Adam([("p", np.zeros(1), np.zeros(1))], lr=0.7)
    scheduler2 = CosineAnnealingLR(opt2, T_max=99)
    opt2.load_state_dict(opt_state)
    scheduler2.load_state_dict(state)
    assert [scheduler2.step() or scheduler2.get_last_lr()[0] for _ in range(4)] == expected
    with pytest.raises(ValueError, match="expected the keys"):
        scheduler2.load_state_dict({"last_epoch": 1})


@pytest.mark.parametrize("make,error,match", [
    (lambda o: StepLR(o, step_size=0), ValueError, "step_size must be >= 1"),
    (lambda o: StepLR(o, step_size=2.0), TypeError, "step_size must be an int"),
    (lambda o: StepLR(o, 2, gamma=-0.5), ValueError, "gamma must be"),
    (lambda o: CosineAnnealingLR(o, T_max=0), ValueError, "T_max must be >= 1"),
    (lambda o: CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min must be"),
    (lambda o: LinearLR(o, start_factor=0), ValueError, r"start_factor must be in \(0.0, 1.0\]"),
    (lambda o: LinearLR(o, end_factor=1.5), ValueError, r"end_factor must be in \[0.0, 1.0\]"),
    (lambda o: LinearLR(o, total_iters=0), ValueError, "total_iters must be >= 1"),
    (lambda o: StepLR("adam", 2), TypeError, "optimizer must be a fastconv.optim optimizer"),
])
def test_bad_scheduler_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(SGD([("p", np.zeros(1), np.zeros(1))], lr=0.1))


# ----------------------------------------------------------------------------------------------
# gradient clipping

def _grads(dtype, scale):
    rng = np.random.default_rng(3)
    return [(f"g{i}", np.zeros(shape, dtype), (rng.standard_normal(shape) * scale).astype(dtype))
            for i, shape in enumerate([(3, 4), (5,), (2, 1, 3), (0, 2)])]


@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, 3.0])
@pytest.mark.parametrize("scale", [0.01, 10.0])  # below and above max_norm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_follows_its_definition(norm_type, scale, dtype):
    triples = _grads(dtype, scale)
    flat = np.concatenate([g.ravel() for _, _, g in triples]).astype(np.float64)
    total = (np.abs(flat).max() if norm_type == math.inf
             else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type))
    before = [g.copy() for _, _, g in triples]
    got = clip_grad_norm_(triples, max_norm=1.0, norm_type=norm_type)
    assert got == pytest.approx(total, rel=TOL[dtype])
    coefficient = min(1.0 / (total + 1e-6), 1.0)
    assert (coefficient < 1) == (scale == 10.0)
    for (_, _, g), b in zip(triples, before):
        np.testing.assert_allclose(g, b * coefficient, rtol=TOL[dtype])
        assert g.dtype == dtype


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_equals_torchs(norm_type, dtype):
    torch = pytest.importorskip("torch")
    model = _model(dtype)
    tensors = [torch.tensor(value.copy(), requires_grad=True) for _, value, _ in model.parameters()]
    for tensor, grad in zip(tensors, _set_grads(model, 0)):
        tensor.grad = torch.tensor(grad)
    total = clip_grad_norm_(model, 0.5, norm_type)
    total_torch = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type)
    assert total == pytest.approx(total_torch.item(), rel=TOL[dtype])
    for (name, _, grad), tensor in zip(model.parameters(), tensors):
        np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=TOL[dtype], atol=TOL[dtype],
                                   err_msg=name)


def test_clip_grad_norm_non_finite_and_bad_arguments():
    triples = [("g", np.zeros(2), np.array([np.inf, 1.0]))]
    with pytest.raises(RuntimeError, match="total norm of order 2.0 of the gradients is inf"):
        clip_grad_norm_(triples, 1.0, error_if_nonfinite=True)
    with pytest.warns(RuntimeWarning, match="invalid value"):
        assert clip_grad_norm_(triples, 1.0) == math.inf
    assert np.isnan(triples[0][2][0]) and triples[0][2][1] == 0  # inf * 0, as PyTorch
    assert clip_grad_norm_([], 1.0) == 0.0
    for kwargs, error, match in [
            (dict(max_norm=-1), ValueError, "max_norm must be"),
            (dict(max_norm=1, norm_type=0), ValueError, "norm_type must be a finite number > 0"),
            (dict(max_norm=1, norm_type="2"), TypeError, "norm_type must be a real number"),
            (dict(max_norm=1, error_if_nonfinite=1), TypeError, "must be a bool")]:
        with pytest.raises(error, match=match):
            clip_grad_norm_(_model(), **kwargs)


def test_optimizer_base_class_is_shared_and_repr():
    assert issubclass(AdamW, Adam) and issubclass(Adam, Optimizer) and issubclass(SGD, Optimizer)
    model = _model()
    assert repr(SGD(model, lr=0.1)) == ("SGD(lr=0.1, momentum=0.0, weight_decay=0.0, "
                                        "nesterov=False)")
    text = repr(AdamW(decay_groups(model), lr=0.1))
    assert "group 1: lr=0.1, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0" in text
    import fastconv.optim
    assert fastconv.optim.lr_scheduler.StepLR is StepLR
