"""Regression verdicts between two results files of the same suite on the same device.

For every graph (model, variant, folded or not) the change is ``median(new) / median(base)`` with a
95% bootstrap interval from the raw samples of both files. Verdict, for a threshold t (default 5%):

- ``slower`` when the whole interval lies above ``1 + t`` (significantly slower by more than t);
- ``faster`` when the whole interval lies below ``1 - t``;
- ``same`` otherwise (within the threshold, or not distinguishable from noise).

The threshold is a percentage: ``5`` and ``5%`` both mean 5%. A bare number below 1 (``0.05``) is
refused as ambiguous (0.05% or 5%?); write ``0.05%`` or ``5%``.

Exit status of ``harness compare``: 0 when nothing is slower, 1 when something is, 2 on any input or
output problem. Warnings (a run that did not complete, backend settings or library versions that
differ between the two runs) are printed loudly, put into the Markdown, and become GitHub warning
annotations; they do not change the exit status.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Tuple
from xml.etree import ElementTree

from harness.errors import HarnessError
from harness.results import Results, read_results
from harness.timing import bootstrap_ratio_ci

Key = Tuple[str, str, bool]
# environment entries whose change makes two runs' latencies incomparable in earnest
ENVIRONMENT_FIELDS = (
    ("cpu", "model"),
    ("gpu", "name"),
    ("libraries", "onnxruntime"),
    ("libraries", "tensorrt"),
    ("libraries", "pycuda"),
    ("libraries", "torch"),
)


def parse_threshold(text: str) -> float:
    """A slowdown threshold in percent, as a fraction: ``5`` or ``5%`` -> 0.05.

    A bare number below 1 is refused as ambiguous; so is anything outside [0%, 100%).
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if not match:
        raise HarnessError(f"invalid --threshold {text!r}: give a percentage, e.g. 5%")
    value = float(match.group(1))
    if not match.group(2) and 0 < value < 1:
        raise HarnessError(
            f"--threshold {text!r} is ambiguous: the threshold is a percentage, "
            f"write {value:g}% or {value * 100:g}%"
        )
    if not 0 <= value < 100:
        raise HarnessError(f"--threshold {text!r} must be at least 0% and below 100%")
    return value / 100.0


def verdict(low: float, high: float, threshold: float) -> str:
    """``slower`` when the whole interval of a latency change (new / base) lies above 1 +
    ``threshold``, ``faster`` when it lies below 1 - ``threshold``, else ``same``."""
    return "slower" if low > 1 + threshold else "faster" if high < 1 - threshold else "same"


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

    @property
    def label(self) -> str:
        """``model/variant`` (``/folded`` for a folded graph)."""
        return f"{self.model}/{self.variant}{'/folded' if self.folded else ''}"

    def describe(self, rule: str) -> str:
        """One line: the change with its interval, the rule it was judged by, the verdict."""
        return (
            f"{self.label}: {self.ratio - 1:+.1%} [{self.ci_low - 1:+.1%}, "
            f"{self.ci_high - 1:+.1%}] ({self.base_ms:.3f} -> {self.new_ms:.3f} ms), "
            f"{rule}: {self.verdict}"
        )


@dataclasses.dataclass
class Comparison:
    """Every graph's change, the warnings a reader must see, and the device."""

    changes: List[Change]
    warnings: List[str]
    device: str
    threshold: float
    rule: str = ""  # how the verdicts were reached, when not by the threshold

    @property
    def rule_text(self) -> str:
        """``threshold 5.0%``, or the rule given."""
        return self.rule or f"threshold {self.threshold:.1%}"

    @property
    def slower(self) -> List[Change]:
        """The graphs that regressed."""
        return [c for c in self.changes if c.verdict == "slower"]


def _runs(results: Results) -> Dict[Key, Any]:
    return {(r.model, r.variant, r.folded): r for r in results.runs}


def _label(key: Key) -> str:
    return f"{key[0]}/{key[1]}" + ("/folded" if key[2] else "")


def _check_comparable(base: Results, new: Results) -> None:
    if base.device_name != new.device_name:
        raise HarnessError(
            f"the files come from different devices: base {base.device_name!r}, "
            f"new {new.device_name!r}"
        )
    base_runs, new_runs = _runs(base), _runs(new)
    if set(base_runs) != set(new_runs):
        only_base = sorted(_label(k) for k in set(base_runs) - set(new_runs))
        only_new = sorted(_label(k) for k in set(new_runs) - set(base_runs))
        raise HarnessError(
            f"the files hold different models: only in base {only_base or '-'}, "
            f"only in new {only_new or '-'}"
        )
    for key, run in base_runs.items():
        other = new_runs[key]
        for field in ("input_shape", "batch", "precision"):
            if getattr(run, field) != getattr(other, field):
                raise HarnessError(
                    f"{_label(key)}: {field} differs (base {getattr(run, field)}, "
                    f"new {getattr(other, field)})"
                )
        if run.backend.get("backend") != other.backend.get("backend"):
            raise HarnessError(
                f"{_label(key)}: backend differs ({run.backend.get('backend')} vs "
                f"{other.backend.get('backend')})"
            )


