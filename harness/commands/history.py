"""``harness history``: keep every bench result in a SQLite store; show a trend with its steps."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from harness.commands import add_command, add_output

DESCRIPTION = """Latency history across commits, in a SQLite file (default results/history.sqlite).

  add RESULTS...   store every graph of results.json files, keyed by device, model, variant,
                   precision, batch, git commit (--commit, else $GITHUB_SHA, else the harness
                   checkout's commit recorded in the file) and environment (backend settings
                   and versions, processor). Each file is one transaction; adding a file twice
                   adds nothing.
  show             print each series' trend of one device (and model) with the steps found, and
                   write a plot (--plot, PNG).

Steps are found by a piecewise-constant fit that weighs each point by its own 95% interval,
widened by the run-to-run scatter, and keeps a step only when it is significant (see
harness/history.py); `harness compare --against-history` gates a new run on it."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "history",
        "latency history in SQLite: add results, show trends",
        DESCRIPTION,
        "harness history add results/xavier/results.json && "
        "harness history show --device xavier --model resnet56",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add",
        help="store results files in the history",
        description="Store every graph of results files in the history.",
    )
    add.add_argument("results", nargs="+", type=Path, help="results.json files")
    add.add_argument(
        "--commit",
        default=None,
        help="the commit benchmarked (default: $GITHUB_SHA, else the file's git_sha)",
    )
    show = actions.add_parser(
        "show",
        help="trend and steps of a device's series, with a plot",
        description="Print the trend of each series and write a plot.",
    )
    show.add_argument("--device", required=True, help="the device profile's name")
    show.add_argument("--model", default=None, help="one model (default: every model)")
    show.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG to write (default: results/history-<device>[-<model>].png)",
    )
    add_output(
        show,
        "--markdown",
        help="also write a Markdown section (steps, tables, Mermaid charts) here, e.g. "
        "for $GITHUB_STEP_SUMMARY",
    )
    for sub in (add, show):
        sub.add_argument(
            "--history",
            type=Path,
            default=None,
            help="the SQLite file (default: results/history.sqlite)",
        )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.history import DEFAULT_PATH

    path = args.history or DEFAULT_PATH
    return _add(args, path) if args.action == "add" else _show(args, path)


def commit_for(results, commit: Optional[str]) -> str:
    """The commit a results file measured: given, else $GITHUB_SHA, else its recorded git_sha."""
    return (
        commit
        or os.environ.get("GITHUB_SHA")
        or str(results.environment_before.get("git_sha") or "unknown")
    )


def _add(args, path: Path) -> int:
    from harness.history import History, commit_details
    from harness.outputs import check_output
    from harness.results import read_results

    documents = [read_results(p) for p in args.results]  # all valid before anything is written
    check_output(path, flag="--history")
    with History(path) as history:
        for results in documents:
            commit = commit_for(results, args.commit)
            added, present = history.add(results, commit, commit_details(commit))
            note = f", {present} already there" if present else ""
            print(
                f"{results.source}: {added} point(s) added to {path} "
                f"({results.device_name}, commit {commit[:12]}{note})"
            )
            if results.complete is False:
                print(
                    f"warning: {results.source} did not complete (complete: false): "
                    "its points are partial",
                    file=sys.stderr,
                )
    return 0


def _show(args, path: Path) -> int:
    from harness.errors import HarnessError
    from harness.history import History, detect_steps, series_of, to_markdown
    from harness.outputs import check_distinct, check_output, file_stem

    suffix = f"-{args.model}" if args.model else ""
    plot = args.plot or Path("results") / f"history-{file_stem(args.device + suffix)}.png"
    check_output(plot, flag="--plot", inputs=[path])
    if args.markdown:
        check_distinct([(f"--plot {plot}", plot), (f"--markdown {args.markdown}", args.markdown)])
    with History(path, create=False) as history:
        points = history.points(args.device, args.model)
    if not points:
        what = f"device {args.device!r}" + (f", model {args.model!r}" if args.model else "")
        raise HarnessError(f"{path} holds no results of {what}")
    groups = series_of(points)
    found = {}
    for key, series in groups.items():
        steps = detect_steps(series)
        found[key] = steps
        _print_series(key, series, steps)
    _plot(groups, found, plot, f"{args.device}{' ' + args.model if args.model else ''}")
    print(f"wrote {plot}")
    if args.markdown:
        from harness.onnx_io import write_text_atomic

        print(f"wrote {write_text_atomic(args.markdown, to_markdown(args.device, groups, found))}")
    return 0


def _print_series(key, series, steps) -> None:
    from harness.history import series_label

    print(f"\n{key[0]} {series_label(key)}, environment {key[6]}: {len(series)} run(s)")
    at = {step.index: step for step in steps}
    for i, point in enumerate(series):
        step = at.get(i)
        mark = f"  <- {step.describe()}" if step else ""
        mark += f"  (loaded: {point.loaded})" if point.loaded else ""
        print(
            f"  {point.created:<25} {point.git_commit[:12]:<12} {point.median_ms:9.4f} ms "
            f"[{point.ci_low_ms:.4f}, {point.ci_high_ms:.4f}]{mark}"
        )
    if not steps:
        print("  no significant step")


def _plot(groups, found, out: Path, title: str) -> None:
    """One panel per series (its own y axis: a 0.1 ms model is not a flat line under a 12 ms
    one), runs labelled by commit, steps dashed (pending: dotted), loaded runs crossed; written
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.history import series_label

    rows = len(groups)
    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.6 * rows + 0.8), squeeze=False)
    for ax, (key, series) in zip(axes[:, 0], groups.items()):
        x = list(range(len(series)))
        y = [p.median_ms for p in series]
        err = [
            [p.median_ms - p.ci_low_ms for p in series],
            [p.ci_high_ms - p.median_ms for p in series],
        ]
        ax.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, lw=1)
        loaded = [(i, p.median_ms) for i, p in enumerate(series) if p.loaded]
        if loaded:
            ax.plot(*zip(*loaded), "x", color="tab:orange", ms=9, label="loaded machine")
            ax.legend(fontsize=7, loc="best")
        for step in found[key]:
            color = "tab:red" if step.kind == "regression" else "tab:green"
            ax.axvline(step.index - 0.5, color=color, ls="--" if step.confirmed else ":", lw=1)
            ax.annotate(
                f"{step.change:+.1%}" + ("" if step.confirmed else " (1 run)"),
                (step.index - 0.5, step.after_ms),
                color=color,
                fontsize=8,
                xytext=(3, -10),
                textcoords="offset points",
            )
        ax.set_xticks(x)
        ax.set_xticklabels(
            [p.git_commit[:7] for p in series], rotation=45 if len(x) > 8 else 0, fontsize=7
        )
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_title(series_label(key), fontsize=9)
        ax.set_ylabel("median ms (95% CI)", fontsize=8)
        ax.margins(y=0.2)
    axes[-1, 0].set_xlabel("commit (oldest first)")
    fig.suptitle(f"latency history: {title} (dashed: steps found; red: regression)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, out)
