"""False alarms and detections of the history's step test (harness/history.py) on simulated series.

Each run's median carries within-run noise (0.5%) and a 95% interval whose width itself varies
(log-sd 0.3, so some intervals are too narrow), plus run-to-run scatter the interval does not
contain (0-3%). A step of 5% + 2x the scatter is injected two thirds into the series. Prints, per
setting, how many noise-only series raised an alarm and how many injected steps were found at
their run (+-1).

    .venv/bin/python benchmarks/history_steps.py [--series 200] [--seed 2]
"""

from __future__ import annotations

import argparse
from typing import List, Optional

import numpy as np

from harness.history import Point, detect_steps


def simulate(
    rng: np.random.Generator,
    n: int,
    scatter: float,
    step_at: Optional[int] = None,
    step: float = 0.0,
    within: float = 0.005,
) -> List[Point]:
    """One series of ``n`` runs' medians with their 95% intervals."""
    points = []
    for i in range(n):
        level = 1.0 + (step if step_at is not None and i >= step_at else 0.0)
        median = level * np.exp(rng.normal(0, scatter)) * np.exp(rng.normal(0, within))
        half = median * within * 1.96 * np.exp(rng.normal(0, 0.3))
        points.append(
            Point(
                "sim",
                "m",
                "v",
                False,
                "fp32",
                1,
                str(i),
                "e",
                f"{i:04d}",
                median,
                median - half,
                median + half,
            )
        )
    return points


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    print("| run-to-run scatter | runs | false alarms | injected step | found at its run |")
    print("|---|---|---|---|---|")
    for scatter in (0.0, 0.01, 0.03):
        for n in (10, 30, 80):
            rng = np.random.default_rng(args.seed)
            alarms = sum(bool(detect_steps(simulate(rng, n, scatter))) for _ in range(args.series))
            step, at = 0.05 + 2 * scatter, n * 2 // 3
            found = sum(
                any(
                    s.kind == "regression" and abs(s.index - at) <= 1
                    for s in detect_steps(simulate(rng, n, scatter, at, step))
                )
                for _ in range(args.series)
            )
            print(
                f"| {scatter:.0%} | {n} | {alarms}/{args.series} | {step:.0%} | "
                f"{found}/{args.series} |"
            )


if __name__ == "__main__":
    main()
