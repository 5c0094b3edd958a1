"""FLOPs, parameters and bytes moved, counted from the ONNX graph itself.

So any ONNX file is counted alike.

Convention: FLOPs = 2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul, per sample
(``flop_count``; ``layer_costs`` keeps the whole batch, for rooflines); bias adds, activations,
pooling and other element-wise work are not counted (as fvcore and most papers do). Parameters =
elements of the floating-point constants the computing nodes read: initializers, Constant nodes and
what subgraphs of constants compute (weights made by ConstantOfShape, a float16 weight cast to
float32: counted once, as read). Bytes = the layer's inputs, weights and outputs at their stored
types.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import onnx

from harness.onnx_io import data_inputs, graph_inputs, infer_shapes_lenient

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass
class LayerCost:
    """Work of one graph node: FLOPs (2 x MACs) and bytes read and written."""

    name: str
    op_type: str
    flops: int
    bytes: int


def _shapes(model: onnx.ModelProto) -> Dict[str, List[Optional[int]]]:
    shapes = {}
    for info in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if not info.type.tensor_type.HasField("shape"):
            # no shape recorded (not a rank-0 shape): a hole, unless another entry knows it
            continue
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _itemsize(model: onnx.ModelProto) -> Dict[str, int]:
    sizes = {}
    for info in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        elem = info.type.tensor_type.elem_type
        if elem:
            sizes[info.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).itemsize
    for init in model.graph.initializer:
        sizes[init.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return sizes


def _numel(shape: Optional[List[Optional[int]]]) -> int:
    if shape is None or any(d is None or d <= 0 for d in shape):
        return 0
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _node_flops(node: onnx.NodeProto, shapes: Dict[str, List[Optional[int]]]) -> int:
    out = shapes.get(node.output[0]) if node.output else None
    if node.op_type == "Conv":
        w = shapes.get(node.input[1])
        if not w or not out:
            return 0
        return 2 * _numel(out) * _numel(w[1:])  # each output element: C_in/groups x kernel MACs
    if node.op_type == "ConvTranspose":
        w, x = shapes.get(node.input[1]), shapes.get(node.input[0])
        if not w or not x:
            return 0
        return 2 * _numel(x) * _numel(w[1:])
    if node.op_type in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0])
        if not a or not out:
            return 0
        trans_a = any(att.name == "transA" and att.i for att in node.attribute)
        k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
        return 2 * _numel(out) * (k or 0)
    return 0


def _needed(node: onnx.NodeProto) -> List[str]:
    """The tensors whose shapes a counted node's FLOPs need."""
    if node.op_type == "Conv" and len(node.input) > 1 and node.output:
        return [node.output[0], node.input[1]]
    if node.op_type == "ConvTranspose" and len(node.input) > 1:
        return [node.input[0], node.input[1]]
    if node.op_type in ("Gemm", "MatMul") and node.input and node.output:
        return [node.input[0], node.output[0]]
    return []


def _complete(shape: Optional[List[Optional[int]]]) -> bool:
    return shape is not None and all(d is not None and d > 0 for d in shape)


def _holes(model: onnx.ModelProto, shapes: Dict[str, List[Optional[int]]]) -> List[str]:
    """Names of counted nodes (Conv, ConvTranspose, Gemm, MatMul) with unknown or dynamic shapes."""
    return [
        node.name or node.output[0]
        for node in model.graph.node
        if node.op_type in COUNTED_OPS and not all(_complete(shapes.get(t)) for t in _needed(node))
    ]


@dataclasses.dataclass
class FlopCount:
    """FLOPs with where the shapes came from.

    ``holes`` names the counted nodes that no shape source could size.
    """

    total: int
    holes: List[str]
    source: str
    note: str = ""

    def text(self, unit: str = "M") -> str:
        """The count as ``flops_text`` writes it: a floor where nodes were not counted."""
        return flops_text(self.total, bool(self.holes), unit)

    def warning(self) -> str:
        """What the caller must say about this count ('' when it is complete)."""
        if not self.holes:
            return ""
        shown = ", ".join(self.holes[:5]) + (
            f" and {len(self.holes) - 5} more" if len(self.holes) > 5 else ""
        )
        return (
            f"FLOPs incomplete: {len(self.holes)} Conv/Gemm/MatMul nodes have no known shapes and "
            f"are not counted ({shown})"
        )


