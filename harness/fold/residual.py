"""Residual and parallel-branch folding: ``Add`` of branches that all read the same tensor becomes
one Conv.

A branch is a Conv of ``x`` (read only by the Add), a BatchNormalization of ``x`` (a per-channel 1x1
conv), or ``x`` itself (an identity kernel). Kernels are placed in a common window aligned by
padding, then summed: ResNet's ``x + conv(x)``, the strided block plus its 1x1 downsample shortcut,
and RepVGG's 3x3 + 1x1 + identity.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from harness.fold import algebra
from harness.fold.graph import conv_view, producer, sole_consumer, write_conv
from harness.fold.report import FoldAction, FoldRecord
from harness.fold.simplify import bn_params
from harness.geometry import conv_output_size


class _Branch:
    """One summand as a dense kernel with its padding (begin h, begin w, end h, end w) and stride.

    The dense kernel is built lazily (``weight``/``bias``): most Adds are refused on shapes alone,
    and expanding large kernels to float64 for each of them would dominate the fold time on big
    models.
    """

    def __init__(
        self,
        kind: str,
        make: Callable[[], Tuple[np.ndarray, np.ndarray]],
        size: Tuple[int, int],
        pads: Tuple[int, int, int, int],
        strides: Tuple[int, int],
        node: Optional[gs.Node],
        out_channels: int,
        in_channels: int,
    ) -> None:
        self.kind, self.size, self.pads, self.strides, self.node = kind, size, pads, strides, node
        self.out_channels, self.in_channels = out_channels, in_channels
        self._make, self._made = make, None

    def _dense(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._made is None:
            self._made = self._make()
        return self._made

    @property
    def weight(self) -> np.ndarray:
        return self._dense()[0]

    @property
    def bias(self) -> np.ndarray:
        return self._dense()[1]


def _branch(
    graph: gs.Graph, tensor: gs.Tensor, add: gs.Node
) -> Tuple[Optional[gs.Tensor], Optional[_Branch]]:
    """(x, branch) when ``tensor`` is conv(x) or bn(x) read only by ``add``; (tensor, None)
    otherwise."""
    node = producer(tensor)
    if node is None or sole_consumer(graph, tensor) is not add:
        return tensor, None
    if node.op == "Conv":
        view = conv_view(node)
        if view is None:
            return tensor, None

        def dense_conv(view=view):
            weight = algebra.dilate_kernel(view.weight.astype(np.float64), view.dilations)
            bias = (
                np.zeros(view.out_channels) if view.bias is None else view.bias.astype(np.float64)
            )
            return algebra.to_dense(weight, view.groups), bias

        return node.inputs[0], _Branch(
            f"conv {view.describe()}",
            dense_conv,
            view.effective_kernel,
            view.pads,
            view.strides,
            node,
            view.out_channels,
            view.in_channels,
        )
    if node.op == "BatchNormalization":
        params = bn_params(node)
        if params is None:
            return tensor, None
        scale, shift = params

        def dense_bn(scale=scale, shift=shift):
            weight = np.zeros((scale.size, scale.size, 1, 1))
            weight[np.arange(scale.size), np.arange(scale.size), 0, 0] = scale
            return weight, shift

        return node.inputs[0], _Branch(
            "batchnorm", dense_bn, (1, 1), (0, 0, 0, 0), (1, 1), node, scale.size, scale.size
        )
    return tensor, None


def _align(
    branches: List[_Branch], size_in: Tuple[int, int]
) -> Tuple[Optional[str], Tuple[int, int], Tuple[int, int, int, int]]:
    """(refusal reason or None, merged kernel size, merged pads): one window covering every
    branch's window."""
    if len({b.strides for b in branches}) != 1:
        return "the branches have different strides", (0, 0), (0, 0, 0, 0)
    if len({b.out_channels for b in branches}) != 1:
        return (
            "the branches have different channel counts (a broadcasting Add)",
            (0, 0),
            (0, 0, 0, 0),
        )
    stride = branches[0].strides
    begin = tuple(max(b.pads[d] for b in branches) for d in (0, 1))
    size = tuple(max(begin[d] - b.pads[d] + b.size[d] for b in branches) for d in (0, 1))
    end = tuple(
        max(0, max(b.pads[d] + b.pads[2 + d] - b.size[d] for b in branches) - begin[d] + size[d])
        for d in (0, 1)
    )
    for d in (0, 1):
        merged_out = conv_output_size(size_in[d], size[d], stride[d], begin[d] + end[d])
        outs = {
            conv_output_size(size_in[d], b.size[d], stride[d], b.pads[d] + b.pads[2 + d])
            for b in branches
        }
        if outs != {merged_out}:
            return (
                "the branches' outputs differ in shape or window (a broadcasting Add?)",
                size,
                (0,) * 4,
            )
    return None, size, (begin[0], begin[1], end[0], end[1])  # type: ignore


def fold_residuals(graph: gs.Graph) -> List[FoldRecord]:
    """Fold ``Add`` (and two-input ``Sum``) nodes whose inputs are conv/bn/identity branches of
    the same tensor into one Conv."""
    records = []
    for add in [
        n for n in graph.nodes if n.op in ("Add", "Sum") and len(n.inputs) == 2 and n.outputs
    ]:
        found = [_branch(graph, t, add) for t in add.inputs]
        sources = {id(x) for x, _ in found}
        convs = [b for _, b in found if b is not None and b.kind.startswith("conv")]
        if len(sources) != 1 or not convs:
            continue
        x = found[0][0]
        channels = convs[0].out_channels
        branches = []
        for _, branch in found:
            if branch is None:  # x itself: an identity kernel, only when shapes and stride allow
                if convs[0].strides != (1, 1) or convs[0].in_channels != channels:
                    branches = None
                    reason = "identity shortcut around a strided or channel-changing conv"
                    break
                branch = _Branch(
                    "identity",
                    lambda c=channels: (algebra.identity_kernel(c, 1), np.zeros(c)),
                    (1, 1),
                    (0,) * 4,
                    (1, 1),
                    None,
                    channels,
                    channels,
                )
            branches.append(branch)
        if branches is not None:
            shape = x.shape
            if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
                continue
            reason, size, pads = _align(branches, (shape[2], shape[3]))
        names = [b.node.name for _, b in found if b is not None and b.node is not None] + [add.name]
        if reason:
            records.append(FoldRecord("fold_residuals", FoldAction.REFUSED, names, reason))
            continue
        weight = sum(
            algebra.place_kernel(b.weight, size, (pads[0] - b.pads[0], pads[1] - b.pads[1]))
            for b in branches
        )
        bias = sum(b.bias for b in branches)
        groups = algebra.largest_groups(weight)
        weight, dilations = algebra.recover_dilation(algebra.to_grouped(weight, groups))
        carrier = convs[0].node
        view = conv_view(carrier)
        carrier.inputs[0] = x
        write_conv(view, weight, bias, convs[0].strides, pads, groups, dilations)
        carrier.outputs[0] = add.outputs[0]
        add.inputs.clear()
        add.outputs.clear()
        after = conv_view(carrier).describe()
        records.append(
            FoldRecord(
                "fold_residuals",
                FoldAction.FOLDED,
                names,
                " + ".join(b.kind for b in branches) + f" -> one conv {after}",
                result=carrier.name,
                before=[b.kind for b in branches],
                after=after,
            )
        )
    return records
