"""Numerical check of a rewrite: original and candidate graphs in ONNX Runtime on the same seeded
inputs.

Outputs alone can let a wrong graph pass: a randomly initialised network's output can barely depend
on its input. So every tensor the two graphs share by name (the boundaries of each rewrite: a merged
conv's output is the output of the chain it replaced) is compared too, each relative to its own
magnitude, and the check states how strongly the compared tensors respond to the input. A comparison
in which nothing responds to the input is not called verified. A graph ONNX Runtime cannot run (a
custom-domain op, a type it does not implement) is reported as not verified, with the reason, rather
than failing.

What a tensor may differ by fits the numbers it holds (``harness.fold.tolerance``), and a tensor
that differs by no more than ONNX Runtime's own optimisations of the original change it is
rounding, not a wrong fold.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from harness.errors import FoldVerificationError, HarnessError, first_line, shown
from harness.fold.joint import LocalCheck, joint_model
from harness.fold.tolerance import (
    FLOAT_KINDS,
    LOCAL_CHECK,
    ROUNDING_FACTOR,
    Judge,
    Tolerance,
    relative_error,
)
from harness.onnx_io import check_allocation, graph_inputs

EQUIVALENT, DIFFERENT, NOT_VERIFIED = "equivalent", "different", "not verified"
RESPONSIVE = (
    1e-3  # a tensor "responds" to the input when two inputs change it by more than this (relative)
)
# Two inputs measure how the compared tensors respond; each rewrite is also checked on its own
# random inputs. The model's own batch is always checked; another batch size re-batches (and
# re-infers) the whole graph, which costs more than the rest of the check on large models: ask for
# it with ``batch_sizes``.
SEEDS, BATCH_SIZES = (0, 1), (1,)
LOCAL_STREAM = 1  # the local checks' inputs come from another random stream than the graph inputs


@dataclasses.dataclass
class VerifyResult:
    """Largest relative error seen (max |a - b| / max |a| per tensor), over every seed and batch
    size; ``worst``: the ``TensorError`` (as a dict, ``allowed`` added) of the tensor furthest over
    its tolerance, or of the largest relative error where none is over; ``difference``: what
    differs, where something does."""

    max_rel_error: float
    tolerance: float  # the rtol (relative to each tensor's magnitude) of tensors not named
    seeds: List[int]
    batch_sizes: List[int]
    note: str = ""
    status: str = EQUIVALENT
    compared: int = 0  # tensors compared: the outputs and the intermediate tensors both graphs hold
    worst_tensor: str = ""
    output_response: float = 0.0  # smallest relative change of an output between two inputs
    responsive: int = 0  # compared tensors that respond to the input
    local_checks: int = (
        0  # rewritten nodes compared with the subgraph they replaced, on random inputs
    )
    atol: float = 0.0
    worst: Dict[str, Any] = dataclasses.field(default_factory=dict)
    difference: str = ""

    @property
    def verified(self) -> bool:
        return self.status == EQUIVALENT

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verified"] = self.verified
        return data


def with_batch(model: onnx.ModelProto, batch: int) -> Optional[onnx.ModelProto]:
    """A copy of the model with batch ``batch`` on every input and output, or None if shapes cannot
    follow."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    for value in graph_inputs(copy) + list(copy.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims:
            return None
        dims[0].ClearField("dim_param")
        dims[0].dim_value = batch
    try:
        return onnx.shape_inference.infer_shapes(copy, strict_mode=True)
    except Exception:  # noqa: BLE001 - a Reshape with a hard-coded batch cannot be re-batched
        return None


