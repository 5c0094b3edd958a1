"""``fold --merge auto --arbitrate``: the plan, none and all timed here, the kept graph never slower
than the better of none and all in the measurement that chose it."""

from __future__ import annotations

import json

import onnx
import pytest
import yaml
from torch import nn

from harness.cli import main
from harness.cost.arbitrate import arbitrate
from harness.errors import HarnessError
from harness.export import export_module
from harness.fold import RooflineCostModel, fold_model
from harness.graph_stats import op_histogram
from harness.profiles import load_profile


def _chains(tmp_path):
    """Two linear pairs (3x3 then 3x3, 1x1 then 3x3; padding on each pair's first conv) joined by
    a ReLU: none, all and a roofline plan to choose among."""
    module = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=2),
        nn.Conv2d(32, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 8, 1, padding=1),
        nn.Conv2d(8, 32, 3),
        nn.ReLU(),
    )
    return export_module(module.eval(), (3, 16, 16), tmp_path / "chains.onnx")


def _convs(model: onnx.ModelProto) -> int:
    return op_histogram(model).get("Conv", 0)


def test_the_kept_graph_follows_the_measured_speed_up(tmp_path, fast_profile, capsys):
    _chains(tmp_path)
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    args = ["fold", str(tmp_path / "chains.onnx"), "-o", str(out), "--device", str(fast_profile)]
    assert main(args + ["--merge", "auto", "--arbitrate", "--report", str(report)]) == 0
    assert "arbitration (medians on this machine)" in capsys.readouterr().out
    choice = json.loads(report.read_text())["arbitration"]
    assert choice["chosen"] in ("none", "all", "auto") and choice["reference"] in ("none", "all")
    ratio = choice["plan_vs_reference"][0]
    timed = choice["medians_ms"]
    reference_graph = choice["same_as"].get(choice["reference"], choice["reference"])
    assert min(timed[n] for n in ("none", "all") if n in timed) == timed[reference_graph]
    if choice["chosen"] == "auto":
        assert ratio >= 1.0
    else:
        assert ratio < 1.0 and choice["chosen"] == choice["reference"]
    profile = load_profile(str(fast_profile))
    cost = RooflineCostModel.from_profile(profile)
    kept = fold_model(onnx.load(str(tmp_path / "chains.onnx")), choice["chosen"], cost).model
    assert _convs(onnx.load(str(out))) == _convs(kept)  # the file written is the graph kept


def test_identical_graphs_are_not_timed(tmp_path, fast_profile):
    model = export_module(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval(), (3, 8, 8), tmp_path / "m.onnx"
    )
    same = {name: model for name in ("none", "all", "auto")}
    choice = arbitrate(same, load_profile(str(fast_profile)))
    assert choice.chosen == "auto" and choice.medians_ms == {}
    assert choice.same_as == {"all": "none", "auto": "none"}


def test_arbitration_is_refused_where_it_cannot_measure(tmp_path, fast_profile, capsys):
    _chains(tmp_path)
    source, out = str(tmp_path / "chains.onnx"), str(tmp_path / "o.onnx")
    assert main(["fold", source, "-o", out, "--merge", "all", "--arbitrate"]) == 2
    assert "use --merge auto" in capsys.readouterr().err
    data = yaml.safe_load(fast_profile.read_text())
    data["remote"] = {"host": "xavier.local"}
    remote = tmp_path / "remote.yaml"
    remote.write_text(yaml.safe_dump(data))
    model = onnx.load(source)
    with pytest.raises(HarnessError, match="times on this machine"):
        arbitrate({"none": model, "all": model, "auto": model}, load_profile(str(remote)))
    assert main(["fold", source, "-o", out, "--device", str(remote), "--arbitrate"]) == 2
    assert not (tmp_path / "o.onnx").exists()
