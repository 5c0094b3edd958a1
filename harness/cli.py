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
import re
import signal
import sys
import threading
import warnings
from typing import Any, List, NoReturn, Optional, Tuple

from harness import __version__
from harness.errors import HarnessError, cut, first_line

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

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse does, remembering the words given (``error`` names an unknown option)."""
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage and exiting (``main`` prints the one line). An
        option the command does not have is named first, before a missing required one."""
        options = self._option_string_actions
        unknown = [
            word
            for word in getattr(self, "_given", [])
            if word.startswith("-")
            and word != "-"
            and not any(o.startswith(word.split("=")[0]) for o in options)
            and not word[1:2].isdigit()
        ]
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)}"
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


def _message(exc: object, most: int = 1000) -> str:
    """A refusal as one line of at most ``most`` characters, whatever value it quotes."""
    return cut(" ".join(str(exc).split()), most)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as the CLI's own one line (``warning: ...``), without the source line."""
    print(f"warning: {first_line(message)}", file=sys.stderr)


class _SafeStream:
    """stdout or stderr as the commands print to it: output that cannot be shown never stops a
    command. A closed pipe (``harness time m.onnx --json t.json | head -1``) or a closed stream
    drops what follows (the results files are written all the same), and characters the stream's
    encoding lacks (a verdict's emoji on an ASCII terminal, ``LC_ALL=C``) print as ``?``."""

    def __init__(self, stream: Any) -> None:
        self.closed_pipe = False
        self._stream = stream if stream is not None else open(os.devnull, "w")

    def write(self, text: str) -> int:
        """Write ``text``, or drop it when the stream's reader is gone."""
        if not self.closed_pipe:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                self.write(text.encode(encoding, "replace").decode(encoding))
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self.closed_pipe = True
        return len(text)

    def flush(self) -> None:
        """Flush, unless the stream's reader is gone."""
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self.closed_pipe = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def release(self) -> None:
        """After a closed pipe, point the stream's descriptor at /dev/null, so that Python's own
        flush at exit does not report the pipe again."""
        if self.closed_pipe:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError, AttributeError):
                pass  # not a real descriptor (a test's capture): nothing flushes it at exit


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def onnxruntime_numpy_problem() -> str:
    """Why the installed ONNX Runtime and numpy cannot be imported together ('' if they can).

    ONNX Runtime before 1.19 was built against numpy 1 and crashes the interpreter on import under
    numpy 2; read from the package metadata, without importing either.
    """
    from importlib import metadata

    try:
        ort, numpy = metadata.version("onnxruntime"), metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return ""
    if _version(ort) < (1, 19) and _version(numpy) >= (2,):
        return (
            f"onnxruntime {ort} crashes on import with numpy {numpy}: "
            f"pip install 'onnxruntime>=1.19' (or 'numpy<2')"
        )
    return ""


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI; returns the process exit code. Python warnings print as one line each; output
    that cannot be shown (a closed pipe, an ASCII terminal) never fails a command; SIGTERM stops
    a command as Ctrl-C does (what was measured is kept)."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _SafeStream(sys.stdout), _SafeStream(sys.stderr)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return _main(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        for wrapper in (sys.stdout, sys.stderr):
            if isinstance(wrapper, _SafeStream):
                wrapper.flush()
                wrapper.release()
        sys.stdout, sys.stderr = streams


def _main(argv: Optional[List[str]]) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help and --version exit here (SystemExit 0)
    except HarnessError as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return exc.exit_code
    try:
        problem = onnxruntime_numpy_problem()
        if problem:
            raise HarnessError(problem)
        _check_outputs(args)
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a disk that fills up, a folder removed or made read-only while running
        where = f" {exc.filename}" if exc.filename else ""
        reason = exc.strerror or first_line(exc)
        print(f"error: {_message(f'cannot read or write{where}: {reason}')}", file=sys.stderr)
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
            f"error: internal error, please report it: {type(exc).__name__}: "
            f"{_message(first_line(exc), 300)} (HARNESS_TRACEBACK=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
