"""Calibration of the merge cost model: the fit, the stored file, which model fold uses, and a real
quick run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.cost.calibrate import (
    REPEATS,
    cost_model_for,
    fit,
    micro_benchmarks,
    point_model,
    predict,
)
from harness.cost.lut import Entry
from harness.cost.model import CalibratedCostModel, ConvGeometry, RooflineCostModel, TableCostModel
from harness.errors import HarnessError
from harness.fold import fold_model
from harness.onnx_io import load_model
from harness.profiles import calibration_path, load_profile


def _truth() -> CalibratedCostModel:
    """A device with depthwise convs 8x slower per FLOP than dense ones and a dispatch cost per
    kernel size."""
    fixed = {
        "dense-k1-s1": 8e-6,
        "dense-k3-s1": 20e-6,
        "dense-k5-s1": 30e-6,
        "dense-k7-s1": 45e-6,
        "dw-k3-s1": 10e-6,
        "dw-k5-s1": 12e-6,
        "dw-k7-s1": 15e-6,
    }
    rate = {k: 8e-11 if k.startswith("dw") else 1e-11 for k in fixed}
    return CalibratedCostModel(fixed, rate, 2e-12, 4e-6, 3e-11)


def _entries(model: CalibratedCostModel, noise: float = 0.0, seed: int = 0):
    """The marginal costs a device that follows ``model`` exactly (plus relative noise) shows on the
    grid, ms."""
    rng = np.random.default_rng(seed)
    return {
        p.key: Entry(predict(model, p) * (1 + noise * rng.standard_normal()) * 1e3, 0.0, 100)
        for p in micro_benchmarks(1)
    }


def test_fit_recovers_the_model_that_generated_the_measurements():
    truth = _truth()
    model, quality = fit(micro_benchmarks(1), _entries(truth))
    assert quality["median_abs_rel_error"] < 1e-6
    for name in truth.fixed_s:
        assert model.seconds_per_flop[name] == pytest.approx(truth.seconds_per_flop[name], rel=1e-3)
        assert model.fixed_s[name] == pytest.approx(truth.fixed_s[name], rel=1e-2, abs=1e-7)
    assert model.elementwise_seconds_per_byte == pytest.approx(
        truth.elementwise_seconds_per_byte, rel=1e-3
    )
    entries = _entries(truth, noise=0.03)
    noisy, quality = fit(micro_benchmarks(1), entries)
    assert (
        0.005 < quality["median_abs_rel_error"] < 0.05
    )  # 3% noise shows up as about 2% median error
    assert noisy.seconds_per_flop["dw-k3-s1"] > 4 * noisy.seconds_per_flop["dense-k3-s1"]
    for point in (p for p in micro_benchmarks(1) if p.kind == "conv" and len(p.pattern) == 1):
        assert predict(noisy, point) * 1e3 == pytest.approx(
            entries[point.key].time, rel=1e-9
        )  # as measured
    between = ConvGeometry(
        (1, 24, 24, 24), (1, 24, 24, 24), (3, 3), 1
    )  # between two calibrated shapes
    assert noisy.conv_cost(between) != noisy.fitted_cost(between)
    far = ConvGeometry(
        (1, 1024, 3, 3), (1, 1024, 3, 3), (3, 3), 1
    )  # no calibrated shape near: the formula
    assert noisy.conv_cost(far) == noisy.fitted_cost(far)


def test_patterns_repeat_and_change_no_shape():
    points = micro_benchmarks(1)
    widening = next(p for p in points if p.kind == "conv" and len(p.pattern) == 2)
    assert (
        widening.pattern[0].out_ch
        == widening.pattern[1].in_shape[1]
        != widening.pattern[0].in_shape[1]
    )
    for point in (widening, next(p for p in points if p.kind == "add")):
        once, thrice = (point_model(point, r) for r in REPEATS)
        ops = [n.op_type for n in thrice.graph.node]
        assert len(ops) == 3 * len(once.graph.node) and len(set(ops)) == 1
        assert (
            once.graph.input[0].type == once.graph.output[0].type
        )  # a pattern returns to its input shape


def test_classes_not_calibrated_use_the_nearest_kernel_of_their_kind():
    model = _truth()
    assert model.nearest_class(False, 9, 1) == "dense-k7-s1"
    assert model.nearest_class(True, 4, 1) == "dw-k5-s1"  # ties go to the larger kernel
    assert (
        model.nearest_class(True, 5, 2) == "dw-k5-s1"
    )  # no strided class calibrated: the same kind's
    dense9 = ConvGeometry((1, 64, 14, 14), (1, 64, 14, 14), (9, 9), 1)
    assert model.conv_cost(dense9) == pytest.approx(
        45e-6 + 1e-11 * dense9.flops + 2e-12 * dense9.bytes_moved()
    )


def _profile_dir(tmp_path: Path) -> Path:
    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    data["timing"] = {
        "warmup_s": 0.02,
        "min_iterations": 5,
        "min_duration_s": 0.02,
        "max_duration_s": 0.1,
        "target_ci": 0.05,
        "block_iterations": 3,
        "block_s": 0.01,
    }
    data["onnxruntime"]["intra_op_threads"] = 1
    (tmp_path / "dev.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "dev.yaml"


def test_fold_uses_table_then_calibration_then_roofline(tmp_path):
    profile = load_profile(str(_profile_dir(tmp_path)))
    model, note = cost_model_for(profile, "fp32")
    assert (
        isinstance(model, RooflineCostModel)
        and "no calibration" in note
        and "harness calibrate" in note
    )
    record = {
        "schema": 1,
        "backend": "onnxruntime",
        "precision": "fp32",
        "created": "2026-01-01T00:00:00",
        "fit": _truth().to_dict(),
    }
    path = calibration_path(profile, "onnxruntime", "fp32")
    assert path.parent == tmp_path and path.name == "dev.onnxruntime.fp32.calibration.json"
    path.write_text(json.dumps(record))
    model, note = cost_model_for(profile, "fp32")
    assert (
        isinstance(model, CalibratedCostModel)
        and model.fixed_s == _truth().fixed_s
        and "calibration" in note
    )
    other, _ = cost_model_for(
        profile, "fp32", backend="torch"
    )  # another backend's calibration is not this one
    assert isinstance(other, RooflineCostModel)
    table = tmp_path / "t.csv"
    table.write_text("id,st,end,time,stdev\n0,0,0,0.5,0.01\n")
    model, note = cost_model_for(profile, "fp32", table)
    assert isinstance(model, TableCostModel) and isinstance(model.fallback, CalibratedCostModel)
    path.write_text('{"schema": 1, "fit": {}}')
    with pytest.raises(HarnessError, match="not a usable calibration"):
        cost_model_for(profile, "fp32")
    # an edited or corrupt coefficient: refused by name, never priced with (nor an OverflowError)
    for key, value, shown in [
        ("seconds_per_byte", float("nan"), "fit.seconds_per_byte nan is not a finite number"),
        ("elementwise_overhead_s", -1e-6, "fit.elementwise_overhead_s -1e-06 is not a finite"),
        ("seconds_per_byte", 10**400, "(int too large to convert to float)"),
    ]:
        path.write_text(json.dumps(dict(record, fit=dict(record["fit"], **{key: value}))))
        with pytest.raises(HarnessError, match=re.escape(shown)):
            cost_model_for(profile, "fp32")


def test_merge_auto_needs_a_cost_model_passed_in(tmp_path):
    from harness.export import export_module
    from harness.zoo import build_model

    module, shape = build_model("resnet20", "dc-1x1")
    model = export_module(module, shape, tmp_path / "r.onnx")
    with pytest.raises(HarnessError, match="needs a device's cost model"):
        fold_model(model, merge="auto")
    assert fold_model(model, merge="all").report.changed


def test_calibrate_command_measures_fits_and_fold_uses_it(tmp_path, capsys):
    """A real, quick calibration on this CPU (a third of the grid, very short timing): file,
    provenance, use."""
    profile_path = _profile_dir(tmp_path)
    assert main(["calibrate", "--device", str(profile_path), "--quick"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "dev.onnxruntime.fp32.calibration.json"
    assert f"wrote {written}" in out
    record = json.loads(written.read_text())
    assert (
        record["backend"] == "onnxruntime" and record["environment"]["cpu"]["available_cores"] >= 1
    )
    assert record["context"]["backend_settings"]["intra_op_threads"] == 1
    assert len(record["points"]) == len(micro_benchmarks(1, quick=True))
    assert all(np.isfinite(p["time_ms"]) and p["n"] >= 5 for p in record["points"])
    assert not (tmp_path / (written.name + ".progress.jsonl")).exists()
    from harness.export import export_module
    from harness.zoo import build_model

    module, shape = build_model("resnet20", "dc-1x1")
    export_module(module, shape, tmp_path / "r.onnx")
    assert (
        main(
            [
                "fold",
                str(tmp_path / "r.onnx"),
                "-o",
                str(tmp_path / "f.onnx"),
                "--device",
                str(profile_path),
                "--no-verify",
            ]
        )
        == 0
    )
    assert f"cost model: using calibration {written.name}" in capsys.readouterr().out
    load_model(tmp_path / "f.onnx")
    # the same file copied beside another profile with other settings: used, and said to be
    other = yaml.safe_load(profile_path.read_text())
    other["onnxruntime"]["intra_op_threads"] = 2
    other_path = tmp_path / "dev2.yaml"
    other_path.write_text(yaml.safe_dump(other))
    shutil.copy(written, tmp_path / "dev2.onnxruntime.fp32.calibration.json")
    argv = ["fold", str(tmp_path / "r.onnx"), "-o", str(tmp_path / "g.onnx"), "--no-verify"]
    assert main(argv + ["--device", str(other_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: dev2.onnxruntime.fp32.calibration.json was measured with profile 'dev', " in (
        err
    )
    assert "not 'dev2', other onnxruntime settings: its costs may not hold here" in err


def test_a_class_lost_in_the_noise_is_priced_by_its_nearest_neighbour_not_as_free():
    from harness.cost.lut import Entry

    truth = _truth()
    entries = _entries(truth)
    lost = "dense-k5-s1"
    points = micro_benchmarks(1)
    for p in points:  # every marginal cost of one class measured as noise around zero
        if p.kind == "conv" and p.conv_class == lost:
            entries[p.key] = Entry(-abs(entries[p.key].time) * 0.1, 0.0, 100)
    model, quality = fit(points, entries)
    assert quality["degenerate_classes"] == [lost] and quality["negative_points"] > 0
    assert lost not in model.fixed_s
    five = ConvGeometry((1, 32, 16, 16), (1, 32, 16, 16), (5, 5), 1)
    assert model.conv_cost(five) > 0  # priced by the nearest dense class, not as free
    every = {p.key: Entry(-1e-3, 0.0, 100) for p in points}
    with pytest.raises(HarnessError, match="every conv class was fitted to cost nothing"):
        fit(points, every)
