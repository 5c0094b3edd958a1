"""The ``harness`` command line: one sub-command per stage, each in ``harness/commands/<name>.py``.

Every command module has ``register(subparsers)``, which adds its parser and sets ``func`` to its
entry point. User mistakes raise ``HarnessError``: one line on stderr, exit code 2, no traceback.
So do argument errors, output paths that cannot be written (checked before any work), OSError while
reading or writing, and anything user code (a model factory) raises, ``SystemExit`` included;
Ctrl-C exits with 130. An unexpected exception is a bug: one line saying so, exit 2
(``HARNESS_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import List, NoReturn, Optional

from harness import __version__
from harness.errors import HarnessError, first_line

COMMANDS = (
    "bench",
    "export",
    "fold",
    "time",
    "build",
    "compare",
    "report",
    "suite",
    "lut",
    "plan",
    "profiles",
    "env",
    "calibrate",
    "history",
    "dashboard",
    "verify",
    "doctor",
    "explain",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are HarnessErrors: one line, exit 2, as every mistake."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage and exiting (``main`` prints the one line)."""
        raise HarnessError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = _Parser(
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


def _check_outputs(args: argparse.Namespace) -> None:
    """Check every output path the command declared with ``add_output``, before it does any work."""
    from harness.outputs import FILE, check_distinct, check_output

    checks = getattr(args, "output_checks", None) or []
    outputs = {dest for dest, *_ in checks}
    inputs = [value for dest, value in vars(args).items() if dest not in outputs]
    files = []
    for dest, kind, flag, companions in checks:
        value = getattr(args, dest, None)
        if value is None:
            continue
        check_output(value, kind, flag, inputs)
        if kind == FILE:
            files.append((f"{flag} {value}", value))
        for path, what in companions(value) if companions else []:
            check_output(path, FILE, f"{flag} {value}: its {what}", inputs)
            files.append((f"its {what} {path}", path))
    check_distinct(files)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as the CLI's own one line (``warning: ...``), without the source line."""
    print(f"warning: {first_line(message)}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; returns the process exit code. Python warnings print as one line each."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: Optional[List[str]]) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help and --version exit here (SystemExit 0)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk that fills up, a folder removed or made read-only while running
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or first_line(exc)
        print(f"error: cannot read or write{where}: {reason}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(
            f"error: stopped by SystemExit({exc.code!r}) from the code it ran (a model factory?)",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        if os.environ.get("HARNESS_TRACEBACK"):
            raise
        print(
            f"error: internal error, please report it: {type(exc).__name__}: {first_line(exc)} "
            f"(HARNESS_TRACEBACK=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
