"""Reports of measured per-layer profiles and lint findings recorded in results files.

The profiles are real (tests/data/layer_profiles_resnet56.json: ``harness explain`` of resnet56
and its dc-1x1 variant on the host, before and after fold); nothing is profiled here.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from harness.cli import main
from harness.dashboard import device_page
from harness.report.cross_device import merge
from harness.report.layers import (
    charted,
    layer_speedups,
    layers_markdown,
    matched_layers,
    original_nodes,
)
from harness.report.pipeline import write_bench_tables, write_report
from harness.report.render import to_markdown
from harness.results import Results, parse_results, read_results

DATA = Path(__file__).resolve().parent / "data"
OLD = DATA / "results_schema1_lenet5.json"
FIXTURE = json.loads((DATA / "layer_profiles_resnet56.json").read_text())
GRAPHS = ("baseline", "dc-1x1", "dc-1x1/folded")


def profiled_results() -> Results:
    """resnet56 baseline, dc-1x1 and its folded graph as bench records them, carrying the real
    layers and findings (samples and statistics borrowed from a recorded lenet5 run)."""
    data = json.loads(OLD.read_text())
    runs = []
    for graph in GRAPHS:
        run = copy.deepcopy(data["runs"][0])
        run.update(
            id=f"resnet56/{graph}",
            model="resnet56",
            variant=graph.split("/")[0],
            folded=graph.endswith("/folded"),
            folded_run="resnet56/dc-1x1/folded" if graph == "dc-1x1" else None,
            fold=None,
            **copy.deepcopy(FIXTURE[graph]),
        )
        runs.append(run)
    data["runs"], data["comparisons"] = runs, []
    return parse_results(data, "profiled.json")


def layers_of(graph: str) -> List[Dict[str, Any]]:
    return FIXTURE[graph]["layers"]["layers"]


def covering(layer: Dict[str, Any], graph: str) -> List[Dict[str, Any]]:
    """The layers of ``graph`` that hold any original node ``layer`` stands for."""
    nodes = set(original_nodes(layer))
    return [other for other in layers_of(graph) if nodes & set(original_nodes(other))]


def rows_of(text: str, first: str) -> List[List[str]]:
    """The cells of every Markdown table row starting with ``first``."""
    return [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in text.splitlines()
        if line.startswith(f"| {first} |")
    ]


def test_top_layers_of_each_graph_are_its_slowest_with_shares():
    text = layers_markdown([("host", profiled_results())], top=5)
    for graph in GRAPHS:
        section = text.split(f"#### resnet56/{graph}\n")[1].split("####")[0]
        layers = layers_of(graph)
        total = sum(layer["time_ms"] for layer in layers)
        assert f"{len(layers)} layers, {total:.3f} ms summed" in section
        rows = [line for line in section.splitlines() if line.startswith("| /")]
        slowest = sorted(layers, key=lambda la: -la["time_ms"])[:5]
        assert len(rows) == 5
        for row, layer in zip(rows, slowest):
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert cells[2] == f"{layer['time_ms']:.4f}"
            assert cells[3] == f"{layer['time_ms'] / total:.1%}"
            assert cells[4] == ", ".join(original_nodes(layer))
    folded = text.split("#### resnet56/dc-1x1/folded")[1]
    timed = FIXTURE["dc-1x1/folded"]["layers"]["timed_ms"]
    assert f"timed runs {timed:.3f} ms" in folded  # the timed run's median beside the profile
    # a folded graph's slowest layers are merged blocks: two convs and the Add behind one layer
    top = sorted(layers_of("dc-1x1/folded"), key=lambda la: -la["time_ms"])[:5]
    merged = [la for la in top if len(original_nodes(la)) >= 3]
    assert merged and ", ".join(original_nodes(merged[0])) in folded


def test_a_merge_is_one_folded_layer_against_the_unfolded_layers_summed():
    speedups = layer_speedups("host", profiled_results())
    fold = [s for s in speedups if s.comparison == "fold"]
    merges = [s for s in fold if s.merged]
    assert len(merges) == len(FIXTURE["merges"]) == 27
    for s in merges:
        (layer,) = [la for la in layers_of("dc-1x1/folded") if [la["name"]] == s.layers]
        before = covering(layer, "dc-1x1")
        assert s.reference == [la["name"] for la in before] and len(before) >= 2
        assert s.before_ms == pytest.approx(sum(la["time_ms"] for la in before))
        assert s.after_ms == layer["time_ms"]
    # the same numbers as explain's own measurements (original nodes vs the resulting conv)
    by_layer = {s.layers[0]: s for s in merges}
    for merge_time in FIXTURE["merges"]:
        folded = layers_of("dc-1x1/folded")
        (layer,) = [la for la in folded if merge_time["result"] in la.get("nodes", [])]
        s = by_layer[layer["name"]]
        assert s.before_ms == pytest.approx(merge_time["measured_before_ms"])
        assert s.after_ms == pytest.approx(merge_time["measured_after_ms"])
    text = layers_markdown([("host", profiled_results())])
    rows = rows_of(text, "resnet56/dc-1x1")
    (row,) = [r for r in rows if r[1:3] == ["folded vs unfolded", "/2/act/Relu_output_0_nchwc"]]
    (layer,) = [la for la in layers_of("dc-1x1/folded") if la["name"] == row[2]]
    before = covering(layer, "dc-1x1")
    summed = sum(la["time_ms"] for la in before)
    assert row[3:] == [
        ", ".join(la["name"] for la in before),
        f"{len(before)} -> 1",
        f"{summed:.4f}",
        f"{layer['time_ms']:.4f}",
        f"{summed / layer['time_ms']:.2f}x",
    ]
    # a downsampling block's shortcut conv is folded into its block: three layers become one
    for shortcut in ("/11/shortcut/shortcut.0/Conv_output_0_nchwc", "/20/shortcut/shortcut.0/"):
        (block,) = [s for s in merges if any(n.startswith(shortcut) for n in s.reference)]
        assert len(block.reference) == 3 and len(block.layers) == 1 and block.speedup
    assert all(s.speedup is None for s in fold if not s.layers)
    # layout reorders tied to no node (ReorderOutput) match nothing and are left out of the sums
    before = [la for la in layers_of("dc-1x1") if la.get("original_nodes") or la.get("nodes")]
    after = [la for la in layers_of("dc-1x1/folded") if la.get("original_nodes") or la.get("nodes")]
    assert len(before) == len(layers_of("dc-1x1")) - 1
    total_before, total_after = (sum(la["time_ms"] for la in x) for x in (before, after))
    assert (
        f"all {len(before)} layers, {total_before:.3f} ms -> {len(after)} layers, "
        f"{total_after:.3f} ms"
    ) in text


def test_a_variant_is_matched_to_the_baseline_by_original_node_names():
    speedups = [
        s for s in layer_speedups("host", profiled_results()) if s.comparison == "vs_baseline"
    ]
    matched = [s for s in speedups if s.layers and s.reference]
    for s in matched:
        (layer,) = [la for la in layers_of("dc-1x1/folded") if [la["name"]] == s.layers]
        before = covering(layer, "baseline")
        assert s.reference == [la["name"] for la in before]
        assert s.speedup == pytest.approx(sum(la["time_ms"] for la in before) / layer["time_ms"])
    block = next(s for s in matched if s.layers == ["/2/act/Relu_output_0_nchwc"])
    # the baseline's two convs of block 2 against the merged 1x1-decomposed one
    assert block.reference == [
        "/2/main/body/body.2/Relu_output_0_nchwc",
        "/2/main/body/body.3/Conv_output_0_nchwc",
    ]
    baseline = {la["name"]: la["time_ms"] for la in layers_of("baseline")}
    merged = {la["name"]: la["time_ms"] for la in layers_of("dc-1x1/folded")}
    summed = sum(baseline[name] for name in block.reference)
    assert block.speedup == pytest.approx(summed / merged["/2/act/Relu_output_0_nchwc"])
    assert charted(speedups) == matched  # the chart draws every matched layer


def test_a_layer_split_in_two_is_not_counted_twice():
    before = [{"name": "a", "time_ms": 1.0, "nodes": ["x", "y"]}]
    after = [
        {"name": "b", "time_ms": 0.3, "nodes": ["x"]},
        {"name": "c", "time_ms": 0.2, "nodes": ["y"]},
        {"name": "d", "time_ms": 0.1, "nodes": ["z"]},
    ]
    assert matched_layers(before, after) == [([before[0]], after[:2]), ([], [after[2]])]


def test_csv_holds_every_layer_of_every_run_and_every_finding(tmp_path):
    results = profiled_results()
    written = write_bench_tables(results, tmp_path)
    assert {p.name for p in written} == {
        "report.md",
        "report.csv",
        "layers.md",
        "layers.csv",
        "findings.csv",
        "layer_speedup.png",
        "layer_speedup.svg",
    }
    rows = list(csv.DictReader((tmp_path / "layers.csv").open()))
    assert len(rows) == sum(len(layers_of(g)) for g in GRAPHS)
    for graph in GRAPHS:
        own = [r for r in rows if r["run"] == f"resnet56/{graph}"]
        assert sorted(int(r["rank"]) for r in own) == list(range(1, len(own) + 1))
        assert sum(float(r["share"]) for r in own) == pytest.approx(1.0)
        first = min(own, key=lambda r: int(r["rank"]))
        assert float(first["time_ms"]) == max(la["time_ms"] for la in layers_of(graph))
        assert all(r["profiled_ms"] == "" for r in own)  # recorded before the cost came off
    folded = [r for r in rows if r["run"] == "resnet56/dc-1x1/folded"]
    merged = next(r for r in folded if r["layer"] == "/2/act/Relu_output_0_nchwc")
    assert merged["nodes"] == "/2/main/body/body.2/Conv /2/act/Relu"
    assert merged["original_nodes"].split() == [  # the merge, then the residual Add folded in
        "/2/main/body/body.0/Conv",
        "/2/main/body/body.2/Conv",
        "/2/Add",
        "/2/act/Relu",
    ]
    findings = list(csv.DictReader((tmp_path / "findings.csv").open()))
    expected = [(f"resnet56/{g}", f["layer"]) for g in GRAPHS for f in FIXTURE[g]["findings"]]
    assert [(f["run"], f["layer"]) for f in findings] == expected and expected
    assert {f["rule"] for f in findings} == {"launch-overhead"}
    assert float(findings[0]["measured_ms"]) == FIXTURE["baseline"]["findings"][0]["measured_ms"]
    report = (tmp_path / "report.md").read_text()
    assert "## Why (measured per layer)" in report and "layer_speedup.png" in report
    assert f"findings: launch-overhead x{len(expected)}" in report
    assert (tmp_path / "layer_speedup.png").stat().st_size > 10000


def test_report_writes_the_layer_files_and_chart_and_removes_them_when_gone(tmp_path):
    out = tmp_path / "report"
    markdown, written, _ = write_report([profiled_results()], out, ["harness", "report"])
    names = {p.name for p in written}
    assert {"layers.md", "layers.csv", "findings.csv", "layer_speedup.png"} <= names
    assert "[layers.md](layers.md)" in markdown and "layer_speedup.png" in markdown
    layers = (out / "layers.md").read_text()
    assert "## recorded-host" in layers and "### Lint findings" in layers
    first = FIXTURE["baseline"]["findings"][0]
    assert first["rule"] in layers and first["detail"] in layers
    # --no-plots: no chart named, the earlier one removed
    markdown, written, removed = write_report(
        [profiled_results()], out, ["harness", "report"], plots=False
    )
    assert "layer_speedup.png" not in markdown and out / "layer_speedup.png" in removed
    # a results file without layers: its report as before, the layer files of the last removed
    old = read_results(OLD)
    markdown, written, removed = write_report([old], out, ["harness", "report"], plots=False)
    assert markdown == to_markdown(merge([old]), ["harness", "report"])
    assert "Why (measured per layer)" not in markdown
    assert {p.name for p in removed} == {"layers.md", "layers.csv", "findings.csv"}
    assert not list(out.glob("layer*")) and not (out / "findings.csv").exists()


def test_results_without_layers_write_the_bench_tables_alone(tmp_path):
    written = write_bench_tables(read_results(OLD), tmp_path)
    assert [p.name for p in written] == ["report.md", "report.csv"]
    assert "Why (measured per layer)" not in (tmp_path / "report.md").read_text()
    page = device_page(read_results(OLD), ["recorded-host"])
    assert "layers by measured time" not in page and "Lint findings" not in page


def test_the_device_page_shows_top_layers_and_escaped_findings():
    results = profiled_results()
    results.runs[0].findings[0]["detail"] = "<script>alert(1)</script> & co"
    page = device_page(results, ["recorded-host"])
    assert "<h2>Top 10 layers by measured time</h2>" in page
    assert page.count("<h3>resnet56/") == 3
    slowest = max(layers_of("dc-1x1/folded"), key=lambda la: la["time_ms"])
    assert f"<td>{slowest['name']}</td>" in page
    found = sum(len(FIXTURE[g]["findings"]) for g in GRAPHS)
    assert "<h2>Lint findings</h2>" in page and page.count("launch-overhead") == found
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_report_no_longer_profiles_on_the_report_machine(capsys):
    assert main(["report", str(OLD), "--layers"]) == 2
    assert "--layers" in capsys.readouterr().err
