"""Why a network is (not) faster on a device: measured layers, merges, and a deployability lint.

``explain`` joins a measured per-layer profile (``harness.layer_profile``) with the graph and the
fold records: each merge's original convs measured against the merged conv, and findings, each
naming the layer, the rule, the rule's source and the measured time it explains: channel counts
tensor cores pad, layers TensorRT ran off the DLA or in another precision than asked, grouped convs
the device runs no faster than dense ones, kernels that merging grew, layers dominated by launch
overhead, and opsets the profile's TensorRT parser does not read.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import onnx
import onnx_graphsurgeon as gs

from harness.backends.trt import parser_ops
from harness.cost.model import CalibratedCostModel, CostModel
from harness.errors import HarnessError
from harness.fold import fold_model
from harness.fold.graph import conv_view
from harness.fold.report import FoldAction, FoldRecord
from harness.fold.skeleton import infer_shapes_quick
from harness.geometry import ConvGeometry
from harness.layer_profile import NOTE, LayerProfile
from harness.measure import measure_graphs
from harness.onnx_io import load_model, save_model
from harness.profiles import Profile
from harness.report.formats import markdown_table
from harness.results import Run

# channel multiples tensor cores need, per precision
ALIGNMENT = {"fp16": 8, "int8": 32}
ALIGNMENT_SOURCE = (
    "NVIDIA Deep Learning Performance Guide, 'Optimizing for Tensor Cores' (channels C and K "
    "multiples of 8 in FP16, of 16 in INT8 at least, 32 preferred); TREx lint.py alignment_lint"
)
# newest ONNX opset each TensorRT version's parser reads (shared/FACTS.md, "ONNX parser")
PARSER_OPSET = {"8.5": 17, "8.6": 17, "10.0": 20, "10.1": 20, "10.15": 24, "11": 25}
PARSER_SOURCE = "TensorRT ONNX parser support matrix per release (shared/FACTS.md: ONNX parser)"
# the fold passes that turn several convs into one (merge_times lists their rewrites)
COMBINING_PASSES = ("merge_conv_chains", "fold_residuals")
OVERHEAD_FACTOR = 2.0  # a layer under twice the per-layer overhead is mostly overhead


@dataclasses.dataclass
class Finding:
    """One lint finding: where, which rule, its source, what was seen, the measured time it
    explains (ms; None where nothing was measured)."""

    layer: str
    rule: str
    source: str
    detail: str
    measured_ms: Optional[float] = None
    nodes: List[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """The finding as ``harness explain --json`` writes it."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MergeTime:
    """One merge of the fold: the original convs' measured time against the merged conv's, and the
    cost model's prediction of both (us; None where the record has none)."""

    nodes: List[str]
    result: str
    measured_before_ms: float
    measured_after_ms: float
    predicted_before_us: Optional[float]
    predicted_after_us: Optional[float]

    def to_dict(self) -> Dict[str, Any]:
        """The merge as ``harness explain --json`` writes it."""
        return dataclasses.asdict(self)


def conv_geometries(model: onnx.ModelProto) -> Dict[str, ConvGeometry]:
    """Each Conv node with static shapes -> its geometry."""
    graph = gs.import_onnx(infer_shapes_quick(model))
    found = {}
    for node in graph.nodes:
        view = conv_view(node) if node.op == "Conv" else None
        if view is not None and view.geometry is not None:
            found[node.name] = view.geometry
    return found


def _rewrites(records: List[FoldRecord]) -> List[FoldRecord]:
    """The records that replaced nodes by one result node (merges, and folds: BatchNorm into its
    conv, a residual's branches and Add into one conv)."""
    kinds = (FoldAction.MERGED, FoldAction.FOLDED)
    return [r for r in records if r.action in kinds and r.result]


def original_nodes(records: List[FoldRecord]) -> Dict[str, List[str]]:
    """Each node a merge or fold produced -> the original graph's nodes it stands for (rewrites
    of rewrites followed back to the first graph)."""
    origin: Dict[str, List[str]] = {}
    for record in _rewrites(records):
        covered: List[str] = []
        for node in record.nodes:
            covered += [n for n in origin.get(node, [node]) if n not in covered]
        origin[record.result or ""] = covered
    return origin


