"""``harness report``: merge results files from several devices into tables and plots for papers."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import FOLDER, add_command, add_output


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "report",
        "merge results from several devices into tables (md, csv, tex) and plots",
        "Merge results.json files (one per device and setting) into one comparison: per model and "
        "variant the FLOPs and parameters with their reductions, and per device the latency with "
        "its 95% CI, the speed-up against the baseline with its interval, and the roofline floor "
        "and efficiency. Writes report.md, report.csv, report.tex (a booktabs table* to \\input "
        "into a paper), report-narrow.tex (one column), report-standalone.tex (compiles as-is), "
        "results.json (merged), and latency, latency-vs-FLOPs and speed-up plots as PNG and SVG "
        "(--no-plots removes old ones). Runs measured per layer (bench --layers) add layers.md, "
        "layers.csv, findings.csv, a per-layer speed-up chart and a section of report.md. Files "
        "that cannot share a table (the same device at the same settings twice, different input "
        "shapes for a model, mixed precisions or batch sizes in one file, a malformed file, "
        "another results schema) are refused before anything is written; a run that did not "
        "complete is reported with a warning.",
        "harness report results/xavier/results.json results/host/results.json -o report/",
    )
    parser.add_argument(
        "results", nargs="+", type=Path, help="results.json files, one per device and setting"
    )
    add_output(
        parser,
        kind=FOLDER,
        dest="out",
        default=Path("report"),
        help="output folder (default: report)",
    )
    parser.add_argument(
        "--no-plots",
        action="store_true",
        help="skip the plots (and remove plots an earlier report left there)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.report.pipeline import check_output_dir, report_warnings, write_report
    from harness.results import read_results

    check_output_dir(args.out)
    documents = [read_results(path) for path in args.results]
    markdown, written, removed = write_report(
        documents, args.out, ["harness"] + sys.argv[1:], not args.no_plots
    )
    print(markdown.split("\n## Provenance")[0])
    for line in report_warnings(documents, removed):
        print(line, file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0
