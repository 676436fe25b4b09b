"""Arrays whose first byte lies on a 64-byte boundary.

NumPy aligns its allocations to 16 bytes only; then three in four of the AVX-512 kernels'
64-byte vector loads and stores straddle two cache lines, each costing two accesses
(measured on a Zen 5, depthwise 3x3 over 112 x 112 x 32: 0.131 -> 0.094 ms on one thread
with input and output aligned). The activations fastconv allocates for its kernels and the
blocked and Winograd kernels' packed weights come from here; arrays users pass in (and
weights the kernels read as they are) are taken as they are.
"""
from __future__ import annotations

import math

import numpy as np

ALIGNMENT = 64  # bytes: a cache line, and an AVX-512 vector


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array (like np.empty) starting on an ALIGNMENT-byte
    boundary. Its .base is the byte buffer that owns the memory (views of it share that
    base; view() makes other arrays in it)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape) if np.iterable(shape) else (shape,)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    return _placed(raw, _start(raw), nbytes, shape, dtype)


def capacity(owner: np.ndarray) -> int:
    """The bytes an array made by view() in `owner` (an empty()'s .base) can hold."""
    return owner.nbytes - _start(owner)


def _start(owner: np.ndarray) -> int:
    """The offset of owner's first ALIGNMENT-byte boundary (reading the address: 2 us)."""
    return -owner.ctypes.data % ALIGNMENT


def view(owner: np.ndarray, shape, dtype) -> np.ndarray:
    """An aligned C-contiguous array of `shape` and `dtype` in the byte buffer `owner`
    (ValueError when it does not fit: see capacity)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape) if np.iterable(shape) else (shape,)
    nbytes = math.prod(shape) * dtype.itemsize
    start = _start(owner)  # once: capacity() would read the address again
    if nbytes > owner.nbytes - start:
        raise ValueError(f"view: {nbytes} bytes do not fit in {owner.nbytes - start}")
    return _placed(owner, start, nbytes, shape, dtype)


def _placed(owner: np.ndarray, start: int, nbytes: int, shape: tuple, dtype) -> np.ndarray:
    """The array of `shape` and `dtype` in owner's bytes [start, start + nbytes)."""
    return owner[start:start + nbytes].view(dtype).reshape(shape)


def aligned(a: np.ndarray) -> np.ndarray:
    """`a` itself when it is C-contiguous and aligned, else an aligned copy."""
    if a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0:
        return a
    out = empty(a.shape, a.dtype)
    out[...] = a
    return out
