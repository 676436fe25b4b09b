"""The `fastconv` command (also `python -m fastconv`): bench, info and filter.

Exit codes: 0 success, 1 a benchmark result disagreed with the reference (FAIL) or a file
could not be read or written, 2 bad arguments or a missing optional dependency (Pillow for
filter, matplotlib for bench --plot).
"""
from __future__ import annotations

import argparse
from typing import Any
import json
import math
import os
import sys
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from fastconv import _bench
from fastconv._algorithms import KERNELS, simd_modules
from fastconv._params import PADDING_MODES

DEFAULT_REPEATS = 7
QUICK_REPEATS = 3
MODEL_REPEATS = 5  # --models: a call of a whole network lasts long enough on its own
COMPARE_PEERS = ("torch", "onnxruntime")
PEER_NAMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime"}

FILTER_KERNELS = ("sobel", "prewitt", "laplace", "gaussian", "box", "sharpen")
EDGE_KERNELS = ("sobel", "prewitt", "laplace")  # signed responses, shown as |response| / max
# the options each kernel takes (any other kernel option is an error)
KERNEL_OPTIONS = {"sobel": ("--axis",), "prewitt": ("--axis",), "laplace": (),
                  "gaussian": ("--sigma", "--size"), "box": ("--size",), "sharpen": ()}


# ----------------------------------------------------------------------------------------------
# argument types: each raises ArgumentTypeError, which argparse turns into "error: ..." + exit 2

def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, but got "
                                         f"{text!r}")
    return names


def _known(text: str, known, what: str, choices: str) -> list[str]:
    """The comma-separated names in text, without repeats, in the given order; each must be
    in `known` (else "unknown {what} ...; {choices}")."""
    names = _names(text)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(map(repr, unknown))}; {choices}")
    return list(dict.fromkeys(names))


def _layers(text: str) -> list[str]:
    return _known(text, _bench.LAYERS, "layer", f"the suite has: {', '.join(_bench.LAYERS)}")


def _models(text: str) -> list[str]:
    from fastconv._bench_models import MODELS

    return _known(",".join(MODELS) if text == "all" else text, MODELS, "model",
                  f"choose from {', '.join(MODELS)} (or all)")


def _compare(text: str) -> str | list[str]:
    """"auto", "none" or a comma-separated list of peers (each then required)."""
    if text in ("auto", "none"):
        return text
    return _known(text, COMPARE_PEERS, "peer",
                  f"choose auto, none or a list of {', '.join(COMPARE_PEERS)}")


def _algorithm_names() -> tuple[str, ...]:
    """fastconv's algorithms, "auto" last (it is one of the others, chosen per layer)."""
    from fastconv._algorithms import ALGORITHMS

    return tuple(a for a in ALGORITHMS if a != "auto") + ("auto",)


def _algorithms(text: str) -> list[str]:
    known = _algorithm_names()
    return _known(text, known, "algorithm", f"choose from {', '.join(known)}")


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


def _positive_ints(what: str):
    def parse(text: str) -> list[int]:
        return [_positive_int(what)(part) for part in _names(text)]
    return parse


