"""The papers' suite.

Every claim maps onto the zoo, the specs hit the published figures, the table reads results.
"""

from __future__ import annotations

import csv

import pytest

from harness.cli import main
from harness.export import export_module
from harness.fold import RooflineCostModel, fold_model
from harness.graph_stats import count_flops, count_params
from harness.onnx_io import load_model
from harness.profiles import load_profile
from harness.report.papers import CLAIMS, suite_models
from harness.results import RatioCI
from harness.zoo import build_model, list_variants
from tests.conftest import zoo_case
from tests.recompute import assert_recomputes


def test_every_claim_names_a_zoo_variant():
    for claim in CLAIMS:
        assert claim.variant in list_variants(claim.model)
        assert claim.architecture.startswith(("closest faithful", "sensitivity"))
    assert suite_models()["resnet56"] == ["baseline", "dc-1x1"]
    assert suite_models()["vgg19"] == ["baseline", "cie-graded", "cie-27x"]


def _deployed_cost(model: str, variant: str, tmp_path):
    module, shape = build_model(model, variant)
    export_module(module, shape, tmp_path / f"{model}-{variant}.onnx")
    # what bench --device host folds with
    host = RooflineCostModel.from_profile(load_profile("host"))
    graph = fold_model(load_model(tmp_path / f"{model}-{variant}.onnx"), cost_model=host).model
    return count_flops(graph), count_params(graph)


@pytest.mark.parametrize(
    "model,variant,flops,params",
    [
        # published -74.1%; host's auto merges every pair (the one whose merged conv is one of
        # its convs' shape is taken whatever the margin: see chains.merge_risk)
        zoo_case("vgg16", "elc-74", 0.753, None),
        zoo_case("vgg19", "cie-graded", 0.721, 0.963),  # published 27.23x fewer parameters
        ("lenet5", "psm-20x", None, 0.952),  # published 1/20 of the size
    ],
)
def test_paper_variants_reach_the_published_reductions(model, variant, flops, params, tmp_path):
    base_flops, base_params = _deployed_cost(model, "baseline", tmp_path)
    ours_flops, ours_params = _deployed_cost(model, variant, tmp_path)
    if flops is not None:
        assert 1 - ours_flops / base_flops == pytest.approx(flops, abs=0.001)
    if params is not None:
        assert 1 - ours_params / base_params == pytest.approx(params, abs=0.001)


def test_lenet5_width_pruning_is_backward_compatible():
    module, _ = build_model("lenet5")
    assert sum(p.numel() for p in module.parameters()) == 61706
    pruned, _ = build_model("lenet5", "psm-20x")
    assert pruned[3].out_channels == 7 and pruned[7].in_features == 7 * 25


def test_suite_on_lenet5_writes_claims_and_reports(tmp_path, fast_profile, capsys):
    out = tmp_path / "papers"
    assert (
        main(
            ["suite", "papers", "--device", str(fast_profile), "--models", "lenet5", "-o", str(out)]
        )
        == 0
    )
    table = (out / "papers.md").read_text()
    row = next(line for line in table.splitlines() if "| lenet5 | psm-20x |" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[7:9] == ["95.0%", "95.2%"]  # params: claimed 1/20, ours 61,706 -> 2,973
    # our latencies and speed-up with its interval
    assert " -> " in cells[10] and "x [" in cells[11]
    assert_recomputes(*cells[10].split(" -> "), cells[11])  # measured here, divided by a reader
    # unrun claims listed, not invented
    assert "| resnet50 | cie-50 |" in table and "n/a (not run)" in table
    records = list(csv.DictReader((out / "papers.csv").open()))
    assert len(records) == len(CLAIMS)
    measured = next(r for r in records if r["variant"] == "psm-20x")
    assert (
        float(measured["speedup_ci_low"])
        <= float(measured["speedup"])
        <= float(measured["speedup_ci_high"])
    )
    for name in (
        "report.md",
        "report.csv",
        "report.tex",
        "results.json",
        "latency.png",
        "speedup.svg",
    ):
        assert (out / "report" / name).stat().st_size > 0
    tex = (out / "papers.tex").read_text()  # the table people paste: booktabs, with our interval
    ours = RatioCI(*(float(measured[k]) for k in ("speedup", "speedup_ci_low", "speedup_ci_high")))
    assert r"\toprule" in tex and "PSM & lenet5 & psm-20x" in tex and ours.parts()[1] in tex
    assert r"\begin{document}" in (out / "papers-standalone.tex").read_text()
    assert main(["suite", "papers", "--device", str(fast_profile), "--models", "alexnet"]) == 2
    assert "not in the papers' suite" in capsys.readouterr().err
