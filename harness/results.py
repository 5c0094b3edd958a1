"""The results file, typed: what was run, where, every raw sample, and the comparisons.

One reader (``parse_results`` / ``read_results``) parses and validates every results file; a
malformed file is refused with the file and the field. Schema 2 is written; schema 1 is read and
upgraded.

Schema 2::

    {schema: 2, created, harness_version, command, complete: bool,
     device: {profile: {name, ...}, environment_before: {...}, environment_after: {...} | null,
              warnings: [...]},
     runs: [{id, model, variant, folded, folded_run, source, onnx, backend: {...}, precision, batch,
             input_shape, flops (per sample), flops_per_sample: true, params, nodes, fold,
             series_ms: {latency_ms: [...], ...},
             stats: {median, median_ci_low, median_ci_high, ...},
             warmup_iterations, stop_reason, warnings: [...],
             energy?: {source, rails, interval_ms, per_block_mj, median_mj, ci_low_mj, ci_high_mj,
                       rails_per_block_mj, idle_w, above_idle_per_block_mj, warnings},
             memory?: {name: {bytes, method}}}],
     comparisons: [{model, variant, kind: "vs_baseline" | "fold", reference, subject, speedup,
                    ci_low, ci_high, ci_level, estimator, energy_ratio?, energy_ci_low?,
                    energy_ci_high?}]}

Keys marked ``?`` are optional: absent means not measured.
A speed-up is the ratio of the reference's and the subject's medians with a 95% interval from a
paired bootstrap over rounds (``ESTIMATOR``); comparisons written without ``estimator`` (the median
of per-round ratios, before issue 22) are recomputed from the runs' samples when read.

Schema 1 is the same without ``ci_level`` (always 0.95) and with ``complete`` optional (null when
not recorded).
Keys a reader does not know are kept (``extra``) and written back unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from harness.errors import MAX_NAME, HarnessError, finite_number, name_problem, shown
from harness.estimators import bootstrap_ratio_ci
from harness.onnx_io import write_text_atomic
from harness.profiles import BOUNDS

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
CI_LEVEL = 0.95
COMPARISON_KINDS = ("vs_baseline", "fold")
# what a comparison's speed-up is; files without it (the median of per-round ratios) are recomputed
ESTIMATOR = "ratio of medians, paired bootstrap over rounds"
KIND_NAMES = {
    float: "number",
    int: "integer",
    str: "string",
    bool: "boolean",
    dict: "object",
    list: "list",
}


def interval_decimals(low: float, high: float, decimals: int, most: int = 6) -> int:
    """``decimals``, or more where fewer would print an interval's two ends as the same number."""
    while decimals < most and f"{low:.{decimals}f}" == f"{high:.{decimals}f}" and low != high:
        decimals += 1
    return decimals


def significant_decimals(
    value: float, decimals: int = 3, significant: int = 4, most: int = 6
) -> int:
    """``decimals``, or more where fewer would print a value below 1 with fewer than
    ``significant`` digits (a reader divides printed medians: 0.05 / 0.04 is not a speed-up)."""
    if not value or not math.isfinite(value):
        return decimals
    return max(decimals, min(most, significant - 1 - math.floor(math.log10(abs(value)))))


def format_latency(value: float, decimals: int = 3) -> str:
    """A latency in ms with at least four significant digits: ``9.555``, ``0.04213``."""
    return f"{value:.{significant_decimals(value, decimals)}f}"


def format_interval(value: float, low: float, high: float, decimals: int = 3) -> str:
    """A value with its interval, ``0.1234 [0.1201, 0.1310]``: asymmetric intervals stay visible;
    four significant digits at least, more where the two ends would print alike."""
    d = interval_decimals(low, high, significant_decimals(value, decimals))
    return f"{value:.{d}f} [{low:.{d}f}, {high:.{d}f}]"


@dataclasses.dataclass(frozen=True)
class RatioCI:
    """A ratio (speed-up) with its confidence interval; ``format`` is the one way to print it."""

    ratio: float
    low: float
    high: float
    level: float = CI_LEVEL

    def parts(self, decimals: int = 2, latex: bool = False) -> Tuple[str, str]:
        """The ratio and its interval, ``("1.23x", "[1.10, 1.41]")``, for layouts that stack
        them."""
        d = interval_decimals(self.low, self.high, decimals)
        ratio = f"${self.ratio:.{d}f}{{\\times}}$" if latex else f"{self.ratio:.{d}f}x"
        return ratio, f"[{self.low:.{d}f}, {self.high:.{d}f}]"

    def format(self, decimals: int = 2, latex: bool = False) -> str:
        """``1.23x [1.10, 1.41]`` (``$1.23{\\times}$ [1.10, 1.41]`` in LaTeX)."""
        return " ".join(self.parts(decimals, latex))


