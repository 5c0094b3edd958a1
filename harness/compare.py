"""Regression verdicts between two results files of the same suite on the same device.

For every graph (model, variant, folded or not) the change is ``median(new) / median(base)`` with a
95% bootstrap interval from the raw samples of both files. Verdict, for a threshold t (default 5%):

- ``slower`` when the whole interval lies above ``1 + t`` (significantly slower by more than t);
- ``faster`` when the whole interval lies below ``1 - t``;
- ``same`` when the whole interval lies within ``1 - t`` .. ``1 + t``;
- ``inconclusive`` when the interval reaches across ``1 + t`` or ``1 - t`` (the change may or may
  not exceed the threshold: measure longer).

The threshold is a percentage: ``5`` and ``5%`` both mean 5%. A bare number below 1 (``0.05``) is
refused as ambiguous (0.05% or 5%?); write ``0.05%`` or ``5%``.

Exit status of ``harness compare``: 0 when nothing is slower, 1 when something is, 2 on any input or
output problem. Warnings (a run that did not complete, a machine that was loaded when a file was
captured, a graph whose ONNX file or FLOPs changed between the two runs, backend settings or
library versions that differ between the two runs) are printed loudly, put into the Markdown, and
become GitHub warning annotations; they do not change the exit status.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, List, Optional, Tuple
from xml.etree import ElementTree

from harness.envinfo import machine_load
from harness.errors import HarnessError, shown
from harness.estimators import bootstrap_ratio_ci
from harness.report.formats import markdown_table
from harness.results import Results, read_results

Key = Tuple[str, str, bool]
SLOWER, FASTER, SAME, INCONCLUSIVE = "slower", "faster", "same", "inconclusive"
# the verdicts --against-history adds: a change within the series' scatter, a run not judged
WITHIN_SCATTER, NOT_JUDGED = "within scatter", "not judged"
MARKS = {SLOWER: "🔴 slower", FASTER: "🟢 faster", INCONCLUSIVE: "⚪ inconclusive"}
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
    note: str = ""  # what was tested, where the verdict needs it
    unit: str = "ms"  # of base_ms and new_ms: "mJ" when the metric is energy per inference

    @property
    def label(self) -> str:
        """``model/variant`` (``/folded`` for a folded graph)."""
        return f"{self.model}/{self.variant}{'/folded' if self.folded else ''}"

    def describe(self, rule: str) -> str:
        """One line: the change with its interval, the rule it was judged by, the verdict."""
        return (
            f"{self.label}: {self.ratio - 1:+.1%} [{self.ci_low - 1:+.1%}, "
            f"{self.ci_high - 1:+.1%}] ({self.base_ms:.3f} -> {self.new_ms:.3f} {self.unit}), "
            f"{rule}: {self.verdict}" + (f" ({self.note})" if self.note else "")
        )


@dataclasses.dataclass
class Comparison:
    """Every graph's change, the warnings a reader must see, and the device."""

    changes: List[Change]
    warnings: List[str]
    device: str
    threshold: float
    rule: str = ""  # how the verdicts were reached, when not by the threshold
    metric: str = "latency"  # or "energy" (per inference)

    @property
    def rule_text(self) -> str:
        """``threshold 5.0%``, or the rule given."""
        return self.rule or f"threshold {self.threshold:.1%}"

    @property
    def slower(self) -> List[Change]:
        """The graphs that regressed."""
        return [c for c in self.changes if c.verdict == SLOWER]


def _runs(results: Results) -> Dict[Key, Any]:
    return {(r.model, r.variant, r.folded): r for r in results.runs}


def _label(key: Key) -> str:
    return f"{key[0]}/{key[1]}" + ("/folded" if key[2] else "")


def _check_comparable(base: Results, new: Results) -> None:
    if base.device_name != new.device_name:
        raise HarnessError(
            f"the files come from different devices: base {shown(base.device_name)}, "
            f"new {shown(new.device_name)}"
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
                    f"{_label(key)}: {field} differs (base {shown(getattr(run, field))}, "
                    f"new {shown(getattr(other, field))})"
                )
        if run.backend.get("backend") != other.backend.get("backend"):
            raise HarnessError(
                f"{_label(key)}: backend differs ({shown(run.backend.get('backend'))} vs "
                f"{shown(other.backend.get('backend'))})"
            )


