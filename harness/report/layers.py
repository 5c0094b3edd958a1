"""Measured per-layer profiles and lint findings from results files: why a graph is (not) faster.

``harness bench --layers`` records in each run the layers its backend's own profiler measured
(``harness.layer_profile``, each tied to the original graph's nodes) and the lint findings
(``harness.explain``). They are rendered here, with nothing profiled (the report machine is not
the device): the top layers of each graph by measured time, per-layer speed-ups (a folded graph's
layers against the unfolded layers standing for the same original nodes, a merge being one layer
against several; a variant's layers against the baseline's holding nodes of the same names) and
the findings, as Markdown and CSV.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.errors import finite_number
from harness.report.formats import csv_text, markdown_table
from harness.results import Results, Run

TOP = 10  # layers per graph in the top-layers tables
LAYER_FILES = ("layers.md", "layers.csv", "findings.csv")
Devices = Sequence[Tuple[str, Results]]  # (device column label, its results)
COMPARED = {"fold": "folded vs unfolded", "vs_baseline": "vs baseline"}
NOTE = (
    "Per-layer times are each backend's own profiler's, from profiled runs apart from the timed "
    "runs and interleaved with them (a profiler perturbs what it measures): they say where the "
    "time goes and which layers got faster; end-to-end latencies and speed-ups, with their "
    "intervals, are the timed runs'."
)
TOP_HEAD = ["layer", "kind", "ms", "share", "original nodes"]
SPEEDUP_HEAD = [
    "graph",
    "compared",
    "layer",
    "measured against",
    "layers",
    "before ms",
    "after ms",
    "speed-up",
]
FINDING_HEAD = ["graph", "layer", "rule", "measured ms", "detail", "source"]
LAYER_CSV_FIELDS = [
    "device",
    "run",
    "model",
    "variant",
    "folded",
    "backend",
    "rank",
    "layer",
    "kind",
    "time_ms",
    "profiled_ms",
    "share",
    "nodes",
    "original_nodes",
    "precision",
    "placement",
    "tactic",
]
FINDING_CSV_FIELDS = [
    "device",
    "run",
    "model",
    "variant",
    "folded",
    "layer",
    "rule",
    "measured_ms",
    "detail",
    "source",
    "nodes",
]


@dataclasses.dataclass
class LayerSpeedup:
    """Layers of one graph against the layers of another standing for the same original nodes:
    a fold's merge (one folded layer against the unfolded ones), a variant's layer against the
    baseline's."""

    device: str
    model: str
    variant: str
    comparison: str  # "fold" (folded vs unfolded) or "vs_baseline"
    layers: List[str]  # of the subject: the folded graph, the variant
    reference: List[str]  # of the graph measured against: the unfolded graph, the baseline
    before_ms: float  # the reference layers' summed time
    after_ms: float  # the subject layers' summed time
    place: int = 0  # of the subject's first layer in its graph (after them all: no subject layer)

    @property
    def speedup(self) -> Optional[float]:
        """Before over after; None for a layer alone (no layer of the other graph stands for
        its nodes) or where the subject's layers measured no time."""
        matched = self.layers and self.reference and self.after_ms > 0
        return self.before_ms / self.after_ms if matched else None

    @property
    def merged(self) -> bool:
        """Fewer layers after than before (a merge)."""
        return 0 < len(self.layers) < len(self.reference)

    @property
    def label(self) -> str:
        """``model/variant folded vs unfolded`` or ``model/variant vs baseline``."""
        return f"{self.model}/{self.variant} {COMPARED[self.comparison]}"