def format_ratio(ci: Optional[RatioCI], latex: bool = False, missing: str = "") -> str:
    """A speed-up and its interval, or ``missing`` where there is none."""
    return missing if ci is None else ci.format(latex=latex)


# the sections of a captured environment (envinfo.capture_environment) that readers walk into
ENVIRONMENT_SECTIONS = [
    ("cpu",),
    ("gpu",),
    ("libraries",),
    ("jetson",),
    ("jetson", "nvpmodel"),
    ("jetson", "jetson_clocks"),
    ("jetson", "jetson_clocks", "clocks"),
    ("jetson", "gpu_devfreq"),
]


class _Reader:
    """Field access that names the file and the field in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> HarnessError:
        return HarnessError(f"{self.source}: {where.lstrip('.')} {problem}")

    def obj(self, data: Any, where: str) -> Dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, f"is not an object (got {type(data).__name__})")
        return data

    def get(
        self,
        data: Dict[str, Any],
        key: str,
        where: str,
        kind: Any,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        if key not in data or (data[key] is None and not required):
            if required:
                raise self.fail(f"{where}.{key}", "is missing")
            return default
        value = data[key]
        if kind is float:
            ok = finite_number(value)
        elif kind is int:  # a 64-bit one: reports divide them, SQLite stores them
            ok = isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63
        else:
            ok = isinstance(value, kind)
        if not ok and kind in (int, float) and type(value) is int:
            raise self.fail(f"{where}.{key}", f"is too large (got {shown(value, 60)})")
        if not ok:
            name = KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
            article = "an" if name[:1] in "aeiou" else "a"
            raise self.fail(f"{where}.{key}", f"is not {article} {name} (got {shown(value, 60)})")
        return value

    def environment(self, data: Dict[str, Any], key: str, where: str) -> Optional[Dict[str, Any]]:
        """A captured environment (optional): each section that reports walk into
        (``ENVIRONMENT_SECTIONS``) an object or null."""
        env = self.get(data, key, where, dict, False)
        for path in ENVIRONMENT_SECTIONS:
            value, at = env, f"{where}.{key}"
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
                at += f".{part}"
            if value is not None and not isinstance(value, dict):
                raise self.fail(at, f"is not an object or null (got {shown(value, 60)})")
        return env

    def name(self, data: Dict[str, Any], key: str, where: str, most: int = MAX_NAME) -> str:
        """A name that labels tables, charts and file names: 1 to ``most`` printable
        characters (no newline)."""
        value = self.get(data, key, where, str)
        problem = name_problem(value, most)
        if problem:
            raise self.fail(f"{where}.{key}", problem)
        return value

    def peaks(self, profile: Dict[str, Any]) -> None:
        """The profile's ``peaks`` (optional; a roofline divides by them): each one null or in
        the range a profile file's must lie in (``profiles.BOUNDS``)."""
        peaks = self.get(profile, "peaks", "device.profile", dict, False, {})
        for setting, bound in BOUNDS.items():
            key = setting[len("peaks.") :]
            value = peaks.get(key) if setting.startswith("peaks.") else None
            if value is not None and not bound.holds(value):
                raise self.fail(
                    f"device.profile.{setting}", f"is {shown(value)}, not a number {bound}"
                )

    def durations(self, data: Dict[str, Any], key: str, where: str) -> List[float]:
        """A non-empty list of finite, non-negative numbers (measured times)."""
        values = self.get(data, key, where, list)
        if not values or not all(finite_number(v) and v >= 0 for v in values):
            raise self.fail(
                f"{where}.{key}", "is not a non-empty list of finite, non-negative times"
            )
        return values

    def block_ends(self, data: Dict[str, Any], where: str, samples: int) -> None:
        """``block_ends`` (optional): the cumulative sample count after each timing block, so
        increasing integers from 1 to ``samples``; the paired intervals resample these blocks."""
        ends = self.get(data, "block_ends", where, list, False)
        if ends is None:
            return
        valid = all(isinstance(e, int) and not isinstance(e, bool) for e in ends) and all(
            a < b for a, b in zip([0] + ends, ends)
        )
        if not valid or (ends and ends[-1] > samples):
            raise self.fail(
                f"{where}.block_ends",
                f"is not a list of increasing sample counts from 1 to {samples} "
                f"(got {shown(ends, 60)})",
            )


