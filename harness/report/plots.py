"""Plots of a cross-device table (matplotlib, Agg): PNG and SVG of each.

Devices share one y-range so that a fast and a slow device do not look alike; a missing
measurement is marked "n/a", never drawn as a zero-height bar; baselines and variants are told
apart by marker and colour, with a legend; a Pareto front is drawn only where it joins two points
or more; point labels are placed so that they do not overlap. The per-layer speed-up chart draws
the fold's merges and the variants' layers matched to the baseline's, as profiled (``layers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from harness.errors import cut
from harness.report.cross_device import CrossDeviceTable
from harness.report.layers import Devices, LayerSpeedup, charted, layer_speedups

LAYER_STEM = "layer_speedup"
PLOT_STEMS = ("latency", "latency_vs_flops", "latency_vs_energy", "speedup", LAYER_STEM)
PLOT_EXTENSIONS = ("png", "svg")
BASELINE_COLOUR, VARIANT_COLOUR = "tab:gray", "tab:blue"
LABEL_CHARS = 48  # the longest tick label or point label (a model, variant or layer name)
TEXT_CHARS = 120  # the longest title or legend entry (the axis labels written here are shorter)

# label offsets in points, tried in order until one overlaps no label or point already placed
LABEL_OFFSETS = [
    (4, 4),
    (4, -10),
    (-4, 4),
    (-4, -10),
    (4, 14),
    (4, -20),
    (-4, 14),
    (-4, -20),
    (8, 24),
    (8, -30),
]


def plot_paths(out_dir: Path) -> List[Path]:
    """Every file ``make_plots`` writes into ``out_dir``."""
    return [out_dir / f"{stem}.{ext}" for stem in PLOT_STEMS for ext in PLOT_EXTENSIONS]


def _cut(text: str, most: int = LABEL_CHARS) -> str:
    """A label cut to ``most`` characters: a chart sized to a path-long name fills memory."""
    return cut(text, most)


def _cut_texts(fig) -> None:
    """Every title and legend entry of ``fig`` cut to ``TEXT_CHARS`` (they hold device and model
    names); tick labels and annotations are cut to ``LABEL_CHARS`` where they are set."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_text(_cut(text.get_text(), TEXT_CHARS))


def _save(fig, out_dir: Path, stem: str) -> List[Path]:
    _cut_texts(fig)
    paths = []
    for ext in PLOT_EXTENSIONS:
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


def _kind_legend(ax, extra: Sequence = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="white",
            markeredgecolor="black",
            label="baseline",
        ),
        Line2D([], [], marker="^", linestyle="", color="black", label="compressed variant"),
        *extra,
    ]
    ax.legend(handles=handles, fontsize=7, loc="best")


