"""One module per CLI sub-command; each exposes ``register(subparsers)``.

The arguments several commands share (``--device``, ``-o/--out``, ``--batch``, ``--precision`` and
every other output path) are declared here once, so that they parse, check and read the same
everywhere. Output paths declared with ``add_output`` are checked by ``harness.cli`` before the
command does any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from harness.backends import BACKENDS
from harness.errors import shown
from harness.onnx_io import MAX_DIM, InputShapes
from harness.outputs import FILE, FOLDER
from harness.profiles import BOUNDS, PRECISIONS

OUTPUT_FLAGS = ("-o", "--out", "--output")


def add_command(
    subparsers, name: str, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` says what it does and shows an example."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"Example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def positive_int(text: str, most: int = MAX_DIM) -> int:
    """argparse type: an integer from 1 to ``most`` (``--batch 0`` is refused while parsing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {shown(text)}"
        ) from None
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer of at most {most}, got {shown(value)}"
        )
    return value


def batch_size(text: str) -> int:
    """argparse type: a batch size in the range a profile's ``batch_sizes`` must lie in."""
    return positive_int(text, int(BOUNDS["batch_sizes"].high))


def add_device(
    parser: argparse.ArgumentParser, default: str = "host", purpose: str = "", several: bool = False
) -> None:
    """``--device``: a profile name from device_profiles/ or a YAML path (``several``: a list)."""
    what = "device profile name or YAML path"
    if several:
        what += ", or several, comma-separated"
    parser.add_argument(
        "--device",
        default=default,
        help=f"{what}{'; ' + purpose if purpose else ''} (default: {default})",
    )


def add_batch(
    parser: argparse.ArgumentParser,
    default: Optional[int] = None,
    help: str = "",
    default_text: str = "the profile's first",
) -> None:
    """``--batch``: a positive integer; ``default_text`` says what None stands for."""
    said = f"default: {default if default is not None else default_text}"
    parser.add_argument(
        "--batch", type=batch_size, default=default, help=f"{help or 'batch size'} ({said})"
    )


def add_precision(parser: argparse.ArgumentParser) -> None:
    """``--precision``: fp32, fp16 or int8; by default the profile's first precision."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32, fp16 or int8 (default: the profile's first)",
    )


def add_output(
    parser: argparse.ArgumentParser,
    *flags: str,
    kind: str = FILE,
    help: str,
    companions: Optional[Callable[[Path], List[Tuple[Path, str]]]] = None,
    **kwargs: Any,
) -> None:
    """Declare an output path, checked before any work (see ``harness.outputs.check_output``).

    Without ``flags`` it is ``-o/--out/--output`` (the same spelling in every command); ``kind`` is
    ``harness.outputs.FILE`` or ``FOLDER``; ``companions`` gives the files written beside it, each
    with what it is (checked as outputs too); other keyword arguments go to ``add_argument``
    (``dest``, ``default``, ``required``).
    """
    if kind not in (FILE, FOLDER):
        raise ValueError(f"kind must be {FILE!r} or {FOLDER!r}")
    action = parser.add_argument(*(flags or OUTPUT_FLAGS), type=Path, help=help, **kwargs)
    checks = list(parser.get_default("output_checks") or [])
    checks.append((action.dest, kind, "/".join(action.option_strings), companions))
    parser.set_defaults(output_checks=checks)


def add_backend(parser: argparse.ArgumentParser, purpose: str = "run on") -> None:
    """``--backend``: one of the known backends, instead of the profile's."""
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default=None,
        help=f"{purpose} this backend instead of the profile's",
    )


def add_input_shapes(
    parser: argparse.ArgumentParser,
    what: str = "bind the dynamic dims of an ONNX model's input",
    named: bool = True,
) -> None:
    """``--input-shape 3x320x320`` (one sample, without the batch) and, with ``named``, ``--shapes
    images:1x3x320x320,...`` (whole shapes per input, as trtexec and Polygraphy write them)."""
    parser.add_argument(
        "--input-shape",
        default=None,
        help=f"input shape without the batch, e.g. 3x320x320: {what}",
    )
    if named:
        parser.add_argument(
            "--shapes",
            default=None,
            help="whole shapes per input, e.g. images:1x3x320x320,mask:1x1x320x320 (multi-input "
            "models; the batch dim included)",
        )


def input_shapes_arg(args: argparse.Namespace) -> InputShapes:
    """The ``InputShapes`` that ``--input-shape`` and ``--shapes`` give (empty when neither)."""
    return InputShapes.parse(getattr(args, "input_shape", None), getattr(args, "shapes", None))


def add_local(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--local``: ``verb`` on this machine even when the profile names a remote device."""
    parser.add_argument(
        "--local",
        action="store_true",
        help=f"{verb} on this machine even when the profile names a remote device",
    )


def refuse_remote(profile: Any, args: argparse.Namespace, command: str) -> None:
    """Refuse to measure here for a profile that names a remote device (unless ``--local``): the
    figures would be this machine's, labelled with the device's name."""
    from harness.errors import HarnessError

    if profile.remote.host and not getattr(args, "local", False):
        raise HarnessError(
            f"profile {profile.name} names the remote device {profile.remote.host}, and "
            f"harness {command} measures on the machine it runs on: run it on the device, or "
            "pass --local to measure this machine under that name"
        )