def _session(
    model: onnx.ModelProto,
    weights: Optional[Dict[str, np.ndarray]] = None,
    optimised: bool = False,
):
    """An ONNX Runtime CPU session, graph optimisations off (the graph runs as written) unless
    ``optimised`` (all of them); ``weights``: the model's external data files, held in memory."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if optimised else level.ORT_DISABLE_ALL
    options.log_severity_level = 4
    if weights:
        options.add_external_initializers_from_files_in_memory(
            list(weights), list(weights.values()), [w.nbytes for w in weights.values()]
        )
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _weights_outside() -> bool:
    """Whether this ONNX Runtime reads external data from memory (1.18 on): a graph can then be
    loaded without serialising its weights."""
    import onnxruntime as ort

    return hasattr(ort.SessionOptions, "add_external_initializers_from_files_in_memory")


def _node_outputs(model: onnx.ModelProto) -> Dict[str, onnx.ValueInfoProto]:
    """Typed intermediate tensors written by nodes (graph outputs excluded), by name."""
    typed = {v.name: v for v in model.graph.value_info if v.type.tensor_type.elem_type}
    outputs = {o.name for o in model.graph.output}
    return {
        name: typed[name]
        for node in model.graph.node
        for name in node.output
        if name in typed and name not in outputs
    }


def _with_outputs(model: onnx.ModelProto, extra: List[onnx.ValueInfoProto]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(extra)
    return copy


def shared_tensors(original: onnx.ModelProto, candidate: onnx.ModelProto) -> List[str]:
    """Intermediate float tensors both graphs compute under the same name, type and shape (rewrite
    boundaries), in the original's order."""
    mine, theirs = _node_outputs(original), _node_outputs(candidate)
    shared = []
    for name, value in mine.items():
        other = theirs.get(name)
        kind = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).kind
        if other is not None and kind in FLOAT_KINDS and other.type == value.type:
            shared.append(name)
    return shared


def _feed_shape(shape: Sequence[Any]) -> Tuple[int, ...]:
    """A concrete shape for an input: dynamic dims as 1 (leading) or 16 (others)."""
    return tuple(
        d if isinstance(d, int) and d > 0 else (1 if i == 0 else 16) for i, d in enumerate(shape)
    )


def index_ranges(model: onnx.ModelProto) -> Dict[str, Tuple[int, int]]:
    """Integer graph inputs read as indices (of Gather, GatherElements, GatherND) -> the values
    every such reader accepts, [low, high]: [-n, n - 1] for an axis of n (negative indices count
    from the end; opset 11 on), where the indexed tensor's shape is known."""
    graph = model.graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in list(graph.input) + list(graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if value.name not in shapes and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    feeds = {v.name for v in graph.input} - {t.name for t in graph.initializer}
    negative = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0) >= 11
    found: Dict[str, Tuple[int, int]] = {}
    for node in graph.node:
        if node.op_type not in ("Gather", "GatherElements", "GatherND") or len(node.input) < 2:
            continue
        data, indices = shapes.get(node.input[0]), node.input[1]
        if indices not in feeds or not data:
            continue
        attributes = {a.name: a.i for a in node.attribute}
        if node.op_type == "GatherND":  # each index picks along one of the dims after the batch
            sizes = data[attributes.get("batch_dims", 0) :]
        else:
            axis = attributes.get("axis", 0)
            sizes = [data[axis]] if -len(data) <= axis < len(data) else []
        if not sizes or min(sizes) <= 0:
            continue
        low, high = (-min(sizes) if negative else 0), min(sizes) - 1
        known = found.get(indices)
        found[indices] = (max(low, known[0]), min(high, known[1])) if known else (low, high)
    return found


def _inputs(
    session_inputs: Sequence[Any], seed: int, ranges: Optional[Dict[str, Tuple[int, int]]] = None
) -> Dict[str, np.ndarray]:
    """Seeded inputs for a session's inputs (``session.get_inputs()``): normal floats, except
    uniform [0, 1) for rank <= 1 inputs beside higher-rank ones (parameter-like: a variance must not
    be negative); integers read as indices over the range their readers accept (``ranges``, see
    ``index_ranges``); 0/1 for booleans, other 32/64-bit integers (flags) and, on seed 0, for
    8/16-bit integers, which on other seeds span their type's range (pixels: overflow and
    saturation must show)."""
    rng = np.random.default_rng(seed)
    ranges = ranges or {}
    args = [(arg, _feed_shape(arg.shape or []), _input_dtype(arg)) for arg in session_inputs]
    check_allocation({arg.name: (shape, dtype) for arg, shape, dtype in args}, "verification")
    data_rank = max((len(shape) for _, shape, dtype in args if dtype.kind == "f"), default=0)
    feeds = {}
    for arg, shape, dtype in args:
        if dtype.kind == "f":
            parameter = len(shape) <= 1 < data_rank
            values = rng.random(shape) if parameter else rng.standard_normal(shape)
        elif dtype.kind == "O":
            values = np.array(rng.integers(0, 2, shape).astype(str), dtype=object)
        elif dtype.kind in "iu" and arg.name in ranges:
            low, high = ranges[arg.name]
            info = np.iinfo(dtype)
            values = rng.integers(max(low, info.min), min(high, int(info.max)) + 1, shape)
        elif dtype.kind in "iu" and dtype.itemsize <= 2 and seed != 0:
            info = np.iinfo(dtype)
            values = rng.integers(info.min, int(info.max) + 1, shape)
        else:
            values = rng.integers(0, 2, shape)
        feeds[arg.name] = np.asarray(values).astype(dtype)
    return feeds


