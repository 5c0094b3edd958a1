"""Calibrate the fold cost model on a device: conv micro-benchmarks, per-layer overhead, a fitted
model.

``harness calibrate`` times convolutions across kernel sizes, dense and depthwise, channel counts
and spatial sizes, and element-wise Adds, each as the marginal cost of one more layer inside a graph
(a pattern timed once and three times in a row, interleaved: what a backend does at a graph's edges,
such as ONNX Runtime's layout conversions, and the per-call cost cancel); then fits ``fixed[class] +
seconds_per_flop[class] * FLOPs + seconds_per_byte * bytes`` (a class: dense or depthwise, kernel
size, stride) by non-negative least squares on relative errors. The calibration is a JSON file
beside the profile, with its provenance (device state, versions, date, timing settings), its
measured points and how well the fit reproduces them.

Runs on the device: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.cost.lut import Entry, Span, backend_settings, measure_keyed
from harness.cost.model import (
    CalibratedCostModel,
    CostModel,
    RooflineCostModel,
    TableCostModel,
    conv_class,
)
from harness.errors import HarnessError
from harness.measure import measure_graphs
from harness.profiles import Profile, TimingSettings, calibration_path

SCHEMA = 1
# (in channels, out channels, spatial size) of the dense convs, and (channels, spatial size) of the
# depthwise ones
DENSE_SHAPES = (
    (16, 16, 32),
    (32, 32, 16),
    (64, 64, 8),
    (64, 64, 56),
    (64, 64, 28),
    (128, 128, 14),
    (256, 256, 7),
    (64, 256, 14),
)
DENSE_KERNELS = (1, 3, 5, 7)
DEPTHWISE_SHAPES = ((32, 56), (144, 28), (384, 14), (960, 7))
DEPTHWISE_KERNELS = (3, 5, 7)
ADD_SHAPES = ((16, 32, 32), (64, 56, 56), (256, 14, 14), (32, 112, 112))
REPEATS = (
    1,
    3,
)  # each pattern is timed once and three times in a row: the marginal cost is half the difference


@dataclasses.dataclass(frozen=True)
class Point:
    """One micro-benchmark: a pattern of convs (``conv``: one conv, or a conv and its transpose when
    the channel count changes, so that the pattern can repeat) or an element-wise Add, and the sums
    the fit needs."""

    key: str
    kind: str
    pattern: Tuple[Span, ...] = ()
    shape: Tuple[int, ...] = ()
    flops: int = 0
    nbytes: int = 0
    conv_class: str = ""


def _conv_point(pattern: Tuple[Span, ...]) -> Point:
    geometries = [span.geometry for span in pattern]
    first = pattern[0]
    return Point(
        "conv-" + "+".join(span.key for span in pattern),
        "conv",
        pattern,
        flops=sum(g.flops for g in geometries),
        nbytes=sum(g.bytes_moved() for g in geometries),
        conv_class=conv_class(first.is_dw, first.kernel, first.stride),
    )


def micro_benchmarks(batch: int = 1, quick: bool = False) -> List[Point]:
    """The calibration grid at ``batch``; ``quick`` keeps one shape in three (for tests and a first
    look)."""
    dense = DENSE_SHAPES[::3] if quick else DENSE_SHAPES
    depthwise = DEPTHWISE_SHAPES[::3] if quick else DEPTHWISE_SHAPES
    points = []
    for kernel in DENSE_KERNELS:
        for c_in, c_out, size in dense:
            forward = Span(0, 0, (batch, c_in, size, size), c_out, kernel, 1, False)
            back = Span(0, 0, (batch, c_out, size, size), c_in, kernel, 1, False)
            points.append(_conv_point((forward,) if c_in == c_out else (forward, back)))
    for kernel in DEPTHWISE_KERNELS:
        for channels, size in depthwise:
            points.append(
                _conv_point((Span(0, 0, (batch, channels, size, size), channels, kernel, 1, True),))
            )
    for shape in ADD_SHAPES[:2] if quick else ADD_SHAPES:
        full = (batch,) + shape
        points.append(
            Point(
                "add-" + "x".join(map(str, full)),
                "add",
                shape=full,
                nbytes=3 * 4 * int(np.prod(full)),
            )
        )
    return points


def point_model(point: Point, repeats: int) -> onnx.ModelProto:
    """The pattern of a micro-benchmark ``repeats`` times in a row, as one ONNX graph. Weights keep
    the activations' scale (no denormals), there is no activation between convs (it would fuse into
    them anyway)."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "input"
    shape = point.pattern[0].in_shape if point.kind == "conv" else point.shape
    for r in range(repeats):
        if point.kind == "add":
            inits.append(numpy_helper.from_array(np.full(shape, 0.5, np.float32), f"c{r}"))
            nodes.append(helper.make_node("Add", [current, f"c{r}"], [f"x{r}"]))
            current = f"x{r}"
            continue
        for i, span in enumerate(point.pattern):
            groups = span.in_shape[1] if span.is_dw else 1
            fan_in = span.in_shape[1] // groups * span.kernel**2
            weight = rng.standard_normal(
                (span.out_ch, span.in_shape[1] // groups, span.kernel, span.kernel)
            )
            name = f"w{r}_{i}"
            inits.append(
                numpy_helper.from_array((weight / np.sqrt(fan_in)).astype(np.float32), name)
            )
            nodes.append(
                helper.make_node(
                    "Conv",
                    [current, name],
                    [f"x{r}_{i}"],
                    kernel_shape=[span.kernel] * 2,
                    pads=[(span.kernel - 1) // 2] * 4,
                    group=groups,
                )
            )
            current = f"x{r}_{i}"
    out_shape = shape if point.kind == "add" else point.pattern[-1].geometry.out_shape
    graph = helper.make_graph(
        nodes,
        point.key,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def measure_point(
    point: Point, profile: Profile, precision: str, batch: int, settings: TimingSettings
) -> Entry:
    """The marginal cost of one repetition of the pattern (ms), inside a graph: layout conversions
    at the graph's edges and the per-call cost cancel in the difference between three repetitions
    and one."""

    graphs = {str(r): point_model(point, r) for r in REPEATS}
    measured = measure_graphs(graphs, profile, precision, batch, settings=settings).runs
    low, high = (measured[str(r)].stats for r in REPEATS)
    spread = (
        float(
            np.hypot(
                low.median_ci_high - low.median_ci_low, high.median_ci_high - high.median_ci_low
            )
        )
        / 4
    )
    return Entry((high.median - low.median) / (REPEATS[1] - REPEATS[0]), spread, min(low.n, high.n))


def calibration_timing(settings: TimingSettings) -> TimingSettings:
    """The profile's protocol, shortened for micro-benchmarks (small graphs, timed two at a
    time)."""
    return dataclasses.replace(
        settings,
        warmup_s=min(settings.warmup_s, 0.3),
        min_duration_s=min(settings.min_duration_s, 0.4),
        max_duration_s=min(settings.max_duration_s, 1.5),
        min_iterations=min(settings.min_iterations, 20),
        target_ci=max(settings.target_ci, 0.02),
    )


def _nnls_relative(columns: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Non-negative least squares on errors relative to ``measured`` (columns scaled for
    conditioning)."""
    from scipy.optimize import (
        nnls,
    )  # imported here: ``fold`` imports this module, scipy takes ~0.4 s

    scale = columns.max(axis=0)
    scale[scale == 0] = 1.0
    weights = 1.0 / np.maximum(measured, 1e-7)
    solution, _ = nnls(columns / scale * weights[:, None], measured * weights)
    return solution / scale


def fit(
    points: List[Point], entries: Dict[str, Entry]
) -> Tuple[CalibratedCostModel, Dict[str, Any]]:
    """Fit the cost model to the measured marginal costs (ms); returns it and the formula's error on
    those points (the model also keeps each point's residual ratio, so measured shapes are priced as
    measured)."""
    convs = [p for p in points if p.kind == "conv"]
    classes = sorted({p.conv_class for p in convs})
    measured = np.array([entries[p.key].time / 1e3 for p in convs])
    columns = np.zeros((len(convs), 2 * len(classes) + 1))
    for row, p in enumerate(convs):
        index = classes.index(p.conv_class)
        columns[row, index] = len(p.pattern)
        columns[row, len(classes) + index] = p.flops
        columns[row, -1] = p.nbytes
    solution = _nnls_relative(columns, measured)
    adds = [p for p in points if p.kind == "add"]
    add_times = np.array([entries[p.key].time / 1e3 for p in adds])
    add_fit = _nnls_relative(np.array([[1.0, p.nbytes] for p in adds]), add_times)
    model = CalibratedCostModel(
        dict(zip(classes, map(float, solution[: len(classes)]))),
        dict(zip(classes, map(float, solution[len(classes) : -1]))),
        float(solution[-1]),
        float(add_fit[0]),
        float(add_fit[1]),
    )
    # a class fitted to cost nothing (its marginal costs lost in the noise) is not calibrated: its
    # convs are priced by the nearest calibrated class instead of as free
    degenerate = [c for c in classes if not model.fixed_s[c] and not model.seconds_per_flop[c]]
    if len(degenerate) == len(classes):
        raise HarnessError(
            "every conv class was fitted to cost nothing: the marginal costs were lost in the "
            "noise; calibrate again on a quieter machine (or with longer timing)"
        )
    for name in degenerate:
        del model.fixed_s[name], model.seconds_per_flop[name]
    fitted = np.array([predict(model, p) for p in convs])
    errors = np.abs(fitted - measured) / np.maximum(measured, 1e-7)
    quality = {
        "degenerate_classes": degenerate,
        "negative_points": int(np.sum(measured <= 0)),
        "conv_points": len(convs),
        "median_abs_rel_error": float(np.median(errors)),
        "p90_abs_rel_error": float(np.quantile(errors, 0.9)),
        "max_abs_rel_error": float(np.max(errors)),
    }
    model.fit_error = quality["p90_abs_rel_error"]  # fold --merge auto's decision margin
    for p, seconds, predicted in zip(
        convs, measured, fitted
    ):  # what the formula misses, kept per shape
        for span in p.pattern if seconds > 0 and predicted > 0 else ():
            model.corrections.append(
                (
                    p.conv_class,
                    span.in_shape[1],
                    span.out_ch,
                    span.in_shape[2],
                    float(seconds / predicted),
                )
            )
    return model, quality


def predict(model: CostModel, point: Point, fitted_only: bool = False) -> float:
    """What ``model`` says one repetition of a micro-benchmark costs, in seconds (``fitted_only``: a
    calibrated model's formula without its per-shape corrections)."""
    if point.kind == "add":
        return model.elementwise_cost(point.nbytes)
    price = (
        model.fitted_cost
        if fitted_only and isinstance(model, CalibratedCostModel)
        else model.conv_cost
    )
    return sum(price(span.geometry) for span in point.pattern)


def calibration_record(
    profile: Profile,
    backend: str,
    precision: str,
    batch: int,
    points: List[Point],
    entries: Dict[str, Entry],
    context: Dict[str, Any],
    environment: Dict[str, Any],
    settings: TimingSettings,
) -> Dict[str, Any]:
    """The calibration file's content: the fit, its quality, every measured point and the
    provenance."""
    model, quality = fit(points, entries)
    rows = []
    for p in points:
        row = {
            "key": p.key,
            "kind": p.kind,
            "time_ms": entries[p.key].time,
            "stdev_ms": entries[p.key].stdev,
            "n": entries[p.key].n,
            "flops": p.flops,
            "bytes": p.nbytes,
        }
        row["predicted_ms"] = predict(model, p) * 1e3
        row["fitted_ms"] = predict(model, p, fitted_only=True) * 1e3
        if p.kind == "conv":
            row["conv_class"] = p.conv_class
        rows.append(row)
    return {
        "schema": SCHEMA,
        "kind": "harness calibration",
        "profile": profile.name,
        "backend": backend,
        "precision": precision,
        "batch": batch,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fit": model.to_dict(),
        "quality": quality,
        "context": context,
        "timing": dataclasses.asdict(settings),
        "environment": environment,
        "points": rows,
    }


def load_calibration(path: Path) -> CalibratedCostModel:
    """The cost model stored in a calibration file; a malformed file is named with the reason."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
        model = CalibratedCostModel.from_dict(
            data["fit"],
            f"calibration {Path(path).name} "
            f"({data['backend']}, {data['precision']}, {data['created'][:10]})",
        )
        error = dict(data.get("quality") or {}).get("p90_abs_rel_error")
        model.fit_error = None if error is None else float(error)
        return model
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise HarnessError(
            f"{path} is not a usable calibration file ({exc}): run harness calibrate again"
        ) from None


def calibration_mismatch(path: Path, profile: Profile, batch: Optional[int] = None) -> str:
    """What differs between the profile (and batch) a calibration file was measured under and the
    ones it is about to serve ('' when nothing does): a copied or stale file prices another
    setting."""
    data = json.loads(Path(path).read_text())

    settings = backend_settings(profile)
    found = []
    if data.get("profile", profile.name) != profile.name:
        found.append(f"profile {data.get('profile')!r}, not {profile.name!r}")
    context = data.get("context") if isinstance(data.get("context"), dict) else {}
    if context.get("backend_settings", settings) != settings:
        found.append(f"other {profile.backend} settings")
    if batch is not None and data.get("batch", batch) != batch:
        found.append(f"batch {data.get('batch')}, not {batch}")
    return (
        f"{Path(path).name} was measured with {', '.join(found)}: its costs may not hold here "
        f"(run harness calibrate --device {profile.name}"
        + (f" --batch {batch})" if batch is not None else ")")
        if found
        else ""
    )


def cost_model_for(
    profile: Profile,
    precision: str,
    table: Optional[Path] = None,
    backend: Optional[str] = None,
    batch: Optional[int] = None,
) -> Tuple[CostModel, str]:
    """The cost model ``--merge auto`` uses on a device and backend, and a line saying which one and
    why.

    A measured latency table (``--cost``) wins; then the calibration stored beside the profile for
    this backend and precision; else the roofline of the profile's peaks.
    """
    roofline = RooflineCostModel.from_profile(profile, precision)
    path = calibration_path(profile, backend, precision)
    base: CostModel = roofline
    note = (
        f"no calibration for {profile.name}/{backend or profile.backend}/{precision} "
        f"({path.name}): using the "
        f"roofline of the profile's peaks (run harness calibrate --device {profile.name})"
    )
    if path.is_file():
        base = load_calibration(path)
        note = f"using {base.name}"
        mismatch = calibration_mismatch(path, profile, batch)
        if mismatch:
            warnings.warn(mismatch, stacklevel=2)
    model: CostModel = base
    if table is not None:
        model = TableCostModel.from_csv(table, fallback=base)
        note = f"using the measured table {table} (spans it lacks: {base.name})"
    margin, source = model.decision_margin()
    return model, (
        f"{note}; decision margin {margin:.1%} ({source}): a merge is taken only when its "
        f"predicted saving exceeds that fraction of the merged conv's predicted cost"
    )


def run_calibration(
    points: List[Point],
    measure: Callable[[Point], Entry],
    progress_path: Path,
    context: Dict[str, Any],
    on_step: Optional[Callable[[int, int], None]] = None,
) -> Tuple[Dict[str, Entry], int, int]:
    """Measure every point not saved before in this context (resumable, as ``harness lut``)."""

    todo = {p.key: (lambda point=p: measure(point)) for p in points}
    return measure_keyed(todo, progress_path, context, on_step)
