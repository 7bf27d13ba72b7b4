"""The report's figures, as PNG bytes: each metric against bitrate (one figure per metric, and all of them in one
overview), per-codebook utilization, code usage (histogram and rank-frequency curve)."""
from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from .metrics.table import describe, label

# Headless: the report is written on servers and in CI, never shown on a screen.
import matplotlib  # noqa: E402
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

TICKS_KBPS = [0.5, 0.75, 1, 1.5, 2, 3, 4.5, 6, 8, 12, 16, 24, 32, 64]
MODEL_TITLE_SIZE = "medium"  # per-model plots are titled with the model's name, which runs long


def _png(figure, layout: bool = True) -> bytes:
    buffer = io.BytesIO()
    if layout:
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def bitrate(result: dict) -> float | None:
    """Where a system sits on the bitrate axis: what it measurably spent, else its nominal rate."""
    return result.get("measured_kbps") or result.get("kbps")


def series(results: list[dict], metric: str) -> tuple[dict[str, list[tuple[float, float, float]]], list[dict]]:
    """The lines of a metric's plot: system name -> (bitrate, mean, ci95) points, and the results without a
    bitrate (the original) drawn as a level, which only metrics that do not compare with the reference audio get
    (the MOS predictors; WER against a text, where the original's is the ceiling): one that does scores the
    original ideal by definition (SI-SDR near infinite), which would only squash the axis."""
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    levels = []
    for result in results:
        value = result["metrics"].get(metric)
        if value is None:
            continue
        if bitrate(result) is not None:
            lines[result["system"]["name"]].append((bitrate(result), value["mean"], value["ci95"]))
        elif describe(metric, [result])["compared_with"] in ("nothing", "text") and np.isfinite(value["mean"]):
            levels.append(result)
    return dict(lines), levels


def has_points(results: list[dict], metric: str) -> bool:
    lines, levels = series(results, metric)
    return bool(lines or levels)


def colours(results: list[dict]) -> dict[str, str]:
    """One colour per system (by name, so two same-named systems told apart by the report get two), the same in
    every plot whichever metrics it has."""
    names = sorted({r["system"]["name"] for r in results if bitrate(r) is not None})
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def metric_against_bitrate(results: list[dict], metric: str) -> bytes:
    """One line per model or baseline codec (mean with its 95 % CI); the original as a dashed level."""
    figure, axes = plt.subplots(figsize=(5, 3.4))
    _draw(axes, results, metric, colours(results))
    _legend(axes, fontsize=8)
    return _png(figure)


def overview(results: list[dict], metrics: list[str]) -> bytes:
    """Every metric against bitrate, one small panel each, for every system: the quality-bitrate curves at a
    glance, in the colours of the single plots; one legend for all."""
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.6 * rows + 0.5), squeeze=False)
    colour = colours(results)
    for axes, metric in zip(grid.flat, metrics):
        _draw(axes, results, metric, colour, fontsize=9)
    for axes in list(grid.flat)[len(metrics):]:
        axes.set_visible(False)
    handles = {}
    for axes in grid.flat:
        handles.update(zip(*reversed(axes.get_legend_handles_labels())))
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)), fontsize=8)
    figure.tight_layout(rect=(0, 0.5 / (2.6 * rows + 0.5) + 0.02, 1, 1))
    return _png(figure, layout=False)


def _draw(axes, results: list[dict], metric: str, colour: dict[str, str], fontsize: float | None = None) -> None:
    lines, levels = series(results, metric)
    for result in levels:
        axes.axhline(result["metrics"][metric]["mean"], color="gray", linestyle="--", label=result["system"]["name"])
    for name, points in sorted(lines.items()):
        x, y, error = zip(*sorted(points))
        axes.errorbar(x, y, yerr=np.nan_to_num(error), marker="o", capsize=3, label=name, color=colour[name])
    if lines:
        _bitrate_axis(axes)
        if fontsize:
            axes.set_xlabel("kbps", fontsize=fontsize)
    axes.set_title(label(describe(metric, results)), fontsize=fontsize)
    axes.grid(alpha=0.3, which="both")


