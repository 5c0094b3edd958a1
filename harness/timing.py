"""The measurement protocol and its statistics.

Warm-up by time (and, on a GPU with NVML, until the SM clock settles); then baseline and variants
are sampled interleaved in blocks (A B C, B C A, C A B, ...) so that drift hits all of them alike;
each configuration gets at least ``min_iterations`` samples and ``min_duration_s`` of its own run
time. Sampling stops on what is reported: with ``stop_on: speedup`` (the default) when every paired
speed-up against the first configuration has a 95% interval within ``target_ci``, with ``stop_on:
median`` when every median's own interval is; else at ``max_duration_s``, saying the resolution it
reached. A monitor (``harness.envinfo.GpuMonitor``) can record the device state after every block.
Percentiles are nearest-rank as in trtexec.

Runs on the device: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps

from harness.backends.base import LATENCY, Runner
from harness.profiles import TimingSettings
from harness.results import Stats

UNSTABLE_COV = 0.02  # coefficient of variation above which a run is flagged unstable
CLOCK_MOVE = 0.02  # relative SM-clock range across blocks above which a run is flagged
SETTLE_CAP_S = 30.0  # longest extra warm-up spent waiting for clocks to settle
# fewest interleaved rounds before a paired interval is trusted (or sampling stops): with fewer, the
# rounds cannot be resampled and an interval over single samples is far too narrow
MIN_ROUNDS = 5
Monitor = Callable[[], Dict[str, Any]]  # device state now (SM clock, power, throttle reasons)


def nearest_rank(sorted_samples: Sequence[float], percent: float) -> float:
    """Percentile by nearest rank, trtexec's convention.

    That is ``timings[n - 1 - int((1 - p/100) * n)]``.
    """
    n = len(sorted_samples)
    # computed so that 90% of 100 is exactly 10, not 9.99..
    tail = int((100.0 - percent) * n / 100.0 + 1e-9)
    return float(sorted_samples[max(0, n - 1 - tail)])


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> Tuple[float, float]:
    """Distribution-free confidence interval of the median.

    From order statistics (binomial, no normality assumed).
    """
    ordered = np.sort(np.asarray(samples, dtype=float))
    n = len(ordered)
    if n < 6:  # too few samples for any order-statistic interval at 95%
        return float(ordered[0]), float(ordered[-1])
    alpha = 1.0 - confidence
    low = int(sps.binom.ppf(alpha / 2, n, 0.5))
    high = int(sps.binom.isf(alpha / 2, n, 0.5))
    return float(ordered[max(low - 1, 0)]), float(ordered[min(high, n - 1)])


def mlperf_early_stopping(
    samples: Sequence[float], percentile: float = 90.0, confidence: float = 0.99
) -> Optional[float]:
    """MLPerf SingleStream-style percentile estimate with early stopping.

    Discard the k slowest queries, k the largest count for which a binomial test still shows (at
    ``confidence``) that the true percentile lies at or below the slowest remaining query; report
    that query. None when there are too few samples for even k = 0 (44 at p90, 459 at p99).
    """
    ordered = np.sort(np.asarray(samples, dtype=float))
    n, tail = len(ordered), 1.0 - percentile / 100.0
    allowed = int(sps.binom.ppf(1.0 - confidence, n, tail))
    # ppf gives the smallest k with cdf >= 1 - confidence; step back while cdf(k) is too large.
    while allowed >= 0 and sps.binom.cdf(allowed, n, tail) > 1.0 - confidence:
        allowed -= 1
    if allowed < 0:
        return None
    return float(ordered[n - 1 - allowed])


def detect_drift(samples: Sequence[float], threshold: float = 0.03) -> Optional[str]:
    """A description of a significant trend in the samples (throttling, clock changes), else None.

    Flags when Kendall's tau against sample order is significant (p < 0.001) and the median of the
    last quarter differs from the first quarter's by more than ``threshold`` in the same direction
    (a series whose ends move against its overall trend is not one drift).
    """
    values = np.asarray(samples, dtype=float)
    if len(values) < 40:
        return None
    tau, p_value = sps.kendalltau(np.arange(len(values)), values)
    quarter = len(values) // 4
    first, last = np.median(values[:quarter]), np.median(values[-quarter:])
    change = (last - first) / first
    if p_value < 1e-3 and abs(change) > threshold and np.sign(change) == np.sign(tau):
        direction = "slower" if change > 0 else "faster"
        return (
            f"latency drifted {abs(change):.1%} {direction} during the run (Kendall tau {tau:.2f})"
        )
    return None


def summarize(samples_ms: Sequence[float], batch: int = 1) -> Stats:
    """Statistics of latency samples in ms.

    std is the population std (as in trtexec), CoV = std / mean.
    """
    values = np.asarray(samples_ms, dtype=float)
    if values.size == 0:
        raise ValueError("no samples to summarise")
    ordered = np.sort(values)
    mean = float(values.mean())
    std = float(values.std())
    low, high = median_ci(ordered)
    return Stats(
        n=int(values.size),
        median=float(np.median(values)),
        mean=mean,
        min=float(ordered[0]),
        max=float(ordered[-1]),
        p90=nearest_rank(ordered, 90),
        p95=nearest_rank(ordered, 95),
        p99=nearest_rank(ordered, 99),
        std=std,
        cov=std / mean if mean else 0.0,
        median_ci_low=low,
        median_ci_high=high,
        throughput_per_s=batch * 1000.0 / mean if mean else 0.0,
        mlperf_p90=mlperf_early_stopping(ordered),
    )


def block_medians(samples: Sequence[float], block_ends: Sequence[int]) -> np.ndarray:
    """Median of each timing block.

    ``block_ends`` are the cumulative sample counts after each block.
    """
    values = np.asarray(samples, dtype=float)
    starts = [0] + list(block_ends[:-1])
    return np.array([np.median(values[a:b]) for a, b in zip(starts, block_ends) if b > a])


def bootstrap_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    numerator_blocks: Optional[Sequence[int]] = None,
    denominator_blocks: Optional[Sequence[int]] = None,
    paired: bool = False,
) -> Tuple[float, float, float]:
    """Ratio of medians (numerator / denominator) with a percentile-bootstrap confidence interval.

    With numerator = baseline latencies and denominator = variant latencies this is the variant's
    speed-up. Given the timing blocks of both series, whole blocks are resampled (their medians), so
    that the interval also covers drift between blocks (samples inside one block are not
    independent); otherwise single samples. ``paired``: block i of both series ran in the same
    interleaved round, so rounds are resampled together and drift common to both cancels, as the
    interleaving intends.
    """
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if (
        numerator_blocks
        and denominator_blocks
        and len(numerator_blocks) >= MIN_ROUNDS
        and len(denominator_blocks) >= MIN_ROUNDS
    ):
        a_units, b_units = block_medians(a, numerator_blocks), block_medians(b, denominator_blocks)
    else:
        a_units, b_units = a, b
    rng = np.random.default_rng(seed)
    pick_a = rng.integers(0, a_units.size, size=(resamples, a_units.size))
    same_rounds = paired and a_units.size == b_units.size and a_units.size != a.size
    pick_b = (
        pick_a if same_rounds else rng.integers(0, b_units.size, size=(resamples, b_units.size))
    )
    med_a = np.median(a_units[pick_a], axis=1)
    med_b = np.median(b_units[pick_b], axis=1)
    ratios = med_a / med_b
    alpha = (1.0 - confidence) / 2.0
    ratio = float(np.median(a) / np.median(b))
    low, high = float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))
    return ratio, min(low, ratio), max(high, ratio)


def measurement_ratio_ci(
    numerator: Measurement,
    denominator: Measurement,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """Speed-up (numerator / denominator) of two measurements of one interleaved run, 95% interval.

    Round i ran block i of both back to back, so the ratio of their block medians in that round is
    free of what both shared (load from other processes, clock drift): the estimate is the median of
    those per-round ratios and the interval a percentile bootstrap over rounds. With fewer than 5
    rounds, ``bootstrap_ratio_ci`` of samples.
    """
    rounds = min(len(numerator.block_ends), len(denominator.block_ends))
    if rounds < MIN_ROUNDS:
        return bootstrap_ratio_ci(
            numerator.latencies, denominator.latencies, confidence, resamples, seed
        )
    ratios = block_medians(numerator.latencies, numerator.block_ends[:rounds]) / block_medians(
        denominator.latencies, denominator.block_ends[:rounds]
    )
    rng = np.random.default_rng(seed)
    medians = np.median(ratios[rng.integers(0, rounds, size=(resamples, rounds))], axis=1)
    alpha = (1.0 - confidence) / 2.0
    ratio = float(np.median(ratios))
    low, high = float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))
    return ratio, min(low, ratio), max(high, ratio)


def ratio_halfwidth(ratio: float, low: float, high: float) -> float:
    """Half an interval's width relative to its point estimate."""
    return (high - low) / 2.0 / ratio if ratio else float("inf")


