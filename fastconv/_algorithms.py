"""Which kernel serves which convolution, and how the work is cut into tiles."""
from __future__ import annotations

import importlib
import os

import numpy as np

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


KERNELS = {"direct": _best_simd("_direct"), "im2col": _im2col,
           "winograd": _best_simd("_winograd"), "blocked": _best_simd("_blocked")}
USES_BLAS = {"direct": False, "im2col": True, "winograd": True, "blocked": False}
# below this much work (a few microseconds) waking a second thread costs more than it saves
PARALLEL_MIN_FLOPS = 1_000_000
ALGORITHMS = ("auto",) + tuple(KERNELS)

MIN_GEMM_ROWS = 16  # a GEMM with fewer rows runs far below BLAS speed
# outputs at least this large are written with non-temporal stores where a kernel can (they
# would not stay in the caches anyway; the stores skip reading each line first)
STREAM_BYTES = 4 * 1024 * 1024
COLUMN_BUFFER_BYTES = 256 * 1024  # a tile's column buffer: about a quarter of L2
# a thread's transformed tiles, in and out: forward within L2 (the transforms dominate);
# weight gradient larger (its GEMMs sum over the tiles of a block: longer sums pay more)
WINOGRAD_BUFFER_BYTES = 512 * 1024
WINOGRAD_GRAD_BUFFER_BYTES = 4 * 1024 * 1024
# "auto": the largest transformed weight (36 x C_in/groups x C_out) that every block of tiles
# may re-read; 256 -> 256 channels (9 MiB) ran between 0.4x and 1.7x direct on 2 threads
WINOGRAD_MAX_WEIGHT_BYTES = 4 * 1024 * 1024
# the weight gradient only writes its transformed weight (its partial sums), once per block:
# 256 -> 256 channels ran 1.6-1.9x direct there
WINOGRAD_MAX_GRAD_WEIGHT_BYTES = 16 * 1024 * 1024
PARTIAL_SUM_BYTES = 16 * 1024 * 1024  # cap on the weight-gradient partial sums
MIN_PARTIAL_SUMS, MAX_PARTIAL_SUMS = 2, 8


def is_depthwise(weight_shape, groups: int) -> bool:
    """One input and one output channel per group, in more than one group (HWIO weight):
    the kernels run all its channels as one vector-wide group."""
    return weight_shape[2] == 1 and weight_shape[3] == groups > 1