def merge_times(
    records: List[FoldRecord], before: LayerProfile, after: LayerProfile
) -> List[MergeTime]:
    """Per conv merge or residual fold: the original nodes' measured time (``before``: the graph
    as given) against the resulting conv's (``after``: the folded graph); one a later merge or
    fold absorbed is left out (the later one stands for it)."""
    origin = original_nodes(records)
    combining = [r for r in _rewrites(records) if r.pass_name in COMBINING_PASSES]
    times = []
    for index, record in enumerate(combining):
        result = record.result or ""
        if any(result in later.nodes for later in combining[index + 1 :]):
            continue
        times.append(
            MergeTime(
                origin[result],
                result,
                before.time_of(origin[result]),
                after.time_of([result]),
                record.cost_before_us,
                record.cost_after_us,
            )
        )
    return times


def _layer_of(profile: LayerProfile) -> Dict[str, Tuple[str, float]]:
    """ONNX node -> (the measured layer covering it, that layer's ms)."""
    return {n: (layer.name, layer.time_ms) for layer in profile.layers for n in layer.nodes}


def alignment_findings(
    geometries: Dict[str, ConvGeometry], profile: Profile, precision: str, measured: Dict
) -> List[Finding]:
    """Convs whose channel counts are not the multiple tensor cores need (GPU profiles with
    tensor cores, FP16/INT8): the GPU pads them, or picks a slower kernel."""
    multiple = ALIGNMENT.get(precision)
    capability = float(profile.expect.compute_capability or 7.0)  # tensor cores from Volta, 7.0
    tensor_cores = profile.kind in ("gpu", "jetson") and capability >= 7.0
    if multiple is None or not tensor_cores:
        return []
    found = []
    for name, g in geometries.items():
        if g.depthwise:
            continue
        per_group_in, out = g.in_channels // g.groups, g.out_channels
        bad = [f"{label} {c}" for label, c in (("in", per_group_in), ("out", out)) if c % multiple]
        if bad and per_group_in > 4:  # a first layer of 3 input channels has its own kernels
            layer, ms = measured.get(name, (name, None))
            found.append(
                Finding(
                    layer,
                    f"channels-not-multiple-of-{multiple}",
                    ALIGNMENT_SOURCE,
                    f"{name}: channels {', '.join(bad)} not multiples of {multiple} "
                    f"({precision.upper()} tensor cores)",
                    ms,
                    [name],
                )
            )
    return found


def trt_placement_findings(layers: LayerProfile, profile: Profile, precision: str) -> List[Finding]:
    """From TensorRT's layer information: layers on the GPU when the profile builds for a DLA
    (GPU fallback), and compute layers whose output is in another precision than asked."""
    found = []
    dla = profile.tensorrt.dla_core is not None
    asked = {"fp16": "FP16", "int8": "Int8", "fp32": "FP32"}[precision]
    for layer in layers.layers:
        if layer.kind in ("Reformat", "NoOp", "DLA transfer", "Shuffle", "Constant"):
            continue
        if dla and layer.device == "GPU":
            found.append(
                Finding(
                    layer.name,
                    "gpu-fallback",
                    "TensorRT layer information (--exportLayerInfo): not a DLA ForeignNode",
                    f"{layer.kind} ran on the GPU although the profile builds for DLA core "
                    f"{profile.tensorrt.dla_core} (the DLA cannot run it: GPU fallback, plus "
                    "transfers between the two)",
                    layer.time_ms,
                    layer.nodes,
                )
            )
        if precision != "fp32" and layer.precision and layer.precision != asked:
            found.append(
                Finding(
                    layer.name,
                    "other-precision",
                    "TensorRT layer information: the output tensor's Format/Datatype",
                    f"{layer.kind} runs in {layer.precision}, {asked} was asked",
                    layer.time_ms,
                    layer.nodes,
                )
            )
    return found


def grouped_findings(
    geometries: Dict[str, ConvGeometry], cost: Optional[CostModel], measured: Dict
) -> List[Finding]:
    """Depthwise or grouped convs the device's calibrated cost model prices no cheaper than the
    same conv dense (a calibration only: a roofline always favours fewer FLOPs)."""
    if not isinstance(cost, CalibratedCostModel):
        return []
    found = []
    for name, g in geometries.items():
        if g.groups == 1:
            continue
        dense = dataclasses.replace(g, groups=1)
        grouped_s, dense_s = cost.conv_cost(g), cost.conv_cost(dense)
        if dense_s <= grouped_s:
            layer, ms = measured.get(name, (name, None))
            found.append(
                Finding(
                    layer,
                    "grouped-slower-than-dense",
                    f"{cost.name}: fitted per-class rates",
                    f"{name}: {g.groups} groups priced {grouped_s * 1e6:.1f} us, dense "
                    f"{dense_s * 1e6:.1f} us: this device runs the dense conv no slower",
                    ms,
                    [name],
                )
            )
    return found