def _latency_bars(plt, table: CrossDeviceTable, labels: List[str]):
    from matplotlib.patches import Patch

    n = len(table.devices)
    size = (max(6, 0.5 * len(labels)) * n, 4)
    fig, axes = plt.subplots(1, n, figsize=size, squeeze=False, sharey=True)
    for ax, device in zip(axes[0], table.devices):
        for x, row in enumerate(table.rows):
            cell = table.cells.get((row, device.label))
            if cell is None:
                ax.text(x, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center", fontsize=7)
                continue
            s = cell.stats
            colour = BASELINE_COLOUR if row[1] == "baseline" else VARIANT_COLOUR
            ax.bar(
                x,
                s.median,
                yerr=[[s.median - s.median_ci_low], [s.median_ci_high - s.median]],
                capsize=3,
                color=colour,
            )
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([_cut(label) for label in labels], rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(labels) - 0.4)  # room for every slot, measured or not
        ax.set_yscale("log")
        ax.set_title(f"{device.label} ({device.precision}, batch {device.batch})")
    axes[0][0].set_ylabel("latency, ms (median, 95% CI); same scale for every device")
    axes[0][0].legend(
        handles=[
            Patch(color=BASELINE_COLOUR, label="baseline"),
            Patch(color=VARIANT_COLOUR, label="compressed variant"),
        ],
        fontsize=7,
    )
    return fig


def _overlaps(box, boxes) -> bool:
    return any(box.overlaps(other) for other in boxes)


def _place_labels(ax, named: List[Tuple[str, float, float]]) -> None:
    """Annotate points with their names, each at the first offset that stays inside the axes and
    overlaps no point, no legend and no label placed before."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend else []
    for _, x, y in named:  # the points themselves, as small boxes in display coordinates
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - 3, py - 3, px + 3, py + 3))
    for name, x, y in [(_cut(name), x, y) for name, x, y in named]:
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(
                name,
                (x, y),
                fontsize=6,
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx >= 0 else "right",
            )
            box = text.get_window_extent(renderer)
            within = (
                inside.x0 <= box.x0
                and box.x1 <= inside.x1
                and inside.y0 <= box.y0
                and box.y1 <= inside.y1
            )
            if within and not _overlaps(box, taken):
                taken.append(box)
                break
            text.remove()
        else:  # nowhere free: point at the label from further out
            text = ax.annotate(
                name,
                (x, y),
                fontsize=6,
                xytext=(12, 36),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "linewidth": 0.5},
            )
            taken.append(text.get_window_extent(renderer))


def _latency_vs_flops(plt, table: CrossDeviceTable):
    """Per device: every deployed graph, each model in its colour with the Pareto front of its
    variants."""

    n = len(table.devices)
    models = list(dict.fromkeys(m for m, _ in table.rows))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.5), squeeze=False, sharex=True, sharey=True)
    points = {}
    for ax, device in zip(axes[0], table.devices):
        for k, model in enumerate(models):
            named = []
            for m, v in table.rows:
                cell = table.cells.get(((m, v), device.label))
                flops = (cell.flops if cell else None) or table.flops.get((m, v))
                if m == model and cell is not None and flops:
                    named.append((v, flops / 1e9, cell.median_ms))
            colour = colours(k % 10)
            for variant, x, y in named:
                baseline = variant == "baseline"
                ax.scatter(
                    [x],
                    [y],
                    marker="o" if baseline else "^",
                    s=24,
                    zorder=3,
                    edgecolors=colour,
                    facecolors="white" if baseline else colour,
                )
            front = pareto_front([(x, y) for _, x, y in named])
            if len(front) > 1:
                ax.plot(
                    [p[0] for p in front],
                    [p[1] for p in front],
                    color=colour,
                    linewidth=1,
                    zorder=2,
                )
            points[(ax, model)] = named
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("GFLOPs of the deployed graph")
        ax.set_title(f"{device.label} ({device.precision}, batch {device.batch})")
    axes[0][0].set_ylabel("latency, ms (median); same scale for every device")
    _legend_and_labels(fig, axes, models, colours, points)
    return fig


def _latency_vs_energy(plt, table: CrossDeviceTable):
    """Per device: every deployed graph at (energy per inference, latency) with the energy's 95%
    interval, each model in its colour with the Pareto front of its variants; a device without
    energy says "energy not measured"."""

    n = len(table.devices)
    models = list(dict.fromkeys(m for m, _ in table.rows))
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.5), squeeze=False, sharey=True)
    points = {}
    for ax, device in zip(axes[0], table.devices):
        for k, model in enumerate(models):
            named = []
            for m, v in table.rows:
                cell = table.cells.get(((m, v), device.label))
                if m == model and cell is not None and cell.energy is not None:
                    named.append((v, cell.energy.median_mj, cell.median_ms, cell.energy))
            colour = colours(k % 10)
            for variant, x, y, spent in named:
                baseline = variant == "baseline"
                ax.errorbar(
                    [x],
                    [y],
                    xerr=[[x - spent.ci_low_mj], [spent.ci_high_mj - x]],
                    fmt="o" if baseline else "^",
                    markersize=5,
                    color=colour,
                    markerfacecolor="white" if baseline else colour,
                    linewidth=0.8,
                    zorder=3,
                )
            front = pareto_front([(x, y) for _, x, y, _ in named])
            if len(front) > 1:
                xs, ys = [p[0] for p in front], [p[1] for p in front]
                ax.plot(xs, ys, color=colour, linewidth=1, gid="pareto-front")
            points[(ax, model)] = [(v, x, y) for v, x, y, _ in named]
        if not any(named for (a, _), named in points.items() if a is ax):
            ax.text(0.5, 0.5, "energy not measured", transform=ax.transAxes, ha="center")
        else:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("energy per inference, mJ (median, 95% CI)")
        ax.set_title(f"{device.label} ({device.precision}, batch {device.batch})")
    axes[0][0].set_ylabel("latency, ms (median)")
    _legend_and_labels(fig, axes, models, colours, points)
    return fig


def _speedups(plt, table: CrossDeviceTable):
    n = len(table.devices)
    variants = [row for row in table.rows if row[1] != "baseline"]
    fig, ax = plt.subplots(figsize=(max(6, len(variants) * 0.8 * max(1, n)), 4))
    width = 0.8 / max(1, n)
    colours = plt.get_cmap("tab10")
    for i, device in enumerate(table.devices):
        for x, row in enumerate(variants):
            cell = table.cells.get((row, device.label))
            position = x + i * width
            if cell is None or cell.speedup is None:
                ax.text(
                    position,
                    0.02,
                    "n/a",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    fontsize=7,
                )
                continue
            s = cell.speedup
            ax.bar(
                position,
                s.ratio,
                width,
                yerr=[[s.ratio - s.low], [s.high - s.ratio]],
                capsize=3,
                color=colours(i % 10),
                label=device.label if x == 0 else None,
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(-0.6, len(variants) - 1 + (n - 1) * width + 0.6)  # every slot, measured or not
    ax.set_xticks([x + width * (n - 1) / 2 for x in range(len(variants))])
    ax.set_xticklabels([_cut(f"{m}/{v}") for m, v in variants], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("speed-up vs baseline (95% CI)")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8)
    return fig


def _layer_speedups(plt, speedups: List[LayerSpeedup], several: bool):
    """One panel per model: per layer of the deployable graph a horizontal bar per comparison
    (the fold's merge, the variant against the baseline), its measured speed-up, and the 1.0
    line."""
    from matplotlib.patches import Patch

    models = list(dict.fromkeys(s.model for s in speedups))
    keys = list(dict.fromkeys((s.device, s.label) for s in speedups))
    place: Dict[Tuple[str, str], int] = {}  # (model, layers) -> their place in the graph
    for s in speedups:
        name = (s.model, " + ".join(s.layers))
        place[name] = min(place.get(name, s.place), s.place)
    names = {m: [n for (model, n) in sorted(place, key=place.get) if model == m] for m in models}
    colours = plt.get_cmap("tab10")
    counts = [len(names[m]) for m in models]
    fig, axes = plt.subplots(
        len(models),
        1,
        figsize=(8, 1 + 0.25 * sum(counts) + 0.8 * len(models)),
        squeeze=False,
        gridspec_kw={"height_ratios": counts},
    )
    for ax, model in zip(axes[:, 0], models):
        rows = [s for s in speedups if s.model == model]
        shown = list(dict.fromkeys((s.device, s.label) for s in rows))
        height = 0.8 / len(shown)
        for s in rows:
            k = shown.index((s.device, s.label))
            y = names[model].index(" + ".join(s.layers)) - 0.4 + (k + 0.5) * height
            ax.barh(y, s.speedup, height, color=colours(keys.index((s.device, s.label)) % 10))
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(names[model])))
        ax.set_yticklabels([_cut(name) for name in names[model]], fontsize=6)
        ax.set_ylim(len(names[model]) - 0.5, -0.5)  # first layer on top
        ax.set_title(model, fontsize=9)
    axes[-1][0].set_xlabel("per-layer speed-up, before / after ms (profiled runs); > 1: faster")
    axes[0][0].legend(
        handles=[
            Patch(color=colours(k % 10), label=f"{device}: {label}" if several else label)
            for k, (device, label) in enumerate(keys)
        ],
        fontsize=7,
        loc="best",
    )
    _cut_texts(fig)
    fig.tight_layout()
    return fig


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def layer_speedup_plot(devices: Devices, out_dir: Path) -> List[Path]:
    """The per-layer speed-up chart (``layers.charted``); nothing where no layers were matched."""
    speedups = charted([s for label, res in devices for s in layer_speedups(label, res)])
    if not speedups:
        return []
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = _layer_speedups(plt, speedups, len(devices) > 1)
    written = _save(fig, out_dir, LAYER_STEM)
    plt.close(fig)
    return written


def make_plots(table: CrossDeviceTable, out_dir: Path) -> List[Path]:
    """Latency bars with CI whiskers, latency vs FLOPs and vs energy with Pareto fronts,
    speed-ups across devices, and per-layer speed-ups where layers were profiled."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [f"{m}/{v}" for m, v in table.rows]
    written: List[Path] = []
    for stem, draw in (
        ("latency", lambda: _latency_bars(plt, table, labels)),
        ("latency_vs_flops", lambda: _latency_vs_flops(plt, table)),
        ("latency_vs_energy", lambda: _latency_vs_energy(plt, table)),
        ("speedup", lambda: _speedups(plt, table)),
    ):
        fig = draw()
        written += _save(fig, out_dir, stem)
        plt.close(fig)
    return written + layer_speedup_plot([(d.label, d.results) for d in table.devices], out_dir)


def _legend_and_labels(fig, axes, models, colours, points) -> None:
    """The models' colours and the Pareto front in the legend, then each point's variant label
    placed once the layout has fixed the axes' limits and transforms."""
    from matplotlib.lines import Line2D

    model_handles = [Line2D([], [], color=colours(k % 10), label=m) for k, m in enumerate(models)]
    _kind_legend(
        axes[0][-1],
        model_handles
        + [Line2D([], [], color="black", linewidth=1, label="Pareto front (2+ points)")],
    )
    _cut_texts(fig)
    fig.tight_layout()
    fig.canvas.draw()
    for ax in axes[0]:
        _place_labels(ax, [p for (a, _), named in points.items() if a is ax for p in named])
