"""The `fastconv` command (also `python -m fastconv`): bench and info.

Exit codes: 0 success, 1 a benchmark result disagreed with the reference (FAIL),
2 bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from importlib.metadata import PackageNotFoundError, version

from fastconv import _bench
from fastconv._algorithms import KERNELS, simd_modules

DEFAULT_REPEATS = 7
QUICK_REPEATS = 3


# ----------------------------------------------------------------------------------------------
# argument types: each raises ArgumentTypeError, which argparse turns into "error: ..." + exit 2

def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, but got "
                                         f"{text!r}")
    return names


def _layers(text: str) -> list[str]:
    names = _names(text)
    unknown = [name for name in names if name not in _bench.LAYERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown layer {', '.join(map(repr, unknown))}; the suite has: "
            f"{', '.join(_bench.LAYERS)}")
    return names


def _algorithm_names() -> tuple[str, ...]:
    """fastconv's algorithms, "auto" last (it is one of the others, chosen per layer)."""
    from fastconv._algorithms import ALGORITHMS

    return tuple(a for a in ALGORITHMS if a != "auto") + ("auto",)


def _algorithms(text: str) -> list[str]:
    names = _names(text)
    known = _algorithm_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown algorithm {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(known)}")
    return list(dict.fromkeys(names))  # without repeats, in the given order


def _positive_int(what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= 1, but got "
                                             f"{text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be >= 1, but got {value}")
        return value
    return parse


# ----------------------------------------------------------------------------------------------
# the parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastconv",
        description="fastconv: Cython-accelerated CPU convolutions for NumPy (NHWC).")
    parser.add_argument("--version", action="version", version=f"fastconv {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    layer_list = ", ".join(_bench.LAYERS)
    bench = sub.add_parser(
        "bench", help="benchmark the standard layer suite against NumPy and PyTorch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the standard layer suite (NHWC, fp32) through fastconv's algorithms.\n"
            "Every result is first checked against a float64 reference (FAIL if it disagrees\n"
            "beyond float32 tolerance); then fastconv, a NumPy baseline (as_strided im2col +\n"
            "matmul, forward only) and PyTorch (channels_last, when installed) are timed\n"
            "round by round on the same arrays, interleaved. Reported: GFLOP/s of the median\n"
            "time, GFLOP = 2*N*Ho*Wo*C_out*(C_in/groups)*kh*kw / 1e9 (backward: input and\n"
            "weight gradients, twice that), and torch time / best fastconv time.\n\n"
            "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE slow OpenBLAS down; unset them:\n"
            "  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE fastconv bench --quick"),
        epilog=f"layers: {layer_list}\nexit status: 0 all results correct, 1 a FAIL, "
               f"2 bad arguments")
    bench.add_argument("--layers", type=_layers, metavar="A,B,...",
                       help="comma-separated suite layers (default: all)")
    bench.add_argument("--algorithms", type=_algorithms, metavar="A,B,...",
                       help=f"fastconv algorithms (default: all: {','.join(_algorithm_names())})")
    bench.add_argument("--direction", choices=("forward", "backward", "both"), default="both",
                       help="forward, backward (input + weight gradients) or both (default)")
    bench.add_argument("--threads", type=_positive_int("--threads"), metavar="N",
                       help="threads for fastconv, BLAS and PyTorch alike (default: "
                            "fastconv.get_num_threads())")
    bench.add_argument("--quick", action="store_true",
                       help=f"an eighth of each batch and {QUICK_REPEATS} rounds: a smoke run "
                            f"of well under a minute")
    bench.add_argument("--repeats", type=_positive_int("--repeats"), metavar="R",
                       help=f"timed rounds per layer (default {DEFAULT_REPEATS}, "
                            f"--quick {QUICK_REPEATS})")
    bench.add_argument("--batch", type=_positive_int("--batch"), metavar="N",
                       help="use this batch size N for every layer")
    bench.add_argument("--compare", choices=("auto", "torch", "none"), default="auto",
                       help="peer to compare with: torch (required), auto (torch if "
                            "importable, the default) or none")
    bench.add_argument("--json", metavar="FILE",
                       help="also write every result and the machine description as JSON")
    bench.add_argument("--no-progress", action="store_true",
                       help="no progress bar on stderr")
    # for tests and smoke runs: shrink every image to at most this height/width
    bench.add_argument("--max-hw", type=_positive_int("--max-hw"), help=argparse.SUPPRESS)
    bench.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench, parser=bench)

    info = sub.add_parser("info", help="version, build, threads, CPU and BLAS libraries",
                          description="Print fastconv's version and build configuration "
                                      "(OpenMP, compiler flags), its thread count, the CPU's "
                                      "SIMD features and the BLAS/OpenMP libraries in use.")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(func=cmd_info, parser=info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except SystemExit as exc:  # argparse: --help (0) and bad arguments (2)
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    try:
        return version("fastconv")
    except PackageNotFoundError:
        return "0+unknown"


# ----------------------------------------------------------------------------------------------
# fastconv info

def cmd_info(args) -> int:
    info = _bench.machine_info()
    info["torch"] = _installed_version("torch")  # without importing it (slow, loads its libs)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    lines = [
        f"fastconv {info['fastconv_version']}",
        f"OpenMP: {'on' if info['openmp'] else 'off'}",
        f"threads: {info['threads']}",
        f"compile args: {info['compile_args'] or '-'}",
        f"direct kernel: {KERNELS['direct'].ISA} (variants this CPU runs: "
        f"{' '.join(simd_modules('_direct'))})",
        f"CPU: {info['cpu']} ({info['cpu_count']} logical cores)",
        f"SIMD: {' '.join(info['simd']) or 'unknown'}",
        f"Python {info['python']} on {info['platform']}",
        f"NumPy {info['numpy']}, SciPy {info['scipy']}, threadpoolctl "
        f"{_installed_version('threadpoolctl')}, PyTorch {info['torch'] or 'not installed'}",
        "BLAS and OpenMP libraries (threadpoolctl):",
    ]
    lines += [f"  {_bench.describe_pool(pool)}" for pool in info["blas"]] or ["  none found"]
    for name, value in info["env"].items():
        lines.append(f"{name}: {'unset' if value is None else value}")
    print("\n".join(lines))
    warning = _bench.blas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------------------
