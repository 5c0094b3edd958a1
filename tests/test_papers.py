"""The papers' suite: every claim maps onto the zoo, and the claims table reads measured results."""

from __future__ import annotations

from harness.bench import BenchOptions, run_bench
from harness.export import resolve_source
from harness.papers import CLAIMS, claims_table, suite_models
from harness.profiles import load_profile
from harness.zoo import list_variants


def test_every_claim_names_a_zoo_variant():
    for claim in CLAIMS:
        assert claim.variant in list_variants(claim.model)
    assert suite_models()["resnet56"] == ["baseline", "dc-1x1"]


def test_claims_table_from_a_real_run(tmp_path, fast_profile):
    profile = load_profile(str(fast_profile))
    options = BenchOptions([(resolve_source("lenet5"), ["baseline", "dc-fc"])], profile, tmp_path)
    results = run_bench(options, ["test"])
    table = claims_table(results)
    row = next(line for line in table.splitlines() if "| lenet5 | dc-fc |" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[-3].endswith("]") and "x [" in cells[-3]        # our measured speed-up with its interval
    # params: 61,706 -> 156 + 2,416 + (400 x 10 + 10) = 6,582 once the three FC layers are merged into one
    assert cells[8] == "89.3%"
    assert "| resnet50 | cie-50 |" in table and "n/a" in table    # claims not run here are listed, not invented