def _strings(value: Any) -> List[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def measured_layers(run: Run) -> List[Dict[str, Any]]:
    """The run's measured layers in the order recorded; none where it was not profiled."""
    recorded = (run.layers or {}).get("layers")
    return [
        layer
        for layer in (recorded if isinstance(recorded, list) else [])
        if isinstance(layer, dict)
        and isinstance(layer.get("name"), str)
        and isinstance(layer.get("time_ms"), (int, float))
    ]


def run_findings(run: Run) -> List[Dict[str, Any]]:
    """The run's lint findings; none where it was not linted."""
    return [f for f in run.findings or [] if isinstance(f, dict)]


def original_nodes(layer: Dict[str, Any]) -> List[str]:
    """The original (unfolded) graph's nodes a layer stands for: its ``original_nodes``, else its
    own nodes (a graph no fold changed)."""
    return _strings(layer.get("original_nodes")) or _strings(layer.get("nodes"))


def profiled(devices: Devices) -> bool:
    """Whether any run carries measured layers or findings."""
    return any(measured_layers(r) or run_findings(r) for _, res in devices for r in res.runs)


def matched_layers(
    reference: List[Dict[str, Any]], subject: List[Dict[str, Any]]
) -> List[Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]]:
    """Groups of (reference layers, subject layers) tied by the original nodes they share, each
    layer in one group, in the subject's order; a layer sharing no node is a group alone (the
    reference's last)."""
    owner: Dict[str, int] = {}
    for index, layer in enumerate(reference):
        for node in original_nodes(layer):
            owner.setdefault(node, index)
    parent = list(range(len(subject)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    claimed: Dict[int, int] = {}  # reference layer -> the first subject layer sharing its nodes
    for j, layer in enumerate(subject):
        for i in sorted({owner[n] for n in original_nodes(layer) if n in owner}):
            if i in claimed:
                parent[root(j)] = root(claimed[i])
            else:
                claimed[i] = j
    refs: Dict[int, List[Dict[str, Any]]] = {}
    for i in sorted(claimed):
        refs.setdefault(root(claimed[i]), []).append(reference[i])
    groups: Dict[int, Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]] = {}
    for j, layer in enumerate(subject):
        key = root(j) if root(j) in refs else -1 - j  # a subject layer alone: a key of its own
        groups.setdefault(key, (refs.get(key, []), []))[1].append(layer)
    alone = [([reference[i]], []) for i in range(len(reference)) if i not in claimed]
    return list(groups.values()) + alone


def _computing(run: Run) -> List[Dict[str, Any]]:
    """A run's measured layers that stand for nodes of the graph (layout reorders and reformats
    at its edges, tied to none, are in its top layers but match nothing)."""
    return [layer for layer in measured_layers(run) if original_nodes(layer)]


def _compared(
    device: str, comparison: str, reference: Run, subject: Run, variant: str
) -> List[LayerSpeedup]:
    after_layers = _computing(subject)
    place = {id(layer): k for k, layer in enumerate(after_layers)}
    return [
        LayerSpeedup(
            device,
            subject.model,
            variant,
            comparison,
            [layer["name"] for layer in after],
            [layer["name"] for layer in before],
            sum(layer["time_ms"] for layer in before),
            sum(layer["time_ms"] for layer in after),
            place[id(after[0])] if after else len(place),
        )
        for before, after in matched_layers(_computing(reference), after_layers)
    ]


def layer_speedups(device: str, results: Results) -> List[LayerSpeedup]:
    """Per unfolded run: its folded graph's layers against its own, then (a variant) its
    deployable graph's layers against the baseline's deployable graph's."""
    runs = results.run_by_id()
    baselines = {r.model: r for r in results.runs if r.variant == "baseline" and not r.folded}
    found: List[LayerSpeedup] = []
    for run in results.runs:
        if run.folded:
            continue
        folded = runs.get(run.folded_run or "")
        if folded is not None:
            found += _compared(device, "fold", run, folded, run.variant)
        baseline = baselines.get(run.model)
        if baseline is not None and run.variant != "baseline":
            deployed = results.deployed(baseline), results.deployed(run)
            found += _compared(device, "vs_baseline", *deployed, run.variant)
    return found


def charted(speedups: Sequence[LayerSpeedup]) -> List[LayerSpeedup]:
    """What the per-layer speed-up chart draws: the fold's merges and the variants' layers
    matched to the baseline's, each with a speed-up."""
    return [
        s for s in speedups if s.speedup is not None and (s.comparison == "vs_baseline" or s.merged)
    ]


def _ms(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) or "-"


def graph_caption(run: Run) -> str:
    """What a graph's profile is: layers, their sum, the profiler, the runs' own medians."""
    layers = measured_layers(run)
    profile = run.layers or {}
    parts = [f"{len(layers)} layers, {sum(la['time_ms'] for la in layers):.3f} ms summed"]
    overhead = profile.get("overhead")
    if isinstance(overhead, dict) and finite_number(overhead.get("per_layer_ms")):
        parts[0] += (
            f" after the profiler's own cost ({overhead['per_layer_ms'] * 1e3:.1f} us per conv, "
            f"measured) was taken off each conv layer"
        )
    parts.append(str(profile.get("source") or profile.get("backend") or "profiler"))
    if isinstance(profile.get("runs"), int):
        parts.append(f"{profile['runs']} runs")
    medians = [
        f"{what} {profile[key]:.3f} ms"
        for key, what in (("run_ms", "profiled runs"), ("timed_ms", "timed runs"))
        if finite_number(profile.get(key))
    ]
    if medians:
        parts.append(f"median per inference: {', '.join(medians)}")
    return "; ".join(parts)


def top_layer_rows(run: Run, top: int = TOP) -> List[List[str]]:
    """The ``top`` slowest measured layers of a run as ``TOP_HEAD`` cells."""
    layers = measured_layers(run)
    total = sum(layer["time_ms"] for layer in layers) or 1.0
    return [
        [
            layer["name"],
            str(layer.get("kind", "")),
            _ms(layer["time_ms"]),
            f"{layer['time_ms'] / total:.1%}",
            _names(original_nodes(layer)),
        ]
        for layer in sorted(layers, key=lambda la: -la["time_ms"])[:top]
    ]


def speedup_rows(speedups: Sequence[LayerSpeedup]) -> List[List[str]]:
    """Per-layer speed-ups as ``SPEEDUP_HEAD`` cells."""
    return [
        [
            f"{s.model}/{s.variant}",
            COMPARED[s.comparison],
            _names(s.layers),
            _names(s.reference),
            f"{len(s.reference)} -> {len(s.layers)}",
            _ms(s.before_ms) if s.reference else "-",
            _ms(s.after_ms) if s.layers else "-",
            "-" if s.speedup is None else f"{s.speedup:.2f}x",
        ]
        for s in speedups
    ]


def finding_rows(results: Results) -> List[List[str]]:
    """Every run's findings as ``FINDING_HEAD`` cells."""
    return [
        [
            run.label,
            str(f.get("layer", "")),
            str(f.get("rule", "")),
            _ms(f.get("measured_ms")),
            str(f.get("detail", "")),
            str(f.get("source", "")),
        ]
        for run in results.runs
        for f in run_findings(run)
    ]


def _sums(speedups: Sequence[LayerSpeedup]) -> str:
    """``58 layers, 1.932 ms -> 31 layers, 2.110 ms (0.92x)``: the layers' counts and times."""
    before = sum(len(s.reference) for s in speedups), sum(s.before_ms for s in speedups)
    after = sum(len(s.layers) for s in speedups), sum(s.after_ms for s in speedups)
    text = f"{before[0]} layers, {before[1]:.3f} ms -> {after[0]} layers, {after[1]:.3f} ms"
    return text + (f" ({before[1] / after[1]:.2f}x)" if after[1] > 0 else "")


def _total_lines(speedups: Sequence[LayerSpeedup]) -> List[str]:
    """Per comparison: all layers, then those matched (each side standing for nodes the other's
    layers hold too)."""
    lines = []
    for label in dict.fromkeys(s.label for s in speedups):
        rows = [s for s in speedups if s.label == label]
        matched = [s for s in rows if s.layers and s.reference]
        lines.append(f"{label}: all {_sums(rows)}; matched {_sums(matched)}")
    return lines


def layers_markdown(devices: Devices, top: int = TOP) -> str:
    """layers.md: per device, the top layers of each profiled graph, the per-layer speed-ups and
    the findings."""
    lines = ["# Why (measured per layer)", "", NOTE, ""]
    for device, results in devices:
        runs = [run for run in results.runs if measured_layers(run)]
        findings = finding_rows(results)
        if not runs and not findings:
            continue
        lines += [f"## {device}", "", f"### Top {top} layers by measured time", ""]
        for run in runs:
            lines += [f"#### {run.label}", "", f"{graph_caption(run)}.", ""]
            lines += markdown_table(TOP_HEAD, top_layer_rows(run, top)) + [""]
        speedups = layer_speedups(device, results)
        if speedups:
            lines += [
                "### Per-layer speed-ups",
                "",
                "Each layer against the layers of the other graph that stand for the same "
                "original nodes (a merge: one layer after, several before); speed-up = before / "
                "after ms.",
                "",
                *markdown_table(SPEEDUP_HEAD, speedup_rows(speedups)),
                "",
                *[f"- {line}" for line in _total_lines(speedups)],
                "",
            ]
        lines += ["### Lint findings", ""]
        if findings:
            lines += markdown_table(FINDING_HEAD, findings) + [""]
        else:
            lines += ["No findings on the profiled graphs.", ""]
    return "\n".join(lines)


def layers_summary(devices: Devices, chart: bool) -> List[str]:
    """report.md's short section: what was profiled, the speed-ups summed, the findings by rule,
    and where the details are."""
    runs = sum(1 for _, res in devices for run in res.runs if measured_layers(run))
    files = "[layers.md](layers.md), layers.csv, findings.csv" + (
        ", layer_speedup.png" if chart else ""
    )
    lines = [
        "",
        "## Why (measured per layer)",
        "",
        f"{runs} graph(s) profiled per layer (profiled runs apart from the timed ones); details "
        f"in {files}.",
        "",
    ]
    for device, results in devices:
        prefix = f"{device}, " if len(devices) > 1 else ""
        lines += [f"- {prefix}{line}" for line in _total_lines(layer_speedups(device, results))]
        rules = Counter(str(f.get("rule")) for run in results.runs for f in run_findings(run))
        if rules:
            counted = ", ".join(f"{rule} x{n}" for rule, n in sorted(rules.items()))
            lines.append(f"- {prefix}findings: {counted}")
    return lines


def layer_records(devices: Devices) -> List[Dict[str, Any]]:
    """layers.csv: one record per measured layer per run, raw numbers."""
    records = []
    for device, results in devices:
        for run in results.runs:
            layers = measured_layers(run)
            total = sum(layer["time_ms"] for layer in layers)
            ranks = {
                id(la): k for k, la in enumerate(sorted(layers, key=lambda la: -la["time_ms"]))
            }
            for layer in layers:
                records.append(
                    {
                        "device": device,
                        "run": run.id,
                        "model": run.model,
                        "variant": run.variant,
                        "folded": run.folded,
                        "backend": (run.layers or {}).get("backend", ""),
                        "rank": ranks[id(layer)] + 1,
                        "layer": layer["name"],
                        "kind": layer.get("kind", ""),
                        "time_ms": layer["time_ms"],
                        "profiled_ms": layer.get("profiled_ms"),  # before the profiler's cost
                        "share": layer["time_ms"] / total if total else None,
                        "nodes": " ".join(_strings(layer.get("nodes"))),
                        "original_nodes": " ".join(original_nodes(layer)),
                        "precision": layer.get("precision", ""),
                        "placement": layer.get("device", ""),
                        "tactic": layer.get("tactic", ""),
                    }
                )
    return records


def finding_records(devices: Devices) -> List[Dict[str, Any]]:
    """findings.csv: one record per finding per run."""
    return [
        {
            "device": device,
            "run": run.id,
            "model": run.model,
            "variant": run.variant,
            "folded": run.folded,
            "layer": f.get("layer", ""),
            "rule": f.get("rule", ""),
            "measured_ms": f.get("measured_ms"),
            "detail": f.get("detail", ""),
            "source": f.get("source", ""),
            "nodes": " ".join(_strings(f.get("nodes"))),
        }
        for device, results in devices
        for run in results.runs
        for f in run_findings(run)
    ]


def layer_files(devices: Devices, top: int = TOP) -> Dict[str, str]:
    """``LAYER_FILES`` by name: layers.md, layers.csv and findings.csv."""
    return {
        "layers.md": layers_markdown(devices, top),
        "layers.csv": csv_text(LAYER_CSV_FIELDS, layer_records(devices)),
        "findings.csv": csv_text(FINDING_CSV_FIELDS, finding_records(devices)),
    }
