"""Output paths: checked before any work starts, and measured data never lost when a write fails.

Runs on the device too: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Tuple, Union

from harness.errors import HarnessError

FILE = "file"
FOLDER = "folder"
PathLike = Union[str, "os.PathLike[str]"]


def is_special_file(path: PathLike) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device node such as
    /dev/null, a FIFO, a socket): written in place, never replaced by a rename."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (``Path('.')`` for a relative path)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``: a check that holds for root, /sys and /proc too."""
    fd, probe = tempfile.mkstemp(prefix=".harness-probe-", dir=str(folder))
    os.close(fd)
    os.unlink(probe)


def _input_files(values: Iterable[Any]) -> Iterable[Path]:
    """The existing files among argument values (paths or strings, or lists of them)."""
    for value in values:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, Path)) and item and os.path.isfile(item):
                yield Path(item)


def check_output(
    path: PathLike, kind: str = FILE, flag: str = "-o", inputs: Iterable[Any] = ()
) -> None:
    """Refuse, with one line naming ``flag``, an output that cannot be written where asked.

    ``kind`` is ``FILE`` or ``FOLDER``. Refused: a folder where a file is needed (or an existing
    file where a folder is), a path under an existing file, a path whose nearest existing folder
    does not take a new file (checked by creating and removing one), and a file that is one of
    ``inputs`` (the command's other argument values). Nothing is created.
    """
    path = Path(path)
    if kind == FILE and path.is_dir():
        raise HarnessError(f"{flag} {path} is a folder; give a file path")
    if kind == FILE and is_special_file(path):
        _check_special(path, flag)
        return
    if kind == FOLDER and os.path.lexists(path) and not path.is_dir():
        raise HarnessError(f"{flag} {path} is an existing file; give a folder")
    if kind == FILE and path.is_file():
        for source in _input_files(inputs):
            if os.path.samefile(source, path):
                raise HarnessError(f"{flag} {path} is also an input: writing it would destroy it")
    ancestor = _nearest_existing(path.parent if kind == FILE else path)
    if not ancestor.is_dir():
        raise HarnessError(f"{flag} {path} lies under the file {ancestor}")
    try:
        _probe_writable(ancestor)
    except OSError as exc:
        raise HarnessError(
            f"{flag} {path} cannot be written: {ancestor} does not take new files "
            f"({exc.strerror or type(exc).__name__})"
        ) from None


def _check_special(path: Path, flag: str) -> None:
    """A device node or FIFO is written in place: a character device or FIFO this user may write;
    anything else (a block device, a socket) is refused."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise HarnessError(f"{flag} {path} is a block device or socket, not a file: not written")
    if not os.access(path, os.W_OK):
        raise HarnessError(f"{flag} {path} cannot be written: permission denied")


def check_distinct(outputs: Iterable[Tuple[str, PathLike]]) -> None:
    """Refuse two of a command's outputs (each ``(what it is, path)``) that name one file: the
    second written would replace the first."""
    seen: Dict[str, str] = {}
    for what, path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise HarnessError(
                f"{seen[key]} and {what} are the same file: give each output its own path"
            )
        seen[key] = what


def save_fallback(text: str, name: str) -> Path:
    """Write ``text`` to a new file in the temporary folder (else the working folder); its path."""
    stem, suffix = os.path.splitext(os.path.basename(name) or "output")
    for folder in (tempfile.gettempdir(), os.getcwd()):
        try:
            fd, fallback = tempfile.mkstemp(prefix=f"harness-{stem}-", suffix=suffix, dir=folder)
        except OSError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return Path(fallback)
    raise HarnessError(
        f"could not write {name} anywhere (neither {tempfile.gettempdir()} nor "
        f"{os.getcwd()} takes new files): its contents are lost"
    )


def write_measured(path: PathLike, text: str) -> Path:
    """Write measured data atomically to ``path``; if that fails, save it elsewhere and say where.

    Raises ``HarnessError`` naming the fallback file when ``path`` could not be written, so that the
    command exits 2 with the measurements kept.
    """
    from harness.onnx_io import write_text_atomic

    try:
        return write_text_atomic(path, text)
    except (OSError, HarnessError) as exc:  # HarnessError: a FIFO that nothing reads any more
        fallback = save_fallback(text, Path(path).name)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise HarnessError(
            f"cannot write {path} ({reason}); the measured data were saved to {fallback}"
        ) from None


@contextlib.contextmanager
def quiet_native(*descriptors: int) -> Iterator[None]:
    """File descriptors (default 2, stderr) on /dev/null for a moment, for what native code prints
    there: torch's profiler at every start and stop, the ONNX exporter's log of a graph it failed
    on (stdout)."""
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.ExitStack() as stack:
        for fd in descriptors or (2,):
            try:
                saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
            except OSError:  # no such descriptor to quiet
                continue
            os.dup2(devnull, fd)
            os.close(devnull)
            stack.callback(os.close, saved)
            stack.callback(os.dup2, saved, fd)
        yield


def file_stem(text: str, most: int = 60) -> str:
    """``text`` as part of a file name: ASCII letters, digits, '.', '_' and '-', at most ``most``
    characters (a longer one cut and told apart by a short hash of the whole)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    if len(stem) <= most:
        return stem
    return f"{stem[: most - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
