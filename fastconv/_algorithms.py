"""Which kernel serves which convolution, and how the work is cut into tiles."""
from __future__ import annotations

import importlib
import math
import os

import numpy as np

from fastconv import _machine
from fastconv._kernels import _im2col, _openmp

SIMD_LEVELS = _machine.SIMD_LEVELS


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


def best_simd(name: str):
    """The widest variant that _machine.simd_levels() allows (FASTCONV_SIMD caps it)."""
    modules = simd_modules(name)
    return [modules[level] for level in _machine.simd_levels() if level in modules][-1]


KERNELS = {"direct": best_simd("_direct"), "im2col": best_simd("_im2col"),
           "winograd": best_simd("_winograd"), "blocked": best_simd("_blocked")}
# the kernels that call BLAS (from their OpenMP threads: it must run on one thread then):
# every one of im2col's, and Winograd's weight gradient (its other kernels do their products
# themselves)
BLAS_KERNELS = {"im2col": None, "winograd": ("conv_backward_weight",)}  # None: all


def uses_blas(algo: str, kernel_name: str) -> bool:
    """Whether kernel `kernel_name` of algorithm `algo` calls BLAS."""
    if algo not in BLAS_KERNELS:
        return False
    names = BLAS_KERNELS[algo]
    return names is None or kernel_name in names
# below this much work (a few microseconds) waking a second thread costs more than it saves
PARALLEL_MIN_FLOPS = 1_000_000
# A depthwise convolution does kh * kw multiply-adds per input vector it loads, where a dense
# one reuses each load over a block of output channels: per flop it runs several times
# slower (3x3 on a Zen 5, one thread: 40-70 GFLOP/s against 200+), so the same few
# microseconds hold fewer flops (measured there: 2 threads faster from 4x4x256, 74 KFLOP).
PARALLEL_MIN_DEPTHWISE_FLOPS = PARALLEL_MIN_FLOPS // 8
ALGORITHMS = ("auto",) + tuple(KERNELS)