def _extra(data: Dict[str, Any], known: List[str]) -> Dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


STATS_OPTIONAL = (
    "n",
    "mean",
    "min",
    "max",
    "p90",
    "p95",
    "p99",
    "std",
    "cov",
    "throughput_per_s",
    "mlperf_p90",
)


@dataclasses.dataclass
class Stats:
    """Summary statistics of one latency series (ms): the one type ``timing.summarize`` makes and
    results files store. The median and its CI are required; files written before the other
    figures were stored leave them None."""

    median: float
    median_ci_low: float
    median_ci_high: float
    n: Optional[int] = None
    mean: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    std: Optional[float] = None
    cov: Optional[float] = None
    throughput_per_s: Optional[float] = None
    mlperf_p90: Optional[float] = None  # None: too few samples for MLPerf's early stopping
    other: Dict[str, Any] = dataclasses.field(default_factory=dict)  # keys a reader does not know

    @classmethod
    def parse(cls, data: Any, where: str, reader: _Reader) -> Stats:
        """Validated from its dict."""
        data = reader.obj(data, where)
        names = ["median", "median_ci_low", "median_ci_high"]
        required = [reader.get(data, k, where, float) for k in names]
        optional = {
            k: reader.get(data, k, where, int if k == "n" else float, False) for k in STATS_OPTIONAL
        }
        return cls(*required, **optional, other=_extra(data, names + list(STATS_OPTIONAL)))

    def to_dict(self) -> Dict[str, Any]:
        """The stored form."""
        stored = {
            "median": self.median,
            "median_ci_low": self.median_ci_low,
            "median_ci_high": self.median_ci_high,
        }
        stored.update({k: getattr(self, k) for k in STATS_OPTIONAL})
        return {**stored, **self.other}

    @property
    def ci_halfwidth_rel(self) -> float:
        """Half the median's confidence interval, relative to the median."""
        return (
            (self.median_ci_high - self.median_ci_low) / 2.0 / self.median
            if self.median
            else float("inf")
        )

    def format(self, decimals: int = 3) -> str:
        """The median with its 95% CI, ``0.123 [0.120, 0.131]``."""
        return format_interval(self.median, self.median_ci_low, self.median_ci_high, decimals)


