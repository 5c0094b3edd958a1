"""Calibrate the fold cost model on a device: conv micro-benchmarks, per-layer overhead, a fitted model.

``harness calibrate`` times single convolutions across kernel sizes, strides, dense and depthwise, channel
counts and spatial sizes (built and timed as ``harness lut`` builds and times spans), chains of k tiny convs
(the per-call cost is the intercept in k) and element-wise Adds; then fits ``fixed[class] +
seconds_per_flop[class] * FLOPs + seconds_per_byte * bytes`` (a class: dense or depthwise, kernel size,
stride) by non-negative least squares on relative errors. The calibration is a JSON file beside the profile,
with its provenance (device state, versions, date, timing settings), its measured points and how well the fit
reproduces them.

Runs on the device: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy.optimize import nnls

from harness.errors import HarnessError
from harness.fold.cost import (
    CalibratedCostModel,
    ConvGeometry,
    CostModel,
    RooflineCostModel,
    TableCostModel,
    conv_class,
)
from harness.geometry import conv_output_size
from harness.lut import Entry, Span, span_model
from harness.profiles import Profile, TimingSettings, calibration_path

SCHEMA = 1
# (in channels, out channels, spatial size) of the dense convs, and (channels, spatial size) of the depthwise
DENSE_SHAPES = ((16, 16, 32), (64, 64, 56), (64, 64, 28), (128, 128, 14), (256, 256, 7), (64, 256, 14),
                (256, 64, 14))
DENSE_CLASSES = ((1, 1), (3, 1), (5, 1), (7, 1), (1, 2), (3, 2))  # (kernel, stride)
DEPTHWISE_SHAPES = ((32, 56), (144, 28), (384, 14), (960, 7))
DEPTHWISE_CLASSES = ((3, 1), (5, 1), (7, 1), (3, 2))
CHAIN_LENGTHS = (1, 4, 16)  # tiny 1x1 convs in a row: the slope is the per-layer overhead
ADD_SHAPES = ((16, 32, 32), (64, 56, 56), (256, 14, 14), (32, 112, 112))


@dataclasses.dataclass(frozen=True)
class Point:
    """One micro-benchmark: what it is (``kind``: conv, chain or add) and the numbers the fit needs."""

    key: str
    kind: str
    flops: int = 0
    nbytes: int = 0
    conv_class: str = ""
    layers: int = 1
    span: Optional[Span] = None
    shape: Tuple[int, ...] = ()


def _span_geometry(span: Span) -> ConvGeometry:
    """The geometry of the conv ``span_model`` builds for a span (centred padding)."""
    n, c, h, w = span.in_shape
    pad = (span.kernel - 1) // 2
    out = (n, span.out_ch, conv_output_size(h, span.kernel, span.stride, 2 * pad),
           conv_output_size(w, span.kernel, span.stride, 2 * pad))
    return ConvGeometry(span.in_shape, out, (span.kernel, span.kernel), c if span.is_dw else 1, stride=span.stride)


def _conv_point(span: Span) -> Point:
    geometry = _span_geometry(span)
    return Point(f"conv-{span.key}", "conv", geometry.flops, geometry.bytes_moved(),
                 conv_class(span.is_dw, span.kernel, span.stride), span=span)


def micro_benchmarks(batch: int = 1, quick: bool = False) -> List[Point]:
    """The calibration grid at ``batch``; ``quick`` keeps one shape in three (for tests and a first look)."""
    dense = DENSE_SHAPES[::3] if quick else DENSE_SHAPES
    depthwise = DEPTHWISE_SHAPES[::3] if quick else DEPTHWISE_SHAPES
    points = []
    for kernel, stride in DENSE_CLASSES:
        for c_in, c_out, size in dense:
            points.append(_conv_point(Span(0, 0, (batch, c_in, size, size), c_out, kernel, stride, False)))
    for kernel, stride in DEPTHWISE_CLASSES:
        for channels, size in depthwise:
            points.append(_conv_point(Span(0, 0, (batch, channels, size, size), channels, kernel, stride, True)))
    for layers in CHAIN_LENGTHS:
        points.append(Point(f"chain-{layers}-n{batch}", "chain", layers=layers, shape=(batch, 8, 8, 8)))
    for shape in ADD_SHAPES[:2] if quick else ADD_SHAPES:
        full = (batch,) + shape
        points.append(Point("add-" + "x".join(map(str, full)), "add", nbytes=3 * 4 * int(np.prod(full)),
                            shape=full))
    return points


def _model(nodes, inputs, outputs, initializers, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def chain_model(layers: int, shape: Tuple[int, int, int, int]) -> onnx.ModelProto:
    """``layers`` tiny 1x1 convs in a row: almost no arithmetic, so its latency is call + layers x overhead."""
    channels = shape[1]
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "input"
    for i in range(layers):
        weight = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [current, f"w{i}"], [f"x{i}"], kernel_shape=[1, 1]))
        current = f"x{i}"
    nodes.append(helper.make_node("Identity", [current], ["output"]))
    return _model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))], inits, "chain")


def add_model(shape: Tuple[int, ...]) -> onnx.ModelProto:
    """One element-wise Add of the input and a constant of the same shape (a residual Add's traffic)."""
    other = numpy_helper.from_array(np.ones(shape, np.float32), "other")
    return _model([helper.make_node("Add", ["input", "other"], ["output"])],
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))], [other], "add")


