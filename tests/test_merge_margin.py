"""fold --merge auto's decision margin: a merge is taken only when its predicted saving exceeds the
error the cost model reports (a calibration's p90 fit error, the roofline's documented default);
the plan says the margin and each declined merge says why."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from harness.cost.calibrate import cost_model_for, load_calibration
from harness.cost.model import ROOFLINE_MARGIN, CalibratedCostModel, TableCostModel
from harness.fold import RooflineCostModel, fold_model
from harness.onnx_io import make_model
from harness.profiles import calibration_path, load_profile

CHANNELS, SIZE = 8, 16


def _chain(second_kernel: int, out_channels: int = CHANNELS):
    """x -> 3x3 conv (padded) -> ``second_kernel`` conv (unpadded) with ``out_channels``: an exact
    chain of two."""
    rng = np.random.default_rng(0)
    shapes = [(CHANNELS, CHANNELS, 3, 3), (out_channels, CHANNELS, second_kernel, second_kernel)]
    weights = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{i}")
        for i, s in enumerate(shapes)
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["y0"], "first", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y0", "w1"], ["y1"], "second"),
        helper.make_node("Relu", ["y1"], ["out"], "relu"),
    ]
    out = SIZE - second_kernel + 1
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, out_channels, out, out])],
        weights,
    )
    return make_model(graph)


def _records(result, action: str) -> List[dict]:
    return [r for r in result.report.to_dict()["records"] if r["action"] == action]


def _overhead_bound(margin: float) -> RooflineCostModel:
    """Every conv costs its 10 us overhead: merging two saves one, 100% of the merged conv's
    cost."""
    return RooflineCostModel(1e18, 1e18, 10e-6, "overhead-bound roofline", margin)


def test_a_merge_within_the_margin_is_declined_and_says_why():
    model = _chain(1, out_channels=2 * CHANNELS)  # merged: a 3x3 conv with twice the outputs
    taken = fold_model(model, merge="auto", cost_model=_overhead_bound(0.5))
    assert len(_records(taken, "merged")) == 1
    assert "decision margin 50.0%" in _records(taken, "planned")[0]["detail"]
    declined = fold_model(model, merge="auto", cost_model=_overhead_bound(1.5))
    assert not _records(declined, "merged")
    (kept,) = _records(declined, "kept")
    assert kept["nodes"] == ["first", "second"]
    assert "predicted to save 10.0 us (20.0 -> 10.0 us)" in kept["detail"]
    assert "within the decision margin: 150.0% of the merged conv's 10.0 us" in kept["detail"]


def test_a_merged_conv_within_one_of_its_convs_is_not_charged_the_margin():
    # 3x3 then 1x1, 8 -> 8 -> 8 channels: the merged conv is the 3x3 conv's shape, so the merge
    # removes the 1x1 conv outright, whatever the model's error on the 3x3 conv
    result = fold_model(_chain(1), merge="auto", cost_model=_overhead_bound(1.5))
    (merged,) = _records(result, "merged")
    assert merged["nodes"] == ["first", "second"]
    assert merged["flops_after"] < merged["flops_before"]
    assert not _records(result, "kept")
    (planned,) = _records(result, "planned")
    assert "decision margin 150.0%" in planned["detail"]
    assert "waived for segments [[0, 1]] (each merged conv within one" in planned["detail"]
    # with more outputs the merged conv does more than either conv: the margin applies again
    wider = fold_model(_chain(1, 2 * CHANNELS), merge="auto", cost_model=_overhead_bound(1.5))
    assert not _records(wider, "merged")
    assert "waived" not in _records(wider, "planned")[0]["detail"]


def test_within_compares_every_dimension():
    from harness.geometry import ConvGeometry

    base = ConvGeometry.centred((1, 16, 32, 32), 16, 3, 1)
    assert base.within(base)
    assert ConvGeometry.centred((1, 8, 32, 32), 16, 1, 1).within(base)
    assert not ConvGeometry.centred((1, 16, 32, 32), 32, 3, 1).within(base)  # more outputs
    assert not ConvGeometry.centred((1, 16, 32, 32), 16, 5, 1).within(base)  # more taps
    assert not ConvGeometry.centred((1, 16, 32, 32), 16, 3, 2).within(base)  # another stride
    assert not ConvGeometry.centred((1, 16, 32, 32), 16, 3, 1, groups=16).within(base)
    assert not ConvGeometry.centred((2, 16, 32, 32), 16, 3, 1).within(base)  # another batch


def test_a_merge_predicted_slower_says_so():
    compute_bound = RooflineCostModel(1e9, 1e18, 0.0, "compute-bound roofline")
    result = fold_model(_chain(3), merge="auto", cost_model=compute_bound)  # 2 x 3x3 -> one 5x5
    assert not _records(result, "merged")
    (kept,) = _records(result, "kept")
    assert "predicted slower merged" in kept["detail"]


def test_the_roofline_and_a_table_report_the_documented_default():
    roofline = RooflineCostModel(1e12, 1e11, 5e-6)
    assert roofline.decision_margin()[0] == ROOFLINE_MARGIN
    table = TableCostModel({}, roofline)
    assert table.decision_margin()[0] == ROOFLINE_MARGIN
    assert "spans the table lacks" in table.decision_margin()[1]


def _profile(tmp_path: Path):
    """The host profile, copied where no calibration lies beside it."""
    source = Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml"
    (tmp_path / "dev.yaml").write_text(source.read_text())
    return load_profile(str(tmp_path / "dev.yaml"))


def _calibrate(profile, p90: float) -> Path:
    """A calibration file beside the profile whose fit erred by ``p90`` at the 90th percentile."""
    model = CalibratedCostModel({"dense-k3-s1": 1e-6}, {"dense-k3-s1": 1e-11}, 0.0, 1e-6, 1e-12)
    record = {
        "schema": 1,
        "backend": profile.backend,
        "precision": profile.precisions[0],
        "created": "2026-11-24T00:00:00+00:00",
        "fit": model.to_dict(),
        "quality": {"median_abs_rel_error": p90 / 3, "p90_abs_rel_error": p90},
    }
    path = calibration_path(profile)
    path.write_text(json.dumps(record))
    return path


def test_a_calibration_s_margin_is_its_p90_fit_error(tmp_path):
    calibrated = load_calibration(_calibrate(_profile(tmp_path), 0.123))
    assert calibrated.decision_margin() == (
        0.123,
        "the p90 relative error of the calibration's fit",
    )
    unknown = dataclasses.replace(calibrated, fit_error=None)
    assert unknown.decision_margin()[0] == ROOFLINE_MARGIN


def test_fold_says_the_margin_with_the_cost_model(tmp_path):
    profile = _profile(tmp_path)
    _, note = cost_model_for(profile, profile.precisions[0])
    assert f"decision margin {ROOFLINE_MARGIN:.1%} (the roofline's default margin" in note
    _calibrate(profile, 0.123)
    _, note = cost_model_for(profile, profile.precisions[0])
    assert "decision margin 12.3% (the p90 relative error of the calibration's fit)" in note
