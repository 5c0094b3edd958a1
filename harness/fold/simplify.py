"""Passes that need no cost decision: BatchNorm into the preceding Conv/Gemm, identity-like nodes
removed."""

from __future__ import annotations

from typing import List

import numpy as np
import onnx_graphsurgeon as gs

from harness.fold.algebra import bn_scale_shift
from harness.fold.graph import (
    bypass,
    constant,
    conv_view,
    plain_gemm,
    producer,
    rewire,
    set_inputs,
    sole_consumer,
    write_conv,
)
from harness.fold.report import FoldAction, FoldRecord


def bn_params(bn: gs.Node):
    """BatchNorm as per-channel (scale, shift), or None for training-mode or non-constant
    statistics."""
    values = [constant(t) for t in bn.inputs[1:5]]
    if any(v is None for v in values) or len(bn.outputs) != 1:
        return None  # training-mode BN (mean/var outputs) or non-constant statistics
    return bn_scale_shift(*values, float(bn.attrs.get("epsilon", 1e-5)))


def fold_batchnorm(graph: gs.Graph) -> List[FoldRecord]:
    """Fold every BatchNormalization whose input comes only from a Conv (or a Gemm) into that
    layer."""
    records = []
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        source = producer(bn.inputs[0])
        if source is None or sole_consumer(graph, bn.inputs[0]) is not bn:
            continue
        params = bn_params(bn)
        if params is None:
            continue
        scale, shift = params
        view = conv_view(source) if source.op == "Conv" else None
        if source.op in ("Conv", "ConvTranspose") and view is None:
            if not _fold_bn_into_any_conv(source, scale, shift):
                continue
        elif source.op == "Conv":
            bias = (
                np.zeros(view.out_channels) if view.bias is None else view.bias.astype(np.float64)
            )
            weight = view.weight.astype(np.float64) * scale[:, None, None, None]
            write_conv(
                view,
                weight,
                bias * scale + shift,
                view.strides,
                view.pads,
                view.groups,
                view.dilations,
            )
        elif source.op == "Gemm":
            if not _fold_bn_into_gemm(source, scale, shift):
                continue
        elif source.op != "Add" or not _fold_bn_into_matmul_add(graph, source, scale, shift):
            continue
        source.outputs[0] = bn.outputs[0]
        bn.inputs.clear()
        bn.outputs.clear()
        records.append(
            FoldRecord(
                "fold_batchnorm",
                FoldAction.FOLDED,
                [bn.name, source.name],
                "BatchNormalization folded into "
                + ("MatMul + Add" if source.op == "Add" else source.op),
                result=source.name,
            )
        )
    return records