def _positive_real(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number > 0, but got "
                                             f"{text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number > 0, but got "
                                             f"{text!r}")
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
        "bench", help="benchmark the standard layer suite (or whole networks: --models) "
                      "against NumPy, PyTorch and ONNX Runtime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the standard layer suite (NHWC, fp32) through fastconv's algorithms.\n"
            "Every result is first checked against a float64 reference (FAIL if it disagrees\n"
            "beyond float32 tolerance); then fastconv, a NumPy baseline (as_strided im2col +\n"
            "matmul, forward only), PyTorch (channels_last) and ONNX Runtime (a one-node\n"
            "Conv model, forward only; NCHW copies made outside the timing), when installed,\n"
            "are timed round by round on the same arrays, interleaved. Reported: GFLOP/s of\n"
            "the median time, GFLOP = 2*N*Ho*Wo*C_out*(C_in/groups)*kh*kw / 1e9 (backward:\n"
            "input and weight gradients, twice that), and peer time / best fastconv time.\n\n"
            "--models runs whole networks instead (fastconv.models with random weights, the\n"
            "same weights in a PyTorch twin and its ONNX export for ONNX Runtime), inference\n"
            "(and a training step with --train), every result checked against PyTorch:\n"
            "  fastconv bench --models resnet18,resnet50,mobilenetv2,vgg16,unet --batch 1,8\n\n"
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
                       help=f"an eighth of each batch (each geometry once: a layer and its _b1 twin "
                            f"agree then) and {QUICK_REPEATS} rounds: a smoke run "
                            f"of well under a minute")
    bench.add_argument("--repeats", type=_positive_int("--repeats"), metavar="R",
                       help=f"timed rounds per layer (default {DEFAULT_REPEATS}, "
                            f"--quick {QUICK_REPEATS})")
    bench.add_argument("--batch", type=_positive_ints("--batch"), metavar="N[,N...]",
                       help="use this batch size N for every layer; --models: the batch "
                            "sizes to run (default 1,8)")
    bench.add_argument("--compare", type=_compare, default="auto", metavar="PEERS",
                       help="peers to compare with: auto (those importable among torch "
                            "and onnxruntime, the default), none, or a list such as "
                            "torch,onnxruntime (each then required)")
    bench.add_argument("--models", type=_models, metavar="A,B,...",
                       help="benchmark whole networks instead of the layer suite: "
                            "resnet18, resnet50, mobilenetv2, vgg16 (224x224 images), unet "
                            "(128x128), or all; --quick: resnet18 and mobilenetv2 at batch 1")
    bench.add_argument("--train", action="store_true",
                       help="--models: also time a training step (forward, cross-entropy, "
                            "backward, SGD) of resnet18 at 112x112 against PyTorch")
    bench.add_argument("--json", metavar="FILE",
                       help="also write every result and the machine description as JSON")
    bench.add_argument("--plot", metavar="FILE",
                       help="also draw the GFLOP/s as bars per layer, one panel per direction, "
                            "into FILE (.png, .svg, .pdf, ...; needs matplotlib: pip install "
                            "'fastconv[plot]')")
    bench.add_argument("--no-progress", action="store_true",
                       help="no progress bar on stderr")
    # for tests and smoke runs: shrink every image to at most this height/width
    bench.add_argument("--max-hw", type=_positive_int("--max-hw"), help=argparse.SUPPRESS)
    bench.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    # for tests: --models at a smaller first-stage width, image size and class count
    bench.add_argument("--width", type=_positive_int("--width"), help=argparse.SUPPRESS)
    bench.add_argument("--image", type=_positive_int("--image"), help=argparse.SUPPRESS)
    bench.add_argument("--classes", type=_positive_int("--classes"), help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench, parser=bench)

    info = sub.add_parser("info", help="version, build, threads, CPU and BLAS libraries",
                          description="Print fastconv's version and build configuration "
                                      "(OpenMP, compiler flags), its thread count, the CPU's "
                                      "SIMD features and the BLAS/OpenMP libraries in use.")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(func=cmd_info, parser=info)
    _add_onnx_arguments(bench, info)

    filt = sub.add_parser(
        "filter", help="apply a classic filter (Sobel, Gaussian, ...) to an image file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Apply a classic filter to every colour channel of an image with\n"
            "fastconv.filters.filter2d (a cross-correlation, padding 'same': the output has\n"
            "the input's size) and write the result as 8-bit pixels. Reading and writing\n"
            "need Pillow: pip install 'fastconv[image]'.\n\n"
            "Pixels are filtered as numbers 0-255 and written back as 0-255:\n"
            "  sobel, prewitt, laplace (edge kernels, signed responses): |response| scaled\n"
            "    so that the image's largest one becomes 255, round(255 * |r| / max |r|),\n"
            "    one scale for all channels (an all-zero response stays 0);\n"
            "  sobel, prewitt without --axis: the gradient magnitude hypot(r_x, r_y),\n"
            "    scaled the same way;\n"
            "  gaussian, box, sharpen: the response rounded and clipped to 0-255.\n"
            "Grayscale images stay grayscale, RGB stays RGB; an alpha channel is copied\n"
            "unfiltered (dropped when OUT is a JPEG). Other modes are converted to RGB(A)\n"
            "or grayscale first (16-bit grayscale: divided by 257 to 0-255)."),
        epilog="exit status: 0 written, 1 IN unreadable or OUT unwritable, 2 bad arguments "
               "or Pillow missing")
    filt.add_argument("input", metavar="IN", help="the image to filter (PNG, JPEG, or any "
                                                  "other format Pillow reads)")
    filt.add_argument("output", metavar="OUT", help="where to write the result; the format "
                                                    "follows the extension (.png, .jpg, ...)")
    filt.add_argument("--kernel", required=True, choices=FILTER_KERNELS, metavar="NAME",
                      help=f"the filter: {', '.join(FILTER_KERNELS)}")
    filt.add_argument("--axis", choices=("x", "y"),
                      help="sobel/prewitt: x (vertical edges) or y (horizontal edges); default: "
                           "the gradient magnitude of both")
    filt.add_argument("--sigma", type=_positive_real("--sigma"), metavar="S",
                      help="gaussian: standard deviation in pixels (default 1)")
    filt.add_argument("--size", type=_positive_int("--size"), metavar="K",
                      help="gaussian: kernel size, odd (default 2*ceil(3*sigma)+1); box: kernel "
                           "size (default 3)")
    filt.add_argument("--mode", choices=PADDING_MODES, default="reflect",
                      help="how the border is extended (default reflect; see "
                           "fastconv.filters)")
    filt.add_argument("--flip", action="store_true",
                      help="flip the kernel: the mathematical convolution instead of the "
                           "cross-correlation")
    filt.set_defaults(func=cmd_filter, parser=filt)
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
    if args.model:
        return cmd_info_onnx(args)
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
        f"winograd kernel: {KERNELS['winograd'].ISA}",
        f"CPU: {info['cpu']} ({info['cpu_count']} logical cores)",
        f"SIMD: {' '.join(info['simd']) or 'unknown'}",
        _caches_line(info["caches"]),
        f"Python {info['python']} on {info['platform']}",
        f"NumPy {info['numpy']}, SciPy {info['scipy']}, threadpoolctl "
        f"{_installed_version('threadpoolctl')}, PyTorch {info['torch'] or 'not installed'}",
        "BLAS and OpenMP libraries (threadpoolctl):",
    ]
    lines += [f"  {_bench.describe_pool(pool)}" for pool in info["blas"]] or ["  none found"]
    for name, value in info["env"].items():
        lines.append(f"{name}: {'unset' if value is None else value}")
    lines.append(f"autotune: {'on' if info['autotune'] else 'off'}")
    lines.append(f"auto's choices for the suite's layers (fp32, {info['threads']} threads):")
    lines += _suite_choices()
    print("\n".join(lines))
    warning = _bench.blas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _caches_line(caches: dict) -> str:
    """The machine facts "auto" reasons with (fastconv._machine)."""
    def size(n: int) -> str:
        return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n // 1024} KiB"
    l3 = (f"L3 {size(caches['l3'])} (shared by {caches['l3_shared_by']})" if caches["l3"]
          else "no L3")
    if caches["l3"] and caches["last_level"] < caches["l3"]:
        l3 += f", of which auto counts on {size(caches['last_level'])}"
    return (f"caches ({caches['caches_from']}): L1d {size(caches['l1d'])}, L2 "
            f"{size(caches['l2'])}, {l3}; vectors {8 * caches['vector_bytes']} bits "
            f"({caches['simd']})")


