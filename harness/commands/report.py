"""``harness report``: merge results files from several devices into paper-ready tables and plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Tuple

from harness.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "report", "merge results from several devices into tables (md, csv, tex) and plots",
        "Merge results.json files (one per device and setting) into one comparison: per model and variant the "
        "FLOPs and parameters with their reductions, and per device the latency with its 95% CI, the speed-up "
        "against the baseline with its interval, and the roofline floor and efficiency. Writes report.md, "
        "report.csv, report.tex (booktabs, compiles as-is), results.json (merged), and latency, latency-vs-FLOPs "
        "and speed-up plots as PNG and SVG. Files that cannot share a table (the same device at the same settings "
        "twice, different input shapes for a model, mixed precisions or batch sizes in one file, another results "
        "schema) are refused before anything is written.",
        "harness report results/xavier/results.json results/host/results.json -o report/")
    parser.add_argument("results", nargs="+", type=Path, help="results.json files, one per device and setting")
    parser.add_argument("-o", "--out", type=Path, default=Path("report"), help="output folder (default: report)")
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    parser.add_argument("--layers", action="store_true",
                        help="also profile each ONNX Runtime graph per layer on this machine (layers-<device>.md)")
    parser.set_defaults(func=run)


def write_report(paths: List[Path], out: Path, argv: List[str], plots: bool = True,
                 layers: bool = False) -> Tuple[str, List[Path]]:
    """Merge ``paths`` and write every report file into ``out``; returns the Markdown and the files written."""
    from harness.onnx_io import write_text_atomic
    from harness.report.cross_device import merge, merged_document
    from harness.report.latex import to_latex
    from harness.report.render import to_csv, to_markdown

    comparison = merge(paths)
    markdown = to_markdown(comparison, argv)
    written = [write_text_atomic(out / "report.md", markdown),
               write_text_atomic(out / "report.csv", to_csv(comparison)),
               write_text_atomic(out / "report.tex", to_latex(comparison)),
               write_text_atomic(out / "results.json", json.dumps(merged_document(comparison, argv), indent=1) + "\n")]
    if layers:
        from harness.report.layers import layers_markdown

        for device in comparison.devices:
            if device.backend == "onnxruntime":
                name = device.label.replace(" ", "-")
                written.append(write_text_atomic(out / f"layers-{name}.md", layers_markdown(device.results)))
    if plots:
        from harness.report.plots import make_plots

        written += make_plots(comparison, out)
    return markdown, written


def run(args) -> int:
    markdown, written = write_report(args.results, args.out, ["harness"] + sys.argv[1:], not args.no_plots,
                                     args.layers)
    print(markdown.split("\n## Provenance")[0])
    for path in written:
        print(f"wrote {path}")
    return 0
