"""Measured arbitration of merge choices: the cost model's plan against none and all, here.

A cost model's prediction can be wrong in ways its own fit error does not show (a merged 5x5 can
cost more inside a network than in a micro-benchmark). ``fold --merge auto --arbitrate`` therefore
times the distinct graphs of ``none``, ``all`` and the model's plan, interleaved under the harness
protocol, and keeps the plan only when its paired speed-up over the better of ``none`` and ``all``
is at least 1: the graph kept is never slower than that one in the measurement that chose it.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import onnx

from harness.errors import HarnessError
from harness.measure import measure_graphs
from harness.profiles import Profile

PLAN = "auto"
REFERENCES = ("none", "all")


@dataclasses.dataclass
class Arbitration:
    """What was timed and what was kept: ``chosen`` is one of none, all, auto."""

    chosen: str
    reference: str  # the better of none and all, by median latency
    medians_ms: Dict[str, float]
    same_as: Dict[str, str]  # candidate -> the candidate whose graph it is byte for byte
    plan_vs_reference: Tuple[float, float, float]  # speed-up of the plan, 95% interval
    stop_reason: str

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready, for fold's report."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """Two lines for fold's output."""
        ratio, low, high = self.plan_vs_reference
        if not self.medians_ms:
            return "  arbitration: none, all and the plan are one graph: nothing to time"
        timed = ", ".join(f"{name} {ms:.3f} ms" for name, ms in self.medians_ms.items())
        same = "".join(f"; {a} is {b}'s graph" for a, b in self.same_as.items())
        return (
            f"  arbitration (medians on this machine): {timed}{same}\n"
            f"  kept {self.chosen}: the plan's speed-up over {self.reference} is "
            f"{ratio:.3f} [{low:.3f}, {high:.3f}] ({self.stop_reason})"
        )


def arbitrate(
    candidates: Dict[str, onnx.ModelProto], profile: Profile, batch: Optional[int] = None
) -> Arbitration:
    """Time ``candidates`` (keys none, all, auto) on the profile's backend here and choose.

    Graphs that serialise identically are timed once. The plan is kept when it is the reference's
    graph or its speed-up over the reference (ratio of medians, paired interval) is >= 1.
    """

    if set(candidates) != {PLAN, *REFERENCES}:
        raise HarnessError(f"arbitration needs the graphs of {PLAN}, none and all")
    if profile.remote.host:
        raise HarnessError(
            f"--arbitrate times on this machine, but profile {profile.name!r} is the remote "
            f"{profile.remote.host}: arbitrate there (harness fold runs on the device too)"
        )
    owner: Dict[bytes, str] = {}
    same_as: Dict[str, str] = {}
    for name in (*REFERENCES, PLAN):
        key = candidates[name].SerializeToString()
        if key in owner:
            same_as[name] = owner[key]
        else:
            owner[key] = name
    timed = [name for name in (*REFERENCES, PLAN) if name not in same_as]
    if len(timed) == 1:
        only = timed[0]
        return Arbitration(PLAN, only, {}, same_as, (1.0, 1.0, 1.0), "one graph: nothing to time")
    measured = measure_graphs({name: candidates[name] for name in timed}, profile, batch=batch)

    def graph(name: str) -> str:
        return same_as.get(name, name)

    medians = {name: measured.runs[name].stats.median for name in timed}
    reference = min(REFERENCES, key=lambda name: measured.runs[graph(name)].stats.median)
    if graph(PLAN) == graph(reference):
        speedup = (1.0, 1.0, 1.0)
    else:
        ci = measured.speedup(graph(PLAN), graph(reference))
        speedup = (ci.ratio, ci.low, ci.high)
    chosen = PLAN if speedup[0] >= 1.0 else reference
    return Arbitration(chosen, reference, medians, same_as, speedup, measured.stop_reason)
