"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


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
