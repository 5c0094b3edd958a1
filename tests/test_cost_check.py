"""The cost model checked where it decides: forced plans, predicted vs measured spans, the stored
check and the commands that show it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.cost.check import (
    PlanCostModel,
    check_model,
    check_path,
    partitions,
    store,
    summary,
    summary_text,
)
from harness.cost.model import RooflineCostModel
from harness.fold import fold_model
from harness.profiles import load_profile


def _three_conv_chain(channels: int = 8) -> onnx.ModelProto:
    """conv 3x3 (padded) -> conv 1x1 -> conv 3x3 (unpadded) -> Relu: one linear chain of three."""
    rng = np.random.default_rng(0)
    c = channels
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, n)
        for n, s in (("w0", (c, c, 3, 3)), ("w1", (c, c, 1, 1)), ("w2", (c, c, 3, 3)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], "c0", pads=[1] * 4),
        helper.make_node("Conv", ["a", "w1"], ["b"], "c1"),
        helper.make_node("Conv", ["b", "w2"], ["d"], "c2"),
        helper.make_node("Relu", ["d"], ["y"], "relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 14, 14])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _roofline(fast_profile: Path) -> RooflineCostModel:
    return RooflineCostModel.from_profile(load_profile(str(fast_profile)))


def test_partitions_are_every_split_into_consecutive_segments():
    found = partitions([3, 4, 5])
    assert sorted(found) == sorted(
        [((3, 5),), ((3, 3), (4, 5)), ((3, 4), (5, 5)), ((3, 3), (4, 4), (5, 5))]
    )
    assert partitions([7]) == [((7, 7),)]


@pytest.mark.parametrize(
    "wanted", [{(0, 1), (2, 2)}, {(0, 0), (1, 2)}, {(0, 0), (1, 1), (2, 2)}, {(0, 2)}]
)
def test_a_plan_cost_model_steers_folds_own_program_to_the_plan(wanted, fast_profile):
    plan = PlanCostModel(set(wanted), _roofline(fast_profile))
    result = fold_model(_three_conv_chain(), merge="auto", cost_model=plan)
    assert set(result.spans.values()) == wanted
    real = _roofline(fast_profile)
    assert (0, 2) in plan.predicted and (1, 1) in plan.predicted  # every span the program priced
    assert all(v > real.overhead_s for v in plan.predicted.values())


def test_check_model_predicts_and_measures_each_span_and_finds_the_oracle(fast_profile, tmp_path):
    profile = load_profile(str(fast_profile))
    spans, chains = check_model(
        _three_conv_chain(), "chain3", profile, _roofline(fast_profile), 1, tmp_path, runs=3
    )
    assert {s.span for s in spans} == {(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)}
    assert all(s.predicted_ms > 0 and s.measured_ms > 0 for s in spans)
    (chain,) = chains
    assert chain.convs == [0, 1, 2] and len(chain.partitions) == 4
    assert chain.oracle_ms == min(m for _, m in chain.partitions.values())
    assert chain.auto in chain.partitions
    totals = summary(spans, chains)
    assert 0 <= totals["within_10pct"] <= totals["within_20pct"] <= 1
    assert totals["auto_vs_oracle"] >= 0


def test_the_stored_check_is_beside_the_calibration_and_model_by_model(fast_profile, tmp_path):
    profile = load_profile(str(fast_profile))
    cost = _roofline(fast_profile)
    path = check_path(profile, "onnxruntime", "fp32")
    assert path.parent == Path(fast_profile).parent
    assert path.name == "fast.onnxruntime.fp32.costcheck.json"
    result = check_model(_three_conv_chain(), "a", profile, cost, 1, tmp_path, runs=2)
    store(path, profile, "onnxruntime", "fp32", cost, {"a": result}, {})
    data = store(path, profile, "onnxruntime", "fp32", cost, {"b": result}, {})
    assert sorted(data["models"]) == ["a", "b"] and data["summary"]["spans"] == 12
    assert "within +/-10%" in summary_text(data) and "a, b" in summary_text(data)
    other = RooflineCostModel(1e12, 1e10, 1e-6, "another model")
    data = store(path, profile, "onnxruntime", "fp32", other, {"b": result}, {})
    assert sorted(data["models"]) == ["b"]  # a check of another cost model starts afresh


def test_calibrate_check_and_show(fast_profile, tmp_path, capsys):
    model = tmp_path / "chain3.onnx"
    onnx.save(_three_conv_chain(), model)
    assert main(["calibrate", "--device", str(fast_profile), "--show"]) == 2
    assert "no cost check stored" in capsys.readouterr().err
    assert main(["calibrate", "--device", str(fast_profile), "--check", str(model)]) == 0
    assert "within +/-10%" in capsys.readouterr().out
    stored = json.loads((tmp_path / "fast.onnxruntime.fp32.costcheck.json").read_text())
    assert list(stored["models"]) == ["chain3"] and stored["summary"]["chains"] == 1
    assert main(["calibrate", "--device", str(fast_profile), "--show"]) == 0
    assert "chain3" in capsys.readouterr().out


def test_fold_check_cost_sets_measured_cost_on_the_merges(fast_profile, tmp_path, capsys):
    model, report = tmp_path / "chain3.onnx", tmp_path / "report.json"
    onnx.save(_three_conv_chain(), model)
    args = ["fold", str(model), "-o", str(tmp_path / "f.onnx"), "--device", str(fast_profile)]
    assert main(args + ["--merge", "all", "--check-cost"]) == 2
    assert main(args + ["--check-cost", "--report", str(report), "--no-verify"]) == 0
    text = capsys.readouterr().out
    assert "cost check, convs [0, 1, 2]" in text and "oracle" in text
    data = json.loads(report.read_text())
    assert data["cost_check"]["summary"]["chains"] == 1
    for record in [r for r in data["records"] if r["action"] == "merged"]:
        assert record["measured_before_us"] > 0 and record["measured_after_us"] > 0
    planned = [r for r in data["records"] if r["action"] == "planned"]
    assert planned and planned[0]["segments"]
