"""Depth-compression planning: which activations to remove under a latency budget, by dynamic
programming.

Each activation chain (``harness.cost.lut``) is cut into contiguous segments; a segment of several
convs means the activations inside it are removed and it is merged into one conv. A segment's
latency comes from a measured table (``harness lut``), its importance from the user's own accuracy
measurements (we do not train: the numbers are theirs). The plan maximises total importance with
total latency within the budget (latency of the rest of the network excluded): per chain, a DP over
cut points gives the best importance for each latency; a knapsack over chains combines them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from harness.cost.lut import read_span_values
from harness.errors import HarnessError

Segment = Tuple[int, int]


@dataclasses.dataclass
class Plan:
    """The chosen segments, their predicted latency (ms) and total importance."""

    segments: List[Segment]
    latency_ms: float
    importance: float

    @property
    def merged(self) -> List[Segment]:
        """Segments of more than one conv: the places where activations go."""
        return [s for s in self.segments if s[1] > s[0]]


def read_importance(path: Path) -> Dict[Segment, float]:
    """An importance table ``st,end,importance`` (higher is better: e.g. accuracy kept after
    merging st..end; negative allowed)."""

    return read_span_values(path, "importance", "importance table", non_negative=False)


def _options(
    chain: Sequence[int], latency: Dict[Segment, float], importance: Dict[Segment, float]
) -> List[Tuple[Segment, float, float]]:
    found = []
    for i, st in enumerate(chain):
        for end in chain[i:]:
            seg = (st, end)
            if seg not in latency:
                continue
            if (
                seg in importance or st == end
            ):  # a lone conv kept as it is costs no importance by default
                found.append((seg, latency[seg], importance.get(seg, 0.0)))
    return found


def plan_chains(
    chains: Sequence[Sequence[int]],
    latency: Dict[Segment, float],
    importance: Dict[Segment, float],
    budget_ms: float,
    resolution: int = 2000,
) -> Optional[Plan]:
    """Best segmentation of every chain with total table latency <= ``budget_ms``; None when none
    fits.

    Latencies are rounded up to ``budget_ms / resolution`` steps, so a returned plan never exceeds
    the budget.
    """
    if not (math.isfinite(budget_ms) and budget_ms > 0):
        raise HarnessError(f"the latency budget must be a positive number, not {budget_ms!r}")
    step = budget_ms / resolution
    if step == 0:
        raise HarnessError(f"the latency budget {budget_ms!r} ms is too small to plan in")
    NEG = -math.inf
    # best[t] = (importance, segments) over the chains so far with total latency t steps
    best: List[Tuple[float, List[Segment]]] = [(0.0, [])] + [(NEG, [])] * resolution
    lacking = [conv for chain in chains for conv in chain if (conv, conv) not in latency]
    if lacking:
        raise HarnessError(
            f"the latency table lacks single-conv spans for convs {lacking}: is it for this model?"
        )
    for chain in chains:
        by_start: Dict[int, List[Tuple[Segment, int, float]]] = {}
        for seg, ms, imp in _options(chain, latency, importance):
            steps = ms / step  # inf for a time past the budget by hundreds of magnitudes
            cost = math.ceil(steps - 1e-9) if steps <= resolution else resolution + 1
            by_start.setdefault(seg[0], []).append((seg, cost, imp))
        position = {conv: i for i, conv in enumerate(chain)}
        # chain DP: prefix[i][t] = best (importance, segments) covering chain[:i] with t steps
        prefix: List[Dict[int, Tuple[float, List[Segment]]]] = [
            dict() for _ in range(len(chain) + 1)
        ]
        prefix[0][0] = (0.0, [])
        for i in range(len(chain)):
            for t, (imp, segs) in prefix[i].items():
                for seg, cost, gain in by_start.get(chain[i], []):
                    j, total = position[seg[1]] + 1, t + cost
                    if total <= resolution and imp + gain > prefix[j].get(total, (NEG,))[0]:
                        prefix[j][total] = (imp + gain, segs + [seg])
        if not prefix[-1]:
            return None  # this chain alone exceeds the budget
        combined: List[Tuple[float, List[Segment]]] = [(NEG, [])] * (resolution + 1)
        for t, (imp, segs) in enumerate(best):
            if imp == NEG:
                continue
            for cost, (chain_imp, chain_segs) in prefix[-1].items():
                if t + cost <= resolution and imp + chain_imp > combined[t + cost][0]:
                    combined[t + cost] = (imp + chain_imp, segs + chain_segs)
        best = combined
    feasible = [(imp, segs) for imp, segs in best if imp != NEG]
    if not feasible:
        return None
    imp, segs = max(feasible, key=lambda item: item[0])
    return Plan(sorted(segs), sum(latency[s] for s in segs), imp)