def _legend(axes, **options) -> None:
    """A legend only where something carries a label (matplotlib warns about an empty one)."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(**options)


def _bitrate_axis(axes) -> None:
    """Log scale (codecs span 0.5 to 24 kbps) with plain-number ticks at the usual codec bitrates."""
    axes.set_xscale("log")
    low, high = axes.get_xlim()
    axes.set_xticks([t for t in TICKS_KBPS if low <= t <= high] or TICKS_KBPS[:1])
    axes.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("bitrate (kbps, measured)")


def codebook_utilization(label: str, per_codebook: list[dict]) -> bytes:
    """Share of codes used per codebook, with the perplexity written on each bar."""
    figure, axes = plt.subplots(figsize=(5, 3))
    index = [s["index"] + 1 for s in per_codebook]
    bars = axes.bar(index, [100 * s["utilization"] for s in per_codebook], color="tab:blue")
    for bar, stats in zip(bars, per_codebook):
        axes.annotate(f"ppl {stats['perplexity']:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=7)
    # Zoomed to the bars when all are low: a collapsed codebook's 1 % must still be readable.
    axes.set_ylim(0, min(110, max(5, 130 * max((s["utilization"] for s in per_codebook), default=0))))
    axes.set_xticks(index)
    axes.set_xlabel("codebook")
    axes.set_ylabel("codes used (%)")
    axes.set_title(f"{label}: utilization", fontsize=MODEL_TITLE_SIZE)
    return _png(figure)


def code_histogram(label: str, counts: list[np.ndarray]) -> bytes:
    """Histogram of code-usage counts, per codebook: how many codes were used how many times (log-spaced bins);
    the codes never used are counted in the legend. A healthy codebook is one narrow hump; a long tail to the
    right is a few codes doing most of the work."""
    figure, axes = plt.subplots(figsize=(5, 3))
    most = max((int(c.max()) for c in counts if c.size), default=0)
    bins = np.geomspace(1, most + 1, 25) if most else np.array([1.0, 2.0])
    for i, c in enumerate(counts):
        axes.hist(c[c > 0], bins=bins, histtype="step", linewidth=1.2,
                  label=f"codebook {i + 1} ({int((c == 0).sum())} of {len(c)} unused)")
    axes.set_xscale("log")
    axes.set_xlabel("times a code was used")
    axes.set_ylabel("number of codes")
    axes.set_title(f"{label}: code usage histogram", fontsize=MODEL_TITLE_SIZE)
    _legend(axes, fontsize=7)
    return _png(figure)


def code_rank_frequency(label: str, counts: list[np.ndarray]) -> bytes:
    """Each codebook's code frequencies sorted from most to least used, against the uniform 1/K: a flat curve
    at 1/K is a perfectly used codebook, a cliff shows dead codes, a steep head shows a few codes doing the work."""
    figure, axes = plt.subplots(figsize=(5, 3))
    for i, c in enumerate(counts):
        frequency = np.sort(c)[::-1] / max(c.sum(), 1)
        axes.step(np.arange(1, len(c) + 1), np.maximum(frequency, 1e-9), where="post", label=f"codebook {i + 1}",
                  linewidth=1)
    if counts:
        axes.axhline(1 / len(counts[0]), color="gray", linestyle=":", label="uniform 1/K")
    axes.set_yscale("log")
    if counts and len(counts[0]) > 64:
        axes.set_xscale("log")
    axes.set_ylim(bottom=max(1e-7, 0.1 / max(sum(c.sum() for c in counts), 1)))
    axes.set_xlabel("code rank (most used first)")
    axes.set_ylabel("frequency")
    axes.set_title(f"{label}: code frequency by rank", fontsize=MODEL_TITLE_SIZE)
    _legend(axes, fontsize=7, ncol=2, loc="upper right")
    return _png(figure)