def _fold_bn_into_any_conv(conv: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    """Scale the output channels of a Conv of any spatial rank and padding mode, or of a
    ConvTranspose (weight (C_in, C_out / group, k...)), with constant weights; False otherwise.
    Padding does not matter: a padded border is the bias alone, scaled and shifted alike."""
    weight = constant(conv.inputs[1]) if len(conv.inputs) > 1 else None
    has_bias = len(conv.inputs) > 2 and conv.inputs[2] is not None and conv.inputs[2].name
    bias = constant(conv.inputs[2]) if has_bias else None
    if weight is None or weight.ndim < 3 or (has_bias and bias is None):
        return False
    groups = int(conv.attrs.get("group", 1))
    w = weight.astype(np.float64)
    taps = (1,) * (w.ndim - 2)
    if conv.op == "Conv":
        if w.shape[0] != scale.shape[0]:
            return False
        folded = w * scale.reshape(-1, 1, *taps)
    else:
        per_group = w.shape[1]
        if w.shape[0] % groups or per_group * groups != scale.shape[0]:
            return False
        grouped = w.reshape(groups, w.shape[0] // groups, per_group, *w.shape[2:])
        folded = (grouped * scale.reshape(groups, 1, per_group, *taps)).reshape(w.shape)
    b = np.zeros(scale.shape) if bias is None else bias.astype(np.float64).reshape(-1)
    name = conv.name or conv.outputs[0].name
    set_inputs(
        conv,
        [
            conv.inputs[0],
            gs.Constant(f"{name}.folded_weight", folded.astype(weight.dtype)),
            gs.Constant(f"{name}.folded_bias", (b * scale + shift).astype(weight.dtype)),
        ],
    )
    return True


def _fold_bn_into_gemm(gemm: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
    """Scale a plain Gemm's output columns (``plain_gemm``); False when the Gemm is not plain."""
    plain = plain_gemm(gemm)
    if plain is None or plain[0].shape[1] != scale.shape[0]:
        return False
    matrix, bias = plain
    dtype = constant(gemm.inputs[1]).dtype
    name = gemm.name or gemm.outputs[0].name
    gemm.attrs["transB"] = 0
    set_inputs(
        gemm,
        [
            gemm.inputs[0],
            gs.Constant(f"{name}.folded_weight", (matrix * scale[None, :]).astype(dtype)),
            gs.Constant(f"{name}.folded_bias", (bias * scale + shift).astype(dtype)),
        ],
    )
    return True


def _fold_bn_into_matmul_add(
    graph: gs.Graph, add: gs.Node, scale: np.ndarray, shift: np.ndarray
) -> bool:
    """Fold into ``Add(MatMul(x, W), b)`` on rank-2 tensors (a Linear layer exported as MatMul +
    Add)."""
    if len(add.inputs) != 2 or add.outputs[0].shape is None or len(add.outputs[0].shape) != 2:
        return False
    if constant(add.inputs[0]) is not None:
        set_inputs(add, [add.inputs[1], add.inputs[0]])
    matmul, bias = producer(add.inputs[0]), constant(add.inputs[1])
    if (
        matmul is None
        or matmul.op != "MatMul"
        or bias is None
        or sole_consumer(graph, add.inputs[0]) is not add
    ):
        return False
    weight = constant(matmul.inputs[1])
    if (
        weight is None
        or weight.ndim != 2
        or weight.shape[1] != scale.size
        or bias.size not in (1, scale.size)
    ):
        return False
    name = matmul.name or matmul.outputs[0].name
    matmul.outputs[
        0
    ].name += ".bn_folded"  # a new value: never compared with the original's tensor of that name
    matmul.inputs[1] = gs.Constant(
        f"{name}.folded_weight", (weight.astype(np.float64) * scale).astype(weight.dtype)
    )
    folded_bias = np.broadcast_to(bias.astype(np.float64).reshape(-1), scale.shape) * scale + shift
    add.inputs[1] = gs.Constant(f"{name}.folded_bias", folded_bias.astype(bias.dtype))
    return True


def _is_constant_value(tensor: gs.Tensor, value: float) -> bool:
    values = constant(tensor)
    return values is not None and values.size > 0 and bool(np.all(values == value))


def _same_shape_out(node: gs.Node) -> bool:
    """The node's output has the shape of its first input (a broadcast against a constant does
    not grow it)."""
    source, result = node.inputs[0], node.outputs[0]
    return (
        source.shape is not None
        and result.shape is not None
        and list(source.shape) == list(result.shape)
        and all(isinstance(d, int) for d in source.shape)
    )


def _identity_like(node: gs.Node) -> str:
    """Why the node computes the identity of its first input ('' when it does not)."""
    if node.op == "Identity":
        return "Identity"
    if node.op == "Dropout" and (len(node.outputs) == 1 or not node.outputs[1].outputs):
        training = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        if training is None or _is_constant_value(training, 0):
            return "Dropout (inference)"
        return ""  # training_mode true or computed: random, not an identity
    if (
        len(node.inputs) == 2
        and node.op in ("Add", "Mul")
        and constant(node.inputs[0]) is not None
        and constant(node.inputs[1]) is None
    ):
        set_inputs(node, [node.inputs[1], node.inputs[0]])  # commutative: put the constant second
    if len(node.inputs) == 2 and _same_shape_out(node):
        other = node.inputs[1]
        if node.op in ("Mul", "Div") and _is_constant_value(other, 1.0):
            return f"{node.op} by 1"
        if node.op in ("Add", "Sub") and _is_constant_value(other, 0.0):
            return f"{node.op} of 0"
        if node.op == "Reshape":
            return "Reshape to the same shape"
    return ""


def remove_identities(graph: gs.Graph) -> List[FoldRecord]:
    """Remove Identity, inference Dropout, Mul/Div by 1, Add/Sub of 0, no-op Reshapes and
    cancelling Transposes."""
    records = []
    for node in list(graph.nodes):
        if not node.outputs:
            continue
        reason = _identity_like(node)
        if reason:
            while (
                len(node.outputs) > 1
            ):  # an unread Dropout mask (slice assignment breaks graphsurgeon's links)
                node.outputs.pop()
            if bypass(graph, node):
                records.append(
                    FoldRecord("remove_identities", FoldAction.REMOVED, [node.name], reason)
                )
        elif node.op == "Transpose":
            records += _cancel_transposes(graph, node)
    return records


def _cancel_transposes(graph: gs.Graph, first: gs.Node) -> List[FoldRecord]:
    second = sole_consumer(graph, first.outputs[0])
    if (
        second is None
        or second.op != "Transpose"
        or "perm" not in first.attrs
        or "perm" not in second.attrs
        or second.outputs[0] in graph.outputs
    ):
        return []
    p1, p2 = list(first.attrs["perm"]), list(second.attrs["perm"])
    if [p1[i] for i in p2] != list(range(len(p1))):
        return []
    source = first.inputs[0]
    rewire(second.outputs[0], source)
    first.outputs.clear()
    second.outputs.clear()
    return [
        FoldRecord(
            "remove_identities",
            FoldAction.REMOVED,
            [first.name, second.name],
            "Transpose pair that cancels",
        )
    ]


def fold_zero_pads(graph: gs.Graph) -> List[FoldRecord]:
    """Fold a constant-zero ``Pad`` of the spatial axes into the Convs that read it (their
    ``pads`` grow)."""
    records = []
    for pad in [n for n in graph.nodes if n.op == "Pad" and n.outputs]:
        amounts = _spatial_zero_pads(pad)
        out = pad.outputs[0]
        readers = list(out.outputs)
        if amounts is None or not readers or out in graph.outputs:
            continue
        views = [conv_view(r) for r in readers]
        if any(
            v is None
            or v.node.inputs[0] is not out
            or v.node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET")
            for v in views
        ):
            continue
        for view in views:
            pads = [p + a for p, a in zip(view.pads, amounts)]
            view.node.attrs["pads"] = pads
            view.node.inputs[0] = pad.inputs[0]
        records.append(
            FoldRecord(
                "fold_zero_pads",
                FoldAction.FOLDED,
                [pad.name] + [v.name for v in views],
                f"zero Pad {amounts} (top, left, bottom, right) moved into the Conv's pads",
            )
        )
    return records


def _spatial_zero_pads(pad: gs.Node):
    """(top, left, bottom, right) of a constant-zero Pad that pads only H and W of an NCHW
    tensor, else None."""
    mode = pad.attrs.get("mode", "constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if "pads" in pad.attrs:  # opset < 11
        amounts, value = list(pad.attrs["pads"]), float(pad.attrs.get("value", 0.0))
    else:
        amounts = constant(pad.inputs[1]) if len(pad.inputs) > 1 else None
        fill = pad.inputs[2] if len(pad.inputs) > 2 and pad.inputs[2].name else None
        value = (
            0.0
            if fill is None
            else (
                float(constant(fill).reshape(-1)[0])
                if constant(fill) is not None and constant(fill).size == 1
                else None
            )
        )
        if amounts is None or value is None or (len(pad.inputs) > 3 and pad.inputs[3].name):
            return None  # computed pads, a non-constant fill value, or explicit axes
        amounts = [int(a) for a in amounts.reshape(-1)]
    if (
        value != 0.0
        or len(amounts) != 8
        or any(amounts[i] for i in (0, 1, 4, 5))
        or min(amounts) < 0
    ):
        return None
    return (amounts[2], amounts[3], amounts[6], amounts[7])


def explicit_pads(graph: gs.Graph) -> List[FoldRecord]:
    """Write a 2-D Conv's ``auto_pad`` SAME_UPPER or SAME_LOWER as the explicit ``pads`` ONNX
    defines for it, where the input's spatial size is known: the other passes read explicit pads
    (and VALID) only. SAME pads total ``max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` per
    axis, the odd one at the end (UPPER) or the start (LOWER)."""
    records = []
    for node in [n for n in graph.nodes if n.op == "Conv" and "auto_pad" in n.attrs]:
        mode = node.attrs["auto_pad"]
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        weight = constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if mode not in ("SAME_UPPER", "SAME_LOWER") or weight is None or weight.ndim != 4:
            continue  # NOTSET and VALID need no sizes; other convs are never folded
        shape = getattr(node.inputs[0], "shape", None)
        sizes = list(shape[2:]) if shape is not None and len(shape) == 4 else None
        if sizes is None or not all(isinstance(n, int) and n > 0 for n in sizes):
            records.append(
                FoldRecord(
                    "explicit_pads",
                    FoldAction.REFUSED,
                    [node.name],
                    f"auto_pad {mode} on an input of unknown spatial size: bind it with "
                    "--input-shape to fold this conv",
                )
            )
            continue
        strides = list(node.attrs.get("strides", [1, 1]))
        dilations = list(node.attrs.get("dilations", [1, 1]))
        begin, end = [0, 0], [0, 0]
        for axis, size in enumerate(sizes):
            stride, extent = strides[axis], (weight.shape[2 + axis] - 1) * dilations[axis] + 1
            total = max((-(-size // stride) - 1) * stride + extent - size, 0)
            small, large = total // 2, total - total // 2
            begin[axis], end[axis] = (small, large) if mode == "SAME_UPPER" else (large, small)
        node.attrs.pop("auto_pad")
        node.attrs["pads"] = begin + end
        records.append(
            FoldRecord(
                "explicit_pads",
                FoldAction.FOLDED,
                [node.name],
                f"auto_pad {mode} written as pads {begin + end} (top, left, bottom, right)",
            )
        )
    return records