def state_warnings(states: Sequence[Dict[str, Any]]) -> List[str]:
    """What moved in the device state recorded after each block: the SM clock, throttling, power."""
    found: List[str] = []
    clocks = [s["sm_clock_mhz"] for s in states if s.get("sm_clock_mhz")]
    if clocks and (max(clocks) - min(clocks)) / max(clocks) > CLOCK_MOVE:
        found.append(
            f"SM clock moved between blocks: {min(clocks):.0f}-{max(clocks):.0f} MHz (lock clocks: "
            f"nvidia-smi -lgc, or let the GPU settle)"
        )
    reasons = sorted(
        {
            r
            for s in states
            for r in s.get("throttle_reasons", [])
            if r not in ("gpu_idle", "applications_clocks_setting")
        }
    )
    if reasons:
        found.append(f"GPU throttled during the run: {', '.join(reasons)}")
    return found


@dataclasses.dataclass
class Measurement:
    """Raw samples of one configuration and why sampling stopped."""

    series: Dict[str, List[float]]
    warmup_iterations: int
    run_time_s: float
    stop_reason: str
    batch: int = 1
    # cumulative sample count after each block
    block_ends: List[int] = dataclasses.field(default_factory=list)
    # device state after each block
    block_state: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    resolution: Optional[float] = (
        None  # relative CI half-width reached (speed-up vs the reference, or median)
    )

    @property
    def latencies(self) -> List[float]:
        """The end-to-end latency samples in ms."""
        return self.series[LATENCY]

    def stats(self) -> Stats:
        """Statistics of the latency series."""
        return summarize(self.latencies, self.batch)

    def warnings(self) -> List[str]:
        """Problems a reader of the numbers must know about: instability and drift."""
        found = []
        stats = self.stats()
        if stats.cov > UNSTABLE_COV:
            found.append(
                f"unstable: CoV {stats.cov:.1%} > {UNSTABLE_COV:.0%}"
                " (lock clocks, close other work)"
            )
        drift = detect_drift(self.latencies)
        if drift:
            found.append(drift)
        return found + state_warnings(self.block_state)


