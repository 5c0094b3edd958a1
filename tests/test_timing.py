"""The measurement protocol's statistics on seeded synthetic data.

And the interleaved runner on real sessions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness import estimators, timing
from harness.backends.base import open_runners
from harness.backends.onnxruntime import OnnxRuntimeRunner
from harness.profiles import TimingSettings, load_profile
from harness.results import read_results


def test_nearest_rank_matches_trtexec_formula():
    samples = list(range(1, 101))  # 1..100
    assert (
        estimators.nearest_rank(samples, 90) == 90
    )  # timings[100 - 1 - int(0.1 * 100)] = timings[89]
    assert estimators.nearest_rank(samples, 99) == 99
    assert estimators.nearest_rank(samples, 100) == 100
    assert estimators.nearest_rank([5.0], 99) == 5.0


def test_summary_of_a_known_normal_distribution():
    rng = np.random.default_rng(1)
    samples = rng.normal(10.0, 0.5, 20000)
    s = timing.summarize(samples, batch=4)
    assert s.n == 20000
    assert s.median == pytest.approx(10.0, abs=0.02)
    assert s.std == pytest.approx(0.5, rel=0.03)
    assert s.p90 == pytest.approx(10.0 + 0.5 * sps.norm.ppf(0.9), abs=0.03)
    assert s.p99 == pytest.approx(10.0 + 0.5 * sps.norm.ppf(0.99), abs=0.06)
    assert s.cov == pytest.approx(0.05, rel=0.03)
    assert s.throughput_per_s == pytest.approx(4 * 1000 / s.mean)
    assert s.median_ci_low < s.median < s.median_ci_high


def test_median_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    true_median = sps.lognorm(0.3).median()
    hits = 0
    for _ in range(400):
        low, high = estimators.median_ci(rng.lognormal(0, 0.3, 101))
        hits += low <= true_median <= high
    assert 0.92 <= hits / 400 <= 0.99


def test_bootstrap_speedup_interval_coverage():
    rng = np.random.default_rng(3)
    # true ratio of medians: exp(0.2) / exp(0) for lognormal samples with those log-medians
    true_ratio = np.exp(0.2)
    hits = 0
    trials = 150
    for seed in range(trials):
        base = rng.lognormal(0.2, 0.1, 200)
        new = rng.lognormal(0.0, 0.1, 200)
        ratio, low, high = estimators.bootstrap_ratio_ci(base, new, resamples=500, seed=seed)
        assert low <= ratio <= high
        hits += low <= true_ratio <= high
    assert hits / trials >= 0.88


def test_mlperf_early_stopping_rule():
    # 0.9^43 > 1%: not even k = 0 passes
    assert estimators.mlperf_early_stopping(list(range(43))) is None
    ordered = list(range(1, 1025))
    estimate = estimators.mlperf_early_stopping(ordered)
    # with 1024 queries the estimate lies above the plain p90 (a conservative bound) but below p95
    assert estimators.nearest_rank(ordered, 90) <= estimate <= estimators.nearest_rank(ordered, 95)


def test_drift_detection_flags_a_trend_but_not_noise():
    rng = np.random.default_rng(4)
    flat = rng.normal(10, 0.2, 400)
    assert estimators.detect_drift(flat) is None
    ramp = flat + np.linspace(0, 2, 400)
    assert "slower" in estimators.detect_drift(ramp)
    # slower for three quarters, then a fall below the start: the ends and the trend disagree
    rise_then_fall = np.concatenate([np.linspace(10, 13, 300), np.full(100, 9.6)])
    rise_then_fall += rng.normal(0, 0.01, 400)
    tau, p_value = sps.kendalltau(np.arange(400), rise_then_fall)
    assert tau > 0 and p_value < 1e-3  # a significant upward trend overall
    assert np.median(rise_then_fall[-100:]) < 0.97 * np.median(rise_then_fall[:100])
    assert estimators.detect_drift(rise_then_fall) is None  # not "drifted 8% faster (tau +0.19)"


@pytest.fixture
def two_models(tmp_path: Path):
    import torch

    from harness.export import export_module

    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)).eval()
    large = torch.nn.Sequential(
        *[torch.nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1) for i in range(4)]
    ).eval()
    export_module(small, (3, 32, 32), tmp_path / "small.onnx")
    export_module(large, (3, 32, 32), tmp_path / "large.onnx")
    return tmp_path / "small.onnx", tmp_path / "large.onnx"


def _interleaved(models, profile_path, on_round=None, **settings):
    """Time ``models`` interleaved under ``settings``: (their runners, the measurements)."""
    profile = load_profile(str(profile_path))
    runners = {p.stem: OnnxRuntimeRunner(p, profile) for p in models}
    with open_runners(runners):
        measured = timing.measure_interleaved(
            runners, TimingSettings(**settings), on_round=on_round
        )
    return runners, measured


def test_interleaved_measurement_meets_minimums(two_models, fast_profile):
    fractions = []
    _, measured = _interleaved(
        two_models,
        fast_profile,
        fractions.append,
        warmup_s=0.05,
        min_iterations=20,
        min_duration_s=0.2,
        max_duration_s=1.0,
        target_ci=0.5,
        block_iterations=5,
        block_s=0.02,
    )
    for m in measured.values():
        assert len(m.latencies) >= 20
        assert m.run_time_s >= 0.2
        assert m.warmup_iterations >= 1
        assert m.stop_reason
    assert fractions[-1] == pytest.approx(1.0)
    # the large model does far more work: its median must be the larger one
    assert measured["large"].stats().median > measured["small"].stats().median


def test_time_budget_stops_sampling(two_models, fast_profile):
    _, measured = _interleaved(
        two_models,
        fast_profile,
        warmup_s=0.0,
        min_iterations=5,
        min_duration_s=0.05,
        max_duration_s=0.3,
        target_ci=1e-6,
        block_iterations=5,
        block_s=0.02,
    )
    assert all("budget" in m.stop_reason for m in measured.values())
    # one block past the budget at most
    assert max(m.run_time_s for m in measured.values()) < 0.3 + 0.5


def test_paired_sampling_runs_enough_rounds_to_resample_them(two_models, fast_profile):
    # one block per graph already passes every minimum and the time cap: sampling must still run
    # the rounds a paired interval resamples, or it comes from single samples and is far too narrow
    settings = dict(  # block sizes come from the warm-up's mean time: a 20 ms warm-up, not one
        warmup_s=0.02,  # run (a single run on a loaded machine can take 3x another)
        min_iterations=5,
        min_duration_s=0.01,
        max_duration_s=0.05,
        target_ci=0.5,
        block_iterations=5,
        block_s=0.06,
    )
    _, measured = _interleaved(two_models, fast_profile, **settings)
    assert all(len(m.block_ends) >= estimators.MIN_ROUNDS for m in measured.values())
    # and the blocks shrink so that those rounds fit the cap (block_s 0.06 -> 0.05 / 5 = 0.01 s):
    # counted against blocks sized without a cap to fit, not timed (a loaded host stretches time)
    _, uncapped = _interleaved(two_models, fast_profile, **{**settings, "max_duration_s": 10})
    for name, m in measured.items():
        shrunk = np.median(np.diff([0] + m.block_ends))
        full = np.median(np.diff([0] + uncapped[name].block_ends))
        assert shrunk * 3 < full, (shrunk, full)
    _, alone = _interleaved(two_models[:1], fast_profile, **settings)  # a median needs no rounds
    assert len(alone["small"].block_ends) < estimators.MIN_ROUNDS


def test_block_bootstrap_covers_drift_between_blocks():
    """Noise between blocks (clock changes) fools a bootstrap of samples, not one of blocks."""
    rng = np.random.default_rng(5)
    true_ratio = 1.5
    hits_blocks = hits_samples = 0
    trials = 120
    for seed in range(trials):
        blocks, size = 30, 20
        offsets_a = rng.normal(0, 0.05, blocks).repeat(size)  # each block shares a random slowdown
        offsets_b = rng.normal(0, 0.05, blocks).repeat(size)
        base = true_ratio * np.exp(offsets_a + rng.normal(0, 0.01, blocks * size))
        new = np.exp(offsets_b + rng.normal(0, 0.01, blocks * size))
        ends = list(range(size, blocks * size + 1, size))
        _, low, high = estimators.bootstrap_ratio_ci(
            base, new, resamples=400, seed=seed, numerator_blocks=ends, denominator_blocks=ends
        )
        hits_blocks += low <= true_ratio <= high
        _, low, high = estimators.bootstrap_ratio_ci(base, new, resamples=400, seed=seed)
        hits_samples += low <= true_ratio <= high
    assert hits_blocks / trials >= 0.88
    assert hits_samples / trials < 0.6  # the naive interval is far too narrow here


def test_paired_rounds_cancel_drift_common_to_both():
    """Drift that hits baseline and variant alike in a round cancels when paired.

    That is what interleaving is for.
    """
    rng = np.random.default_rng(6)
    blocks, size = 40, 20
    common = rng.normal(0, 0.1, blocks).repeat(size)
    base = 1.5 * np.exp(common + rng.normal(0, 0.01, blocks * size))
    new = np.exp(common + rng.normal(0, 0.01, blocks * size))
    ends = list(range(size, blocks * size + 1, size))
    _, low_p, high_p = estimators.bootstrap_ratio_ci(
        base, new, numerator_blocks=ends, denominator_blocks=ends, paired=True
    )
    _, low_u, high_u = estimators.bootstrap_ratio_ci(
        base, new, numerator_blocks=ends, denominator_blocks=ends
    )
    assert low_p <= 1.5 <= high_p
    assert (high_p - low_p) < (high_u - low_u) / 3


def _rounds(rng, ratio: float, rounds: int = 40, per_block: int = 30):
    """Interleaved blocks where load from other processes changes by round (common to both)."""
    # a shared 2-core machine: +-30% from one round to the next
    load = rng.lognormal(0.0, 0.3, rounds)
    a = [load[i] * ratio * rng.lognormal(0, 0.05, per_block) for i in range(rounds)]
    b = [load[i] * rng.lognormal(0, 0.05, per_block) for i in range(rounds)]
    ends = list(range(per_block, per_block * rounds + 1, per_block))
    return (
        timing.Measurement({"latency_ms": list(np.concatenate(a))}, 1, 1.0, "", block_ends=ends),
        timing.Measurement({"latency_ms": list(np.concatenate(b))}, 1, 1.0, "", block_ends=ends),
    )


def test_speedup_is_the_ratio_of_medians_with_a_paired_interval_that_keeps_coverage():
    """What a reader divides (the two medians) is the speed-up; rounds drawn together keep the
    load they shared paired, so the interval keeps its coverage where the load moves by round."""
    rng = np.random.default_rng(11)
    hits, widths, unpaired_widths = 0, [], []
    for _ in range(100):
        a, b = _rounds(rng, 1.2)
        ratio, low, high = timing.measurement_ratio_ci(a, b, resamples=300)
        assert ratio == np.median(a.latencies) / np.median(b.latencies)
        assert low <= ratio <= high
        hits += low <= 1.2 <= high
        widths.append(estimators.ratio_halfwidth(ratio, low, high))
        unpaired = estimators.bootstrap_ratio_ci(
            a.latencies,
            b.latencies,
            resamples=300,
            numerator_blocks=a.block_ends,
            denominator_blocks=b.block_ends,
        )
        unpaired_widths.append(estimators.ratio_halfwidth(*unpaired))
    assert hits >= 90  # nominal 95%
    assert np.median(widths) * 2 < np.median(unpaired_widths)


def test_pooled_medians_are_the_medians_of_the_blocks_drawn():
    rng = np.random.default_rng(4)
    for _ in range(50):
        sizes = rng.integers(0, 6, 7)
        sizes[0] += 1
        samples = np.round(rng.normal(size=sizes.sum()), 1)  # ties
        ends = list(np.cumsum(sizes))
        copies = rng.integers(0, 3, (4, len(sizes)))
        copies[:, 0] += 1
        starts = [0] + ends[:-1]
        expected = [
            np.median(
                np.concatenate([np.tile(samples[s:e], c) for s, e, c in zip(starts, ends, row)])
            )
            for row in copies
        ]
        assert np.array_equal(estimators.pooled_medians(samples, ends, copies), expected)


def test_sampling_stops_on_the_speedup_interval_and_reports_the_resolution(
    two_models, fast_profile
):
    profile = load_profile(str(fast_profile))
    runners = {p.stem: OnnxRuntimeRunner(p, profile) for p in two_models}
    loose = TimingSettings(
        warmup_s=0.02,
        min_iterations=10,
        min_duration_s=0.1,
        max_duration_s=3.0,
        target_ci=0.5,
        block_iterations=3,
        block_s=0.01,
    )
    strict = dataclasses.replace(loose, max_duration_s=0.15, target_ci=1e-4)
    states = []

    def monitor():
        states.append({"sm_clock_mhz": 1980})
        return states[-1]

    with open_runners(runners):
        met = timing.measure_interleaved(runners, loose, monitor=monitor)
        capped = timing.measure_interleaved(runners, strict)
    assert "every speed-up's 95% CI within +/-50.0%" in met["large"].stop_reason
    # the reference has no speed-up
    assert met["small"].resolution is None and met["large"].resolution <= 0.5
    assert (
        len(met["large"].block_state) == len(met["large"].block_ends)
        and met["large"].warnings() is not None
    )
    assert "below what this run resolves" in capped["large"].stop_reason
    assert capped["large"].resolution > 1e-4
    with OnnxRuntimeRunner(two_models[0], profile) as alone:
        per_median = timing.measure_interleaved(
            {"small": alone}, dataclasses.replace(loose, stop_on="median")
        )
    assert "every median's" in per_median["small"].stop_reason


def test_time_json_is_complete_enough_to_recompute_the_speedups(
    two_models, fast_profile, tmp_path, capsys
):
    import json

    from harness.cli import main

    out = tmp_path / "t.json"
    assert (
        main(["time", *map(str, two_models), "--device", str(fast_profile), "--json", str(out)])
        == 0
    )
    assert "stopped:" in capsys.readouterr().out
    record = json.loads(out.read_text())  # the results schema bench writes
    assert record["schema"] == 2 and record["complete"] is True
    assert record["device"]["profile"]["timing"]["stop_on"] == "speedup"
    assert record["device"]["environment_before"]["cpu"]
    results = read_results(out)
    assert results.device_name == "fast"
    runs = results.run_by_id()
    assert list(runs) == [str(p) for p in two_models]
    for run in runs.values():
        assert run.block_ends[-1] == len(run.series_ms["latency_ms"]) == run.stats.n
        assert run.backend["intra_op_threads"] == 1 and run.stop_reason
    rebuilt = {
        name: timing.Measurement(
            run.series_ms,
            run.warmup_iterations,
            run.run_time_s,
            run.stop_reason,
            block_ends=run.block_ends,
        )
        for name, run in runs.items()
    }
    ratio, low, high = timing.measurement_ratio_ci(
        rebuilt[str(two_models[0])], rebuilt[str(two_models[1])]
    )
    (found,) = results.comparisons
    assert (found.reference, found.subject) == tuple(str(p) for p in two_models)
    assert (found.speedup.ratio, found.speedup.low, found.speedup.high) == (ratio, low, high)
