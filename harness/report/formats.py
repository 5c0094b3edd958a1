"""What every report view shares: Markdown tables, CSV, percentages and warnings of partial runs."""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Optional, Sequence, Set

from harness.estimators import detect_drift
from harness.results import Comparison, Results

# the estimator, named as every table's note and caption names it
SPEEDUP_NOTE = (
    "Speed-up: baseline median / variant median (the medians printed, divided), with a 95% "
    "interval from a paired bootstrap over the interleaved rounds."
)
DRIFT_MARK = "(drifted)"
DRIFT_NOTE = (
    f"{DRIFT_MARK}: the samples trended during the run (Kendall's tau, see the warnings), so the "
    "median and the speed-ups from it describe a moving target."
)


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A GitHub table: header, rule, one line per row (``|`` inside cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *(line(r) for r in rows)]


def csv_text(fields: Sequence[str], records: Sequence[Dict[str, Any]]) -> str:
    """Records as CSV with a header, raw numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def percent(value: Optional[float], decimals: int = 1, missing: str = "") -> str:
    """``52.7%``; never ``-0.0%`` (a change that rounds to zero prints as ``0.0%``)."""
    if value is None:
        return missing
    text = f"{value * 100:.{decimals}f}"
    return f"{0.0 if float(text) == 0 else value * 100:.{decimals}f}%"


def partial_warnings(documents: Sequence[Results]) -> List[str]:
    """One line per results file that did not complete: its numbers are partial."""
    lines = []
    for results in documents:
        if results.complete is False:
            measured = len({(r.model, r.variant) for r in results.runs})
            name = results.source or results.device_name
            lines.append(
                f"{name} did not complete (complete: false): partial results, "
                f"{measured} graph(s) of the run measured; rerun it before using these "
                "numbers"
            )
    return lines


def drifted_runs(results: Results) -> Set[str]:
    """Ids of the runs whose samples drifted (``estimators.detect_drift``, from the samples)."""
    return {run.id for run in results.runs if detect_drift(run.series_ms["latency_ms"])}


def comparison_drifted(comparison: Optional[Comparison], drifted: Set[str]) -> bool:
    """Whether either run of a comparison drifted."""
    return comparison is not None and bool({comparison.reference, comparison.subject} & drifted)


def marked(text: str, drifted: bool) -> str:
    """A cell with the drift mark where its samples drifted."""
    return f"{text} {DRIFT_MARK}" if drifted and text else text