@dataclasses.dataclass
class RunEnergy:
    """Energy per inference of one run, per timing block (mJ), with its source; absent from a run
    means not measured (``harness.energy`` builds it)."""

    source: str
    rails: List[str]  # summed into the total
    interval_ms: Optional[float]  # sampling period; None for a counter read at block boundaries
    per_block_mj: List[float]  # mJ per inference (one call of the batch), one value per block
    median_mj: float
    ci_low_mj: float
    ci_high_mj: float
    rails_per_block_mj: Dict[str, List[float]] = dataclasses.field(default_factory=dict)
    idle_w: Optional[float] = None  # measured before the run
    above_idle_per_block_mj: List[float] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, data: Any, where: str, reader: _Reader) -> RunEnergy:
        """Validated from its dict."""
        data = reader.obj(data, where)
        return cls(
            reader.get(data, "source", where, str),
            [str(r) for r in reader.get(data, "rails", where, list)],
            reader.get(data, "interval_ms", where, float, False),
            reader.durations(data, "per_block_mj", where),
            reader.get(data, "median_mj", where, float),
            reader.get(data, "ci_low_mj", where, float),
            reader.get(data, "ci_high_mj", where, float),
            reader.get(data, "rails_per_block_mj", where, dict, False, {}),
            reader.get(data, "idle_w", where, float, False),
            reader.get(data, "above_idle_per_block_mj", where, list, False, []),
            reader.get(data, "warnings", where, list, False, []),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The stored form."""
        return dataclasses.asdict(self)

    def format(self, decimals: int = 3) -> str:
        """The median mJ per inference with its 95% CI, ``1.234 [1.200, 1.301]``."""
        return format_interval(self.median_mj, self.ci_low_mj, self.ci_high_mj, decimals)


@dataclasses.dataclass
class MemoryFigure:
    """One memory figure of a graph in bytes, and how it was measured."""

    bytes: int
    method: str

    @classmethod
    def parse_all(cls, data: Any, where: str, reader: _Reader) -> Dict[str, MemoryFigure]:
        """``{name: {bytes, method}}`` validated."""
        data = reader.obj(data, where)
        figures = {}
        for name, entry in data.items():
            entry = reader.obj(entry, f"{where}.{name}")
            figures[name] = cls(
                reader.get(entry, "bytes", f"{where}.{name}", int),
                reader.get(entry, "method", f"{where}.{name}", str),
            )
        return figures


RUN_FIELDS = [
    "id",
    "model",
    "variant",
    "folded",
    "folded_run",
    "backend",
    "precision",
    "batch",
    "input_shape",
    "flops",
    "flops_per_sample",
    "params",
    "nodes",
    "onnx",
    "series_ms",
    "stats",
    "warnings",
    "energy",
    "memory",
]


def optional(kind: Any, empty: bool = True) -> Any:
    """A Run field read, checked (``kind``: float, int, str, bool, list, dict) and written by its
    name: a new measured quantity (energy per inference, peak memory) is one such line in Run.
    A list or dict defaults to an empty one (``empty``), anything else to None."""
    if kind in (list, dict) and empty:
        return dataclasses.field(default_factory=kind, metadata={"kind": kind})
    return dataclasses.field(default=None, metadata={"kind": kind})


@dataclasses.dataclass
class Run:
    """One graph timed on one device: its cost, raw samples and statistics.

    The fields made with ``optional`` are what the protocol and the stages record beside the
    samples; a file without them reads with their defaults.
    """

    id: str
    model: str
    variant: str
    folded: bool
    series_ms: Dict[str, List[float]]
    stats: Stats
    backend: Dict[str, Any] = dataclasses.field(default_factory=dict)
    precision: str = "fp32"
    batch: int = 1
    input_shape: List[int] = dataclasses.field(default_factory=list)
    flops: Optional[int] = None
    params: Optional[int] = None
    nodes: Dict[str, int] = dataclasses.field(default_factory=dict)
    onnx: Optional[str] = None
    folded_run: Optional[str] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    # the source it came from: {kind: zoo | factory | onnx, reference}
    source: Dict[str, Any] = optional(dict)
    inputs: Dict[str, Any] = optional(dict)  # every input's shape as timed
    graph_precision: Optional[str] = optional(str)
    onnx_sha256: Optional[str] = optional(str)  # of the timed file: compare tells a changed graph
    flops_floor: Optional[bool] = optional(bool)  # nodes of unknown shapes not counted: a floor
    fold: Optional[Dict[str, Any]] = optional(dict, empty=False)  # the fold report (bench)
    verification: Optional[Dict[str, Any]] = optional(dict, empty=False)
    block_ends: List[int] = optional(list)  # cumulative sample count after each block
    block_state: List[Dict[str, Any]] = optional(list)  # device state after each block
    resolution: Optional[float] = optional(float)  # relative CI half-width reached
    warmup_iterations: Optional[int] = optional(int)
    run_time_s: Optional[float] = optional(float)
    stop_reason: Optional[str] = optional(str)
    # the per-layer profile (harness.layer_profile.LayerProfile.to_dict(), each layer with its
    # original_nodes) and the lint's findings (harness.explain.Finding): None = not profiled
    layers: Optional[Dict[str, Any]] = optional(dict, empty=False)
    findings: Optional[List[Dict[str, Any]]] = optional(list, empty=False)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    energy: Optional[RunEnergy] = None  # None: not measured
    memory: Dict[str, MemoryFigure] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, where: str, reader: _Reader) -> Run:
        """Validated from its dict: identity, samples and stats required, the rest optional."""
        data = reader.obj(data, where)
        run_id = reader.name(data, "id", where)
        where = f"{where} ({run_id})"
        series = reader.obj(reader.get(data, "series_ms", where, object), f"{where}.series_ms")
        latencies = reader.durations(series, "latency_ms", f"{where}.series_ms")
        if not all(v > 0 for v in latencies):
            raise reader.fail(f"{where}.series_ms.latency_ms", "holds a latency that is not > 0")
        reader.block_ends(data, where, len(latencies))
        batch = reader.get(data, "batch", where, int, False, 1)
        if not BOUNDS["batch_sizes"].holds(batch):
            raise reader.fail(
                f"{where}.batch", f"is {batch}, not a batch size {BOUNDS['batch_sizes']}"
            )
        flops = reader.get(data, "flops", where, int, False)
        if flops and batch > 1 and data.get("flops_per_sample") is not True:
            flops = round(flops / batch)  # written before FLOPs were per sample: whole batch
        measured = {
            f.name: reader.get(data, f.name, where, f.metadata["kind"], False, _default(f))
            for f in _optional_fields()
        }
        _check_layers(measured["layers"], f"{where}.layers", reader)
        _check_findings(measured["findings"], f"{where}.findings", reader)
        return cls(
            run_id,
            reader.name(data, "model", where),
            reader.name(data, "variant", where),
            reader.get(data, "folded", where, bool),
            series,
            Stats.parse(reader.get(data, "stats", where, object), f"{where}.stats", reader),
            reader.get(data, "backend", where, dict, False, {}),
            reader.get(data, "precision", where, str, False, "fp32"),
            batch,
            reader.get(data, "input_shape", where, list, False, []),
            flops,
            reader.get(data, "params", where, int, False),
            reader.get(data, "nodes", where, dict, False, {}),
            reader.get(data, "onnx", where, str, False),
            reader.get(data, "folded_run", where, str, False),
            reader.get(data, "warnings", where, list, False, []),
            extra=_extra(data, RUN_FIELDS + [f.name for f in _optional_fields()]),
            energy=RunEnergy.parse(data["energy"], f"{where}.energy", reader)
            if data.get("energy") is not None
            else None,
            memory=MemoryFigure.parse_all(data.get("memory") or {}, f"{where}.memory", reader),
            **measured,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The stored form (unknown keys kept)."""
        return {
            "id": self.id,
            "model": self.model,
            "variant": self.variant,
            "folded": self.folded,
            "folded_run": self.folded_run,
            "backend": self.backend,
            "precision": self.precision,
            "batch": self.batch,
            "input_shape": self.input_shape,
            "flops": self.flops,
            "flops_per_sample": True,
            "params": self.params,
            "nodes": self.nodes,
            "onnx": self.onnx,
            **self.extra,
            **{f.name: getattr(self, f.name) for f in _optional_fields()},
            "series_ms": self.series_ms,
            "stats": self.stats.to_dict(),
            "warnings": self.warnings,
            **({"energy": self.energy.to_dict()} if self.energy else {}),
            **(
                {"memory": {k: dataclasses.asdict(v) for k, v in self.memory.items()}}
                if self.memory
                else {}
            ),
        }

    @property
    def label(self) -> str:
        """``model/variant`` (``/folded`` for a folded graph)."""
        return f"{self.model}/{self.variant}{'/folded' if self.folded else ''}"


def _check_layers(layers: Optional[Dict[str, Any]], where: str, reader: _Reader) -> None:
    """A run's per-layer profile: a list of layers, each named, with a finite time >= 0 and lists
    of node names."""
    if layers is None:
        return
    for index, layer in enumerate(reader.get(layers, "layers", where, list)):
        at = f"{where}.layers[{index}]"
        layer = reader.obj(layer, at)
        reader.get(layer, "name", at, str)
        if reader.get(layer, "time_ms", at, float) < 0:
            raise reader.fail(f"{at}.time_ms", "is negative")
        for key in ("nodes", "original_nodes"):
            names = reader.get(layer, key, at, list, False, [])
            if not all(isinstance(name, str) for name in names):
                raise reader.fail(f"{at}.{key}", "holds a node name that is not a string")


def _check_findings(findings: Optional[List[Any]], where: str, reader: _Reader) -> None:
    """A run's lint findings: each with its layer, rule, source and detail, and the measured time
    it explains (a number, or none)."""
    for index, finding in enumerate(findings or []):
        at = f"{where}[{index}]"
        finding = reader.obj(finding, at)
        for key in ("layer", "rule", "source", "detail"):
            reader.get(finding, key, at, str)
        reader.get(finding, "measured_ms", at, float, False)


def _optional_fields() -> List[dataclasses.Field]:
    """Run's fields made with ``optional``, in declaration order."""
    return [f for f in dataclasses.fields(Run) if "kind" in f.metadata]


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


@dataclasses.dataclass
class Comparison:
    """A speed-up between two runs of one model: a variant against the baseline, or folded
    against unfolded."""

    model: str
    variant: str
    kind: str
    reference: str
    subject: str
    speedup: RatioCI
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # subject's energy per inference / reference's, paired over rounds; None: not measured
    energy: Optional[RatioCI] = None

    @classmethod
    def parse(cls, data: Any, where: str, reader: _Reader) -> Comparison:
        """Validated from its dict (flat ``speedup``, ``ci_low``, ``ci_high``, ``ci_level``)."""
        data = reader.obj(data, where)
        kind = reader.get(data, "kind", where, str)
        if kind not in COMPARISON_KINDS:
            kinds = ", ".join(COMPARISON_KINDS)
            raise reader.fail(f"{where}.kind", f"is {shown(kind)}, not one of {kinds}")
        ratio = RatioCI(
            reader.get(data, "speedup", where, float),
            reader.get(data, "ci_low", where, float),
            reader.get(data, "ci_high", where, float),
            reader.get(data, "ci_level", where, float, False, CI_LEVEL),
        )
        known = [
            "model",
            "variant",
            "kind",
            "reference",
            "subject",
            "speedup",
            "ci_low",
            "ci_high",
            "ci_level",
            "energy_ratio",
            "energy_ci_low",
            "energy_ci_high",
        ]
        energy = (
            RatioCI(
                reader.get(data, "energy_ratio", where, float),
                reader.get(data, "energy_ci_low", where, float),
                reader.get(data, "energy_ci_high", where, float),
            )
            if data.get("energy_ratio") is not None
            else None
        )
        return cls(
            reader.name(data, "model", where),
            reader.name(data, "variant", where),
            kind,
            reader.get(data, "reference", where, str, False, ""),
            reader.get(data, "subject", where, str, False, ""),
            ratio,
            _extra(data, known),
            energy,
        )

    def to_dict(self) -> Dict[str, Any]:
        """The stored form."""
        return {
            "model": self.model,
            "variant": self.variant,
            "kind": self.kind,
            "reference": self.reference,
            "subject": self.subject,
            "speedup": self.speedup.ratio,
            "ci_low": self.speedup.low,
            "ci_high": self.speedup.high,
            "ci_level": self.speedup.level,
            **self.extra,
            **(
                {
                    "energy_ratio": self.energy.ratio,
                    "energy_ci_low": self.energy.low,
                    "energy_ci_high": self.energy.high,
                }
                if self.energy
                else {}
            ),
        }


@dataclasses.dataclass
class Results:
    """One device's results file."""

    created: str
    harness_version: str
    command: List[str]
    profile: Dict[str, Any]
    runs: List[Run]
    comparisons: List[Comparison]
    complete: Optional[bool] = None  # None: not recorded (schema 1)
    environment_before: Dict[str, Any] = dataclasses.field(default_factory=dict)
    environment_after: Optional[Dict[str, Any]] = None
    warnings: List[str] = dataclasses.field(default_factory=list)  # the device's
    device_extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""  # where it was read from

    @property
    def device_name(self) -> str:
        """The profile's name."""
        return str(self.profile.get("name", "?"))

    def run_by_id(self) -> Dict[str, Run]:
        """Runs keyed by their id."""
        return {run.id: run for run in self.runs}

    def comparison(
        self, model: str, variant: str, kind: str = "vs_baseline"
    ) -> Optional[Comparison]:
        """The comparison of ``kind`` for a model's variant, if measured."""
        return next(
            (c for c in self.comparisons if (c.model, c.variant, c.kind) == (model, variant, kind)),
            None,
        )

    def deployed(self, run: Run) -> Run:
        """The graph a user would deploy for an unfolded run: its folded twin where folding
        changed it."""
        return self.run_by_id().get(run.folded_run or "", run)

    def all_warnings(self) -> List[str]:
        """The device's warnings, then each run's, prefixed by the run."""
        runs = [f"{run.label}: {w}" for run in self.runs for w in run.warnings]
        return list(self.warnings) + runs

    def to_dict(self) -> Dict[str, Any]:
        """The stored form, schema 2 (a copy: changing it leaves this object as it is)."""
        device = {
            "profile": self.profile,
            "environment_before": self.environment_before,
            "environment_after": self.environment_after,
            "warnings": self.warnings,
            **self.device_extra,
        }
        return copy.deepcopy(
            {
                "schema": SCHEMA_VERSION,
                "created": self.created,
                "harness_version": self.harness_version,
                "command": self.command,
                "complete": self.complete,
                **self.extra,
                "device": device,
                "runs": [r.to_dict() for r in self.runs],
                "comparisons": [c.to_dict() for c in self.comparisons],
            }
        )


def file_labels(paths: List[str]) -> List[str]:
    """Short distinct names for ONNX files: their stems, with as many parent folders as it takes
    to tell them apart."""
    parts = [Path(p).with_suffix("").parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels) or depth >= max(len(p) for p in parts):
            return labels if len(set(labels)) == len(labels) else list(paths)
        depth += 1


def time_roles(paths: List[str]) -> List[Tuple[str, str]]:
    """(model, variant) of files timed together by ``harness time``: variants of the first file's
    model, the first its baseline, the others named by their files."""
    labels = file_labels(paths)
    roles = [(labels[0], "baseline")]
    for i, label in enumerate(labels[1:], 1):
        roles.append((labels[0], label if label != "baseline" else f"{label}-{i}"))
    return roles


def _upgrade_time_file(data: Dict[str, Any], reader: _Reader) -> Dict[str, Any]:
    """A file written by ``harness time --json`` before it wrote results (runs keyed by path,
    speed-ups inside them) as a results document."""
    runs_by_path = reader.obj(reader.get(data, "runs", "", object), "runs")
    paths = list(runs_by_path)
    device = reader.obj(data.get("device") or {}, "device")
    runs, comparisons = [], []
    for path, (model, variant) in zip(paths, time_roles(paths) if paths else []):
        entry = reader.obj(runs_by_path[path], f"runs.{path}")
        inputs = entry.get("inputs") or {}
        runs.append(
            dict(
                {k: v for k, v in entry.items() if k not in ("speedup",)},
                id=path,
                model=model,
                variant=variant,
                folded=False,
                onnx=path,
                batch=data.get("batch", 1),
                precision=(entry.get("backend") or {}).get("precision", "fp32"),
                input_shape=next(iter(inputs.values()), []),
            )
        )
        speedup = entry.get("speedup")
        if isinstance(speedup, dict):
            comparisons.append(
                {
                    "model": model,
                    "variant": variant,
                    "kind": "vs_baseline",
                    "reference": speedup.get("reference", paths[0]),
                    "subject": path,
                    "speedup": speedup.get("value"),
                    "ci_low": speedup.get("ci_low"),
                    "ci_high": speedup.get("ci_high"),
                }
            )
    return {
        "schema": SCHEMA_VERSION,
        "command": data.get("argv", []),
        "complete": True,
        "device": {
            "profile": data.get("profile"),
            "environment_before": device.get("environment") or {},
            "environment_after": device.get("environment_after"),
            "warnings": device.get("warnings") or [],
        },
        "runs": runs,
        "comparisons": comparisons,
    }


def _upgrade(data: Dict[str, Any], reader: _Reader) -> Dict[str, Any]:
    """Schema 1 -> 2: ``complete`` becomes explicit (null: not recorded), comparisons get their CI
    level; a merged report or another schema is refused."""
    if data.get("kind") == "harness time" and isinstance(data.get("runs"), dict):
        return _upgrade_time_file(data, reader)
    schema = data.get("schema")
    if data.get("kind") == "merged" or "merged_from" in data:
        merged = ", ".join(str(p) for p in data.get("merged_from") or [])
        raise HarnessError(
            f"{reader.source} is a merged report, not one device's results: pass "
            f"the results.json files it was merged from ({merged})"
        )
    if schema not in READABLE_SCHEMAS:
        readable = ", ".join(map(str, READABLE_SCHEMAS))
        raise HarnessError(
            f"{reader.source} has results schema {shown(schema)}, this harness reads schemas "
            f"{readable}"
        )
    if schema == 1:
        data = dict(data, schema=2, complete=data.get("complete"))
        data["comparisons"] = [
            dict(c, ci_level=CI_LEVEL) if isinstance(c, dict) else c
            for c in data.get("comparisons") or []
        ]
    return data


def speedup_of(reference: Run, subject: Run) -> RatioCI:
    """The speed-up of ``subject`` over ``reference`` from their samples (``ESTIMATOR``): the
    ratio of their medians, the interval paired over the rounds they share."""
    ends = [run.extra.get("block_ends") or [] for run in (reference, subject)]
    rounds = min(len(e) for e in ends)
    ratio, low, high = bootstrap_ratio_ci(
        reference.series_ms["latency_ms"],
        subject.series_ms["latency_ms"],
        numerator_blocks=ends[0][:rounds],
        denominator_blocks=ends[1][:rounds],
        paired=True,
    )
    return RatioCI(ratio, low, high)


def _with_estimator(comparison: Comparison, runs: Dict[str, Run]) -> Comparison:
    """A comparison written with another estimator, recomputed from its runs' samples (kept as it
    is where they are not in the file)."""
    if comparison.extra.get("estimator") == ESTIMATOR:
        return comparison
    reference, subject = runs.get(comparison.reference), runs.get(comparison.subject)
    if reference is None or subject is None:
        return comparison
    extra = dict(comparison.extra, estimator=ESTIMATOR)
    return dataclasses.replace(comparison, speedup=speedup_of(reference, subject), extra=extra)


def parse_results(data: Any, source: str = "results") -> Results:
    """Validate and type a results document (schema 1 upgraded); errors name ``source`` and the
    field."""
    reader = _Reader(source)
    if not isinstance(data, dict) or "schema" not in data or "runs" not in data:
        raise HarnessError(f"{source} is not a harness results file (no 'schema' and 'runs' keys)")
    data = _upgrade(data, reader)
    device = reader.obj(reader.get(data, "device", "", object), "device")
    profile = reader.obj(reader.get(device, "profile", "device", object), "device.profile")
    reader.peaks(profile)
    reader.name(profile, "name", "device.profile")
    runs = [
        Run.parse(r, f"runs[{i}]", reader) for i, r in enumerate(reader.get(data, "runs", "", list))
    ]
    comparisons = [
        Comparison.parse(c, f"comparisons[{i}]", reader)
        for i, c in enumerate(reader.get(data, "comparisons", "", list, False, []))
    ]
    ids = [r.id for r in runs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise reader.fail("runs", f"hold the id {shown(duplicate)} twice")
    by_id = {r.id: r for r in runs}
    comparisons = [_with_estimator(c, by_id) for c in comparisons]
    device_keys = ["profile", "environment_before", "environment_after", "warnings"]
    top_keys = [
        "schema",
        "created",
        "harness_version",
        "command",
        "complete",
        "device",
        "runs",
        "comparisons",
    ]
    return Results(
        str(data.get("created", "")),
        str(data.get("harness_version", "")),
        [str(a) for a in reader.get(data, "command", "", list, False, [])],
        profile,
        runs,
        comparisons,
        reader.get(data, "complete", "", bool, False),
        reader.environment(device, "environment_before", "device") or {},
        reader.environment(device, "environment_after", "device"),
        reader.get(device, "warnings", "device", list, False, []),
        _extra(device, device_keys),
        _extra(data, top_keys),
        source,
    )


def as_results(data: Union[Results, Dict[str, Any]], source: str = "results") -> Results:
    """``data`` typed: a Results as it is, a dict through the reader."""
    return data if isinstance(data, Results) else parse_results(data, source)


def read_results(path: Union[str, Path]) -> Results:
    """Read, validate and type one device's results file (schema 1 or 2)."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not a JSON results file ({exc})") from None
    return parse_results(data, str(path))


def load_results(path: Union[str, Path]) -> Dict[str, Any]:
    """A results file as a validated schema-2 dict, for code that still reads dicts."""
    return read_results(path).to_dict()


def new_results(
    command: List[str], profile: Dict[str, Any], environment: Dict[str, Any]
) -> Dict[str, Any]:
    """An empty results document for one device, marked incomplete until the run ends."""
    from harness import __version__

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Results(created, __version__, command, profile, [], [], False, environment).to_dict()


def write_results(results: Union[Results, Dict[str, Any]], path: Path) -> Path:
    """Write a results file atomically, always as schema 2 (a dict goes through the reader)."""
    results = as_results(results, f"results for {path}")
    return write_text_atomic(path, json.dumps(results.to_dict(), indent=1) + "\n")
