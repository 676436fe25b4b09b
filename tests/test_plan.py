"""Plans (fastconv._plan): made once per input shape, the same results as the unplanned
functional path, packed weights invalidated by every way weights change."""
import copy
import pickle

import numpy as np
import pytest

import fastconv
from fastconv import _plan
from fastconv import functional as F

RNG = np.random.default_rng(16)

# (layer arguments, input shape): each algorithm that serves, odd channel counts (the direct
# kernel's channel padding), depthwise, groups, strides, dilation, other padding modes
CONV_CASES = [
    (dict(in_channels=3, out_channels=5, kernel_size=3, padding=1), (2, 7, 6, 3)),
    (dict(in_channels=8, out_channels=16, kernel_size=3, padding=1, algorithm="winograd"),
     (1, 9, 10, 8)),
    (dict(in_channels=8, out_channels=12, kernel_size=1, algorithm="im2col"), (2, 5, 5, 8)),
    (dict(in_channels=6, out_channels=6, kernel_size=3, stride=2, padding=1, groups=6),
     (2, 9, 8, 6)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, padding=2, groups=2),
     (1, 8, 9, 4)),
    (dict(in_channels=3, out_channels=4, kernel_size=(3, 2), padding="same",
          padding_mode="reflect"), (2, 6, 5, 3)),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, algorithm="direct"),
     (6, 5, 3)),  # unbatched
    (dict(in_channels=3, out_channels=4, kernel_size=3), (0, 5, 5, 3)),  # N = 0
]

TRANSPOSED_CASES = [
    (dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, output_padding=1),
     (2, 4, 5, 4)),
    (dict(in_channels=8, out_channels=4, kernel_size=2, stride=2), (1, 4, 4, 8)),
    (dict(in_channels=6, out_channels=6, kernel_size=3, stride=2, groups=6), (1, 5, 4, 6)),
]


def _layer(cls, args, dtype):
    return cls(**args, dtype=dtype, rng=0)


def _reference(layer, x):
    common = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                  groups=layer.groups, algorithm=layer.algorithm)
    if isinstance(layer, fastconv.ConvTranspose2d):
        return F.conv_transpose2d(x, layer.weight, layer.bias,
                                  output_padding=layer.output_padding, **common)
    return F.conv2d(x, layer.weight, layer.bias, padding_mode=layer.padding_mode, **common)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, args, shape",
                         [(fastconv.Conv2d, *case) for case in CONV_CASES]
                         + [(fastconv.ConvTranspose2d, *case) for case in TRANSPOSED_CASES])
def test_planned_path_equals_the_unplanned_reference(cls, args, shape, dtype):
    layer = _layer(cls, args, dtype)
    x = RNG.standard_normal(shape).astype(dtype)
    expected = _reference(layer, x)
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        for _ in range(2):  # the second call runs the kept plan and (eval) packs
            np.testing.assert_array_equal(layer(x), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("args, shape", CONV_CASES)
def test_planned_backward_equals_the_functional_one(args, shape, dtype, monkeypatch):
    """Conv2d's backward runs through its forward's plan (no checks and geometry again):
    the functional gradients, bit for bit, and the plan is the forward's, not a new one."""
    layer = _layer(fastconv.Conv2d, args, dtype).train()
    x = RNG.standard_normal(shape).astype(dtype)
    gy = RNG.standard_normal(layer(x).shape).astype(dtype)
    common = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                  groups=layer.groups, padding_mode=layer.padding_mode,
                  algorithm=layer.algorithm)
    want = F.conv2d_backward(gy, x, layer.weight, **common)
    checked = []
    monkeypatch.setattr(F, "_conv_inputs", lambda *a: checked.append(a) or None)
    layer.zero_grad()
    layer(x)
    plans = dict(layer._plans)
    gx = layer.backward(gy)
    assert not checked and layer._plans == plans  # nothing checked or planned again
    np.testing.assert_array_equal(gx, want[0])
    np.testing.assert_array_equal(layer.grads["weight"], want[1])
    if layer.bias is not None:
        np.testing.assert_array_equal(layer.grads["bias"], want[2])