MIN_GEMM_ROWS = 16  # a GEMM with fewer rows runs far below BLAS speed
MIN_POINTWISE_TILE_ROWS = 128  # see convolution_rule
# A 1x1 weight gradient sums over the output pixels. As one GEMM x^T gy they are its inner
# dimension: with fewer than this, BLAS's packing of x and gy is not repaid, and the blocked
# kernel (gy's block of channels held in registers) wins whatever the channel counts.
# Measured on a Zen 5, 2 threads, backward (the same blocked input gradient in both):
# blocked over GEMM 1.8x at 49 pixels (512 -> 2048), 1.25x at 196 (1024 -> 256), 1.07x at
# 392 (512 -> 2048); 0.92x at 1568 (1024 -> 256). Blocked over direct, 96 -> 576: 1.28x at
# 196 pixels, 1.13x at 1568; 64 -> 256: 0.8x at 25088.
POINTWISE_GEMM_MIN_PIXELS = 1024
# The sizes below follow the caches the machine reports (_machine.FACTS, read at import). The
# fractions give the constants first measured on this project's first machine (256 KiB,
# 512 KiB, 4 MiB, 4 MiB, 16 MiB, 4 MiB) for a 1 MiB L2 (the old comment's "a quarter of L2")
# and an 8 MiB L3 (inferred: that machine's L3 was not recorded).
MACHINE = _machine.FACTS
# outputs at least this large are written with non-temporal stores where a kernel can: with
# an input of about the same size, the weights and the network's other activations they would
# not stay in the last-level cache, and the stores skip reading each line first (a quarter of
# the last-level cache; half of it before: measured on a Zen 5 with 32 MiB of L3, 2 threads,
# batch 8, a quarter made MobileNetV2 8% faster, VGG-16 and ResNet-50 2-3%, ResNet-18 even)
STREAM_BYTES = MACHINE.last_level // 4
# A depthwise convolution and the 1x1 convolution after it run as one kernel
# (_direct.depthwise_pointwise) when the 1x1's packed weight fits in the core's L2: every
# run of the depthwise output reads all of it again (measured on a Zen 5 with 1 MiB of L2,
# 2 threads, against the two kernels: 960 -> 160 at 8x7x7, 737 KB, 0.33 -> 0.31 ms; 960 ->
# 320, 1.2 MB, 0.57 -> 0.64 ms)
SEPARABLE_MAX_POINTWISE_BYTES = MACHINE.l2
# and a thread holds a run of the depthwise output of at most this many bytes while the 1x1
# goes through it (once per block of its output channels, each block's weight once): a
# quarter of L2, so that the run stays there while the blocks of the weight pass through
SEPARABLE_RUN_BYTES = MACHINE.l2 // 4
# With a 1x1 expansion in front (_direct.expand_depthwise_pointwise, MobileNetV2's inverted
# residual block), each image's depthwise rows are cut into bands, one per thread, and the
# input rows two bands read are expanded by both: the expansion joins the kernel where that
# makes at most this fraction of it twice, against the expansion as its own kernel (a
# parallel region and the expanded activation through the caches) before the joined two.
# Measured on a Zen 5, 2 threads, batch 1, each block alone: 96 -> 24 at 112x112 0.35 ->
# 0.20 ms, 144 -> 24 at 56x56 0.26 -> 0.19, 192 -> 32 at 28x28 (1/14 twice) 0.12 -> 0.08;
# 960 -> 160 at 7x7 (2/7 twice) 0.087 -> 0.096 warm. On an AMD EPYC Zen 4, 2 threads,
# batch 1, MobileNetV2's kernel calls one after the other as a pass makes them: its 14x14
# blocks (1/7 twice) 0.20-0.39 -> 0.16-0.32 ms (0.35 ms of 5.7 in all), the 7x7 ones (2/7)
# even; whole passes, two graphs in one process, within the noise (0.97-1.02). (At batch
# 8, one band per image: no row twice.)
EXPAND_MAX_EXTRA = 1 / 4
# a tile's column buffer: a quarter of L2, so that the tile, the weight panel BLAS packs and
# the output rows it writes stay in the core's own L2
COLUMN_BUFFER_BYTES = MACHINE.l2 // 4
# a thread's transformed tiles, in and out: forward within half of L2 (the transforms
# dominate: their reads and writes must hit L2); the weight gradient 4x L2, spilling to L3
# (its GEMMs sum over the tiles of a block: longer sums pay more than L2 hits)
WINOGRAD_BUFFER_BYTES = MACHINE.l2 // 2
WINOGRAD_GRAD_BUFFER_BYTES = 4 * MACHINE.l2
# "auto": the largest transformed weight (36 x C_in/groups x C_out) that every block of tiles
# may re-read: half the last-level cache, the other half left to the tiles and activations
# streaming through (beyond it each block re-reads the weight from memory: 256 -> 256
# channels, 9 MiB against an 8 MiB L3, ran between 0.4x and 1.7x direct on 2 threads)
WINOGRAD_MAX_WEIGHT_BYTES = MACHINE.last_level // 2
# ... or, beyond it, where blocks of at least STREAMED_WINOGRAD_MIN_BLOCK tiles share each
# read of the weight from memory (streamed_winograd_refusal: a block of B tiles does B/2
# flops per byte of it). The forward kernel's products run on register blocks over the
# packed weight: blocks of 8 tiles pay (AMD EPYC Zen 3, 2 threads, 3x3 512 -> 512, 36 MiB:
# 8x7x7, 32 tiles in blocks of 8, 8.6 ms, blocked 13.6; 1x28x28, blocks of 16, 10.8 ms,
# blocked 28; 1x14x14, blocks of 4, 6.4 ms, blocked 7.1). The weight gradient's products are
# BLAS calls, which pack the weight-sized operand again at each of a block's 36 GEMMs: 96
# tiles (Xeon, AVX-512, 2 MiB of L2, 2 threads, 512 -> 512 at 8x28x28: blocks of 4 tiles 83
# GFLOP/s, of 52 tiles 317, of 100 tiles 438-467, the blocked kernel 270).
STREAMED_WINOGRAD_MIN_BLOCK = 8
STREAMED_WINOGRAD_GRAD_MIN_BLOCK = 96
STREAMED_WINOGRAD_MAX_BLOCK = 128
# the weight gradient only writes its transformed weight (its partial sums), once per block:
# up to twice the last-level cache (256 -> 256 channels ran 1.6-1.9x direct with an 8 MiB
# L3), beyond WINOGRAD_MAX_WEIGHT_BYTES in streamed blocks as the forward kernel (Xeon, 2
# threads, 512 -> 512: 8x28x28 66 ms in blocks of 100 tiles, blocked 142; 1x28x28, 49
# tiles, 32 ms, blocked 18; 8x7x7, 32 tiles, 28 ms, blocked 10)
WINOGRAD_MAX_GRAD_WEIGHT_BYTES = 2 * MACHINE.last_level
# Winograd's 4x4 output tiles from which it beats the blocked kernel: transforming the tiles
# (and the weight, where a call packs it) and reading the 4x larger transformed weight from
# memory (a network's weights do not stay in cache from one pass to the next) cost about what
# that many tiles' saved products bring. AMD EPYC Zen 3, 2 threads: 3x3 256 -> 256 at 1x14x14
# (16 tiles) ran 1.3x the blocked kernel's speed alone, its transformed weight in cache, but
# at 16 tiles ResNet-18 and ResNet-50 at batch 1 ran 10% slower than at 32 (two graphs in one
# process); functions, which transform the weight at each call, 0.7x. Zen 5: 128 -> 128 at
# 1x20x20 even, 1x24x24 1.2x faster.
MIN_WINOGRAD_TILES = 32
# ... and where the transformed weight is kept from call to call (a convolution of an
# inference graph: transformed once), half as many. Per tile and pair of channels Winograd
# does 108 multiply-adds fewer than a direct 3x3 (36 against 16 x 9); per pair it reads 108
# bytes more of float32 weight (36 x 4 against 9 x 4) from memory once per pass: that read
# pays from (the cores' multiply-add rate / the memory's bandwidth) tiles, 5-10 at 100 GFMA/s
# and 10-20 GB/s, and the tiles' transforms take a few more. AMD EPYC Zen 4 (32 MiB L3), 2
# threads, two inference graphs in one process, 16 tiles against 32: ResNet-18 at batch 1
# 4-9% faster, ResNet-50 2.5-6% (3x3 256 -> 256 at 1x14x14, 16 tiles: 0.91 ms, blocked 1.38
# ms, alone); as a function, which transforms the weight at every call, that layer took 2.0 ms,
# and a ResNet-18 training step at 112x112, batch 1 (its 14x14 layers transformed at each
# step) ran 2% slower. (The Zen 3 above, with an earlier version of the kernels, had measured
# those graphs 10% slower at 16: a lead for a measured bound.)
MIN_KEPT_WINOGRAD_TILES = 16
# the blocked kernel's output pixels per work item (8 register blocks of 6; see
# functional.BLOCKED_WEIGHT_BYTES)
BLOCKED_ITEM_PIXELS = 48
# the input gradient as GEMM + col2im (for_gemm_data): its work items, chunks of the input
# channels; a fixed number (4 per thread on 2 threads), so that the GEMMs' shapes, and so their
# roundings, do not depend on the thread count
DATA_GEMM_CHUNKS = 8
PARTIAL_SUM_BYTES = 16 * 1024 * 1024  # cap on the weight-gradient partial sums
MIN_PARTIAL_SUMS, MAX_PARTIAL_SUMS = 2, 8


