"""The buffer protocol of fastconv.layers.Layer: buffer_names, buffers(), and state dicts
holding parameters then buffers (PyTorch's order), loaded with the same checks."""
import numpy as np
import pytest

from fastconv import layers as L


class _Counter(L.Linear):
    """A Linear with two buffers, one of them absent (None) as an untracked buffer is."""

    buffer_names = ("running", "count", "absent")

    def __init__(self):
        super().__init__(3, 2, rng=0)
        self.running = np.zeros(2, np.float32)
        self.count = np.array(0, np.int64)
        self.absent = None


def test_buffers_follow_parameters_in_state_dicts():
    layer = _Counter()
    assert [name for name, _ in layer.buffers()] == ["running", "count"]
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running", "count"]
    state["running"][...] = 5  # a copy
    assert not layer.running.any()
    model = L.Sequential(L.ReLU(), _Counter())
    assert list(model.state_dict()) == ["1.weight", "1.bias", "1.running", "1.count"]
    assert [name for name, _ in model.buffers()] == ["1.running", "1.count"]


def test_load_state_dict_loads_buffers_in_place_with_checks():
    layer = _Counter()
    running, count = layer.running, layer.count
    good = {**layer.state_dict(), "running": np.array([1.5, 2.5]), "count": np.array(7)}
    layer.load_state_dict(good)
    assert layer.running is running and layer.count is count  # in place
    np.testing.assert_array_equal(running, [1.5, 2.5])
    assert count.dtype == np.int64 and count == 7
    with pytest.raises(ValueError, match=r"missing keys \['count'\]"):
        layer.load_state_dict({k: v for k, v in good.items() if k != "count"})
    with pytest.raises(ValueError, match=r"expected 'running' of shape \(2,\), but got \(3,\)"):
        layer.load_state_dict({**good, "running": np.zeros(3), "weight": np.zeros((3, 2))})
    with pytest.raises(TypeError, match=r"'count' of a dtype that casts to int64, but got "
                                        r"float64"):
        layer.load_state_dict({**good, "count": np.array(1.0), "weight": np.zeros((3, 2))})
    assert layer.weight.any() and count == 7  # nothing half-loaded
    layer.load_state_dict({"count": np.array(3)}, strict=False)
    assert count == 3
