"""The merge cost model checked where it decides: predicted against measured, per span and chain.

For every chain ``fold --merge auto`` considers, every partition of it into merged segments is
folded (a ``PlanCostModel`` forces fold's own dynamic program to that plan) and profiled layer by
layer (``harness.layer_profile``), partitions of different chains sharing one folded graph. Each
segment's merged conv (or single conv) then has a prediction, the cost model's, and a measurement,
the profiled time of the layers covering that conv (with the activation or residual Add the
backend fuses into it). The summary is nn-Meter's metric, the share of predictions within +/-10%
and +/-20% of measurement, and ``auto`` against the *oracle*: per chain, the partition measured
fastest.

The check is stored beside the calibration (``<profile>.<backend>.<precision>.costcheck.json``),
one entry per model, and shown by ``harness calibrate`` and ``harness fold --check-cost``.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import onnx

from harness.cost.model import CostModel
from harness.fold import fold_model
from harness.fold.report import FoldAction, FoldRecord
from harness.geometry import ConvGeometry
from harness.measure import CostChain, profile_layers
from harness.onnx_io import save_model, write_text_atomic
from harness.profiles import Profile, calibration_path

SCHEMA = 1
Span = Tuple[int, int]
Partition = Tuple[Span, ...]
MAX_PARTITIONS = 16  # chains of up to 5 convs are checked exhaustively; longer ones are skipped


@dataclasses.dataclass
class PlanCostModel(CostModel):
    """Steers fold's dynamic program to a given plan: a wanted span costs nothing, any other
    ``width**2`` (so unwanted merges never pay); records what ``real`` predicts for each span the
    program priced."""

    wanted: Set[Span]
    real: CostModel
    predicted: Dict[Span, float] = dataclasses.field(default_factory=dict)  # seconds
    name: str = "a forced plan (cost check)"

    def conv_cost(self, geometry: ConvGeometry) -> float:
        span = geometry.span
        if span is None:
            return 1.0
        self.predicted.setdefault(span, self.real.conv_cost(geometry))
        return 0.0 if span in self.wanted else float((span[1] - span[0] + 1) ** 2)

    def elementwise_cost(self, nbytes: int) -> float:
        return 0.0

    def decision_margin(self) -> Tuple[float, str]:
        return 0.0, "a forced plan"


@dataclasses.dataclass
class SpanCheck:
    """One conv span (a single conv, or a merged segment): predicted and measured ms."""

    model: str
    span: Span
    predicted_ms: float
    measured_ms: float

    @property
    def merged(self) -> bool:
        return self.span[1] > self.span[0]

    @property
    def error(self) -> float:
        """predicted / measured - 1."""
        return self.predicted_ms / self.measured_ms - 1 if self.measured_ms > 0 else float("inf")


@dataclasses.dataclass
class ChainCheck:
    """One chain auto considered: each partition's predicted and measured ms, auto's choice and
    the oracle's (the partition measured fastest)."""

    model: str
    convs: List[int]
    partitions: Dict[Partition, Tuple[float, float]]  # partition -> (predicted, measured) ms
    auto: Partition

    @property
    def oracle(self) -> Partition:
        return min(self.partitions, key=lambda p: self.partitions[p][1])

    @property
    def auto_ms(self) -> float:
        return self.partitions[self.auto][1]

    @property
    def oracle_ms(self) -> float:
        return self.partitions[self.oracle][1]


def partitions(convs: Sequence[int]) -> List[Partition]:
    """Every split of a chain (conv indices) into consecutive segments, as spans."""
    n = len(convs)
    found = []
    for cuts in itertools.product((False, True), repeat=n - 1):
        segments, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                segments.append((convs[start], convs[i - 1]))
                start = i
        segments.append((convs[start], convs[-1]))
        found.append(tuple(segments))
    return found


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all have names (fold names unnamed ones itself; the check must know
    them)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, node in enumerate(copy.graph.node):
        node.name = node.name or f"{node.op_type}_{i}"
    return copy


def considered_chains(
    records: List[FoldRecord], conv_index: Dict[str, int]
) -> List[Tuple[List[int], Partition]]:
    """The chains ``auto`` planned (its first round: runs of the graph's own convs) with the
    partition it chose, as spans."""
    found = []
    for record in records:
        if record.action is not FoldAction.PLANNED or record.segments is None:
            continue
        if not all(n in conv_index for n in record.nodes):
            continue  # a run through a conv merged in an earlier round
        convs = [conv_index[n] for n in record.nodes]
        chosen = tuple((convs[i], convs[j]) for i, j in record.segments)
        found.append((convs, chosen))
    return found


