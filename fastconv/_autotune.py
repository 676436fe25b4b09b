"""Measured choice of algorithm (like cuDNN's benchmark mode), off unless asked for.

With set_autotune(True) (or FASTCONV_AUTOTUNE=1 in the environment), algorithm="auto" times
the algorithms that can serve a convolution the first time its geometry is seen, per
direction (forward, input gradient, weight gradient), geometry, dtype and thread count, and
from then on runs the fastest. Every timed call computes the real result, so measuring costs
only the slower candidates' time. The choices live in memory and can be saved to and loaded
from a JSON file.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastconv import _algorithms, _machine
from fastconv._params import as_bool
from fastconv._threads import get_num_threads

DIRECTIONS = ("forward", "input_gradient", "weight_gradient")
CANDIDATES = tuple(a for a in _algorithms.ALGORITHMS if a != "auto")
FORMAT = "fastconv-autotune"
VERSION = 1
WARM_RUNS = 2  # untimed calls of each candidate first (page faults, caches, thread wake-up)
TIMED_RUNS = 3  # then the fastest of this many
# seconds of measuring per geometry: past it each remaining candidate runs (and counts) once
BUDGET_SECONDS = 1.0

Key = tuple  # (direction, input shape, weight shape, stride, padding, dilation, groups,
#               dtype name, threads)

_enabled = os.environ.get("FASTCONV_AUTOTUNE", "0").strip() not in ("", "0", "false", "False")
_cache: dict[Key, str] = {}
_lock = threading.Lock()


def set_autotune(enabled: bool) -> None:
    """Let algorithm="auto" measure the candidate algorithms the first time it meets a
    convolution (per direction, geometry, dtype and thread count) and keep the fastest (True),
    or follow its rules (False, the default; FASTCONV_AUTOTUNE=1 in the environment turns it
    on at import). The first call of each geometry then runs every candidate a few times
    (about a second at most), each computing the real result; results of later calls can
    differ from the rules' in the last bits (another algorithm). Choices already measured
    are kept when it is turned off, and used again when it is turned back on.

    Raises TypeError if `enabled` is not a bool."""
    global _enabled
    _enabled = as_bool("enabled", enabled)


def get_autotune() -> bool:
    """Whether algorithm="auto" measures (set_autotune)."""
    return _enabled


def key(direction: str, geo, dtype, threads: int | None = None) -> Key:
    """The cache key of a convolution `geo` (ConvGeometry; of a transposed convolution: the
    convolution it is the adjoint of) in `direction` at `threads` (default: the current
    get_num_threads())."""
    return (direction, (geo.n, *geo.in_hw, geo.in_channels),
            (*geo.kernel_hw, geo.in_channels // geo.groups, geo.out_channels),
            tuple(geo.stride), tuple(tuple(p) for p in geo.padding), tuple(geo.dilation),
            geo.groups, np.dtype(dtype).name, get_num_threads() if threads is None else threads)


def lookup(direction: str, geo, dtype, threads: int | None = None) -> str | None:
    """The measured algorithm of a convolution, when autotuning is on and has measured it."""
    if not _enabled:
        return None
    return _cache.get(key(direction, geo, dtype, threads))


def candidates(geo) -> tuple[str, ...]:
    """The algorithms that can serve the convolution `geo` (blocked, which serves every
    one, not where it cannot win: a depthwise convolution has one channel per group, a
    block of output channels would run one lane in 16 or 32)."""
    serves = _algorithms.winograd_serves(geo.kernel_hw, geo.stride, geo.dilation)
    depthwise = _algorithms.is_depthwise(
        (*geo.kernel_hw, geo.in_channels // geo.groups, geo.out_channels), geo.groups)
    return tuple(a for a in CANDIDATES if (a != "winograd" or serves)
                 and (a != "blocked" or not depthwise))


def time_call(algorithm: str, run: Callable[[str], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call run(algorithm). Tests replace this with a fake timer."""
    start = time.perf_counter()
    result = run(algorithm)
    return time.perf_counter() - start, result


def run(direction: str, geo, dtype, algorithm: str, compute: Callable[[str], Any]) -> Any:
    """compute(algorithm) with algorithm="auto" resolved: the measured choice when
    autotuning is on (measured now if this convolution is new), else "auto" itself (the
    kernels' rules). compute must compute the real result with any concrete algorithm
    (writing into the same output each time, or returning it); its result is returned."""
    chosen = resolved(direction, geo, dtype, algorithm)
    if chosen is not None:
        return compute(chosen)
    chosen, result = measure(candidates(geo), compute)
    with _lock:
        _cache[key(direction, geo, dtype)] = chosen
    return result


def resolved(direction: str, geo, dtype, algorithm: str) -> str | None:
    """The algorithm run() would compute with in one call: `algorithm` itself unless it is
    "auto" with autotuning on, else the measured choice; None when run() would measure
    now (calling compute once per candidate and timed run)."""
    if algorithm != "auto" or not _enabled:
        return algorithm
    return lookup(direction, geo, dtype)