def flops_text(flops: int, floor: bool, unit: str = "M") -> str:
    """FLOPs in millions ('0.22M', ``unit`` after the number); a floor (nodes of unknown shapes
    not counted) as '>= 0.22M', or 'unknown' when nothing could be counted."""
    if floor and not flops:
        return "unknown"
    return (">= " if floor else "") + f"{flops / 1e6:.2f}{unit}"


def batch_one(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, str]:
    """A copy with a dynamic leading (batch) dim of every input set to 1, and the note saying so."""
    dynamic = [
        v
        for v in data_inputs(model)
        if v.type.tensor_type.shape.dim and not v.type.tensor_type.shape.dim[0].dim_value > 0
    ]
    if not dynamic:
        return model, ""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    names = {v.name for v in dynamic}
    for value in copy.graph.input:
        if value.name in names:
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = 1
    return copy, "dynamic batch counted at batch 1 (FLOPs per sample)"


def _static_inputs(model: onnx.ModelProto) -> bool:
    """Whether every graph input (initializers aside) has a fully known shape."""
    return all(
        v.type.tensor_type.HasField("shape")
        and _complete(
            [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        )
        for v in graph_inputs(model)
        if v.type.HasField("tensor_type")
    )


def _symbolic_shapes(model: onnx.ModelProto) -> Dict[str, List[Optional[int]]]:
    """Shapes from ONNX Runtime's symbolic shape inference (empty when it cannot run)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - an op it does not know, an old onnxruntime without the tool
        return {}
    return _shapes(inferred) if inferred is not None else {}


def observed_shapes(
    model: onnx.ModelProto, names: Optional[List[str]] = None
) -> Dict[str, List[int]]:
    """The shapes of ``names`` (default: every tensor a FLOP count needs) seen in one ONNX Runtime
    run on zeros (give the model static input shapes: a dynamic dim is run as 1). Empty when ONNX
    Runtime cannot run the model."""
    import onnxruntime as ort

    wanted = (
        names if names is not None else sorted({t for n in model.graph.node for t in _needed(n)})
    )
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(n)
        for n in wanted
        if n not in initializers and n not in outputs
    )
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(
            copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feeds = {}
        for arg in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
            kind = arg.type[len("tensor(") : -1]
            feeds[arg.name] = np.zeros(shape, np.float32 if kind == "float" else np.dtype(kind))
        names_out = [o.name for o in session.get_outputs()]
        found = dict(zip(names_out, (np.shape(v) for v in session.run(names_out, feeds))))
    except Exception:  # noqa: BLE001 - a model ONNX Runtime cannot run has no observed shapes
        return {}
    shapes = {n: list(found[n]) for n in wanted if n in found}
    shapes.update({n: initializers[n] for n in wanted if n in initializers})
    return shapes


def flop_count(model: onnx.ModelProto) -> FlopCount:
    """FLOPs from the most complete shape source: the model's inferred shapes, else ONNX Runtime's
    symbolic shape inference, else the shapes observed in one ONNX Runtime run; ``holes`` names what
    none could size."""
    model, note = batch_one(model)
    shapes = _shapes(model)
    source = "onnx shape inference"
    if _holes(model, shapes):
        shapes.update(
            {k: v for k, v in _shapes(infer_shapes_lenient(model)).items() if _complete(v)}
        )
    if _holes(model, shapes) and not _static_inputs(model):
        return FlopCount(
            count_flops_with(model, shapes),
            _holes(model, shapes),
            source,
            "; ".join(
                filter(
                    None,
                    [
                        note,
                        "inputs with dynamic dims besides the batch: the nodes "
                        "they size are holes (bind them to count them)",
                    ],
                )
            ),
        )
    if _holes(model, shapes):
        symbolic = _symbolic_shapes(model)
        if symbolic:
            shapes.update({k: v for k, v in symbolic.items() if _complete(v)})
            source = "ONNX Runtime symbolic shape inference"
    holes = _holes(model, shapes)
    if holes:
        missing = sorted(
            {
                t
                for n in model.graph.node
                if (n.name or (n.output[0] if n.output else "")) in holes
                for t in _needed(n)
            }
        )
        observed = observed_shapes(model, missing)
        if observed:
            shapes.update(observed)
            source = "shapes observed in one ONNX Runtime run"
    total = sum(_node_flops(node, shapes) for node in model.graph.node)
    batch = static_batch(model)
    if batch > 1:  # per sample, as a dynamic batch is counted: comparable across batch sizes
        total = round(total / batch)
        note = "; ".join(
            filter(None, [note, f"per sample: counted at batch {batch}, divided by {batch}"])
        )
    return FlopCount(total, _holes(model, shapes), source, note)


def static_batch(model: onnx.ModelProto) -> int:
    """The fixed batch of the model's main data inputs (those of the highest rank among
    ``onnx_io.data_inputs``), when they share one, else 1."""
    shapes = [v.type.tensor_type.shape.dim for v in data_inputs(model)]
    rank = max((len(dims) for dims in shapes), default=0)
    leading = {dims[0].dim_value for dims in shapes if rank >= 2 and len(dims) == rank}
    return leading.pop() if len(leading) == 1 and min(leading) > 1 else 1


def count_flops_with(model: onnx.ModelProto, shapes: Dict[str, List[int]]) -> int:
    """FLOPs of the model's counted nodes from the given tensor shapes."""
    return sum(_node_flops(node, shapes) for node in model.graph.node)


