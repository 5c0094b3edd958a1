"""The pytest plugin end to end in pytester runs: autosave, then compare with a failing
threshold; zoo variants, factories, and enough rounds for p99."""

from __future__ import annotations

import json

import pytest

from tests.conftest import conv_net

pytest_plugins = ["pytester"]

TEST_FILE = """
import os

def test_model(harness_latency):
    stats = harness_latency(os.environ.get("MODEL", "lenet5"))
    assert stats.n >= 10 and stats.p99 >= stats.median
"""


@pytest.mark.slow  # three pytest sessions in subprocesses, one timing ResNet-56: ~1-3 min
def test_plugin_autosaves_extra_info_and_gates_on_compare(pytester, fast_profile, monkeypatch):
    pytester.makepyfile(test_latency=TEST_FILE)
    storage = pytester.path / "bench"
    common = [
        f"--harness-device={fast_profile}",
        f"--benchmark-storage=file://{storage}",
        "-p",
        "no:cacheprovider",
    ]
    first = pytester.runpytest_subprocess(*common, "--benchmark-autosave")
    first.assert_outcomes(passed=1)
    saved = sorted(storage.rglob("*.json"))
    assert len(saved) == 1
    bench = json.loads(saved[0].read_text())["benchmarks"][0]
    extra = bench["extra_info"]
    assert extra["device"] == "fast" and extra["backend"]["backend"] == "onnxruntime"
    latency = extra["device_latency_ms"]
    assert latency["p90"] <= latency["p99"] and latency["median_ci"][0] <= latency["median"]
    assert bench["stats"]["rounds"] >= 10
    ok = pytester.runpytest_subprocess(
        *common, "--benchmark-compare", "--benchmark-compare-fail=median:500%"
    )
    ok.assert_outcomes(passed=1)
    # a regression: the same test now times a model with ~200x the work; the 5% gate must fail
    monkeypatch.setenv("MODEL", "resnet56")
    slower = pytester.runpytest_subprocess(
        *common, "--benchmark-compare", "--benchmark-compare-fail=median:5%"
    )
    assert slower.ret != 0
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()


USAGE_FILE = """
import pytest
from harness.errors import HarnessError

def test_zoo_variant(harness_latency):
    assert harness_latency("resnet20", variant="dc-1x1").n == 100

def test_factory_with_its_shape(harness_latency):
    assert harness_latency("user_models:tiny", input_shape=(3, 16, 16), rounds=30).n == 30

def test_unknown_variant(harness_latency):
    with pytest.raises(HarnessError, match="unknown variant"):
        harness_latency("resnet20", variant="dc-nope")
"""


def test_variants_factories_and_enough_rounds_for_p99(pytester, fast_profile, monkeypatch):
    pytester.makepyfile(test_usage=USAGE_FILE)
    pytester.makepyfile(
        user_models="import torch\n\ndef tiny():\n    return torch.nn.Sequential("
        "torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    storage = pytester.path / "bench"
    result = pytester.runpytest_subprocess(
        f"--harness-device={fast_profile}",
        "-p",
        "no:cacheprovider",
        f"--benchmark-storage=file://{storage}",
        "--benchmark-autosave",
    )
    result.assert_outcomes(passed=3)
    saved = sorted(storage.rglob("*.json"))
    benches = {b["name"]: b for b in json.loads(saved[0].read_text())["benchmarks"]}
    zoo = benches["test_zoo_variant"]
    # the fast profile asks for 10 rounds; p99 needs 100 to be anything but the maximum
    assert zoo["stats"]["rounds"] == 100 and zoo["extra_info"]["variant"] == "dc-1x1"
    extra = zoo["extra_info"]
    assert extra["percentiles_at_maximum"] == [] and "percentile_note" not in extra
    assert zoo["extra_info"]["device_latency_ms"]["n"] == 100
    factory = benches["test_factory_with_its_shape"]["extra_info"]
    assert factory["model"] == "user_models:tiny" and factory["percentiles_at_maximum"] == ["p99"]
    assert "30 rounds p99 equal the maximum" in factory["percentile_note"]


def test_percentiles_at_the_maximum_agree_with_the_nearest_rank_used():
    from harness.estimators import nearest_rank
    from harness.pytest_plugin import (
        REPORTED_PERCENTILES,
        percentiles_at_maximum,
        rounds_for_percentiles,
    )

    for n in range(1, 260):
        samples = list(range(n))  # distinct values: a percentile is the maximum only by rank
        at_max = [f"p{p}" for p in REPORTED_PERCENTILES if nearest_rank(samples, p) == n - 1]
        assert percentiles_at_maximum(n) == at_max, n
    needed = rounds_for_percentiles()
    assert percentiles_at_maximum(needed) == [] and percentiles_at_maximum(needed - 1) == ["p99"]


PAIRED_FILE = """
import os

def test_two_calls_in_one_test(harness_latency):
    first = harness_latency(os.environ["SMALL"])
    second = harness_latency(os.environ["LARGE"])  # no FixtureAlreadyUsed
    assert first.n >= 10 and second.n >= 10 and second.median > first.median

def test_paired_speedup(harness_latency):
    r = harness_latency({"large": os.environ["LARGE"], "small": os.environ["SMALL"]})
    assert r.speedup("small").low > 1.0
    assert r.speedup("large", "small").high < 1.0  # the same pair the other way round
    harness_latency.gate(r, "small")  # faster: passes

def test_a_dynamic_graph_bound_by_input_shape(harness_latency):
    r = harness_latency({"small": os.environ["SMALL"], "dynamic": os.environ["DYNAMIC"]},
                        input_shape="3x32x32")
    assert r.runs["dynamic"].input_shape == [1, 3, 32, 32]

def test_gate_fails_a_slower_graph(harness_latency):
    r = harness_latency({"small": os.environ["SMALL"], "large": os.environ["LARGE"]})
    harness_latency.gate(r, "large", threshold="5%")
"""


def test_paired_graphs_speedups_and_the_ci_gate(pytester, fast_profile, monkeypatch, tmp_path):
    monkeypatch.setenv("SMALL", str(conv_net(tmp_path / "small.onnx", 1, 4)))
    monkeypatch.setenv("LARGE", str(conv_net(tmp_path / "large.onnx", 4, 32)))
    monkeypatch.setenv("DYNAMIC", str(conv_net(tmp_path / "dynamic.onnx", 2, 8, dynamic=True)))
    pytester.makepyfile(test_paired=PAIRED_FILE)
    result = pytester.runpytest_subprocess(
        f"--harness-device={fast_profile}", "-p", "no:cacheprovider", "-rf"
    )
    result.assert_outcomes(passed=3, failed=1)
    output = result.stdout.str()
    assert "test_gate_fails_a_slower_graph" in output and "is slower than small" in output
    assert "FixtureAlreadyUsed" not in output
