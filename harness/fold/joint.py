"""One ONNX graph that computes an original graph and a candidate side by side, for verification.

ONNX Runtime then loads one model (serialised once, the weights both graphs share stored once) and
one run per input computes both graphs, every tensor they share, and each rewritten node next to the
part of the original it replaced (on inputs of its own, named in ``LocalCheck``). The candidate's
tensors, and the local checks' copies, are renamed under a prefix no name of either graph starts
with; an initializer of the candidate that equals the original's of the same name is shared.

Graphs this cannot join (different opsets, model-local functions, control flow with subgraphs,
inputs that differ in number or type, outputs that are not computed by a node) get ``None``: the
caller compares them with a session per graph instead.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import helper

from harness.fold.skeleton import external_stub, is_large
from harness.onnx_io import graph_inputs

Renamer = Callable[[str], str]


@dataclasses.dataclass
class LocalCheck:
    """A rewritten candidate node and the original subgraph between the same tensors, in the joint
    graph: fed random normal float32 ``feeds`` (joint input name -> shape); ``outputs`` are the
    node's tensors (original names), ``original`` and ``candidate`` their joint names."""

    node: str
    outputs: List[str]
    original: List[str]
    candidate: List[str]
    feeds: Dict[str, Tuple[int, ...]]


@dataclasses.dataclass
class JointModel:
    """The joint graph; its first ``inputs`` inputs are the original's own, the local checks'
    follow. ``names`` (original naming) are computed by the original under those names and by the
    candidate under ``candidate_names``."""

    model: onnx.ModelProto
    inputs: int
    names: List[str]
    candidate_names: List[str]
    local: List[LocalCheck]
    skipped: int  # rewritten nodes whose original subgraph could not be cut out
    weights: Dict[str, np.ndarray]  # external data file name -> its bytes (``outside``)


def _names(model: onnx.ModelProto) -> Set[str]:
    graph = model.graph
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _free_root(models: Sequence[onnx.ModelProto]) -> str:
    """A name prefix no tensor or node name of the models starts with."""
    names: Set[str] = set().union(*(_names(m) for m in models))
    count = 0
    while True:
        root = f"verify{count or ''}/"
        if not any(name.startswith(root) for name in names):
            return root
        count += 1


def _joinable(original: onnx.ModelProto, candidate: onnx.ModelProto) -> bool:
    """Whether one graph can compute both (see the module docstring)."""

    def opsets(model: onnx.ModelProto) -> Dict[str, int]:
        return {o.domain or "ai.onnx": o.version for o in model.opset_import}

    subgraphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for model in (original, candidate):
        produced = {o for node in model.graph.node for o in node.output}
        if (
            model.functions
            or model.graph.sparse_initializer
            or any(a.type in subgraphs for n in model.graph.node for a in n.attribute)
            or any(o.name not in produced for o in model.graph.output)
        ):
            return False
    mine, theirs = graph_inputs(original), graph_inputs(candidate)
    return (
        opsets(original) == opsets(candidate)
        and len(mine) == len(theirs)
        and all(a.type == b.type for a, b in zip(mine, theirs))
        and len(original.graph.output) == len(candidate.graph.output)
    )


def _add_initializer(
    graph: onnx.GraphProto,
    tensor: onnx.TensorProto,
    name: str,
    weights: Optional[Dict[str, np.ndarray]],
) -> None:
    """Add a copy of ``tensor`` named ``name``; with ``weights``, a large one's bytes go there
    instead (external data an ONNX Runtime session reads from memory: the graph is not serialised
    with them)."""
    if weights is None or not is_large(tensor):
        copy = graph.initializer.add()
        copy.CopyFrom(tensor)
        copy.name = name
        return
    location = f"weight{len(weights)}.bin"
    weights[location] = np.frombuffer(tensor.raw_data, np.uint8)
    graph.initializer.append(external_stub(tensor, name, location))


def _renamed_node(node: onnx.NodeProto, rename: Renamer, prefix: str) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    del copy.input[:]
    copy.input.extend(rename(name) if name else "" for name in node.input)
    del copy.output[:]
    copy.output.extend(rename(name) if name else "" for name in node.output)
    copy.name = prefix + node.name if node.name else ""
    return copy


