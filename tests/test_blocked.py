"""The blocked direct kernel (algorithm="blocked"): every instruction-set variant this CPU runs
against the reference, channel counts around each block size, input-channel cache blocks,
geometry, the packed layout, thread-count independence."""
import math

import numpy as np
import pytest

import fastconv
import reference
from conftest import assert_close
from fastconv import _algorithms, _memory, functional
from fastconv import layers as L

VARIANTS = _algorithms.simd_modules("_blocked")


def run_kernel(module, x, w, bias, stride, pads, dilation, groups, in_block, item_pixels,
               threads=2, out=None, weight_outer=False, stream=False):
    """The kernel called as conv2d calls it, with the cache blocking chosen by the test."""
    (sh, sw), (dh, dw) = stride, dilation
    (top, bottom), (left, right) = pads
    kh, kw, _, cout = w.shape
    ho = (x.shape[1] + top + bottom - dh * (kh - 1) - 1) // sh + 1
    wo = (x.shape[2] + left + right - dw * (kw - 1) - 1) // sw + 1
    y = np.full((x.shape[0], ho, wo, cout), np.nan, x.dtype) if out is None else out
    block = module.OUT_BLOCK[x.dtype.name]
    status = module.conv_forward(
        x, functional.pack_weight(w, groups, block)[0],
        functional._blocked_bias(bias, groups, block), y, top, left, sh, sw, dh, dw,
        in_block, item_pixels, weight_outer, stream, None, threads)
    assert status == 0
    return y


def channel_counts(module, dtype):
    """1, around one vector, every number of vectors in a block (the last block runs with
    as many vectors as it needs) and around one block (and two) of output channels."""
    block = module.OUT_BLOCK[np.dtype(dtype).name]
    vector = block // 4 if module.ISA == "avx512" else block // 2
    counts = {1, vector - 1, vector, vector + 1, 2 * vector + 1, 3 * vector - 1, block - 1,
              block, block + 1, 2 * block + 1}
    return sorted(c for c in counts if c >= 1)


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_channel_counts_around_every_block(level, dtype, rng):
    """Output channels around the vector and block sizes (the last block zero-padded),
    input channels cut into cache blocks of 1, 3 and all of them."""
    module = VARIANTS[level]
    for cout in channel_counts(module, dtype):
        cin = max(1, cout % 11)
        x = rng.standard_normal((2, 5, 7, cin)).astype(dtype)
        w = rng.standard_normal((3, 3, cin, cout)).astype(dtype)
        bias = rng.standard_normal(cout).astype(dtype)
        expected = reference.conv2d(x, w, bias, (1, 1), ((1, 1), (1, 1)))
        for in_block, item_pixels, weight_outer in ((cin, 7, False), (3, 13, True), (1, 1, False)):
            y = run_kernel(module, x, w, bias, (1, 1), ((1, 1), (1, 1)), (1, 1), 1,
                           min(in_block, cin), item_pixels, weight_outer=weight_outer)
            assert_close(y, expected, dtype, 9 * cin)
            # non-temporal stores: into an aligned output (channel counts of whole vectors
            # stream, the others fall back to plain stores)
            y = _memory.empty(expected.shape, dtype)
            y[...] = np.nan
            run_kernel(module, x, w, bias, (1, 1), ((1, 1), (1, 1)), (1, 1), 1,
                       min(in_block, cin), item_pixels, out=y, weight_outer=weight_outer,
                       stream=True)
            assert_close(y, expected, dtype, 9 * cin)


