"""Every layer of the standard suite x {forward, backward} x fastconv algorithm.

Run: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_conv.py`
(add --fastconv-quick or FASTCONV_BENCH_QUICK=1 for a smoke run). Results are grouped by
layer; extra_info holds the GFLOP/s of the median time and the geometry. Each case first
checks its result against the float64 reference (that call is also the warm-up).
"""
from functools import lru_cache

import pytest

import fastconv
from fastconv import _bench
from fastconv._algorithms import ALGORITHMS


@lru_cache(maxsize=2)
def _problem(layer, direction):
    """Operands and float64 reference, shared by the algorithms of one layer and direction."""
    arrays = _bench.make_arrays(layer, direction)
    return arrays, _bench.reference(layer, direction, arrays)


# every algorithm that can run the layer ("winograd" only 3x3 stride-1 convolutions)
CASES = [(name, direction, algorithm) for name, layer in _bench.LAYERS.items()
         for direction in _bench.DIRECTIONS for algorithm in ALGORITHMS
         if _bench.serves(layer, algorithm)]


@pytest.mark.parametrize("name, direction, algorithm", CASES, ids=["-".join(c) for c in CASES])
def test_conv(benchmark, quick, threads, name, direction, algorithm):
    layer = _bench.LAYERS[name]
    if quick:
        layer = _bench.quick_layer(layer)
    arrays, refs = _problem(layer, direction)
    contender = _bench.fastconv_contender(layer, direction, arrays, algorithm)
    terms = _bench.summed_terms(layer, direction)
    with fastconv.num_threads(threads):
        results = contender.to_numpy(contender.run())
        errors = [_bench.relative_error(r, ref) for r, ref in zip(results, refs)]
        assert all(e <= _bench.tolerance(t) for e, t in zip(errors, terms)), errors
        benchmark.group = name
        benchmark(contender.run)
    benchmark.extra_info.update(
        layer=name, direction=direction, algorithm=algorithm, threads=threads,
        flops=layer.flops(direction), max_rel_error=max(errors),
        geometry={k: v for k, v in vars(layer).items() if k != "name"})
    if benchmark.stats:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = layer.flops(direction) / median / 1e9
