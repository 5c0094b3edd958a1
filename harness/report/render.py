"""The cross-device table as Markdown and CSV, with its provenance (LaTeX: ``report.latex``)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from harness.report.cross_device import FLOPS_ONLY, Cell, CrossDeviceTable
from harness.report.formats import (
    DRIFT_NOTE,
    SPEEDUP_NOTE,
    csv_text,
    markdown_table,
    marked,
    partial_warnings,
    percent,
)
from harness.results import format_ratio

CSV_FIELDS = [
    "model",
    "variant",
    "device",
    "precision",
    "batch",
    "flops",
    "params",
    "deployed_flops",
    "deployed_params",
    "flops_reduction",
    "params_reduction",
    "median_ms",
    "median_ci_low_ms",
    "median_ci_high_ms",
    "folded",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "roofline_floor_ms",
    "roofline_basis",
    "efficiency",
    "complete",
    "drifted",
    "speedup_drifted",
    "energy_mj",
    "energy_ci_low_mj",
    "energy_ci_high_mj",
    "energy_ratio",
    "energy_ratio_ci_low",
    "energy_ratio_ci_high",
]
EXPLANATION = (
    "Latency: median of end-to-end samples of the deployable graph (folded where folding changed "
    f"it), 95% CI from order statistics. {SPEEDUP_NOTE} Floor: the roofline bound from the "
    "profile's peaks (per layer, the larger of FLOPs "
    "over peak and bytes over bandwidth, summed); efficiency = floor / measured. FLOPs = 2 x "
    "multiply-accumulates; 'trained' is the unfolded graph, 'deployed' the graph timed (folded "
    "where folding changed it; 'varies' where devices folded it differently). Reductions are of "
    "the deployed graphs against the model's baseline ('varies': of the unfolded graphs). "
    "Energy (devices with a counter): median mJ per inference over timing blocks, 95% CI; energy "
    "ratio = variant / baseline, paired over rounds (docs/energy.md)."
)


def _floor(cell: Cell) -> str:
    if not cell.floor_ms or cell.efficiency is None:
        return "n/a"
    mark = "*" if cell.floor_basis == FLOPS_ONLY else ""
    return f"{cell.floor_ms:.3f}{mark} ({cell.efficiency:.1%})"


def _reduction(table: CrossDeviceTable, row, what: str) -> str:
    """The reduction against the baseline; a baseline itself has none to show."""
    return "" if row[1] == "baseline" else percent(table.reduction(row, what))


def to_markdown(table: CrossDeviceTable, argv: Optional[List[str]] = None) -> str:
    """GitHub-ready table, then how to read it, then provenance per device."""
    head = [
        "model",
        "variant",
        "GFLOPs trained",
        "GFLOPs deployed",
        "FLOPs -",
        "params (M) deployed",
        "params -",
    ]
    metered = [d for d in table.devices if any(c.energy for (_, k), c in table.cells.items()
                                               if k == d.label)]  # fmt: skip
    for d in table.devices:
        head += [f"{d.label} ms [95% CI]", f"{d.label} speed-up", f"{d.label} floor ms (eff.)"]
        if d in metered:
            head += [f"{d.label} mJ/inference [95% CI]", f"{d.label} energy ratio"]
    rows = []
    for row in table.rows:
        deployed = table.deployed.get(row)
        flops = table.flops[row]
        cells = [
            row[0],
            row[1],
            f"{flops / 1e9:.3f}" if flops is not None else "n/a",
            f"{deployed[0] / 1e9:.3f}" if deployed and deployed[0] is not None else "varies",
            _reduction(table, row, "flops"),
            f"{deployed[1] / 1e6:.3f}" if deployed and deployed[1] is not None else "varies",
            _reduction(table, row, "params"),
        ]
        for d in table.devices:
            cell = table.cells.get((row, d.label))
            if cell is None:
                cells += [""] * (5 if d in metered else 3)
                continue
            mark = " (folded)" if cell.folded else ""
            cells += [
                marked(f"{cell.stats.format()}{mark}", cell.drifted),
                marked(format_ratio(cell.speedup), cell.speedup_drifted),
                _floor(cell),
            ]
            if d in metered:
                spent = cell.energy.format() if cell.energy else "not measured"
                cells += [spent, format_ratio(cell.energy_ratio)]
        rows.append(cells)
    lines = ["# Cross-device comparison", ""]
    partial = partial_warnings([d.results for d in table.devices])
    if partial:
        lines += [f"> **Warning: partial results.** {p}" for p in partial] + [""]
    lines += markdown_table(head, rows) + ["", EXPLANATION]
    if any(c.drifted or c.speedup_drifted for c in table.cells.values()):
        lines += ["", DRIFT_NOTE]
    if any((c.efficiency or 0) > 1 for c in table.cells.values()):
        lines += [
            "",
            "Efficiency above 100%: the measured latency beats the roofline floor, so "
            "the profile's peaks are too low for this device (estimates, not vendor "
            "figures): correct them for a real roofline.",
        ]
    if any(c.floor_basis == FLOPS_ONLY for c in table.cells.values()):
        lines += [
            "",
            "\\* The run's ONNX file is gone: floor from total FLOPs over peak only (no "
            "memory term), so it is lower than the per-layer floor and the efficiency is "
            "understated.",
        ]
    lines += ["", "## Provenance"]
    if argv:
        lines.append(f"- report command: `{' '.join(argv)}`")
    lines += [f"- merged: {note}" for note in table.notes]
    lines += provenance(table)
    return "\n".join(lines) + "\n"


def provenance(table: CrossDeviceTable) -> List[str]:
    """One bullet per device column: what ran where, in which state, with which software, from
    which command."""
    lines = []
    for d in table.devices:
        env = d.results.environment_before
        libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v)
        jetson = env.get("jetson") or {}
        state = ""
        if jetson:
            clocks = "locked" if (jetson.get("jetson_clocks") or {}).get("locked") else "not locked"
            mode = (jetson.get("nvpmodel") or {}).get("mode")
            state = f"; L4T {jetson.get('l4t')}, power mode {mode}, clocks {clocks}"
        gpu = env.get("gpu") or {}
        if gpu:
            state += (
                f"; GPU {gpu.get('name')}, driver {gpu.get('driver')}, {gpu.get('temperature_c')} C"
            )
        cpu = env.get("cpu") or {}
        lines.append(
            f"- **{d.label}** ({d.source}): {d.backend} {d.backend_version}, "
            f"{d.precision}, batch {d.batch}; host {env.get('hostname')} "
            f"({cpu.get('model')}, {cpu.get('available_cores')} cores, load "
            f"{cpu.get('loadavg')}){state}; harness {d.results.harness_version} git "
            f"{env.get('git_sha')}; created {d.results.created}; command "
            f"`{' '.join(d.results.command)}`; libraries: {libs}"
        )
        warnings = partial_warnings([d.results]) + d.results.warnings
        lines += [f"  - warning: {w}" for w in warnings]
    return lines


def csv_records(table: CrossDeviceTable) -> List[Dict[str, Any]]:
    """One record per row and device column, raw numbers (``CSV_FIELDS``)."""
    records = []
    for row in table.rows:
        for d in table.devices:
            cell = table.cells.get((row, d.label))
            if cell is None:
                continue
            ci, spent, ratio = cell.speedup, cell.energy, cell.energy_ratio
            speed = (ci.ratio, ci.low, ci.high) if ci else (None, None, None)
            joules = (spent.median_mj, spent.ci_low_mj, spent.ci_high_mj) if spent else (None,) * 3
            ratios = (ratio.ratio, ratio.low, ratio.high) if ratio else (None, None, None)
            values = [
                row[0],
                row[1],
                d.label,
                d.precision,
                d.batch,
                table.flops[row],
                table.params[row],
                cell.flops,
                cell.params,
                table.reduction(row, "flops"),
                table.reduction(row, "params"),
                cell.median_ms,
                cell.stats.median_ci_low,
                cell.stats.median_ci_high,
                cell.folded,
                *speed,
                cell.floor_ms,
                cell.floor_basis,
                cell.efficiency,
                d.results.complete,
                cell.drifted,
                cell.speedup_drifted,
                *joules,
                *ratios,
            ]
            records.append(dict(zip(CSV_FIELDS, values)))
    return records


def to_csv(table: CrossDeviceTable) -> str:
    """One line per row and device column, raw numbers."""
    return csv_text(CSV_FIELDS, csv_records(table))