def _input_dtype(arg: Any) -> np.dtype:
    """numpy dtype of an ONNX Runtime session input of a type such as ``tensor(float)``; a
    sequence, map or optional input is refused (verification feeds tensors)."""
    type_name = arg.type
    kind = type_name[len("tensor(") : -1] if type_name.startswith("tensor(") else type_name
    names = {"float": "float32", "double": "float64", "bool": "bool", "string": "object"}
    try:
        return np.dtype(names.get(kind, kind))
    except TypeError:
        raise HarnessError(
            f"input {shown(arg.name)} is {type_name}: verification feeds tensor inputs only"
        ) from None


class _Pair:
    """Original and candidate sessions, outputs first, then the shared intermediate tensors."""

    def __init__(
        self, original: onnx.ModelProto, candidate: onnx.ModelProto, intermediates: bool
    ) -> None:
        names = shared_tensors(original, candidate) if intermediates else []
        values = _node_outputs(original)
        extra = [values[n] for n in names]
        self.outputs = [o.name for o in original.graph.output]
        self.names = self.outputs + names
        self.reference = _session(_with_outputs(original, extra) if extra else original)
        try:
            self.candidate = _session(_with_outputs(candidate, extra) if extra else candidate)
        except Exception as exc:  # noqa: BLE001 - the candidate is what is being checked
            raise _CandidateFailed(
                f"ONNX Runtime cannot load the candidate: {first_line(exc)}"
            ) from None
        candidate_outputs = [o.name for o in candidate.graph.output]
        if len(candidate_outputs) != len(self.outputs):
            raise _CandidateFailed(
                f"the candidate has {len(candidate_outputs)} outputs, the original "
                f"{len(self.outputs)}"
            )
        self.candidate_names = candidate_outputs + names


class _CandidateFailed(Exception):
    """The candidate cannot be loaded or run where the original can: it is different."""


def compare_models(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    seeds: Sequence[int] = SEEDS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    tolerance: Optional[Tolerance] = None,
    intermediates: bool = True,
) -> VerifyResult:
    """Compare two graphs meant to compute the same function; never raises for a difference (see
    ``status``), only for a ``tolerance`` that names no output (``HarnessError``).

    The model's own batch is always checked; the other ``batch_sizes`` where the graph can be
    re-batched. Tensors both graphs hold under the same name are compared too (``intermediates``),
    and each rewritten node against the original subgraph it replaced. Inputs and outputs are
    matched by position (names may differ), intermediate tensors by name. The model's own batch runs
    both graphs in one ONNX Runtime session where they can be joined (``harness.fold.joint``); a
    session per graph otherwise, and whenever the joint graph fails, so that a failure is pinned on
    the graph that fails. Tensors of the original graph that differ (no local check, no shape) by
    no more than ``ROUNDING_FACTOR`` times what ONNX Runtime's own optimisations of the original
    change them by are rounding.
    """
    tolerance = tolerance or Tolerance()
    tolerance.check_outputs(original)
    judge, ranges = Judge(original, tolerance), index_ranges(original)
    own = _batch_of(original)
    outputs = [o.name for o in original.graph.output]
    joint = _compare_joint(original, candidate, seeds, judge, intermediates, ranges)
    if joint is not None:
        result, responses, notes = joint
        batches = [b for b in batch_sizes if b != own]
    else:
        result, responses, notes = _empty_result(judge, seeds, []), {}, []
        batches = [own] + [b for b in batch_sizes if b != own]
    for batch in batches:
        pair_models = (
            (original, candidate)
            if batch == own
            else (with_batch(original, batch), with_batch(candidate, batch))
        )
        if pair_models[0] is None or pair_models[1] is None:
            notes.append(f"batch {batch} not checked: the graph has a fixed batch inside")
            continue
        try:
            pair = _Pair(pair_models[0], pair_models[1], intermediates)
        except _CandidateFailed as exc:
            return _different(result, str(exc))
        except Exception as exc:  # noqa: BLE001 - ORT cannot load the original: nothing to compare with
            result.status = NOT_VERIFIED
            result.note = f"ONNX Runtime cannot load the original: {first_line(exc)}"
            return result
        result.batch_sizes.append(batch)
        result.compared = max(result.compared, len(pair.names))
        first: Optional[List[Any]] = None
        for seed in seeds:
            feeds = _inputs(pair.reference.get_inputs(), seed, ranges)
            try:
                expected = pair.reference.run(pair.names, feeds)
            except Exception as exc:  # noqa: BLE001 - NotImplemented for a type, a custom op, ...
                result.status = NOT_VERIFIED
                result.note = f"ONNX Runtime cannot run the original: {first_line(exc)}"
                return result
            try:
                feeds = dict(zip([i.name for i in pair.candidate.get_inputs()], feeds.values()))
                got = pair.candidate.run(pair.candidate_names, feeds)
            except Exception as exc:  # noqa: BLE001
                return _different(
                    result, f"ONNX Runtime cannot run the candidate: {first_line(exc)}"
                )
            for name, a, b in zip(pair.names, expected, got):
                judge.record(name, a, b)
            if first is None:
                first = expected
            elif batch == result.batch_sizes[0]:
                for name, a, b in zip(pair.names, first, expected):
                    responses[name] = max(responses.get(name, 0.0), relative_error(a, b))
    if not result.batch_sizes:
        result.status, result.note = NOT_VERIFIED, "; ".join(notes)
        return result
    if intermediates and joint is None:
        failure = _check_locally(original, candidate, result, judge, notes, seeds[0])
        if failure:
            return _different(result, failure)
    failing = judge.failing_tensors()
    if failing:
        for name, change in _optimiser_change(original, failing, seeds, ranges).items():
            judge.errors[name].optimiser_change = change
    notes += _conclude(judge, result)
    _judge_response(result, responses, outputs, notes, len(seeds))
    result.note = "; ".join(notes)
    return result


