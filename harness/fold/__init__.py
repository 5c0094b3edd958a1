"""Fold the layers that compression left linear: exact graph surgery with onnx-graphsurgeon,
verified.

Passes, applied until nothing changes: BatchNorm into Conv/Gemm/MatMul+Add; identity-like nodes
removed; zero Pads moved into Conv pads; exact Conv chains merged (all, none, or the cost model's
choice); residual and parallel branches folded into one Conv; Gemm chains merged. ``verify_fold``
checks the result numerically in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx_graphsurgeon.logger import G_LOGGER

from harness.cost.model import (
    ConvGeometry,
    CostModel,
    FlopCountModel,
    RooflineCostModel,
    TableCostModel,
)
from harness.errors import FoldVerificationError, HarnessError, first_line
from harness.fold.chains import blocked_edges, merge_conv_chains, merge_gemm_chains
from harness.fold.report import FoldAction, FoldRecord, FoldReport
from harness.fold.residual import fold_residuals
from harness.fold.simplify import (
    explicit_pads,
    fold_batchnorm,
    fold_zero_pads,
    remove_identities,
)
from harness.fold.skeleton import checker_problem_quick, infer_shapes_quick
from harness.fold.verify import VerifyResult, verify_fold
from harness.graph_stats import flop_count, op_histogram
from harness.onnx_io import (
    MIN_OPSET,
    InputShapes,
    bind_shapes,
    checker_problem,
    graph_inputs,
    lowest_ir_version,
    upgraded_opset,
)

# a sample shape without the batch (``--input-shape``), or shapes per input too (``--shapes``)
ShapeArg = Union[None, Sequence[int], InputShapes]

__all__ = [
    "fold_model",
    "verify_fold",
    "bind_shapes",
    "FoldResult",
    "FoldReport",
    "FoldRecord",
    "FoldAction",
    "VerifyResult",
    "CostModel",
    "RooflineCostModel",
    "TableCostModel",
    "ConvGeometry",
    "MERGE_MODES",
]

# graphsurgeon prints its warnings (and, without the optional ``colored`` package, one about that)
# straight to the terminal; harness reports what matters about a graph itself
G_LOGGER.colors = False
G_LOGGER.severity = G_LOGGER.ERROR

MERGE_MODES = ("auto", "all", "none")
FOLD_CONSTANT_BYTES = 64 << 20  # larger computed constants stay computed (memory, file size)
SHAPE_INDEPENDENT = (
    "BatchNorm folding, identity removal, zero-Pad folding and Gemm chains run; conv chains and "
    "residual branches need static shapes"
)


@dataclasses.dataclass
class FoldResult:
    """The folded model (or the input model itself when nothing was folded) and the report of
    what was done."""

    model: onnx.ModelProto
    report: FoldReport
    spans: Dict[
        str, Tuple[int, int]
    ]  # each Conv left in the folded graph -> (first, last) original conv index
    # the input as the passes read it (opset converted, dims bound, shapes inferred): what the fold
    # is verified against; the input model itself where it could not be prepared
    reference: Optional[onnx.ModelProto] = None


def _note(action: FoldAction, detail: str) -> FoldRecord:
    """A record of the preparation (opset conversion, bound dimensions, limits, warnings)."""
    return FoldRecord("prepare", action, [], detail)


def _shown(value: onnx.ValueInfoProto) -> str:
    return "x".join(map(str, input_dims(value)))


def input_dims(value: onnx.ValueInfoProto) -> List[Any]:
    """A tensor's dims: fixed sizes as ints, dynamic ones as their name or '?'."""
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def dynamic_inputs(model: onnx.ModelProto) -> Dict[str, List[Any]]:
    """Inputs with a dimension that is not a fixed positive size -> their dims (names or '?'
    where dynamic)."""
    found = {}
    for value in graph_inputs(model):
        if not value.type.HasField("tensor_type"):
            continue
        dims = input_dims(value)
        if not value.type.tensor_type.HasField("shape") or any(isinstance(d, str) for d in dims):
            found[value.name] = (
                dims if value.type.tensor_type.HasField("shape") else ["unknown rank"]
            )
    return found