def _suite_choices() -> list[str]:
    """One line per suite layer: auto's algorithm in each direction, then the distinct
    reasons, numbered."""
    reasons: list[str] = []
    lines = []
    width = max(len(name) for name in _bench.LAYERS)
    for layer in _bench.SUITE:
        cells = []
        for algorithm, reason in _bench.auto_choices(layer).values():
            if reason not in reasons:
                reasons.append(reason)
            cells.append(f"{algorithm} [{reasons.index(reason) + 1}]")
        lines.append(f"  {layer.name:<{width}}  " + "  ".join(f"{c:<14}" for c in cells).rstrip())
    head = f"  {'layer':<{width}}  " + "  ".join(f"{c:<14}" for c in ("forward", "input grad",
                                                                        "weight grad"))
    return [head.rstrip()] + lines + [f"  [{i}] {reason}" for i, reason in enumerate(reasons, 1)]


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
        layers = _bench.quick_selection(layers)
    if args.batch:
        layers = [layer.replace(n=args.batch[0]) for layer in layers]
    if args.max_hw:
        layers = [layer.replace(hw=max(min(layer.hw, args.max_hw),
                                       layer.dilation * (layer.k - 1) + 1))
                  for layer in layers]
    return layers


def _header(args, threads: int, torch, repeats: int, ort=None) -> str:
    import fastconv
    from fastconv._kernels import _openmp

    mode = "quick (batch / 8)" if args.quick else "full"
    if args.batch:
        mode += f", batch {args.batch[0]}"
    lines = [f"fastconv {fastconv.__version__} bench: {threads} threads, OpenMP "
             f"{'on' if _openmp.openmp_enabled() else 'off'}, {mode}, median of {repeats} "
             f"interleaved rounds",
             f"CPU: {_bench.cpu_model()} [{' '.join(_bench.cpu_simd_flags()) or '?'}]"]
    pools = [p for p in _bench.thread_pools() if p.get("user_api") == "blas"]
    lines += [f"BLAS: {_bench.describe_pool(p)}" for p in pools] or ["BLAS: none found"]
    if torch is not None:
        lines.append(f"PyTorch {torch.__version__} (channels_last, {threads} threads)")
    if ort is not None:
        lines.append(f"ONNX Runtime {ort.__version__} (CPU, ORT_ENABLE_ALL, {threads} intra-op "
                     f"threads, forward only)")
    lines.append("GFLOP/s = 2*N*Ho*Wo*C_out*(C_in/groups)*k*k / median time (backward: input "
                 "+ weight grads, 2x)")
    return "\n".join(lines)


