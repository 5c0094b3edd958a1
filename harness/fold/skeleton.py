"""A model's graph without its weights' bytes, for the tools that only need its structure.

onnx's shape inference and ONNX Runtime's loader take a serialised model: for ResNet-50 that is
100 MB written and parsed again, ~0.5 s, every time. Their work does not depend on the values of
large weights, only on their types and shapes, so they get a skeleton whose large initializers are
external-data stubs (same name, type and dims; the bytes stay where they are). Small initializers
stay inline: shape inference reads shapes and axes from them.
"""

from __future__ import annotations

import onnx

from harness.onnx_io import checker_problem, infer_shapes_lenient

INLINE_BYTES = 4096  # initializers smaller than this stay in a skeleton with their values
_T = onnx.TensorProto
ITEM_BYTES = {  # element types whose raw data is a whole number of bytes per element
    **dict.fromkeys((_T.FLOAT, _T.INT32, _T.UINT32), 4),
    **dict.fromkeys((_T.DOUBLE, _T.INT64, _T.UINT64), 8),
    **dict.fromkeys((_T.FLOAT16, _T.BFLOAT16, _T.INT16, _T.UINT16), 2),
    **dict.fromkeys((_T.INT8, _T.UINT8, _T.BOOL), 1),
}
VALUE_FIELDS = (
    "float_data",
    "int32_data",
    "string_data",
    "int64_data",
    "double_data",
    "uint64_data",
)


def external_stub(tensor: onnx.TensorProto, name: str, location: str) -> onnx.TensorProto:
    """``tensor``'s name (``name``), type and dims, its bytes said to be in the external data file
    ``location`` (offset 0, the tensor's raw length)."""
    stub = onnx.TensorProto(name=name, data_type=tensor.data_type, dims=tensor.dims)
    stub.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (
        ("location", location),
        ("offset", "0"),
        ("length", str(len(tensor.raw_data))),
    ):
        entry = stub.external_data.add()
        entry.key, entry.value = key, value
    return stub


def is_large(tensor: onnx.TensorProto) -> bool:
    """Whether a skeleton leaves the tensor's bytes out (raw data of ``INLINE_BYTES`` or more)."""
    return (
        tensor.data_location != onnx.TensorProto.EXTERNAL and len(tensor.raw_data) >= INLINE_BYTES
    )


def _copy_fields(source, target, skip: str) -> None:
    """Copy every set field of a proto message but ``skip`` into an empty one of the same type."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        repeated = getattr(field, "is_repeated", None)  # protobuf < 5: only ``label`` says it
        if repeated if repeated is not None else field.label == field.LABEL_REPEATED:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose large initializers are external-data stubs (see the module); the
    weights' bytes are not copied."""
    copy = onnx.ModelProto()
    _copy_fields(model, copy, skip="graph")
    _copy_fields(model.graph, copy.graph, skip="initializer")
    for tensor in model.graph.initializer:
        if is_large(tensor):
            copy.graph.initializer.append(external_stub(tensor, tensor.name, "weights.bin"))
        else:
            copy.graph.initializer.append(tensor)
    return copy


def infer_shapes_quick(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """``harness.onnx_io.infer_shapes_lenient`` run on the skeleton: the same inferred shapes,
    without serialising the weights. Returns ``model`` with the inferred value_info and outputs, a
    copy of it unless ``in_place`` (``model`` itself, unchanged, when inference fails, as the
    lenient inference does)."""
    bare = skeleton(model)
    inferred = infer_shapes_lenient(bare)
    if inferred is bare:
        return model
    if not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def checker_problem_quick(model: onnx.ModelProto) -> str:
    """What ``onnx.checker`` finds wrong with the model ('' when it passes), without serialising
    its weights: large raw initializers of whole-byte types enter the checker as empty tensors of
    their name and type, and what the checker verifies of them (the raw bytes match the declared
    shape and type; no second value field) is verified here."""
    copy = onnx.ModelProto()
    _copy_fields(model, copy, skip="graph")
    _copy_fields(model.graph, copy.graph, skip="initializer")
    for tensor in model.graph.initializer:
        item = ITEM_BYTES.get(tensor.data_type)
        if item is None or not is_large(tensor):
            copy.graph.initializer.append(tensor)
            continue
        required = item
        for dim in tensor.dims:
            required *= dim
        if len(tensor.raw_data) != required:
            return (
                f"TensorProto (tensor name: {tensor.name}) raw_data size "
                f"({len(tensor.raw_data)} bytes) does not match the declared shape and type "
                f"({required} bytes required)"
            )
        if any(len(getattr(tensor, field)) for field in VALUE_FIELDS):
            return (
                f"TensorProto (tensor name: {tensor.name}) should contain one and only one value "
                f"field."
            )
        copy.graph.initializer.append(
            onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=[0])
        )
    return checker_problem(copy)
