"""Fold the layers that compression left linear: exact graph surgery with onnx-graphsurgeon, verified.

Passes, applied until nothing changes: BatchNorm into Conv/Gemm/MatMul+Add; identity-like nodes removed; zero Pads
moved into Conv pads; exact Conv chains merged (all, none, or the cost model's choice); residual and parallel
branches folded into one Conv; Gemm chains merged. ``verify_fold`` checks the result numerically in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Tuple

import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from harness.errors import HarnessError
from harness.fold.chains import blocked_edges, merge_conv_chains, merge_gemm_chains
from harness.fold.cost import ConvGeometry, CostModel, FlopCountModel, RooflineCostModel, TableCostModel
from harness.fold.report import FoldReport
from harness.fold.residual import fold_residuals
from harness.fold.simplify import fold_batchnorm, fold_zero_pads, remove_identities
from harness.fold.verify import VerifyResult, verify_fold
from harness.graph_stats import count_flops, op_histogram

__all__ = ["fold_model", "verify_fold", "FoldResult", "FoldReport", "VerifyResult", "CostModel",
           "RooflineCostModel", "TableCostModel", "ConvGeometry", "MERGE_MODES"]

MERGE_MODES = ("auto", "all", "none")
MIN_OPSET = 11
CHANGES = ("folded", "merged", "removed")


@dataclasses.dataclass
class FoldResult:
    """The folded model (checked, shape-inferred) and the report of what was done."""

    model: onnx.ModelProto
    report: FoldReport
    spans: Dict[str, Tuple[int, int]]  # each Conv left in the folded graph -> (first, last) original conv index


def _check_input(model: onnx.ModelProto, merge: str) -> None:
    if merge not in MERGE_MODES:
        raise HarnessError(f"--merge must be one of {', '.join(MERGE_MODES)}, not {merge!r}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise HarnessError(f"the model uses opset {opset}; folding needs opset {MIN_OPSET} or newer "
                           f"(convert it with onnx.version_converter.convert_version)")
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise HarnessError(f"input {value.name!r} has a dynamic shape {shape}: folding needs static shapes "
                               f"(export with a fixed batch and image size)")


def _shapes_known(model: onnx.ModelProto) -> bool:
    """Whether every node output already has a recorded shape (shape inference can be skipped: it is slow on
    large models, since it serialises all their weights)."""
    known = {v.name for v in list(model.graph.value_info) + list(model.graph.output) if v.type.tensor_type.HasField(
        "shape")}
    return all(out in known for node in model.graph.node for out in node.output if out)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    if _shapes_known(model):
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise HarnessError(f"shape inference failed, cannot fold: {str(exc).splitlines()[0]}") from None


def _fold_constants(graph: gs.Graph, model: onnx.ModelProto) -> Tuple[gs.Graph, List[Dict[str, Any]]]:
    """Evaluate constant subgraphs (an exporter's computed Pad amounts, Constant-node weights), then infer the shapes
    they hid; a no-op, and cheap, on graphs that hold none."""
    before = len(graph.nodes)
    severity = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR
    try:
        graph.fold_constants(fold_shapes=False, error_ok=True).cleanup()  # shapes: keep a batch-agnostic graph
    finally:
        G_LOGGER.severity = severity
    removed = before - len(graph.nodes)
    if removed <= 0:
        return graph, []
    exported = _with_header(gs.export_onnx(graph), model)
    del exported.graph.value_info[:]
    graph = gs.import_onnx(_infer(exported))
    return graph, [{"pass": "fold_constants", "action": "folded", "nodes": [],
                    "detail": f"{removed} nodes of constant subgraphs evaluated into constants"}]


def _with_header(folded: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    folded.ir_version = model.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return folded


def _run_passes(graph: gs.Graph, merge: str, cost: CostModel, spans: Dict[str, Tuple[int, int]]) -> List[Dict]:
    records: List[Dict[str, Any]] = []
    seen = set()
    for _ in range(20):  # each round can expose new chains (a folded residual next to a linear conv)
        found = fold_batchnorm(graph) + remove_identities(graph) + fold_zero_pads(graph)
        if merge != "none":
            found += merge_conv_chains(graph, merge, cost, spans)
            found += fold_residuals(graph)
            found += merge_gemm_chains(graph, merge)
        graph.cleanup().toposort()
        for record in found:  # decisions are re-made each round: keep each one once
            key = (record["pass"], record["action"], tuple(record["nodes"]), record.get("detail"))
            if record["action"] in CHANGES or key not in seen:
                seen.add(key)
                records.append(record)
        if not any(r["action"] in CHANGES for r in found):
            break
    if merge != "none":
        records += blocked_edges(graph)
    return records


def fold_model(model: onnx.ModelProto, merge: str = "auto", cost_model: Optional[CostModel] = None) -> FoldResult:
    """Fold a static-shape model; the input model is not modified. ``auto`` needs the device's ``cost_model``
    (``harness.calibrate.cost_model_for``); ``all`` and ``none`` decide nothing by cost."""
    started = time.perf_counter()
    _check_input(model, merge)
    if cost_model is None and merge == "auto":
        raise HarnessError("--merge auto needs a device's cost model (a calibration, a latency table or a roofline)")
    model = _infer(model)
    cost = cost_model or FlopCountModel()
    graph, records = _fold_constants(gs.import_onnx(model), model)
    for i, node in enumerate(graph.nodes):
        node.name = node.name or f"{node.op}_{i}"
    convs = [n for n in graph.nodes if n.op == "Conv"]
    spans = {n.name: (i, i) for i, n in enumerate(convs)}
    records += _run_passes(graph, merge, cost, spans)
    folded = _infer(_with_header(gs.export_onnx(graph), model))
    onnx.checker.check_model(folded)
    report = FoldReport(merge, cost.name, records, op_histogram(model), op_histogram(folded), count_flops(model),
                        count_flops(folded), time.perf_counter() - started)
    remaining = {n.name: spans[n.name] for n in folded.graph.node if n.op_type == "Conv" and n.name in spans}
    return FoldResult(folded, report, remaining)
