"""Cross-device comparison rendered as Markdown and CSV, with its provenance (LaTeX: ``harness.report.latex``)."""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Optional

from harness.report.cross_device import FLOPS_ONLY, Cell, Comparison

CSV_FIELDS = ["model", "variant", "device", "precision", "batch", "flops", "params", "deployed_flops",
              "deployed_params", "flops_reduction",
              "params_reduction", "median_ms", "median_ci_low_ms", "median_ci_high_ms", "folded", "speedup",
              "speedup_ci_low", "speedup_ci_high", "roofline_floor_ms", "roofline_basis", "efficiency"]
EXPLANATION = (
    "Latency: median of end-to-end samples of the deployable graph (folded where folding changed it), 95% CI "
    "from order statistics. Speed-up: baseline median / variant median, 95% bootstrap interval. Floor: the "
    "roofline bound from the profile's peaks (per layer, the larger of FLOPs over peak and bytes over bandwidth, "
    "summed); efficiency = floor / measured. FLOPs = 2 x multiply-accumulates; 'trained' is the unfolded graph, "
    "'deployed' the graph timed (folded where folding changed it; 'varies' where devices folded it differently). "
    "Reductions are of the deployed graphs against the model's baseline ('varies': of the unfolded graphs).")


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.1%}"


def _speed(speedup) -> str:
    if not speedup:
        return ""
    ratio, low, high = speedup
    return f"{ratio:.2f}x [{low:.2f}, {high:.2f}]"


def _floor(cell: Cell) -> str:
    if not cell.floor_ms:
        return "n/a"
    mark = "*" if cell.floor_basis == FLOPS_ONLY else ""
    return f"{cell.floor_ms:.3f}{mark} ({cell.efficiency:.1%})"


def to_markdown(comparison: Comparison, argv: Optional[List[str]] = None) -> str:
    """GitHub-ready table, then how to read it, then provenance per device."""
    head = ["model", "variant", "GFLOPs trained", "GFLOPs deployed", "FLOPs -", "params (M) deployed", "params -"]
    for d in comparison.devices:
        head += [f"{d.label} ms [95% CI]", f"{d.label} speed-up", f"{d.label} floor ms (eff.)"]
    lines = ["# Cross-device comparison", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in comparison.rows:
        deployed = comparison.deployed.get(row)
        cells = [row[0], row[1], f"{comparison.flops[row] / 1e9:.3f}",
                 f"{deployed[0] / 1e9:.3f}" if deployed else "varies", _pct(comparison.reduction(row, "flops")),
                 f"{deployed[1] / 1e6:.3f}" if deployed else "varies", _pct(comparison.reduction(row, "params"))]
        for d in comparison.devices:
            cell = comparison.cells.get((row, d.label))
            if cell is None:
                cells += ["", "", ""]
                continue
            mark = " (folded)" if cell.folded else ""
            cells += [f"{cell.median_ms:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]{mark}", _speed(cell.speedup),
                      _floor(cell)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", EXPLANATION]
    if any((c.efficiency or 0) > 1 for c in comparison.cells.values()):
        lines += ["", "Efficiency above 100%: the measured latency beats the roofline floor, so the profile's peaks "
                  "are too low for this device (estimates, not vendor figures): correct them for a real roofline."]
    if any(c.floor_basis == FLOPS_ONLY for c in comparison.cells.values()):
        lines += ["", "\\* The run's ONNX file is gone: floor from total FLOPs over peak only (no memory term), "
                  "so it is lower than the per-layer floor and the efficiency is understated."]
    lines += ["", "## Provenance"]
    if argv:
        lines.append(f"- report command: `{' '.join(argv)}`")
    lines += provenance(comparison)
    return "\n".join(lines) + "\n"


def provenance(comparison: Comparison) -> List[str]:
    """One bullet per device column: what ran where, in which state, with which software, from which command."""
    lines = []
    for d in comparison.devices:
        device = d.results["device"]
        env = device.get("environment_before") or {}
        libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v)
        jetson = env.get("jetson") or {}
        state = ""
        if jetson:
            state = f"; L4T {jetson.get('l4t')}, power mode {(jetson.get('nvpmodel') or {}).get('mode')}, clocks " \
                    f"{'locked' if (jetson.get('jetson_clocks') or {}).get('locked') else 'not locked'}"
        gpu = env.get("gpu") or {}
        if gpu:
            state += f"; GPU {gpu.get('name')}, driver {gpu.get('driver')}, {gpu.get('temperature_c')} C"
        cpu = env.get("cpu") or {}
        lines.append(f"- **{d.label}** ({d.source}): {d.backend} {d.backend_version}, {d.precision}, batch "
                     f"{d.batch}; host {env.get('hostname')} ({cpu.get('model')}, {cpu.get('available_cores')} cores, "
                     f"load {cpu.get('loadavg')}){state}; harness {d.results.get('harness_version')} git "
                     f"{env.get('git_sha')}; created {d.results['created']}; command "
                     f"`{' '.join(d.results.get('command', []))}`; libraries: {libs}")
        warnings = list(device.get("warnings") or [])
        if d.results.get("complete") is False:
            warnings.append("the run did not complete: partial results")
        lines += [f"  - warning: {w}" for w in warnings]
    return lines


def csv_records(comparison: Comparison) -> List[Dict[str, Any]]:
    """One record per row and device column, raw numbers (``CSV_FIELDS``)."""
    records = []
    for row in comparison.rows:
        for d in comparison.devices:
            cell = comparison.cells.get((row, d.label))
            if cell is None:
                continue
            speed = cell.speedup or (None, None, None)
            values = [row[0], row[1], d.label, d.precision, d.batch, comparison.flops[row], comparison.params[row],
                      cell.flops, cell.params, comparison.reduction(row, "flops"),
                      comparison.reduction(row, "params"), cell.median_ms, cell.ci_low, cell.ci_high, cell.folded,
                      *speed, cell.floor_ms, cell.floor_basis, cell.efficiency]
            records.append(dict(zip(CSV_FIELDS, values)))
    return records


def to_csv(comparison: Comparison) -> str:
    """One line per row and device column, raw numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_records(comparison))
    return buffer.getvalue()
