"""The pytest plugin end to end in pytester runs: autosave, then compare with a failing threshold."""

from __future__ import annotations

import json

pytest_plugins = ["pytester"]

TEST_FILE = """
import os

def test_model(harness_latency):
    stats = harness_latency(os.environ.get("MODEL", "lenet5"))
    assert stats.n >= 10 and stats.p99 >= stats.median
"""


def test_plugin_autosaves_extra_info_and_gates_on_compare(pytester, fast_profile, monkeypatch):
    pytester.makepyfile(test_latency=TEST_FILE)
    storage = pytester.path / "bench"
    common = [f"--harness-device={fast_profile}", f"--benchmark-storage=file://{storage}", "-p", "no:cacheprovider"]
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
    ok = pytester.runpytest_subprocess(*common, "--benchmark-compare", "--benchmark-compare-fail=median:500%")
    ok.assert_outcomes(passed=1)
    # a regression: the same test now times a model with ~200x the work, and the 5% gate must fail the run
    monkeypatch.setenv("MODEL", "resnet56")
    slower = pytester.runpytest_subprocess(*common, "--benchmark-compare", "--benchmark-compare-fail=median:5%")
    assert slower.ret != 0
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()
