"""Regression verdicts between two results files of the same suite on the same device.

For every graph (model, variant, folded or not) the change is ``median(new) / median(base)`` with a 95%
bootstrap interval from the raw samples of both files. Verdict, for a threshold t (default 5%):

- ``slower`` when the whole interval lies above ``1 + t`` (significantly slower by more than the threshold);
- ``faster`` when the whole interval lies below ``1 - t``;
- ``same`` otherwise (within the threshold, or not distinguishable from noise).

Exit status of ``harness compare``: 0 when nothing is slower, 1 when something is, 2 on bad input.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Tuple

from harness.errors import HarnessError
from harness.results import load_results
from harness.timing import bootstrap_ratio_ci

Key = Tuple[str, str, bool]


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` -> 0.05; the threshold must lie in [0, 1)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not match:
        raise HarnessError(f"invalid threshold {text!r}: write it like 5% or 0.05")
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0 <= value < 1:
        raise HarnessError(f"threshold {text!r} must be between 0% and 100%")
    return value


@dataclasses.dataclass
class Change:
    """One graph's change between the two files."""

    model: str
    variant: str
    folded: bool
    base_ms: float
    new_ms: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str


def _runs(results: Dict[str, Any]) -> Dict[Key, Dict[str, Any]]:
    return {(r["model"], r["variant"], bool(r["folded"])): r for r in results["runs"]}


def _check_comparable(base: Dict[str, Any], new: Dict[str, Any]) -> None:
    devices = (base["device"]["profile"]["name"], new["device"]["profile"]["name"])
    if devices[0] != devices[1]:
        raise HarnessError(f"the files come from different devices: base {devices[0]!r}, new {devices[1]!r}")
    base_runs, new_runs = _runs(base), _runs(new)
    if set(base_runs) != set(new_runs):
        only_base = sorted("/".join(map(str, k[:2])) + ("/folded" if k[2] else "") for k in set(base_runs) - set(
            new_runs))
        only_new = sorted("/".join(map(str, k[:2])) + ("/folded" if k[2] else "") for k in set(new_runs) - set(
            base_runs))
        raise HarnessError(f"the files hold different models: only in base {only_base or '-'}, "
                           f"only in new {only_new or '-'}")
    for key, run in base_runs.items():
        other = new_runs[key]
        for field in ("input_shape", "batch", "precision"):
            if run.get(field) != other.get(field):
                raise HarnessError(f"{key[0]}/{key[1]}: {field} differs (base {run.get(field)}, "
                                   f"new {other.get(field)})")
        if run["backend"].get("backend") != other["backend"].get("backend"):
            raise HarnessError(f"{key[0]}/{key[1]}: backend differs ({run['backend'].get('backend')} vs "
                               f"{other['backend'].get('backend')})")


def compare_results(base: Dict[str, Any], new: Dict[str, Any], threshold: float) -> List[Change]:
    """Changes of every graph, in the base file's order; raises HarnessError when not comparable."""
    _check_comparable(base, new)
    new_runs = _runs(new)
    changes = []
    for key, run in _runs(base).items():
        base_samples = run["series_ms"]["latency_ms"]
        new_samples = new_runs[key]["series_ms"]["latency_ms"]
        ratio, low, high = bootstrap_ratio_ci(new_samples, base_samples,
                                              numerator_blocks=new_runs[key].get("block_ends"),
                                              denominator_blocks=run.get("block_ends"))
        verdict = "slower" if low > 1 + threshold else "faster" if high < 1 - threshold else "same"
        changes.append(Change(key[0], key[1], key[2], run["stats"]["median"], new_runs[key]["stats"]["median"],
                              ratio, low, high, verdict))
    return changes


def to_markdown(changes: List[Change], threshold: float, device: str) -> str:
    """A table for a pull-request comment."""
    slower = [c for c in changes if c.verdict == "slower"]
    head = (f"**Latency regression** on `{device}`: {len(slower)} of {len(changes)} graphs slower than "
            f"{threshold:.0%}" if slower else f"No latency regression on `{device}` (threshold {threshold:.0%})")
    lines = [head, "", "| model | variant | graph | base ms | new ms | change [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in changes:
        mark = {"slower": "🔴 slower", "faster": "🟢 faster", "same": "same"}[c.verdict]
        lines.append(f"| {c.model} | {c.variant} | {'folded' if c.folded else 'as exported'} | {c.base_ms:.3f} | "
                     f"{c.new_ms:.3f} | {c.ratio - 1:+.1%} [{c.ci_low - 1:+.1%}, {c.ci_high - 1:+.1%}] | {mark} |")
    return "\n".join(lines) + "\n"


def compare_files(base_path, new_path, threshold: float) -> Tuple[List[Change], str]:
    """Load, compare and render two results files."""
    base, new = load_results(base_path), load_results(new_path)
    changes = compare_results(base, new, threshold)
    return changes, to_markdown(changes, threshold, base["device"]["profile"]["name"])