def is_depthwise(weight_shape, groups: int) -> bool:
    """One input and one output channel per group, in more than one group (HWIO weight):
    the kernels run all its channels as one vector-wide group."""
    return weight_shape[2] == 1 and weight_shape[3] == groups > 1


def check(fn: str, algorithm, geo) -> str:
    """The user's algorithm argument, validated against the convolution's geometry `geo`
    (ConvGeometry; "auto" is resolved per kernel call)."""
    return check_kernel(fn, algorithm, geo.kernel_hw, geo.stride, geo.dilation)


def check_kernel(fn: str, algorithm, kernel_hw, stride, dilation) -> str:
    """check() on the kernel size, stride and dilation alone (a layer's, when it is built)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{fn}: algorithm must be one of {ALGORITHMS}, but got {algorithm!r}")
    if algorithm == "winograd" and not winograd_serves(kernel_hw, stride, dilation):
        others = tuple(a for a in ALGORITHMS if a != "winograd")
        if "1d" in fn:  # conv1d and the like (_params.is_1d)
            raise ValueError(f"{fn}: algorithm 'winograd' serves 2-D 3x3 kernels only, not a "
                             f"1-D convolution; use one of {others}")
        raise ValueError(
            f"{fn}: algorithm 'winograd' serves 3x3 kernels with stride 1 and dilation 1, but "
            f"got kernel {tuple(kernel_hw)}, stride {tuple(stride)}, dilation "
            f"{tuple(dilation)}; use one of {others}")
    return algorithm


def winograd_serves(kernel_hw, stride, dilation) -> bool:
    """Whether Winograd F(4x4, 3x3) computes this convolution (stride and dilation as the
    kernels see them: 1 where they cannot matter)."""
    return tuple(kernel_hw) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


NOT_WINOGRAD_SHAPED = "not 3x3 stride 1"
WINOGRAD_REASON = ("rule: 3x3 stride 1, wide enough, transformed weight in cache or read by "
                   "blocks of enough tiles")


def for_convolution(algorithm: str, weight_shape, out_shape, itemsize: int, stride, dilation,
                    groups: int, weight_kept: bool = False) -> str:
    """The kernel for a convolution with output shape `out_shape` (N, H_out, W_out, C_out)
    (also each sub-convolution of an input gradient or a transposed convolution); "auto"
    follows convolution_rule."""
    if algorithm != "auto":
        return algorithm
    return convolution_rule(weight_shape, out_shape, itemsize, stride, dilation, groups,
                            weight_kept)[0]


def convolution_rule(weight_shape, out_shape, itemsize: int, stride, dilation,
                     groups: int, weight_kept: bool = False) -> tuple[str, str]:
    """"auto"'s (kernel, reason) for a convolution:
    - Winograd where it serves and pays (see winograd_refusal; `weight_kept`: the weight as
      the kernel takes it is kept from call to call, as an inference graph keeps it);
    - the blocked direct kernel past one vector of output channels (see blocked_pays);
    - im2col for a 1x1 stride-1 convolution with 8 or more input channels per group (a
      single GEMM on the input as it is, with no column copy; not depthwise, where each
      channel's GEMM would sum one term) whose tiles have MIN_POINTWISE_TILE_ROWS pixels or
      more (each tile's GEMM packs the whole weight again: with fewer rows that is not paid
      back; 96 -> 576 at 14x14, batch 1, 25-pixel tiles: im2col 1.75x slower than direct and
      blocked; about equal from 100 to 200 rows), and for output channels per group filling less
      than half a vector behind 64+ taps x input channels (a first layer's input gradient:
      the direct kernel's channel vectors run mostly empty, a GEMM's long sums do not);
    - direct otherwise: its register blocks beat im2col + BLAS on most layers of the suite.
    No geometry makes a kernel's scratch explode: direct's zero-padded window holds only the
    columns its taps read when a stride or dilation spaces them (at most kh x 8 pixels x kw
    taps x C_in values per thread), im2col's tiles are sized by tile_pixels, so a huge
    stride or dilation (WaveNet/TCN's dilated 1-D convolutions) needs no rule here."""
    kh, kw, cig, cout = weight_shape
    refusal = _auto_winograd_refusal(weight_shape, out_shape, itemsize, stride, dilation,
                                     groups, None, weight_kept)
    if not refusal:
        return "winograd", WINOGRAD_REASON
    if blocked_pays(weight_shape, itemsize, dilation, groups):
        return "blocked", _with_refusal(BLOCKED_REASON, refusal)
    pixels = out_shape[0] * out_shape[1] * out_shape[2]
    if ((kh, kw) == (1, 1) and tuple(stride) == (1, 1) and cig >= 8
            and forward_tile(weight_shape, itemsize, pixels) >= MIN_POINTWISE_TILE_ROWS):
        return "im2col", "rule: 1x1 stride 1: one GEMM on the input as it is"
    half_vector = MACHINE.lanes(itemsize) // 2
    if cout // groups < half_vector and kh * kw * cig >= 64:
        return "im2col", (f"rule: {cout // groups} output channels per group (< half a "
                          f"{MACHINE.lanes(itemsize)}-lane vector) behind long sums: GEMM")
    return "direct", _with_refusal("direct (the default)", refusal)


BLOCKED_REASON = ("blocked (more than one vector of output channels, 16+ input channels or "
                  "rows of taps read as one run)")


def _with_refusal(rule: str, winograd_refusal: str) -> str:
    """A rule's reason, with why Winograd was not taken where it serves."""
    if winograd_refusal == NOT_WINOGRAD_SHAPED:
        return f"rule: {rule}"
    return f"rule: {rule}; {winograd_refusal}"


def blocked_pays(weight_shape, itemsize: int, dilation, groups: int) -> bool:
    """Whether the blocked kernel beats direct and im2col (measured on an AMD Zen 5, AVX-512,
    fp32, 2 threads, with a relu fused): its register block is up to 4 vectors (AVX-512; 2 on
    AVX2) of output channels x 6 pixels (8 pixels for 2 vectors or fewer), summed over kh*kw
    taps x C_in/groups, a group's last block as few vectors as its channels need. It pays
    - when a group has more output channels than one vector holds (one vector: direct's
      8-pixel block is the same block without the packed weight's setup; 32 -> 16 1x1 at
      112x112: direct 1.2x blocked),
    - and at least 16 input channels, or a row of kw taps over all input channels that the
      kernel reads as one run of kw * C_in values (one group, no dilation across columns:
      ResNet's 7x7 3-channel stem 1.4x direct, VGG's 3 -> 64 3x3 at 224x224 1.3x at batch
      1, 2.2x at batch 8); otherwise the per-tap work is too short to cover setting up a
      block.
    1x1 convolutions of every width, 3x3 ones where Winograd does not serve: 0.9-1.5x the
    time of the better of direct and im2col (16 -> 96 at 112x112 1.2x, 96 -> 576 at 14x14
    1.3x, 64 -> 64 at 8x56x56 1.2x; 16 -> 96 at 8x112x112 0.9x, im2col's GEMM on the input
    as it is).
    im2col's GEMMs stay single-threaded inside OpenMP threads: one multi-threaded BLAS GEMM
    ran 1.1-1.4x faster alone, but its threads and OpenMP's then spin against each other
    (a 3x3 layer right after it ran at half speed)."""
    kh, kw, cig, cout = weight_shape
    if is_depthwise(weight_shape, groups) or cout // groups <= MACHINE.lanes(itemsize):
        return False
    return cig >= 16 or (groups == 1 and tuple(dilation)[1] == 1 and kw > 1)


def _auto_winograd_refusal(weight_shape, out_shape, itemsize: int, stride, dilation,
                           groups: int, max_weight_bytes: int | None,
                           weight_kept: bool = False) -> str:
    """Why "auto" does not choose Winograd ("" when it does)."""
    kh, kw, cig, cout = weight_shape
    if not winograd_serves((kh, kw), stride, dilation):
        return NOT_WINOGRAD_SHAPED
    if not _auto_winograd:
        return "Winograd off (set_auto_winograd)"
    return winograd_refusal(cig, cout // groups, groups, out_shape, itemsize, max_weight_bytes,
                            weight_kept)


def winograd_refusal(in_per_group: int, out_per_group: int, groups: int, out_shape,
                     itemsize: int, max_weight_bytes: int | None,
                     weight_kept: bool = False) -> str:
    """Why Winograd would not beat the other kernels ("" when it would), as measured on
    this project's 2-core machine with 2 threads (see README): it needs at least 8 input
    channels and 512 channel pairs per group (fewer: transforming the tiles costs more than
    the products save, as on CIFAR's 3-channel first layer or 8 groups of 16 channels); a
    transformed weight small enough to stay in cache (WINOGRAD_MAX_WEIGHT_BYTES), or else
    read by blocks of enough tiles (streamed_winograd_refusal), and, where max_weight_bytes
    is given (the weight gradient's partial sums), of at most that; at least
    MIN_WINOGRAD_TILES tiles (MIN_KEPT_WINOGRAD_TILES where the transformed weight is kept
    from call to call: `weight_kept`); and at least half of each 4x4 tile inside the output. The
    weight gradient (max_weight_bytes given), whose products are BLAS calls as deep as a
    block's tiles, needs blocks of STREAMED_WINOGRAD_GRAD_MIN_BLOCK tiles, so at least that
    many tiles in all (AMD EPYC Zen 4, 2 threads, a call each: 256 -> 256 at 8x7x7, 32
    tiles, 7.9 ms, blocked 2.8; 64 -> 64 at 1x28x28, 49 tiles, 0.54 ms, blocked 0.49;
    128 -> 128 at 8x14x14, 128 tiles, 2.5 ms, blocked 3.1)."""
    gradient = max_weight_bytes is not None
    min_block = STREAMED_WINOGRAD_GRAD_MIN_BLOCK if gradient else STREAMED_WINOGRAD_MIN_BLOCK
    tiles = winograd_tiles(out_shape)
    weight_bytes = winograd_weight_bytes(in_per_group, out_per_group * groups, itemsize)
    if in_per_group < 8 or in_per_group * out_per_group < 512:
        return "too few channels for Winograd"
    mib = weight_bytes / 2**20
    if max_weight_bytes is not None and weight_bytes > max_weight_bytes:
        return f"Winograd's weight {mib:.1f} MiB > {max_weight_bytes / 2**20:.1f} MiB"
    if weight_bytes > WINOGRAD_MAX_WEIGHT_BYTES:
        streamed = streamed_winograd_refusal(tiles, (in_per_group + out_per_group) * groups,
                                             itemsize, min_block)
        if streamed:
            return (f"Winograd's weight {mib:.1f} MiB > "
                    f"{WINOGRAD_MAX_WEIGHT_BYTES / 2**20:.1f} MiB, {streamed}")
    min_tiles = MIN_KEPT_WINOGRAD_TILES if weight_kept else MIN_WINOGRAD_TILES
    if tiles < min_tiles:
        kept = " (its weight transformed once)" if weight_kept else ""
        return f"{tiles} < {min_tiles} Winograd tiles{kept}"
    if gradient and tiles < min_block:  # every GEMM of its products would be that short
        return f"{tiles} < {min_block} Winograd tiles for the weight gradient's GEMMs"
    if 2 * out_shape[0] * out_shape[1] * out_shape[2] < 16 * tiles:
        return "Winograd tiles mostly outside the output"
    return ""


def winograd_weight_bytes(in_per_group: int, out_channels: int, itemsize: int) -> int:
    """The bytes of a 3x3 weight transformed for Winograd, 36 x C_in/groups x C_out values
    (without the padding of its packed blocks): what the rules and the block sizes count."""
    return 36 * in_per_group * out_channels * itemsize


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
    1 is a single phase already) and, for "auto", more than one tap (a 1x1 kernel's one
    phase with a tap is a plain convolution, which the phase route runs without the GEMM's
    copies: 1x1 256 -> 512 stride 2 at 7x7, AMD EPYC Zen 4, 2 threads, batch 1 0.16 ms vs
    0.55, batch 8 0.30 vs 0.79) and enough input channels per group for a GEMM
    (`in_per_group`: the transposed convolution's, i.e. grad_output's)."""
    if algorithm in ("direct", "blocked") or tuple(stride) == (1, 1):
        return False
    if algorithm == "auto" and kh * kw == 1:
        return False
    for k, s, d in zip((kh, kw), stride, dilation):
        if len({r * d % s for r in range(k)}) < k:
            return False
    return algorithm == "im2col" or in_per_group >= 8


def for_gemm_data(algorithm: str, weight_shape, geo) -> bool:
    """Whether an input gradient / transposed convolution runs as GEMM + col2im
    (_im2col.conv_backward_data: each tap's weight read by BLAS as it lies) rather than as
    sub-pixel phases (functional._data_kernel asks after for_single_tap_phases): for "im2col"
    with one group; for "auto" with one group, more than one tap and images of grad_output
    no larger than one work item of the blocked kernel (BLOCKED_ITEM_PIXELS pixels), which
    then reads its packed weight about once per image, so that packing it first (a
    transposed copy, at every call: weights change between training steps) costs more than
    it saves. Per image, so that the route an image takes does not depend on the batch it
    is in. AMD EPYC Zen 4, 2 threads, 3x3 512 -> 512 at 4x4: batch 1 0.64 ms vs 1.75, batch
    8 3.7 vs 4.3; 256 -> 256 at 7x7 (49 pixels): batch 1 about even, batch 2 0.84 vs 0.69."""
    kh, kw, _, _ = weight_shape
    if geo.groups != 1 or algorithm not in ("im2col", "auto"):
        return False
    return algorithm == "im2col" or (
        kh * kw > 1 and math.prod(geo.out_hw) <= BLOCKED_ITEM_PIXELS)


def for_depthwise_data(algorithm: str, stride, weight_shape, groups: int) -> bool:
    """Whether a depthwise input gradient / transposed convolution runs as one pass over the
    output rows (_direct.data_depthwise, all sub-pixel phases of a row at once) rather than
    as sub-pixel phases: with a stride (stride 1 is a single phase already), for "direct"
    and "auto" (a depthwise GEMM has nothing to reuse)."""
    return (is_depthwise(weight_shape, groups) and algorithm != "im2col"
            and tuple(stride) != (1, 1))


def for_weight_gradient(algorithm: str, weight_shape, out_shape, itemsize: int, geo) -> str:
    """The kernel for a weight gradient (geo: the convolution's ConvGeometry); "auto"
    follows weight_gradient_rule."""
    if algorithm != "auto":
        return algorithm
    return weight_gradient_rule(weight_shape, out_shape, itemsize, geo)[0]


def weight_gradient_rule(weight_shape, out_shape, itemsize: int, geo) -> tuple[str, str]:
    """"auto"'s (kernel, reason) for a weight gradient: Winograd where it serves and pays for
    the forward convolution (a transformed weight of at most WINOGRAD_MAX_GRAD_WEIGHT_BYTES);
    for fewer than 8 input channels per group (a first layer: the direct kernel's blocks of
    FC_CI input channels run empty), blocked with rows of taps merged (merges_tap_rows)
    where its output blocks fill, else im2col + BLAS; im2col + BLAS also for 1x1 kernels
    with at least 256 input channels per group and POINTWISE_GEMM_MIN_PIXELS output pixels
    (one GEMM x^T gy per chunk of pixels; measured on a Zen 5, 2 threads: 1024 -> 256 at 14x14
    1.4-1.8x direct, 512 -> 2048 at 7x7 1.6-1.8x, 256 -> 64 at 56x56 1.0x, but 64 -> 256 at
    56x56 0.85x); blocked where it pays (blocked_pays and _blocked_weight_gradient_pays:
    3x3 256 -> 256 at 14x14 1.1x
    im2col and 1.5x direct, 512 -> 512 at 7x7 1.5x and 2x); direct otherwise."""
    refusal = _auto_winograd_refusal(weight_shape, out_shape, itemsize, geo.stride,
                                     geo.dilation, geo.groups, WINOGRAD_MAX_GRAD_WEIGHT_BYTES)
    if not refusal:
        return "winograd", WINOGRAD_REASON
    cig = weight_shape[2]
    if not is_depthwise(weight_shape, geo.groups):
        if cig < 8:
            if merges_tap_rows(weight_shape, geo) and _fills_out_blocks(weight_shape, itemsize,
                                                                         geo.groups):
                return "blocked", (f"rule: {cig} input channels: rows of {weight_shape[1]} "
                                   f"taps x {cig} channels read as one run each")
            return "im2col", f"rule: {cig} input channels per group: GEMM"
        if (tuple(weight_shape[:2]) == (1, 1) and cig >= 256
                and geo.n * math.prod(geo.out_hw) >= POINTWISE_GEMM_MIN_PIXELS):
            return "im2col", (f"rule: 1x1 with {cig} input channels per group and "
                              f"{POINTWISE_GEMM_MIN_PIXELS}+ pixels: one GEMM x^T gy")
    if (blocked_pays(weight_shape, itemsize, geo.dilation, geo.groups)
            and _blocked_weight_gradient_pays(weight_shape, itemsize, geo)):
        return "blocked", _with_refusal(BLOCKED_REASON, refusal)
    return "direct", _with_refusal("direct (the default)", refusal)


def merges_tap_rows(weight_shape, geo) -> bool:
    """Whether the blocked weight gradient reads each row of kw taps over all input channels
    as one run of kw * C_in values (of x zero-padded first) instead of tap by tap: with one
    group, the row's taps next to each other (no dilation along it) and fewer than 8 input
    channels, which would fill a fraction of its register blocks. AMD EPYC Zen 4, 2 threads:
    ResNet's 7x7 stride-2 3 -> 64 stem at 8x112x112 4.6 ms (tap by tap 9.9, im2col 8.0), VGG's
    3x3 3 -> 64 at 8x224x224 14.8 ms (39.5, 32.6)."""
    kh, kw, cig, _ = weight_shape
    return geo.groups == 1 and tuple(geo.dilation)[1] == 1 and kw > 1 and cig < 8


def _fills_out_blocks(weight_shape, itemsize: int, groups: int) -> bool:
    """Whether a group's output channels fill at least 3/4 of the blocked weight gradient's
    OUT_BLOCK-wide blocks (its last block runs at full width on zero-padded gradients)."""
    cog = weight_shape[3] // groups
    block = KERNELS["blocked"].OUT_BLOCK["float32" if itemsize == 4 else "float64"]
    return 4 * cog >= 3 * (-(-cog // block) * block)


def _blocked_weight_gradient_pays(weight_shape, itemsize: int, geo) -> bool:
    """Beyond blocked_pays and 16 input channels per group (below 8 it merges rows of taps
    instead: merges_tap_rows), for a weight gradient (measured as blocked_pays): a group's
    output channels fill at least 3/4 of the OUT_BLOCK-wide blocks (_fills_out_blocks:
    unlike the forward kernel, its last block runs at full width on zero-padded gradients:
    16 channels in a 64-wide block run at a quarter of its speed), and it is not a 1x1
    stride-1 convolution with fewer than 128 input channels per group over
    POINTWISE_GEMM_MIN_PIXELS or more output pixels (64 -> 256 at 8x56x56: direct 1.25x
    blocked)."""
    kh, kw, cig, cout = weight_shape
    pointwise = ((kh, kw) == (1, 1) and tuple(geo.stride) == (1, 1)
                 and geo.n * math.prod(geo.out_hw) >= POINTWISE_GEMM_MIN_PIXELS)
    return (cig >= 16 and _fills_out_blocks(weight_shape, itemsize, geo.groups)
            and not (pointwise and cig < 128))


def input_gradient_rule(weight_shape, geo, itemsize: int) -> tuple[str, str]:
    """"auto"'s (kernel, reason) for an input gradient (or the transposed convolution) of
    the convolution `geo` with HWIO `weight_shape`, as functional._data_kernel runs it: one
    GEMM when each sub-pixel phase has one tap, one pass for a strided depthwise one, else
    the convolution rule of its phases (shown for the phase with the most taps)."""
    kh, kw, cig, cout = weight_shape
    groups = geo.groups
    if for_single_tap_phases("auto", kh, kw, geo.stride, geo.dilation, cout // groups):
        return "im2col", "rule: one tap per sub-pixel phase: one GEMM over all taps"
    if for_depthwise_data("auto", geo.stride, weight_shape, groups):
        return "direct", "rule: strided depthwise: one pass over the rows"
    if for_gemm_data("auto", weight_shape, geo):
        return "im2col", (f"rule: {math.prod(geo.out_hw)} pixels per image, at most "
                          f"{BLOCKED_ITEM_PIXELS}: GEMM + col2im on the weight as it lies")
    taps = tuple(max(_phase_tap_count(k, s, d))
                 for k, s, d in zip((kh, kw), geo.stride, geo.dilation))
    phase_hw = tuple(-(-h // s) for h, s in zip(geo.in_hw, geo.stride))
    step = tuple(d // math.gcd(s, d) for s, d in zip(geo.stride, geo.dilation))
    return convolution_rule((*taps, cout // groups, cig * groups),
                            (geo.n, *phase_hw, geo.in_channels), itemsize, (1, 1), step, groups)


def _phase_tap_count(k: int, stride: int, dilation: int) -> list[int]:
    """How many taps of a kernel of size k fall in each sub-pixel phase."""
    return [sum(1 for r in range(k) if r * dilation % stride == a) for a in range(stride)]


def describe(geo, dtype="float32", threads: int | None = None,
             weight_kept: bool = False) -> dict[str, tuple[str, str]]:
    """What "auto" runs for the convolution `geo` (a ConvGeometry; for a transposed
    convolution, the convolution it is the adjoint of) in `dtype`, and why:
    {"forward": (kernel, reason), "input_gradient": ..., "weight_gradient": ...}. The reason
    is "autotuned" where set_autotune(True) measured the geometry (at `threads` threads,
    default get_num_threads()), else the rule that chose (`weight_kept`: the forward
    weight kept as its kernel takes it from call to call, see convolution_rule)."""
    from fastconv import _autotune

    itemsize = np.dtype(dtype).itemsize
    weight_shape = (*geo.kernel_hw, geo.in_channels // geo.groups, geo.out_channels)
    out_shape = (geo.n, *geo.out_hw, geo.out_channels)
    chosen = {
        "forward": convolution_rule(weight_shape, out_shape, itemsize, geo.stride,
                                    geo.dilation, geo.groups, weight_kept),
        "input_gradient": input_gradient_rule(weight_shape, geo, itemsize),
        "weight_gradient": weight_gradient_rule(weight_shape, out_shape, itemsize, geo),
    }
    for direction in chosen:
        measured = _autotune.lookup(direction, geo, dtype, threads)
        if measured is not None:
            chosen[direction] = (measured, "autotuned")
    return chosen


def forward_tile(weight_shape, itemsize: int, pixels: int) -> int:
    """Output pixels per tile of im2col's forward kernel: tile_pixels' (from its column
    buffer), but writing no more than COLUMN_BUFFER_BYTES of output rows, which the post-ops
    then find in L2 (1x1 16 -> 96 at 112x112, batch 8, add and relu fused: 4096-pixel tiles
    3.0 ms, 1024 2.6 ms, 512 2.1 ms) unless that leaves fewer than MIN_POINTWISE_TILE_ROWS:
    each tile's GEMM packs the weight again (96 -> 576 at 14x14, batch 8: 196-row tiles
    0.48 ms, 97-row 0.58 ms)."""
    kh, kw, cig, cout = weight_shape
    rows_in_l2 = COLUMN_BUFFER_BYTES // max(1, cout * itemsize)
    return min(tile_pixels(kh * kw * cig, itemsize, pixels),
               max(MIN_POINTWISE_TILE_ROWS, rows_in_l2))


def tile_pixels(columns: int, itemsize: int, pixels: int) -> int:
    """Output pixels per im2col tile: a column buffer near COLUMN_BUFFER_BYTES, at least 8
    tiles when there is enough work. Depends on the problem only (not the thread count),
    so results do not change with the number of threads."""
    tile = COLUMN_BUFFER_BYTES // max(1, columns * itemsize)
    tile = min(tile, -(-pixels // 8))
    return max(16, min(tile, 4096))


def winograd_block(in_channels: int, out_channels: int, itemsize: int, tiles: int,
                   budget: int = WINOGRAD_BUFFER_BYTES, weight_bytes: int = 0) -> int:
    """Tiles per Winograd block: a thread's transformed tiles (36 x block x (C_in + C_out))
    near `budget` bytes, at least 4 blocks when there is enough work; for a transformed
    weight of more than WINOGRAD_MAX_WEIGHT_BYTES, streamed_winograd_block. Depends on the
    problem only, so results do not change with the number of threads."""
    if weight_bytes > WINOGRAD_MAX_WEIGHT_BYTES:
        return streamed_winograd_block(tiles, in_channels + out_channels, itemsize)
    block = budget // (36 * (in_channels + out_channels) * itemsize)
    block = min(block, -(-tiles // 4))
    # a multiple of 4 tiles (the weight gradient's GEMMs: 7 rows ran at half the speed of 8
    # or 4)
    return max(4, min(block, 1024) // 4 * 4)


def streamed_winograd_refusal(tiles: int, channels: int, itemsize: int, min_block: int) -> str:
    """Why Winograd would not pay with a transformed weight read from memory by every block
    ("" when it would): its blocks (streamed_winograd_block) need `min_block` tiles or
    more."""
    split = _streamed_split(tiles)
    if split < min_block:
        return f"and {tiles} tiles make blocks of {split} < {min_block}"
    if _streamed_fitting(channels, itemsize) < min_block:
        tiles_bytes = 36 * min_block * channels * itemsize
        return (f"and {min_block} of its tiles ({tiles_bytes / 2**20:.1f} "
                f"MiB) > half the last-level cache")
    return ""


def streamed_winograd_block(tiles: int, channels: int, itemsize: int) -> int:
    """Tiles per Winograd block for a transformed weight read from memory by every block:
    the tiles' split (_streamed_split), at most as many as keep a thread's transformed
    tiles (36 x block x `channels`, C_in + C_out) in half the last-level cache; a multiple
    of 4, at least 4."""
    return max(4, min(_streamed_split(tiles), _streamed_fitting(channels, itemsize)))


def _streamed_split(tiles: int) -> int:
    """The tiles in a multiple of 4 blocks (even work for 1, 2 or 4 threads) of at most
    STREAMED_WINOGRAD_MAX_BLOCK tiles: tiles per block, rounded up to a multiple of 4."""
    blocks = 4 * -(-tiles // (4 * STREAMED_WINOGRAD_MAX_BLOCK))
    per_block = -(-tiles // blocks)
    return -(-per_block // 4) * 4


def _streamed_fitting(channels: int, itemsize: int) -> int:
    """The most tiles (a multiple of 4) whose transformed values, 36 x `channels` each, fit
    in half the last-level cache."""
    return (MACHINE.last_level // 2) // (36 * channels * itemsize) // 4 * 4


def partial_sums(weight_bytes: int, work_units: int) -> int:
    """How many partial weight gradients to sum separately (a fixed split of the work, so the
    sum is the same for any thread count; bounded in memory)."""
    wanted = max(MIN_PARTIAL_SUMS, min(MAX_PARTIAL_SUMS, PARTIAL_SUM_BYTES // max(1, weight_bytes)))
    return max(1, min(wanted, work_units))


def expand_joins(n: int, h: int, kh: int, sh: int, dh: int, top: int, out_rows: int,
                 threads: int) -> bool:
    """Whether the expansion of n images of h rows joins the depthwise kernel after it
    (kernel height kh, stride sh, dilation dh, top padding `top`, out_rows output rows): the
    rows that two bands both expand, with bands cut as the kernel cuts them (as many per
    image as give `threads` threads as many), are at most EXPAND_MAX_EXTRA of h."""
    bands = 1
    while (n * bands) % threads and bands < out_rows:
        bands += 1
    span = (kh - 1) * dh + 1
    twice = 0
    for band in range(1, bands):  # rows read by the output rows on both sides of a cut
        cut = band * out_rows // bands
        twice += max(0, min(h, (cut - 1) * sh - top + span) - max(0, cut * sh - top))
    return twice <= EXPAND_MAX_EXTRA * h