# (N, H, W, C_in, kh, kw, C_out, stride, dilation, groups, pads): odd sizes, ragged pixel
# blocks, stride beyond the kernel, dilation, padding wider than the kernel reaches,
# asymmetric padding, groups, 1x1 (stride 1 and 2)
GEOMETRIES = [
    (2, 11, 13, 5, 3, 3, 7, (1, 1), (1, 1), 1, ((1, 1), (1, 1))),
    (1, 9, 13, 3, 3, 3, 33, (2, 2), (1, 1), 1, ((0, 0), (0, 0))),
    (2, 10, 11, 4, 2, 2, 6, (3, 3), (1, 1), 1, ((0, 1), (2, 0))),
    (1, 12, 15, 6, 3, 3, 5, (1, 2), (2, 3), 1, ((2, 2), (3, 1))),
    (1, 3, 4, 8, 3, 3, 16, (1, 1), (2, 2), 1, ((5, 5), (5, 5))),
    (3, 7, 9, 1, 5, 5, 6, (1, 1), (1, 1), 1, ((4, 4), (4, 4))),
    (1, 12, 30, 12, 3, 2, 24, (1, 1), (1, 2), 3, ((3, 3), (3, 3))),
    (2, 6, 6, 8, 3, 3, 8, (1, 1), (1, 1), 8, ((1, 1), (1, 1))),
    (2, 8, 9, 17, 1, 1, 19, (1, 1), (1, 1), 1, ((0, 0), (0, 0))),
    (1, 9, 8, 10, 1, 1, 12, (2, 2), (1, 1), 2, ((0, 0), (0, 0))),
    (1, 1, 1, 3, 1, 1, 2, (1, 1), (1, 1), 1, ((0, 0), (0, 0))),
]


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(GEOMETRIES)))
def test_geometry(level, dtype, case, rng):
    n, h, wd, c, kh, kw, cout, stride, dilation, groups, pads = GEOMETRIES[case]
    module = VARIANTS[level]
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    w = rng.standard_normal((kh, kw, c // groups, cout)).astype(dtype)
    bias = rng.standard_normal(cout).astype(dtype)
    expected = reference.conv2d(x, w, bias, stride, pads, dilation, groups)
    for in_block, item_pixels, outer in ((c // groups, 20, False),
                                         (max(1, c // groups // 2), 7, True)):
        y = run_kernel(module, x, w, bias, stride, pads, dilation, groups, in_block, item_pixels,
                       weight_outer=outer)
        assert_close(y, expected, dtype, kh * kw * c // groups)
    # no bias, and an output that is a strided view (as the input gradient's phases write)
    big = np.full((n, 2 * expected.shape[1], 3 * expected.shape[2], cout), np.nan, dtype)
    view = big[:, 1::2, ::3]
    run_kernel(module, x, w, np.zeros(0, dtype), stride, pads, dilation, groups,
               c // groups, 48, out=view)
    assert_close(view, expected - bias, dtype, kh * kw * c // groups)
    assert np.isnan(big[:, ::2]).all() and np.isnan(big[:, :, 1::3]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("groups, block", [(1, 16), (1, 5), (3, 8), (2, 1)])
def test_packed_layout_round_trip(groups, block, dtype, rng):
    w = rng.standard_normal((3, 2, 4, 6 * groups)).astype(dtype)
    packed, finite = functional.pack_weight(w, groups, block)
    assert finite
    n_blocks = -(-6 // block)
    assert packed.shape == (groups, n_blocks, 3, 2, 4, block) and packed.dtype == dtype
    # blocked layout: packed[g, b, r, s, i, j] = w[r, s, i, g*6 + b*block + j], zero padding
    g, b, j = groups - 1, n_blocks - 1, (6 - 1) % block
    assert packed[g, b, 2, 1, 3, j] == w[2, 1, 3, g * 6 + b * block + j]
    assert not packed[:, -1, ..., 6 - (n_blocks - 1) * block:].any()
    np.testing.assert_array_equal(functional.unpack_weight(packed, 6 * groups), w)


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape, groups", [((3, 3, 5, 7), 1), ((1, 1, 3, 8), 2),
                                           ((3, 3, 256, 512), 1),  # 2 threads
                                           ((2, 1, 40, 33), 1)])  # whole and partial tiles
def test_pack_weight_of_strided_views(shape, groups, dtype, level, rng, monkeypatch):
    """Views pack like their contiguous copies: flipped taps and swapped channel axes (an
    input gradient's weight: 16 x 16 tiles transposed whole, the partial ones at the
    edges), every other output channel; in every instruction-set variant."""
    monkeypatch.setitem(_algorithms.KERNELS, "blocked", VARIANTS[level])
    w = rng.standard_normal(shape).astype(dtype)
    views = [w[::-1, ::-1], w.transpose(0, 1, 3, 2)[:, :, :, : shape[2] // groups * groups],
             np.concatenate([w, w], axis=3)[..., ::2]]
    for view in views:
        packed, finite = functional.pack_weight(view, groups)
        expected, _ = functional.pack_weight(np.ascontiguousarray(view), groups)
        assert finite
        np.testing.assert_array_equal(packed, expected)
        np.testing.assert_array_equal(functional.unpack_weight(packed, view.shape[3]), view)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 3, 64, 48), (1, 1, 3, 5), (3, 3, 0, 4), (2, 3, 17, 1)])
def test_contiguous_weight(shape, dtype, rng):
    """contiguous_weight copies any view (an input gradient's channels swapped and taps
    flipped, every other channel, Fortran order) into a C-contiguous array of the same
    values, and gives a C-contiguous weight back as it is."""
    w = rng.standard_normal(shape).astype(dtype)
    assert functional.contiguous_weight(w) is w
    views = [w.transpose(0, 1, 3, 2)[::-1, ::-1], np.concatenate([w, w], axis=3)[..., ::2],
             np.asfortranarray(w)]
    for view in views:
        copied = functional.contiguous_weight(view)
        assert copied.flags.c_contiguous and copied.dtype == dtype
        np.testing.assert_array_equal(copied, view)
    # other dtypes (no kernel for them) as np.ascontiguousarray copies them
    for other in (w.astype(np.float16), w.astype(w.dtype.newbyteorder())):
        copied = functional.contiguous_weight(other[::-1])
        assert copied.flags.c_contiguous and copied.dtype == other.dtype
        np.testing.assert_array_equal(copied, other[::-1])


def test_pack_weight_of_a_structured_field_and_bad_groups(rng):
    """A field of a structured array has a stride that is not a whole number of elements
    (6 bytes here): packed as its copy. groups must divide the output channels."""
    fields = np.zeros((3, 3, 16, 70), dtype=[("w", "<f4"), ("tag", "<i2")])
    fields["w"] = rng.standard_normal((3, 3, 16, 70))
    fields["tag"] = -1  # bytes that would read as NaN where a float was expected
    packed, finite = functional.pack_weight(fields["w"], 2)
    assert finite
    np.testing.assert_array_equal(packed, functional.pack_weight(fields["w"].copy(), 2)[0])
    with pytest.raises(ValueError, match="groups=3 must divide the weight's 70"):
        functional.pack_weight(fields["w"].copy(), 3)


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_pack_weight_finds_a_non_finite_value(bad, dtype, level, rng, monkeypatch):
    """In contiguous rows, in transposed 16 x 16 tiles (whole or partial), every variant."""
    monkeypatch.setitem(_algorithms.KERNELS, "blocked", VARIANTS[level])
    w = rng.standard_normal((3, 3, 64, 300)).astype(dtype)  # 2 threads
    for where in [(0, 0, 0, 0), (2, 2, 63, 299), (1, 2, 17, 150)]:
        v = w.copy()
        v[where] = bad
        assert not functional.pack_weight(v, 1)[1]
        assert not functional.pack_weight(v[::-1, ::-1], 1)[1]
        assert not functional.pack_weight(v.transpose(0, 1, 3, 2)[:, :, :, :64], 1)[1]
    assert functional.pack_weight(np.full_like(w, np.finfo(dtype).max), 1)[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv2d_and_gradients_through_blocked(dtype, rng, monkeypatch):
    """conv2d routes algorithm="blocked" to the kernel, with input-channel cache blocks when
    the weight is large (here: always, the budget lowered); the input gradient's sub-pixel
    phases (strided views of the output) and the weight gradient run through it too."""
    monkeypatch.setattr(functional, "BLOCKED_WEIGHT_BYTES", 1024)
    calls = []
    kernel = _algorithms.KERNELS["blocked"]

    class Spy:
        OUT_BLOCK, PIXEL_BLOCK, pack_weight = (kernel.OUT_BLOCK, kernel.PIXEL_BLOCK,
                                               kernel.pack_weight)

        @staticmethod
        def conv_forward(*args):
            calls.append(args)
            return kernel.conv_forward(*args)

        @staticmethod
        def conv_backward_weight(*args):
            calls.append("weight")
            return kernel.conv_backward_weight(*args)

    monkeypatch.setitem(_algorithms.KERNELS, "blocked", Spy)
    x = rng.standard_normal((2, 9, 10, 12)).astype(dtype)
    w = rng.standard_normal((3, 3, 12, 20)).astype(dtype)
    b = rng.standard_normal(20).astype(dtype)
    pads = ((1, 1), (1, 1))
    y = fastconv.conv2d(x, w, b, stride=2, padding=1, algorithm="blocked")
    assert_close(y, reference.conv2d(x, w, b, (2, 2), pads), dtype, 108)
    assert len(calls) == 1 and calls[0][-6] < 12  # in_block: the channels were cut
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = fastconv.conv2d_backward(gy, x, w, stride=2, padding=1, algorithm="blocked")
    want = reference.conv2d_backward(gy, x, w, (2, 2), pads)
    # one call per sub-pixel phase of the stride-2 input gradient, one for the weight's
    assert len(calls) == 6 and calls[-1] == "weight"
    assert_close(gx, want[0], dtype, 9 * 20)
    assert_close(gw, want[1], dtype, gy[..., 0].size)
    assert_close(gb, want[2], dtype, gy[..., 0].size)


def test_non_finite_weight_runs_exact_direct(rng):
    """Taps in the zero padding contribute nothing even where the weight is infinite (0 * inf
    would be NaN): such a weight goes to the direct kernel's exact mode."""
    x = rng.standard_normal((1, 4, 5, 3)).astype(np.float32)
    w = np.zeros((3, 3, 3, 2), np.float32)
    w[0, 0, 0, 0] = np.inf
    y = fastconv.conv2d(x, w, padding=1, algorithm="blocked")
    assert np.isfinite(y[0, 0, :, 0]).all() and np.isfinite(y[0, :, 0, 0]).all()
    assert np.isinf(y[0, 1:, 1:, 0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_identical_for_1_and_2_threads(dtype, rng):
    module = _algorithms.KERNELS["blocked"]
    if module.team_size(2) < 2:
        pytest.skip("OpenMP gives this process one thread")
    x = rng.standard_normal((3, 13, 11, 24)).astype(dtype)
    w = rng.standard_normal((3, 3, 24, 40)).astype(dtype)
    bias = rng.standard_normal(40).astype(dtype)
    args = (x, w, bias, (1, 1), ((1, 1), (1, 1)), (1, 1), 1, 10, 16)
    for outer in (False, True):
        one = run_kernel(module, *args, threads=1, weight_outer=outer)
        two = run_kernel(module, *args, threads=2, weight_outer=outer)
        np.testing.assert_array_equal(one, two)
    assert_close(two, reference.conv2d(x, w, bias, (1, 1), ((1, 1), (1, 1))), dtype, 216)
    assert module.team_size(2) == 2 and module.team_size(1) == 1


def weight_gradient_reference(x, gy, w_shape, stride, pads, dilation, groups):
    """sum over output pixels of x's window (x) gy, from the definition, in float64."""
    kh, kw, cig, cout = w_shape
    cog = cout // groups
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = gy.shape[1:3]
    xp = np.pad(x.astype(float), ((0, 0), *pads, (0, 0)))
    want = np.zeros(w_shape)
    for r in range(kh):
        for s in range(kw):
            window = xp[:, r * dh: r * dh + sh * (ho - 1) + 1: sh,
                        s * dw: s * dw + sw * (wo - 1) + 1: sw]
            for g in range(groups):
                want[r, s, :, g * cog:(g + 1) * cog] = np.einsum(
                    "nhwi,nhwo->io", window[..., g * cig:(g + 1) * cig],
                    gy[..., g * cog:(g + 1) * cog].astype(float))
    return want


@pytest.mark.parametrize("level", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", range(len(GEOMETRIES)))
def test_weight_gradient(level, dtype, case, rng):
    """Every geometry, with input-channel ranges of one register block or all of them,
    output-channel blocks all in one range or one per range (or ranges of both), chunks of
    pixels that split images and rows (or hold all of them)."""
    n, h, wd, c, kh, kw, cout, stride, dilation, groups, pads = GEOMETRIES[case]
    module = VARIANTS[level]
    x = rng.standard_normal((n, h, wd, c)).astype(dtype)
    y = reference.conv2d(x, np.zeros((kh, kw, c // groups, cout)), None, stride, pads,
                         dilation, groups)
    gy = rng.standard_normal(y.shape).astype(dtype)
    want = weight_gradient_reference(x, gy, (kh, kw, c // groups, cout), stride, pads,
                                     dilation, groups)
    blocks = -(-cout // groups // module.OUT_BLOCK[np.dtype(dtype).name])
    for out_ranges, ranges, chunk in ((1, 1, 1000), (blocks, c // groups, 5), (2, 2, 64),
                                      (1, c // groups, 7)):
        gw = np.zeros((kh, kw, c // groups, cout), dtype)
        assert module.conv_backward_weight(x, gy, gw, pads[0][0], pads[1][0], *stride,
                                           *dilation, groups, out_ranges, ranges, chunk,
                                           2) == 0
        assert_close(gw, want, dtype, gy[..., 0].size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_weight_gradient_channel_counts_and_threads(dtype, rng):
    """Output channels around the vector and block sizes, input channels around the register
    block; 1 and 2 threads bit-identical (each weight element is summed by one thread)."""
    module = _algorithms.KERNELS["blocked"]
    if module.team_size(2) < 2:
        pytest.skip("OpenMP gives this process one thread")
    for cout in channel_counts(module, dtype):
        cin = module.PIXEL_BLOCK + cout % 3 - 1
        x = rng.standard_normal((2, 6, 5, cin)).astype(dtype)
        gy = rng.standard_normal((2, 6, 5, cout)).astype(dtype)
        want = weight_gradient_reference(x, gy, (3, 3, cin, cout), (1, 1), ((1, 1), (1, 1)),
                                         (1, 1), 1)
        blocks = -(-cout // module.OUT_BLOCK[np.dtype(dtype).name])
        for out_ranges in (1, blocks):
            results = []
            for threads in (1, 2):
                gw = np.zeros((3, 3, cin, cout), dtype)
                module.conv_backward_weight(x, gy, gw, 1, 1, 1, 1, 1, 1, 1, out_ranges, 2, 16,
                                            threads)
                results.append(gw)
            np.testing.assert_array_equal(results[0], results[1])
            assert_close(results[1], want, dtype, 60)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 40], ids=["by_input_ranges", "by_blocks"])
def test_weight_gradient_work_order(cache_bytes, rng, monkeypatch):
    """conv2d_backward's blocked weight gradient: a gradient larger than
    BLOCKED_CACHE_BYTES is cut by ranges of input channels first (a unit through all output
    blocks), a smaller one by output blocks first; both equal the reference, with groups."""
    monkeypatch.setattr(functional, "BLOCKED_CACHE_BYTES", cache_bytes)
    kernel = _algorithms.KERNELS["blocked"]
    ranges = []

    class Spy:
        OUT_BLOCK, PIXEL_BLOCK = kernel.OUT_BLOCK, kernel.PIXEL_BLOCK

        @staticmethod
        def conv_backward_weight(*args):
            ranges.append(args[-4:-2])  # (out_ranges, in_ranges)
            return kernel.conv_backward_weight(*args)

    monkeypatch.setitem(_algorithms.KERNELS, "blocked", Spy)
    block = kernel.OUT_BLOCK["float64"]
    for groups, cin, cout in ((1, 40, 3 * block), (2, 24, 4 * block + 6)):
        x = rng.standard_normal((2, 6, 7, cin))
        w = rng.standard_normal((3, 3, cin // groups, cout))
        gy = rng.standard_normal((2, 6, 7, cout))
        _, gw, _ = fastconv.conv2d_backward(gy, x, w, padding=1, groups=groups,
                                            algorithm="blocked", needs=("weight",))
        want = weight_gradient_reference(x, gy, w.shape, (1, 1), ((1, 1), (1, 1)), (1, 1),
                                         groups)
        assert_close(gw, want, np.float64, gy[..., 0].size)
        out_ranges, in_ranges = ranges[-1]
        blocks = -(-cout // groups // block)
        ci_blocks = -(-cin // groups // kernel.PIXEL_BLOCK)
        if cache_bytes:  # every block a unit of its own, input ranges to fill the units
            assert out_ranges == blocks and in_ranges == min(
                ci_blocks, -(-functional.BLOCKED_GRAD_UNITS // (groups * blocks)))
        else:  # input ranges first, output blocks split only to fill the units
            assert in_ranges == min(ci_blocks, -(-functional.BLOCKED_GRAD_UNITS // groups))
            assert out_ranges == min(blocks, -(-functional.BLOCKED_GRAD_UNITS
                                               // (groups * in_ranges)))
            assert out_ranges < blocks


def test_non_finite_grad_output_weight_gradient_runs_direct(rng):
    """A tap in the zero padding adds nothing to the weight gradient, even against an
    infinite grad_output (the blocked kernel would add 0 * inf = NaN): direct runs then."""
    x = rng.standard_normal((1, 4, 5, 3))
    w = rng.standard_normal((3, 3, 3, 2))
    gy = np.zeros((1, 4, 5, 2))
    gy[0, 0, 0, 0] = np.inf
    _, gw, _ = fastconv.conv2d_backward(gy, x, w, padding=1, algorithm="blocked",
                                        needs="weight")
    # pixel (0, 0)'s taps in row 0 and column 0 read the padding: no NaN there
    assert not np.isnan(gw[:, :, :, 0]).any() and np.isinf(gw[1:, 1:, :, 0]).all()


@pytest.mark.parametrize("weight_shape", [(1, 1, 512, 2048), (1, 1, 96, 576)])
def test_pointwise_weight_gradient_takes_blocked_below_the_gemm_pixel_count(weight_shape):
    """A 1x1 weight gradient over few pixels runs on the blocked kernel; from
    POINTWISE_GEMM_MIN_PIXELS on, on one GEMM (many input channels) or direct (few)."""
    cin, cout = weight_shape[2:]
    side = math.isqrt(_algorithms.POINTWISE_GEMM_MIN_PIXELS)
    for n, h, want in [(1, side - 1, "blocked"),
                       (1, side, "im2col" if cin >= 256 else "direct")]:
        geo = fastconv._params.conv_geometry("t", (n, h, h, cin), weight_shape, 1, 0, 1, 1)
        assert _algorithms.for_weight_gradient("auto", weight_shape, (n, h, h, cout), 4,
                                               geo) == want


# a first layer's few input channels: rows of kw taps x C_in read as one run of x padded
MERGED_ROWS = [
    dict(x=(2, 13, 11, 3), w=(7, 7, 3, 64), stride=2, padding=3),  # ResNet's stem
    dict(x=(1, 9, 10, 1), w=(3, 3, 1, 96), padding=1),  # one channel, 96 = 64 + 32
    dict(x=(2, 8, 9, 5), w=(3, 5, 5, 48), stride=(1, 2), dilation=(2, 1),
         padding=((2, 1), (0, 3))),  # dilation along the columns only, asymmetric padding
    dict(x=(1, 7, 7, 7), w=(2, 3, 7, 112), stride=3),  # stride > kernel, a partial block
    dict(x=(2, 6, 8, 3), w=(3, 3, 3, 64), padding=1, padding_mode="reflect"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", MERGED_ROWS, ids=lambda c: str(c["w"]))
def test_weight_gradient_of_few_input_channels_merges_rows_of_taps(case, dtype, rng):
    """With fewer than 8 input channels, the blocked weight gradient (auto's choice where its
    output blocks fill) reads each row of taps as one run: the gradient from the definition,
    also when added into a layer's gradient."""
    from _helpers import conv_reference_args
    x, w = rng.standard_normal(case["x"]).astype(dtype), rng.standard_normal(
        case["w"]).astype(dtype)
    args = {k: v for k, v in case.items() if k not in ("x", "w")}
    geo = fastconv._params.conv_geometry("t", x.shape, w.shape, args.get("stride", 1),
                                         args.get("padding", 0), args.get("dilation", 1), 1)
    assert _algorithms.merges_tap_rows(w.shape, geo)
    kernel, reason = _algorithms.weight_gradient_rule(w.shape, (geo.n, *geo.out_hw, w.shape[3]),
                                                      np.dtype(dtype).itemsize, geo)
    assert kernel == "blocked" and "read as one run each" in reason
    y = fastconv.conv2d(x, w, **args)
    gy = rng.standard_normal(y.shape).astype(dtype)
    want = reference.conv2d_backward(gy, x, w, **conv_reference_args(case))[1]
    for algorithm in ("blocked", "auto"):
        gw = fastconv.conv2d_backward(gy, x, w, **args, algorithm=algorithm,
                                      needs=("weight",))[1]
        assert_close(gw, want, dtype, gy[..., 0].size)
    layer = L.Conv2d(case["x"][3], case["w"][3], case["w"][:2], bias=False, dtype=dtype,
                     **args)
    layer.weight[...] = w
    for _ in range(2):  # the second backward adds into the first one's gradient
        layer(x)
        layer.backward(gy)
    assert_close(layer.grads["weight"], 2 * want, dtype, gy[..., 0].size)


def test_merged_rows_of_taps_only_where_they_serve():
    """Not with groups, a dilation along the rows, a single column of taps or 8+ input
    channels; auto keeps im2col where a group's output channels fill less than 3/4 of the
    kernel's output blocks."""
    def geo(x_shape, w_shape, dilation=1, groups=1):
        return fastconv._params.conv_geometry("t", x_shape, w_shape, 1, 1, dilation, groups)
    assert not _algorithms.merges_tap_rows((3, 3, 1, 6), geo((1, 8, 8, 6), (3, 3, 1, 6),
                                                             groups=6))
    assert not _algorithms.merges_tap_rows((3, 3, 3, 64), geo((1, 8, 8, 3), (3, 3, 3, 64),
                                                              dilation=(1, 2)))
    assert _algorithms.merges_tap_rows((3, 3, 3, 64), geo((1, 8, 8, 3), (3, 3, 3, 64),
                                                          dilation=(2, 1)))
    assert not _algorithms.merges_tap_rows((3, 1, 3, 64), geo((1, 8, 8, 3), (3, 1, 3, 64)))
    assert not _algorithms.merges_tap_rows((3, 3, 8, 64), geo((1, 8, 8, 8), (3, 3, 8, 64)))
    block = _algorithms.KERNELS["blocked"].OUT_BLOCK["float32"]
    narrow = (3, 3, 3, block // 2)
    g = geo((1, 8, 8, 3), narrow)
    assert _algorithms.weight_gradient_rule(narrow, (1, 8, 8, block // 2), 4, g)[0] == "im2col"
