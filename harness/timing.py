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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.backends.base import LATENCY, Runner
from harness.estimators import (
    MIN_ROUNDS,
    bootstrap_ratio_ci,
    detect_drift,
    median_ci,
    mlperf_early_stopping,
    nearest_rank,
    ratio_halfwidth,
)
from harness.profiles import TimingSettings
from harness.results import Stats

if TYPE_CHECKING:
    from harness.energy import BlockEnergy, EnergyMeter

UNSTABLE_COV = 0.02  # coefficient of variation above which a run is flagged unstable
CLOCK_MOVE = 0.02  # relative SM-clock range across blocks above which a run is flagged
SETTLE_CAP_S = 30.0  # longest extra warm-up spent waiting for clocks to settle
Monitor = Callable[[], Dict[str, Any]]  # device state now (SM clock, power, throttle reasons)


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


def measurement_ratio_ci(
    numerator: Measurement,
    denominator: Measurement,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """Speed-up (numerator / denominator) of two measurements of one interleaved run, 95% interval.

    The speed-up is the ratio of the two medians (what a reader recomputes from the printed
    medians); the interval is a paired percentile bootstrap over rounds: round i ran block i of
    both back to back, so rounds are drawn together and what both shared in a round (load from
    other processes, clock drift) stays paired. With fewer than ``MIN_ROUNDS`` rounds, a bootstrap
    of samples.
    """
    rounds = min(len(numerator.block_ends), len(denominator.block_ends))
    return bootstrap_ratio_ci(
        numerator.latencies,
        denominator.latencies,
        confidence,
        resamples,
        seed,
        numerator.block_ends[:rounds],
        denominator.block_ends[:rounds],
        paired=True,
    )


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
    # energy of each block, where an energy meter bracketed them
    block_energy: List[BlockEnergy] = dataclasses.field(default_factory=list)

    @property
    def block_inferences(self) -> List[int]:
        """Inferences (recorded samples) in each block."""
        return [b - a for a, b in zip([0] + self.block_ends[:-1], self.block_ends)]

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


def keep_interrupted(results: Dict[str, Measurement]) -> bool:
    """Close a run that Ctrl-C or SIGTERM stopped, in place: each measurement cut back to its last
    whole block, its stop reason saying so. False (nothing worth keeping) when a configuration has
    no whole block yet."""
    if not results or not all(m.block_ends for m in results.values()):
        return False
    rounds = min(len(m.block_ends) for m in results.values())
    for m in results.values():
        for values in m.series.values():
            del values[m.block_ends[-1] :]
        m.stop_reason = (
            f"interrupted (Ctrl-C or SIGTERM) after {rounds} round{'s' * (rounds != 1)}: "
            f"an incomplete run, kept as measured"
        )
    return True


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
    energy: Optional[EnergyMeter] = None,
    into: Optional[Dict[str, Measurement]] = None,
) -> Dict[str, Measurement]:
    """Time several runners in interleaved blocks under one protocol; raw samples per runner.

    Each block lasts about ``block_s`` (at least ``block_iterations`` inferences), so every
    configuration gets the same share of wall time whatever its latency; the first ``block_warmup``
    inferences of a block are not recorded (the previous configuration's threads may still be
    spinning down). The first runner is the reference of the speed-ups. ``monitor`` is read after
    every block (and to wait for clocks to settle after warm-up); ``energy`` brackets every
    block's timed inferences (``Measurement.block_energy``). ``on_round`` receives the fraction of
    the minimum duration done. ``into`` is the dict filled (as it goes, for a caller that keeps
    an interrupted run: ``keep_interrupted``).
    """
    results: Dict[str, Measurement] = into if into is not None else {}
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
            runners[name].start_block()
            if energy is not None:
                energy.start()
            block_start = time.perf_counter()
            for _ in range(block_sizes[name]):
                for key, value in runners[name].measure_once().items():
                    m.series.setdefault(key, []).append(value)
            m.run_time_s += time.perf_counter() - block_start
            if energy is not None:
                m.block_energy.append(energy.stop())
            runners[name].end_block()
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
