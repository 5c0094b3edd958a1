"""The fold report: what each pass did, what was refused and why, and the graph before and after."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional


@dataclasses.dataclass
class FoldReport:
    """Records of every pass plus before/after node counts and FLOPs."""

    merge: str
    cost_model: str
    records: List[Dict[str, Any]]
    nodes_before: Dict[str, int]
    nodes_after: Dict[str, int]
    flops_before: int
    flops_after: int
    elapsed_s: float
    verification: Optional[Dict[str, Any]] = None

    @property
    def changed(self) -> bool:
        """Whether folding rewrote the graph at all."""
        return any(r["action"] in ("folded", "merged", "removed") for r in self.records)

    def count(self, action: str) -> int:
        return sum(1 for r in self.records if r["action"] == action)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["changed"] = self.changed
        return data

    def to_text(self) -> str:
        """A reviewer-readable account of the fold."""
        lines = [
            f"fold (merge={self.merge}, cost model: {self.cost_model}) in {self.elapsed_s:.2f} s"
        ]
        for record in self.records:
            nodes = ", ".join(n for n in record["nodes"] if n)
            line = f"  [{record['action']}] {record['pass']}" + (f": {nodes}" if nodes else "")
            if record.get("detail"):
                line += f"\n      {record['detail']}"
            if "before" in record and record["action"] == "merged":
                line += f"\n      before: {' | '.join(record['before'])}\n      after:  {record['after']}"
            if "flops_before" in record:
                line += f"\n      FLOPs {record['flops_before'] / 1e6:.2f}M -> {record['flops_after'] / 1e6:.2f}M"
            if "cost_before_us" in record:
                line += f"; estimated {record['cost_before_us']:.1f} us -> {record['cost_after_us']:.1f} us"
            lines.append(line)
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
            f"  FLOPs: {self.flops_before / 1e6:.2f}M -> {self.flops_after / 1e6:.2f}M; "
            f"{self.count('merged')} merges, {self.count('folded')} folds, {self.count('removed')} removals, "
            f"{self.count('refused')} refusals"
        )
        if self.verification:
            lines.append("  " + verification_text(self.verification))
        return "\n".join(lines)


def verification_text(v: Dict[str, Any]) -> str:
    """One line saying how the fold was verified, or why it could not be."""
    if not v.get("verified", True):
        return f"not verified: {v['note']}"
    return (
        f"verified: max relative error {v['max_rel_error']:.2e} (tolerance {v['tolerance']:g}) over "
        f"{v.get('compared', 0)} tensors, seeds {v['seeds']}, batch sizes {v['batch_sizes']}"
        + (f"; {v['note']}" if v.get("note") else "")
    )
