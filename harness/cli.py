"""The ``harness`` command line: one sub-command per stage, each in ``harness/commands/<name>.py``.

Every command module has ``register(subparsers)``, which adds its parser and sets ``func`` to its entry point.
User mistakes raise ``HarnessError``: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from harness import __version__
from harness.errors import HarnessError

COMMANDS = ("bench", "export", "fold", "time", "build", "compare", "report", "suite", "lut", "plan",
            "profiles", "env", "calibrate")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark compressed CNNs on edge devices: export, fold, build, time, report.",
        epilog="Example: harness bench --device host --models resnet56,lenet5",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
