"""Speed-ups a reviewer can recompute: in every table, the printed medians divided land in the
printed interval (on recorded samples, and on samples measured here from tiny models); drifted
samples are marked in their row; the papers' table marks claims measured elsewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.profiles import load_profile
from harness.report import latex, render, table
from harness.report.cross_device import merge
from harness.report.formats import DRIFT_MARK, DRIFT_NOTE
from harness.report.papers import CLAIMS, claims_latex, claims_table, same_setting
from harness.results import ESTIMATOR, parse_results, read_results
from tests.recompute import assert_recomputes, first_number

RECORDED = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"


def _table(markdown: str, first: str) -> List[Dict[str, str]]:
    """The rows of the Markdown table whose header starts with ``| first |``, by column name."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def _slower_copy(tmp_path: Path):
    """The recorded run as a second device whose samples are all 1.5 times slower."""
    data = json.loads(RECORDED.read_text())
    data["device"]["profile"]["name"] = "slower-host"
    for run in data["runs"]:
        run["series_ms"]["latency_ms"] = [v * 1.5 for v in run["series_ms"]["latency_ms"]]
        run["stats"] = {
            k: v * 1.5 if k.startswith("median") else v for k, v in run["stats"].items()
        }
    return parse_results(data, str(tmp_path / "slower.json"))


def test_bench_table_speedups_recompute_from_its_medians():
    rows = _table(table.to_markdown(read_results(RECORDED)), "model")
    by_variant = {r["variant"]: r for r in rows}

    def deployed(row: Dict[str, str]) -> str:
        return first_number(row["folded ms"] or row["latency ms [95% CI]"])

    checked = 0
    for row in rows:
        if row["fold speed-up"]:
            latency = first_number(row["latency ms [95% CI]"])
            assert_recomputes(latency, first_number(row["folded ms"]), row["fold speed-up"])
            checked += 1
        if row["speed-up vs baseline"]:
            baseline = deployed(by_variant["baseline"])
            assert_recomputes(baseline, deployed(row), row["speed-up vs baseline"])
            checked += 1
    assert checked == 4


def test_cross_device_markdown_and_latex_recompute(tmp_path):
    merged = merge([read_results(RECORDED), _slower_copy(tmp_path)])
    rows = _table(render.to_markdown(merged), "model")
    baseline = next(r for r in rows if r["variant"] == "baseline")
    checked = 0
    for device in merged.devices:
        for row in (r for r in rows if r["variant"] != "baseline"):
            median = f"{device.label} ms [95% CI]"
            speedup = row[f"{device.label} speed-up"]
            assert_recomputes(first_number(baseline[median]), first_number(row[median]), speedup)
            checked += 1
    assert checked == 4
    # the LaTeX: a latency over its CI, then a speed-up over its interval, per device
    stacked = re.compile(r"\\begin\{tabular\}\{@\{\}r@\{\}\}(.*?)\\\\ \{\\scriptsize (.*?)\}")
    cells = {}
    for line in latex.to_latex(merged).splitlines():
        if line.startswith("lenet5 &"):
            cells[line.split(" & ")[1]] = stacked.findall(line)
    for variant in ("dc-fc", "psm-20x"):
        for i in range(len(merged.devices)):
            # the baseline's speed-up cells are "--": its stacked cells are its latencies alone
            (base, _), (own, _) = cells["baseline"][i], cells[variant][2 * i]
            top, bottom = cells[variant][2 * i + 1]
            assert_recomputes(base, own, f"{first_number(top)}x {bottom}")


def test_papers_table_recomputes_and_marks_claims_from_another_device():
    results = read_results(RECORDED)
    row = next(r for r in _table(claims_table(results), "paper") if r["variant"] == "psm-20x")
    baseline, compressed = row["latency ours ms: baseline -> compressed"].split(" -> ")
    cell = row["speed-up ours on recorded-host [95% CI]"]
    assert_recomputes(baseline, compressed, cell)
    assert cell.endswith(" ?")  # the paper states no device for its 8x
    psm = next(c for c in CLAIMS if c.variant == "psm-20x")
    elc, lm = CLAIMS[0], next(c for c in CLAIMS if c.model == "resnet34")
    assert same_setting(psm, results) is None and same_setting(elc, results) is False
    for name, claim, same in (("xavier", elc, True), ("xavier-nx", elc, False)):
        results.profile = load_profile(name).to_dict()
        assert same_setting(claim, results) is same, name
    results.profile = load_profile("rtx2080ti").to_dict()
    assert same_setting(lm, results) is False  # LayerMerge's figures are at batch 128