def _enough(m: Measurement, settings: TimingSettings, rounds: int = 1) -> bool:
    """Whether ``m`` has the samples, the time and the ``rounds`` (blocks) a stop needs."""
    return (
        len(m.latencies) >= settings.min_iterations
        and m.run_time_s >= settings.min_duration_s
        and len(m.block_ends) >= rounds
    )


def resolutions(
    results: Dict[str, Measurement], settings: TimingSettings, reference: str, resamples: int = 2000
) -> Dict[str, float]:
    """The relative CI half-width each configuration has reached for what is reported.

    That is its paired speed-up against ``reference`` (``stop_on: speedup``, two or more
    configurations), else its median.
    """
    found = {}
    for name, m in results.items():
        if settings.stop_on == "speedup" and name != reference and len(results) > 1:
            found[name] = ratio_halfwidth(*measurement_ratio_ci(results[reference], m, resamples))
        elif settings.stop_on == "median" or len(results) == 1:
            found[name] = summarize(m.latencies).ci_halfwidth_rel
    return found


def _settle(runner: Runner, monitor: Monitor, started: float) -> int:
    """Keep inferring until two consecutive SM-clock readings agree within 1%.

    Gives up after SETTLE_CAP_S.
    """
    runs, previous = 0, monitor().get("sm_clock_mhz")
    while time.perf_counter() - started < SETTLE_CAP_S:
        for _ in range(20):
            runner.measure_once()
        runs += 20
        current = monitor().get("sm_clock_mhz")
        if not current or not previous or abs(current - previous) <= 0.01 * previous:
            break
        previous = current
    return runs


