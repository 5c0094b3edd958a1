"""FLOPs, parameters and bytes moved, counted from the ONNX graph itself (so any ONNX file is counted alike).

Convention: FLOPs = 2 x multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (batch included); bias adds,
activations, pooling and other element-wise work are not counted (as fvcore and most papers do). Parameters =
elements of floating-point initializers. Bytes = the layer's inputs, weights and outputs at their stored types.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import onnx

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


def layer_costs(model: onnx.ModelProto) -> List[LayerCost]:
    """Per-node FLOPs and bytes for a shape-inferred model (run ``onnx.shape_inference`` first)."""
    shapes, sizes = _shapes(model), _itemsize(model)
    costs = []
    for node in model.graph.node:
        moved = sum(_numel(shapes.get(t)) * sizes.get(t, 4) for t in list(node.input) + list(node.output) if t)
        costs.append(LayerCost(node.name or node.op_type, node.op_type, _node_flops(node, shapes), moved))
    return costs


def count_flops(model: onnx.ModelProto) -> int:
    """Total FLOPs (2 x MACs of Conv/ConvTranspose/Gemm/MatMul) of a shape-inferred model."""
    return sum(c.flops for c in layer_costs(model))


def count_params(model: onnx.ModelProto) -> int:
    """Number of floating-point parameters stored in the model's initializers."""
    total = 0
    for init in model.graph.initializer:
        if np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type), np.floating):
            total += int(np.prod(init.dims, dtype=np.int64)) if init.dims else 1
    return total


def op_histogram(model: onnx.ModelProto) -> Dict[str, int]:
    """How many nodes of each op type the graph holds."""
    counts: Dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