def kernel_growth_findings(
    records: List[FoldRecord],
    before: Dict[str, ConvGeometry],
    after: Dict[str, ConvGeometry],
    measured: Dict,
) -> List[Finding]:
    """Merges whose conv has more taps than any conv it replaced (a 3x3 then 3x3 becomes 5x5)."""
    found = []
    origin = original_nodes(records)
    for record in records:
        merged = after.get(record.result or "")
        if record.action is not FoldAction.MERGED or merged is None:
            continue
        parts = [before[n] for n in origin.get(record.result or "", []) if n in before]
        if parts and merged.taps > max(p.taps for p in parts):
            layer, ms = measured.get(record.result or "", (record.result or "", None))
            shown = ", ".join(f"{p.taps[0]}x{p.taps[1]}" for p in parts)
            found.append(
                Finding(
                    layer,
                    "kernel-grown-by-merge",
                    "harness fold record (merge_conv_chains)",
                    f"{record.result}: merging {shown} made a {merged.taps[0]}x{merged.taps[1]} "
                    "kernel",
                    ms,
                    origin.get(record.result or "", []),
                )
            )
    return found


def overhead_findings(layers: LayerProfile, overhead_s: float, source: str) -> List[Finding]:
    """Layers measured under ``OVERHEAD_FACTOR`` times the per-layer overhead: launch-bound."""
    limit_ms = OVERHEAD_FACTOR * overhead_s * 1e3
    return [
        Finding(
            layer.name,
            "launch-overhead",
            source,
            f"{layer.kind} takes {layer.time_ms * 1e3:.1f} us, under {OVERHEAD_FACTOR:g}x the "
            f"per-layer overhead ({overhead_s * 1e6:.1f} us): merging or removing it saves the "
            "overhead, not compute",
            layer.time_ms,
            layer.nodes,
        )
        for layer in layers.layers
        if 0 < layer.time_ms < limit_ms and layer.nodes
    ]


def _release(version: str, releases: Iterable[str]) -> Optional[str]:
    """The newest of ``releases`` ("8.5", "10.1", "11") at or below ``version`` ("8.5.2", "10.3")
    within its major version; None when there is none."""

    def number(text: str) -> Tuple[int, int]:
        parts = [int(p) for p in re.findall(r"\d+", text)[:2]]
        return (parts + [0, 0])[0], (parts + [0, 0])[1]

    wanted = number(version)
    fitting = [r for r in releases if number(r)[0] == wanted[0] and number(r) <= wanted]
    return max(fitting, key=number, default=None)


def parser_findings(model: onnx.ModelProto, profile: Profile) -> List[Finding]:
    """What the profile's TensorRT ONNX parser does not read (TensorRT profiles only): an opset
    newer than it reads, and operators its release's support matrix marks unsupported or does
    not list (one finding per operator, with its nodes)."""
    version = profile.expect.tensorrt
    if profile.backend not in ("tensorrt", "trtexec") or not version:
        return []
    found = []
    newest = PARSER_OPSET.get(_release(version, PARSER_OPSET) or "")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if newest is not None and opset > newest:
        found.append(
            Finding(
                "(graph)",
                "opset-beyond-parser",
                PARSER_SOURCE,
                f"opset {opset}: TensorRT {version}'s parser reads up to opset {newest} (export "
                f"at opset {newest} or lower)",
            )
        )
    matrix = _release(version, parser_ops.LISTED)
    if matrix is None:
        return found
    nodes: Dict[str, List[str]] = {}
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx"):
            nodes.setdefault(node.op_type, []).append(node.name or node.output[0])
    for op, names in sorted(nodes.items()):
        if op in parser_ops.UNSUPPORTED[matrix]:
            rule, why = "op-unsupported-by-parser", "marks it unsupported (N)"
        elif op not in parser_ops.LISTED[matrix]:
            rule, why = "op-not-in-parser-matrix", "does not list it (newer than the matrix)"
        else:
            continue
        found.append(
            Finding(
                names[0],
                rule,
                parser_ops.SOURCE[matrix],
                f"{op} ({len(names)} nodes): TensorRT {matrix}'s ONNX parser support matrix "
                f"{why}; the build fails or needs a plugin"
                + (f" (the profile's TensorRT is {version})" if version != matrix else ""),
                None,
                names,
            )
        )
    return found


