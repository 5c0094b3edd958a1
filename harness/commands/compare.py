"""``harness compare``: CI regression gating on latency between two results files."""

from __future__ import annotations

from pathlib import Path

from harness.commands import add_command, add_output

DESCRIPTION = """Compare two results files of the same suite on the same device (from `harness bench`). For each
graph: the change in median latency with a 95% bootstrap interval, and a verdict: slower when the whole interval
lies above +THRESHOLD, faster when below -THRESHOLD, same otherwise. Exit status: 0 when nothing is slower, 1
when something is, 2 when the files cannot be compared (different devices, models, shapes, schema)."""


def register(subparsers) -> None:
    parser = add_command(subparsers, "compare", "compare two results files; exit 1 on a latency regression",
                         DESCRIPTION, "harness compare baseline/results.json results/host/results.json "
                         "--threshold 5% --markdown comment.md")
    parser.add_argument("base", type=Path, help="results.json of the reference run")
    parser.add_argument("new", type=Path, help="results.json of the run to judge")
    parser.add_argument("--threshold", default="5%", help="slowdown tolerated, e.g. 5%% or 0.05 (default 5%%)")
    add_output(parser, "--markdown", help="also write the table here (PR comment)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.compare import compare_files, parse_threshold
    from harness.onnx_io import write_text_atomic

    threshold = parse_threshold(args.threshold)
    changes, markdown = compare_files(args.base, args.new, threshold)
    print(markdown, end="")
    if args.markdown:
        write_text_atomic(args.markdown, markdown)
    return 1 if any(c.verdict == "slower" for c in changes) else 0
