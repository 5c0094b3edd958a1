"""Regression verdicts and exit codes of `harness compare` on results files with known shifts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.compare import parse_threshold
from harness.errors import HarnessError
from harness.results import new_results, write_results
from harness.timing import summarize


def _results(path: Path, shifts: dict, device: str = "host", seed: int = 0, batch: int = 1) -> Path:
    """A results file whose graphs have log-normal latencies around 1 ms times their shift."""
    rng = np.random.default_rng(seed)
    results = new_results(["test"], {"name": device}, {})
    for (model, variant), shift in shifts.items():
        samples = list(shift * rng.lognormal(0.0, 0.03, 400))
        results["runs"].append({
            "id": f"{model}/{variant}", "model": model, "variant": variant, "folded": False,
            "backend": {"backend": "onnxruntime"}, "precision": "fp32", "batch": batch, "input_shape": [1, 3, 8, 8],
            "series_ms": {"latency_ms": samples}, "stats": dataclasses.asdict(summarize(samples))})
    write_results(results, path)
    return path


GRAPHS = [("resnet20", "baseline"), ("resnet20", "dc-1x1")]


@pytest.mark.parametrize("shift,verdict,code", [(1.0, "same", 0), (1.02, "same", 0), (1.20, "slower", 1),
                                                (0.80, "faster", 0)])
def test_verdicts_and_exit_codes(tmp_path, capsys, shift, verdict, code):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: shift}, seed=1)
    md = tmp_path / "comment.md"
    assert main(["compare", str(base), str(new), "--threshold", "5%", "--markdown", str(md)]) == code
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "| dc-1x1 |" in line)
    assert verdict in row
    assert md.read_text() == out
    assert ("Latency regression" in out) == (verdict == "slower")


def test_threshold_decides_what_counts(tmp_path):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: 1.10}, seed=1)
    assert main(["compare", str(base), str(new), "--threshold", "5%"]) == 1
    assert main(["compare", str(base), str(new), "--threshold", "0.25"]) == 0


@pytest.mark.parametrize("case", ["device", "models", "batch", "schema", "missing", "threshold"])
def test_incomparable_inputs_exit_2(tmp_path, capsys, case):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = tmp_path / "new.json"
    argv = ["compare", str(base), str(new)]
    if case == "device":
        _results(new, {g: 1.0 for g in GRAPHS}, device="xavier")
        expected = "different devices"
    elif case == "models":
        _results(new, {GRAPHS[0]: 1.0, ("vgg16", "baseline"): 1.0})
        expected = "only in base ['resnet20/dc-1x1'], only in new ['vgg16/baseline']"
    elif case == "batch":
        _results(new, {g: 1.0 for g in GRAPHS}, batch=8)
        expected = "batch differs"
    elif case == "schema":
        data = json.loads(base.read_text())
        data["schema"] = 99
        new.write_text(json.dumps(data))
        expected = "schema 99"
    elif case == "missing":
        expected = "does not exist"
    else:
        _results(new, {g: 1.0 for g in GRAPHS})
        argv += ["--threshold", "five"]
        expected = "invalid threshold"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_parse_threshold():
    assert parse_threshold("5%") == pytest.approx(0.05)
    assert parse_threshold("0.1") == pytest.approx(0.1)
    with pytest.raises(HarnessError):
        parse_threshold("150%")
