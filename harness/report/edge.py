"""Energy and memory beside latency: a report section per run and the CSV columns of a run.

Energy is the median mJ per inference over timing blocks with its 95% interval (and above idle
where idle power was measured); the ratio is the subject's energy over the reference's, paired
over rounds. Memory figures come with how each was measured. A device without a readable counter
says so ("not measured" and why), never a zero.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from harness.report.formats import markdown_table
from harness.results import Comparison, Results, Run, format_ratio

MEMORY_NAMES = (  # (results name, column title): in the order a reader wants them
    ("weights", "weights MB"),
    ("onnx_file", "ONNX MB"),
    ("engine_file", "engine MB"),
    ("activation", "activations MB"),
    ("cuda_max_allocated", "CUDA peak MB"),
    ("graph_rss", "graph RSS MB"),
    ("peak_rss", "process RSS MB"),
    ("system_ram_in_use", "RAM in use MB"),
)
EDGE_CSV_FIELDS = [
    "energy_mj",
    "energy_ci_low_mj",
    "energy_ci_high_mj",
    "energy_above_idle_mj",
    "energy_ratio",
    "energy_ratio_ci_low",
    "energy_ratio_ci_high",
] + [f"{name}_bytes" for name, _ in MEMORY_NAMES]


def _subject_of(results: Results, run: Run) -> Optional[Comparison]:
    """The comparison that judges ``run`` (against the baseline, else folded against unfolded)."""
    found = [c for c in results.comparisons if c.subject == run.id and c.energy is not None]
    return next((c for c in found if c.kind == "vs_baseline"), found[0] if found else None)


def _above_idle(run: Run) -> Optional[float]:
    spent = run.energy
    if spent is None or not spent.above_idle_per_block_mj:
        return None
    return float(np.median(spent.above_idle_per_block_mj))


def edge_record(results: Results, run: Run) -> Dict[str, Any]:
    """A run's energy and memory as raw numbers, keyed by ``EDGE_CSV_FIELDS``."""
    spent, judged = run.energy, _subject_of(results, run)
    ratio = judged.energy if judged else None
    record: Dict[str, Any] = {
        "energy_mj": spent.median_mj if spent else None,
        "energy_ci_low_mj": spent.ci_low_mj if spent else None,
        "energy_ci_high_mj": spent.ci_high_mj if spent else None,
        "energy_above_idle_mj": _above_idle(run),
        "energy_ratio": ratio.ratio if ratio else None,
        "energy_ratio_ci_low": ratio.low if ratio else None,
        "energy_ratio_ci_high": ratio.high if ratio else None,
    }
    for name, _ in MEMORY_NAMES:
        figure = run.memory.get(name)
        record[f"{name}_bytes"] = figure.bytes if figure else None
    return record


def _mb(value: Optional[int]) -> str:
    return "" if value is None else f"{value / 1e6:.3f}"


def edge_markdown(results: Results) -> List[str]:
    """The "Energy and memory" section of a bench report (no lines when nothing was recorded)."""
    note = results.device_extra.get("energy") or {}
    runs = results.runs
    if not any(r.energy or r.memory for r in runs) and not note:
        return []
    lines = ["", "## Energy and memory", ""]
    if note.get("source"):
        idle = note.get("idle_w")
        interval = note.get("interval_ms")
        lines.append(
            f"Energy from `{note['source']}` (rails summed: {', '.join(note.get('rails') or [])}; "
            + (f"sampled every {interval:g} ms" if interval else "counter read at block ends")
            + (f"; idle {idle:.2f} W measured before the run" if idle is not None else "")
            + "): median mJ per inference (one call of the batch) over timing blocks, 95% CI; "
            "ratio = this graph's energy over its reference's, paired over rounds."
        )
    elif note:
        lines.append(f"Energy: {note.get('reason', 'not measured')}.")
    present = [(n, t) for n, t in MEMORY_NAMES if any(n in r.memory for r in runs)]
    columns = ["graph", "energy mJ/inference [95% CI]", "above idle mJ", "energy ratio"]
    rows = []
    for run in runs:
        record = edge_record(results, run)
        judged = _subject_of(results, run)
        above = record["energy_above_idle_mj"]
        rows.append(
            [
                run.label,
                run.energy.format() if run.energy else "not measured",
                "" if above is None else f"{above:.3f}",
                format_ratio(judged.energy if judged else None),
            ]
            + [_mb(record[f"{n}_bytes"]) for n, _ in present]
        )
    lines += [""] + markdown_table(columns + [t for _, t in present], rows)
    methods = {n: r.memory[n].method for r in runs for n, _ in present if n in r.memory}
    lines += [""] + [f"- {title}: {methods[name]}" for name, title in present]
    warnings = sorted({f"{r.label}: {w}" for r in runs if r.energy for w in r.energy.warnings})
    lines += [f"- warning: {w}" for w in warnings]
    return lines
