"""Matplotlib figures for the run report, rendered with the Agg canvas straight to base64 PNG data URIs.

No pyplot: figures are plain `Figure` objects on a `FigureCanvasAgg`, so rendering never touches a GUI
backend or pyplot's global figure registry (safe inside Ray workers, threads and headless machines).
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

_PLAIN = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}")

COLORS = {"ok": "#2e7d32", "dropped": "#c62828", "failed": "#757575"}
LABELS = {"ok": "kept", "dropped": "dropped", "failed": "failed"}
REMAIN = "#1565c0"


def _figure(w: float, h: float, left: float = 0.75, bottom: float = 0.5, top: float = 0.35,
            right: float = 0.2) -> Figure:
    """A figure with fixed margins in inches (constrained layout would double the render time)."""
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)
    return fig


def _label_inches(labels: list[str], fontsize: float = 10) -> float:
    """Rough width of the longest tick label, for the left margin of horizontal bar charts."""
    longest = max((len(s) for s in labels), default=5)
    return min(3.5, 0.2 + longest * fontsize * 0.0085)


def to_data_uri(fig: Figure, dpi: int = 96) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(n: float) -> str:
    return f"{int(n):,}"


def funnel(steps: list[dict]) -> str:
    """Horizontal funnel: one bar per step (input, after each stage) with the rows the stage removed stacked on."""
    n = len(steps)
    fig = _figure(8.5, 0.42 * n + 1.3, left=_label_inches([s["label"] for s in steps]), top=0.4)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    remaining = np.array([s["remaining"] for s in steps], float)
    dropped = np.array([s["dropped"] for s in steps], float)
    failed = np.array([s["failed"] for s in steps], float)
    ax.barh(y, remaining, color=REMAIN, label="remaining")
    ax.barh(y, dropped, left=remaining, color=COLORS["dropped"], label="dropped here")
    ax.barh(y, failed, left=remaining + dropped, color=COLORS["failed"], label="failed here")
    ax.set_yticks(y, [s["label"] for s in steps])
    top = max(float((remaining + dropped + failed).max()), 1.0)
    for yi, r, end in zip(y, remaining, remaining + dropped + failed):
        if r >= top * 0.15:  # inside the bar, at its end
            ax.text(r - top * 0.006, yi, _fmt(r), va="center", ha="right", fontsize=8, color="white")
        else:  # past the stacked segments
            ax.text(end + top * 0.006, yi, _fmt(r), va="center", ha="left", fontsize=8, color="black")
    ax.set_xlim(0, top * 1.02)
    ax.set_xlabel("rows")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)


def reasons(rows: list[tuple[str, str, int]]) -> str:
    """Horizontal bars of the most common drop/failure reasons, coloured by outcome."""
    n = len(rows)
    fig = _figure(8.5, 0.3 * n + 1.0, left=_label_inches([r[1] for r in rows], 8), top=0.15)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    ax.barh(y, [r[2] for r in rows], color=[COLORS.get(r[0], "#999") for r in rows])
    ax.set_yticks(y, [r[1] for r in rows], fontsize=8)
    if rows and max(r[2] for r in rows) > 100 * max(1, min(r[2] for r in rows)):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(_PLAIN)
    ax.set_xlabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)


def histogram(edges: np.ndarray, series: dict[str, np.ndarray], title: str, xlabel: str,
              normalise: bool = True, log10_edges: bool = False) -> str:
    """Overlaid step histograms, one per outcome; each normalised to its own total so shapes compare.

    log10_edges: the edges are log10 of the quantity; the axis is drawn in the quantity on a log scale."""
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    if log10_edges:
        edges = np.power(10.0, edges)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(_PLAIN if edges[-1] / edges[0] < 20 else NullFormatter())
    for status, counts in series.items():
        total = counts.sum()
        if total <= 0:
            continue
        vals = counts / total if normalise else counts
        color = COLORS.get(status, "#555")
        ax.stairs(vals, edges, fill=True, alpha=0.25, color=color)
        ax.stairs(vals, edges, color=color, label=f"{LABELS.get(status, status)} (n={_fmt(total)})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of group" if normalise else "rows")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)


def scatter_sizes(points: dict[str, tuple[np.ndarray, np.ndarray, int]]) -> str:
    """Original width x height, log-log, one colour per outcome; points are a sample of each group."""
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    for status, (w, h, total) in points.items():
        if len(w) == 0:
            continue
        label = f"{LABELS.get(status, status)} ({_fmt(len(w))}" + (f" of {_fmt(total)})" if total > len(w) else ")")
        big = len(w) > 2000
        ax.scatter(w, h, s=4 if big else 14, alpha=0.3 if big else 0.6, color=COLORS.get(status, "#555"),
                   label=label, linewidths=0, rasterized=True)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = axis.get_view_interval()
        axis.set_major_formatter(_PLAIN)
        axis.set_minor_formatter(_PLAIN if hi / max(lo, 1e-9) < 20 else NullFormatter())
    ax.set_xlabel("original width (px)")
    ax.set_ylabel("original height (px)")
    ax.set_title("original image size", fontsize=10)
    ax.legend(fontsize=8, frameon=False, markerscale=3)
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)


def size_density(x_edges: np.ndarray, y_edges: np.ndarray, counts: dict[str, np.ndarray]) -> str:
    """Original width x height as a 2-D histogram (log-log axes, log colour), one panel per outcome.

    For runs too big for a scatter: every row counts and nothing overplots. Each panel shows its group's
    share of rows per bin on one shared log colour scale, so shapes compare whatever the group sizes."""
    counts = {s: c for s, c in counts.items() if c.sum() > 0}
    n = max(1, len(counts))
    fig = _figure(3.2 * n + 1.0, 3.6, left=0.75, right=0.9, top=0.4)
    share = {s: c / c.sum() for s, c in counts.items()}  # each group's own distribution, as in the histograms
    lo = min([float(v[v > 0].min()) for v in share.values()] or [1e-6])
    hi = max([float(v.max()) for v in share.values()] or [1.0])
    norm = LogNorm(vmin=lo, vmax=max(hi, lo * 10))
    axes = fig.subplots(1, n, sharex=True, sharey=True, squeeze=False)[0]
    mesh = None
    for ax, (status, c) in zip(axes, counts.items()):
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_equal(share[status], 0), norm=norm, cmap="viridis",
                             rasterized=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{LABELS.get(status, status)} (n={_fmt(c.sum())})", fontsize=10,
                     color=COLORS.get(status, "#333"))
        ax.set_xlabel("original width (px)")
        for axis, edges in ((ax.xaxis, x_edges), (ax.yaxis, y_edges)):
            axis.set_major_formatter(_PLAIN)
            if edges[-1] / edges[0] < 20:
                axis.set_minor_formatter(_PLAIN)
            else:  # unlabelled minor ticks on log axes cost most of the render time
                axis.set_minor_locator(NullLocator())
        ax.set_facecolor("#f5f5f5")
    axes[0].set_ylabel("original height (px)")
    if mesh is not None:
        cax = fig.add_axes([1 - 0.75 / fig.get_figwidth(), 0.5 / 3.6, 0.12 / fig.get_figwidth(), 1 - 0.9 / 3.6])
        fig.colorbar(mesh, cax=cax, label="share of group per bin")
        cax.yaxis.set_minor_locator(NullLocator())
    return to_data_uri(fig)


def cluster_sizes(sizes: list[tuple[int, int]], title: str) -> str:
    """Number of clusters per cluster size (log y); log-spaced bins when sizes spread wide."""
    fig = _figure(6.0, 3.0)
    ax = fig.add_subplot()
    s = np.array([a for a, _ in sizes], float)
    c = np.array([b for _, b in sizes], float)
    biggest = int(s.max()) if len(s) else 1
    if biggest <= 40:
        ax.bar(s, c, width=0.8, color=REMAIN)
        ax.set_xlim(s.min() - 0.6, biggest + 0.6)
        if len(s) <= 12:  # one tick per size present (a single size otherwise gets 1.5, 1.65, ... ticks)
            ax.set_xticks(s, [str(int(v)) for v in s])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        edges = np.unique(np.round(np.logspace(0, math.log10(biggest + 1), 30)))
        edges = np.append(edges, edges[-1] + 1)
        counts, edges = np.histogram(s, bins=edges, weights=c)
        ax.stairs(counts, edges, fill=True, color=REMAIN)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
    if len(c) and c.max() > 50 * max(1.0, c.min()):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_formatter(_PLAIN)
    ax.set_xlabel("cluster size (rows)")
    ax.set_ylabel("clusters")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return to_data_uri(fig)
