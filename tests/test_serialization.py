"""fastconv.save / fastconv.load: exact round trips through .safetensors and .npz files."""
import sys

import numpy as np
import pytest

import fastconv
from fastconv import layers as L

SUFFIXES = (".npz", ".safetensors")


def _needs(suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")


def _state():
    """Every kind of array a state dict may hold, in a deliberately unsorted key order."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    return {
        "layer1.0.conv1.weight": weight,
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d int64 buffer
        "bn1.running_var": np.array([1.0, np.inf, np.nan, -0.0]),
        "0.bias": rng.standard_normal(4).astype(np.float64),
        "a.strided": weight[:, ::2, 0, 1],                       # not contiguous
        "half": np.array([0.5, 65504.0], np.float16),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "file": np.arange(3, dtype=np.uint8),                    # np.savez's own argument names
        "allow_pickle": np.arange(2, dtype=np.int32),
    }


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_is_exact_and_keeps_the_order(tmp_path, suffix):
    _needs(suffix)
    state = _state()
    path = tmp_path / f"weights{suffix}"
    fastconv.save(state, path)
    loaded = fastconv.load(str(path))
    assert list(loaded) == list(state)
    for key, value in state.items():
        got = loaded[key]
        assert isinstance(got, np.ndarray) and got.dtype == value.dtype, key
        assert got.shape == value.shape, key
        np.testing.assert_array_equal(got, value, err_msg=key)
        assert got.tobytes() == value.tobytes(), key  # -0.0 and nan bits
        assert got.flags.writeable
    fastconv.save({"only": np.ones(2)}, path)  # overwritten
    assert list(fastconv.load(path)) == ["only"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_model_round_trips_through_a_file(tmp_path, suffix):
    _needs(suffix)
    model = L.Sequential(L.Conv2d(2, 4, 3, rng=0), L.ReLU(), L.Flatten(), L.Linear(4, 3, rng=1))
    path = tmp_path / f"model{suffix}"
    fastconv.save(model, path)
    other = L.Sequential(L.Conv2d(2, 4, 3, rng=5), L.ReLU(), L.Flatten(), L.Linear(4, 3, rng=6))
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 2)).astype(np.float32)
    assert not np.array_equal(other(x), model(x))
    other.load_state_dict(fastconv.load(path))
    np.testing.assert_array_equal(other(x), model(x))


def test_files_are_the_standard_formats(tmp_path):
    state = {"w": np.arange(6.0).reshape(2, 3), "n": np.array(3, np.int64)}
    fastconv.save(state, tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as archive:
        assert archive.files == ["w", "n"]
        np.testing.assert_array_equal(archive["w"], state["w"])
    np.savez(tmp_path / "b.npz", **state)
    assert fastconv.load(tmp_path / "b.npz")["n"].dtype == np.int64
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    fastconv.save(state, tmp_path / "a.safetensors")
    theirs = safetensors_numpy.load_file(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(theirs["w"], state["w"])
    # a file written elsewhere (no key order recorded) loads with its keys sorted
    safetensors_numpy.save_file({"z": np.ones(1), "b": np.zeros(2)}, tmp_path / "c.safetensors")
    assert list(fastconv.load(tmp_path / "c.safetensors")) == ["b", "z"]


def test_without_safetensors_npz_still_works(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors now fails
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"need the package safetensors .*fastconv\[io\]"):
        fastconv.save({"w": np.ones(2)}, tmp_path / "w.safetensors")
    fastconv.save({"w": np.ones(2)}, tmp_path / "w.npz")
    np.testing.assert_array_equal(fastconv.load(tmp_path / "w.npz")["w"], np.ones(2))


@pytest.mark.parametrize("call,error,match", [
    (lambda d: fastconv.load(d / "missing.npz"), FileNotFoundError, "no such file"),
    (lambda d: fastconv.load(d / "missing.safetensors"), FileNotFoundError, "no such file"),
    (lambda d: fastconv.save({"w": np.ones(1)}, d / "w.pt"), ValueError,
     r"must end in .safetensors or .npz .*w.pt'"),
    (lambda d: fastconv.load(d / "w"), ValueError, "must end in .safetensors or .npz"),
    (lambda d: fastconv.save({"w": np.ones(1)}, 3), TypeError, "path must be a str"),
    (lambda d: fastconv.save({1: np.ones(1)}, d / "w.npz"), TypeError, "keys must be str"),
    (lambda d: fastconv.save({"w": np.array(["a"])}, d / "w.npz"), TypeError,
     r"state_dict\['w'\] must hold real numbers"),
    (lambda d: fastconv.save({"w": np.ones(1, complex)}, d / "w.npz"), TypeError,
     "must hold real numbers"),
    (lambda d: fastconv.save([np.ones(1)], d / "w.npz"), TypeError,
     "expected a model or a state dict"),
])
def test_bad_arguments(tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(tmp_path)
    assert not (tmp_path / "w.npz").exists()
