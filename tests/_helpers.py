"""Shared helpers of the gradient / transposed-convolution / 1-D tests.

Padding specs are resolved here from the formulas of API.md (not with fastconv._params), so
the references never see anything computed by the code under test.
"""
import math

import numpy as np

import reference

ALGORITHMS = ("direct", "im2col", "auto")
DTYPES = (np.float32, np.float64)
PADDING_MODES = ("zeros", "reflect", "symmetric", "replicate", "circular")


def rand(rng, shape, dtype=np.float64):
    """Uniform values in [-1, 1) of the given dtype."""
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def resolve_padding(padding, kernel_hw, stride, dilation, in_hw):
    """Any padding spec of API.md as ((top, bottom), (left, right))."""
    return reference.pads_from_spec(padding, in_hw, kernel_hw, stride, dilation)


def conv_out_size(n, pads, k, s, d):
    return (n + pads[0] + pads[1] - d * (k - 1) - 1) // s + 1


def restoring_output_padding(in_hw, kernel_hw, stride, pads, dilation):
    """The output_padding with which conv_transpose2d maps conv2d's output size back to
    in_hw: in = (out - 1) * s - pad_total + d * (k - 1) + 1 + output_padding."""
    ops = []
    for n, k, s, p, d in zip(in_hw, kernel_hw, pair(stride), pads, pair(dilation)):
        out = conv_out_size(n, p, k, s, d)
        ops.append(n - ((out - 1) * s - p[0] - p[1] + d * (k - 1) + 1))
    return tuple(ops)


def tolerance(dtype, terms):
    """Relative tolerance for a result that sums `terms` products."""
    if np.dtype(dtype) == np.float64:
        return 1e-10
    return 1e-5 * math.sqrt(max(terms, 1))


def assert_close(actual, expected, dtype, terms, what=""):
    """actual (of dtype) equals the float64 reference within a tolerance scaled by the number
    of summed terms and by the magnitude of the reference."""
    assert actual is not None, f"{what}: got None"
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype} != {np.dtype(dtype)}"
    tol = tolerance(dtype, terms)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(scale, 1.0),
                               err_msg=what)


def case_id(case):
    """A readable pytest id for a dict of convolution arguments."""
    return "-".join(f"{k}={v}" for k, v in case.items()).replace(" ", "")


# ----------------------------------------------------------------------------------------------
# conv2d cases: dicts with "x" (N, H, W, C_in), "w" (kh, kw, C_in // groups, C_out) and the
# keyword arguments of fastconv.conv2d

def conv_args(case):
    """The keyword arguments of fastconv's functions in a case."""
    return {k: v for k, v in case.items() if k not in ("x", "w")}


def transpose_reference_args(case):
    """A conv_transpose2d case in the explicit form reference.conv_transpose2d(_backward)
    takes."""
    kh, kw = case["w"][:2]
    stride, dilation = pair(case.get("stride", 1)), pair(case.get("dilation", 1))
    return dict(stride=stride,
                pads=resolve_padding(case.get("padding", 0), (kh, kw), stride, dilation, None),
                output_padding=pair(case.get("output_padding", 0)), dilation=dilation,
                groups=case.get("groups", 1))


def conv_reference_args(case):
    """A conv2d case in the explicit form reference.conv2d(_backward) takes."""
    kh, kw = case["w"][:2]
    stride, dilation = pair(case.get("stride", 1)), pair(case.get("dilation", 1))
    pads = resolve_padding(case.get("padding", 0), (kh, kw), stride, dilation, case["x"][1:3])
    return dict(stride=stride, pads=pads, dilation=dilation, groups=case.get("groups", 1),
                mode=case.get("padding_mode", "zeros"))


def conv_out_shape(case):
    """conv2d's output shape (N, H_out, W_out, C_out) for a case."""
    ref = conv_reference_args(case)
    hw = [conv_out_size(n, p, k, s, d) for n, p, k, s, d in
          zip(case["x"][1:3], ref["pads"], case["w"][:2], ref["stride"], ref["dilation"])]
    return (case["x"][0], *hw, case["w"][3])
