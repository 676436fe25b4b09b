"""`fastconv bench --plot FILE`: GFLOP/s per layer as grouped bars, one panel per direction
(--models: images/s per network and batch size, one panel per mode).

Needs matplotlib (the `plot` extra), imported by the CLI only when --plot is given. Uses
matplotlib's object-oriented API (a Figure saved directly), never pyplot, so it neither
needs a display nor changes the user's backend.
"""
from __future__ import annotations

from matplotlib.figure import Figure

# fastconv's algorithms in blues and greens, the peers in their own colours
ALGORITHM_COLOURS = ("#1f4e9c", "#3b8fd9", "#7cc3ef", "#2a9d8f", "#8ab17d", "#5e548e")
# PyTorch's orange-red, ONNX Runtime's grey-blue
PEER_COLOURS = {"numpy": "#8c8c8c", "torch": "#ee4c2c", "onnxruntime": "#4a6b8a"}
# value labels on the bars while there are few enough to read
MAX_LABELLED_BARS = 40


def supported_formats() -> list[str]:
    """File extensions (without the dot) that savefig can write."""
    return sorted(Figure().canvas.get_supported_filetypes())


def check_path(path: str) -> str | None:
    """None if the file's extension is a format matplotlib writes, else what is wrong."""
    dot = path.rfind(".")
    extension = path[dot + 1:].lower() if dot > max(path.rfind("/"), path.rfind("\\")) else ""
    if extension in supported_formats():
        return None
    return (f"--plot {path!r}: cannot tell the image format from the extension "
            f"{'.' + extension if extension else '(none)'}; use one of "
            f"{', '.join('.' + e for e in supported_formats())}")


def _colours(algorithms, peers) -> dict[str, str]:
    colours = {a: ALGORITHM_COLOURS[i % len(ALGORITHM_COLOURS)]
               for i, a in enumerate(algorithms)}
    colours.update({p: PEER_COLOURS.get(p, "#444444") for p in peers})
    return colours


def _fail(ax, x: float) -> None:
    """"FAIL" upright at x where a bar would be: a wrong result has no speed worth drawing."""
    ax.text(x, 0, "FAIL", rotation=90, ha="center", va="bottom", color="#c00000", fontsize=8,
            fontweight="bold")


def _style(ax, ylabel: str, labels: list[str], bar_labels: bool) -> None:
    """A panel's axes: one tick per group of bars, room above them for the bars' labels."""
    ax.set_ylabel(ylabel)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 1 else 0,
                  ha="right" if len(labels) > 1 else "center", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.margins(y=0.2 if bar_labels else 0.05)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _finish(fig: Figure, handles: dict, names, title: str) -> Figure:
    """One legend for all panels (in the order of `names`) and the title."""
    if handles:
        order = [n for n in names if n in handles]
        fig.legend([handles[n] for n in order], order, loc="outside lower center",
                   ncols=len(order), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def figure(results, algorithms, peers, title: str = "") -> Figure:
    """The bar chart of a bench run (a list of _bench.Result): one panel per direction (in
    the order they appear), a group of bars per layer, a bar per implementation that ran
    and passed its check; "FAIL" is written where an implementation disagreed with the
    reference, nothing is drawn where one does not apply (n/a, or NumPy backward)."""
    directions = list(dict.fromkeys(r.direction for r in results))
    names = list(algorithms) + list(peers)
    colours = _colours(algorithms, peers)
    most_layers = max((sum(r.direction == d for r in results) for d in directions), default=1)
    width = max(6.4, 1.6 + most_layers * (0.2 * len(names) + 0.35))
    fig = Figure(figsize=(width, 1.2 + 3.3 * max(1, len(directions))), layout="constrained")
    axes = fig.subplots(max(1, len(directions)), 1, squeeze=False)[:, 0]
    bar = 0.8 / max(1, len(names))
    handles: dict = {}
    for ax, direction in zip(axes, directions):
        rows = [r for r in results if r.direction == direction]
        label_bars = len(rows) * len(names) <= MAX_LABELLED_BARS
        for j, name in enumerate(names):
            offset = (j - (len(names) - 1) / 2) * bar
            xs, heights = [], []
            for i, r in enumerate(rows):
                value = r.gflops(name)
                entry = r.entries.get(name)
                if value is not None:
                    xs.append(i + offset)
                    heights.append(value)
                elif entry is not None and entry.status == "FAIL":
                    _fail(ax, i + offset)
            if not xs:
                continue
            bars = ax.bar(xs, heights, bar, color=colours[name], label=name)
            handles.setdefault(name, bars)
            if label_bars:  # upright when the groups are crowded, so labels never overlap
                ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2,
                             rotation=90 if len(rows) * len(names) > 8 else 0)
        what = "input + weight gradients" if direction == "backward" else "forward"
        ax.set_title(f"{direction} ({what})" if direction != "forward" else direction,
                     fontsize=10)
        _style(ax, "GFLOP/s", [r.layer.name for r in rows], label_bars)
    return _finish(fig, handles, names, title)


def save(results, algorithms, peers, path: str, title: str = "") -> None:
    """Draw figure(...) into path (format from the extension). Raises OSError if the file
    cannot be written."""
    figure(results, algorithms, peers, title).savefig(path, dpi=120)


ENGINE_COLOURS = {"fastconv": ALGORITHM_COLOURS[0], **PEER_COLOURS}


def models_figure(results, engines, title: str = "") -> Figure:
    """The bar chart of `fastconv bench --models` (a list of _bench_models.Result): one
    panel per mode (inference, train), a group of bars per network and batch size, a bar of
    images/s per engine; "FAIL" is written where an engine disagreed with PyTorch."""
    modes = list(dict.fromkeys(r.mode for r in results))
    most = max((sum(r.mode == m for r in results) for m in modes), default=1)
    fig = Figure(figsize=(max(6.4, 1.6 + most * (0.25 * len(engines) + 0.4)),
                          1.2 + 3.3 * max(1, len(modes))), layout="constrained")
    axes = fig.subplots(max(1, len(modes)), 1, squeeze=False)[:, 0]
    bar = 0.8 / max(1, len(engines))
    handles: dict = {}
    for ax, mode in zip(axes, modes):
        rows = [r for r in results if r.mode == mode]
        for j, engine in enumerate(engines):
            offset = (j - (len(engines) - 1) / 2) * bar
            drawn = [i for i, r in enumerate(rows)
                     if r.images_per_s(engine) and engine not in r.failed]
            xs = [i + offset for i in drawn]
            heights = [rows[i].images_per_s(engine) for i in drawn]
            for i, r in enumerate(rows):
                if engine in r.failed:  # a wrong result has no speed worth drawing
                    _fail(ax, i + offset)
            if xs:
                bars = ax.bar(xs, heights, bar, color=ENGINE_COLOURS.get(engine, "#444444"),
                              label=engine)
                handles.setdefault(engine, bars)
                ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2,
                             rotation=90 if len(rows) * len(engines) > 8 else 0)
        what = "a training step" if mode == "train" else "inference"
        ax.set_title(f"{what} ({rows[0].image} px)" if len({r.image for r in rows}) == 1
                     else what, fontsize=10)
        _style(ax, "images/s", [f"{r.model} b{r.batch}" for r in rows], True)
    return _finish(fig, handles, engines, title)


def save_models(results, engines, path: str, title: str = "") -> None:
    """Draw models_figure(...) into path (format from the extension). Raises OSError if the
    file cannot be written."""
    models_figure(results, engines, title).savefig(path, dpi=120)
