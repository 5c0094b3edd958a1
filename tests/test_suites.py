"""Suites of one's own models: a suite file (factories from a .py file, ONNX files, zoo models)
and ``--baseline/--variants``, each variant timed with its own baseline; shapes bound for dynamic
ONNX files in time, fold and bench."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

from harness.bench import resolve_pair, resolve_suite
from harness.cli import main
from harness.errors import HarnessError
from harness.results import read_results
from tests.conftest import conv_net

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "suite"
FACTORIES = """import torch


def baseline():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
    ).eval()


def noact():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU(),
    ).eval()
"""
SUITE = """input_shape: 3x16x16
models:
  - name: mine
    baseline: models/mine.py:baseline
    variants:
      noact: models/mine.py:noact
      dynamic: exported/dynamic.onnx
  - name: lenet5
    baseline: lenet5
    variants: {dc-fc: lenet5:dc-fc}
"""


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    """A suite file beside its factories (a .py file) and an ONNX file with dynamic H and W."""
    folder = tmp_path / "suite"
    (folder / "models").mkdir(parents=True)
    (folder / "exported").mkdir()
    (folder / "models" / "mine.py").write_text(FACTORIES)
    conv_net(folder / "exported" / "dynamic.onnx", 1, 8, dynamic=True)
    (folder / "suite.yaml").write_text(SUITE)
    return folder


def _check_rows(results, expected):
    """Every variant has its paired speed-up against its own baseline, with a CI around it."""
    found = {(c.model, c.variant) for c in results.comparisons if c.kind == "vs_baseline"}
    assert found == expected
    runs = results.run_by_id()
    for c in results.comparisons:
        assert c.speedup.low <= c.speedup.ratio <= c.speedup.high
        reference, subject = runs[c.reference], runs[c.subject]
        assert reference.model == subject.model == c.model
        assert len(reference.block_ends) == len(subject.block_ends)  # paired: the same rounds


def test_a_suite_file_of_ones_own_models(suite_dir, tmp_path, fast_profile, capsys):
    out = tmp_path / "out"
    suite = suite_dir / "suite.yaml"
    argv = ["bench", "--suite", str(suite), "--device", str(fast_profile), "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    results = read_results(out / "results.json")
    _check_rows(results, {("mine", "noact"), ("mine", "dynamic"), ("lenet5", "dc-fc")})
    runs = results.run_by_id()
    assert runs["mine/dynamic"].input_shape == [1, 3, 16, 16]  # bound to the suite's shape
    assert runs["mine/dynamic"].source == {
        "kind": "onnx",
        "reference": str(suite_dir / "exported" / "dynamic.onnx"),
    }
    assert runs["mine/noact"].source["reference"].endswith("models/mine.py:noact")
    bound = onnx.load(runs["mine/dynamic"].onnx)
    assert all(d.dim_value > 0 for d in bound.graph.input[0].type.tensor_type.shape.dim)
    table = (out / "report.md").read_text()
    for variant in ("noact", "dynamic"):
        row = next(line for line in table.splitlines() if f"| mine | {variant} |" in line)
        # the speed-up vs baseline (marked where the samples drifted: a loaded machine)
        assert re.search(r"\d\.\d+x \[\d\.\d+, \d\.\d+\]( \(drifted\))? \|$", row)


def test_the_baseline_and_variants_shorthand(suite_dir, tmp_path, fast_profile, capsys):
    out = tmp_path / "out"
    factories = suite_dir / "models" / "mine.py"
    argv = [
        "bench",
        "--baseline",
        f"{factories}:baseline",
        "--variants",
        f"{factories}:noact,{suite_dir / 'exported' / 'dynamic.onnx'}",
        "--input-shape",
        "3x16x16",
        "--device",
        str(fast_profile),
        "--out",
        str(out),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    results = read_results(out / "results.json")
    model = f"{factories}:baseline"
    _check_rows(results, {(model, "noact"), (model, "dynamic")})
    capsys.readouterr()
    assert main(["bench", "--baseline", "lenet5", "--variants", "dc-fc", "--models", "lenet5"]) == 2
    assert "--baseline and --models: give one of them" in capsys.readouterr().err


BAD_SUITES = {
    "unknown key": ("models:\n  - name: a\n    baseline: lenet5\n    varaints: {}\n", "varaints"),
    "no baseline": ("models:\n  - name: a\n", "baseline"),
    "no models": ("input_shape: 3x32x32\n", "models"),
    "variants a list": (
        "models:\n  - name: a\n    baseline: lenet5\n    variants: [x]\n",
        "variants",
    ),
    "missing file": (
        "models:\n  - name: a\n    baseline: lenet5\n    variants: {p: gone.onnx}\n",
        "variants.p",
    ),
    "missing factory": (
        "models:\n  - name: a\n    baseline: models/mine.py:nothing\n",
        "baseline",
    ),
    "bad shape": (
        "input_shape: 3x16x\nmodels:\n  - name: a\n    baseline: models/mine.py:baseline\n",
        "models[0]",
    ),
    "bad name": ("models:\n  - name: a/b\n    baseline: lenet5\n", "name"),
    "model twice": (
        "models:\n  - name: a\n    baseline: lenet5\n  - name: a\n    baseline: lenet5\n",
        "twice",
    ),
    "key twice": ("models: []\nmodels: []\n", "twice"),
    "unknown zoo variant": (
        "models:\n  - name: a\n    baseline: lenet5\n    variants: {x: lenet5:nope}\n",
        "variants.x",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SUITES))
def test_a_bad_suite_file_is_one_line_naming_the_key(case, suite_dir, tmp_path, capsys):
    text, key = BAD_SUITES[case]
    suite = suite_dir / "bad.yaml"
    suite.write_text(text)
    out = tmp_path / "out"
    assert main(["bench", "--suite", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and str(suite) in err
    assert key in err
    assert not out.exists()  # refused before any work


def test_a_dynamic_hw_model_is_timed_and_folded_at_the_shape_given(tmp_path, fast_profile, capsys):
    dynamic = conv_net(tmp_path / "detector.onnx", 2, 8, dynamic=True)
    assert main(["time", str(dynamic), "--device", str(fast_profile)]) == 2
    assert "--input-shape" in capsys.readouterr().err  # says how to bind it
    out = tmp_path / "t.json"
    argv = ["time", str(dynamic), "--device", str(fast_profile), "--input-shape", "3x40x24"]
    assert main(argv + ["--json", str(out)]) == 0
    (run,) = read_results(out).runs
    assert run.input_shape == [1, 3, 40, 24] and run.onnx == str(dynamic)
    named = ["time", str(dynamic), "--device", str(fast_profile), "--shapes", "x:1x3x24x24"]
    assert main(named) == 0
    assert main(named[:-1] + ["y:1x3x24x24"]) == 2  # no such input
    assert "inputs are x" in capsys.readouterr().err
    # nothing folds in Conv-ReLU-Conv-ReLU, and the graph written is bound all the same
    folded = tmp_path / "static.onnx"
    argv = ["fold", str(dynamic), "-o", str(folded), "--input-shape", "3x40x24"]
    assert main(argv) == 0
    model = onnx.load(str(folded))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        assert all(d > 0 for d in dims) and dims[2:] == [40, 24]


def test_old_time_files_still_read(tmp_path):
    """A ``harness time --json`` file from before it wrote the results schema."""
    from harness.results import parse_results

    entry = {
        "backend": {"backend": "onnxruntime", "precision": "fp32"},
        "inputs": {"x": [1, 3, 8, 8]},
        "stats": {"median": 1.0, "median_ci_low": 0.9, "median_ci_high": 1.1, "n": 3},
        "series_ms": {"latency_ms": [1.0, 1.1, 0.9]},
        "block_ends": [3],
        "warnings": [],
    }
    old = {
        "schema": 1,
        "kind": "harness time",
        "profile": {"name": "host"},
        "batch": 1,
        "device": {"environment": {}, "warnings": []},
        "runs": {
            "a/m.onnx": entry,
            "b/m.onnx": dict(entry, speedup={"value": 1.2, "ci_low": 1.1, "ci_high": 1.3}),
        },
    }
    results = parse_results(old, "old.json")
    assert [(r.model, r.variant) for r in results.runs] == [("a/m", "baseline"), ("a/m", "b/m")]
    (found,) = results.comparisons
    # written with the old estimator (no "estimator" key): recomputed from the samples when read,
    # so the speed-up is the printed medians divided (here the same samples: 1.0)
    a, b = (r.stats.median for r in results.runs)
    assert found.subject == "b/m.onnx" and found.speedup.ratio == pytest.approx(a / b)
    assert found.speedup.low <= found.speedup.ratio <= found.speedup.high


def test_a_run_keeps_keys_it_does_not_know_and_its_measured_fields(tmp_path):
    from harness.results import parse_results, write_results

    raw = json.loads((ROOT / "tests" / "data" / "results_schema1_lenet5.json").read_text())
    raw["runs"][0]["energy_mj"] = 1.5  # a metric a later harness adds
    results = parse_results(raw, "r.json")
    assert results.runs[0].extra["energy_mj"] == 1.5 and results.runs[0].block_ends
    again = json.loads(write_results(results, tmp_path / "r.json").read_text())
    assert again["runs"][0]["energy_mj"] == 1.5
    assert again["runs"][0]["block_ends"] == raw["runs"][0]["block_ends"]


@pytest.mark.slow
def test_the_example_suite_as_its_readme_says(tmp_path, fast_profile, capsys):
    """examples/suite: export the pruned ONNX, bench the suite, report it (plots, LaTeX)."""
    folder = tmp_path / "suite"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("exported"))
    pruned = folder / "exported" / "rn18c-pruned.onnx"
    factory = f"{folder / 'models' / 'rn18c.py'}:pruned"
    assert main(["export", factory, "--input-shape", "3x32x32", "-o", str(pruned)]) == 0
    out, report = tmp_path / "out", tmp_path / "report"
    argv = ["bench", "--suite", str(folder / "suite.yaml"), "--device", str(fast_profile)]
    assert main(argv + ["--out", str(out)]) == 0, capsys.readouterr().err
    results = read_results(out / "results.json")
    expected = {("rn18c", "noact-1x1"), ("rn18c", "pruned"), ("resnet56", "dc-1x1")}
    _check_rows(results, expected)
    assert main(["report", str(out / "results.json"), "-o", str(report)]) == 0

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.cross_device import merge
    from harness.report.plots import _speedups

    figure = _speedups(plt, merge([results]))
    assert len(figure.axes[0].patches) == 3  # a bar per variant
    plt.close(figure)
    assert (report / "speedup.png").stat().st_size > 1000
    tex = (report / "report-standalone.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") >= 1
    assert tex.count("{") == tex.count("}") and r"\end{document}" in tex
    for model, variant in expected:
        assert re.search(rf"{model} & {variant} & .*\{{\\times\}}", tex)
    if shutil.which("pdflatex"):
        proc = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report-standalone.tex"],
            cwd=report,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]


def test_a_deep_factory_path_names_its_model_and_a_newline_does_not(tmp_path):
    # a path-long reference is a name (found by a review: a 120-character limit refused it)
    folder = tmp_path / ("2024 experiments/compression study/" * 4) / "v1.2+rc1"
    folder.mkdir(parents=True)
    (folder / "my_models.py").write_text(
        "import torch\n"
        "def baseline():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1))\n"
        "merged = baseline\n"
    )
    reference = f"{folder}/my_models.py:baseline"
    assert len(reference) > 200
    [model] = resolve_suite([reference], "first", "3x8x8")
    assert model.name == reference
    [pair] = resolve_pair(reference, reference.replace(":baseline", ":merged"), "3x8x8")
    assert pair.name == reference and list(pair.graphs) == ["baseline", "merged"]
    (tmp_path / "two\nlines.py").write_text((folder / "my_models.py").read_text())
    with pytest.raises(HarnessError, match="is not a name .* name it in a suite file"):
        resolve_suite([f"{tmp_path}/two\nlines.py:baseline"], "first", "3x8x8")