def layer_costs(model: onnx.ModelProto) -> List[LayerCost]:
    """Per-node FLOPs and bytes for a shape-inferred model (run ``onnx.shape_inference`` first)."""
    shapes, sizes = _shapes(model), _itemsize(model)
    costs = []
    for node in model.graph.node:
        moved = sum(
            _numel(shapes.get(t)) * sizes.get(t, 4)
            for t in list(node.input) + list(node.output)
            if t
        )
        costs.append(
            LayerCost(node.name or node.op_type, node.op_type, _node_flops(node, shapes), moved)
        )
    return costs


def count_flops(model: onnx.ModelProto) -> int:
    """Total FLOPs (2 x MACs of Conv/ConvTranspose/Gemm/MatMul), from ``flop_count``; warns (never
    silently) when some counted nodes have no known shapes."""
    count = flop_count(model)
    if count.holes:
        warnings.warn(count.warning(), stacklevel=2)
    return count.total


def count_params(model: onnx.ModelProto) -> int:
    """Number of floating-point parameters the graph computes with (see the module docstring):
    the elements of every float constant a computing node reads, whether stored (initializers,
    Constant nodes) or computed from constants (sized by shape inference, else by evaluating the
    constant subgraph with onnx.reference)."""
    read = _constants_read(model)
    known = _stored_constants(model)
    missing = [name for name in read if name not in known]
    if missing:
        known.update(_typed_shapes(model, missing))
    total = 0
    for name in read:
        elem, dims = known.get(name, (0, None))
        floating = elem and np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(elem), np.floating)
        if floating and dims is not None:
            total += int(np.prod(dims, dtype=np.int64)) if dims else 1
    return total


_SUBGRAPHS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_RANDOM = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli")
TypedShape = Tuple[int, Optional[List[int]]]  # element type and dims (None: unknown)


