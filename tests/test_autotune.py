"""The machine facts "auto" reasons with, autotune's cache (with a fake timer: no test depends
on real timings) and describe()."""
import json

import numpy as np
import pytest

import fastconv
from fastconv import _algorithms, _autotune, _machine, _params

import reference


# ----------------------------------------------------------------------------------------------
# machine facts

def _fake_sysfs(root, caches):
    for i, (level, kind, size, shared) in enumerate(caches):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
        (index / "shared_cpu_list").write_text(f"{shared}\n")
    return str(root)


def test_sysfs_caches(tmp_path):
    root = _fake_sysfs(tmp_path, [(1, "Data", "48K", "0"), (1, "Instruction", "32K", "0"),
                                  (2, "Unified", "2048K", "0"), (3, "Unified", "32M", "0-7,16-23")])
    assert _machine.sysfs_caches(root) == {"l1d": 48 * 1024, "l2": 2 * 2**20, "l3": 32 * 2**20,
                                           "l3_shared_by": 16}
    facts = _machine.read(root, cpuinfo=str(tmp_path / "none"), simd="avx2")
    assert (facts.l1d, facts.l2, facts.l3, facts.l3_shared_by) == (48 * 1024, 2**21, 2**25, 16)
    assert facts.caches_from == "sysfs" and facts.last_level == 2**25
    assert facts.vector_bytes == 32 and facts.lanes(4) == 8 and facts.lanes(8) == 4


def test_a_guest_told_its_hosts_whole_l3(tmp_path):
    # a 2-vCPU guest on a Xeon was told 480 MiB of L3 "shared by 2": auto counts on at most
    # L3_PER_CPU_LIMIT per logical CPU (and the reported size stays as told)
    root = _fake_sysfs(tmp_path, [(1, "Data", "48K", "0"), (2, "Unified", "2048K", "0"),
                                  (3, "Unified", "491520K", "0-1")])
    facts = _machine.read(root, simd="avx512")
    assert facts.l3 == 480 * 2**20 and facts.l3_shared_by == 2
    assert facts.last_level == 2 * _machine.L3_PER_CPU_LIMIT == 32 * 2**20
    assert facts.as_dict()["last_level"] == facts.last_level


def test_a_cpu_without_l3(tmp_path):
    root = _fake_sysfs(tmp_path, [(1, "Data", "64K", "0"), (2, "Unified", "4096K", "0-3")])
    facts = _machine.read(root, simd="baseline")
    assert facts.l3 == 0 and facts.last_level == facts.l2 == 4 * 2**20
    assert facts.vector_bytes == 16


def test_no_sysfs_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(_machine, "sysconf_caches", lambda: {"l2": 512 * 1024})
    facts = _machine.read(str(tmp_path / "missing"), simd="avx512")
    assert facts.caches_from == "sysconf" and facts.l2 == 512 * 1024 and facts.l3 == 0
    # sysconf says nothing of who shares the L3: taken as every CPU's (no cap below 16 MiB
    # per CPU of the machine)
    monkeypatch.setattr(_machine, "sysconf_caches", lambda: {"l2": 2**20, "l3": 64 * 2**20})
    monkeypatch.setattr(_machine.os, "cpu_count", lambda: 8)
    facts = _machine.read(str(tmp_path / "missing"), simd="avx512")
    assert facts.l3_shared_by == 8 and facts.last_level == 64 * 2**20
    monkeypatch.setattr(_machine, "sysconf_caches", lambda: {})
    facts = _machine.read(str(tmp_path / "missing"), simd="avx512")
    assert facts.caches_from == "defaults"
    assert (facts.l1d, facts.l2, facts.l3) == tuple(_machine.DEFAULT_CACHES.values())


@pytest.mark.parametrize("text, size", [("48K", 49152), ("1024K", 2**20), ("32M", 2**25),
                                        ("512", 512), ("", 0), ("big", 0)])
def test_parse_size(text, size):
    assert _machine.parse_size(text) == size


def test_the_rules_follow_the_machine():
    facts = _machine.FACTS
    assert facts.l2 > 0 and facts.last_level >= facts.l2 and facts.vector_bytes in (16, 32, 64)
    assert _algorithms.COLUMN_BUFFER_BYTES == facts.l2 // 4
    assert _algorithms.WINOGRAD_BUFFER_BYTES == facts.l2 // 2
    assert _algorithms.WINOGRAD_MAX_WEIGHT_BYTES == facts.last_level // 2
    assert _algorithms.STREAM_BYTES == facts.last_level // 4
    assert facts.simd == _algorithms.KERNELS["direct"].ISA


def test_simd_cap(monkeypatch):
    monkeypatch.setenv("FASTCONV_SIMD", "baseline")
    assert _machine.simd_levels() == ["baseline"]