def check_model(
    model: onnx.ModelProto,
    name: str,
    profile: Profile,
    cost: CostModel,
    batch: int,
    workdir: Path,
    runs: int = 30,
) -> Tuple[List[SpanCheck], List[ChainCheck]]:
    """Fold ``model`` with every partition of every chain ``auto`` considers, profile each folded
    graph, and set each span's prediction against its measurement."""
    model = _named(model)
    conv_index = conv_indices(model)
    planned = fold_model(model, merge="auto", cost_model=cost)
    chains = [
        (convs, auto)
        for convs, auto in considered_chains(planned.report.records, conv_index)
        if 2 ** (len(convs) - 1) <= MAX_PARTITIONS
    ]
    options = [partitions(convs) for convs, _ in chains]
    measured: Dict[Span, List[float]] = {}
    predicted: Dict[Span, float] = {}
    profiled = []
    chain = CostChain(profile)  # one profiler cost for every plan: their spans are compared
    for round_index in range(max((len(o) for o in options), default=0)):
        wanted = {s for o in options for s in o[round_index % len(o)]}
        plan = PlanCostModel(wanted, cost)
        result = fold_model(model, merge="auto", cost_model=plan)
        predicted.update(plan.predicted)
        path = save_model(result.model, Path(workdir) / f"{name}-plan{round_index}.onnx")
        profiled.append((result.spans, profile_layers(path, profile, None, batch, runs)))
        chain.sample()
    profiler = chain.cost()
    for spans, layers in profiled:
        layers.take_off(profiler)
        for conv, span in spans.items():
            measured.setdefault(span, []).append(layers.time_of([conv]))
    mean = {s: sum(v) / len(v) for s, v in measured.items()}
    spans = [
        SpanCheck(name, s, predicted[s] * 1e3, mean[s]) for s in sorted(mean) if s in predicted
    ]
    checks = []
    for (convs, auto), opts in zip(chains, options):
        table = {
            p: (sum(predicted[s] for s in p) * 1e3, sum(mean[s] for s in p))
            for p in opts
            if all(s in mean and s in predicted for s in p)
        }
        if auto in table:
            checks.append(ChainCheck(name, convs, table, auto))
    return spans, checks


def summary(spans: Sequence[SpanCheck], chains: Sequence[ChainCheck]) -> Dict[str, Any]:
    """nn-Meter's metric over the spans (all, merged, single) and auto against the oracle."""

    def share(items: Sequence[SpanCheck], bound: float) -> Optional[float]:
        return sum(abs(s.error) <= bound for s in items) / len(items) if items else None

    merged = [s for s in spans if s.merged]
    single = [s for s in spans if not s.merged]
    auto = sum(c.auto_ms for c in chains)
    oracle = sum(c.oracle_ms for c in chains)
    return {
        "spans": len(spans),
        "within_10pct": share(spans, 0.10),
        "within_20pct": share(spans, 0.20),
        "merged_within_10pct": share(merged, 0.10),
        "single_within_10pct": share(single, 0.10),
        "chains": len(chains),
        "auto_matches_oracle": sum(c.auto == c.oracle for c in chains),
        "auto_ms": auto,
        "oracle_ms": oracle,
        "auto_vs_oracle": auto / oracle - 1 if oracle else None,
    }


def check_path(profile: Profile, backend: str, precision: str) -> Path:
    """Where the check is stored: beside the calibration it checks."""
    calibration = calibration_path(profile, backend, precision)
    return calibration.with_name(calibration.name.replace(".calibration.json", ".costcheck.json"))


def to_record(spans: Sequence[SpanCheck], chains: Sequence[ChainCheck]) -> Dict[str, Any]:
    """One model's entry in the stored check."""
    return {
        "spans": [
            {"span": list(s.span), "predicted_ms": s.predicted_ms, "measured_ms": s.measured_ms}
            for s in spans
        ],
        "chains": [
            {
                "convs": c.convs,
                "auto": [list(s) for s in c.auto],
                "oracle": [list(s) for s in c.oracle],
                "partitions": [
                    {"segments": [list(s) for s in p], "predicted_ms": pr, "measured_ms": me}
                    for p, (pr, me) in c.partitions.items()
                ],
            }
            for c in chains
        ],
    }