def _conclude(judge: Judge, result: VerifyResult) -> List[str]:
    """Fill ``result``'s errors and verdict in from ``judge``; returns the notes on the tensors let
    through as rounding."""
    errors = list(judge.errors.values())
    if not errors:
        return []
    result.max_rel_error = max(e.relative for e in errors)
    failing = [e for e in errors if e.differs]
    worst = (
        max(failing, key=lambda e: (e.excess, e.relative))
        if failing
        else max(errors, key=lambda e: e.relative)
    )
    result.worst_tensor = worst.name
    result.worst = dataclasses.asdict(worst)
    result.worst["allowed"] = worst.allowed
    if failing:
        result.status = DIFFERENT
        result.difference = worst.text()
    return [
        f"tensor {e.name!r} differs by {e.relative:.3g} (relative; max |a - b| {e.error:.3g} "
        f"against max |a| {e.magnitude:.3g}), within {ROUNDING_FACTOR}x the "
        f"{e.optimiser_change:.3g} ONNX Runtime's own optimisations of the original change it "
        f"by: rounding, not a wrong rewrite"
        for e in errors
        if e.excess > 1 and e.rounding
    ]


def _empty_result(judge: Judge, seeds: Sequence[int], batches: List[int]) -> VerifyResult:
    return VerifyResult(0.0, judge.rtol, list(seeds), batches, atol=judge.tolerance.atol)


def _optimiser_change(
    model: onnx.ModelProto,
    names: Sequence[str],
    seeds: Sequence[int],
    ranges: Dict[str, Tuple[int, int]],
) -> Dict[str, float]:
    """How much ONNX Runtime's own graph optimisations (all levels: BatchNorm folded into convs,
    fused ops, other kernels) change the tensors ``names`` of ``model`` (outputs or intermediate)
    on the comparison's inputs (largest relative error): the rounding any correct rewrite of this
    graph makes. Empty where ONNX Runtime cannot optimise or run the model."""
    found: Dict[str, float] = {}
    values = _node_outputs(model)
    fetched = _with_outputs(model, [values[n] for n in names if n in values])
    try:
        plain, optimised = _session(fetched), _session(fetched, optimised=True)
        for seed in seeds:
            feeds = _inputs(plain.get_inputs(), seed, ranges)
            for name, a, b in zip(names, plain.run(names, feeds), optimised.run(names, feeds)):
                found[name] = max(found.get(name, 0.0), relative_error(a, b))
    except Exception:  # noqa: BLE001 - no yardstick then: the tolerance alone judges
        return {}
    return found


