"""The README and docs/ as tests: every runnable block runs, every option named exists, the CLI
reference is what ``--help`` prints, and the site builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.markdown_examples import Block, is_slow, read_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent


def _reference():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options() -> Dict[str, Set[str]]:
    """Every command line (``bench``, ``history add``) and the option strings its parser takes."""
    return {
        name: {s for action in parser._actions for s in action.option_strings}
        for name, parser in _reference().commands()
    }


COMMAND_LINE = re.compile(r"harness ((?:[a-z]+)(?: [a-z]+)?)((?:[ =][^`'\"\n|;)]*)?)")


def _named_options(text: str, options: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """``(command, flag)`` for each flag a ``harness COMMAND ...`` line in ``text`` names."""
    found = []
    for match in COMMAND_LINE.finditer(text):
        words = match.group(1).split()
        rest = match.group(2)
        command = " ".join(words)
        if command not in options:  # "harness history show": the second word is the sub-command
            command, rest = words[0], (" ".join(words[1:]) + rest)
        if command not in options:
            continue
        for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
            found.append((command, flag))
    return found


def test_every_option_a_message_or_page_names_exists():
    """No ``harness export --model`` hint for a command without ``--model``: the text and the CLI
    cannot drift (source strings, README and docs)."""
    options = _options()
    sources = [*(ROOT / "harness").rglob("*.py"), *PAGES]
    wrong = []
    checked = 0
    for path in sources:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for command, flag in _named_options(line, options):
                checked += 1
                if flag not in options[command]:
                    wrong.append(f"{path.relative_to(ROOT)}:{number}: harness {command} {flag}")
    assert checked > 50, "the scan found too few command lines: is the pattern broken?"
    assert not wrong, "options that the command does not have:\n" + "\n".join(wrong)


def test_the_scan_catches_an_option_a_command_lacks():
    options = _options()
    named = _named_options("copy `harness export --model rn18c:baseline` into a shell", options)
    assert ("export", "--model") in named and "--model" not in options["export"]
    assert ("history show", "--device") in _named_options(
        "harness history show --device x", options
    )


@pytest.mark.parametrize("command", sorted(_options()))
def test_cli_reference_is_what_help_prints(command):
    """The generated page holds each command's ``--help`` exactly as the terminal shows it."""
    page = _reference().cli_page()
    shown = subprocess.run(
        [str(BIN / "harness"), *command.split(), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": _reference().COLUMNS},
        check=True,
    ).stdout.rstrip()
    assert f"## harness {command}\n\n```text\n{shown}\n```" in page


def test_profile_reference_lists_every_key_the_validator_knows():
    from dataclasses import fields

    from harness import profiles

    page = _reference().profiles_page()
    for section in (profiles.Profile, profiles.TimingSettings, profiles.TensorRTSettings):
        for field in fields(section):
            assert f"| `{field.name}` |" in page, field.name
    # the comments beside the fields in the source are the documentation
    assert "the profile the device loads" in page


def test_every_block_says_what_it_is():
    """A block without a language could be a command nobody runs: each one is ``bash`` or
    ``python`` (run), has a ``title`` (a file written), or is plainly shown (``text``, ``yaml``)."""
    unlabelled = [b.where for page in PAGES for b in read_blocks(page) if not b.language]
    assert not unlabelled, f"blocks without a language: {unlabelled}"
    runs = [b for page in PAGES for b in read_blocks(page) if b.runs]
    assert len(runs) >= 8, "the README tour and the how-tos run as tests"


def test_skipped_blocks_are_few_and_say_why():
    skipped = [b for page in PAGES for b in read_blocks(page) if b.skip]
    assert all(len(b.skip) > 10 for b in skipped), [b.where for b in skipped]
    assert len(skipped) <= 12, [b.where for b in skipped]


def _runnable_pages() -> List[Path]:
    return [p for p in PAGES if any(b.runs for b in read_blocks(p))]


def _run_block(block: Block, scratch: Path, env: Dict[str, str]) -> None:
    if block.language == "bash":
        argv = ["bash", "-euo", "pipefail", "-c", block.text]
    else:
        argv = [sys.executable, "-c", block.text]
    done = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        pytest.fail(
            f"{block.where} exited {done.returncode}:\n{block.text}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, id=str(p.relative_to(ROOT)), marks=[pytest.mark.slow] if is_slow(p) else [])
        for p in _runnable_pages()
    ],
)
def test_page_examples_run_as_written(page, tmp_path):
    """A page's blocks, in order, in one scratch folder: files written, commands and scripts run."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    skipped = []
    for block in read_blocks(page):
        if block.skip:
            skipped.append(f"{block.where}: {block.skip}")
        elif block.title:
            target = tmp_path / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.runs:
            _run_block(block, tmp_path, env)
    if skipped:
        print("left out:", *skipped, sep="\n  ")


def test_reader_finds_titles_skips_and_languages(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        '```yaml title="suite.yaml"\nmodels: []\n```\n\n<!-- example: skip needs a GPU -->\n'
        "```bash\nharness doctor --device xavier\n```\n\n```text\nnot run\n```\n",
        encoding="utf-8",
    )
    blocks = read_blocks(page)
    assert [(b.language, b.title, b.skip, b.runs) for b in blocks] == [
        ("yaml", "suite.yaml", None, False),
        ("bash", None, "needs a GPU", False),
        ("text", None, None, False),
    ]
    assert blocks[0].text == "models: []\n" and blocks[1].line == 6


@pytest.mark.skipif(shutil.which("mkdocs", path=str(BIN)) is None, reason="mkdocs not installed")
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link, a page missing from the nav or a bad hook fails."""
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