def from_record(name: str, entry: Dict[str, Any]) -> Tuple[List[SpanCheck], List[ChainCheck]]:
    """A stored model entry read back."""
    spans = [
        SpanCheck(name, tuple(s["span"]), s["predicted_ms"], s["measured_ms"])  # type: ignore
        for s in entry.get("spans", [])
    ]
    chains = []
    for c in entry.get("chains", []):
        table = {
            tuple(tuple(s) for s in p["segments"]): (p["predicted_ms"], p["measured_ms"])
            for p in c["partitions"]
        }
        chains.append(ChainCheck(name, c["convs"], table, tuple(tuple(s) for s in c["auto"])))
    return spans, chains  # type: ignore[return-value]


def store(
    path: Path,
    profile: Profile,
    backend: str,
    precision: str,
    cost: CostModel,
    results: Dict[str, Tuple[List[SpanCheck], List[ChainCheck]]],
    environment: Dict[str, Any],
) -> Dict[str, Any]:
    """Write (or update, model by model, when the cost model is the same) the check beside the
    calibration; returns what was written."""
    data: Dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("cost_model") != cost.name:
            data = {}  # a check of another fit
    models = dict(data.get("models", {}))
    models.update({name: to_record(*result) for name, result in results.items()})
    spans, chains = all_checks(models)
    data = {
        "schema": SCHEMA,
        "kind": "harness cost check",
        "profile": profile.name,
        "backend": backend,
        "precision": precision,
        "cost_model": cost.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "measured: per-layer profiles of each folded plan (layer_profile), a profiling "
        "run apart from timing; a conv's time includes what the backend fuses into it",
        "environment": environment,
        "summary": summary(spans, chains),
        "models": models,
    }
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return data


def all_checks(models: Dict[str, Any]) -> Tuple[List[SpanCheck], List[ChainCheck]]:
    """Every model's spans and chains of a stored check, together."""
    spans: List[SpanCheck] = []
    chains: List[ChainCheck] = []
    for name, entry in models.items():
        s, c = from_record(name, entry)
        spans += s
        chains += c
    return spans, chains


def summary_text(data: Dict[str, Any]) -> str:
    """Lines saying how the cost model did where it decided (a stored check)."""
    s = data["summary"]

    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.0%}"

    gap = s.get("auto_vs_oracle")
    return (
        f"cost check ({data['created'][:10]}, {', '.join(sorted(data['models']))}; "
        f"{data['cost_model']}): {s['spans']} spans, {pct(s['within_10pct'])} within +/-10% of "
        f"measured, {pct(s['within_20pct'])} within +/-20% (merged "
        f"{pct(s['merged_within_10pct'])}, single {pct(s['single_within_10pct'])} within "
        f"+/-10%); auto chose the oracle's plan in {s['auto_matches_oracle']} of {s['chains']} "
        f"chains, {'-' if gap is None else f'{gap:+.1%}'} against the oracle"
    )


def annotate(records: List[FoldRecord], spans: Sequence[SpanCheck], conv_index: Dict) -> None:
    """Set the measured cost (us) on the merges of a fold report: the original convs' measured
    sum before, the merged conv's after."""
    measured = {s.span: s.measured_ms for s in spans}
    for record in records:
        if record.action is not FoldAction.MERGED or record.pass_name != "merge_conv_chains":
            continue
        if not all(n in conv_index for n in record.nodes):
            continue
        convs = [conv_index[n] for n in record.nodes]
        singles = [measured.get((c, c)) for c in convs]
        merged = measured.get((convs[0], convs[-1]))
        if merged is not None and None not in singles:
            record.measured_before_us = round(sum(singles) * 1e3, 3)  # type: ignore[arg-type]
            record.measured_after_us = round(merged * 1e3, 3)


def conv_indices(model: onnx.ModelProto) -> Dict[str, int]:
    """Each Conv node of a graph -> its index among the graph's convs (fold's span numbering)."""
    convs = [n for n in _named(model).graph.node if n.op_type == "Conv"]
    return {n.name: i for i, n in enumerate(convs)}
