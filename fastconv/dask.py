"""fastconv on dask arrays: images larger than memory, batches spread over a cluster.

    import dask.array as da
    import fastconv.dask as fcd

    x = da.from_array(images, chunks=(8, 1024, 1024, 3))   # NHWC, chunked along N, H and W
    y = fcd.conv2d(x, weight, padding=1, padding_mode="reflect")   # a lazy dask array
    da.store(y, target)   # or y.compute(), y.to_zarr(...); on a dask.distributed Client too

conv2d and filter2d equal fastconv.conv2d and fastconv.filters.filter2d on the whole array;
predict runs a layer (e.g. a Sequential) over a batch-chunked array. Needs the `dask` extra
(dask[array], and distributed for clusters); `import fastconv` never imports dask.

How the chunks are convolved. The boundary of the whole array is padded once, as the padding
mode says (zeros, or the array's own pixels, chosen as np.pad chooses them). Each chunk then
borrows from its neighbours the `dilation * (k - 1)` rows and columns its receptive fields
reach into (dask's overlap; a chunk smaller than that halo is merged with a neighbour) and
runs a "valid" fastconv.conv2d. For a stride > 1 the chunk borders are moved to output pixel
borders, so that each output pixel is computed by exactly one chunk. With stride 1 and
padding "same", the output has the input's chunks. Channels are never split for conv2d
(filter2d, depthwise, keeps them).

Weights travel once: they are one node of the task graph that every chunk's task depends
on, so a dask.distributed worker receives them once, not with every task.

Memory. A chunk's halo comes from its neighbours, so dask keeps input chunks until their
neighbours are done; computing a whole huge image at once it may keep several rows of
chunks. Storing the output a band of chunk rows at a time bounds that to about three rows
of chunks: examples/huge_image.py does so (store_in_bands), in a few hundred MB for an image
of 4.8 GB.

Threads. A task's fastconv kernels use
    min(fastconv.get_num_threads(), cores // tasks run at once)
threads (at least 1), where cores is the number of CPUs the process may use
(dask.system.CPU_COUNT) and the tasks run at once are: the worker's threads on a
dask.distributed worker; dask's `num_workers` setting, else CPU_COUNT, for the local threaded
or multiprocessing scheduler; 1 for the synchronous scheduler. So fastconv threads x worker
threads never exceed the cores. (dask.distributed's nanny also sets OMP_NUM_THREADS=1 in each
worker process, which fastconv honours: one kernel thread per worker thread.) Every function
takes `threads=n` to override this. Each task sets the number for its own thread only
(fastconv.num_threads), leaving the user's setting alone.
"""
from __future__ import annotations

import copy
import math
import multiprocessing
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.system import CPU_COUNT
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError("fastconv.dask needs dask: pip install 'fastconv[dask]' "
                      "(dask[array], and distributed for clusters)") from _missing

from fastconv import _algorithms, _params, _threads, filters, functional
from fastconv.layers import Layer

__all__ = ["conv2d", "filter2d", "predict"]

_NHWC = "(H, W, C) or (N, H, W, C) [NHWC]"


# ----------------------------------------------------------------------------------------------
# threads per task



def _task_slots() -> int:
    """How many tasks this process runs at once (see the module docstring)."""
    if "distributed" in sys.modules:  # (a worker has imported it; never import it here)
        from distributed import get_worker
        try:
            worker = get_worker()
        except ValueError:  # not inside a distributed worker
            pass
        else:
            return getattr(worker, "state", worker).nthreads  # type: ignore[union-attr, unused-ignore]
    if threading.current_thread() is threading.main_thread() and \
            multiprocessing.parent_process() is None:
        return 1  # the synchronous scheduler: tasks run one by one in the caller's thread
    return dask.config.get("num_workers", None) or CPU_COUNT