def check(fn: str, algorithm, geo) -> str:
    """The user's algorithm argument, validated against the convolution's geometry `geo`
    (ConvGeometry; "auto" is resolved per kernel call)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: algorithm must be one of {ALGORITHMS}, but got {algorithm!r}")
    if algorithm == "winograd" and not winograd_serves(geo.kernel_hw, geo.stride, geo.dilation):
        others = tuple(a for a in ALGORITHMS if a != "winograd")
        raise ValueError(
            f"{fn}: algorithm 'winograd' serves 3x3 kernels with stride 1 and dilation 1, but "
            f"got kernel {tuple(geo.kernel_hw)}, stride {tuple(geo.stride)}, dilation "
            f"{tuple(geo.dilation)}; use one of {others}")
    return algorithm


def winograd_serves(kernel_hw, stride, dilation) -> bool:
    """Whether Winograd F(4x4, 3x3) computes this convolution (stride and dilation as the
    kernels see them: 1 where they cannot matter)."""
    return tuple(kernel_hw) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


def for_convolution(algorithm: str, weight_shape, out_shape, itemsize: int, stride, dilation,
                    groups: int) -> str:
    """The kernel for a convolution with output shape `out_shape` (N, H_out, W_out, C_out)
    (also each sub-convolution of an input gradient or a transposed convolution). "auto":
    - Winograd where it serves and pays (see winograd_pays);
    - the blocked direct kernel where its blocks fill (see blocked_pays);
    - im2col for a 1x1 stride-1 convolution with 8 or more input channels per group (a
      single GEMM on the input as it is, with no column copy; not depthwise, where each
      channel's GEMM would sum one term), and for few output channels per group behind many
      taps x input channels (a first layer's input gradient: the direct kernel's channel
      vectors run mostly empty, a GEMM's long sums do not);
    - direct otherwise: its register blocks beat im2col + BLAS on most layers of the suite.
    No geometry makes a kernel's scratch explode: direct's zero-padded window holds only the
    columns its taps read when a stride or dilation spaces them (at most kh x 8 pixels x kw
    taps x C_in values per thread), im2col's tiles are sized by tile_pixels, so a huge
    stride or dilation (WaveNet/TCN's dilated 1-D convolutions) needs no rule here."""
    if algorithm != "auto":
        return algorithm
    kh, kw, cig, cout = weight_shape
    if _auto_picks_winograd(weight_shape, out_shape, itemsize, stride, dilation, groups,
                            WINOGRAD_MAX_WEIGHT_BYTES):
        return "winograd"
    if blocked_pays(weight_shape, itemsize, stride, groups):
        return "blocked"
    if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and cig >= 8:
        return "im2col"
    if cout // groups < 8 and kh * kw * cig >= 64:
        return "im2col"
    return "direct"


def blocked_pays(weight_shape, itemsize: int, stride, groups: int) -> bool:
    """Whether the blocked kernel beats direct and im2col (measured on an AMD Zen 5, AVX-512,
    fp32, 1 and 2 threads): its register block is OUT_BLOCK output channels (4 vectors on
    AVX-512, 2 on AVX2) x 6 pixels, summed over kh*kw taps x C_in/groups, so it pays when
    - a group's output channels fill its blocks (at least 3/4 of the padded width: 16
      channels in a 64-wide block run at a quarter of its speed, below direct),
    - a group has at least 16 input channels (fewer: the per-tap work is too short to cover
      setting up a block; the 3-channel stem runs on direct),
    - and it is not a 1x1 stride-1 convolution with fewer than 128 input channels per group:
      that one GEMM on the input as it is (im2col) streams a large output better
      (64 -> 256 at 56x56, 2 threads: im2col 1.5x blocked); from 128 input channels blocked
      wins (256 -> 64 at 56x56 1.1-1.2x, 1024 -> 256 at 14x14 1.35x, 512 -> 2048 at 7x7 1.2x).
    im2col's GEMMs stay single-threaded inside OpenMP threads: one multi-threaded BLAS GEMM
    ran 1.1-1.4x faster alone, but its threads and OpenMP's then spin against each other
    (a 3x3 layer right after it ran at half speed)."""
    kh, kw, cig, cout = weight_shape
    cog = cout // groups
    block = KERNELS["blocked"].OUT_BLOCK["float32" if itemsize == 4 else "float64"]
    padded = -(-cog // block) * block
    if is_depthwise(weight_shape, groups) or cig < 16 or 4 * cog < 3 * padded:
        return False
    return not ((kh, kw) == (1, 1) and tuple(stride) == (1, 1) and cig < 128)


def _auto_picks_winograd(weight_shape, out_shape, itemsize: int, stride, dilation, groups: int,
                         max_weight_bytes: int) -> bool:
    """"auto"'s choice of Winograd, for a convolution or its weight gradient."""
    kh, kw, cig, cout = weight_shape
    return (_auto_winograd and winograd_serves((kh, kw), stride, dilation)
            and winograd_pays(cig, cout // groups, groups, out_shape, itemsize, max_weight_bytes))


def winograd_pays(in_per_group: int, out_per_group: int, groups: int, out_shape,
                  itemsize: int, max_weight_bytes: int) -> bool:
    """Whether Winograd beats the other kernels, as measured on this project's 2-core machine
    with 2 threads (see README): at least 8 input channels and 512 channel pairs per group
    (fewer: transforming the tiles costs more than the products save, as on CIFAR's
    3-channel first layer or 8 groups of 16 channels); a transformed weight small enough
    to stay in cache (at most max_weight_bytes); at least 64 tiles (one 28x28 image has 49:
    0.8x direct); and at least half of each 4x4 tile inside the output."""
    tiles = winograd_tiles(out_shape)
    return (in_per_group >= 8 and in_per_group * out_per_group >= 512
            and 36 * in_per_group * out_per_group * groups * itemsize <= max_weight_bytes
            and tiles >= 64
            and 2 * out_shape[0] * out_shape[1] * out_shape[2] >= 16 * tiles)


def winograd_tiles(out_shape) -> int:
    """The 4x4 output tiles of an output (N, H_out, W_out, ...)."""
    n, ho, wo = out_shape[:3]
    return n * -(-ho // 4) * -(-wo // 4)


def set_auto_winograd(enabled: bool) -> None:
    """Let "auto" choose Winograd (the default) or not. Winograd's float32 results differ
    from the exact ones by about 1e-5 relative to the output's largest value, several times
    direct convolution's error (README: "Winograd"); explicit algorithm="winograd" works
    either way."""
    global _auto_winograd
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_auto_winograd: expected enabled to be a bool, but got {enabled!r}")
    _auto_winograd = bool(enabled)


def get_auto_winograd() -> bool:
    """Whether "auto" may choose Winograd (FASTCONV_AUTO_WINOGRAD=0 in the environment turns
    it off at import)."""
    return _auto_winograd


_auto_winograd = os.environ.get("FASTCONV_AUTO_WINOGRAD", "1").strip() not in ("0", "false", "False")


def for_single_tap_phases(algorithm: str, kh: int, kw: int, stride, dilation,
                          in_per_group: int) -> bool:
    """Whether an input gradient / transposed convolution runs as one GEMM over all taps
    (_im2col.transpose_single_tap) rather than as sub-pixel phases: possible when no two taps
    share a phase (kernel <= stride, as in 2x2 stride 2), worth it only with a stride (stride
    1 is a single phase already) and, for "auto", enough input channels per group for a GEMM
    (`in_per_group`: the transposed convolution's, i.e. grad_output's)."""
    if algorithm in ("direct", "blocked") or tuple(stride) == (1, 1):
        return False
    for k, s, d in zip((kh, kw), stride, dilation):
        if len({r * d % s for r in range(k)}) < k:
            return False
    return algorithm == "im2col" or in_per_group >= 8


def for_depthwise_data(algorithm: str, stride, weight_shape, groups: int) -> bool:
    """Whether a depthwise input gradient / transposed convolution runs as one pass over the
    output rows (_direct.data_depthwise, all sub-pixel phases of a row at once) rather than
    as sub-pixel phases: with a stride (stride 1 is a single phase already), for "direct"
    and "auto" (a depthwise GEMM has nothing to reuse)."""
    return (is_depthwise(weight_shape, groups) and algorithm != "im2col"
            and tuple(stride) != (1, 1))


def for_weight_gradient(algorithm: str, weight_shape, out_shape, itemsize: int, geo) -> str:
    """The kernel for a weight gradient (geo: the convolution's ConvGeometry). "auto":
    Winograd where it serves and pays for the forward convolution; im2col + BLAS when a group
    has few input channels (a first layer: the direct kernel's blocks of FC_CI input
    channels run empty) and for 1x1 kernels with at least 256 input channels per group (one
    GEMM x^T gy per chunk of pixels; measured on a Zen 5, 2 threads: 1024 -> 256 at 14x14
    1.4-1.8x direct, 512 -> 2048 at 7x7 1.6-1.8x, 256 -> 64 at 56x56 1.0x, but 64 -> 256 at
    56x56 0.85x); blocked where its blocks fill (blocked_pays: 3x3 256 -> 256 at 14x14 1.1x
    im2col and 1.5x direct, 512 -> 512 at 7x7 1.5x and 2x); direct otherwise."""
    if algorithm != "auto":
        return algorithm
    if _auto_picks_winograd(weight_shape, out_shape, itemsize, geo.stride, geo.dilation,
                            geo.groups, WINOGRAD_MAX_GRAD_WEIGHT_BYTES):
        return "winograd"
    cig = weight_shape[2]
    gemm = cig < 8 or (tuple(weight_shape[:2]) == (1, 1) and cig >= 256)
    if gemm and not is_depthwise(weight_shape, geo.groups):
        return "im2col"
    return "blocked" if blocked_pays(weight_shape, itemsize, geo.stride, geo.groups) else "direct"


def tile_pixels(columns: int, itemsize: int, pixels: int) -> int:
    """Output pixels per im2col tile: a column buffer near COLUMN_BUFFER_BYTES, at least 8
    tiles when there is enough work. Depends on the problem only (not the thread count),
    so results do not change with the number of threads."""
    tile = COLUMN_BUFFER_BYTES // max(1, columns * itemsize)
    tile = min(tile, -(-pixels // 8))
    return max(16, min(tile, 4096))


def winograd_block(in_channels: int, out_channels: int, itemsize: int, tiles: int,
                   budget: int = WINOGRAD_BUFFER_BYTES) -> int:
    """Tiles per Winograd block: a thread's transformed tiles (36 x block x (C_in + C_out))
    near `budget` bytes, at least 4 blocks when there is enough work. Depends on the
    problem only, so results do not change with the number of threads."""
    block = budget // (36 * (in_channels + out_channels) * itemsize)
    block = min(block, -(-tiles // 4))
    # a multiple of 4 rows for the GEMMs (measured: 7 runs at half the speed of 8 or 4)
    return max(4, min(block, 1024) // 4 * 4)


def partial_sums(weight_bytes: int, work_units: int) -> int:
    """How many partial weight gradients to sum separately (a fixed split of the work, so the
    sum is the same for any thread count; bounded in memory)."""
    wanted = max(MIN_PARTIAL_SUMS, min(MAX_PARTIAL_SUMS, PARTIAL_SUM_BYTES // max(1, weight_bytes)))
    return max(1, min(wanted, work_units))