def _prepare(
    model: onnx.ModelProto, input_shape: ShapeArg, batch: Optional[int]
) -> Tuple[Optional[onnx.ModelProto], List[FoldRecord]]:
    """The model as the passes need it (opset >= 11, dynamic dims bound where asked, shapes
    inferred) and the notes saying what was done; None when it cannot be prepared (the notes say
    why)."""
    notes = []
    converted, done = upgraded_opset(model)
    if converted is None:
        return None, [_note(FoldAction.REFUSED, f"{done}: model left unchanged")]
    if done:
        notes.append(
            _note(
                FoldAction.CONVERTED,
                f"{done} (folding rewrites opset {MIN_OPSET}+ graphs; the model is written at "
                f"opset {MIN_OPSET}, which the runtimes load, even where nothing folds)",
            )
        )
        model = converted
    model, bound = bind_shapes(model, input_shape, batch)
    if bound:
        notes.append(_note(FoldAction.BOUND, "dynamic dimensions bound: " + ", ".join(bound)))
    dynamic = dynamic_inputs(model)
    if dynamic:
        shown = "; ".join(f"{name} {dims}" for name, dims in dynamic.items())
        notes.append(
            _note(
                FoldAction.LIMITED,
                f"dynamic input shapes ({shown}): {SHAPE_INDEPENDENT} "
                f"(give --input-shape / --batch to bind them)",
            )
        )
    return _infer(model), notes


def _shapes_known(model: onnx.ModelProto) -> bool:
    """Whether every node output already has a recorded shape (shape inference can be skipped: it
    is slow on large models, since it serialises all their weights)."""
    known = {
        v.name
        for v in list(model.graph.value_info) + list(model.graph.output)
        if v.type.tensor_type.HasField("shape")
    }
    return all(out in known for node in model.graph.node for out in node.output if out)