def _compare_joint(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    seeds: Sequence[int],
    judge: Judge,
    intermediates: bool,
    ranges: Dict[str, Tuple[int, int]],
) -> Optional[Tuple[VerifyResult, Dict[str, float], List[str]]]:
    """The model's own batch compared in one session computing both graphs (and the local checks):
    (result, responses of the original's tensors, notes), or None when the graphs cannot be joined
    or ONNX Runtime refuses the joint graph (the caller then compares them one session each)."""
    shared = shared_tensors(original, candidate) if intermediates else []
    changed = changed_nodes(original, candidate) if intermediates else []
    joint = joint_model(original, candidate, shared, changed, _weights_outside())
    if joint is None:
        return None
    result = _empty_result(judge, seeds, [_batch_of(original)])
    result.compared = len(joint.names)
    count = len(joint.names)
    fetch = joint.names + joint.candidate_names
    for check in joint.local:
        fetch += check.original + check.candidate
    responses: Dict[str, float] = {}
    first: Optional[List[Any]] = None
    try:
        session = _session(joint.model, joint.weights)
        for number, seed in enumerate(seeds):
            feeds = _inputs(session.get_inputs()[: joint.inputs], seed, ranges)
            values = session.run(fetch, {**feeds, **_local_inputs(joint.local, seed)})
            expected = values[:count]
            for name, a, b in zip(joint.names, expected, values[count : 2 * count]):
                judge.record(name, a, b)
            _record_local(judge, joint.local, values[2 * count :])
            if number == 0:
                first = expected
            else:
                for name, a, b in zip(joint.names, first, expected):
                    responses[name] = max(responses.get(name, 0.0), relative_error(a, b))
    except Exception:  # noqa: BLE001 - one session per graph then says which graph fails, and why
        return None
    notes = []
    if changed:
        result.local_checks = len(joint.local)
        notes.append(
            f"{result.local_checks} rewritten nodes checked against the original subgraph they "
            f"replaced" + (f" ({joint.skipped} could not be cut out)" if joint.skipped else "")
        )
    return result, responses, notes


def _local_inputs(checks: Sequence[LocalCheck], seed: int) -> Dict[str, np.ndarray]:
    """Random normal inputs of every local check's boundary tensors (every channel excited, whatever
    the network would feed it); each seed draws its own."""
    rng = np.random.default_rng([seed, LOCAL_STREAM])
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for check in checks
        for name, shape in check.feeds.items()
    }


def _record_local(judge: Judge, checks: Sequence[LocalCheck], values: List[Any]) -> None:
    """Compare each rewritten node's outputs with the original subgraph's (``values``: each check's
    original outputs, then its candidate outputs, check after check)."""
    at = 0
    for check in checks:
        count = len(check.outputs)
        expected, got = values[at : at + count], values[at + count : at + 2 * count]
        at += 2 * count
        for name, a, b in zip(check.outputs, expected, got):
            judge.record(f"{name}{LOCAL_CHECK}{check.node})", a, b, name)


def changed_nodes(original: onnx.ModelProto, candidate: onnx.ModelProto) -> List[onnx.NodeProto]:
    """Candidate nodes with constant inputs (weights) that are not the original's node writing the
    same outputs with the same op, inputs, attributes and weight values: the rewrites."""
    weights = {t.name: t for t in original.graph.initializer}
    theirs = {t.name: t for t in candidate.graph.initializer}
    twins = {tuple(n.output): n for n in original.graph.node}
    changed = []
    for node in candidate.graph.node:
        constants = [name for name in node.input if name in theirs]
        if not constants:
            continue
        twin = twins.get(tuple(node.output))
        if (
            twin is not None
            and twin.op_type == node.op_type
            and list(twin.input) == list(node.input)
            and list(twin.attribute) == list(node.attribute)
            and all(weights.get(name) == theirs[name] for name in constants)
        ):
            continue
        changed.append(node)
    return changed


def _static_shape(model: onnx.ModelProto, name: str) -> Optional[Tuple[int, ...]]:
    for value in list(model.graph.input) + list(model.graph.value_info):
        if value.name == name and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
                return tuple(d.dim_value for d in dims)
    return None


