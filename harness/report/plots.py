"""Plots of a cross-device comparison (matplotlib, Agg): PNG and SVG of each."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from harness.report.cross_device import Comparison


def _save(fig, out_dir: Path, stem: str) -> List[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def pareto_front(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """Points not dominated in (cost, latency), both lower-is-better, sorted by cost."""
    front, best = [], float("inf")
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def _latency_bars(plt, comparison: Comparison, labels: List[str]):
    n = len(comparison.devices)
    fig, axes = plt.subplots(1, n, figsize=(max(6, 0.5 * len(labels)) * n, 4), squeeze=False)
    for ax, device in zip(axes[0], comparison.devices):
        cells = [comparison.cells.get((row, device.label)) for row in comparison.rows]
        heights = [c.median_ms if c else 0 for c in cells]
        errors = [[c.median_ms - c.ci_low if c else 0 for c in cells],
                  [c.ci_high - c.median_ms if c else 0 for c in cells]]
        colors = ["tab:gray" if row[1] == "baseline" else "tab:blue" for row in comparison.rows]
        ax.bar(range(len(labels)), heights, yerr=errors, capsize=3, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("latency, ms (median, 95% CI)")
        ax.set_title(f"{device.label} ({device.precision}, batch {device.batch})")
    return fig


def _latency_vs_flops(plt, comparison: Comparison):
    """Per device: every deployed graph, each model in its colour with the Pareto front of its variants."""
    n = len(comparison.devices)
    models = list(dict.fromkeys(m for m, _ in comparison.rows))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.5), squeeze=False)
    for ax, device in zip(axes[0], comparison.devices):
        for k, model in enumerate(models):
            named = [(v, (cell.flops or comparison.flops[(m, v)]) / 1e9, cell.median_ms)
                     for (m, v) in comparison.rows if m == model
                     and (cell := comparison.cells.get(((m, v), device.label)))]
            colour = colours(k % 10)
            ax.scatter([x for _, x, _ in named], [y for _, _, y in named], color=colour, zorder=2, s=18)
            for variant, x, y in named:
                ax.annotate(variant, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            front = pareto_front([(x, y) for _, x, y in named])
            ax.plot([p[0] for p in front], [p[1] for p in front], color=colour, label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("GFLOPs of the deployed graph")
        ax.set_ylabel("latency, ms (median)")
        ax.set_title(f"{device.label}: lines join each model's Pareto front")
        ax.legend(fontsize=7)
    return fig


def _speedups(plt, comparison: Comparison):
    n = len(comparison.devices)
    variants = [row for row in comparison.rows if row[1] != "baseline"]
    fig, ax = plt.subplots(figsize=(max(6, len(variants) * 0.8 * max(1, n)), 4))
    width = 0.8 / max(1, n)
    for i, device in enumerate(comparison.devices):
        cells = [comparison.cells.get((row, device.label)) for row in variants]
        values = [c.speedup[0] if c and c.speedup else 0 for c in cells]
        errors = [[c.speedup[0] - c.speedup[1] if c and c.speedup else 0 for c in cells],
                  [c.speedup[2] - c.speedup[0] if c and c.speedup else 0 for c in cells]]
        ax.bar([x + i * width for x in range(len(variants))], values, width, yerr=errors, capsize=3,
               label=device.label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (n - 1) / 2 for x in range(len(variants))], [f"{m}/{v}" for m, v in variants],
                  rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("speed-up vs baseline (95% CI)")
    ax.legend(fontsize=8)
    return fig


def make_plots(comparison: Comparison, out_dir: Path) -> List[Path]:
    """Latency bars with CI whiskers, latency vs FLOPs with Pareto fronts, speed-ups across devices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [f"{m}/{v}" for m, v in comparison.rows]
    written: List[Path] = []
    for stem, fig in (("latency", _latency_bars(plt, comparison, labels)),
                      ("latency_vs_flops", _latency_vs_flops(plt, comparison)),
                      ("speedup", _speedups(plt, comparison))):
        written += _save(fig, out_dir, stem)
        plt.close(fig)
    return written