def measure_interleaved(
    runners: Dict[str, Runner],
    settings: TimingSettings,
    on_round: Optional[Callable[[float], None]] = None,
    monitor: Optional[Monitor] = None,
) -> Dict[str, Measurement]:
    """Time several runners in interleaved blocks under one protocol; raw samples per runner.

    Each block lasts about ``block_s`` (at least ``block_iterations`` inferences), so every
    configuration gets the same share of wall time whatever its latency; the first ``block_warmup``
    inferences of a block are not recorded (the previous configuration's threads may still be
    spinning down). The first runner is the reference of the speed-ups. ``monitor`` is read after
    every block (and to wait for clocks to settle after warm-up). ``on_round`` receives the fraction
    of the minimum duration done.
    """
    results: Dict[str, Measurement] = {}
    block_sizes: Dict[str, int] = {}
    for name, runner in runners.items():
        warm, start = 0, time.perf_counter()
        while time.perf_counter() - start < settings.warmup_s or warm < 1:
            runner.measure_once()
            warm += 1
        per_iteration = (time.perf_counter() - start) / warm
        if monitor is not None:
            warm += _settle(runner, monitor, time.perf_counter())
        # paired runs need MIN_ROUNDS rounds: blocks small enough for them to fit the time cap
        block_s = (
            settings.block_s
            if len(runners) == 1
            else min(settings.block_s, settings.max_duration_s / MIN_ROUNDS)
        )
        block_sizes[name] = max(settings.block_iterations, int(block_s / max(per_iteration, 1e-9)))
        results[name] = Measurement({}, warm, 0.0, "", runner.batch)
    names = list(runners)
    what = "speed-up" if settings.stop_on == "speedup" and len(names) > 1 else "median"
    round_index = 0
    rounds = MIN_ROUNDS if len(results) > 1 else 1  # paired intervals resample rounds
    while True:
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            m = results[name]
            for _ in range(settings.block_warmup):
                runners[name].measure_once()
            block_start = time.perf_counter()
            for _ in range(block_sizes[name]):
                for key, value in runners[name].measure_once().items():
                    m.series.setdefault(key, []).append(value)
            m.run_time_s += time.perf_counter() - block_start
            m.block_ends.append(len(m.latencies))
            if monitor is not None:
                m.block_state.append(monitor())
        round_index += 1
        slowest = min(m.run_time_s for m in results.values())
        if on_round:
            on_round(min(1.0, slowest / max(settings.min_duration_s, 1e-9)))
        enough = all(_enough(m, settings, rounds) for m in results.values())
        met = (
            enough
            and max(resolutions(results, settings, names[0], 500).values()) <= settings.target_ci
        )
        if met:
            reason = f"every {what}'s 95% CI within +/-{settings.target_ci:.1%}"
            break
        if max(m.run_time_s for m in results.values()) >= settings.max_duration_s and all(
            len(m.latencies) >= settings.min_iterations and len(m.block_ends) >= rounds
            for m in results.values()
        ):
            reason = f"time budget of {settings.max_duration_s:g} s per configuration reached"
            break
    reached = resolutions(results, settings, names[0])
    widest = max(reached.values())
    if not met and widest > settings.target_ci:
        reason += (
            f": {what} CIs reach +/-{widest:.1%}, "
            f"not the target +/-{settings.target_ci:.1%}; differences "
            f"smaller than that are below what this run resolves"
        )
    for name, m in results.items():
        m.stop_reason = reason
        m.resolution = reached.get(name)
    return results
