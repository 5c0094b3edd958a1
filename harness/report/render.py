"""Cross-device comparison rendered as Markdown, CSV and a booktabs LaTeX table, with its provenance."""

from __future__ import annotations

import csv
import io
from typing import List, Optional

from harness.report.cross_device import Comparison

LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.1%}"


def _speed(speedup, latex: bool = False) -> str:
    if not speedup:
        return "--" if latex else ""
    ratio, low, high = speedup
    half = (high - low) / 2
    return f"${ratio:.2f}\\times \\pm {half:.2f}$" if latex else f"{ratio:.2f}x [{low:.2f}, {high:.2f}]"


def to_markdown(comparison: Comparison) -> str:
    """GitHub-ready table, then how to read it, then provenance per device."""
    head = ["model", "variant", "GFLOPs", "FLOPs -", "params (M)", "params -"]
    for d in comparison.devices:
        head += [f"{d.name} ms [95% CI]", f"{d.name} speed-up", f"{d.name} floor ms (eff.)"]
    lines = ["# Cross-device comparison", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in comparison.rows:
        cells = [row[0], row[1], f"{comparison.flops[row] / 1e9:.3f}", _pct(comparison.reduction(row, "flops")),
                 f"{comparison.params[row] / 1e6:.3f}", _pct(comparison.reduction(row, "params"))]
        for d in comparison.devices:
            cell = comparison.cells.get((row, d.name))
            if cell is None:
                cells += ["", "", ""]
                continue
            mark = " (folded)" if cell.folded else ""
            cells += [f"{cell.median_ms:.3f} [{cell.ci_low:.3f}, {cell.ci_high:.3f}]{mark}", _speed(cell.speedup),
                      f"{cell.floor_ms:.3f} ({cell.efficiency:.1%})" if cell.floor_ms else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Latency: median of end-to-end samples of the deployable graph (folded where folding changed it), "
              "95% CI from order statistics. Speed-up: baseline median / variant median, 95% bootstrap interval. "
              "Floor: the roofline bound from the profile's peaks (per layer, the larger of FLOPs over peak and "
              "bytes over bandwidth, summed); efficiency = floor / measured. FLOPs = 2 x multiply-accumulates.",
              "", "## Provenance"]
    lines += provenance(comparison)
    return "\n".join(lines) + "\n"


def provenance(comparison: Comparison) -> List[str]:
    """One bullet per device: what ran where, with which software, from which command."""
    lines = []
    for d in comparison.devices:
        env = d.results["device"]["environment_before"] or {}
        libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v)
        jetson = env.get("jetson") or {}
        state = ""
        if jetson:
            state = f"; L4T {jetson.get('l4t')}, power mode {(jetson.get('nvpmodel') or {}).get('mode')}, clocks " \
                    f"{'locked' if (jetson.get('jetson_clocks') or {}).get('locked') else 'not locked'}"
        gpu = env.get("gpu") or {}
        if gpu:
            state += f"; GPU {gpu.get('name')}, driver {gpu.get('driver')}, {gpu.get('temperature_c')} C"
        lines.append(f"- **{d.name}**: {d.backend} {d.backend_version}, {d.precision}, batch {d.batch}; host "
                     f"{env.get('hostname')} ({(env.get('cpu') or {}).get('model')}){state}; harness "
                     f"{d.results.get('harness_version')} git {env.get('git_sha')}; created {d.results['created']}; "
                     f"command `{' '.join(d.results.get('command', []))}`; libraries: {libs}")
    return lines


def to_csv(comparison: Comparison) -> str:
    """One line per row and device, raw numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "variant", "device", "precision", "batch", "flops", "params", "flops_reduction",
                     "params_reduction", "median_ms", "median_ci_low_ms", "median_ci_high_ms", "folded", "speedup",
                     "speedup_ci_low", "speedup_ci_high", "roofline_floor_ms", "efficiency"])
    for row in comparison.rows:
        for d in comparison.devices:
            cell = comparison.cells.get((row, d.name))
            if cell is None:
                continue
            speed = cell.speedup or (None, None, None)
            writer.writerow([row[0], row[1], d.name, d.precision, d.batch, comparison.flops[row],
                             comparison.params[row], comparison.reduction(row, "flops"),
                             comparison.reduction(row, "params"), cell.median_ms, cell.ci_low, cell.ci_high,
                             cell.folded, *speed, cell.floor_ms, cell.efficiency])
    return buffer.getvalue()


def to_latex(comparison: Comparison) -> str:
    """A complete document holding a booktabs table (compiles as-is; copy the table into a paper)."""
    columns = "ll" + "rr" + "rr" * len(comparison.devices)
    head = ["Model", "Variant", "GFLOPs", "Params (M)"]
    sub = ["", "", "", ""]
    for d in comparison.devices:
        head += [rf"\multicolumn{{2}}{{c}}{{{latex_escape(d.name)}}}"]
        sub += ["ms", "speed-up"]
    body = []
    for row in comparison.rows:
        cells = [latex_escape(row[0]), latex_escape(row[1]), f"{comparison.flops[row] / 1e9:.3f}",
                 f"{comparison.params[row] / 1e6:.2f}"]
        for d in comparison.devices:
            cell = comparison.cells.get((row, d.name))
            if cell is None:
                cells += ["--", "--"]
                continue
            half = (cell.ci_high - cell.ci_low) / 2
            cells += [f"${cell.median_ms:.3f} \\pm {half:.3f}$", _speed(cell.speedup, latex=True)]
        body.append(" & ".join(cells) + r" \\")
    caption = "Latency (median $\\pm$ half the 95\\% CI, ms) and speed-up against the baseline. " + "; ".join(
        f"{latex_escape(d.name)}: {latex_escape(d.backend)} {latex_escape(d.backend_version)}, "
        f"{latex_escape(d.precision)}, batch {d.batch}" for d in comparison.devices) + "."
    lines = [r"\documentclass{article}", r"\usepackage{booktabs}", r"\usepackage[margin=1cm,landscape]{geometry}",
             r"\begin{document}", r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{caption}}}", r"\label{tab:harness}", rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
             " & ".join(head) + r" \\", " & ".join(sub) + r" \\", r"\midrule", *body, r"\bottomrule",
             r"\end{tabular}", r"\end{table}", r"\end{document}"]
    return "\n".join(lines) + "\n"