def _dump_json(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(_finite(report), f, indent=2, allow_nan=False)


def _written(option: str, path: str, write) -> bool:
    """Run write(), which writes `path` (the value of `option`); say where the result went,
    or why it could not be written (False)."""
    try:
        write()
    except OSError as exc:
        print(f"fastconv bench: could not write {option} {path}: {exc}", file=sys.stderr)
        return False
    print(f"{'results' if option == '--json' else 'plot'} written to {path}")
    return True


def _finite(value):
    """JSON without NaN/Infinity (not valid JSON): non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _peers(args) -> dict:
    """{peer: module or None} for torch and onnxruntime as --compare asks: a peer named in
    the list must be importable (else exit 2 saying how to install it); with auto, a
    missing one is named on stderr with how to install it."""
    from fastconv._bench_models import INSTALL

    find = {"torch": _bench.torch_module, "onnxruntime": _bench.onnxruntime_module}
    if args.compare == "none":
        return {name: None for name in COMPARE_PEERS}
    wanted = COMPARE_PEERS if args.compare == "auto" else args.compare
    peers = {name: find[name]() if name in wanted else None for name in COMPARE_PEERS}
    for name in wanted:
        if peers[name] is None:
            message = (f"--compare {name} needs {PEER_NAMES[name]}, which is not importable "
                       f"here: {INSTALL[name]}")
            if args.compare != "auto":
                args.parser.error(message)
            print(f"note: {PEER_NAMES[name]} is not installed, so there is no {name} column "
                  f"(to add it: {INSTALL[name]})", file=sys.stderr)
    return peers


def _plot_module(args) -> Any:
    """fastconv._plot when --plot is given (None otherwise); exit status 2 when matplotlib
    is missing or the file's extension names no format it writes."""
    if not args.plot:
        return None
    try:
        from fastconv import _plot as plot
    except ImportError as exc:
        print(f"fastconv bench: --plot needs matplotlib, which is not importable here "
              f"({exc}): pip install 'fastconv[plot]' (or pip install matplotlib)",
              file=sys.stderr)
        raise SystemExit(2) from None
    problem = plot.check_path(args.plot)
    if problem:
        args.parser.error(problem)
    return plot


def cmd_bench(args) -> int:
    if args.onnx:
        return cmd_bench_onnx(args)
    import fastconv

    if args.models:
        return cmd_bench_models(args)
    if args.batch and len(args.batch) > 1:
        args.parser.error(f"--batch: the layer suite takes one batch size, but got "
                          f"{','.join(map(str, args.batch))} (several are for --models)")
    for option in ("train", "width", "image", "classes"):
        if getattr(args, option):
            args.parser.error(f"--{option} applies to --models only")
    peers_found = _peers(args)
    torch, ort = peers_found["torch"], peers_found["onnxruntime"]
    plot = _plot_module(args)  # checked before the run, not after minutes of measuring
    threads = args.threads or fastconv.get_num_threads()
    algorithms = args.algorithms or list(_algorithm_names())
    directions = _bench.DIRECTIONS if args.direction == "both" else (args.direction,)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    layers = _selected_layers(args)
    peers = (["numpy"] + (["torch"] if torch is not None else [])
             + (["onnxruntime"] if ort is not None else []))

    warning = _bench.blas_env_warning()
    if warning:
        print(warning, file=sys.stderr)
    print(_header(args, threads, torch, repeats, ort), flush=True)

    results = []
    progress = _Progress(len(layers) * len(directions), not args.no_progress)
    # the ceiling every row is read against (a smaller one for smoke runs with --max-hw)
    sgemm_size = 256 if args.max_hw else _bench.SGEMM_SIZE
    try:
        with _bench.thread_count(threads, torch):
            sgemm = _bench.sgemm_rate(sgemm_size)
            print(f"sgemm: {sgemm:.0f} GFLOP/s ({sgemm_size}^3 float32 through "
                  f"{_bench.blas_kernel()}, {threads} threads, measured now)", flush=True)
            for layer in layers:
                for direction in directions:
                    progress.start(f"{layer.name} {direction}")
                    results.append(_bench.bench_layer(
                        layer, direction, algorithms, repeats=repeats, torch=torch,
                        seed=args.seed, ort=ort))
                    progress.step()
    finally:
        progress.close()

    print()
    print(_bench.format_table(results, algorithms, peers, sgemm))
    print("\nauto's choices (autotuned: measured with set_autotune; rule: fastconv._algorithms):")
    print(_bench.format_choices(results))
    ratios = [r.vs_torch for r in results if r.vs_torch]
    geomean = _bench.geometric_mean(ratios)
    if torch is not None:
        text = f"{geomean:.2f}" if geomean else "-"
        print(f"\ngeometric mean of x vs torch (torch time / best fastconv time, > 1: fastconv "
              f"faster) over {len(ratios)} rows: {text}")
    ort_ratios = [r.vs_onnxruntime for r in results if r.vs_onnxruntime]
    geomean_ort = _bench.geometric_mean(ort_ratios)
    if ort is not None:
        text = f"{geomean_ort:.2f}" if geomean_ort else "-"
        print(f"geometric mean of x vs ort (ONNX Runtime time / best fastconv time, forward) "
              f"over {len(ort_ratios)} rows: {text}")
    failed = [f"{r.layer.name} {r.direction} {a}: {r.entries[a].message}"
              for r in results for a in r.failed]
    for line in failed:
        print(f"FAIL {line}", file=sys.stderr)

    if args.json:
        report = {"machine": {**_bench.machine_info(threads), "sgemm_gflops": sgemm,
                              "sgemm_size": sgemm_size},
                  "config": {"layers": [layer.name for layer in layers],
                             "algorithms": algorithms, "directions": list(directions),
                             "repeats": repeats, "quick": args.quick, "threads": threads,
                             "compare": [p for p in peers if p != "numpy"] or "none",
                             "onnxruntime": None if ort is None else ort.__version__},
                  "results": [r.as_dict(sgemm) for r in results],
                  "geomean_vs_torch": geomean,
                  "geomean_vs_onnxruntime": geomean_ort,
                  "failed": len(failed)}
        if not _written("--json", args.json, lambda: _dump_json(report, args.json)):
            return 1
    if plot is not None:
        title = (f"fastconv {fastconv.__version__}: GFLOP/s (median of {repeats}), {threads} "
                 f"threads, {'quick' if args.quick else 'full'} suite; {_bench.cpu_model()}")
        if not _written("--plot", args.plot,
                        lambda: plot.save(results, algorithms, peers, args.plot, title)):
            return 1
    return 1 if failed else 0


def cmd_bench_models(args) -> int:
    """fastconv bench --models: whole networks, fastconv against PyTorch and ONNX Runtime."""
    import fastconv
    from fastconv import _bench_models as bm

    for option in ("layers", "algorithms", "max_hw"):
        if getattr(args, option):
            args.parser.error(f"--{option.replace('_', '-')} applies to the layer suite, not "
                              f"to --models")
    peers = _peers(args)
    torch, ort = peers["torch"], peers["onnxruntime"]
    if ort is not None and torch is None:
        print("note: ONNX Runtime runs the networks' ONNX export, made by PyTorch: without "
              f"PyTorch there is no onnxruntime column (to add it: {bm.TORCH_INSTALL})",
              file=sys.stderr)
    plot = _plot_module(args)
    threads = args.threads or fastconv.get_num_threads()
    repeats = args.repeats or (QUICK_REPEATS if args.quick else MODEL_REPEATS)
    names, batches = args.models, args.batch or [1, 8]
    if args.quick:
        names, batches = [n for n in names if n in bm.QUICK] or list(bm.QUICK), [1]
    engines = ["fastconv"] + (["torch"] if torch is not None else []) + (
        ["onnxruntime"] if ort is not None and torch is not None else [])
    training = [n for n in names if n in bm.TRAIN_MODELS] if args.train else []
    size = dict(width=args.width, seed=args.seed, classes=args.classes)

    lines = [f"fastconv {fastconv.__version__} bench --models: {threads} threads, fp32, median "
             f"of {repeats} interleaved rounds ({', '.join(engines)} in turn, one call each)",
             f"CPU: {_bench.cpu_model()} [{' '.join(_bench.cpu_simd_flags()) or '?'}]",
             f"fastconv inference: {bm.inference_description()}"]
    if torch is not None:
        lines.append(f"PyTorch {torch.__version__}: eager, channels_last, inference_mode, "
                     f"{threads} threads")
    if "onnxruntime" in engines:
        lines.append(f"ONNX Runtime {ort.__version__}: CPU, ORT_ENABLE_ALL, {threads} intra-op "
                     f"threads, 1 inter-op; the PyTorch twin exported with torch.onnx "
                     f"(dynamo=False, opset 17)")
    images = sorted({(bm.MODELS[n].image if args.image is None else args.image)
                     for n in names})
    lines.append(f"random weights (BatchNorm statistics from one pass over random images); "
                 f"images {'/'.join(map(str, images))} px square (classifiers 224, unet 128)"
                 + (f"; training step at {args.image or bm.TRAIN_IMAGE} px" if training else ""))
    lines.append(f"check: max|engine - torch| / max|torch| <= {bm.INFERENCE_TOLERANCE:g} "
                 f"(inference); training: the logits and all parameter gradients (relative to "
                 f"the largest) vs PyTorch in float64 <= {bm.TRAIN_TOLERANCE:g}")
    lines.append("x vs peer = peer time / fastconv time (> 1: fastconv faster)")
    print("\n".join(lines), flush=True)

    results: list = []
    notes: list[str] = []
    progress = _Progress(len(names) + len(training), not args.no_progress)
    try:
        with _bench.thread_count(threads, torch):
            for name in names:
                progress.start(f"{name} inference")
                results += bm.bench_inference(bm.MODELS[name], batches, engines, threads,
                                              repeats, image=args.image, notes=notes, **size)
                progress.step()
            for name in training:
                progress.start(f"{name} training step")
                results += bm.bench_train(bm.MODELS[name], batches, engines, repeats,
                                          image=args.image or bm.TRAIN_IMAGE, **size)
                progress.step()
    finally:
        progress.close()

    print()
    print(bm.format_table(results, engines))
    summary = bm.summary(results)
    if summary:
        print()
        print("\n".join(summary))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    failed = [f"{r.model} batch {r.batch} {r.mode}: {', '.join(r.failed)}"
              for r in results if r.failed]
    for line in failed:
        print(f"FAIL {line}", file=sys.stderr)

    if args.json:
        machine = {**_bench.machine_info(threads),
                   "onnxruntime": None if ort is None else ort.__version__}
        report = {"machine": machine,
                  "config": {"models": names, "batches": batches, "repeats": repeats,
                             "threads": threads, "engines": engines, "train": training,
                             "fastconv_inference": bm.inference_description(),
                             "width": args.width, "image": args.image},
                  "results": [r.as_dict() for r in results],
                  "summary": summary, "notes": notes, "failed": len(failed)}
        if not _written("--json", args.json, lambda: _dump_json(report, args.json)):
            return 1
    if plot is not None:
        title = (f"fastconv {fastconv.__version__}: images/s (median of {repeats}), {threads} "
                 f"threads; {_bench.cpu_model()}")
        if not _written("--plot", args.plot,
                        lambda: plot.save_models(results, engines, args.plot, title)):
            return 1
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------
# fastconv filter

def _filter_kernels(args) -> list:
    """The kernels to apply: one, or the x and y kernels of a gradient magnitude. Options
    that the kernel does not take, and values it refuses (an even Gaussian size), are
    argument errors (exit 2)."""
    from fastconv import filters

    given = {"--axis": args.axis, "--sigma": args.sigma, "--size": args.size}
    takes = KERNEL_OPTIONS[args.kernel]
    stray = [option for option, value in given.items() if value is not None
             and option not in takes]
    if stray:
        what = f"only {' and '.join(takes)}" if takes else "no options"
        verb = "does" if len(stray) == 1 else "do"
        args.parser.error(f"{' and '.join(stray)} {verb} not apply to --kernel {args.kernel} "
                          f"(it takes {what})")
    try:
        if args.kernel in ("sobel", "prewitt"):
            make = getattr(filters, args.kernel)
            return [make(axis) for axis in ([args.axis] if args.axis else ["x", "y"])]
        if args.kernel == "gaussian":
            return [filters.gaussian(1.0 if args.sigma is None else args.sigma, args.size)]
        if args.kernel == "box":
            return [filters.box(3 if args.size is None else args.size)]
        return [getattr(filters, args.kernel)()]
    except ValueError as exc:
        args.parser.error(str(exc))  # exits
        raise

def _read_image(Image, path: str):
    """(pixels, alpha, mode): pixels (H, W) or (H, W, 3) as numbers 0-255 (uint8, or float64
    for 16-bit and float images), alpha (H, W) uint8 or None, the mode written ("L" or
    "RGB"). Raises OSError when the file cannot be read or decoded."""
    with Image.open(path) as img:
        img.load()  # decode now, so truncated files fail here
        if img.mode.startswith("I;16"):
            return np.asarray(img, np.float64) / 257.0, None, "L"
        if img.mode in ("I", "F"):
            return np.asarray(img, np.float64), None, "L"
        if img.mode not in ("L", "LA", "RGB", "RGBA"):
            if img.mode == "1":
                img = img.convert("L")
            else:  # palette, CMYK, YCbCr, ...
                img = img.convert("RGBA" if img.has_transparency_data else "RGB")
        pixels = np.asarray(img)
    if img.mode in ("LA", "RGBA"):
        colour = pixels[..., :-1]
        return (colour[..., 0] if img.mode == "LA" else colour), pixels[..., -1], img.mode[:-1]
    return pixels, None, img.mode


def _to_8bit(response: np.ndarray, edges: bool) -> np.ndarray:
    """The documented scaling to 0-255: edge responses by |r| * 255 / max |r|, the others
    rounded and clipped."""
    r = np.asarray(response, np.float64)
    if edges:
        r = np.abs(r)
        peak = r.max() if r.size else 0.0
        if peak == 0:
            return np.zeros(r.shape, np.uint8)
        return np.rint(255.0 * r / peak).astype(np.uint8)
    return np.clip(np.rint(r), 0, 255).astype(np.uint8)


def cmd_filter(args) -> int:
    kernels = _filter_kernels(args)  # argument errors before anything else
    try:
        from PIL import Image
    except ImportError:
        print("fastconv filter: reading and writing images needs Pillow, which is not "
              "installed: pip install 'fastconv[image]' (or pip install pillow)",
              file=sys.stderr)
        return 2
    extension = os.path.splitext(args.output)[1].lower()
    out_format = Image.registered_extensions().get(extension)
    if out_format is None:
        args.parser.error(f"cannot tell the image format of OUT {args.output!r} from its "
                          f"extension {extension!r}; use .png, .jpg, .bmp, .tif, ...")
    try:
        pixels, alpha, mode = _read_image(Image, args.input)
    except (OSError, Image.DecompressionBombError) as exc:
        print(f"fastconv filter: cannot read image {args.input!r}: {exc}", file=sys.stderr)
        return 1

    from fastconv.filters import filter2d

    responses = [filter2d(pixels, k, padding_mode=args.mode, flip=args.flip) for k in kernels]
    response = responses[0] if len(responses) == 1 else np.hypot(*responses)
    out = _to_8bit(response, args.kernel in EDGE_KERNELS)
    if alpha is not None and out_format != "JPEG":  # JPEG has no alpha channel
        out = np.dstack([out, alpha])
        mode += "A"
    try:
        Image.fromarray(out).save(args.output, format=out_format)
    except (OSError, ValueError, KeyError) as exc:  # Pillow: OSError, or a mode it cannot write
        print(f"fastconv filter: cannot write {args.output!r}: {exc}", file=sys.stderr)
        return 1
    what = args.kernel + (f" {args.axis}" if args.axis else
                          " gradient magnitude" if len(kernels) == 2 else "")
    print(f"{args.output}: {what} of {args.input} ({out.shape[1]}x{out.shape[0]} {mode})")
    return 0


# ----------------------------------------------------------------------------------------------
# ONNX models: fastconv info FILE.onnx, fastconv bench --onnx FILE.onnx

def _add_onnx_arguments(bench, info) -> None:
    bench.add_argument("--onnx", metavar="FILE",
                       help="time the ONNX model FILE in fastconv against ONNX Runtime "
                            "(outputs checked, ms per batch, ratio) instead of the layer suite")
    bench.add_argument("--shape", type=_shape, metavar="N,C,H,W",
                       help="the input shape for --onnx (default: the model's, with 1 for a "
                            "dynamic batch axis)")
    info.add_argument("model", nargs="?", metavar="FILE.onnx",
                      help="list the operators of this ONNX model, what fastconv computes "
                           "each with and what it lacks")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape must be positive integers separated by "
                                         f"commas, like 1,3,224,224, but got {text!r}")
    return shape


