"""Every Python example in docs/ci.md runs as a test, in a pytester run of the plugin."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import conv_net

pytest_plugins = ["pytester"]

DOC = Path(__file__).resolve().parent.parent / "docs" / "ci.md"
FACTORY = """import torch


def build():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
"""


def _blocks() -> list:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


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