def _renamed_value(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    copy.name = name
    return copy


def _cut(
    nodes: Sequence[onnx.NodeProto],
    producer: Dict[str, int],
    inputs: Set[str],
    outputs: Sequence[str],
    weights: Set[str],
) -> Optional[List[onnx.NodeProto]]:
    """The nodes that compute ``outputs`` from ``inputs`` and ``weights`` (in graph order), or None
    when they need another tensor (a graph input outside the cut)."""
    needed: Set[int] = set()
    seen: Set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if not name or name in seen or name in inputs or name in weights:
            continue
        seen.add(name)
        index = producer.get(name)
        if index is None:
            return None
        if index not in needed:
            needed.add(index)
            stack.extend(nodes[index].input)
    return [nodes[i] for i in sorted(needed)]


def _float_shape(model: onnx.ModelProto, name: str) -> Optional[Tuple[int, ...]]:
    """The static shape of a float32 tensor of the model (input or inferred), else None."""
    for value in list(model.graph.input) + list(model.graph.value_info):
        tensor = value.type.tensor_type
        if value.name == name and tensor.HasField("shape"):
            dims = tensor.shape.dim
            if tensor.elem_type != onnx.TensorProto.FLOAT or not all(
                d.HasField("dim_value") and d.dim_value > 0 for d in dims
            ):
                return None
            return tuple(d.dim_value for d in dims)
    return None


def joint_model(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    shared: Sequence[str],
    changed: Sequence[onnx.NodeProto],
    outside: bool = False,
) -> Optional[JointModel]:
    """Join the graphs (None when they cannot be joined): ``shared`` intermediate tensors (names
    both graphs compute) are compared besides the outputs, and each of the ``changed`` candidate
    nodes is checked against the original subgraph it replaced. ``outside``: large weights are left
    out of the graph, as external data held in memory (``JointModel.weights``)."""
    if not _joinable(original, candidate):
        return None
    root = _free_root((original, candidate))
    prefix = root + "candidate/"
    graph = onnx.GraphProto(name="verification")
    feeds = graph_inputs(original)
    graph.input.extend(feeds)
    weights: Dict[str, np.ndarray] = {}
    for tensor in original.graph.initializer:
        _add_initializer(graph, tensor, tensor.name, weights if outside else None)
    graph.node.extend(original.graph.node)
    mine = {t.name: t for t in original.graph.initializer}
    theirs = {t.name: t for t in candidate.graph.initializer}
    renames = {c.name: o.name for c, o in zip(graph_inputs(candidate), feeds)}
    for name, tensor in theirs.items():
        if name in mine and mine[name] == tensor:
            renames[name] = name
        else:
            renames[name] = prefix + name
            _add_initializer(graph, tensor, prefix + name, weights if outside else None)

    def in_candidate(name: str) -> str:
        return renames.get(name, prefix + name)

    graph.node.extend(_renamed_node(n, in_candidate, prefix) for n in candidate.graph.node)
    values = {v.name: v for v in list(original.graph.value_info) + list(original.graph.output)}
    names = [o.name for o in original.graph.output] + list(shared)
    graph.output.extend(values[name] for name in names)
    candidate_names = [in_candidate(o.name) for o in candidate.graph.output]
    candidate_names += [in_candidate(name) for name in shared]
    graph.output.extend(_renamed_value(o, in_candidate(o.name)) for o in candidate.graph.output)
    graph.output.extend(_renamed_value(values[name], in_candidate(name)) for name in shared)
    local, skipped = _local_checks(original, candidate, changed, values, graph, root, in_candidate)
    model = helper.make_model(graph, opset_imports=list(original.opset_import))
    model.ir_version = max(original.ir_version, candidate.ir_version)
    return JointModel(model, len(feeds), names, candidate_names, local, skipped, weights)


def _local_checks(
    original: onnx.ModelProto,
    candidate: onnx.ModelProto,
    changed: Sequence[onnx.NodeProto],
    values: Dict[str, onnx.ValueInfoProto],
    graph: onnx.GraphProto,
    root: str,
    in_candidate: Renamer,
) -> Tuple[List[LocalCheck], int]:
    """Add each changed node's local check to the joint ``graph``; (checks, nodes not cut out)."""
    weights = {t.name for t in original.graph.initializer}
    theirs = {t.name for t in candidate.graph.initializer}
    producers = [
        {o: i for i, node in enumerate(model.graph.node) for o in node.output if o}
        for model in (original, candidate)
    ]
    checks: List[LocalCheck] = []
    skipped = 0
    for index, node in enumerate(changed):
        inputs = [name for name in node.input if name and name not in theirs]
        outputs = [name for name in node.output if name]
        shapes = [_float_shape(candidate, name) for name in inputs]
        typed = all(name in values and values[name].type.tensor_type.elem_type for name in outputs)
        cuts = [
            _cut(model.graph.node, producer, set(inputs), outputs, known)
            for model, producer, known in zip((original, candidate), producers, (weights, theirs))
        ]
        if not inputs or any(s is None for s in shapes) or not typed or None in cuts:
            skipped += 1
            continue
        base = f"{root}local{index}/"
        boundary = {name: f"{base}input/{name}" for name in inputs}

        def in_original(name: str, base: str = base, boundary: Dict = boundary) -> str:
            return boundary.get(name) or (name if name in weights else f"{base}original/{name}")

        def in_rewrite(name: str, base: str = base, boundary: Dict = boundary) -> str:
            return boundary.get(name) or (
                in_candidate(name) if name in theirs else f"{base}candidate/{name}"
            )

        graph.node.extend(_renamed_node(n, in_original, f"{base}original/") for n in cuts[0])
        graph.node.extend(_renamed_node(n, in_rewrite, f"{base}candidate/") for n in cuts[1])
        graph.input.extend(
            helper.make_tensor_value_info(boundary[name], onnx.TensorProto.FLOAT, shape)
            for name, shape in zip(inputs, shapes)
        )
        check = LocalCheck(
            node.name,
            outputs,
            [in_original(name) for name in outputs],
            [in_rewrite(name) for name in outputs],
            {boundary[name]: shape for name, shape in zip(inputs, shapes)},  # type: ignore[misc]
        )
        graph.output.extend(
            _renamed_value(values[name], joint)
            for name, joint in zip(outputs * 2, check.original + check.candidate)
        )
        checks.append(check)
    return checks, skipped