def _check_locally(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    result: VerifyResult,
    judge: Judge,
    notes: List[str],
    seed: int,
) -> str:
    """Compare each rewritten node with the part of the original between the same tensors, on random
    normal inputs of the boundary tensors (every channel excited, whatever the network feeds it);
    returns why the candidate's part cannot run, if it cannot ('' otherwise)."""
    import onnx.utils

    changed = changed_nodes(original, candidate)
    if not changed:
        return ""
    known = {v.name for v in original.graph.input} | {
        o for n in original.graph.node for o in n.output
    }
    weights = {t.name for t in candidate.graph.initializer}
    extractors: List[Any] = []
    skipped = 0
    rng = np.random.default_rng(seed)
    for node in changed:
        inputs = [name for name in node.input if name and name not in weights]
        outputs = [name for name in node.output if name]
        shapes = [_static_shape(candidate, name) for name in inputs]
        if (
            not inputs
            or any(s is None for s in shapes)
            or any(n not in known for n in inputs + outputs)
        ):
            skipped += 1
            continue
        try:
            if not extractors:
                extractors = [onnx.utils.Extractor(original), onnx.utils.Extractor(candidate)]
            parts = [e.extract_model(inputs, outputs) for e in extractors]
            feeds = {
                name: rng.standard_normal(shape).astype(np.float32)
                for name, shape in zip(inputs, shapes)
            }
            expected = _session(parts[0]).run(outputs, feeds)
        except Exception:  # noqa: BLE001 - a boundary the original cannot be cut at (checked globally only)
            skipped += 1
            continue
        try:
            got = _session(parts[1]).run(outputs, feeds)
        except Exception as exc:  # noqa: BLE001
            return f"ONNX Runtime cannot run rewritten node {node.name}: {first_line(exc)}"
        result.local_checks += 1
        for name, a, b in zip(outputs, expected, got):
            judge.record(f"{name}{LOCAL_CHECK}{node.name})", a, b, name)
    notes.append(
        f"{result.local_checks} rewritten nodes checked against the original subgraph they replaced"
        + (f" ({skipped} could not be cut out)" if skipped else "")
    )
    return ""


def _different(result: VerifyResult, why: str) -> VerifyResult:
    result.status, result.note, result.max_rel_error = DIFFERENT, why, float("inf")
    result.difference = why
    return result


def _judge_response(
    result: VerifyResult,
    responses: Dict[str, float],
    outputs: List[str],
    notes: List[str],
    seeds: int,
) -> None:
    """Refuse to call a comparison verified when nothing it compared responds to the input."""
    if seeds < 2:
        notes.append("one seed: how strongly the tensors respond to the input was not measured")
        return
    result.responsive = sum(1 for r in responses.values() if r > RESPONSIVE)
    result.output_response = min((responses.get(o, 0.0) for o in outputs), default=0.0)
    if result.output_response <= RESPONSIVE:
        inner = result.responsive - sum(responses.get(o, 0.0) > RESPONSIVE for o in outputs)
        notes.append(
            f"an output barely responds to the input (relative change {result.output_response:.2g} "
            f"between two inputs); {inner} intermediate tensors that do were compared"
        )
    if result.status == EQUIVALENT and result.responsive == 0:
        result.status = NOT_VERIFIED
        notes.insert(
            0, "no compared tensor responds to the input (a wrong graph could pass this comparison)"
        )


def verify_fold(
    original: onnx.ModelProto,
    folded: onnx.ModelProto,
    seeds: Sequence[int] = SEEDS,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    tolerance: Optional[Tolerance] = None,
) -> VerifyResult:
    """Compare a fold with its original; raise ``FoldVerificationError`` when they differ. A
    comparison that cannot run (ONNX Runtime refuses the original) returns ``status == "not
    verified"`` with the reason."""
    result = compare_models(original, folded, seeds, batch_sizes, tolerance)
    if result.status == DIFFERENT:
        raise FoldVerificationError(
            f"folded graph differs from the original: {difference_text(result)}; the fold is "
            "wrong, do not use it (please report this model, or give --rtol/--atol if this is "
            "rounding)"
        )
    return result


def difference_text(result: VerifyResult) -> str:
    """What differs in a comparison whose status is ``DIFFERENT``, with the notes after it."""
    notes = result.note if result.note and result.note != result.difference else ""
    return (result.difference or "the graphs differ") + (f" ({notes})" if notes else "")


def _batch_of(model: onnx.ModelProto) -> int:
    inputs = graph_inputs(model)
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    return dims[0].dim_value if dims and dims[0].dim_value > 0 else 1