def _differences(base: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = sorted(set(base) | set(new))
    return [f"{k} {base.get(k)!r} -> {new.get(k)!r}" for k in keys if base.get(k) != new.get(k)]


def _nested(data: Optional[Dict[str, Any]], path: Tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def comparison_warnings(base: Results, new: Results) -> List[str]:
    """What makes the verdicts less trustworthy: a partial run, or different settings/versions."""
    warnings = []
    for role, results in (("base", base), ("new", new)):
        if results.complete is False:
            warnings.append(
                f"{role} {results.source or results.device_name} did not complete "
                f"(complete: false): its numbers are partial"
            )
    settings = set()
    new_runs = _runs(new)
    for key, run in _runs(base).items():
        changed = _differences(run.backend, new_runs[key].backend)
        if changed:
            settings.add("; ".join(changed))
    for line in sorted(settings):
        warnings.append(f"backend settings differ between base and new: {line}")
    env = [
        f"{'.'.join(path)} {_nested(base.environment_before, path)!r} -> "
        f"{_nested(new.environment_before, path)!r}"
        for path in ENVIRONMENT_FIELDS
        if _nested(base.environment_before, path) != _nested(new.environment_before, path)
    ]
    if env:
        warnings.append("the environment differs between base and new: " + "; ".join(env))
    return warnings


def compare_results(base: Results, new: Results, threshold: float) -> Comparison:
    """Changes of every graph, in the base file's order; raises HarnessError when not comparable."""
    _check_comparable(base, new)
    new_runs = _runs(new)
    changes = []
    for key, run in _runs(base).items():
        other = new_runs[key]
        ratio, low, high = bootstrap_ratio_ci(
            other.series_ms["latency_ms"],
            run.series_ms["latency_ms"],
            numerator_blocks=other.block_ends,
            denominator_blocks=run.block_ends,
        )
        found = verdict(low, high, threshold)
        changes.append(
            Change(
                key[0],
                key[1],
                key[2],
                run.stats.median,
                other.stats.median,
                ratio,
                low,
                high,
                found,
            )
        )
    return Comparison(changes, comparison_warnings(base, new), base.device_name, threshold)


def to_markdown(comparison: Comparison) -> str:
    """A table for a pull-request comment or a job summary, warnings first."""
    slower, device = comparison.slower, comparison.device
    head = (
        f"**Latency regression** on `{device}`: {len(slower)} of {len(comparison.changes)} "
        f"graphs slower ({comparison.rule_text})"
        if slower
        else f"No latency regression on `{device}` ({comparison.rule_text})"
    )
    lines = [head, ""]
    lines += [f"> **warning:** {w}" for w in comparison.warnings]
    if comparison.warnings:
        lines.append("")
    lines += [
        "| model | variant | graph | base ms | new ms | change [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparison.changes:
        mark = {"slower": "🔴 slower", "faster": "🟢 faster", "same": "same"}[c.verdict]
        lines.append(
            f"| {c.model} | {c.variant} | {'folded' if c.folded else 'as exported'} | "
            f"{c.base_ms:.3f} | {c.new_ms:.3f} | {c.ratio - 1:+.1%} "
            f"[{c.ci_low - 1:+.1%}, {c.ci_high - 1:+.1%}] | {mark} |"
        )
    return "\n".join(lines) + "\n"


def to_junit(comparison: Comparison, name: str = "harness compare") -> str:
    """JUnit XML: one test case per graph, a failure for each regression (any CI shows which)."""
    suite = ElementTree.Element(
        "testsuite",
        name=f"{name} {comparison.device}",
        tests=str(len(comparison.changes)),
        failures=str(len(comparison.slower)),
        errors="0",
        skipped="0",
    )
    for change in comparison.changes:
        case = ElementTree.SubElement(
            suite, "testcase", classname=f"latency.{comparison.device}", name=change.label, time="0"
        )
        if change.verdict == "slower":
            failure = ElementTree.SubElement(
                case,
                "failure",
                type="LatencyRegression",
                message=change.describe(comparison.rule_text),
            )
            failure.text = change.describe(comparison.rule_text)
        else:
            ElementTree.SubElement(case, "system-out").text = change.describe(comparison.rule_text)
    if comparison.warnings:
        ElementTree.SubElement(suite, "system-err").text = "\n".join(comparison.warnings)
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(comparison: Comparison, file: str) -> str:
    """GitHub Actions workflow commands: an error per regression, a warning per warning."""
    lines = []
    for change in comparison.slower:
        title = _escape_property(f"latency regression on {comparison.device}: {change.label}")
        lines.append(
            f"::error file={_escape_property(file)},title={title}::"
            f"{_escape_data(change.describe(comparison.rule_text))}"
        )
    for warning in comparison.warnings:
        lines.append(
            f"::warning file={_escape_property(file)},title=harness compare::"
            f"{_escape_data(warning)}"
        )
    return "".join(line + "\n" for line in lines)


def compare_files(base_path, new_path, threshold: float) -> Comparison:
    """Read, validate and compare two results files."""
    return compare_results(read_results(base_path), read_results(new_path), threshold)