def _differences(base: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = sorted(set(base) | set(new))
    return [
        f"{k} {shown(base.get(k))} -> {shown(new.get(k))}"
        for k in keys
        if base.get(k) != new.get(k)
    ]


def _nested(data: Optional[Dict[str, Any]], path: Tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def load_warning(role: str, results: Results) -> Optional[str]:
    """A warning when a file's machine was loaded at capture (load average >= cores)."""
    load = machine_load(results.environment_before)
    if load is None:
        return None
    return (
        f"{role} {results.source or results.device_name} was measured on a loaded machine "
        f"({load} at capture): other work shared the cores, its latencies read high; "
        "rerun on an idle machine before trusting a change"
    )


def graph_changes(hashes: Tuple[Any, Any], flops: Tuple[Any, Any]) -> List[str]:
    """What differs between two graphs' ONNX sha256 and FLOPs (each pair: before, after; a value
    not recorded is no difference)."""
    changed = []
    if all(isinstance(h, str) and h for h in hashes) and hashes[0] != hashes[1]:
        changed.append(f"ONNX sha256 {hashes[0][:12]} -> {hashes[1][:12]}")
    if all(flops) and flops[0] != flops[1]:
        changed.append(f"FLOPs {flops[0] / 1e6:.2f}M -> {flops[1] / 1e6:.2f}M")
    return changed


def graph_warnings(base: Results, new: Results) -> List[str]:
    """Graphs whose timed ONNX file (sha256, when recorded) or FLOPs differ between the files: a
    change of latency there is the model's, not the machine's or the runtime's."""
    warnings = []
    new_runs = _runs(new)
    for key, run in _runs(base).items():
        other = new_runs.get(key)
        if other is None:
            continue
        hashes = run.to_dict().get("onnx_sha256"), other.to_dict().get("onnx_sha256")
        changed = graph_changes(hashes, (run.flops, other.flops))
        if changed:
            warnings.append(
                f"{_label(key)}: the graph changed between base and new ({'; '.join(changed)}): "
                "its change of latency is the model's"
            )
    return warnings


def comparison_warnings(base: Results, new: Results) -> List[str]:
    """What makes the verdicts less trustworthy: a partial run, a loaded machine, a changed
    graph, or different settings/versions."""
    warnings = []
    for role, results in (("base", base), ("new", new)):
        if results.complete is False:
            warnings.append(
                f"{role} {results.source or results.device_name} did not complete "
                f"(complete: false): its numbers are partial"
            )
        load = load_warning(role, results)
        if load:
            warnings.append(load)
    warnings += graph_warnings(base, new)
    settings = set()
    new_runs = _runs(new)
    for key, run in _runs(base).items():
        changed = _differences(run.backend, new_runs[key].backend)
        if changed:
            settings.add("; ".join(changed))
    for line in sorted(settings):
        warnings.append(f"backend settings differ between base and new: {line}")
    env = [
        f"{'.'.join(path)} {shown(_nested(base.environment_before, path))} -> "
        f"{shown(_nested(new.environment_before, path))}"
        for path in ENVIRONMENT_FIELDS
        if _nested(base.environment_before, path) != _nested(new.environment_before, path)
    ]
    if env:
        warnings.append("the environment differs between base and new: " + "; ".join(env))
    return warnings


def _energy_change(key: Key, run: Any, other: Any) -> Tuple[float, float, Tuple[float, ...]]:
    """Base and new median mJ per inference and their ratio with its bootstrap interval over
    timing blocks; refused where either file did not measure energy."""
    for role, entry in (("base", run), ("new", other)):
        if entry.energy is None:
            raise HarnessError(f"{_label(key)}: energy was not measured in {role}")
    ratio = bootstrap_ratio_ci(other.energy.per_block_mj, run.energy.per_block_mj)
    return run.energy.median_mj, other.energy.median_mj, ratio


def compare_results(
    base: Results, new: Results, threshold: float, metric: str = "latency"
) -> Comparison:
    """Changes of every graph in ``metric`` (latency, or energy per inference), in the base
    file's order; raises HarnessError when not comparable."""
    _check_comparable(base, new)
    new_runs = _runs(new)
    changes = []
    for key, run in _runs(base).items():
        other = new_runs[key]
        if metric == "energy":
            base_value, new_value, (ratio, low, high) = _energy_change(key, run, other)
        else:
            base_value, new_value = run.stats.median, other.stats.median
            ratio, low, high = bootstrap_ratio_ci(
                other.series_ms["latency_ms"],
                run.series_ms["latency_ms"],
                numerator_blocks=other.block_ends,
                denominator_blocks=run.block_ends,
            )
        verdict, note = threshold_verdict(low, high, threshold)
        unit = "mJ" if metric == "energy" else "ms"
        changes.append(Change(*key, base_value, new_value, ratio, low, high, verdict, note, unit))
    warnings = comparison_warnings(base, new)
    return Comparison(changes, warnings, base.device_name, threshold, metric=metric)


CHANGE_NOTE = (
    "Change: new median / base median - 1 (the medians printed, divided), with a 95% bootstrap "
    "interval over each run's timing blocks (two runs, so not paired)."
)


def threshold_verdict(low: float, high: float, threshold: float) -> Tuple[str, str]:
    """The verdict on a ratio's interval against ``1 ± threshold``, and why when it is none."""
    if low > 1 + threshold:
        return SLOWER, ""
    if high < 1 - threshold:
        return FASTER, ""
    if low >= 1 - threshold and high <= 1 + threshold:
        return SAME, ""
    edge = f"+{threshold:.1%}" if high > 1 + threshold else f"-{threshold:.1%}"
    return INCONCLUSIVE, f"the interval reaches across {edge}: measure longer to tell"


def _history_change(point: Any, past: List[Any]) -> Change:
    """One graph's run judged against the runs of its series before it."""
    from harness.history import judge_new

    judged = judge_new(past, point)
    level = judged.level_ms
    numbers = (level, point.median_ms, point.median_ms / level)
    interval = (point.ci_low_ms / level, point.ci_high_ms / level)
    step = judged.step
    if step is not None:
        verdict = SLOWER if step.kind == "regression" else FASTER
    elif interval[0] <= 1 <= interval[1]:
        verdict = SAME
    else:
        verdict = WITHIN_SCATTER
    return Change(
        point.model, point.variant, point.folded, *numbers, *interval, verdict, judged.note
    )


def against_history(new: Results, stored: Dict[Tuple[Any, ...], List[Any]]) -> Comparison:
    """The new file's graphs judged against their series (same device, graph, precision, batch
    and environment) in the history (``stored``: ``history.series_of`` of the device's points);
    only the runs made before the new file count."""
    from harness.history import points_of

    changes, warnings = [], []
    if new.complete is False:
        warnings.append(f"{new.source} did not complete (complete: false): its numbers are partial")
    load = load_warning("new", new)
    if load:
        warnings.append(load)
    for point, _ in points_of(new, "new"):
        past = [p for p in stored.get(point.series, []) if p.created < point.created]  # before
        if len(past) < 2:
            warnings.append(
                f"{point.label}: {len(past)} earlier run(s) of this graph in this "
                "environment in the history: not judged"
            )
            continue
        last = past[-1]
        changed = graph_changes((last.graph, point.graph), (last.flops, point.flops))
        if changed:
            warnings.append(
                f"{point.label}: the graph changed since the history's last run "
                f"({last.git_commit[:12]}: {'; '.join(changed)}): its change is the model's"
            )
        change = _history_change(point, past)
        if point.loaded and not all(p.loaded for p in past):  # busy, unlike its history
            note = f"measured on a busy machine ({point.loaded}): rerun on an idle one"
            change = dataclasses.replace(change, verdict=NOT_JUDGED, note=note)
        changes.append(change)
    return Comparison(
        changes,
        warnings,
        new.device_name,
        0.0,
        "a significant step against the history (no threshold)",
    )


def to_markdown(comparison: Comparison) -> str:
    """A table for a pull-request comment or a job summary, warnings first."""
    slower, device = comparison.slower, comparison.device
    metric, unit = comparison.metric, "mJ" if comparison.metric == "energy" else "ms"
    title = (
        f"**{metric.capitalize()} regression** on `{device}`: {len(slower)} of "
        f"{len(comparison.changes)} graphs {'costlier' if metric == 'energy' else 'slower'} "
        f"({comparison.rule_text})"
        if slower
        else f"No {metric} regression on `{device}` ({comparison.rule_text})"
    )
    lines = [title, ""]
    lines += [f"> **warning:** {w}" for w in comparison.warnings]
    if comparison.warnings:
        lines.append("")
    head = ["model", "variant", "graph", f"base {unit}", f"new {unit}", "change [95% CI]"]
    head.append("verdict")
    rows = [
        [
            c.model,
            c.variant,
            "folded" if c.folded else "as exported",
            f"{c.base_ms:.3f}",
            f"{c.new_ms:.3f}",
            f"{c.ratio - 1:+.1%} [{c.ci_low - 1:+.1%}, {c.ci_high - 1:+.1%}]",
            MARKS.get(c.verdict, c.verdict) + (f": {c.note}" if c.note else ""),
        ]
        for c in comparison.changes
    ]
    lines += markdown_table(head, rows)
    lines += ["", CHANGE_NOTE]
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
        if change.verdict == SLOWER:
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


def compare_files(base_path, new_path, threshold: float, metric: str = "latency") -> Comparison:
    """Read, validate and compare two results files."""
    return compare_results(read_results(base_path), read_results(new_path), threshold, metric)
