"""The precision a graph computes in, read from its declared types, so that no run is labelled
with a precision its graph does not have (an all-fp16 graph recorded as ``fp32``).

Runs on the device too: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

from typing import Dict

import onnx

from harness.errors import HarnessError

FLOAT_PRECISIONS = {
    onnx.TensorProto.FLOAT: "fp32",
    onnx.TensorProto.FLOAT16: "fp16",
    onnx.TensorProto.BFLOAT16: "bf16",
    onnx.TensorProto.DOUBLE: "fp64",
}
QUANTIZED_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
)


def graph_precision(model: onnx.ModelProto) -> str:
    """The precision a graph computes in, from its declared types (not from a profile's setting).

    ``int8`` when it has quantized ops; else the float type holding at least 90% of the float
    weights' elements (the graph inputs' float type when it has no float weights): ``fp32``,
    ``fp16``, ``bf16``, ``fp64``; ``mixed`` when no type holds 90%; ``unknown`` without floats.
    """
    if any(node.op_type in QUANTIZED_OPS for node in model.graph.node):
        return "int8"
    elements: Dict[str, int] = {}
    for tensor in model.graph.initializer:
        if tensor.data_type in FLOAT_PRECISIONS:
            name = FLOAT_PRECISIONS[tensor.data_type]
            count = 1
            for dim in tensor.dims:
                count *= dim
            elements[name] = elements.get(name, 0) + count
    if not elements:
        for value in model.graph.input:
            name = FLOAT_PRECISIONS.get(value.type.tensor_type.elem_type)
            if name:
                elements[name] = elements.get(name, 0) + 1
    total = sum(elements.values())
    if not total:
        return "unknown"
    name, count = max(elements.items(), key=lambda item: item[1])
    return name if count >= 0.9 * total else "mixed"


def check_graph_precision(model: onnx.ModelProto, precision: str, what: str) -> str:
    """The graph's precision, after refusing a run labelled fp32 whose graph computes otherwise."""
    found = graph_precision(model)
    if precision == "fp32" and found not in ("fp32", "unknown"):
        other = (
            f"use a profile whose precisions start with {found} (a TensorRT one)"
            if found in ("fp16", "int8")
            else "convert it to one precision"
        )
        raise HarnessError(
            f"{what} computes in {found}, but the profile runs and records fp32: "
            f"export it in fp32, or {other}"
        )
    return found