# fastconv bench

class _Progress:
    """tqdm on stderr when installed, otherwise one line per step."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, file=sys.stderr, unit="case", leave=False)

    def start(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label)
        elif self.enabled:
            print(f"[{self.done + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def step(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _selected_layers(args) -> list[_bench.Layer]:
    layers = [_bench.LAYERS[name] for name in (args.layers or _bench.LAYERS)]
    if args.quick:
        layers = [_bench.quick_layer(layer) for layer in layers]
    if args.batch:
        layers = [layer.replace(n=args.batch) for layer in layers]
    if args.max_hw:
        layers = [layer.replace(hw=max(min(layer.hw, args.max_hw),
                                       layer.dilation * (layer.k - 1) + 1))
                  for layer in layers]
    return layers


def _header(args, threads: int, torch, repeats: int) -> str:
    import fastconv
    from fastconv._kernels import _openmp

    mode = "quick (batch / 8)" if args.quick else "full"
    if args.batch:
        mode += f", batch {args.batch}"
    lines = [f"fastconv {fastconv.__version__} bench: {threads} threads, OpenMP "
             f"{'on' if _openmp.openmp_enabled() else 'off'}, {mode}, median of {repeats} "
             f"interleaved rounds",
             f"CPU: {_bench.cpu_model()} [{' '.join(_bench.cpu_simd_flags()) or '?'}]"]
    pools = [p for p in _bench.thread_pools() if p.get("user_api") == "blas"]
    lines += [f"BLAS: {_bench.describe_pool(p)}" for p in pools] or ["BLAS: none found"]
    if torch is not None:
        lines.append(f"PyTorch {torch.__version__} (channels_last, {threads} threads)")
    lines.append("GFLOP/s = 2*N*Ho*Wo*C_out*(C_in/groups)*k*k / median time (backward: input "
                 "+ weight grads, 2x)")
    return "\n".join(lines)


def _finite(value):
    """JSON without NaN/Infinity (not valid JSON): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def cmd_bench(args) -> int:
    import fastconv

    torch = None
    if args.compare != "none":
        torch = _bench.torch_module()
        if torch is None and args.compare == "torch":
            args.parser.error("--compare torch needs PyTorch, which is not importable here "
                              "(pip install 'fastconv[torch]')")
    threads = args.threads or fastconv.get_num_threads()
    algorithms = args.algorithms or list(_algorithm_names())
    directions = _bench.DIRECTIONS if args.direction == "both" else (args.direction,)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    layers = _selected_layers(args)
    peers = ["numpy"] + (["torch"] if torch is not None else [])

    warning = _bench.blas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    print(_header(args, threads, torch, repeats), flush=True)

    results = []
    progress = _Progress(len(layers) * len(directions), not args.no_progress)
    try:
        with _bench.thread_count(threads, torch):
            for layer in layers:
                for direction in directions:
                    progress.start(f"{layer.name} {direction}")
                    results.append(_bench.bench_layer(
                        layer, direction, algorithms, repeats=repeats, torch=torch,
                        seed=args.seed))
                    progress.step()
    finally:
        progress.close()

    print()
    print(_bench.format_table(results, algorithms, peers))
    ratios = [r.vs_torch for r in results if r.vs_torch]
    geomean = _bench.geometric_mean(ratios)
    if torch is not None:
        text = f"{geomean:.2f}" if geomean else "-"
        print(f"\ngeometric mean of x vs torch (torch time / best fastconv time, > 1: fastconv "
              f"faster) over {len(ratios)} rows: {text}")
    failed = [f"{r.layer.name} {r.direction} {a}: {r.entries[a].message}"
              for r in results for a in r.failed]
    for line in failed:
        print(f"FAIL {line}", file=sys.stderr)

    if args.json:
        report = {"machine": _bench.machine_info(threads),
                  "config": {"layers": [layer.name for layer in layers],
                             "algorithms": algorithms, "directions": list(directions),
                             "repeats": repeats, "quick": args.quick, "threads": threads,
                             "compare": "torch" if torch is not None else "none"},
                  "results": [r.as_dict() for r in results],
                  "geomean_vs_torch": geomean,
                  "failed": len(failed)}
        try:
            with open(args.json, "w") as f:
                json.dump(_finite(report), f, indent=2, allow_nan=False)
        except OSError as exc:
            print(f"fastconv bench: could not write --json {args.json}: {exc}", file=sys.stderr)
            return 1
        print(f"results written to {args.json}")
    return 1 if failed else 0