def test_papers_latex_caption_is_short_and_stands_clear_of_the_rule():
    tex = claims_latex(read_results(RECORDED))
    caption = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    assert len(caption) < 200 and "FACTS" not in tex
    after = tex[tex.index(r"\caption") :]
    assert after.index(r"\medskip") < after.index(r"\toprule")
    assert r"$^{?}$The paper does not state" in tex and "paired bootstrap" in caption


def test_drifted_samples_are_marked_in_their_row():
    results = read_results(RECORDED)
    markdown = table.to_markdown(results)
    rows = {r["variant"]: r for r in _table(markdown, "model")}
    # the recorded dc-fc run trended (its warnings say so); its folded twin and psm-20x did not
    assert any("drifted" in w for w in results.run_by_id()["lenet5/dc-fc"].warnings)
    assert rows["dc-fc"]["latency ms [95% CI]"].endswith(DRIFT_MARK)
    assert rows["dc-fc"]["fold speed-up"].endswith(DRIFT_MARK)
    assert DRIFT_MARK not in rows["dc-fc"]["folded ms"] + rows["psm-20x"]["latency ms [95% CI]"]
    assert DRIFT_NOTE in markdown
    # the cross-device table shows deployable graphs: none of those drifted, until one does
    assert DRIFT_MARK not in render.to_markdown(merge([results]))
    data = json.loads(RECORDED.read_text())
    run = next(r for r in data["runs"] if r["id"] == "lenet5/psm-20x/folded")
    samples = run["series_ms"]["latency_ms"]
    # the same samples, 20% slower by the end
    run["series_ms"]["latency_ms"] = list(np.multiply(samples, np.linspace(1, 1.2, len(samples))))
    merged = merge([parse_results(data)])
    row = next(r for r in _table(render.to_markdown(merged), "model") if r["variant"] == "psm-20x")
    assert all(row[f"recorded-host {c}"].endswith(DRIFT_MARK) for c in ("ms [95% CI]", "speed-up"))
    assert "$^\\ddagger$Samples drifted" in latex.to_latex(merged)


def test_a_speedup_written_by_another_estimator_is_recomputed_when_read():
    data = json.loads(RECORDED.read_text())
    written = data["comparisons"][3]
    written.update(speedup=2.0, ci_low=1.9, ci_high=2.1)
    runs = {r["id"]: r for r in data["runs"]}
    medians = [runs[written[k]]["stats"]["median"] for k in ("reference", "subject")]
    upgraded = parse_results(data).comparisons[3].speedup
    assert upgraded.ratio == medians[0] / medians[1] and upgraded.low <= upgraded.ratio
    written["estimator"] = ESTIMATOR  # this one's own: kept as written
    assert parse_results(data).comparisons[3].speedup.ratio == 2.0


def _conv_model(path: Path, layers: int) -> Path:
    """A chain of ``layers`` 3x3 convs on 1x8x16x16, weights fixed (a tiny graph to time)."""
    nodes, inits, name = [], [], "x"
    for i in range(layers):
        weight = numpy_helper.from_array(np.full((8, 8, 3, 3), 0.01 * (i + 1), np.float32), f"w{i}")
        inits.append(weight)
        nodes.append(helper.make_node("Conv", [name, f"w{i}"], [f"y{i}"], pads=[1, 1, 1, 1]))
        name = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_time_prints_a_speedup_its_measured_medians_recompute(tmp_path, fast_profile, capsys):
    small, large = _conv_model(tmp_path / "one.onnx", 1), _conv_model(tmp_path / "four.onnx", 4)
    assert main(["time", str(large), str(small), "--device", str(fast_profile)]) == 0
    lines = {line.split(": median ")[0]: line for line in capsys.readouterr().out.splitlines()}
    reference, subject = lines[str(large)], lines[str(small)]
    assert_recomputes(
        first_number(reference.split(": median ")[1]),
        first_number(subject.split(": median ")[1]),
        subject.split("; speed-up ")[1],
    )