# ----------------------------------------------------------------------------------------------
# autotune

@pytest.fixture
def autotune(monkeypatch):
    """Autotuning on, an empty cache, and a fake timer: each call of algorithm a takes
    COSTS[a] seconds (the call itself really runs). Restored afterwards."""
    calls = []
    costs = {"direct": 3.0e-3, "im2col": 1.0e-3, "winograd": 2.0e-3, "blocked": 4.0e-3}

    def fake_time_call(algorithm, run):
        calls.append(algorithm)
        return costs[algorithm], run(algorithm)

    monkeypatch.setattr(_autotune, "time_call", fake_time_call)
    saved = _autotune.cached()
    was = fastconv.get_autotune()
    _autotune.clear()
    fastconv.set_autotune(True)
    yield costs, calls
    fastconv.set_autotune(was)
    _autotune.clear()
    _autotune._cache.update(saved)


def _geo(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    return _params.conv_geometry("test", x_shape, w_shape, stride, padding, dilation, groups)


def test_the_measured_winner_is_cached_and_used(autotune, rng):
    costs, calls = autotune
    x = rng.standard_normal((2, 9, 9, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    y = fastconv.conv2d(x, w, padding=1)
    np.testing.assert_allclose(y, reference.conv2d(x, w, None, (1, 1), ((1, 1), (1, 1))),
                               rtol=1e-4, atol=1e-4)
    runs = _autotune.WARM_RUNS + _autotune.TIMED_RUNS
    assert calls == (["direct"] * runs + ["im2col"] * runs + ["winograd"] * runs
                     + ["blocked"] * runs)
    geo = _geo(x.shape, w.shape, padding=1)
    assert _autotune.cached() == {_autotune.key("forward", geo, np.float32): "im2col"}
    assert fastconv.get_num_threads() in _autotune.key("forward", geo, np.float32)
    assert _algorithms.describe(geo)["forward"] == ("im2col", "autotuned")
    # the second call runs the winner, once, untimed
    calls.clear()
    seen = []
    original = _algorithms.for_convolution
    with pytest.MonkeyPatch.context() as m:
        m.setattr(_algorithms, "for_convolution",
                  lambda algorithm, *a: seen.append(algorithm) or original(algorithm, *a))
        y2 = fastconv.conv2d(x, w, padding=1)
    assert calls == [] and seen == ["im2col"]
    np.testing.assert_array_equal(y2, fastconv.conv2d(x, w, padding=1, algorithm="im2col"))


def test_a_new_winner_when_the_costs_change(autotune, rng):
    costs, _ = autotune
    costs["winograd"] = 1e-4
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    fastconv.conv2d(x, w)
    assert list(_autotune.cached().values()) == ["winograd"]


def test_dtype_and_threads_are_part_of_the_key(autotune, rng):
    _, calls = autotune
    x = rng.standard_normal((1, 6, 6, 4))
    w = rng.standard_normal((3, 3, 4, 4))
    fastconv.conv2d(x.astype(np.float32), w.astype(np.float32))
    fastconv.conv2d(x, w)  # float64: measured again
    with fastconv.num_threads(fastconv.get_num_threads() + 1):
        fastconv.conv2d(x, w)  # another thread count: measured again
    keys = list(_autotune.cached())
    assert len(keys) == 3 and len(calls) == 3 * 4 * (_autotune.WARM_RUNS + _autotune.TIMED_RUNS)
    assert {k[7] for k in keys} == {"float32", "float64"}
    assert len({k[8] for k in keys}) == 2


def test_winograd_is_a_candidate_only_where_it_serves(autotune, rng):
    costs, calls = autotune
    costs["winograd"] = 0.0  # would win anywhere it ran
    x = rng.standard_normal((1, 9, 9, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)
    y = fastconv.conv2d(x, w, stride=2)
    assert "winograd" not in calls and list(_autotune.cached().values()) == ["im2col"]
    np.testing.assert_allclose(y, reference.conv2d(x, w, None, (2, 2)), rtol=1e-4, atol=1e-4)


def test_the_budget_bounds_the_calls(autotune, rng, monkeypatch):
    costs, calls = autotune
    monkeypatch.setattr(_autotune, "BUDGET_SECONDS", 0.0)
    x = rng.standard_normal((1, 5, 5, 3)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 2)).astype(np.float32)
    fastconv.conv2d(x, w)
    assert calls == ["direct", "im2col", "blocked"]  # over budget after the first: one each


def test_off_means_the_rules(autotune, rng):
    _, calls = autotune
    fastconv.set_autotune(False)
    x = rng.standard_normal((1, 5, 5, 3)).astype(np.float32)
    fastconv.conv2d(x, rng.standard_normal((3, 3, 3, 2)).astype(np.float32))
    assert calls == [] and _autotune.cached() == {}
    with pytest.raises(TypeError, match="enabled must be a bool"):
        fastconv.set_autotune(1)


# every direction of every function, against the reference, with every candidate winning
GEOMETRIES = [  # x shape, w shape, stride, padding, dilation, groups
    ((2, 9, 8, 6), (3, 3, 6, 8), 1, 1, 1, 1),
    ((1, 10, 9, 4), (3, 3, 2, 6), 2, 1, 1, 2),
    ((2, 7, 7, 5), (1, 1, 5, 3), 1, 0, 1, 1),
    ((1, 11, 11, 4), (3, 2, 4, 4), 1, 2, 2, 1),
    ((1, 8, 8, 6), (2, 2, 1, 6), 2, 0, 1, 6),
]


@pytest.mark.parametrize("winner", ["direct", "im2col", "winograd", "blocked"])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", GEOMETRIES)
def test_a_cached_choice_gives_the_right_answer(autotune, rng, winner, x_shape, w_shape,
                                                stride, padding, dilation, groups):
    costs, _ = autotune
    costs[winner] = 0.0
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    pads = ((padding, padding),) * 2
    s, d = (stride,) * 2, (dilation,) * 2
    expected = reference.conv2d(x, w, None, s, pads, d, groups)
    gy = rng.standard_normal(expected.shape)
    gx_ref, gw_ref, _ = reference.conv2d_backward(gy, x, w, s, pads, d, groups)
    for _ in range(2):  # measured, then from the cache
        np.testing.assert_allclose(fastconv.conv2d(x, w, **kw), expected, rtol=1e-9, atol=1e-9)
        gx, gw, _ = fastconv.conv2d_backward(gy, x, w, **kw)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(gw, gw_ref, rtol=1e-9, atol=1e-9)
        # the transposed convolution of the same weight: the same geometry's input gradient
        np.testing.assert_allclose(
            fastconv.conv_transpose2d(gy, w, stride=stride, padding=padding, dilation=dilation,
                                      groups=groups,
                                      output_padding=_output_padding(x_shape, gy, w, kw)),
            gx_ref, rtol=1e-9, atol=1e-9)
    geo = _geo(x_shape, w_shape, stride, padding, dilation, groups)
    can_win = winner in _autotune.candidates(geo)  # else the cheapest other one: im2col
    assert set(_autotune.cached().values()) == {winner if can_win else "im2col"}


def _output_padding(x_shape, gy, w, kw):
    """The output_padding that makes conv_transpose2d's output as large as x."""
    out = fastconv.conv_transpose_output_shape(gy.shape[1:3], w.shape[:2], kw["stride"],
                                               kw["padding"], 0, kw["dilation"])
    return tuple(size - o for size, o in zip(x_shape[1:3], out))


# ----------------------------------------------------------------------------------------------
# the cache on disk

def _fill(rng):
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    fastconv.conv2d_backward(x, x, w, padding=1)
    fastconv.conv2d(x, w, padding=1)


def test_save_and_load_round_trip(autotune, rng, tmp_path):
    _fill(rng)
    before = _autotune.cached()
    assert len(before) == 3  # forward, input gradient, weight gradient
    path = tmp_path / "tune.json"
    fastconv.save_autotune_cache(path)
    document = json.loads(path.read_text())
    assert document["format"] == _autotune.FORMAT and document["version"] == _autotune.VERSION
    assert document["cpu"] == _machine.FACTS.cpu
    _autotune.clear()
    assert fastconv.load_autotune_cache(path) == 3
    assert _autotune.cached() == before


def _damage(document):
    bad = json.loads(json.dumps(document))
    bad["entries"][0]["weight_shape"] = [5, 5, 8, 8]  # Winograd cannot serve 5x5
    return bad


@pytest.mark.parametrize("damage, message", [
    (lambda doc: "{ not json", "not JSON"),
    (lambda doc: [1, 2], "not a fastconv autotune cache"),
    (lambda doc: {**doc, "format": "other"}, "not a fastconv autotune cache"),
    (lambda doc: {**doc, "version": 99}, "format version 99"),
    (lambda doc: {**doc, "cpu": "Another CPU 1000"}, "another machine"),
    (lambda doc: {**doc, "entries": "none"}, "no list"),
    (lambda doc: {**doc, "entries": doc["entries"] + [{"direction": "forward"}]}, "entry 1"),
    (lambda doc: {**doc, "entries": [{**doc["entries"][0], "algorithm": "fft"}]}, "entry 0"),
    (lambda doc: {**doc, "entries": [{**doc["entries"][0], "threads": 0}]}, "threads"),
    (_damage, "cannot serve"),
])
def test_a_damaged_or_foreign_file_is_refused(autotune, rng, tmp_path, damage, message):
    costs, _ = autotune
    costs["winograd"] = 0.0
    x = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    fastconv.conv2d(x, w, padding=1)
    path = tmp_path / "tune.json"
    fastconv.save_autotune_cache(path)
    damaged = damage(json.loads(path.read_text()))
    path.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    _autotune.clear()
    _autotune._cache[("kept",)] = "direct"
    with pytest.raises(ValueError, match=message) as info:
        fastconv.load_autotune_cache(path)
    assert "nothing was loaded" in str(info.value)
    assert _autotune.cached() == {("kept",): "direct"}  # untouched, still usable


# ----------------------------------------------------------------------------------------------
# describe

def test_describe_gives_each_direction_and_its_rule(autotune):
    fastconv.set_autotune(False)
    wide = _geo((8, 28, 28, 128), (3, 3, 128, 128), padding=1)
    chosen = _algorithms.describe(wide)
    assert set(chosen) == {"forward", "input_gradient", "weight_gradient"}
    assert chosen["forward"] == ("winograd", _algorithms.WINOGRAD_REASON)
    pointwise = _algorithms.describe(_geo((2, 56, 56, 64), (1, 1, 64, 256)))
    assert pointwise["forward"] == ("blocked", "rule: " + _algorithms.BLOCKED_REASON)
    # blocked from one vector of output channels and one more
    lanes = _algorithms.MACHINE.lanes(4)
    for cout, blocked in ((lanes, False), (lanes + 1, True)):
        chosen = _algorithms.describe(_geo((2, 56, 56, 64), (1, 1, 64, cout)))["forward"][0]
        assert (chosen == "blocked") == blocked, (cout, chosen)
    # too few input channels for blocked, one vector of outputs: one GEMM on the input
    narrow = _algorithms.describe(_geo((2, 56, 56, 12), (1, 1, 12, 16)))
    assert narrow["forward"] == ("im2col", "rule: 1x1 stride 1: one GEMM on the input as it is")
    # too few pixels for GEMM tiles of MIN_POINTWISE_TILE_ROWS: each would repack the weight
    small = _algorithms.describe(_geo((1, 14, 14, 12), (1, 1, 12, 16)))
    assert small["forward"][0] == "direct"
    strided = _algorithms.describe(_geo((1, 16, 16, 8), (2, 2, 8, 8), stride=2))
    assert strided["input_gradient"][0] == "im2col"
    assert "one tap per sub-pixel phase" in strided["input_gradient"][1]
    # a 1x1 kernel's one phase with a tap is a plain convolution: no GEMM over all taps
    for n, hw in ((1, 14), (8, 56)):
        pointwise = _algorithms.describe(_geo((n, hw, hw, 256), (1, 1, 256, 512), stride=2))
        assert pointwise["input_gradient"][0] == "blocked"
        assert not _algorithms.for_single_tap_phases("auto", 1, 1, (2, 2), (1, 1), 512)
        assert _algorithms.for_single_tap_phases("im2col", 1, 1, (2, 2), (1, 1), 512)
    depthwise = _algorithms.describe(_geo((1, 16, 16, 8), (3, 3, 1, 8), 2, 1, 1, 8))
    assert depthwise["input_gradient"] == ("direct", "rule: strided depthwise: one pass over "
                                                     "the rows")
    huge = _geo((1, 16, 16, 4096), (3, 3, 4096, 4096), padding=1)  # blocks of 4 tiles
    forward = _algorithms.describe(huge)["forward"]
    assert forward[0] == "blocked" and "Winograd's weight" in forward[1]
    for geo in (wide, huge):  # the rule describe gives is what the kernels call
        algorithm, _ = _algorithms.describe(geo)["forward"]
        assert algorithm == _algorithms.for_convolution(
            "auto", (*geo.kernel_hw, geo.in_channels, geo.out_channels),
            (geo.n, *geo.out_hw, geo.out_channels), 4, geo.stride, geo.dilation, geo.groups)


def test_describe_shows_autotuned_only_while_on(autotune, rng):
    x = rng.standard_normal((1, 6, 6, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    fastconv.conv2d(x, w)
    geo = _geo(x.shape, w.shape)
    assert _algorithms.describe(geo)["forward"] == ("im2col", "autotuned")
    assert _algorithms.describe(geo, threads=fastconv.get_num_threads() + 1)["forward"][1] \
        .startswith("rule:")
    assert _algorithms.describe(geo, "float64")["forward"][1].startswith("rule:")
    fastconv.set_autotune(False)
    assert _algorithms.describe(geo)["forward"][1].startswith("rule:")
