"""The fold report: what each pass did, what was refused and why, and the graph before and after."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Dict, List, Optional

from harness.graph_stats import flops_text


class FoldAction(str, enum.Enum):
    """What a fold pass did with a record's nodes (the value is the report's ``action`` text)."""

    FOLDED = "folded"  # folded into another node: BatchNorm, zero Pad, branches, constants
    MERGED = "merged"  # a chain of Convs or Gemms merged into one
    REMOVED = "removed"  # an identity-like node removed
    REFUSED = "refused"  # a rewrite that would not be exact, or a graph that could not be prepared
    PLANNED = "planned"  # the cost model's choice of segments for a conv chain
    KEPT = "kept"  # a rewrite left out because it would cost more
    CONVERTED = "converted"  # the opset converted before folding (written converted)
    BOUND = "bound"  # dynamic input dimensions bound to sizes
    LIMITED = "limited"  # only the shape-independent passes could run
    WARNING = "warning"  # something the numbers below should be read with

    @property
    def changes_graph(self) -> bool:
        """Whether a record of this action means the graph was rewritten (a converted opset
        too: the model is written at the new opset, which the runtimes load)."""
        return self in (
            FoldAction.FOLDED,
            FoldAction.MERGED,
            FoldAction.REMOVED,
            FoldAction.CONVERTED,
        )


# the optional fields of a record, in the order its dictionary lists them (before ``detail``)
_OPTIONAL_FIELDS = (
    "result",
    "before",
    "after",
    "flops_before",
    "flops_after",
    "cost_before_us",
    "cost_after_us",
    "measured_before_us",
    "measured_after_us",
    "segments",
)


@dataclasses.dataclass
class FoldRecord:
    """One thing a pass did (or refused to do) to some nodes, and why."""

    pass_name: str  # the pass: fold_batchnorm, merge_conv_chains, ... (``pass`` in the dictionary)
    action: FoldAction
    nodes: List[str]
    detail: str
    result: Optional[str] = None  # the node that holds the rewrite's result
    before: Optional[List[str]] = None  # the rewritten layers, described
    after: Optional[str] = None  # the layer that replaced them, described
    flops_before: Optional[int] = None
    flops_after: Optional[int] = None
    cost_before_us: Optional[float] = None  # the cost model's estimate before and after
    cost_after_us: Optional[float] = None
    measured_before_us: Optional[float] = None  # profiled (fold --check-cost), before and after
    measured_after_us: Optional[float] = None
    segments: Optional[List[List[int]]] = None  # a plan's segments (run indices, first and last)

    @property
    def key(self) -> tuple:
        """What identifies a decision across rounds of the passes."""
        return (self.pass_name, self.action, tuple(self.nodes), self.detail)

    def to_dict(self) -> Dict[str, Any]:
        """The record as the JSON report writes it: ``pass``, ``action``, ``nodes``, the optional
        fields that are set, then ``detail``."""
        data: Dict[str, Any] = {
            "pass": self.pass_name,
            "action": self.action.value,
            "nodes": list(self.nodes),
        }
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = list(value) if isinstance(value, list) else value
        data["detail"] = self.detail
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> FoldRecord:
        """A record read back from a JSON report."""
        optional = {name: data[name] for name in _OPTIONAL_FIELDS if name in data}
        return cls(
            data["pass"],
            FoldAction(data["action"]),
            list(data["nodes"]),
            data["detail"],
            **optional,
        )


@dataclasses.dataclass
class FoldReport:
    """Records of every pass plus before/after node counts and FLOPs."""

    merge: str
    cost_model: str
    records: List[FoldRecord]
    nodes_before: Dict[str, int]
    nodes_after: Dict[str, int]
    flops_before: int
    flops_after: int
    elapsed_s: float
    verification: Optional[Dict[str, Any]] = None
    # a count that misses Conv/Gemm/MatMul nodes of unknown shapes is a floor (``flops_text``)
    flops_before_floor: bool = False
    flops_after_floor: bool = False

    @property
    def changed(self) -> bool:
        """Whether folding rewrote the graph at all."""
        return any(r.action.changes_graph for r in self.records)

    def count(self, action: FoldAction) -> int:
        """How many records have this action."""
        return sum(1 for r in self.records if r.action == action)

    def to_dict(self) -> Dict[str, Any]:
        """The report as the JSON file (``harness fold --report``) holds it."""
        data = dataclasses.asdict(self)
        data["records"] = [r.to_dict() for r in self.records]
        data["changed"] = self.changed
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> FoldReport:
        """A report read back from its JSON form (extra keys, a table prediction say, ignored)."""
        fields = {field.name for field in dataclasses.fields(cls)} - {"records"}
        kept = {name: data[name] for name in fields if name in data}
        return cls(records=[FoldRecord.from_dict(r) for r in data["records"]], **kept)

    def to_text(self) -> str:
        """A reviewer-readable account of the fold."""
        lines = [
            f"fold (merge={self.merge}, cost model: {self.cost_model}) in {self.elapsed_s:.2f} s"
        ]
        lines += [_record_text(record) for record in self.records]
        ops = sorted(set(self.nodes_before) | set(self.nodes_after))
        lines.append(
            "  nodes: "
            + ", ".join(
                f"{op} {self.nodes_before.get(op, 0)}->{self.nodes_after.get(op, 0)}" for op in ops
            )
        )
        if not self.changed:
            lines.append("  nothing to fold: the model is written unchanged")
        lines.append(
            f"  FLOPs: {flops_text(self.flops_before, self.flops_before_floor)} -> "
            f"{flops_text(self.flops_after, self.flops_after_floor)}; "
            f"{self.count(FoldAction.MERGED)} merges, {self.count(FoldAction.FOLDED)} folds, "
            f"{self.count(FoldAction.REMOVED)} removals, "
            f"{self.count(FoldAction.REFUSED)} refusals"
        )
        if self.verification:
            lines.append("  " + verification_text(self.verification))
        return "\n".join(lines)


def _record_text(record: FoldRecord) -> str:
    """One record of the text report: action, pass and nodes, then its details indented."""
    nodes = ", ".join(n for n in record.nodes if n)
    line = f"  [{record.action.value}] {record.pass_name}" + (f": {nodes}" if nodes else "")
    if record.detail:
        line += f"\n      {record.detail}"
    if record.before is not None and record.action is FoldAction.MERGED:
        line += f"\n      before: {' | '.join(record.before)}\n      after:  {record.after}"
    if record.flops_before is not None:
        line += f"\n      FLOPs {record.flops_before / 1e6:.2f}M -> {record.flops_after / 1e6:.2f}M"
    if record.cost_before_us is not None:
        line += f"; estimated {record.cost_before_us:.1f} us -> {record.cost_after_us:.1f} us"
    if record.measured_before_us is not None:
        line += (
            f"; measured {record.measured_before_us:.1f} us -> {record.measured_after_us:.1f} us"
            " (profiled)"
        )
    return line


def verification_text(v: Dict[str, Any]) -> str:
    """One line saying how the fold was verified, or why it could not be."""
    if not v.get("verified", True):
        return f"not verified: {v['note']}"
    worst = v.get("worst") or {}
    allowed = ""
    if worst and v["max_rel_error"] > v["tolerance"]:  # let through by an atol, or as rounding
        allowed = f" at tensor {worst['name']!r}: max |a - b| {worst['error']:.2e} against max |a| "
        allowed += (
            f"{worst['magnitude']:.2e}, within the {worst['allowed']:.2e} allowed (rtol "
            f"{worst['rtol']:g} x max |a| + atol {worst['atol']:.2e})"
            if worst["error"] <= worst["allowed"]
            else f"{worst['magnitude']:.2e}, rounding (below)"
        )
    return (
        f"verified: max relative error {v['max_rel_error']:.2e} (tolerance {v['tolerance']:g})"
        f"{allowed} over {v.get('compared', 0)} tensors, seeds {v['seeds']}, batch sizes "
        f"{v['batch_sizes']}" + (f"; {v['note']}" if v.get("note") else "")
    )