def _onnx_proto(path: str):
    try:
        import onnx
    except ImportError:
        print("fastconv: ONNX models need the onnx package: pip install 'fastconv[onnx]'",
              file=sys.stderr)
        return None
    try:
        return onnx.load(path)
    except Exception as exc:
        print(f"fastconv: cannot read {path!r} as an ONNX model: {exc}", file=sys.stderr)
        return None


def cmd_info_onnx(args) -> int:
    from collections import Counter

    from fastconv import onnx as fonnx

    proto = _onnx_proto(args.model)
    if proto is None:
        return 2
    counts = Counter(node.op_type for node in proto.graph.node)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    print(f"{args.model}: {len(proto.graph.node)} nodes, opset {opsets}")
    width = max(map(len, counts), default=0)
    for op, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        maps = fonnx.SUPPORTED.get(op, "only when constant (folded)")
        print(f"  {op:<{width}} {count:>5}  -> {maps}")
    try:
        model = fonnx.load(proto)
    except (ValueError, TypeError) as exc:
        print(f"fastconv cannot load it: {exc}")
        return 1
    print(f"fastconv loads it: {len(model.nodes)} layers, "
          f"{sum(v.size for _, v, _ in model.parameters())} parameters")
    return 0


def cmd_bench_onnx(args) -> int:
    import fastconv
    from fastconv import _bench_models
    from fastconv import onnx as fonnx
    from fastconv._threads import get_num_threads

    proto = _onnx_proto(args.onnx)
    if proto is None:
        return 2
    try:
        import onnxruntime as ort
    except ImportError:
        print("fastconv bench --onnx: needs onnxruntime (pip install onnxruntime)",
              file=sys.stderr)
        return 2
    try:  # its inference form, as `fastconv bench --models` times it
        model = fastconv.optimize_for_inference(fonnx.load(proto))
    except (ValueError, TypeError) as exc:
        print(f"fastconv bench --onnx: {exc}", file=sys.stderr)
        return 1
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        print(f"fastconv bench --onnx: the model has {len(inputs)} inputs; one is supported",
              file=sys.stderr)
        return 2
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    shape = args.shape or tuple(1 if (n is None and i == 0) else n for i, n in enumerate(dims))
    if None in shape or len(shape) != len(dims):
        print(f"fastconv bench --onnx: the input's shape is {dims}; give --shape",
              file=sys.stderr)
        return 2
    threads = get_num_threads()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(proto.SerializeToString(), options)
    double = inputs[0].type.tensor_type.elem_type == 11  # onnx.TensorProto.DOUBLE
    dtype = np.float64 if double else np.float32
    x = np.random.default_rng(args.seed).standard_normal(shape).astype(dtype)
    expected = session.run(None, {inputs[0].name: x})
    got = model(x)
    got = got if isinstance(got, tuple) else (got,)
    error = max(float(np.abs(g - e).max() / max(np.abs(e).max(), 1e-30))
                for g, e in zip(got, expected))
    repeats = args.repeats or DEFAULT_REPEATS
    runs = {"fastconv": lambda: model(x),
            "onnxruntime": lambda: session.run(None, {inputs[0].name: x})}
    for run in runs.values():  # (fastconv's second and later calls reuse its first's layout)
        run()
    # as `fastconv bench --models` times them: rounds of one call each, each once the process
    # is idle
    times = _bench_models.timed_rounds(runs, repeats)
    ours, theirs = (1000 * float(np.median(times[name])) for name in runs)
    ok = error <= 1e-4
    print(f"{args.onnx}: input {tuple(shape)}, {threads} threads, {repeats} rounds; fastconv: "
          f"fastconv.optimize_for_inference(fastconv.onnx.load(file))")
    print(f"  outputs: {'ok' if ok else 'FAIL'} (max abs difference / max abs output "
          f"{error:.1e})")
    print(f"  fastconv {ours:.2f} ms, onnxruntime {theirs:.2f} ms, ratio (onnxruntime / "
          f"fastconv) {theirs / ours:.2f}x")
    return 0 if ok else 1
