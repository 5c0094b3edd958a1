"""Latency history: every bench result in a SQLite store, and regressions found across commits.

The store (default ``results/history.sqlite``) holds one row per graph per results file, keyed
by device, model, variant (folded or not), precision, batch, git commit and environment (a short
hash of the backend's settings and versions and the processor, so that a library upgrade starts a
new series instead of looking like a regression). The schema is versioned (``PRAGMA user_version``);
each ``add`` is one transaction (all of a file's rows or none), and writers wait for each other
(``BEGIN IMMEDIATE`` with a busy timeout), so concurrent or interrupted writes lose nothing.

Regressions: a series (one key without the commit, in order of the runs) is fitted with a
piecewise-constant model by dynamic programming, as airspeed velocity's ``step_detect`` does: each
point weighs by its own confidence interval, widened by the run-to-run scatter the intervals of
single runs do not contain (estimated robustly from successive differences), and each extra step
costs a penalty that grows with the series' length. A step is reported only when the difference
of the two levels is significant against their standard errors (``z`` >= ``STEP_Z``); an upward
step is a regression. No fixed percentage is involved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.errors import HarnessError
from harness.results import Results

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("results") / "history.sqlite"
Z95 = 1.959964
STEP_Z = 4.5  # a step's significance, in standard errors of the difference of the two levels
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE points (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL, model TEXT NOT NULL, variant TEXT NOT NULL, folded INTEGER NOT NULL,
    precision TEXT NOT NULL, batch INTEGER NOT NULL, git_commit TEXT NOT NULL,
    environment TEXT NOT NULL, created TEXT NOT NULL,
    median_ms REAL NOT NULL, ci_low_ms REAL NOT NULL, ci_high_ms REAL NOT NULL, n INTEGER,
    complete INTEGER, environment_json TEXT NOT NULL, source TEXT NOT NULL,
    UNIQUE (device, model, variant, folded, precision, batch, git_commit, environment, created)
);
CREATE INDEX points_series ON points (device, model, variant, folded, precision, batch,
                                      environment, created);
"""


@dataclasses.dataclass(frozen=True)
class Point:
    """One graph's latency from one results file."""

    device: str
    model: str
    variant: str
    folded: bool
    precision: str
    batch: int
    git_commit: str
    environment: str
    created: str
    median_ms: float
    ci_low_ms: float
    ci_high_ms: float
    n: Optional[int] = None

    @property
    def series(self) -> Tuple[Any, ...]:
        """The key of the series the point belongs to (everything but the commit and time)."""
        return (
            self.device,
            self.model,
            self.variant,
            self.folded,
            self.precision,
            self.batch,
            self.environment,
        )

    @property
    def sigma_ms(self) -> float:
        """The standard error of the median, from its 95% interval."""
        return max(self.ci_high_ms - self.ci_low_ms, 0.0) / (2 * Z95)


def environment_of(run_backend: Dict[str, Any], environment: Dict[str, Any]) -> Dict[str, Any]:
    """What must stay the same for two points to belong to one series."""

    def pick(section: str, key: str) -> Any:
        value = environment.get(section)
        return value.get(key) if isinstance(value, dict) else None

    return {
        "backend": {k: v for k, v in run_backend.items() if k not in ("precision", "batch")},
        "cpu": pick("cpu", "model"),
        "gpu": pick("gpu", "name"),
        "l4t": pick("jetson", "l4t"),
    }


