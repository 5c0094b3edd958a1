"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

import math
from typing import Any


class HarnessError(Exception):
    """A problem with the user's input or environment, with what to do about it.

    The CLI catches it, prints ``error: <message>`` to stderr (no traceback) and exits with
    ``exit_code``.
    """

    exit_code = 2


class FoldVerificationError(HarnessError):
    """The folded graph does not compute what the original graph computes."""

    exit_code = 1


def first_line(exc: object) -> str:
    """The first line of an exception's (or a warning's) message, for a one-line report; its type
    where the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters: an error line never embeds a huge value."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (Python >= 3.11's digit limit)
        text = f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>"
    return cut(text, width)


def cut(text: str, most: int) -> str:
    """``text`` cut to ``most`` characters, '...' marking the cut."""
    return text if len(text) <= most else text[: most - 3] + "..."


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a number (not a bool) that a float holds: not nan or infinite, nor an
    int past float's range (``math.isfinite`` raises on those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# the longest model, variant or device name (a path's length: a factory's reference or a file's
# path can name a model); charts cut them and file names hash them
MAX_NAME = 4096


def name_problem(name: str, most: int = MAX_NAME) -> str:
    """Why ``name`` cannot label a table, chart or file ('' when it can): 1 to ``most`` printable
    characters, no newline."""
    if 0 < len(name) <= most and name.isprintable():
        return ""
    return f"{shown(name, 60)} is not a name (1 to {most} printable characters)"
