"""Cross-device reports from real bench runs.

Tables, LaTeX structure, plots, and refusals to merge.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.report.cross_device import merge
from harness.report.plots import pareto_front
from harness.results import read_results


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    """Two real bench runs of lenet5 under two device profiles (fast timing)."""
    from tests.conftest import FAST_TIMING

    root = tmp_path_factory.mktemp("devices")
    host = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    host["timing"] = dict(FAST_TIMING)
    host["onnxruntime"]["intra_op_threads"] = 1
    paths = []
    for name in ("cpu-a", "cpu-b"):
        profile = root / f"{name}.yaml"
        profile.write_text(yaml.safe_dump(host))
        out = root / name
        assert (
            main(
                [
                    "bench",
                    "--device",
                    str(profile),
                    "--models",
                    "lenet5,resnet20",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        paths.append(out / "results.json")
    return paths


def test_report_merges_devices_into_tables_and_plots(two_devices, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_devices), "-o", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "cpu-a ms [95% CI]" in md and "cpu-b speed-up" in md and "## Provenance" in md
    # trained (unfolded) 0.044 GFLOPs, deployed (folded) 0.039:
    # -52.7% against the baseline's deployed graph
    assert re.search(
        r"\| resnet20 \| dc-1x1 \| 0\.044 \| 0\.039 \| 52\.7% \| 0\.124 \| 54\.5% \|", md
    )
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert {(r["model"], r["variant"], r["device"]) for r in rows} == {
        (m, v, d)
        for m, v in [
            ("lenet5", "baseline"),
            ("lenet5", "dc-fc"),
            ("resnet20", "baseline"),
            ("resnet20", "dc-1x1"),
        ]
        for d in ("cpu-a", "cpu-b")
    }
    variant = next(r for r in rows if r["variant"] == "dc-1x1" and r["device"] == "cpu-a")
    assert (
        float(variant["speedup_ci_low"])
        <= float(variant["speedup"])
        <= float(variant["speedup_ci_high"])
    )
    assert 0 < float(variant["efficiency"])
    merged = json.loads((out / "results.json").read_text())
    assert set(merged["devices"]) == {"cpu-a", "cpu-b"}
    for stem in ("latency", "latency_vs_flops", "latency_vs_energy", "speedup"):
        for ext in ("png", "svg"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    # a report without plots into the same folder must not leave the old ones behind
    assert main(["report", *map(str, two_devices), "-o", str(out), "--no-plots"]) == 0
    assert not list(out.glob("*.png")) and not list(out.glob("*.svg"))
    assert "removed stale" in capsys.readouterr().err


def test_latex_table_is_well_formed(two_devices, tmp_path):
    out = tmp_path / "report"
    assert main(["report", *map(str, two_devices), "-o", str(out), "--no-plots"]) == 0
    tex = (out / "report.tex").read_text()
    assert r"\documentclass" not in tex and r"\begin{document}" not in tex  # a fragment to \input
    for env in ("table*", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") >= 1
    assert tex.count("{") == tex.count("}")
    head = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex)
    columns = len(head.group(1))
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 4 and all(line.count(" & ") == columns - 1 for line in body)
    assert r"\pm" not in tex and "booktabs" in tex and "batch 1" in tex and "-0.0" not in tex
    assert tex.count(r"\cmidrule") == 2  # two device column groups
    document = (out / "report-standalone.tex").read_text()
    assert document.count(r"\begin{document}") == 1 and tex in document
    assert (out / "report-narrow.tex").read_text() in document


def test_incomparable_files_are_refused(two_devices, tmp_path, capsys):
    assert (
        main(["report", str(two_devices[0]), str(two_devices[0]), "-o", str(tmp_path / "r")]) == 2
    )
    assert "is given twice" in capsys.readouterr().err
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


def test_pareto_front():
    assert pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)]) == [(1, 5), (2, 3), (4, 1)]


def _rewrite(source: Path, target: Path, change) -> Path:
    data = json.loads(source.read_text())
    change(data)
    target.write_text(json.dumps(data))
    return target


def test_same_device_at_other_settings_gets_its_own_column(two_devices, tmp_path):
    def fp16_batch8(data):
        for run in data["runs"]:
            run["precision"], run["batch"] = "fp16", 8
            # another batch: same samples, comparable
            run["input_shape"] = [8] + run["input_shape"][1:]

    other = _rewrite(two_devices[0], tmp_path / "fp16.json", fp16_batch8)
    out = tmp_path / "report"
    assert main(["report", str(two_devices[0]), str(other), "-o", str(out), "--no-plots"]) == 0
    md = (out / "report.md").read_text()
    assert "cpu-a fp32 b1 ms [95% CI]" in md and "cpu-a fp16 b8 speed-up" in md
    assert "FP16, batch 8" in (out / "report.tex").read_text()
    merged = json.loads((out / "results.json").read_text())
    assert [c["label"] for c in merged["columns"]] == ["cpu-a fp32 b1", "cpu-a fp16 b8"]
    assert len(merged["table"]) == 8
    # a merged file
    assert main(["report", str(out / "results.json"), "-o", str(tmp_path / "again")]) == 2


def test_other_schema_is_refused(two_devices, tmp_path, capsys):
    other = _rewrite(two_devices[1], tmp_path / "old.json", lambda d: d.update(schema=0))
    assert main(["report", str(two_devices[0]), str(other), "-o", str(tmp_path / "r")]) == 2
    assert "schema 0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_roofline_falls_back_to_flops_when_onnx_is_gone(two_devices, tmp_path):
    def forget_onnx(data):
        for run in data["runs"]:
            run["onnx"] = str(tmp_path / "gone.onnx")

    other = _rewrite(two_devices[1], tmp_path / "gone.json", forget_onnx)
    out = tmp_path / "report"
    assert main(["report", str(two_devices[0]), str(other), "-o", str(out), "--no-plots"]) == 0
    rows = {
        (r["device"], r["model"], r["variant"]): r
        for r in csv.DictReader((out / "report.csv").open())
    }
    kept, gone = rows[("cpu-a", "resnet20", "baseline")], rows[("cpu-b", "resnet20", "baseline")]
    assert kept["roofline_basis"] == "per layer" and gone["roofline_basis"].startswith("flops only")
    flops = int(gone["flops"])
    # host peak 0.16 TFLOPS
    assert float(gone["roofline_floor_ms"]) == pytest.approx(1000 * flops / 0.16e12)
    # the memory term counts
    assert float(kept["roofline_floor_ms"]) > float(gone["roofline_floor_ms"])
    assert "floor from total FLOPs over peak only" in (out / "report.md").read_text()
    assert r"$^\dagger$" in (out / "report.tex").read_text()


def _recorded_two_devices():
    """The recorded lenet5 run, and a second device that measured everything but psm-20x."""
    from harness.results import parse_results, read_results

    first = read_results(Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json")
    data = first.to_dict()
    data["device"]["profile"]["name"] = "partial-host"
    data["runs"] = [r for r in data["runs"] if r["variant"] != "psm-20x"]
    data["comparisons"] = [c for c in data["comparisons"] if c["variant"] != "psm-20x"]
    return [first, parse_results(data, "partial.json")]


def test_plots_draw_no_stubs_no_lone_fronts_and_no_overlapping_labels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.cross_device import merge
    from harness.report.plots import _latency_bars, _latency_vs_flops, _speedups

    table = merge(_recorded_two_devices())
    present = [sum((row, d.label) in table.cells for row in table.rows) for d in table.devices]
    assert present == [3, 2]
    bars = _latency_bars(plt, table, [f"{m}/{v}" for m, v in table.rows])
    axes = bars.axes
    assert [len(ax.patches) for ax in axes] == present  # a missing graph has no bar at all
    assert axes[0].get_ylim() == axes[1].get_ylim()  # one scale for every device
    assert "n/a" in [t.get_text() for t in axes[1].texts]
    legend = {t.get_text() for t in axes[0].get_legend().get_texts()}
    assert legend == {"baseline", "compressed variant"}
    speed = _speedups(plt, table)
    assert len(speed.axes[0].patches) == 3 and "n/a" in [t.get_text() for t in speed.axes[0].texts]
    assert all(p.get_height() > 0 for p in speed.axes[0].patches)
    scatter = _latency_vs_flops(plt, table)
    renderer = scatter.canvas.get_renderer()
    for ax, count in zip(scatter.axes, present):
        assert all(len(line.get_xdata()) >= 2 for line in ax.get_lines())  # no one-point "front"
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) == count  # every point labelled
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    legend = {t.get_text() for t in scatter.axes[-1].get_legend().get_texts()}
    assert {"baseline", "compressed variant", "lenet5"} <= legend
    for fig in (bars, speed, scatter):
        plt.close(fig)


def test_output_folder_is_checked_before_any_work(tmp_path, capsys):
    recorded = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"
    occupied = tmp_path / "occupied"
    occupied.write_text("not a folder")
    for out, message in [
        (occupied, "is an existing file"),
        (occupied / "report", "lies under the file"),
    ]:
        assert main(["report", str(recorded), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert occupied.read_text() == "not a folder"


def test_a_report_into_the_folder_of_its_input_refuses_to_overwrite_it(tmp_path, capsys):
    recorded = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"
    folder = tmp_path / "run"
    folder.mkdir()
    source = folder / "results.json"
    source.write_bytes(recorded.read_bytes())
    assert main(["report", str(source), "-o", str(folder), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "results.json is also an input: the report would overwrite it" in err
    assert source.read_bytes() == recorded.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["results.json"]  # nothing written


def test_the_roofline_floor_of_a_dynamic_batch_graph_is_at_the_run_s_batch(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.report.cross_device import roofline_floor_ms

    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    floors = {}
    for batch in ("N", 1):
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 32, 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [weight],
        )
        path = tmp_path / f"{batch}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        floors[batch] = path
    peaks = {"fp32_tflops": 0.16, "dram_gbps": 20}
    one = roofline_floor_ms(str(floors[1]), peaks, "fp32")
    assert one > 0
    assert roofline_floor_ms(str(floors["N"]), peaks, "fp32", 1) == pytest.approx(one)
    assert roofline_floor_ms(str(floors["N"]), peaks, "fp32", 4) == pytest.approx(4 * one)


def test_a_bench_report_gives_each_models_input_shape(two_devices):
    md = (two_devices[0].parent / "report.md").read_text().splitlines()
    shapes = next(line for line in md if line.startswith("- input shape per model:"))
    assert "lenet5 1x1x28x28" in shapes and "resnet20 1x3x32x32" in shapes
    backend = next(line for line in md if line.startswith("- backend:"))
    assert "input_shape" not in backend


def test_flops_that_miss_nodes_are_a_floor_in_the_bench_report(two_devices):
    from harness.report.table import to_csv, to_markdown
    from harness.results import as_results

    data = json.loads(two_devices[0].read_text())
    assert all(run["flops_floor"] is False for run in data["runs"])  # bench records it
    lenet = [run for run in data["runs"] if run["model"] == "lenet5"]
    for run in lenet:
        run["flops_floor"] = True
    next(r for r in lenet if r["variant"] == "baseline" and not r["folded"])["flops"] = 0
    results = as_results(data)
    md = to_markdown(results)
    assert "| lenet5 | baseline | unknown |" in md and "| lenet5 | dc-fc | >= 0.001 |" in md
    assert not any(">=" in line for line in md.splitlines() if line.startswith("| resnet20 |"))
    rows = list(csv.DictReader(to_csv(results).splitlines()))
    assert {r["flops_floor"] for r in rows if r["model"] == "lenet5"} == {"True"}


def test_runs_of_one_device_merge_into_one_column_and_the_later_run_wins(tmp_path, capsys):
    """A zoo bench and a suite (or a ``harness time``) of one device are one column; a model both
    files hold comes from the later run, and the report says so."""
    recorded = json.loads(
        (Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json").read_text()
    )
    earlier, later = (
        dict(recorded, created="2026-01-01T00:00:00+00:00"),
        json.loads(json.dumps(recorded)),
    )
    later["created"] = "2026-02-01T00:00:00+00:00"
    for run in later["runs"]:
        run["stats"]["median"] *= 2  # what the later run measured
        run["stats"]["median_ci_low"] *= 2
        run["stats"]["median_ci_high"] *= 2
    other = json.loads(json.dumps(recorded))  # another model, the same device
    for key in ("runs", "comparisons"):
        for entry in other[key]:
            entry["model"] = "mine"
    for run in other["runs"]:
        run["id"] = "mine/" + run["id"]
        if run.get("folded_run"):
            run["folded_run"] = "mine/" + run["folded_run"]
    for c in other["comparisons"]:
        c["reference"], c["subject"] = "mine/" + c["reference"], "mine/" + c["subject"]
    paths = []
    for name, data in (("later", later), ("earlier", earlier), ("other", other)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(data))
    out = tmp_path / "r"
    assert main(["report", *map(str, paths), "-o", str(out), "--no-plots"]) == 0
    table = merge([read_results(p) for p in paths])
    assert len(table.devices) == 1 and {m for m, _ in table.rows} == {"lenet5", "mine"}
    run = read_results(paths[0]).run_by_id()["lenet5/baseline"]
    shown = table.cells[(("lenet5", "baseline"), table.devices[0].label)]
    assert shown.stats.median == read_results(paths[0]).deployed(run).stats.median  # the later
    markdown = (out / "report.md").read_text()
    assert "the later run (by its created time) is shown" in markdown
    assert "lenet5 is in" in markdown and str(paths[0]) in markdown