@contextmanager
def _task_threads(requested: int | None):
    """fastconv's thread count inside one task, set for the task's own thread only
    (fastconv.num_threads), so tasks side by side and the user's setting don't interfere."""
    n = requested
    if n is None:
        n = max(1, min(_threads.get_num_threads(), CPU_COUNT // max(1, _task_slots())))
    with _threads.num_threads(n):
        yield


def _threads_arg(threads) -> int | None:
    return None if threads is None else _params.as_thread_count("threads", threads)


# ----------------------------------------------------------------------------------------------
# inputs and the halo geometry

def _dask_input(name: str, x):
    """x as a dask array (NumPy arrays and array-likes become one chunk), its dtype checked
    without computing it."""
    if not isinstance(x, da.Array):
        return da.asarray(_params.as_array(name, x))
    _params.as_array(name, np.empty(0, x.dtype))
    if any(math.isnan(size) for size in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {x.shape}); call "
                         f"{name}.compute_chunk_sizes() first")
    return x


def _shared(value, what: str):
    """`value` as one node of the task graph, so that it travels once, not with every task."""
    return dask.delayed(value, pure=True, traverse=False,
                        name=f"fastconv-{what}-{dask.base.tokenize(value)}")


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of a chunked "valid" convolution of the padded input.

    The padded input is cut into `chunks`. Each chunk is computed with `lead` rows borrowed
    from the chunk before it and `halo - lead` from the chunk after it, and gives the output
    rows whose receptive field starts in [start - lead, end - lead) (the first chunk: from
    0): `out_chunks`. The cuts minus `lead` are multiples of the stride, so that no output
    row is computed twice or missed.
    """
    length: int  # the padded rows the output reads
    lead: int
    halo: int
    chunks: tuple[int, ...]
    out_chunks: tuple[int, ...]


def _axis_plan(n: int, pad, k: int, s: int, d: int, chunks) -> _Axis:
    """Plan one spatial axis of input size n with the input's `chunks` along it."""
    halo = d * (k - 1)
    out = _params.conv_output_size(n, pad, k, s, d)  # >= 1: checked by conv_geometry
    length = (out - 1) * s + halo + 1
    # Borrowing the top padding's worth of rows from the chunk before keeps each output
    # chunk where its input chunk was (exactly so for stride 1, padding "same"), and the
    # input's chunks need no rechunking: their borders move by the padding, the cuts too.
    lead = min(pad[0], halo)
    wanted = sorted({lead + (border + pad[0] - lead) // s * s
                     for border in np.cumsum(chunks[:-1], dtype=np.int64).tolist()})
    cuts, previous = [], 0
    for cut in wanted:
        # every chunk at least the halo (a smaller one is merged with the next); the first
        # gives an output row, the last a whole receptive field
        if cut > lead and cut - previous >= halo and length - cut >= halo + 1:
            cuts.append(cut)
            previous = cut
    sizes = np.diff([0, *cuts, length]).tolist()
    out_chunks = np.diff([0, *[(cut - lead) // s for cut in cuts], out]).tolist()
    return _Axis(length, lead, halo, tuple(sizes), tuple(out_chunks))


def _pad_axis(x, axis: int, before: int, length: int, mode: str):
    """The first `length` positions of x padded along `axis` with `before` positions and
    enough after: zeros, or the array's own pixels as np.pad(mode) picks them (for any
    width, also wider than the array)."""
    n = x.shape[axis]
    after = max(length - before - n, 0)
    head = min(before, length)
    body = x[(slice(None),) * axis + (slice(0, min(max(length - before, 0), n)),)]
    if head == 0 and after == 0:
        return body

    def piece(size, start):
        if size == 0:
            return None
        if mode == "zeros":
            shape = list(x.shape)
            shape[axis] = size
            chunks = list(x.chunks)
            chunks[axis] = (size,)
            return da.zeros(shape, dtype=x.dtype, chunks=tuple(chunks))
        source = np.pad(np.arange(n), (before, after), mode=_params.NUMPY_PAD_MODE[mode])
        return da.take(x, source[start:start + size], axis=axis)

    parts = [piece(head, 0), body if body.shape[axis] else None, piece(after, before + n)]
    return da.concatenate([p for p in parts if p is not None], axis=axis)


def _convolve(x, pads, mode: str, kernel_hw, stride, dilation, one_channel_chunk: bool,
              out_channel_chunks, dtype, block_fn, shared, name: str):
    """The chunked "valid" convolution of x (N, H, W, C) padded by `pads` in `mode`:
    block_fn(block, shared) runs on every chunk with its halo. Returns the output."""
    plans = [_axis_plan(n, p, k, s, d, c) for n, p, k, s, d, c
             in zip(x.shape[1:3], pads, kernel_hw, stride, dilation, x.chunks[1:3])]
    padded = x
    for axis, pad, plan in zip((1, 2), pads, plans):
        padded = _pad_axis(padded, axis, pad[0], plan.length, mode)
    padded = padded.rechunk({1: plans[0].chunks, 2: plans[1].chunks,
                             3: -1 if one_channel_chunk else x.chunks[3]})
    depth = {axis: (plan.lead, plan.halo - plan.lead) for axis, plan in zip((1, 2), plans)
             if plan.halo}
    if depth:
        # chunks are all >= their halo, so dask never rechunks (which would break the plan)
        padded = da.overlap.overlap(padded, depth, boundary="none", allow_rechunk=False)
    out_chunks = (x.chunks[0], plans[0].out_chunks, plans[1].out_chunks, out_channel_chunks)
    return padded.map_blocks(block_fn, shared, chunks=out_chunks, dtype=dtype,
                             meta=np.empty((0, 0, 0, 0), dtype), name=name)


# ----------------------------------------------------------------------------------------------
# conv2d

@dataclass(frozen=True)
class _ConvSpec:
    """What every chunk's conv2d needs (shipped once)."""
    weight: np.ndarray
    bias: np.ndarray | None
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    algorithm: str
    threads: int | None


def _conv2d_block(block, spec: _ConvSpec):
    with _task_threads(spec.threads):
        return functional.conv2d(block, spec.weight, spec.bias, spec.stride, 0, spec.dilation,
                                 spec.groups, algorithm=spec.algorithm)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto", *, threads=None):
    """fastconv.conv2d of a dask array: a lazy dask array, equal to fastconv.conv2d(x, ...).

    x: a dask array (N, H, W, C_in) or (H, W, C_in), chunked along N, H and W as you like
    (chunks along C are joined); weight (kh, kw, C_in // groups, C_out) and bias (C_out,) are
    NumPy arrays, copied now. The other arguments are fastconv.conv2d's. The output is
    chunked along N as x, along H and W about as x divided by the stride, not along C_out.
    threads: fastconv threads per task (default: see the module docstring).
    """
    fn = "conv2d"
    x = _dask_input("input", x)
    _params.check_ndim("input", x, (3, 4), _NHWC)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    weight = _params.as_array("weight", weight)
    groups = _params.as_int("groups", groups, 1)
    _params.check_weight(fn, weight, x.shape, groups, transposed=False)
    bias = functional._bias(fn, bias, weight.shape[3])
    dtype = _params.float_dtype(x, weight, *([] if bias is None else [bias]))
    mode = _params.padding_mode(padding_mode)
    geo = _params.conv_geometry(fn, x.shape, weight.shape, stride, padding, dilation, groups)
    algorithm = _algorithms.check(fn, algorithm, geo)
    threads = _threads_arg(threads)
    if geo.n == 0:
        y = da.zeros((0, *geo.out_hw, geo.out_channels), dtype=dtype)
    else:
        # in the computing dtype already: the chunks' results have the dtype conv2d gives
        # the stride and dilation as given: geo's are the kernels' (1 where they cannot matter
        # for the whole array, which a chunk need not share)
        stride, dilation = _params.as_pair("stride", stride), _params.as_pair("dilation", dilation)
        spec = _ConvSpec(np.array(weight, dtype, order="C"),
                         None if bias is None else np.array(bias, dtype),
                         stride, dilation, geo.groups, algorithm, threads)
        y = _convolve(x, geo.padding, mode, geo.kernel_hw, stride, dilation, True,
                      (geo.out_channels,), dtype, _conv2d_block, _shared(spec, "conv2d-weights"),
                      "fastconv-conv2d")
    return y[0] if unbatched else y


# ----------------------------------------------------------------------------------------------
# filter2d

@dataclass(frozen=True)
class _FilterSpec:
    kernel: np.ndarray
    flip: bool
    threads: int | None


def _filter2d_block(block, spec: _FilterSpec):
    with _task_threads(spec.threads):
        return filters.filter2d(block, spec.kernel, padding="valid", flip=spec.flip)


def filter2d(image, kernel, padding="same", padding_mode="reflect", flip=False, *,
             threads=None):
    """fastconv.filters.filter2d of a dask array: a lazy dask array, equal to
    filters.filter2d(image, kernel, padding, padding_mode, flip).

    image: a dask array (H, W), (H, W, C) or (N, H, W, C), chunked along any axis;
    kernel: a 2-D NumPy array. The output has the image's chunks along N and C and, for
    padding="same", about its chunks along H and W.
    threads: fastconv threads per task (default: see the module docstring).
    """
    fn = "filter2d"
    image = _dask_input("image", image)
    kernel, mode = filters.check_filter_args(image, kernel, padding_mode)
    flip = _params.as_bool("flip", flip)
    threads = _threads_arg(threads)
    dtype = _params.float_dtype(image)
    x = {2: image[None, :, :, None], 3: image[None], 4: image}[image.ndim]
    kh, kw = kernel.shape
    if isinstance(padding, str) and padding == "same":
        # the anchor filters.filter2d uses: (kh // 2, kw // 2) of the kernel as given
        before = ((kh - 1) // 2, (kw - 1) // 2) if flip else (kh // 2, kw // 2)
        padding = ((before[0], kh - 1 - before[0]), (before[1], kw - 1 - before[1]))
    geo = _params.conv_geometry(fn, (*x.shape[:3], 1), (kh, kw, 1, 1), 1, padding, 1, 1)
    if x.shape[0] == 0 or x.shape[3] == 0:  # nothing to filter
        y = da.zeros((x.shape[0], *geo.out_hw, x.shape[3]), dtype=dtype)
    else:
        spec = _FilterSpec(np.array(kernel, dtype), flip, threads)
        y = _convolve(x, geo.padding, mode, (kh, kw), (1, 1), (1, 1), False, x.chunks[3],
                      dtype, _filter2d_block, _shared(spec, "filter2d-kernel"),
                      "fastconv-filter2d")
    return {2: lambda: y[0, :, :, 0], 3: lambda: y[0], 4: lambda: y}[image.ndim]()


# ----------------------------------------------------------------------------------------------
# inference with a layer over a batch

def _predict_block(block, model: Layer, threads):
    with _task_threads(threads):
        return model(block)


def predict(model, x, *, threads=None):
    """model(x) for a dask array x whose first axis is the batch: a lazy dask array.

    model: any fastconv layer, typically a Sequential. A copy in eval mode runs (your model
    is not changed), shipped once to the workers. It runs once on a single zero image now,
    to learn the output's shape and dtype. x is chunked along the batch only (chunks along
    other axes are joined); the output has x's batch chunks.
    threads: fastconv threads per task (default: see the module docstring).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"predict: model must be a fastconv.layers.Layer (e.g. a Sequential), "
                        f"but got {type(model).__name__}")
    x = _dask_input("input", x)
    if x.ndim == 0:
        raise ValueError("predict: expected input with a batch axis first, but got a 0-D array")
    threads = _threads_arg(threads)
    model = copy.deepcopy(model).eval()
    probe = np.asarray(model(np.zeros((1, *x.shape[1:]), x.dtype)))
    if probe.ndim == 0 or probe.shape[0] != 1:
        raise ValueError(f"predict: the model must keep the batch axis first, but one image "
                         f"of shape {(1, *x.shape[1:])} gave an output of shape {probe.shape}")
    x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    extra = {}
    if probe.ndim < x.ndim:
        extra["drop_axis"] = list(range(probe.ndim, x.ndim))
    elif probe.ndim > x.ndim:
        extra["new_axis"] = list(range(x.ndim, probe.ndim))
    return x.map_blocks(_predict_block, _shared(model, "model"), threads,
                        chunks=(x.chunks[0], *((size,) for size in probe.shape[1:])),
                        dtype=probe.dtype, meta=np.empty((0,) * probe.ndim, probe.dtype),
                        name="fastconv-predict", **extra)
