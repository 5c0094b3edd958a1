"""``harness dashboard``: a static HTML site over the history store and results files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.commands import add_command, add_output
from harness.outputs import FOLDER

DESCRIPTION = """Write a static latency dashboard (HTML, no server, no network when viewed: it opens
from file:// and from GitHub Pages) from the history store and/or results files:

  index.html         every series (device, model, variant, precision, batch, environment): the
                     latest latency with its interval, the last step found and its commit
  series-*.html      one chart per series over its runs in commit order: median and 95% band,
                     steps (a level that held for 2 runs; the last run departing on its own as
                     pending), loaded runs, energy/memory/power when recorded, raw samples
  device-*.html      the latest results file of each device: table, speed-ups, fold summary
  cross-device.html  the deployable graphs' latencies across devices
  regressions.html   every step found, newest first, with its size and interval

--github-benchmark writes the latest latency of every graph (the results files given, else the
history's latest runs) as github-action-benchmark's customSmallerIsBetter JSON."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "dashboard",
        "write a static HTML latency dashboard from the history and results files",
        DESCRIPTION,
        "harness dashboard --history results/history.sqlite "
        "--results results/host/results.json -o site",
    )
    parser.add_argument(
        "--history",
        type=Path,
        default=None,
        help="the history store (default: results/history.sqlite, when it exists)",
    )
    parser.add_argument(
        "--results",
        nargs="+",
        type=Path,
        default=[],
        help="results.json files: the latest of each device gets its page and the cross-device "
        "comparison",
    )
    add_output(parser, kind=FOLDER, default=Path("results") / "dashboard", help="the site's folder")
    add_output(
        parser,
        "--github-benchmark",
        help="also write github-action-benchmark's customSmallerIsBetter JSON here",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.dashboard import benchmark_entries, write_site
    from harness.errors import HarnessError
    from harness.history import DEFAULT_PATH, History
    from harness.onnx_io import write_text_atomic
    from harness.results import read_results

    documents = [read_results(p) for p in args.results]
    path = args.history or (DEFAULT_PATH if os.path.isfile(DEFAULT_PATH) else None)
    points = []
    if path is not None:
        with History(path, create=False) as history:
            points = history.points()
    if not points and not documents:
        raise HarnessError(
            "nothing to show: give --results files or a --history with results in it "
            "(`harness history add results.json`)"
        )
    pages = write_site(points, documents, args.out)
    print(f"wrote {len(pages)} pages to {args.out} (open {args.out / 'index.html'})")
    if args.github_benchmark:
        entries = benchmark_entries(points, documents)
        write_text_atomic(args.github_benchmark, json.dumps(entries, indent=1) + "\n")
        print(f"wrote {args.github_benchmark} ({len(entries)} entries, customSmallerIsBetter)")
    return 0
