"""The one report pipeline: typed results in, every report file out.

``harness report``, ``harness suite papers`` and ``harness bench`` write through here: results
files are read and validated by ``harness.results``, merged into one table (``cross_device``), and
rendered by the shared renderers (``render`` for Markdown and CSV, ``latex`` for fragments and
documents, ``plots``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.errors import HarnessError
from harness.onnx_io import write_text_atomic
from harness.report.cross_device import CrossDeviceTable, merge
from harness.report.formats import partial_warnings
from harness.report.latex import standalone
from harness.report.layers import LAYER_FILES, layer_files, layers_summary, profiled
from harness.report.papers import claims_csv, claims_latex, claims_table
from harness.report.plots import LAYER_STEM, layer_speedup_plot, make_plots, plot_paths
from harness.results import SCHEMA_VERSION, Results

REPORT_FILES = (
    "report.md",
    "report.csv",
    "report.tex",
    "report-narrow.tex",
    "report-standalone.tex",
    "results.json",
)


def check_output_dir(out: Path) -> None:
    """Refuse an output folder that is a file, lies under a file, or cannot be written (before any
    work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HarnessError(f"output folder {out} is an existing file")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise HarnessError(f"output folder {out} lies under the file {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HarnessError(f"output folder {out} is not writable ({parent} is not)")


def merged_document(table: CrossDeviceTable, argv: List[str]) -> Dict[str, Any]:
    """The merged results.json: each device's full results plus the table's numbers, per column."""
    from harness.report.render import csv_records

    return {
        "schema": SCHEMA_VERSION,
        "kind": "merged",
        "command": argv,
        "merged_from": [d.source for d in table.devices],
        "columns": [
            {
                "label": d.label,
                "device": d.name,
                "precision": d.precision,
                "batch": d.batch,
                "backend": d.backend,
                "backend_version": d.backend_version,
                "source": d.source,
                "complete": d.results.complete,
            }
            for d in table.devices
        ],
        "table": csv_records(table),
        "devices": {d.label: d.results.to_dict() for d in table.devices},
    }


def remove_stale_files(out: Path, written: Sequence[Path] = ()) -> List[Path]:
    """Delete plots and layer files an earlier report left in ``out`` that this one did not write
    (``written``): a report without plots, or without measured layers, must not show old ones."""
    candidates = plot_paths(out) + [out / name for name in LAYER_FILES]
    removed = [path for path in candidates if path.is_file() and path not in written]
    for path in removed:
        path.unlink()
    return removed


def write_report(
    documents: List[Results], out: Path, argv: List[str], plots: bool = True
) -> Tuple[str, List[Path], List[Path]]:
    """Merge ``documents`` and write every report file into ``out``: with the measured layers
    and findings the runs carry, layers.md, layers.csv, findings.csv and a section of report.md.

    Returns the Markdown, the files written and the stale files removed.
    """
    from harness.report.latex import to_latex, to_latex_narrow
    from harness.report.render import to_csv, to_markdown

    check_output_dir(out)
    table = merge(documents)
    devices = [(d.label, d.results) for d in table.devices]
    layered = layer_files(devices) if profiled(devices) else {}
    names = [*REPORT_FILES, *layered]
    _refuse_overwriting_inputs([out / name for name in names], documents)
    drawn = make_plots(table, out) if plots else []
    markdown = to_markdown(table, argv)
    if layered:
        chart = any(path.stem == LAYER_STEM for path in drawn)
        markdown += "\n".join(layers_summary(devices, chart)) + "\n"
    full, narrow = to_latex(table), to_latex_narrow(table)
    files = {
        "report.md": markdown,
        "report.csv": to_csv(table),
        "report.tex": full,
        "report-narrow.tex": narrow,
        "report-standalone.tex": standalone([full, narrow]),
        "results.json": json.dumps(merged_document(table, argv), indent=1) + "\n",
        **layered,
    }
    written = [write_text_atomic(out / name, text) for name, text in files.items()]
    written += drawn
    return markdown, written, remove_stale_files(out, written)


def _refuse_overwriting_inputs(targets: List[Path], documents: List[Results]) -> None:
    """Refuse, before anything is written, a report file that is one of the results read."""
    sources = [Path(d.source) for d in documents if d.source and os.path.isfile(d.source)]
    for target in targets:
        for source in sources:
            if target.is_file() and os.path.samefile(source, target):
                raise HarnessError(
                    f"{target} is also an input: the report would overwrite it (give another "
                    "output folder with -o)"
                )


def write_papers(results: Results, out: Path) -> List[Path]:
    """The papers' claimed-against-measured table as Markdown, CSV, a LaTeX fragment and a
    document."""
    check_output_dir(out)
    fragment = claims_latex(results)
    return [
        write_text_atomic(out / "papers.md", claims_table(results)),
        write_text_atomic(out / "papers.csv", claims_csv(results)),
        write_text_atomic(out / "papers.tex", fragment),
        write_text_atomic(out / "papers-standalone.tex", standalone([fragment])),
    ]


def report_warnings(documents: List[Results], stale: Optional[List[Path]] = None) -> List[str]:
    """What a user must see on the terminal: partial runs, and old report files removed."""
    lines = [f"warning: {w}" for w in partial_warnings(documents)]
    lines += [f"removed stale {path} (this report does not write it)" for path in stale or []]
    return lines


def write_bench_tables(results: Results, out: Path) -> List[Path]:
    """The tables of one bench run (``report.table``): report.md and report.csv beside its
    results.json; with the measured layers and findings its runs carry, layers.md, layers.csv,
    findings.csv, the per-layer speed-up chart and a section of report.md."""
    from harness.report.table import to_csv, to_markdown

    devices = [(results.device_name, results)]
    markdown, files = to_markdown(results), {"report.csv": to_csv(results)}
    drawn: List[Path] = []
    if profiled(devices):
        drawn = layer_speedup_plot(devices, out)
        markdown += "\n".join(layers_summary(devices, bool(drawn))) + "\n"
        files.update(layer_files(devices))
    written = [write_text_atomic(out / "report.md", markdown)]
    return written + [write_text_atomic(out / n, text) for n, text in files.items()] + drawn
