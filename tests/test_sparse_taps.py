"""Strides and dilations much larger than the kernel (issue 15, item 2): the direct kernel's
zero-padded window holds only the columns its taps read, so its scratch stays as small as the
work however far apart the taps are; results against the NumPy reference."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
import reference
from _helpers import assert_close

# (x shape, weight shape, stride, padding, dilation, groups): taps far apart along W (a
# block's span many times its taps), along H only, a dilated 1-D-like row, depthwise
CASES = [
    ((2, 5, 23, 3), (2, 3, 3, 5), (2, 5), ((1, 0), (9, 11)), (1, 7), 1),
    ((1, 9, 6, 2), (3, 2, 2, 3), (3, 1), ((4, 4), (1, 0)), (2, 1), 1),
    ((2, 1, 40, 4), (1, 3, 4, 6), (1, 1), ((0, 0), (20, 20)), (1, 20), 1),
    ((1, 4, 30, 6), (2, 3, 1, 6), (1, 4), ((1, 1), (13, 2)), (1, 9), 6),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_far_apart_taps_match_reference(rng, case, dtype):
    x_shape, w_shape, stride, pads, dilation, groups = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[3]).astype(dtype)
    y = fastconv.conv2d(x, w, b, stride, pads, dilation, groups, algorithm="direct")
    expected = reference.conv2d(x, w, b, stride, pads, dilation, groups)
    terms = w_shape[0] * w_shape[1] * w_shape[2]
    assert_close(y, expected, dtype, terms, "forward")
    assert_close(fastconv.conv2d(x, w, b, stride, pads, dilation, groups), expected, dtype, terms,
                 "forward, auto")
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, _ = fastconv.conv2d_backward(gy, x, w, stride, pads, dilation, groups,
                                         algorithm="direct")
    ref_gx, ref_gw, _ = reference.conv2d_backward(gy, x, w, stride, pads, dilation, groups)
    assert_close(gx, ref_gx, dtype, terms, "input gradient")
    assert_close(gw, ref_gw, dtype, y.shape[0] * y.shape[1] * y.shape[2], "weight gradient")


# the child measures its peak resident memory before and after the calls, in KiB
MEMORY_CHILD = """
import resource, numpy as np, fastconv
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x = np.arange(16.).reshape(1, 4, 4, 1)
fastconv.conv2d(x, np.ones((1, 2, 1, 1)))  # the kernels' first call, before the baseline
before = peak()
big = 2**26
# issue 15's example: 12 numbers from 4 taps per row; the window once spanned 7 * 2**26 columns
y = fastconv.conv2d(x, np.ones((1, 2, 1, 1)), padding=((0, 0), (big, big)), stride=(1, big))
assert y[0, :, :, 0].tolist() == [[0, 1, 0], [0, 9, 0], [0, 17, 0], [0, 25, 0]], y
yt = fastconv.conv2d(x.swapaxes(1, 2), np.ones((2, 1, 1, 1)), padding=((big, big), (0, 0)),
                     stride=(big, 1))
assert (yt[0, :, :, 0].T == y[0, :, :, 0]).all()
# a dilated 1-D convolution (WaveNet/TCN-like, under "auto"), forward and backward
rng = np.random.default_rng(0)
x1 = rng.standard_normal((1, 12, 4)).astype(np.float32)
w1 = rng.standard_normal((3, 4, 4)).astype(np.float32)
d = 2**24
y1 = fastconv.conv1d(x1, w1, padding=d, dilation=d)
assert np.allclose(y1, x1 @ w1[1], rtol=1e-5, atol=1e-5)  # the outer taps land in the padding
gx, gw, _ = fastconv.conv1d_backward(np.ones_like(y1), x1, w1, padding=d, dilation=d)
assert np.allclose(gx, np.ones_like(y1) @ w1[1].T, rtol=1e-5, atol=1e-5)
print(peak() - before)
"""


def test_scratch_is_bounded_by_the_work():
    """Issue 15's example took ~10 s and a 3.6 GB peak; a dilated 1-D convolution's window
    spanned (pixels - 1) + (k - 1) * dilation columns per thread. Now each thread's window is
    at most kh * 8 pixels * kw taps * C values: a few hundred bytes here, so the child's peak
    memory must not grow by more than allocator noise (64 MiB, far below the 1-3.6 GB the
    spans took)."""
    path = [str(Path(fastconv.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    run = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) < 64 * 1024, f"peak grew by {run.stdout.split()[-1]} KiB"
