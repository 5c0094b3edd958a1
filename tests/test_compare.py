"""Regression verdicts and exit codes of `harness compare` on results files with known shifts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from xml.etree import ElementTree

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
    results["complete"] = True  # a finished run (new_results starts incomplete)
    for (model, variant), shift in shifts.items():
        samples = list(shift * rng.lognormal(0.0, 0.03, 400))
        results["runs"].append(
            {
                "id": f"{model}/{variant}",
                "model": model,
                "variant": variant,
                "folded": False,
                "backend": {"backend": "onnxruntime"},
                "precision": "fp32",
                "batch": batch,
                "input_shape": [1, 3, 8, 8],
                "series_ms": {"latency_ms": samples},
                "stats": dataclasses.asdict(summarize(samples)),
            }
        )
    write_results(results, path)
    return path


GRAPHS = [("resnet20", "baseline"), ("resnet20", "dc-1x1")]


@pytest.mark.parametrize(
    "shift,verdict,code",
    [(1.0, "same", 0), (1.02, "same", 0), (1.20, "slower", 1), (0.80, "faster", 0)],
)
def test_verdicts_and_exit_codes(tmp_path, capsys, shift, verdict, code):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: shift}, seed=1)
    md = tmp_path / "comment.md"
    argv = ["compare", str(base), str(new), "--threshold", "5%", "--markdown", str(md)]
    assert main(argv) == code
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "| dc-1x1 |" in line)
    assert verdict in row
    assert md.read_text() == out
    assert ("Latency regression" in out) == (verdict == "slower")


def test_threshold_decides_what_counts(tmp_path):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: 1.10}, seed=1)
    assert main(["compare", str(base), str(new), "--threshold", "5%"]) == 1
    assert main(["compare", str(base), str(new), "--threshold", "25"]) == 0


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
        expected = "invalid --threshold"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text,value", [("5%", 0.05), ("5", 0.05), ("0.5%", 0.005), ("0", 0.0), ("12.5 %", 0.125)]
)
def test_threshold_is_a_percentage(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("0.05", "ambiguous: the threshold is a percentage, write 0.05% or 5%"),
        ("150%", "at least 0% and below 100%"),
        ("100", "at least 0% and below 100%"),
        ("-5%", "invalid --threshold"),
        ("5 %%", "invalid --threshold"),
    ],
)
def test_ambiguous_or_impossible_thresholds_are_refused(text, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        parse_threshold(text)


def _edit(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _no_series(data):
    del data["runs"][1]["series_ms"]


def _stats_not_object(data):
    data["runs"][0]["stats"] = [1.0, 2.0]


@pytest.mark.parametrize(
    "case,expected",
    [
        ("no series_ms", "runs[1] (resnet20/dc-1x1).series_ms is missing"),
        ("stats not an object", "runs[0] (resnet20/baseline).stats is not an object"),
        ("bad JSON", "is not a JSON results file"),
        ("missing file", "does not exist"),
        ("unwritable --markdown", "--markdown"),
        ("--markdown under a file", "lies under the file"),
        ("--junit is a folder", "is a folder"),
        ("one file", "give two results files"),
    ],
)
def test_every_input_or_output_problem_exits_2_in_one_line(tmp_path, capsys, case, expected):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {g: 1.0 for g in GRAPHS}, seed=1)
    argv = ["compare", str(base), str(new)]
    if case == "no series_ms":
        _edit(new, _no_series)
    elif case == "stats not an object":
        _edit(base, _stats_not_object)
    elif case == "bad JSON":
        new.write_text('{"schema": 2, "runs": [')
    elif case == "missing file":
        new.unlink()
    elif case == "unwritable --markdown":
        argv += ["--markdown", "/proc/harness-comment.md"]
    elif case == "--markdown under a file":
        argv += ["--markdown", str(base / "comment.md")]
    elif case == "--junit is a folder":
        argv += ["--junit", str(tmp_path)]
    else:
        argv = ["compare", str(new)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", err))
    known = {
        "--threshold",
        "--markdown",
        "--junit",
        "--github",
        "--against-history",
        "--history",
        "--help",
    }
    assert flags <= known  # no message names a flag compare does not have (e.g. --model)


def _settings(data):
    for run in data["runs"]:
        run["backend"].update(intra_op_threads=4, version="1.16.0")
    data["device"]["environment_before"] = {"libraries": {"onnxruntime": "1.16.0"}}
    data["complete"] = False


def test_partial_runs_and_different_settings_warn_loudly(tmp_path, capsys):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    _edit(
        base,
        lambda d: [
            run["backend"].update(intra_op_threads=1, version="1.15.1") for run in d["runs"]
        ],
    )
    new = _edit(_results(tmp_path / "new.json", {g: 1.0 for g in GRAPHS}, seed=1), _settings)
    md = tmp_path / "comment.md"
    assert main(["compare", str(base), str(new), "--markdown", str(md), "--github"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert any(f"new {new} did not complete (complete: false)" in w for w in warnings)
    assert any(
        "backend settings differ" in w
        and "intra_op_threads 1 -> 4" in w
        and "version '1.15.1' -> '1.16.0'" in w
        for w in warnings
    )
    assert any("libraries.onnxruntime None -> '1.16.0'" in w for w in warnings)
    assert md.read_text().count("> **warning:**") == len(warnings) == 3
    assert captured.out.count("::warning file=") == 3


def test_junit_and_github_annotations_name_the_regressed_graph(tmp_path, capsys):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new, run.json", {GRAPHS[0]: 1.0, GRAPHS[1]: 1.25}, seed=1)
    junit = tmp_path / "junit.xml"
    assert main(["compare", str(base), str(new), "--junit", str(junit), "--github"]) == 1
    suite = ElementTree.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"resnet20/baseline", "resnet20/dc-1x1"}
    assert cases["resnet20/baseline"].find("failure") is None
    failure = cases["resnet20/dc-1x1"].find("failure")
    change = float(re.search(r": \+([0-9.]+)% \[", failure.get("message")).group(1))
    assert 20 < change < 30 and "threshold 5.0%: slower" in failure.get("message")
    out = capsys.readouterr().out
    (error,) = [line for line in out.splitlines() if line.startswith("::error")]
    escaped = str(new).replace(",", "%2C")
    assert error.startswith(
        f"::error file={escaped},title=latency regression on host%3A "
        "resnet20/dc-1x1::resnet20/dc-1x1: +"
    )


def _edit(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def test_the_same_graphs_on_a_loaded_machine_warn_of_the_load(tmp_path, capsys):
    """Both files record the load average at capture: 3.7 on 2 cores is named in the warning."""
    busy = {"loadavg": [3.7, 3.5, 3.1], "available_cores": 2}
    idle = {"loadavg": [0.1, 0.2, 0.3], "available_cores": 2}
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    _edit(base, lambda d: d["device"]["environment_before"].update(cpu=idle))
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: 1.88}, seed=1)
    _edit(new, lambda d: d["device"]["environment_before"].update(cpu=busy))
    assert main(["compare", str(base), str(new)]) == 1  # the numbers say slower; the warning why
    captured = capsys.readouterr()
    (warning,) = [w for w in captured.err.splitlines() if "loaded machine" in w]
    assert "new " in warning and "load average 3.7 on 2 cores" in warning
    assert "> **warning:**" in captured.out and "load average 3.7" in captured.out


def test_a_changed_graph_is_named(tmp_path, capsys):
    base = _results(tmp_path / "base.json", {g: 1.0 for g in GRAPHS})
    new = _results(tmp_path / "new.json", {GRAPHS[0]: 1.0, GRAPHS[1]: 2.0}, seed=1)

    def graph(flops: int, sha: str):
        def edit(data):
            for run in data["runs"]:
                if run["variant"] == "dc-1x1":
                    run.update(flops=flops, onnx_sha256=sha)

        return edit

    _edit(base, graph(2_000_000, "a" * 64))
    _edit(new, graph(4_000_000, "b" * 64))
    assert main(["compare", str(base), str(new)]) == 1
    (warning,) = [w for w in capsys.readouterr().err.splitlines() if "graph changed" in w]
    assert warning.startswith("warning: resnet20/dc-1x1:")
    assert "FLOPs 2.00M -> 4.00M" in warning and "aaaaaaaaaaaa -> bbbbbbbbbbbb" in warning


@pytest.mark.parametrize(
    "low,high,verdict",
    [
        (1.06, 1.09, "slower"),
        (0.90, 0.93, "faster"),
        (0.99, 1.03, "same"),
        (1.01, 1.03, "same"),  # distinguishable from 1, within the 5% that counts
        (1.02, 1.08, "inconclusive"),  # may or may not be over 5%: not "same"
        (0.92, 0.97, "inconclusive"),
    ],
)
def test_verdict_words_match_the_interval(low, high, verdict):
    from harness.compare import threshold_verdict

    word, note = threshold_verdict(low, high, 0.05)
    assert word == verdict
    assert ("reaches across" in note) == (verdict == "inconclusive")
