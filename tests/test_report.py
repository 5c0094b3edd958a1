"""Cross-device reports from real bench runs: tables, LaTeX structure, plots, and refusals to merge."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.report.plots import pareto_front


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """Two real bench runs of lenet5 under two device profiles (fast timing)."""
    from tests.conftest import FAST_TIMING

    root = tmp_path_factory.mktemp("devices")
    host = yaml.safe_load((Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text())
    host["timing"] = dict(FAST_TIMING)
    host["onnxruntime"]["intra_op_threads"] = 1
    paths = []
    for name in ("cpu-a", "cpu-b"):
        profile = root / f"{name}.yaml"
        profile.write_text(yaml.safe_dump(host))
        out = root / name
        assert main(["bench", "--device", str(profile), "--models", "lenet5,resnet20", "--out", str(out)]) == 0
        paths.append(out / "results.json")
    return paths


def test_report_merges_devices_into_tables_and_plots(two_devices, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_devices), "-o", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "cpu-a ms [95% CI]" in md and "cpu-b speed-up" in md and "## Provenance" in md
    assert re.search(r"\| resnet20 \| dc-1x1 \| 0\.044 \| 46\.\d% \|", md)
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert {(r["model"], r["variant"], r["device"]) for r in rows} == {
        (m, v, d) for m, v in [("lenet5", "baseline"), ("lenet5", "dc-fc"), ("resnet20", "baseline"),
                               ("resnet20", "dc-1x1")] for d in ("cpu-a", "cpu-b")}
    variant = next(r for r in rows if r["variant"] == "dc-1x1" and r["device"] == "cpu-a")
    assert float(variant["speedup_ci_low"]) <= float(variant["speedup"]) <= float(variant["speedup_ci_high"])
    assert 0 < float(variant["efficiency"])
    merged = json.loads((out / "results.json").read_text())
    assert set(merged["devices"]) == {"cpu-a", "cpu-b"}
    for stem in ("latency", "latency_vs_flops", "speedup"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000


def test_latex_table_is_well_formed(two_devices, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_devices), "-o", str(out), "--no-plots"]) == 0
    tex = (out / "report.tex").read_text()
    for env in ("document", "table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert tex.count("{") == tex.count("}")
    columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 4 and all(line.count("&") == columns - 1 for line in body)
    assert r"\pm" in tex and "booktabs" in tex and "batch 1" in tex
    if shutil.which("pdflatex"):
        import subprocess

        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "report.tex"], cwd=out, capture_output=True)
        assert proc.returncode == 0


def test_incomparable_files_are_refused(two_devices, tmp_path, capsys):
    assert main(["report", str(two_devices[0]), str(two_devices[0]), "-o", str(tmp_path / "r")]) == 2
    assert "appears in two files" in capsys.readouterr().err
    data = json.loads(two_devices[1].read_text())
    for run in data["runs"]:
        if run["model"] == "lenet5":
            run["input_shape"] = [1, 1, 32, 32]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    assert main(["report", str(two_devices[0]), str(other), "-o", str(tmp_path / "r")]) == 2
    assert "not comparable" in capsys.readouterr().err
    data = json.loads(two_devices[1].read_text())
    data["runs"][0]["precision"] = "fp16"
    other.write_text(json.dumps(data))
    assert main(["report", str(other), "-o", str(tmp_path / "r")]) == 2
    assert "mixes precisions" in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.md").exists()


def test_per_layer_view_before_and_after_folding(two_devices, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(two_devices[0]), "-o", str(out), "--no-plots", "--layers"]) == 0
    text = (out / "layers-cpu-a.md").read_text()
    assert "## resnet20/dc-1x1 (" in text and "## resnet20/dc-1x1/folded (" in text
    section = text.split("## resnet20/dc-1x1/folded")[1].split("##")[0]
    shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in section.splitlines()
              if line.startswith("| ") and line.endswith("% |")]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5


def test_pareto_front():
    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)]) == [(1, 5), (2, 3), (4, 1)]