def test_planned_backward_with_a_weight_replaced_after_the_forward():
    """A weight of another shape set between forward and backward is refused as the
    functional backward refuses it; one of another dtype gets its own plan."""
    layer = fastconv.Conv2d(4, 6, 3, padding=1, rng=0).train()
    x = RNG.standard_normal((2, 5, 5, 4)).astype(np.float32)
    gy = np.ones(layer(x).shape, np.float32)
    layer.weight = np.ones((3, 3, 4, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):  # the bias no longer fits
        layer.backward(gy)
    layer.weight = np.ones((3, 3, 4, 6), np.float32)
    layer(x)
    plan = _plan.plan_for(layer, x)
    with pytest.raises(ValueError, match=r"weights of shape \(3, 3, 4, 6\).* \(1, 3, 4, 6\)"):
        plan.backward(gy, x, np.ones((1, 3, 4, 6), np.float32), ("input",))
    transposed = _plan.plan_for(fastconv.ConvTranspose2d(4, 6, 3, rng=0), x)
    with pytest.raises(ValueError, match="conv_transpose2d plan"):
        transposed.backward(gy, x, np.ones((3, 3, 6, 4), np.float32), ("input",))
    layer.weight = RNG.standard_normal((3, 3, 4, 6))  # float64
    layer.zero_grad()
    gx = layer.backward(gy)
    want = F.conv2d_backward(gy, x, layer.weight, padding=1)
    np.testing.assert_allclose(gx, want[0], rtol=1e-6)
    np.testing.assert_allclose(layer.grads["weight"], want[1], rtol=1e-5, atol=1e-5)


def test_non_contiguous_and_other_dtype_inputs():
    layer = fastconv.Conv2d(3, 5, 3, padding=1, rng=0).eval()
    x = RNG.standard_normal((2, 6, 7, 6))[..., ::2]  # float64, strided channels
    np.testing.assert_array_equal(layer(x), _reference(layer, x))
    assert layer(x).dtype == np.float64


def test_same_plan_for_the_same_arguments_new_plan_for_a_new_shape():
    layer = fastconv.Conv2d(3, 4, 3, padding=1, rng=0)
    x = np.zeros((2, 5, 5, 3), np.float32)
    first = _plan.plan_for(layer, x)
    assert _plan.plan_for(layer, x.copy()) is first
    assert layer.plan((2, 5, 5, 3)) is first
    other = _plan.plan_for(layer, np.zeros((2, 6, 5, 3), np.float32))
    assert other is not first and other.out_shape == (2, 6, 5, 4)
    assert _plan.plan_for(layer, x.astype(np.float64)) is not first
    with fastconv.num_threads(1):
        assert _plan.plan_for(layer, x) is not first
    layer.stride = (2, 2)  # a changed configuration is a new plan
    assert _plan.plan_for(layer, x).out_shape == (2, 3, 3, 4)


def test_describe_reports_the_choice():
    layer = fastconv.Conv2d(8, 16, 3, padding=1, rng=0)
    d = layer.plan((1, 16, 16, 8)).describe()
    expected = fastconv._algorithms.describe(layer.plan((1, 16, 16, 8)).geo, "float32")
    assert d["forward"] == expected["forward"][0] and d["reason"] == expected["forward"][1]
    assert d["input_shape"] == (1, 16, 16, 8) and d["output_shape"] == (1, 16, 16, 16)
    assert d["padding"] == ((1, 1), (1, 1)) and d["dtype"] == "float32"
    assert d["weight_gradient"] == expected["weight_gradient"]
    explicit = fastconv.Conv2d(8, 16, 3, padding=1, algorithm="im2col", rng=0)
    d = explicit.plan((1, 16, 16, 8)).describe()
    assert (d["forward"], d["reason"], d["algorithm"]) == ("im2col", "requested", "im2col")
    t = fastconv.ConvTranspose2d(8, 4, 2, stride=2, rng=0).plan((1, 4, 4, 8)).describe()
    assert t["kind"] == "conv_transpose2d" and t["output_shape"] == (1, 8, 8, 4)


def test_algorithm_refused_at_construction():
    with pytest.raises(ValueError, match="winograd.*3x3.*kernel \\(5, 5\\)"):
        fastconv.Conv2d(4, 4, 5, algorithm="winograd")
    with pytest.raises(ValueError, match="winograd.*stride \\(2, 2\\)"):
        fastconv.ConvTranspose2d(4, 4, 3, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="dilation"):
        fastconv.Conv2d(4, 4, 3, dilation=2, algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        fastconv.Conv2d(4, 4, 3, algorithm="fft")


def test_bad_input_still_names_the_problem():
    layer = fastconv.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(ValueError, match="3 channels"):
        layer(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="kernel size"):
        layer(np.zeros((1, 2, 2, 3), np.float32))


# ----------------------------------------------------------------------------------------------
# packed weights: invalidation

def _packed_layer():
    """A layer of an optimized model, whose pack is kept and is a real copy (Winograd's
    transformed weight; no bias, which the kernel reads as it is), and an input."""
    layer = fastconv.Conv2d(8, 8, 3, padding=1, bias=False, algorithm="winograd", rng=0)
    (fused,) = [node for _, node, _ in fastconv.optimize_for_inference(
        fastconv.Sequential(layer)).nodes]
    return fused, RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)


def _fused_reference(fused, x):
    return F.conv2d(x, fused.weight, fused.bias, fused.stride, fused.padding, fused.dilation,
                    fused.groups)


def _step(kind, layer):
    for _, _, grad in layer.parameters():
        grad[...] = 1.0
    optimizer = (fastconv.optim.SGD(layer, lr=0.1) if kind == "sgd"
                 else fastconv.optim.Adam(layer, lr=0.1))
    optimizer.step()


def _change(kind, layer):
    if kind in ("sgd", "adam"):
        _step(kind, layer)
    elif kind == "load_state_dict":
        layer.load_state_dict({k: v * 2 for k, v in layer.state_dict().items()})
    else:  # by hand, then the one call
        layer.weight *= -1
        fastconv.weights_changed(layer)


@pytest.mark.parametrize("kind", ["sgd", "adam", "load_state_dict", "by_hand"])
def test_packs_are_invalidated(kind, monkeypatch):
    layer, x = _packed_layer()
    before = layer(x)
    _change(kind, layer)
    after = layer(x)
    np.testing.assert_allclose(after, _fused_reference(layer, x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(after, before)
    # without the version bump the kept pack is stale: the test above would fail
    layer, x = _packed_layer()
    before = layer(x)
    monkeypatch.setattr(_plan, "bump", lambda *arrays: None)
    _change(kind, layer)
    np.testing.assert_array_equal(layer(x), before)
    assert not np.allclose(layer(x), _fused_reference(layer, x))


def test_packs_are_kept_while_the_weight_is_unchanged():
    layer, x = _packed_layer()
    layer(x)
    (entry,) = layer._packs._store.values()
    layer(x)
    assert layer._packs._store[("winograd", "float32")][3] is entry[3]
    layer.weight = layer.weight * 3  # a new array: nothing to call
    np.testing.assert_allclose(layer(x), _fused_reference(layer, x), rtol=1e-5, atol=1e-5)


def test_calling_eval_again_keeps_the_packs_and_a_mode_switch_drops_them():
    """A loop that calls model.eval() before every call does not pack again each time."""
    layer = fastconv.Conv2d(8, 8, 3, padding=1, algorithm="winograd", rng=0).eval()
    x = RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)
    layer(x)
    layer(x)  # packs again, taking the copy it compares with (see Packs)
    packed = layer._packs._store[("winograd", "float32")][3]
    layer.eval()
    layer(x)
    assert layer._packs._store[("winograd", "float32")][3] is packed
    layer.train()
    assert not layer._packs._store
    layer.train()
    np.testing.assert_allclose(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)
    assert layer._packs._store
    # an inference model's layers trust their packs (no per-call check): eval() drops them
    model = fastconv.Sequential(fastconv.Conv2d(8, 8, 3, padding=1, rng=0), fastconv.ReLU())
    fast = fastconv.optimize_for_inference(model)
    fast(x)
    fast(x)
    fast.nodes[0][1].weight[...] *= 2
    fast.eval()
    model[0].weight *= 2
    np.testing.assert_allclose(fast(x), model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_plain_layers_see_weights_changed_in_place(training):
    """A plain layer compares its weight with the one it packed: an in-place edit needs no
    call, in either mode."""
    layer = fastconv.Conv2d(8, 8, 3, padding=1, algorithm="winograd", rng=0).train(training)
    x = RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)
    store = None
    for edits in range(3):  # an edit after the first call, the second, the third
        for _ in range(edits + 1):
            layer(x)
        store = layer._packs._store
        layer.weight *= -2
        layer.bias += 1
        np.testing.assert_array_equal(layer(x), _reference(layer, x))
    (entry,) = store.values()
    layer(x)
    assert store[("winograd", "float32")][3] is entry[3]  # unchanged: kept


def test_plain_layers_compare_their_weight_bit_for_bit():
    """The comparison is of bytes: a NaN weight keeps its pack from call to call, and a
    zero turned into -0.0 (equal as a number) is packed again."""
    layer = fastconv.Conv2d(4, 4, 3, padding=1, algorithm="direct", rng=0).eval()
    layer.weight[0, 0, 0, 0] = np.nan
    layer.weight[0, 0, 0, 1] = 0.0
    x = RNG.standard_normal((1, 5, 5, 4)).astype(np.float32)
    layer(x)
    layer(x)  # the same version again: copied, compared from now on
    store = layer._packs._store
    (key,) = store
    packed = store[key][3]
    layer(x)
    assert store[key][3] is packed
    layer.weight[0, 0, 0, 1] = -0.0
    layer(x)
    assert store[key][3] is not packed
    layer.bias = [0.5, 0.25, 0.0, 1.0]  # a list, as the plans take it
    for _ in range(3):
        np.testing.assert_allclose(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)
    layer.bias[0] = -1.0
    np.testing.assert_allclose(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 10), (200, 100)])  # below and above _SMALL_BYTES
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64, np.int8])
def test_same_bytes_compares_bits(dtype, shape):
    a = (RNG.standard_normal(shape) * 10).astype(dtype)
    for x in (a, a[:, ::3]):  # contiguous and strided
        assert _plan._same_bytes(x.copy(), x)
        y = x.copy()
        y[-1, -1] += 1
        assert not _plan._same_bytes(y, x)
        other = (np.complex128 if np.dtype(dtype).kind == "c"
                 else np.float32 if dtype == np.float64 else np.float64)
        assert not _plan._same_bytes(x.astype(other), x)  # the same values, another dtype
        assert not _plan._same_bytes(x[:-1], x)
    if np.dtype(dtype).kind == "f":
        nan, zero = np.zeros((2, *shape), dtype), np.zeros((2, *shape), dtype)
        nan[0] = zero[0] = np.nan
        zero[1, -1, -1] = -0.0
        assert _plan._same_bytes(nan, nan.copy()) and not _plan._same_bytes(nan, zero)