def point_model(point: Point) -> onnx.ModelProto:
    """The ONNX model a micro-benchmark times."""
    if point.kind == "conv":
        return span_model(point.span, activation=False)  # type: ignore[arg-type]
    if point.kind == "chain":
        return chain_model(point.layers, point.shape)  # type: ignore[arg-type]
    return add_model(point.shape)


def calibration_timing(settings: TimingSettings) -> TimingSettings:
    """The profile's protocol, shortened for micro-benchmarks (each is one small graph, timed alone)."""
    return dataclasses.replace(settings, warmup_s=min(settings.warmup_s, 0.3),
                               min_duration_s=min(settings.min_duration_s, 0.4),
                               max_duration_s=min(settings.max_duration_s, 1.5),
                               min_iterations=min(settings.min_iterations, 20), target_ci=max(settings.target_ci, 0.02))


def _nnls_relative(columns: np.ndarray, measured: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative least squares on errors relative to ``measured`` (columns scaled for conditioning)."""
    scale = columns.max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(columns / scale / measured[:, None], target / measured)
    return solution / scale


def fit(points: List[Point], entries: Dict[str, Entry]) -> Tuple[CalibratedCostModel, Dict[str, Any]]:
    """Fit the cost model to measured points (times in ms); returns it and its quality on those points.

    The per-call cost (session, copies) is the intercept of the chain lengths' latencies and is taken out of every
    point; the slope is the per-layer overhead of a trivial conv, recorded for reference.
    """
    chains = [(p.layers, entries[p.key].time / 1e3) for p in points if p.kind == "chain"]
    if len(chains) < 2:
        raise HarnessError("calibration needs chains of at least two lengths to separate per-call costs")
    slope, call = np.polyfit([k for k, _ in chains], [t for _, t in chains], 1)
    call = max(float(call), 0.0)
    convs = [p for p in points if p.kind == "conv"]
    classes = sorted({p.conv_class for p in convs})
    measured = np.array([entries[p.key].time / 1e3 for p in convs])
    columns = np.zeros((len(convs), 2 * len(classes) + 1))
    for row, p in enumerate(convs):
        index = classes.index(p.conv_class)
        columns[row, index] = 1.0
        columns[row, len(classes) + index] = p.flops
        columns[row, -1] = p.nbytes
    solution = _nnls_relative(columns, measured, np.maximum(measured - call, 0.0))
    adds = [p for p in points if p.kind == "add"]
    add_times = np.array([entries[p.key].time / 1e3 for p in adds])
    add_fit = _nnls_relative(np.array([[1.0, p.nbytes] for p in adds]), add_times, np.maximum(add_times - call, 0))
    model = CalibratedCostModel(dict(zip(classes, map(float, solution[:len(classes)]))),
                                dict(zip(classes, map(float, solution[len(classes):-1]))), float(solution[-1]),
                                float(add_fit[0]), float(add_fit[1]))
    predicted = np.array([model.conv_cost(_span_geometry(p.span)) for p in convs]) + call  # type: ignore
    errors = np.abs(predicted - measured) / measured
    quality = {"conv_points": len(convs), "median_abs_rel_error": float(np.median(errors)),
               "p90_abs_rel_error": float(np.quantile(errors, 0.9)), "max_abs_rel_error": float(np.max(errors)),
               "per_call_s": call, "trivial_layer_overhead_s": max(float(slope), 0.0)}
    return model, quality


def calibration_record(profile: Profile, backend: str, precision: str, batch: int, points: List[Point],
                       entries: Dict[str, Entry], context: Dict[str, Any], environment: Dict[str, Any],
                       settings: TimingSettings) -> Dict[str, Any]:
    """The calibration file's content: the fit, its quality, every measured point and the provenance."""
    model, quality = fit(points, entries)
    rows = []
    for p in points:
        row = {"key": p.key, "kind": p.kind, "time_ms": entries[p.key].time, "stdev_ms": entries[p.key].stdev,
               "n": entries[p.key].n, "flops": p.flops, "bytes": p.nbytes}
        if p.kind == "conv":
            row.update(conv_class=p.conv_class, predicted_ms=(model.conv_cost(_span_geometry(p.span))
                                                               + quality["per_call_s"]) * 1e3)
        rows.append(row)
    return {"schema": SCHEMA, "kind": "harness calibration", "profile": profile.name, "backend": backend,
            "precision": precision, "batch": batch,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "fit": model.to_dict(), "quality": quality, "context": context, "timing": dataclasses.asdict(settings),
            "environment": environment, "points": rows}


def load_calibration(path: Path) -> CalibratedCostModel:
    """The cost model stored in a calibration file; a malformed file is named with the reason."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        return CalibratedCostModel.from_dict(data["fit"], f"calibration {Path(path).name} "
                                             f"({data['backend']}, {data['precision']}, {data['created'][:10]})")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HarnessError(f"{path} is not a usable calibration file ({exc}): run harness calibrate again") from None


def cost_model_for(profile: Profile, precision: str, table: Optional[Path] = None,
                   backend: Optional[str] = None) -> Tuple[CostModel, str]:
    """The cost model ``--merge auto`` uses on a device and backend, and a line saying which one and why.

    A measured latency table (``--cost``) wins; then the calibration stored beside the profile for this backend
    and precision; else the roofline of the profile's peaks.
    """
    roofline = RooflineCostModel.from_profile(profile, precision)
    path = calibration_path(profile, backend, precision)
    base: CostModel = roofline
    note = (f"no calibration for {profile.name}/{backend or profile.backend}/{precision} ({path.name}): using the "
            f"roofline of the profile's peaks (run harness calibrate --device {profile.name})")
    if path.is_file():
        base = load_calibration(path)
        note = f"using {base.name}"
    if table is not None:
        model = TableCostModel.from_csv(table, fallback=base)
        return model, f"using the measured table {table} (spans it lacks: {base.name})"
    return base, note


def run_calibration(points: List[Point], measure: Callable[[Point], Entry], progress_path: Path,
                    context: Dict[str, Any],
                    on_step: Optional[Callable[[int, int], None]] = None) -> Tuple[Dict[str, Entry], int, int]:
    """Measure every point not saved before in this context (resumable, as ``harness lut``)."""
    from harness.lut import measure_keyed

    todo = {p.key: (lambda point=p: measure(point)) for p in points}
    return measure_keyed(todo, progress_path, context, on_step)