def overhead_of(profile: Profile, cost: Optional[CostModel]) -> Tuple[float, str]:
    """The per-layer overhead (s) and its source: the calibration's smallest fitted fixed cost,
    else the profile's ``peaks.layer_overhead_us``."""
    if isinstance(cost, CalibratedCostModel) and any(cost.fixed_s.values()):
        return min(v for v in cost.fixed_s.values() if v), f"{cost.name}: fitted fixed cost"
    return profile.peaks.layer_overhead_us * 1e-6, f"profile {profile.name}: layer_overhead_us"


def lint(
    model: onnx.ModelProto,
    layers: LayerProfile,
    profile: Profile,
    precision: str,
    cost: Optional[CostModel] = None,
    records: Optional[List[FoldRecord]] = None,
    original: Optional[onnx.ModelProto] = None,
) -> List[Finding]:
    """Every finding on ``model`` (the graph that runs, folded or not) with its measured
    ``layers``; ``records`` and ``original``: the fold that made it, for the merge rules."""
    geometries = conv_geometries(model)
    measured = _layer_of(layers)
    overhead, source = overhead_of(profile, cost)
    found = alignment_findings(geometries, profile, precision, measured)
    if layers.backend == "tensorrt":
        found += trt_placement_findings(layers, profile, precision)
    found += grouped_findings(geometries, cost, measured)
    if records and original is not None:
        found += kernel_growth_findings(records, conv_geometries(original), geometries, measured)
    found += overhead_findings(layers, overhead, source)
    found += parser_findings(model, profile)
    return found


def layers_with_origin(profile: LayerProfile, origin: Dict[str, List[str]]) -> Dict[str, Any]:
    """A profile as results and ``explain --json`` store it: each layer with the original graph's
    nodes it stands for (``origin``: a merged node -> the nodes it replaced)."""
    stored = profile.to_dict()
    for layer in stored["layers"]:
        layer["original_nodes"] = [o for n in layer.get("nodes", []) for o in origin.get(n, [n])]
    return stored


def record_on_run(
    run: Run,
    layers: LayerProfile,
    model: onnx.ModelProto,
    profile: Profile,
    cost: Optional[CostModel] = None,
    records: Optional[List[FoldRecord]] = None,
    original: Optional[onnx.ModelProto] = None,
) -> None:
    """Store a timed run's measured layers (tied to the original graph through ``records``) and
    the lint's findings on ``model`` in the run, as results files keep them."""
    found = lint(model, layers, profile, run.precision, cost, records, original)
    run.layers = layers_with_origin(layers, original_nodes(records or []))
    run.findings = [f.to_dict() for f in found]


@dataclasses.dataclass
class Explanation:
    """What ``harness explain`` found for one model on one device."""

    layers: LayerProfile  # the graph that runs (folded when a fold changed it)
    findings: List[Finding]
    merges: List[MergeTime] = dataclasses.field(default_factory=list)
    origin: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    before: Optional[LayerProfile] = None  # the graph as given, when the fold changed it
    end_to_end_ms: Optional[float] = None  # median of the timed runs (profiled runs interleaved)
    fold: Optional[Dict[str, Any]] = None  # the fold report

    def original_nodes_of(self, nodes: List[str]) -> List[str]:
        """The original graph's nodes behind nodes of the graph that runs."""
        return [o for n in nodes for o in self.origin.get(n, [n])]

    def to_dict(self) -> Dict[str, Any]:
        """The explanation as ``harness explain --json`` writes it."""
        return {
            "layers": layers_with_origin(self.layers, self.origin),
            "end_to_end_ms": self.end_to_end_ms,
            "before_fold": self.before.to_dict() if self.before else None,
            "merges": [m.to_dict() for m in self.merges],
            "findings": [f.to_dict() for f in self.findings],
            "fold": self.fold,
        }


def explain_model(
    onnx_path: Any,
    profile: Profile,
    precision: str,
    batch: int,
    workdir: Any,
    merge: str = "none",
    cost: Optional[CostModel] = None,
) -> Explanation:
    """Fold a model with ``merge`` (unless ``none``), time it (and the graph as given, when the
    fold changed it) under the profile's protocol with a profiling runner of each interleaved in
    the same rounds (``measure_graphs(layers=True)``), and lint it."""
    original = load_model(onnx_path)
    model, path, records, report = original, Path(onnx_path), [], None
    if merge != "none":
        result = fold_model(original, merge=merge, cost_model=cost)
        if result.report.changed:
            model, records = result.model, result.report.records
            if not model.graph.node:
                raise HarnessError(
                    f"{onnx_path}: folded, no node is left (the graph computes a constant): "
                    "nothing to profile (--merge none profiles the graph as given)"
                )
            path = save_model(model, Path(workdir) / "folded.onnx")
        report = result.report.to_dict()
    graphs = {"folded": path, "original": Path(onnx_path)} if records else {"model": path}
    timed = measure_graphs(graphs, profile, precision, batch, layers=True)
    name = next(iter(graphs))
    layers, before = timed.layers[name], timed.layers.get("original")
    return Explanation(
        layers,
        lint(model, layers, profile, precision, cost, records, original if records else None),
        merge_times(records, before, layers) if before else [],
        original_nodes(records),
        before,
        timed.stats(name).median,
        report,
    )


