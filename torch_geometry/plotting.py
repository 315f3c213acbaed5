"""Plots of a geometry history (no display needed: matplotlib's Agg backend)."""
import math
import os
from typing import List, Optional, Sequence


_BINARY = ("loo_error", "isolated")


def plot_history(history: List[dict], path: str, metrics: Optional[Sequence[str]] = None,
                 title: Optional[str] = None) -> str:
    """Draws :func:`draw_history` and saves it as a PNG at ``path``. Returns ``path``."""
    fig = draw_history(history, metrics, title)     # selects the Agg backend first
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_history(history: List[dict], metrics: Optional[Sequence[str]] = None,
                 title: Optional[str] = None):
    """A matplotlib Figure with one panel per metric, one line per layer (mean over probe
    nodes, with the interquartile band), epochs on x.

    Each layer keeps one colour in every panel (a layer that lacks a metric, e.g. the first
    layer's ``layer_overlap``, leaves its colour unused there), and the legend lists every
    layer. Unknown ``metrics`` names raise a ``ValueError`` listing the known ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("the history is empty: nothing to plot (call on_epoch_end first)")
    known = []
    for row in history:
        if row["metric"] not in known:
            known.append(row["metric"])
    if metrics is None:
        metrics = known
    else:
        metrics = list(metrics)
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; the history has {known}")
        if not metrics:
            raise ValueError(f"no metrics to plot; the history has {known}")
    layers = []
    for row in history:
        if row["layer"] not in layers:
            layers.append(row["layer"])
    colour = {layer: f"C{i % 10}" for i, layer in enumerate(layers)}
    epochs = sorted({r["epoch"] for r in history})
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for layer in layers:
            pts = sorted((r["epoch"], r["mean"], r["q25"], r["q75"]) for r in history
                         if r["metric"] == metric and r["layer"] == layer and r["mean"] is not None)
            if not pts:
                continue
            ep = [p[0] for p in pts]
            ax.plot(ep, [p[1] for p in pts], marker="o", ms=3, color=colour[layer], label=layer)
            lo = [p[2] if p[2] is not None else p[1] for p in pts]
            hi = [p[3] if p[3] is not None else p[1] for p in pts]
            # Per-node 0/1 metrics (loo_error, isolated) have quartiles at 0 or 1: a band
            # would say nothing, the mean (a rate) is the information.
            if metric not in _BINARY:
                ax.fill_between(ep, lo, hi, alpha=0.15, color=colour[layer])
        ax.set_title(metric + (" (rate)" if metric in _BINARY else ""))
        ax.set_xlabel("epoch")
        if len(epochs) <= 10:
            # Few epochs (one, after a first tracked epoch): a tick at each, with room around.
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colour[layer], marker="o", ms=3) for layer in layers]
    fig.legend(handles, layers, loc="lower center", ncol=min(len(layers), 6), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97 if title else 1))
    return fig
