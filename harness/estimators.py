"""The statistics a measurement reports: nearest-rank percentiles (as trtexec), the median's
distribution-free interval, MLPerf's early-stopping percentile, drift, and the speed-up estimator
(the ratio of medians with a bootstrap interval, paired over interleaved rounds where the rounds
are known).

Pure numpy/scipy: ``timing`` (which measures) and ``results`` (which reads and recomputes) both
use it. Runs on the device: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps

# fewest interleaved rounds before a paired interval is trusted (or sampling stops): with fewer, the
# rounds cannot be resampled and an interval over single samples is far too narrow
MIN_ROUNDS = 5


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


def pooled_medians(
    samples: Sequence[float], block_ends: Sequence[int], copies: np.ndarray
) -> np.ndarray:
    """For each row of ``copies`` (draws x blocks), the median of the samples of the blocks drawn,
    pooled: ``copies[d, i]`` copies of block i's samples in draw d; exactly ``np.median`` of them.

    A pooled median lies between the smallest and the largest of its blocks' medians, so only the
    samples in that range are candidates; the two middle ones of each draw are found by bisection
    over them, with each block's count at or below every candidate computed once.
    """
    values = np.asarray(samples, dtype=float)
    starts = [0] + list(block_ends[:-1])
    blocks = [np.sort(values[a:b]) for a, b in zip(starts, block_ends) if b > a]
    copies = copies[:, [i for i, (a, b) in enumerate(zip(starts, block_ends)) if b > a]]
    floor = min(block[(block.size - 1) // 2] for block in blocks)
    ceiling = max(block[block.size // 2] for block in blocks)
    candidates = np.unique(np.concatenate([b[(b >= floor) & (b <= ceiling)] for b in blocks]))
    # counts[j, i]: samples of block i at or below candidates[j]
    counts = np.stack(
        [np.searchsorted(block, candidates, side="right") for block in blocks], axis=1
    ).astype(np.int64)
    total = copies @ np.array([block.size for block in blocks])
    rank = np.concatenate([(total - 1) // 2, total // 2])  # np.median's two middle ranks
    weights = np.concatenate([copies, copies])
    low, high = np.zeros(rank.size, dtype=int), np.full(rank.size, candidates.size - 1)
    while np.any(low < high):
        middle = (low + high) // 2
        above = (weights * counts[middle]).sum(axis=1) > rank
        high = np.where(above, middle, high)
        low = np.where(above, low, middle + 1)
    lower, upper = np.split(candidates[low], 2)
    return (lower + upper) / 2.0


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

    The ratio is ``median(numerator) / median(denominator)`` of all samples: the printed medians
    divided. With numerator = baseline latencies and denominator = variant latencies it is the
    variant's speed-up. Given the timing blocks of both series (at least ``MIN_ROUNDS`` each), whole
    blocks are resampled and each draw divides the medians of the samples of the blocks drawn, so
    that the interval also covers drift between blocks (samples inside one block are not
    independent); otherwise single samples. ``paired``: block i of both series ran in the same
    interleaved round, so rounds are drawn together and drift common to both cancels, as the
    interleaving intends. The interval always contains the ratio.
    """
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    rng = np.random.default_rng(seed)
    if (
        numerator_blocks
        and denominator_blocks
        and len(numerator_blocks) >= MIN_ROUNDS
        and len(denominator_blocks) >= MIN_ROUNDS
    ):
        n_a, n_b = len(numerator_blocks), len(denominator_blocks)
        copies_a = rng.multinomial(n_a, np.full(n_a, 1.0 / n_a), size=resamples)
        copies_b = (
            copies_a
            if paired and n_a == n_b
            else rng.multinomial(n_b, np.full(n_b, 1.0 / n_b), size=resamples)
        )
        ratios = pooled_medians(a, numerator_blocks, copies_a) / pooled_medians(
            b, denominator_blocks, copies_b
        )
    else:
        pick_a = rng.integers(0, a.size, size=(resamples, a.size))
        pick_b = rng.integers(0, b.size, size=(resamples, b.size))
        ratios = np.median(a[pick_a], axis=1) / np.median(b[pick_b], axis=1)
    alpha = (1.0 - confidence) / 2.0
    ratio = float(np.median(a) / np.median(b))
    low, high = float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))
    return ratio, min(low, ratio), max(high, ratio)


def rounds_ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Tuple[float, float, float]:
    """Ratio of medians ``median(numerator) / median(denominator)`` of one value per interleaved
    round each (energy per inference of each block), with a paired percentile-bootstrap interval
    over rounds: the estimator of the latency speed-up, on per-round values."""
    rounds = min(len(numerator), len(denominator))
    top = np.asarray(numerator[:rounds], dtype=float)
    bottom = np.asarray(denominator[:rounds], dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, rounds, size=(resamples, rounds))
    ratios = np.median(top[draws], axis=1) / np.median(bottom[draws], axis=1)
    alpha = (1.0 - confidence) / 2.0
    ratio = float(np.median(top) / np.median(bottom))
    low, high = float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))
    return ratio, min(low, ratio), max(high, ratio)


def ratio_halfwidth(ratio: float, low: float, high: float) -> float:
    """Half an interval's width relative to its point estimate."""
    return (high - low) / 2.0 / ratio if ratio else float("inf")