def _infer(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """The model with inferred shapes (on its skeleton: the weights are not serialised)."""
    return model if _shapes_known(model) else infer_shapes_quick(model, in_place)


def _fold_constants(graph: gs.Graph, model: onnx.ModelProto) -> Tuple[gs.Graph, List[FoldRecord]]:
    """Evaluate constant subgraphs (an exporter's computed Pad amounts, Constant-node weights),
    then infer the shapes they hid; a no-op, and cheap, on graphs that hold none."""
    before = len(graph.nodes)
    severity = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR
    ort.set_default_logger_severity(
        3
    )  # graphsurgeon evaluates constants with ONNX Runtime: errors only
    try:
        graph.fold_constants(
            fold_shapes=False, error_ok=True, size_threshold=FOLD_CONSTANT_BYTES
        ).cleanup()  # shapes: keep a batch-agnostic graph
    finally:
        G_LOGGER.severity = severity
    removed = before - len(graph.nodes)
    if removed <= 0:
        return graph, []
    exported = _with_header(gs.export_onnx(graph), model)
    del exported.graph.value_info[:]
    graph = gs.import_onnx(_infer(exported, in_place=True))
    return graph, [
        FoldRecord(
            "fold_constants",
            FoldAction.FOLDED,
            [],
            f"{removed} nodes of constant subgraphs evaluated into constants",
        )
    ]


def _with_header(folded: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    folded.ir_version = max(model.ir_version, lowest_ir_version(model))
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    return folded


def _run_passes(
    graph: gs.Graph, merge: str, cost: CostModel, spans: Dict[str, Tuple[int, int]]
) -> List[FoldRecord]:
    records: List[FoldRecord] = []
    seen = set()
    for _ in range(
        20
    ):  # each round can expose new chains (a folded residual next to a linear conv)
        found = explicit_pads(graph) + fold_batchnorm(graph) + remove_identities(graph)
        found += fold_zero_pads(graph)
        if merge != "none":
            found += merge_conv_chains(graph, merge, cost, spans)
            found += fold_residuals(graph)
            found += merge_gemm_chains(graph, merge)
        graph.cleanup().toposort()
        for record in found:  # decisions are re-made each round: keep each one once
            if record.action.changes_graph or record.key not in seen:
                seen.add(record.key)
                records.append(record)
        if not any(r.action.changes_graph for r in found):
            break
    if merge != "none":
        records += blocked_edges(graph)
    return records


def fold_model(
    model: onnx.ModelProto,
    merge: str = "auto",
    cost_model: Optional[CostModel] = None,
    input_shape: ShapeArg = None,
    batch: Optional[int] = None,
) -> FoldResult:
    """Fold a model; the input model is not modified. ``auto`` needs the device's ``cost_model``
    (``harness.cost.calibrate.cost_model_for``); ``all`` and ``none`` decide nothing by cost. Opsets
    below 11 are converted, dynamic dims are bound from ``input_shape`` (without batch) and
    ``batch`` where given (else only shape-independent rewrites run). Nothing to fold, or a graph
    a pass cannot handle: the input model comes back unchanged, the report says why."""
    started = time.perf_counter()
    if merge not in MERGE_MODES:
        raise HarnessError(f"--merge must be one of {', '.join(MERGE_MODES)}, not {merge!r}")
    if cost_model is None and merge == "auto":
        raise HarnessError(
            "--merge auto needs a device's cost model "
            "(a calibration, a latency table or a roofline)"
        )
    cost = cost_model or FlopCountModel()
    prepared, records = _prepare(model, input_shape, batch)
    folded, spans = None, {}
    if prepared is not None:
        try:
            folded, spans, found = _fold_graph(prepared, merge, cost)
            records += found
        except Exception as exc:  # noqa: BLE001 - a graph no pass foresaw: keep it as it is, say so
            records.append(
                _note(
                    FoldAction.REFUSED,
                    f"folding stopped on this graph ({type(exc).__name__}: "
                    f"{first_line(exc)}): model left unchanged (please report it)",
                )
            )
    reference = prepared if prepared is not None else model  # bound as the folded graph is
    before, after = flop_count(reference), flop_count(folded or reference)
    if before.holes or after.holes:
        records.append(
            _note(
                FoldAction.WARNING,
                (before.warning() or after.warning()) + " (FLOPs below are a floor)",
            )
        )
    report = FoldReport(
        merge,
        cost.name,
        records,
        op_histogram(model),
        op_histogram(folded or model),
        before.total,
        after.total,
        0.0,
        flops_before_floor=bool(before.holes),
        flops_after_floor=bool(after.holes),
    )
    if folded is None or not report.changed:
        report.nodes_after, report.flops_after = report.nodes_before, report.flops_before
        report.flops_after_floor = report.flops_before_floor
        report.elapsed_s = time.perf_counter() - started
        return FoldResult(model, report, spans if folded is not None else {}, reference)
    problem = checker_problem_quick(folded)  # onnx.checker, the weights' bytes not serialised
    if problem and not checker_problem(prepared):  # the prepared model is checked only then
        raise FoldVerificationError(
            f"the folded graph fails onnx.checker ({problem}); the fold is wrong, "
            f"do not use it (please report this model)"
        )
    dropped = _overridable(model) - {v.name for v in folded.graph.input}
    if dropped:
        report.records.append(
            _note(
                FoldAction.WARNING,
                f"inputs with a default value ({', '.join(sorted(dropped))}) were folded as the "
                "constants they default to: the folded graph no longer takes them",
            )
        )
    report.elapsed_s = time.perf_counter() - started
    remaining = {
        n.name: spans[n.name] for n in folded.graph.node if n.op_type == "Conv" and n.name in spans
    }
    return FoldResult(folded, report, remaining, reference)


def _overridable(model: onnx.ModelProto) -> set:
    """Graph inputs that are also initializers: defaults a caller may override."""
    return {v.name for v in model.graph.input} & {t.name for t in model.graph.initializer}


def _fold_graph(
    model: onnx.ModelProto, merge: str, cost: CostModel
) -> Tuple[onnx.ModelProto, Dict[str, Tuple[int, int]], List[FoldRecord]]:
    """Run every pass on a prepared model: (folded model, conv spans, records)."""
    graph, records = _fold_constants(gs.import_onnx(model), model)
    for i, node in enumerate(graph.nodes):
        node.name = node.name or f"{node.op}_{i}"
    convs = [n for n in graph.nodes if n.op == "Conv"]
    spans = {n.name: (i, i) for i, n in enumerate(convs)}
    records += _run_passes(graph, merge, cost, spans)
    return _infer(_with_header(gs.export_onnx(graph), model), in_place=True), spans, records
