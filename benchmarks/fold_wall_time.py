"""Wall time of ``harness fold`` on ResNet-50, the whole process: start-up, imports, load, fold,
verification and write, as a user sees it.

Exports the zoo's ResNet-50 (baseline and the depth-compressed ``dc-act2``) at 3x224x224, then runs
``harness fold`` on each ``--repeats`` times in a fresh process and reports the median wall time,
CPU time (user + sys, the children's) and the command's own breakdown line. ``--pythonpath`` times
another checkout of the package (a commit before a change) with the same interpreter:

    .venv/bin/python benchmarks/fold_wall_time.py --repeats 5
    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/fold_wall_time.py --pythonpath /tmp/before
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

CASES = (  # (zoo model, variant, --merge)
    ("resnet50", "baseline", "auto"),
    ("resnet50", "dc-act2", "auto"),
    ("resnet50", "dc-act2", "all"),
)


def _harness(args: List[str], pythonpath: Optional[str]) -> Tuple[float, float, str]:
    """Run ``harness <args>`` in a fresh interpreter: (wall s, CPU s of the child, its output)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def _breakdown(output: str) -> str:
    """The command's own ``time:`` line (absent in older versions: '')."""
    return next((line.strip() for line in output.splitlines() if "time: load" in line), "")


def main(argv: List[str]) -> int:
    """Time the cases and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pythonpath", default=None, help="checkout whose harness to time")
    parser.add_argument("--device", default="host")
    args = parser.parse_args(argv)
    rows: Dict[Tuple[str, str, str], Tuple[float, float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, variant, merge in CASES:
            source = Path(tmp) / f"{model}-{variant}.onnx"
            if not source.exists():
                _harness(["export", model, "--variant", variant, "-o", str(source)], None)
            command = ["fold", str(source), "-o", str(Path(tmp) / "folded.onnx")]
            command += ["--device", args.device, "--merge", merge]
            runs = [_harness(command, args.pythonpath) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            rows[(model, variant, merge)] = (wall, cpu, _breakdown(runs[-1][2]))
            print(
                f"{model} {variant} --merge {merge}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True
            )
    print()
    print("| model | --merge | wall s (median) | CPU s (median) | breakdown printed (last run) |")
    print("|---|---|---|---|---|")
    for (model, variant, merge), (wall, cpu, line) in rows.items():
        print(f"| {model} {variant} | {merge} | {wall:.2f} | {cpu:.2f} | {line} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
