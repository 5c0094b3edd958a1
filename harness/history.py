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
single runs do not contain (estimated robustly from successive differences; in a short history,
where steps are most of them, from the smallest), and each extra step costs a penalty that
grows with the series' length. Every level holds at least ``MIN_SIZE`` (2) runs, asv's
``min_size``: one odd run is not a step. A step is reported only when the difference of the two
levels is significant against their standard errors (``z`` >= ``STEP_Z``); an upward step is a
regression. The last run alone, when it departs significantly from the level before it, is a
*pending* step (``Step.runs == 1``): shown, and confirmed or dropped by the next run. A run whose
machine was loaded (load average >= cores, or clocks that moved) is marked, weighs 1/100 of its
interval's weight, and never starts a step; where every run of a series was loaded, there is no
calm run to weigh them against and each counts in full. No fixed percentage is involved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sqlite3
import statistics
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.envinfo import machine_load
from harness.errors import HarnessError, finite_number
from harness.report.formats import markdown_table
from harness.results import Results, Run
from harness.timing import state_warnings

SCHEMA_VERSION = 2
DEFAULT_PATH = Path("results") / "history.sqlite"
Z95 = 1.959964
STEP_Z = 4.5  # a step's significance, in standard errors of the difference of the two levels
BUSY_TIMEOUT_S = 60.0
SHORT = 6  # runs below which the run-to-run scatter is read from the smallest difference
MIN_SIZE = 2  # runs a level must hold before its step is reported (asv's min_size)
LOADED_SIGMA = 10.0  # a loaded run's standard error is widened so: 1/100 of the weight
METRIC_WORDS = ("energy", "memory", "power")  # optional per-run series the dashboard plots
# columns schema 2 added to schema 1's table (ALTER TABLE on open)
_ADDED_COLUMNS = (
    ("loaded", "TEXT"),
    ("flops", "INTEGER"),
    ("graph", "TEXT"),
    ("commit_date", "TEXT"),
    ("commit_message", "TEXT"),
    ("metrics_json", "TEXT"),
)

