"""``harness compare``: CI regression gating on latency, against a baseline file or the history."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import add_command, add_output

DESCRIPTION = """Compare two results files of the same suite on the same device (from `harness
bench`). For each graph: the change in median latency with a 95% bootstrap interval, and a
verdict: slower when the whole interval lies above +THRESHOLD, faster when below -THRESHOLD, same
otherwise. The threshold is a percentage: 5 and 5% both mean 5%; a bare number below 1 (0.05) is
refused as ambiguous.

With --against-history, one results file is judged against its series in the history store
(`harness history`): slower when it makes a significant step up from the series' last level (each
point weighed by its own interval widened by the series' run-to-run scatter; no threshold), or
confirms one that began at the previous run; "within scatter" when it departs from the level by
more than its own interval but not beyond the series' scatter (the note says what was tested);
"not judged" when its machine was loaded and the history's runs were not all loaded too.

Loud warnings (not a failure): a run that did not complete, a machine that was loaded at capture
(load average >= cores), a graph whose ONNX file or FLOPs changed, backend settings or library
versions that differ between the two runs. Exit status: 0 when nothing is slower, 1 when
something is, 2 on any input or output problem (a missing or malformed file, files that cannot be
compared, an unwritable --markdown/--junit)."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "compare",
        "compare results with a baseline or the history; exit 1 on a regression",
        DESCRIPTION,
        "harness compare baseline/results.json "
        "results/host/results.json --threshold 5% --markdown comment.md --github",
    )
    parser.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="BASE NEW: results.json of the reference run and of the run to judge "
        "(with --against-history: NEW only)",
    )
    parser.add_argument(
        "--threshold",
        default=None,
        help="slowdown tolerated, in percent: 5%% or 5 (default 5%%; not with --against-history)",
    )
    parser.add_argument(
        "--metric",
        choices=("latency", "energy"),
        default="latency",
        help="what is gated: latency, or energy per inference (both files must have measured "
        "it; not with --against-history)",
    )
    parser.add_argument(
        "--against-history",
        action="store_true",
        help="judge NEW against its series in the history store instead",
    )
    parser.add_argument(
        "--history",
        type=Path,
        default=None,
        help="the history store (default: results/history.sqlite)",
    )
    add_output(parser, "--markdown", help="also write the table here (PR comment, job summary)")
    add_output(parser, "--junit", help="also write JUnit XML here: a failed test per regression")
    parser.add_argument(
        "--github",
        action="store_true",
        help="also print GitHub Actions annotations (::error per regression, "
        "::warning per warning)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.compare import compare_files, parse_threshold, to_github, to_junit, to_markdown
    from harness.errors import HarnessError
    from harness.outputs import write_measured

    if args.against_history:
        if args.metric != "latency":
            raise HarnessError("--against-history gates latency only (the history stores latency)")
        if len(args.results) != 1:
            raise HarnessError("--against-history takes one results file (NEW)")
        if args.threshold is not None:
            raise HarnessError(
                "--threshold applies to BASE NEW; --against-history judges a significant step, "
                "with no threshold"
            )
        comparison = _against_history(args)
    else:
        if len(args.results) != 2:
            raise HarnessError(
                f"give two results files, BASE and NEW (got {len(args.results)}), "
                "or one with --against-history"
            )
        if args.history is not None:
            raise HarnessError("--history is read with --against-history only")
        comparison = compare_files(
            args.results[0], args.results[1], parse_threshold(args.threshold or "5%"), args.metric
        )
    markdown = to_markdown(comparison)
    print(markdown, end="")
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.github:
        print(to_github(comparison, str(args.results[-1])), end="")
    if args.markdown:
        write_measured(args.markdown, markdown)
    if args.junit:
        write_measured(args.junit, to_junit(comparison))
    return 1 if comparison.slower else 0


def _against_history(args):
    """The new file's graphs judged against their series in the history store."""
    from harness.compare import against_history
    from harness.history import DEFAULT_PATH, History, series_of
    from harness.results import read_results

    new = read_results(args.results[0])
    with History(args.history or DEFAULT_PATH, create=False) as history:
        stored = series_of(history.points(new.device_name))
    return against_history(new, stored)
