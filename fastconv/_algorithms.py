"""Which kernel serves which convolution, and how the work is cut into tiles."""
from __future__ import annotations

import importlib
import os

from fastconv._kernels import _im2col, _openmp

SIMD_LEVELS = ("baseline", "avx2", "avx512")


def simd_modules(name: str) -> dict:
    """{instruction set: module} for the variants of kernel module `name` that were built and
    that this CPU runs ("baseline" is always there)."""
    found = {}
    for level in _openmp.cpu_instruction_sets():
        try:
            found[level] = importlib.import_module(
                f"fastconv._kernels.{name}" + ("" if level == "baseline" else f"_{level}"))
        except ImportError:  # not built here (another architecture, or FASTCONV_NATIVE=1)
            pass
    return found


def _best_simd(name: str):
    """The widest variant; FASTCONV_SIMD=baseline|avx2|avx512 caps it (for tests, or a CPU
    that clocks down on wide vectors)."""
    modules = simd_modules(name)
    cap = os.environ.get("FASTCONV_SIMD", "avx512")
    allowed = SIMD_LEVELS[:SIMD_LEVELS.index(cap) + 1] if cap in SIMD_LEVELS else SIMD_LEVELS
    return [modules[level] for level in SIMD_LEVELS if level in modules and level in allowed][-1]


KERNELS = {"direct": _best_simd("_direct"), "im2col": _im2col}
USES_BLAS = {"direct": False, "im2col": True}
# below this much work (a few microseconds) waking a second thread costs more than it saves
PARALLEL_MIN_FLOPS = 1_000_000
ALGORITHMS = ("auto",) + tuple(KERNELS)

MIN_GEMM_ROWS = 16  # a GEMM with fewer rows runs far below BLAS speed
# outputs at least this large are written with non-temporal stores where a kernel can (they
# would not stay in the caches anyway; the stores skip reading each line first)
STREAM_BYTES = 4 * 1024 * 1024
COLUMN_BUFFER_BYTES = 256 * 1024  # a tile's column buffer: about a quarter of L2
PARTIAL_SUM_BYTES = 16 * 1024 * 1024  # cap on the weight-gradient partial sums
MIN_PARTIAL_SUMS, MAX_PARTIAL_SUMS = 2, 8


def check(fn: str, algorithm) -> str:
    """The user's algorithm argument, validated ("auto" is resolved per kernel call)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: algorithm must be one of {ALGORITHMS}, but got {algorithm!r}")
    return algorithm


def for_convolution(algorithm: str, weight_shape, stride, groups: int) -> str:
    """The kernel for a convolution (also each sub-convolution of an input gradient or a
    transposed convolution). "auto": direct, whose register blocks beat im2col + BLAS on
    most layers of the suite, except where a GEMM does better: a 1x1 stride-1 convolution
    (a single GEMM on the input as it is, with no column copy), and few output channels per
    group behind many taps x input channels (a first layer's input gradient: the direct
    kernel's channel vectors run mostly empty, a GEMM's long sums do not)."""
    if algorithm != "auto":
        return algorithm
    kh, kw, cig, cout = weight_shape
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1):
        return "im2col"
    if cout // groups < 8 and kh * kw * cig >= 64:
        return "im2col"
    return "direct"


def for_single_tap_phases(algorithm: str, kh: int, kw: int, stride, dilation,
                          in_per_group: int) -> bool:
    """Whether an input gradient / transposed convolution runs as one GEMM over all taps
    (_im2col.transpose_single_tap) rather than as sub-pixel phases: possible when no two taps
    share a phase (kernel <= stride, as in 2x2 stride 2), worth it only with a stride (stride
    1 is a single phase already) and, for "auto", enough input channels per group for a GEMM
    (`in_per_group`: the transposed convolution's, i.e. grad_output's)."""
    if algorithm == "direct" or tuple(stride) == (1, 1):
        return False
    for k, s, d in zip((kh, kw), stride, dilation):
        if len({r * d % s for r in range(k)}) < k:
            return False
    return algorithm == "im2col" or in_per_group >= 8


def for_depthwise_data(algorithm: str, stride, depthwise: bool) -> bool:
    """Whether a depthwise input gradient / transposed convolution runs as one pass over the
    output rows (_direct.data_depthwise, all sub-pixel phases of a row at once) rather than
    as sub-pixel phases: with a stride (stride 1 is a single phase already), for "direct"
    and "auto" (a depthwise GEMM has nothing to reuse)."""
    return depthwise and algorithm != "im2col" and tuple(stride) != (1, 1)


def for_weight_gradient(algorithm: str, in_per_group: int, depthwise: bool) -> str:
    """The kernel for a weight gradient. "auto": im2col + BLAS when a group has few input
    channels (a first layer: the direct kernel's blocks of FC_CI input channels run empty),
    direct otherwise."""
    if algorithm != "auto":
        return algorithm
    return "im2col" if in_per_group < 8 and not depthwise else "direct"


def tile_pixels(columns: int, itemsize: int, pixels: int) -> int:
    """Output pixels per im2col tile: a column buffer near COLUMN_BUFFER_BYTES, at least 8
    tiles when there is enough work. Depends on the problem only (not the thread count),
    so results do not change with the number of threads."""
    tile = COLUMN_BUFFER_BYTES // max(1, columns * itemsize)
    tile = min(tile, -(-pixels // 8))
    return max(16, min(tile, 4096))


def partial_sums(weight_bytes: int, work_units: int) -> int:
    """How many partial weight gradients to sum separately (a fixed split of the work, so the
    sum is the same for any thread count; bounded in memory)."""
    wanted = max(MIN_PARTIAL_SUMS, min(MAX_PARTIAL_SUMS, PARTIAL_SUM_BYTES // max(1, weight_bytes)))
    return max(1, min(wanted, work_units))