_SCHEMA = """
CREATE TABLE points (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL, model TEXT NOT NULL, variant TEXT NOT NULL, folded INTEGER NOT NULL,
    precision TEXT NOT NULL, batch INTEGER NOT NULL, git_commit TEXT NOT NULL,
    environment TEXT NOT NULL, created TEXT NOT NULL,
    median_ms REAL NOT NULL, ci_low_ms REAL NOT NULL, ci_high_ms REAL NOT NULL, n INTEGER,
    complete INTEGER, environment_json TEXT NOT NULL, source TEXT NOT NULL,
    loaded TEXT, flops INTEGER, graph TEXT, commit_date TEXT, commit_message TEXT,
    metrics_json TEXT,
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
    loaded: Optional[str] = None  # why the machine was busy, when it was
    flops: Optional[int] = None
    graph: Optional[str] = None  # the timed ONNX file's sha256, when recorded
    commit_date: str = ""
    commit_message: str = ""
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict, compare=False)
    source: str = ""  # the results file it came from

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

    @property
    def label(self) -> str:
        """``model/variant[/folded]``."""
        return f"{self.model}/{self.variant}{'/folded' if self.folded else ''}"


def run_load(results: Results, run: Run) -> Optional[str]:
    """Why a run's numbers were taken on a busy machine (load average >= cores at capture, clocks
    that moved or throttling between blocks), or None."""
    stored = run.to_dict()
    reasons = [machine_load(results.environment_before)]
    reasons += state_warnings([s for s in stored.get("block_state") or [] if isinstance(s, dict)])
    found = [r for r in reasons if r]
    return "; ".join(found) if found else None


def run_metrics(run: Run) -> Dict[str, float]:
    """The run's recorded energy, memory and power figures (keys naming them, at the run's top
    level or in its stats, one level of nesting flattened as ``a.b``); empty when none were."""
    stored = run.to_dict()
    found: Dict[str, float] = {}
    for scope in (stored, stored.get("stats") or {}):
        for key, value in scope.items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for sub, number in items:
                name = f"{key}.{sub}" if sub else key
                if any(word in name.lower() for word in METRIC_WORDS) and finite_number(number):
                    found[name] = float(number)
    return found


def commit_details(commit: str, repo: Optional[Path] = None) -> Tuple[str, str]:
    """(ISO date, subject) of a commit from git in ``repo`` (default: here); empty where git or
    the commit is not there (or not a hexadecimal hash: nothing else reaches git)."""
    if not re.fullmatch(r"[0-9a-fA-F]{4,64}", commit):
        return "", ""
    try:
        proc = subprocess.run(
            ["git", "log", "-1", "--format=%cI%x00%s", commit, "--"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=str(repo) if repo else None,
        )
    except (OSError, subprocess.SubprocessError):
        return "", ""
    if proc.returncode != 0 or "\0" not in proc.stdout:
        return "", ""
    date, subject = proc.stdout.strip("\n").split("\0", 1)
    return date, subject


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


def points_of(
    results: Results, commit: str, details: Tuple[str, str] = ("", "")
) -> List[Tuple[Point, str]]:
    """Every run of a results file as a point (``details``: the commit's date and subject), with
    its environment as JSON."""
    points = []
    for run in results.runs:
        graph = run.to_dict().get("onnx_sha256")
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
                    run_load(results, run),
                    run.flops,
                    graph if isinstance(graph, str) else None,
                    details[0],
                    details[1],
                    run_metrics(run),
                    results.source,
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
            elif version == 1 and "points" in tables:  # schema 1: the columns 2 added
                for name, kind in _ADDED_COLUMNS:
                    self.db.execute(f"ALTER TABLE points ADD COLUMN {name} {kind}")
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

    def add(
        self, results: Results, commit: str, details: Tuple[str, str] = ("", "")
    ) -> Tuple[int, int]:
        """Add every run of a results file in one transaction (``details``: the commit's date and
        subject); returns (added, already there)."""
        rows = points_of(results, commit, details)
        added = 0
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for point, env_json in rows:
                cursor = self.db.execute(
                    "INSERT INTO points (device, model, variant, folded, precision, "
                    "batch, git_commit, environment, created, median_ms, ci_low_ms, ci_high_ms, "
                    "n, complete, environment_json, source, loaded, flops, graph, commit_date, "
                    "commit_message, metrics_json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
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
                        point.loaded,
                        point.flops,
                        point.graph,
                        point.commit_date,
                        point.commit_message,
                        json.dumps(point.metrics, sort_keys=True),
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
            "environment, created, median_ms, ci_low_ms, ci_high_ms, n, loaded, flops, graph, "
            "commit_date, commit_message, metrics_json, source FROM points"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created, id"
        )
        return [
            Point(
                r[0],
                r[1],
                r[2],
                bool(r[3]),
                *r[4:16],
                r[16] or "",
                r[17] or "",
                json.loads(r[18]) if r[18] else {},
                r[19] or "",
            )
            for r in self.db.execute(query, params)
        ]


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
    runs: int = MIN_SIZE  # runs at the new level: below MIN_SIZE the step is pending
    before_se_ms: float = 0.0
    after_se_ms: float = 0.0

    @property
    def change(self) -> float:
        """Relative change of the level."""
        return self.after_ms / self.before_ms - 1

    @property
    def change_interval(self) -> Tuple[float, float]:
        """95% interval of the relative change (delta method on the two levels' errors)."""
        ratio = self.after_ms / self.before_ms
        rel = math.hypot(self.before_se_ms / self.before_ms, self.after_se_ms / self.after_ms)
        return ratio * (1 - Z95 * rel) - 1, ratio * (1 + Z95 * rel) - 1

    @property
    def kind(self) -> str:
        """``regression`` (slower) or ``improvement``."""
        return "regression" if self.after_ms > self.before_ms else "improvement"

    @property
    def confirmed(self) -> bool:
        """Whether the new level has held for ``MIN_SIZE`` runs (else one run says so)."""
        return self.runs >= MIN_SIZE

    def describe(self) -> str:
        """``regression of +12.0% [+10.1%, +13.9%] (z = 9.1)``, pending ones said so."""
        low, high = self.change_interval
        text = f"{self.kind} of {self.change:+.1%} [{low:+.1%}, {high:+.1%}] (z = {self.z:.1f})"
        return text if self.confirmed else f"{text}, pending: 1 run so far, a step needs 2"


def run_to_run_sigma(
    values: Sequence[float], sigmas: Sequence[float], lower: bool = False
) -> float:
    """The scatter between runs that single runs' intervals do not contain (0 when they do).

    Successive differences cancel slow level changes; their median absolute value estimates the
    total scatter robustly (a step is one outlier among them), from which the runs' own variance
    is taken away. ``lower`` takes a low order statistic instead (the smallest of up to four
    differences, the second of five..., scaled by the normal quantile it estimates): robust where
    the steps of a short series are most of its differences.
    """
    if len(values) < 3:
        return 0.0
    diffs = sorted(abs(b - a) for a, b in zip(values, values[1:]))
    k = (len(diffs) - 1) // 3 if lower else (len(diffs) - 1) // 2
    quantile = (k + 1) / (len(diffs) + 1) if lower else 0.5  # the k-th's expected quantile
    middle = diffs[k] if lower or len(diffs) % 2 else (diffs[k] + diffs[k + 1]) / 2
    scale = math.sqrt(2) * statistics.NormalDist().inv_cdf((1 + quantile) / 2)
    total = (middle / scale) ** 2  # the variance of one point
    own = sorted(s * s for s in sigmas)[len(sigmas) // 2]
    return math.sqrt(max(total - own, 0.0))


def fit_levels(
    values: Sequence[float],
    sigmas: Sequence[float],
    penalty: Optional[float] = None,
    counted: Optional[Sequence[bool]] = None,
    min_size: int = MIN_SIZE,
) -> List[int]:
    """Piecewise-constant fit (weighted least squares + a penalty per level) by dynamic
    programming, every level holding ``min_size`` counted points (all, unless ``counted`` says);
    returns the first index of every level after the first."""
    n = len(values)
    if n < 2:
        return []
    counted = [True] * n if counted is None else list(counted)
    penalty = penalty if penalty is not None else 4.0 * math.log(n) + 4.0
    weights = [1.0 / max(s, 1e-12) ** 2 for s in sigmas]
    cum_w, cum_wy, cum_wy2, cum_c = [0.0], [0.0], [0.0], [0]
    for w, y, c in zip(weights, values, counted):
        cum_w.append(cum_w[-1] + w)
        cum_wy.append(cum_wy[-1] + w * y)
        cum_wy2.append(cum_wy2[-1] + w * y * y)
        cum_c.append(cum_c[-1] + int(c))

    def cost(i: int, j: int) -> float:  # points i..j-1 as one level
        w, wy = cum_w[j] - cum_w[i], cum_wy[j] - cum_wy[i]
        return max(cum_wy2[j] - cum_wy2[i] - wy * wy / w, 0.0)

    best = [0.0] + [math.inf] * n
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            if i > 0 and (cum_c[j] - cum_c[i] < min_size or cum_c[i] < min_size):
                continue  # a level of fewer runs than min_size, before or after the cut
            value = best[i] + cost(i, j) + (penalty if i > 0 else 0.0)
            if value < best[j]:
                best[j], start[j] = value, i
    cuts, j = [], n
    while j > 0:
        if start[j] > 0:
            cuts.append(start[j])
        j = start[j]
    return sorted(cuts)


def _widened(points: Sequence[Point], extra: float) -> List[float]:
    """Each point's standard error widened by the run-to-run scatter, a loaded run's then by
    ``LOADED_SIGMA``."""
    return [
        (math.sqrt(p.sigma_ms**2 + extra**2) or 1e-9) * (LOADED_SIGMA if p.loaded else 1.0)
        for p in points
    ]


def _fit(points: Sequence[Point]) -> Tuple[List[int], List[float]]:
    """The levels' bounds and the points' widened errors. The scatter comes from the unloaded
    runs' successive differences: their median, or in a series of fewer than ``SHORT`` runs
    (where a step or two are most of the differences) a low order statistic."""
    values = [p.median_ms for p in points]
    counted = [not p.loaded for p in points]
    calm = [i for i, c in enumerate(counted) if c] or list(range(len(points)))
    extra = run_to_run_sigma(
        [values[i] for i in calm], [points[i].sigma_ms for i in calm], lower=len(calm) < SHORT
    )
    sigmas = _widened(points, extra)
    return [0, *fit_levels(values, sigmas, counted=counted), len(points)], sigmas


def _sigmas(points: Sequence[Point]) -> List[float]:
    """Each point's standard error widened as the fit of the series widens it."""
    return _fit(points)[1]


@dataclasses.dataclass(frozen=True)
class _Level:
    """One fitted level: points ``start``..``stop - 1``, the first unloaded of them ``first``."""

    start: int
    stop: int
    first: int
    mean: float
    se: float


def _levels(points: Sequence[Point]) -> Tuple[List[_Level], List[float]]:
    """The fitted levels of a series (weighted mean and its standard error each) and the points'
    widened errors."""
    values = [p.median_ms for p in points]
    bounds, sigmas = _fit(points)
    levels = []
    for i, j in zip(bounds, bounds[1:]):
        weights = [1.0 / (s * s) for s in sigmas[i:j]]
        mean = sum(w * v for w, v in zip(weights, values[i:j])) / sum(weights)
        first = next((k for k in range(i, j) if not points[k].loaded), i) if i else 0
        levels.append(_Level(i, j, first, mean, 1.0 / math.sqrt(sum(weights))))
    return levels, sigmas


def _holds(points: Sequence[Point], sigmas: Sequence[float], old: _Level, new: _Level) -> bool:
    """Whether the step from ``old`` to ``new`` holds run by run: the last ``MIN_SIZE`` unloaded
    runs before it and the first after it each lie beyond 95% of their errors from the other
    level, on their own side (one odd run paired with an ordinary one is no level)."""
    sign = 1.0 if new.mean > old.mean else -1.0
    before = [k for k in range(old.start, old.stop) if not points[k].loaded][-MIN_SIZE:]
    after = [k for k in range(new.start, new.stop) if not points[k].loaded][:MIN_SIZE]
    return all(sign * (new.mean - points[k].median_ms) >= Z95 * sigmas[k] for k in before) and all(
        sign * (points[k].median_ms - old.mean) >= Z95 * sigmas[k] for k in after
    )


def _pending(points: Sequence[Point], z: float) -> Optional[Step]:
    """The last run as a step of its own when it departs significantly from the level before it
    (and its machine was not loaded)."""
    if len(points) < 2 or points[-1].loaded:
        return None
    before = _levels(points[:-1])[0][-1]
    level, level_se = before.mean, before.se
    last, sigma = points[-1].median_ms, _sigmas(points)[-1]
    score = abs(last - level) / math.hypot(level_se, sigma)
    if score < z:
        return None
    return Step(len(points) - 1, level, last, score, 1, level_se, sigma)


def _against_calm(points: Sequence[Point]) -> List[Point]:
    """The points as the fit weighs them: where every run was loaded there is no calm run to
    weigh them against, and each counts in full (the marks stay on the points shown)."""
    if points and all(p.loaded for p in points):
        return [dataclasses.replace(p, loaded=None) for p in points]
    return list(points)


def detect_steps(points: Sequence[Point], z: float = STEP_Z, pending: bool = True) -> List[Step]:
    """Significant changes of level in one series (points in run order): the confirmed ones,
    then (``pending``) the last run when it departs on its own."""
    points = _against_calm(points)
    levels, sigmas = _levels(points)
    steps = []
    for old, new in zip(levels, levels[1:]):
        score = abs(new.mean - old.mean) / math.hypot(old.se, new.se)
        if score >= z and _holds(points, sigmas, old, new):
            runs = sum(1 for p in points[new.start : new.stop] if not p.loaded)
            steps.append(Step(new.first, old.mean, new.mean, score, runs, old.se, new.se))
    last = _pending(points, z) if pending else None
    if last is not None and not (steps and steps[-1].index >= len(points) - 2):
        steps.append(last)
    return steps


@dataclasses.dataclass
class Judgement:
    """A new run against its series: the level it is judged against and what was found."""

    level_ms: float
    step: Optional[Step]  # confirmed by this run, or this run's own departure (runs == 1)
    z: float  # this run's departure from the level, in standard errors
    note: str  # what was tested, in words


def judge_new(history: Sequence[Point], new: Point, z: float = STEP_Z) -> Judgement:
    """A new run against its series' history: a step that began at the last run and that this
    run confirms, else this run's own departure from the level the history ends at."""
    *history, new = _against_calm([*history, new])
    confirmed = [
        s for s in detect_steps([*history, new], z, pending=False) if s.index == len(history) - 1
    ]
    if confirmed and not history[-1].loaded:
        step = confirmed[-1]
        note = (
            f"a step that began at the previous run ({history[-1].git_commit[:12]}) and holds "
            f"in this one: {step.describe()}"
        )
        return Judgement(step.before_ms, step, step.z, note)
    odd = _pending(history, z) is not None  # the previous run departed alone: not the level
    base = history[:-1] if odd else history
    last = _levels(base)[0][-1]
    level, level_se = last.mean, last.se
    sigma = _sigmas([*history, new])[-1]
    score = abs(new.median_ms - level) / math.hypot(level_se, sigma)
    tested = (
        f"this run against the level of the {len(base)} earlier run(s)"
        + (" before the previous one (which departed on its own)" if odd else "")
        + f", {level:.4g} ms: "
        f"z = {score:.1f} with this run's error widened by the series' run-to-run scatter to "
        f"{sigma:.3g} ms, a step needs z >= {z:g}"
    )
    if score >= z:
        step = Step(len(history), level, new.median_ms, score, 1, level_se, sigma)
        return Judgement(level, step, score, f"{tested}: 1 run so far, confirmed by the next")
    return Judgement(level, None, score, f"{tested}: no step")


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
        lines += [f"- {s.describe()} at `{points[s.index].git_commit[:12]}`" for s in steps] or [
            "- no significant step"
        ]
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
        ]
        at = {s.index: s for s in steps}
        rows = []
        for i, point in enumerate(shown, start=offset):
            step = at.get(i)
            mark = f"{step.kind} {step.change:+.1%}" if step else ""
            if step is not None and not step.confirmed:
                mark += " (pending)"
            rows.append(
                [
                    point.created,
                    f"`{point.git_commit[:12]}`",
                    f"{point.median_ms:.4f} [{point.ci_low_ms:.4f}, {point.ci_high_ms:.4f}]",
                    point.loaded or "",
                    mark,
                ]
            )
        lines += markdown_table(["run", "commit", "median ms [95% CI]", "loaded", "step"], rows)
        lines.append("")
    return "\n".join(lines)
