"""Weights on disk: fastconv.save(model_or_state_dict, path) and fastconv.load(path).

The file's suffix chooses the format:

- ".safetensors": the safetensors format (https://huggingface.co/docs/safetensors), through
  the optional package `safetensors` (pip install "fastconv[io]"); readable by other tools,
  no code runs on load;
- ".npz": NumPy's zip of .npy files (the format of np.savez), always available, written and
  read without pickle (np.load(path, allow_pickle=False) reads it too).

Both keep every array exactly: dtype (float32, float64, int64 0-d buffers such as BatchNorm's
num_batches_tracked, ...), shape and values, and the order of the keys. The idiom:

    fastconv.save(model, "model.safetensors")
    model.load_state_dict(fastconv.load("model.safetensors"))
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from fastconv import _params

SUFFIXES = (".safetensors", ".npz")
# the safetensors metadata entry keeping the state dict's key order (the format sorts them)
_ORDER_KEY = "fastconv.keys"


def _format(fn: str, path) -> str:
    try:
        name = os.fspath(path)
    except TypeError:
        raise TypeError(f"{fn}: path must be a str or os.PathLike, but got "
                        f"{type(path).__name__}") from None
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{fn}: path must end in .safetensors or .npz (the suffix chooses the "
                         f"format), but got {name!r}")
    return suffix


def _safetensors_numpy(fn: str):
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(f"{fn}: .safetensors files need the package safetensors (pip install "
                          f"safetensors, or fastconv[io]); .npz files need nothing") from None
    return safetensors.numpy


def save(model_or_state_dict, path) -> None:
    """Write a model's state_dict() (or a state dict {name: array}) to path, in the format its
    suffix names: ".safetensors" (needs the package safetensors) or ".npz".

    Arrays may be of any boolean, integer or float dtype up to 64 bits, of any shape (0-d
    too). TypeError for a non-str key or a non-numeric array, ValueError for another suffix,
    ImportError for .safetensors without safetensors. The file is overwritten.
    """
    fmt = _format("fastconv.save", path)
    state = (model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict")
             else model_or_state_dict)
    if not hasattr(state, "items"):
        raise TypeError(f"fastconv.save: expected a model or a state dict {{name: array}}, but "
                        f"got {type(model_or_state_dict).__name__}")
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"fastconv.save: state dict keys must be str, but got {key!r}")
        # C order for the writers (np.ascontiguousarray would turn a 0-d array into 1-d)
        arrays[key] = np.asarray(_params.as_array(f"state_dict[{key!r}]", value), order="C")
    if fmt == ".safetensors":
        metadata = {_ORDER_KEY: json.dumps(list(arrays))}
        _safetensors_numpy("fastconv.save").save_file(arrays, path, metadata=metadata)
        return
    # np.savez's layout, written here so that any key works (np.savez's own keyword
    # arguments, "file" and "allow_pickle", cannot be array names there)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load(path) -> dict[str, np.ndarray]:
    """The state dict {name: np.ndarray} saved in path (".safetensors" or ".npz", by its
    suffix), in the order it was saved, each array with its saved dtype and shape (writable).
    Load a model's weights with model.load_state_dict(fastconv.load(path)).

    FileNotFoundError for a missing file, ValueError for another suffix, ImportError for
    .safetensors without the package safetensors.
    """
    fmt = _format("fastconv.load", path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fastconv.load: no such file: {os.fspath(path)!r}")
    if fmt == ".safetensors":
        safetensors_numpy = _safetensors_numpy("fastconv.load")
        from safetensors import safe_open
        with safe_open(path, "np") as archive:
            order = json.loads((archive.metadata() or {}).get(_ORDER_KEY, "[]"))
        arrays = safetensors_numpy.load_file(path)
        keys = order if sorted(order) == sorted(arrays) else sorted(arrays)
        return {key: arrays[key] for key in keys}
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}