def measure(names, compute: Callable[[str], Any]) -> tuple[str, Any]:
    """(fastest of `names`, the result of the first timed call). Each candidate runs
    WARM_RUNS untimed calls, then the fastest of TIMED_RUNS counts; once BUDGET_SECONDS of
    calls have been spent, each remaining candidate runs once and that call counts. A
    candidate that runs out of memory (its scratch buffers) is passed over."""
    best: dict[str, float] = {}
    spent, result, have_result = 0.0, None, False
    failure: MemoryError | None = None
    for name in names:
        times = []
        try:
            for call in range(WARM_RUNS + TIMED_RUNS):
                seconds, out = time_call(name, compute)
                spent += seconds
                over = spent > BUDGET_SECONDS
                if call >= WARM_RUNS or over:
                    times.append(seconds)
                    if not have_result:
                        result, have_result = out, True
                if over:
                    break
        except MemoryError as exc:
            failure = exc
            continue
        best[name] = min(times)
    if not best:
        raise failure if failure is not None else ValueError("autotune: no candidate algorithm")
    return min(best, key=lambda name: best[name]), result


def clear() -> None:
    """Forget every measured choice (tests)."""
    with _lock:
        _cache.clear()


def cached() -> dict[Key, str]:
    """A copy of the measured choices."""
    with _lock:
        return dict(_cache)


# ----------------------------------------------------------------------------------------------
# the cache on disk

def save_autotune_cache(path) -> None:
    """Write the measured choices to `path` as JSON, with the format, its version and this
    machine's CPU model (a cache from another CPU is refused when loaded).

    Raises OSError if the file cannot be written."""
    entries = [{"direction": k[0], "input_shape": list(k[1]), "weight_shape": list(k[2]),
                "stride": list(k[3]), "padding": [list(p) for p in k[4]],
                "dilation": list(k[5]), "groups": k[6], "dtype": k[7], "threads": k[8],
                "algorithm": algorithm} for k, algorithm in sorted(cached().items())]
    document = {"format": FORMAT, "version": VERSION, "cpu": _machine.FACTS.cpu,
                "simd": _machine.FACTS.simd, "entries": entries}
    with open(path, "w") as f:
        json.dump(document, f, indent=1)


def load_autotune_cache(path) -> int:
    """Add the choices saved by save_autotune_cache in `path` to the measured ones (a loaded
    choice replaces a measured one for the same key); returns how many were loaded. They are
    used while set_autotune(True) is on.

    Raises ValueError, loading nothing (the choices in memory stay as they were), if the file
    is not a fastconv autotune cache (not JSON, another format or version, a damaged entry)
    or was made on another CPU or instruction set; OSError if it cannot be read."""
    with open(path) as f:
        text = f.read()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"load_autotune_cache: {path} is not a fastconv autotune cache (not "
                         f"JSON: {exc}); nothing was loaded") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"load_autotune_cache: {path} is not a fastconv autotune cache "
                         f"(expected \"format\": \"{FORMAT}\"); nothing was loaded")
    if document.get("version") != VERSION:
        raise ValueError(f"load_autotune_cache: {path} has format version "
                         f"{document.get('version')!r}, this fastconv reads version {VERSION}; "
                         f"nothing was loaded")
    here = (_machine.FACTS.cpu, _machine.FACTS.simd)
    there = (document.get("cpu"), document.get("simd"))
    if there != here:
        raise ValueError(f"load_autotune_cache: {path} was measured on another machine (CPU "
                         f"{there[0]!r}, {there[1]}), this one is {here[0]!r}, {here[1]}: its "
                         f"choices do not hold here; nothing was loaded")
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"load_autotune_cache: {path} has no list of \"entries\"; nothing "
                         f"was loaded")
    loaded = {}
    for i, entry in enumerate(entries):
        try:
            k, algorithm = _entry(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"load_autotune_cache: {path}: entry {i} is damaged ({exc}); "
                             f"nothing was loaded") from None
        loaded[k] = algorithm
    with _lock:
        _cache.update(loaded)
    return len(loaded)


def _ints(value, length: int, name: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) != length
            or not all(type(v) is int and v >= 0 for v in value)):
        raise ValueError(f"{name} must be a list of {length} integers >= 0, got {value!r}")
    return tuple(value)


def _entry(entry) -> tuple[Key, str]:
    """A cache file's entry as (key, algorithm), every field checked: a choice that cannot
    serve its geometry would compute a wrong result."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {entry!r}")
    direction, algorithm = entry["direction"], entry["algorithm"]
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    input_shape = _ints(entry["input_shape"], 4, "input_shape")
    weight_shape = _ints(entry["weight_shape"], 4, "weight_shape")
    stride = _ints(entry["stride"], 2, "stride")
    dilation = _ints(entry["dilation"], 2, "dilation")
    padding = entry["padding"]
    if not isinstance(padding, list) or len(padding) != 2:
        raise ValueError(f"padding must be two [before, after] pairs, got {padding!r}")
    padding = tuple(_ints(p, 2, "padding") for p in padding)
    groups, threads, dtype = entry["groups"], entry["threads"], entry["dtype"]
    if type(groups) is not int or groups < 1 or type(threads) is not int or threads < 1:
        raise ValueError(f"groups and threads must be integers >= 1, got {groups!r}, "
                         f"{threads!r}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if min(stride) < 1 or min(dilation) < 1:
        raise ValueError(f"stride and dilation must be >= 1, got {stride}, {dilation}")
    if algorithm not in CANDIDATES or (algorithm == "winograd" and not
                                       _algorithms.winograd_serves(weight_shape[:2], stride,
                                                                   dilation)):
        raise ValueError(f"algorithm {algorithm!r} cannot serve kernel {weight_shape[:2]}, "
                         f"stride {stride}, dilation {dilation}")
    return (direction, input_shape, weight_shape, stride, padding, dilation, groups, dtype,
            threads), algorithm