def environment_key(environment: Dict[str, Any]) -> str:
    """A short, stable hash of an environment (see ``environment_of``)."""
    text = json.dumps(environment, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def points_of(results: Results, commit: str) -> List[Tuple[Point, str]]:
    """Every run of a results file as a point, with its environment as JSON."""
    points = []
    for run in results.runs:
        env = environment_of(run.backend, results.environment_before)
        points.append(
            (
                Point(
                    results.device_name,
                    run.model,
                    run.variant,
                    run.folded,
                    run.precision,
                    run.batch,
                    commit,
                    environment_key(env),
                    results.created,
                    run.stats.median,
                    run.stats.median_ci_low,
                    run.stats.median_ci_high,
                    run.stats.n,
                ),
                json.dumps(env, sort_keys=True, default=str),
            )
        )
    return points


class History:
    """The SQLite store; use as a context manager."""

    def __init__(self, path: Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise HarnessError(
                f"history {self.path} does not exist (add results with "
                f"`harness history add results.json`)"
            )
        if self.path.exists() and not self.path.is_file():
            raise HarnessError(f"history {self.path} is not a file")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._open(create)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise HarnessError(f"{self.path} is not a usable harness history ({exc})") from None
        except BaseException:
            self.db.close()
            raise

    def _open(self, create: bool) -> None:
        self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if version == 0 and not tables and not create:  # an empty file: read, not made
                raise HarnessError(
                    f"history {self.path} holds no history (add results with "
                    f"`harness history add results.json`)"
                )
            if version == 0 and not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION or "points" not in tables:
                raise HarnessError(
                    f"{self.path} has history schema {version}, this harness "
                    f"reads schema {SCHEMA_VERSION}"
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.db.close()

    def add(self, results: Results, commit: str) -> Tuple[int, int]:
        """Add every run of a results file in one transaction; returns (added, already there)."""
        rows = points_of(results, commit)
        added = 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for point, env_json in rows:
                cursor = self.db.execute(
                    "INSERT INTO points (device, model, variant, folded, precision, "
                    "batch, git_commit, environment, created, median_ms, ci_low_ms, ci_high_ms, "
                    "n, complete, environment_json, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (device, model, variant, folded, precision, batch, git_commit, "
                    "environment, created) DO NOTHING",  # the same run again; other errors fail
                    (
                        point.device,
                        point.model,
                        point.variant,
                        int(point.folded),
                        point.precision,
                        point.batch,
                        point.git_commit,
                        point.environment,
                        point.created,
                        point.median_ms,
                        point.ci_low_ms,
                        point.ci_high_ms,
                        point.n,
                        None if results.complete is None else int(results.complete),
                        env_json,
                        results.source,
                    ),
                )
                added += cursor.rowcount
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise HarnessError(f"could not add to {self.path} (nothing was added): {exc}") from None
        return added, len(rows) - added

    def points(self, device: Optional[str] = None, model: Optional[str] = None) -> List[Point]:
        """Points, optionally of one device and model, in the order they were run."""
        where, params = [], []
        for column, value in (("device", device), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        query = (
            "SELECT device, model, variant, folded, precision, batch, git_commit, "
            "environment, created, median_ms, ci_low_ms, ci_high_ms, n FROM points"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created, id"
        )
        return [Point(r[0], r[1], r[2], bool(r[3]), *r[4:]) for r in self.db.execute(query, params)]


def series_of(points: Sequence[Point]) -> Dict[Tuple[Any, ...], List[Point]]:
    """Points grouped into series, each in run order."""
    grouped: Dict[Tuple[Any, ...], List[Point]] = {}
    for point in points:
        grouped.setdefault(point.series, []).append(point)
    return grouped


@dataclasses.dataclass
class Step:
    """A change of level between two runs of a series."""

    index: int  # the first point of the new level
    before_ms: float
    after_ms: float
    z: float  # the difference in standard errors

    @property
    def change(self) -> float:
        """Relative change of the level."""
        return self.after_ms / self.before_ms - 1

    @property
    def kind(self) -> str:
        """``regression`` (slower) or ``improvement``."""
        return "regression" if self.after_ms > self.before_ms else "improvement"


def run_to_run_sigma(values: Sequence[float], sigmas: Sequence[float]) -> float:
    """The scatter between runs that single runs' intervals do not contain (0 when they do).

    Successive differences cancel slow level changes; their median absolute value estimates the
    total scatter robustly (a step is one outlier among them), from which the runs' own variance
    is taken away.
    """
    if len(values) < 3:
        return 0.0
    diffs = [abs(b - a) for a, b in zip(values, values[1:])]
    diffs.sort()
    mid = len(diffs) // 2
    median = diffs[mid] if len(diffs) % 2 else (diffs[mid - 1] + diffs[mid]) / 2
    total = (median / 0.6745) ** 2 / 2  # the variance of one point
    own = sorted(s * s for s in sigmas)[len(sigmas) // 2]
    return math.sqrt(max(total - own, 0.0))


def fit_levels(
    values: Sequence[float], sigmas: Sequence[float], penalty: Optional[float] = None
) -> List[int]:
    """Piecewise-constant fit (weighted least squares + a penalty per level) by dynamic
    programming; returns the first index of every level after the first."""
    n = len(values)
    if n < 2:
        return []
    penalty = penalty if penalty is not None else 4.0 * math.log(n) + 4.0
    weights = [1.0 / max(s, 1e-12) ** 2 for s in sigmas]
    cum_w, cum_wy, cum_wy2 = [0.0], [0.0], [0.0]
    for w, y in zip(weights, values):
        cum_w.append(cum_w[-1] + w)
        cum_wy.append(cum_wy[-1] + w * y)
        cum_wy2.append(cum_wy2[-1] + w * y * y)

    def cost(i: int, j: int) -> float:  # points i..j-1 as one level
        w, wy = cum_w[j] - cum_w[i], cum_wy[j] - cum_wy[i]
        return max(cum_wy2[j] - cum_wy2[i] - wy * wy / w, 0.0)

    best = [0.0] + [math.inf] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            value = best[i] + cost(i, j) + (penalty if i > 0 else 0.0)
            if value < best[j]:
                best[j], start[j] = value, i
    cuts, j = [], n
    while j > 0:
        if start[j] > 0:
            cuts.append(start[j])
        j = start[j]
    return sorted(cuts)


def _levels(points: Sequence[Point]) -> List[Tuple[int, float, float]]:
    """The fitted levels of a series: (first index, weighted mean, its standard error) each."""
    values = [p.median_ms for p in points]
    own = [p.sigma_ms for p in points]
    extra = run_to_run_sigma(values, own)
    sigmas = [math.sqrt(s * s + extra * extra) or 1e-9 for s in own]
    bounds = [0, *fit_levels(values, sigmas), len(points)]
    levels = []
    for i, j in zip(bounds, bounds[1:]):
        weights = [1.0 / (s * s) for s in sigmas[i:j]]
        mean = sum(w * v for w, v in zip(weights, values[i:j])) / sum(weights)
        levels.append((i, mean, 1.0 / math.sqrt(sum(weights))))
    return levels


def detect_steps(points: Sequence[Point], z: float = STEP_Z) -> List[Step]:
    """Significant changes of level in one series (points in run order)."""
    levels = _levels(points)
    steps = []
    for (_, before, se_before), (index, after, se_after) in zip(levels, levels[1:]):
        score = abs(after - before) / math.hypot(se_before, se_after)
        if score >= z:
            steps.append(Step(index, before, after, score))
    return steps


def judge_new(
    history: Sequence[Point], new: Point, z: float = STEP_Z
) -> Tuple[float, Optional[Step]]:
    """The level a series' history ends at, and the step the new point makes, if significant."""
    level = _levels(history)[-1][1]
    steps = detect_steps([*history, new], z)
    last = steps[-1] if steps else None
    return level, (last if last is not None and last.index == len(history) else None)


def series_label(key: Tuple[Any, ...]) -> str:
    """``model/variant[/folded] (precision, batch b)`` of a series key."""
    _, model, variant, folded, precision, batch, _ = key
    return f"{model}/{variant}{'/folded' if folded else ''} ({precision}, batch {batch})"


def to_markdown(
    device: str,
    groups: Dict[Tuple[Any, ...], List[Point]],
    found: Dict[Tuple[Any, ...], List[Step]],
    last: int = 30,
) -> str:
    """A job-summary section: per series the steps found, the latest runs as a table, and a
    Mermaid line chart of the medians (GitHub renders it)."""
    lines = [f"## Latency history on `{device}`", ""]
    for key, points in groups.items():
        shown = points[-last:]
        offset = len(points) - len(shown)
        steps = found.get(key, [])
        lines += [f"### {series_label(key)}", ""]
        lines += [
            f"- {s.kind} of {s.change:+.1%} at `{points[s.index].git_commit[:12]}` (z = {s.z:.1f})"
            for s in steps
        ] or ["- no significant step"]
        lines += [
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "{series_label(key)}"',
            "    x-axis [" + ", ".join(f'"{p.git_commit[:7]}"' for p in shown) + "]",
            '    y-axis "median latency (ms)"',
            "    line [" + ", ".join(f"{p.median_ms:.4g}" for p in shown) + "]",
            "```",
            "",
            "| run | commit | median ms [95% CI] | step |",
            "|---|---|---|---|",
        ]
        at = {s.index: s for s in steps}
        for i, point in enumerate(shown, start=offset):
            step = at.get(i)
            mark = f"{step.kind} {step.change:+.1%}" if step else ""
            lines.append(
                f"| {point.created} | `{point.git_commit[:12]}` | {point.median_ms:.4f} "
                f"[{point.ci_low_ms:.4f}, {point.ci_high_ms:.4f}] | {mark} |"
            )
        lines.append("")
    return "\n".join(lines)