def sum_lines(explanation: Explanation) -> List[str]:
    """What the measured layers add up to, against the profiled and the timed runs; then, where
    the profiler's cost was taken off the layers, how much and what its raw spans summed to."""
    layers, timed = explanation.layers, explanation.end_to_end_ms
    line = f"sum of measured layers {layers.total_ms:.3f} ms"
    if layers.run_ms:
        line += f"; the profiled runs' own median {layers.run_ms:.3f} ms"
    if timed:
        beside = ", interleaved with the profiled ones" if layers.note == NOTE else ""
        line += (
            f"; timed end to end {timed:.3f} ms (median of the timed runs{beside}): the layers "
            f"sum to {layers.total_ms / timed:.0%} of it"
        )
        if layers.overhead is not None:
            line += f" (raw spans: {layers.profiled_total_ms / timed:.0%})"
        if layers.run_ms:
            line += f"; the profiled runs took {layers.run_ms / timed - 1:+.0%} against the timed"
    loose = [layer.name for layer in layers.unmapped()]
    if loose:
        shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
        line += f"; tied to no ONNX node: {shown}"
    if layers.overhead is None:
        return [line]
    raw = f"; the profiler's raw spans sum to {layers.profiled_total_ms:.3f} ms"
    return [line, layers.overhead.describe() + raw]


def to_markdown(explanation: Explanation, top: int = 15) -> str:
    """The explanation as Markdown: the top layers by measured time (with their original nodes),
    the merges measured before and after, the findings."""
    layers = explanation.layers
    total = layers.total_ms or 1.0
    rows = [
        [
            layer.name,
            layer.kind,
            f"{layer.time_ms:.4f}",
            f"{layer.time_ms / total:.1%}",
            ", ".join(explanation.original_nodes_of(layer.nodes)) or "-",
        ]
        for layer in sorted(layers.layers, key=lambda x: -x.time_ms)[:top]
    ]
    lines = [f"Per-layer profile: {layers.source}, {layers.runs} runs ({layers.note}).", ""]
    lines += markdown_table(["layer", "kind", "ms", "share", "original nodes"], rows)
    lines += ["", *(line[:1].upper() + line[1:] + "." for line in sum_lines(explanation))]
    if explanation.merges:
        merges = [
            [
                m.result,
                ", ".join(m.nodes),
                f"{m.measured_before_ms:.4f}",
                f"{m.measured_after_ms:.4f}",
            ]
            for m in explanation.merges
        ]
        head = ["merged conv", "original convs", "before ms", "after ms"]
        lines += ["", *markdown_table(head, merges)]
    findings = [
        [
            f.layer,
            f.rule,
            f"{f.measured_ms:.4f}" if f.measured_ms is not None else "-",
            f.detail,
            f.source,
        ]
        for f in explanation.findings
    ]
    head = ["layer", "rule", "measured ms", "detail", "source"]
    lines += ["", *(markdown_table(head, findings) if findings else ["No findings."])]
    return "\n".join(lines) + "\n"


def to_csv(explanation: Explanation) -> str:
    """One row per measured layer and one per finding (``record`` says which)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "record",
            "layer",
            "kind_or_rule",
            "ms",
            "profiled_ms",
            "device",
            "precision",
            "nodes",
            "original_nodes",
            "detail",
        ]
    )
    for layer in explanation.layers.layers:
        writer.writerow(
            [
                "layer",
                layer.name,
                layer.kind,
                f"{layer.time_ms:.6f}",
                "" if layer.profiled_ms is None else f"{layer.profiled_ms:.6f}",
                layer.device,
                layer.precision,
                " ".join(layer.nodes),
                " ".join(explanation.original_nodes_of(layer.nodes)),
                "",
            ]
        )
    for f in explanation.findings:
        ms = "" if f.measured_ms is None else f"{f.measured_ms:.6f}"
        row = ["finding", f.layer, f.rule, ms, "", "", "", " ".join(f.nodes), "", f.detail]
        writer.writerow(row)
    return out.getvalue()
