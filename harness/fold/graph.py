"""Small helpers over onnx-graphsurgeon graphs: conv views, producers and consumers, bypassing
nodes."""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from harness.geometry import ConvGeometry, Shape4


def producer(tensor: gs.Tensor) -> Optional[gs.Node]:
    """The node that writes ``tensor`` (None for graph inputs and constants)."""
    return tensor.inputs[0] if tensor.inputs else None


def sole_consumer(graph: gs.Graph, tensor: gs.Tensor) -> Optional[gs.Node]:
    """The only node reading ``tensor``, provided the tensor is not also a graph output."""
    if len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.outputs[0]


def static_shape4(tensor: gs.Tensor) -> Optional[Shape4]:
    """The tensor's shape when it is 4-D with every dimension a known positive size, else None."""
    shape = tensor.shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape):
        return None
    return tuple(shape)  # type: ignore[return-value]


def constant(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """The values of a constant tensor, else None."""
    return tensor.values if isinstance(tensor, gs.Constant) else None


def set_inputs(node: gs.Node, tensors: List[gs.Tensor]) -> None:
    """Replace a node's inputs, keeping graphsurgeon's two-way links consistent."""
    node.inputs.clear()
    for tensor in tensors:
        node.inputs.append(tensor)


def rewire(old: gs.Tensor, new: gs.Tensor, skip: Optional[gs.Node] = None) -> None:
    """Make every reader of ``old`` (but ``skip``) read ``new`` instead."""
    for reader in list(old.outputs):
        if reader is skip:
            continue
        for i, tensor in enumerate(reader.inputs):
            if tensor is old:
                reader.inputs[i] = new


def bypass(graph: gs.Graph, node: gs.Node) -> bool:
    """Remove a node whose output equals its first input, rewiring readers; False when it cannot
    be done."""
    source, result = node.inputs[0], node.outputs[0]
    if result in graph.outputs:
        if source in graph.inputs or source in graph.outputs or isinstance(source, gs.Constant):
            return False
        writer = producer(source)
        if writer is None:
            return False
        rewire(source, result, skip=node)
        writer.outputs[writer.outputs.index(source)] = result
    else:
        rewire(result, source)
    node.inputs.clear()
    node.outputs.clear()
    return True


@dataclasses.dataclass
class ConvView:
    """A 2-D Conv node with constant weights, its attributes normalised for rewriting it; its shape
    as the cost models see it is ``geometry``."""

    node: gs.Node
    weight: np.ndarray
    bias: Optional[np.ndarray]
    strides: Tuple[int, int]
    pads: Tuple[int, int, int, int]  # top, left, bottom, right (ONNX order: begins then ends)
    dilations: Tuple[int, int]
    groups: int

    @property
    def kernel(self) -> Tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def effective_kernel(self) -> Tuple[int, int]:
        """Kernel extent once dilation is expanded."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))  # type: ignore

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def geometry(self) -> Optional[ConvGeometry]:
        """The conv's geometry (stride along H), or None when its input or output shape is not
        static."""
        in_shape = static_shape4(self.node.inputs[0])
        out_shape = static_shape4(self.node.outputs[0])
        if in_shape is None or out_shape is None:
            return None
        return ConvGeometry(
            in_shape,
            out_shape,
            self.effective_kernel,
            self.groups,
            stride=self.strides[0],
            dilation=self.dilations,
        )

    def describe(self) -> str:
        """e.g. ``3x3 s2 p1 g1 16->32``."""
        kh, kw = self.kernel
        pad = (
            self.pads[0] if len(set(self.pads)) == 1 else "(" + ",".join(map(str, self.pads)) + ")"
        )
        stride = (
            self.strides[0]
            if self.strides[0] == self.strides[1]
            else f"({self.strides[0]},{self.strides[1]})"
        )
        dil = "" if self.dilations == (1, 1) else f" d{self.dilations[0]}"
        channels = f"{self.in_channels}->{self.out_channels}"
        return f"{kh}x{kw} s{stride} p{pad}{dil} g{self.groups} {channels}"


def conv_view(node: gs.Node) -> Optional[ConvView]:
    """A ConvView of a 2-D Conv with constant weight (and bias), explicit padding; None
    otherwise."""
    if node.op != "Conv" or len(node.inputs) < 2:
        return None
    weight = constant(node.inputs[1])
    bias = constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if (
        weight is None
        or weight.ndim != 4
        or (len(node.inputs) > 2 and node.inputs[2].name and bias is None)
    ):
        return None
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return None
    pads = tuple(node.attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    return ConvView(
        node,
        weight,
        bias,
        tuple(node.attrs.get("strides", [1, 1])),
        pads,  # type: ignore
        tuple(node.attrs.get("dilations", [1, 1])),
        int(node.attrs.get("group", 1)),
    )  # type: ignore


def write_conv(
    view: ConvView,
    weight: np.ndarray,
    bias: np.ndarray,
    strides: Tuple[int, int],
    pads: Tuple[int, int, int, int],
    groups: int,
    dilations: Tuple[int, int] = (1, 1),
) -> None:
    """Give a Conv node new weights and attributes (weights stored in the node's original dtype)."""
    dtype = view.weight.dtype
    name = view.name
    set_inputs(
        view.node,
        [
            view.node.inputs[0],
            gs.Constant(f"{name}.folded_weight", np.ascontiguousarray(weight.astype(dtype))),
            gs.Constant(f"{name}.folded_bias", np.ascontiguousarray(bias.astype(dtype))),
        ],
    )
    view.node.attrs.update(
        kernel_shape=list(weight.shape[2:]),
        strides=list(strides),
        pads=list(pads),
        dilations=list(dilations),
        group=int(groups),
    )
    view.node.attrs.pop("auto_pad", None)


def node_names(nodes: List[gs.Node]) -> List[str]:
    """Display names of nodes (their output tensor when unnamed)."""
    return [n.name or n.outputs[0].name for n in nodes]


def plain_gemm(node: gs.Node) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(B as K x N, bias as N), in float64, of a Gemm computing ``x @ B + c`` with constant B and a
    per-column bias c (shape (), (N,), (1, N) or (1,)); None otherwise (transA, alpha, beta, a
    bias per row)."""
    if (
        node.op != "Gemm"
        or node.attrs.get("transA", 0)
        or node.attrs.get("alpha", 1.0) != 1.0
        or node.attrs.get("beta", 1.0) != 1.0
    ):
        return None
    weight = constant(node.inputs[1])
    if weight is None or weight.ndim != 2:
        return None
    matrix = (weight.T if node.attrs.get("transB", 0) else weight).astype(np.float64)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name
    bias = constant(node.inputs[2]) if has_bias else np.zeros(matrix.shape[1])
    if bias is None or bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
        return None
    try:
        return matrix, np.broadcast_to(bias.astype(np.float64).reshape(-1), (matrix.shape[1],))
    except ValueError:  # a bias of another length
        return None