def test_a_training_loop_packs_without_copying():
    """The copy a plain layer compares with is taken only when a pack is asked for again
    at the same version: an optimizer step before every call changes the version."""
    layer = fastconv.Conv2d(8, 8, 3, padding=1, algorithm="blocked", rng=0)
    x = RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)
    for _ in range(3):
        layer(x)
        assert all(entry[4] is None for entry in layer._packs._store.values())
        _step("sgd", layer)
    layer(x)
    layer(x)  # the same version again: now copied, and compared at the next call
    (entry,) = layer._packs._store.values()
    assert entry[4] is not None
    layer(x)
    assert layer._packs._store[("blocked", "float32")][3] is entry[3]


def test_weights_changed_refuses_other_objects():
    with pytest.raises(TypeError, match="fastconv layer or a NumPy array"):
        fastconv.weights_changed([1, 2])


def test_copies_and_pickles_drop_the_caches():
    layer = fastconv.Conv2d(8, 8, 3, padding=1, bias=False, algorithm="winograd", rng=0).eval()
    x = RNG.standard_normal((1, 6, 6, 8)).astype(np.float32)
    y = layer(x)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert "_plans" not in clone.__dict__ and "_packs" not in clone.__dict__
        np.testing.assert_array_equal(clone(x), y)
