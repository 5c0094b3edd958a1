"""The documentation's reference pages, generated from the code so that they cannot drift.

- ``cli.md``: every command's ``--help``, exactly as the parser prints it (at 100 columns);
- ``profiles.md``: every key of a device profile, from the dataclasses ``harness.profiles``
  validates against, with their types, defaults and the comments beside them in the source;
- ``suite.md`` and ``results.md``: the suite file ``harness.suites`` reads and the results file
  ``harness.results`` reads and writes, from their dataclasses likewise.

``mkdocs.yml`` runs this file as a hook (``on_files`` adds the pages); ``tests/test_docs.py``
checks the CLI page against ``harness COMMAND --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import tokenize
import typing
from typing import Any, Dict, Iterator, List, Tuple

COLUMNS = "100"


def _subcommands(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    """The sub-parsers of ``parser`` (empty for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """``("bench", parser)``, ``("history add", parser)``, ...: every command line's parser."""
    from harness.cli import build_parser

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[Tuple[str, Any]]:
        for name, sub in _subcommands(parser).items():
            full = f"{prefix} {name}".strip()
            yield full, sub
            yield from walk(full, sub)

    yield from walk("", build_parser())


def help_text(parser: argparse.ArgumentParser) -> str:
    """``parser``'s ``--help`` as a terminal of ``COLUMNS`` columns shows it."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    try:
        return parser.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def cli_page() -> str:
    """The CLI reference: one section per command, its ``--help`` verbatim."""
    parts = [
        "# Command-line reference",
        "",
        "Generated from the argument parsers when the site is built: each block is exactly what",
        "`harness COMMAND --help` prints. Every command exits 0 on success, 2 on a user mistake",
        "(one line: `error: ...`); `compare` exits 1 on a regression, `verify` and `doctor` on a",
        "failed check.",
        "",
    ]
    for name, parser in commands():
        parts += [f"## harness {name}", "", "```text", help_text(parser).rstrip(), "```", ""]
    return "\n".join(parts)


def _field_comments(cls: type) -> Dict[str, str]:
    """The comment beside or above each field of dataclass ``cls`` in its source."""
    source = inspect.getsource(cls)
    comments: Dict[str, str] = {}
    pending: List[str] = []
    current = None
    depth = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        elif token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if current and (token.start[0] == current[1] or depth):
                comments[current[0]] = f"{comments.get(current[0], '')} {text}".strip()
            else:
                pending.append(text)
        elif token.type == tokenize.NAME and depth == 0 and token.start[1] == 4:
            if token.string in {f.name for f in dataclasses.fields(cls)}:
                current = (token.string, token.start[0])
                if pending:
                    comments[token.string] = " ".join(pending)
                pending = []
        elif token.type == tokenize.NL and not depth:
            pass
    return comments


def _type_name(hint: Any) -> str:
    """``Optional[int]`` as ``integer or null``, ``List[str]`` as ``list of string``."""
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    origin = getattr(hint, "__origin__", None)
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    if origin is typing.Union:
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(hint.__args__) else inner
    if origin in (list, List):
        return f"list of {_type_name(args[0])}"
    if origin in (dict, Dict):
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if hint is Any:
        return "any"
    if dataclasses.is_dataclass(hint):
        return "mapping"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return "`null`" if field.default is None else f"`{field.default!r}`"
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        return "(section)" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "required"


def dataclass_table(cls: type) -> str:
    """A Markdown table of ``cls``'s fields: key, type, default, and what the source says."""
    from harness.report.formats import markdown_table

    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    rows = [
        [f"`{f.name}`", _type_name(hints[f.name]), _default(f), comments.get(f.name, "")]
        for f in dataclasses.fields(cls)
    ]
    return "\n".join(markdown_table(["key", "type", "default", "meaning"], rows))


def profiles_page() -> str:
    """The device-profile reference: the top level and each section, from ``harness.profiles``."""
    from harness import profiles

    parts = [
        "# Device profile reference",
        "",
        "Generated from the dataclasses `harness/profiles.py` validates a profile against: a key",
        "not listed here, a wrong type or a missing required key is refused with the file and the",
        "key. Profiles live in `device_profiles/*.yaml`; `--device path/to/profile.yaml` loads",
        "any file.",
        "",
        "## Top level",
        "",
        (inspect.getdoc(profiles.Profile) or "").strip(),
        "",
        dataclass_table(profiles.Profile),
        "",
    ]
    hints = typing.get_type_hints(profiles.Profile)
    for field in dataclasses.fields(profiles.Profile):
        section = hints[field.name]
        if dataclasses.is_dataclass(section):
            parts += [f"## `{field.name}`", "", (inspect.getdoc(section) or "").strip(), ""]
            parts += [dataclass_table(section), ""]
    return "\n".join(parts)


def _sections(title: str, intro: List[str], classes: List[Tuple[str, type]]) -> str:
    parts = [f"# {title}", "", *intro, ""]
    for heading, cls in classes:
        parts += [f"## {heading}", "", (inspect.getdoc(cls) or "").strip(), ""]
        parts += [dataclass_table(cls), ""]
    return "\n".join(parts)


def suite_page() -> str:
    """The suite-file reference, from the dataclasses ``harness.suites`` validates against."""
    from harness import suites

    return _sections(
        "Suite file reference",
        [
            "Generated from the dataclasses `harness/suites.py` validates a suite file against",
            "(`harness bench --suite suite.yaml`). Paths are relative to the file; a model source",
            "is a zoo name, `zoo:variant`, `pkg.module:factory`, `path/to/file.py:factory` or an",
            "`.onnx` file. A problem is one line naming the file and the key, before any work.",
        ],
        [("Top level", suites.SuiteDocument), ("Each entry of `models`", suites.SuiteEntry)],
    )


def results_page() -> str:
    """The results-file reference, from the typed model ``harness.results`` reads and writes."""
    from harness import results

    return _sections(
        "Results file reference",
        [
            "Generated from the typed model in `harness/results.py`, which `bench` and `time`",
            f"write (schema {results.SCHEMA_VERSION}) and every reader validates; keys it does",
            "not know are kept and written back. Names are the model's; in the file, `profile`,",
            "the environments and the device's `warnings` sit under `device`.",
        ],
        [
            ("The file", results.Results),
            ("Each entry of `runs`", results.Run),
            ("A run's `stats`", results.Stats),
            ("Each entry of `comparisons`", results.Comparison),
        ],
    )


PAGES = {
    "reference/cli.md": cli_page,
    "reference/profiles.md": profiles_page,
    "reference/suite.md": suite_page,
    "reference/results.md": results_page,
}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated reference pages to the site."""
    from mkdocs.structure.files import File

    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files
