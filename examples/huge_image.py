"""Filter and convolve an image larger than memory, out of core, with fastconv.dask.

    python examples/huge_image.py [--size 20000] [--chunk 512] [--workdir DIR] [--keep]
                                  [--check] [--workers N | --scheduler ADDRESS]

Writes a synthetic size x size x 3 float32 image (4.8 GB at the default size) to a raw file
in --workdir (default: a new temporary directory, removed at the end unless --keep), then
streams it chunk by chunk, file to file, a band of chunks at a time, through
  1. blur.f32: fastconv.dask.filter2d with a Gaussian kernel (sigma 2, 13 x 13), "reflect"
     boundary -- the same size as the image;
  2. conv.f32: fastconv.dask.conv2d with a 3x3 convolution from 3 to 8 channels, stride 2,
     padding 1, "reflect" boundary -- (size / 2) x (size / 2) x 8.
Memory holds a few chunks at a time: the peak resident memory printed at the end (of this
process, or of each worker) stays far below the image's size.

--check compares the top-left and bottom-right corners of both outputs with in-memory
fastconv on the crops of the image they come from.
--workers N starts a dask.distributed LocalCluster of N worker processes (1 thread each);
--scheduler tcp://HOST:8786 uses a running cluster, whose workers must see --workdir under
the same path (a shared file system). Without either, dask's local threaded scheduler runs.
On a cluster, bigger chunks (--chunk 1024 or more) cost less scheduling per pixel.
The files are raw float32 arrays in C order (np.memmap / np.fromfile read them).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np

import fastconv
import fastconv.dask as fcd
from fastconv import filters

SIGMA = 2.0
CONV_OUT, CONV_STRIDE, CONV_PADDING = 8, 2, 1


class RawArray:
    """A raw C-order (H, W, C) array in a file, read and written one block at a time with
    plain file reads and writes, a row at a time (a memory map would count the pages around
    every row it touches as this process's memory). It pickles as its path, so
    dask.distributed workers open the file themselves."""

    def __init__(self, path, shape, dtype=np.float32):
        self.path, self.shape, self.dtype = str(path), tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def create(self):
        with open(self.path, "wb") as f:
            f.truncate(math.prod(self.shape) * self.dtype.itemsize)
        return self

    def _rows(self, index):
        """(rows, columns, channels) slices of a block index, and the file offsets of its
        rows."""
        rows, cols, chans = (index + (slice(None),) * 3)[:3]
        rows, cols = range(*rows.indices(self.shape[0])), range(*cols.indices(self.shape[1]))
        if rows.step != 1 or cols.step != 1:
            raise IndexError("RawArray reads and writes blocks only (steps of 1)")
        row_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        offsets = [r * row_bytes + cols.start * self.shape[2] * self.dtype.itemsize
                   for r in rows]
        return (len(rows), len(cols), self.shape[2]), chans, offsets

    def __getitem__(self, index):
        shape, chans, offsets = self._rows(index)
        block = np.empty(shape, self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            for row, offset in zip(block, offsets):
                f.seek(offset)
                f.readinto(memoryview(row).cast("B"))
        return block[:, :, chans]

    def __setitem__(self, index, value):
        shape, chans, offsets = self._rows(index)
        if chans != slice(None) and range(*chans.indices(shape[2])) != range(shape[2]):
            raise IndexError("RawArray writes all channels of a block")
        value = np.ascontiguousarray(np.broadcast_to(value, shape), self.dtype)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for row, offset in zip(value, offsets):
                os.pwrite(fd, memoryview(row).cast("B"), offset)
        finally:
            os.close(fd)


def write_image(path: Path, size: int, band: int = 256) -> RawArray:
    """A synthetic size x size x 3 float32 image: smooth waves plus a grid of blocks (edges),
    written band by band (never all in memory)."""
    cols = np.arange(size)
    with open(path, "wb") as f:
        for r0 in range(0, size, band):
            rows = np.arange(r0, min(r0 + band, size))[:, None]
            blocks = ((rows // 97 + cols // 89) % 2).astype(np.float32)
            image = np.empty((rows.size, size, 3), np.float32)
            for c, (p, q) in enumerate(((701, 433), (1511, 977), (293, 2003))):
                image[:, :, c] = np.sin(rows / p) * np.cos(cols / q) + 0.25 * blocks
            image.tofile(f)
    return RawArray(path, (size, size, 3))


def conv_weight() -> np.ndarray:
    """A fixed 3x3 weight from 3 to 8 channels: edge detectors and blurs."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((3, 3, 3, CONV_OUT)) / 5).astype(np.float32)


def store_in_bands(y, target: RawArray, chunk_rows: int = 1) -> None:
    """da.store(y, target), `chunk_rows` rows of y's chunks at a time. A chunk's halo comes
    from its neighbours, and dask, given the whole image at once, keeps several rows of chunks
    in memory waiting for them; a band at a time, it keeps about three rows of chunks (the
    band and the rows around it, read again for the next band)."""
    borders = np.cumsum((0, *y.chunks[0])).tolist()
    for i in range(0, len(y.chunks[0]), chunk_rows):
        rows = slice(borders[i], borders[min(i + chunk_rows, len(y.chunks[0]))])
        da.store(y[rows], target, regions=(rows,), lock=False)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB


def crop_reference(image: RawArray, rows, cols, pads, kernel_hw, stride, compute):
    """The output rows [r0, r1) x cols [c0, c1) of a convolution of the whole image, computed
    in memory from the crop of the image they read: compute(crop, padding) with the image's
    padding where the crop touches its border. (Exact for every padding mode but "circular",
    whose padding comes from the far side of the image.)"""
    crop, crop_pads = [], []
    for (j0, j1), (before, _), k, n in zip((rows, cols), pads, kernel_hw, image.shape):
        start, stop = j0 * stride - before, (j1 - 1) * stride + k - before
        crop.append(slice(max(start, 0), min(stop, n)))
        crop_pads.append((max(-start, 0), max(stop - n, 0)))
    return compute(image[tuple(crop)], tuple(crop_pads))


def check_corners(image: RawArray, out: RawArray, pads, kernel_hw, stride, compute, what: str):
    side = min(256, out.shape[0], out.shape[1])
    for name, r0, c0 in (("top-left", 0, 0),
                         ("bottom-right", out.shape[0] - side, out.shape[1] - side)):
        rows, cols = (r0, r0 + side), (c0, c0 + side)
        expected = crop_reference(image, rows, cols, pads, kernel_hw, stride, compute)
        got = out[rows[0]:rows[1], cols[0]:cols[1]]
        error = float(np.max(np.abs(got - expected)))
        print(f"  check {what} {name} {side}x{side}: max |difference| {error:.2e}")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def run(size: int, chunk: int, workdir: Path, check: bool) -> dict:
    timings = {}
    t = time.perf_counter()
    image = write_image(workdir / "image.f32", size)
    timings["write image"] = time.perf_counter() - t
    print(f"image: {size} x {size} x 3 float32, {size * size * 12 / 1e9:.2f} GB in "
          f"{workdir} ({timings['write image']:.1f} s to write)")
    x = da.from_array(image, chunks=(chunk, chunk, 3), name=f"image-{image.path}")

    # 1. Gaussian blur, the image's size
    kernel = filters.gaussian(SIGMA)
    blur = fcd.filter2d(x, kernel, padding="same", padding_mode="reflect")
    out = RawArray(workdir / "blur.f32", blur.shape).create()
    t = time.perf_counter()
    store_in_bands(blur, out)
    timings["blur"] = time.perf_counter() - t
    print(f"blur: filter2d Gaussian sigma={SIGMA} ({kernel.shape[0]}x{kernel.shape[1]}), "
          f"chunks {chunk}: {timings['blur']:.1f} s -> {out.path}")
    if check:
        half = kernel.shape[0] // 2
        check_corners(image, out, ((half, half), (half, half)), kernel.shape, 1,
                      lambda crop, pads: filters.filter2d(crop, kernel, padding=pads,
                                                          padding_mode="reflect"), "blur")

    # 2. 3x3 convolution 3 -> 8 channels, stride 2
    weight = conv_weight()
    conv = fcd.conv2d(x, weight, stride=CONV_STRIDE, padding=CONV_PADDING,
                      padding_mode="reflect")
    out = RawArray(workdir / "conv.f32", conv.shape).create()
    t = time.perf_counter()
    store_in_bands(conv, out)
    timings["conv"] = time.perf_counter() - t
    print(f"conv: conv2d 3x3 3->{CONV_OUT} stride {CONV_STRIDE}, output {conv.shape}: "
          f"{timings['conv']:.1f} s -> {out.path}")
    if check:
        pad = (CONV_PADDING, CONV_PADDING)
        check_corners(image, out, (pad, pad), (3, 3), CONV_STRIDE,
                      lambda crop, pads: fastconv.conv2d(crop, weight, stride=CONV_STRIDE,
                                                         padding=pads,
                                                         padding_mode="reflect"), "conv")
    return timings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20000, help="image side (default 20000)")
    parser.add_argument("--chunk", type=int, default=512, help="chunk side (default 512)")
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a new "
                                                     "temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the files at the end")
    parser.add_argument("--check", action="store_true",
                        help="compare the outputs' corners with in-memory fastconv")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, help="start a local dask.distributed cluster "
                                                     "of this many worker processes")
    cluster.add_argument("--scheduler", help="address of a running dask.distributed "
                                             "scheduler, e.g. tcp://10.0.0.5:8786")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fastconv-huge-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        client = None
        if args.workers or args.scheduler:
            from dask.distributed import Client, LocalCluster
            if args.workers:
                target = stack.enter_context(LocalCluster(
                    n_workers=args.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None))
            else:
                target = args.scheduler
            client = stack.enter_context(Client(target))
            print(f"dask.distributed: {len(client.nthreads())} workers, "
                  f"{sum(client.nthreads().values())} threads")
        else:
            print("dask: local threaded scheduler")
        t = time.perf_counter()
        try:
            run(args.size, args.chunk, workdir, args.check)
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(f"total {time.perf_counter() - t:.1f} s; peak resident memory: this process "
              f"{peak_rss_mb():.0f} MB", end="")
        if client is not None:
            workers = client.run(peak_rss_mb)
            print(", workers " + ", ".join(f"{mb:.0f} MB" for mb in workers.values()), end="")
        print(f" (image {args.size * args.size * 12 / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