def _constant_nodes(model: onnx.ModelProto) -> Tuple[List[onnx.NodeProto], set]:
    """The nodes computing from constants alone (no subgraphs, no random draws), in graph order,
    and every constant tensor (initializers included)."""
    constant = {t.name for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if (
            node.op_type not in _RANDOM
            and not any(a.type in _SUBGRAPHS for a in node.attribute)
            and all(name in constant for name in node.input if name)
        ):
            nodes.append(node)
            constant.update(name for name in node.output if name)
    return nodes, constant


def _constants_read(model: onnx.ModelProto) -> List[str]:
    """The constant tensors a computing (non-constant) node or the graph's outputs read."""
    nodes, constant = _constant_nodes(model)
    folded = {id(node) for node in nodes}
    read: Dict[str, None] = {}
    for node in model.graph.node:
        if id(node) not in folded:
            read.update((name, None) for name in node.input if name in constant)
    read.update((o.name, None) for o in model.graph.output if o.name in constant)
    return list(read)


def _stored_constants(model: onnx.ModelProto) -> Dict[str, TypedShape]:
    """Initializers and Constant nodes' values -> element type and dims."""
    found: Dict[str, TypedShape] = {
        t.name: (t.data_type, list(t.dims)) for t in model.graph.initializer
    }
    for node in model.graph.node:
        if node.op_type != "Constant" or not node.output:
            continue
        for attribute in node.attribute:
            if attribute.name == "value":
                found[node.output[0]] = (attribute.t.data_type, list(attribute.t.dims))
            elif attribute.name in ("value_float", "value_floats"):
                count = [len(attribute.floats)] if attribute.name == "value_floats" else []
                found[node.output[0]] = (onnx.TensorProto.FLOAT, count)
    return found


def _typed_shapes(model: onnx.ModelProto, names: List[str]) -> Dict[str, TypedShape]:
    """Element type and dims of computed constants ``names``: from the model's shapes, from shape
    inference, else from evaluating the constant subgraph (onnx.reference)."""
    from harness.onnx_io import infer_shapes_lenient

    def typed(source: onnx.ModelProto) -> Dict[str, TypedShape]:
        values = list(source.graph.value_info) + list(source.graph.output)
        shapes = _shapes(source)
        return {
            v.name: (v.type.tensor_type.elem_type, shapes.get(v.name))
            for v in values
            if v.name in wanted and v.type.tensor_type.elem_type
        }

    wanted = set(names)
    found = {k: v for k, v in typed(model).items() if _complete(v[1])}
    if wanted - set(found):
        inferred = typed(infer_shapes_lenient(model))
        found.update({k: v for k, v in inferred.items() if _complete(v[1])})
    if wanted - set(found):
        found.update(_evaluated(model, sorted(wanted - set(found))))
    return found


def _evaluated(model: onnx.ModelProto, names: List[str]) -> Dict[str, TypedShape]:
    """Element type and dims of constants ``names``, computed by onnx.reference from the model's
    constant nodes (empty where it cannot evaluate them)."""
    from onnx.reference import ReferenceEvaluator

    nodes, _ = _constant_nodes(model)
    graph = onnx.helper.make_graph(
        nodes,
        "constants",
        [],
        [onnx.helper.make_empty_tensor_value_info(name) for name in names],
        list(model.graph.initializer),
    )
    constants = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    constants.ir_version = model.ir_version
    try:
        values = ReferenceEvaluator(constants).run(names, {})
    except Exception:  # noqa: BLE001 - an op onnx.reference lacks: those stay uncounted
        return {}
    return {
        name: (onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), list(np.shape(v)))
        for name, v in zip(names, values)
        if isinstance(v, np.ndarray) or np.isscalar(v)
    }


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    """How many nodes of each op type the graph holds."""
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def graph_facts(model: onnx.ModelProto) -> Dict[str, Any]:
    """What a results run records of its graph: FLOPs per sample (and whether they are a floor:
    nodes of unknown shapes not counted, with a warning), parameters and the op histogram."""
    flops = flop_count(model)
    if flops.holes:
        warnings.warn(flops.warning(), stacklevel=2)
    return {
        "flops": flops.total,
        "flops_floor": bool(flops.holes),
        "params": count_params(model),
        "nodes": op_histogram(model),
    }
