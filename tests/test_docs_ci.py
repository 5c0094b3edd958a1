"""Every Python example in docs/ci.md runs as a test, in a pytester run of the plugin."""

from __future__ import annotations

import re
from pathlib import Path

from harness.cli import build_parser
from tests.conftest import conv_net
from tests.markdown_examples import read_blocks

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "ci.md"
FACTORY = """import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
"""


def _blocks(language: str = "python") -> list:
    """The code blocks of docs/ci.md fenced as ``language`` (the docs' one block reader)."""
    return [b.text for b in read_blocks(DOC) if b.language == language and b.title is None]


def _models(folder: Path) -> None:
    """``models/base.onnx`` (four 3x3 convs of 32 channels) and ``models/pruned.onnx`` (one of
    4): the files the examples name."""
    (folder / "models").mkdir()
    conv_net(folder / "models" / "base.onnx", 4, 32)
    conv_net(folder / "models" / "pruned.onnx", 1, 4)


def test_every_python_example_in_ci_md_runs(pytester, fast_profile, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_ci_example_{i}": block})
    _models(pytester.path)
    (pytester.path / "mypkg").mkdir()
    (pytester.path / "mypkg" / "__init__.py").write_text("")
    (pytester.path / "mypkg" / "models.py").write_text(FACTORY)
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    result = pytester.runpytest_subprocess(
        f"--harness-device={fast_profile}", "-p", "no:cacheprovider", "-W", "error::UserWarning"
    )
    tests = sum(len(re.findall(r"^def test_", b, flags=re.M)) for b in blocks)
    result.assert_outcomes(passed=tests)


def _shell_commands(program: str) -> list:
    """The ``program ...`` lines of docs/ci.md's shell blocks (continuations joined)."""
    import shlex

    found = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith(program + " "):
                command = line.split("#")[0].replace('"$GITHUB_SHA"', "abc")
                found.append(shlex.split(command)[1:])
    return found


def test_every_harness_command_in_ci_md_parses():
    """The examples that need a device or a CI: each harness line parses with harness's own
    parser (an unknown flag raises)."""
    commands = _shell_commands("harness")
    assert {argv[0] for argv in commands} >= {"compare", "history"}
    for argv in commands:
        assert build_parser().parse_args(argv).func is not None


def test_every_pytest_command_in_ci_md_takes_its_options(pytester):
    """Each pytest line's options are the plugin's or pytest-benchmark's (its tests folder
    replaced by an empty test file, collected only)."""
    runs = _shell_commands("pytest")
    assert runs
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    for argv in runs:
        result = pytester.runpytest_subprocess(
            "test_nothing.py", *argv[1:], "-p", "no:cacheprovider", "--collect-only"
        )
        assert "unrecognized arguments" not in result.stderr.str(), argv
