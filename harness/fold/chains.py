"""Merging linear chains of Convs (and of Gemms), chosen by a cost model.

A *linear chain* is a run of Convs with nothing between them, each the only reader of the previous
one's output. (The latency tables' *activation chains*, ``harness.cost.lut``, also cross
activations: the runs depth compression could merge once it removes them.) A pair merges exactly
only when the second conv does not pad (its zero padding ring would otherwise differ from the first
conv's output there): such pairs are refused, with the reason recorded, and split the chain. Inside
each exact run a dynamic program over split points picks the segments to merge that minimise the
cost model's total.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import onnx_graphsurgeon as gs

from harness.cost.model import CostModel
from harness.fold import algebra
from harness.fold.graph import (
    ConvView,
    constant,
    conv_view,
    node_names,
    plain_gemm,
    set_inputs,
    sole_consumer,
    write_conv,
)
from harness.fold.report import FoldAction, FoldRecord
from harness.geometry import ConvGeometry, merged_kernel

Spans = Dict[str, Tuple[int, int]]  # conv node name -> (first, last) original conv index


def _refusal(first: ConvView, second: ConvView) -> str:
    if any(second.pads):
        return (
            f"{second.name} pads its input by {list(second.pads)}: the merged conv would see "
            f"zeros where {first.name} produces its bias at the borders (move the padding to the "
            f"chain's first conv)"
        )
    if first.geometry is None or second.geometry is None:
        return "tensor shapes are not static (export with static shapes)"
    return ""


def linear_chains(graph: gs.Graph) -> List[List[ConvView]]:
    """Maximal linear chains: runs of Convs where each reads only the previous one's output, in
    graph order."""
    followers: Dict[int, ConvView] = {}
    views = {id(n): conv_view(n) for n in graph.nodes if n.op == "Conv"}
    for node_id, view in views.items():
        if view is None:
            continue
        reader = sole_consumer(graph, view.node.outputs[0])
        if (
            reader is not None
            and reader.op == "Conv"
            and reader.inputs[0] is view.node.outputs[0]
            and views.get(id(reader)) is not None
        ):
            followers[node_id] = views[id(reader)]
    followed = {id(v.node) for v in followers.values()}
    chains = []
    for node in graph.nodes:
        if id(node) in followers and id(node) not in followed:
            chain = [views[id(node)]]
            while id(chain[-1].node) in followers:
                chain.append(followers[id(chain[-1].node)])
            chains.append(chain)
    return chains


def blocked_edges(graph: gs.Graph) -> List[FoldRecord]:
    """Refusals for Conv -> Conv edges that cannot merge because the first conv's output is read
    elsewhere too (merging would have to keep the intermediate tensor and compute it twice)."""
    records = []
    for node in graph.nodes:
        if node.op != "Conv" or not node.outputs or conv_view(node) is None:
            continue
        out = node.outputs[0]
        readers = [r for r in out.outputs if r.op == "Conv" and r.inputs and r.inputs[0] is out]
        if not readers or sole_consumer(graph, out) is not None:
            continue
        for reader in readers:
            others = [r.name or r.op for r in out.outputs if r is not reader]
            others += ["a graph output"] if out in graph.outputs else []
            records.append(
                FoldRecord(
                    "merge_conv_chains",
                    FoldAction.REFUSED,
                    [node.name, reader.name],
                    f"{node.name}'s output is also read by {', '.join(others)}: merging into "
                    f"{reader.name} would compute it twice (multiple consumers)",
                )
            )
    return records


def segment_geometry(run: List[ConvView], spans: Spans) -> ConvGeometry:
    """The geometry of a run of convs (static shapes: a run ``_refusal`` let through) once merged
    into one conv."""
    kernels = [v.effective_kernel for v in run]
    strides = [v.strides for v in run]
    kernel = (
        merged_kernel([k[0] for k in kernels], [s[0] for s in strides]),
        merged_kernel([k[1] for k in kernels], [s[1] for s in strides]),
    )
    groups = run[0].groups if len({v.groups for v in run}) == 1 else 1
    span = (spans.get(run[0].name, (-1, -1))[0], spans.get(run[-1].name, (-1, -1))[1])
    stride = 1
    for s in strides:
        stride *= s[0]
    return ConvGeometry(
        run[0].geometry.in_shape,  # type: ignore[union-attr]
        run[-1].geometry.out_shape,  # type: ignore[union-attr]
        kernel,
        groups,
        span if min(span) >= 0 else None,
        stride,
        (_tap_step(run, 0), _tap_step(run, 1)),
    )


def _tap_step(run: List[ConvView], axis: int) -> int:
    """The grid step of the merged kernel's taps along one axis (its dilation once merged): the
    gcd of each conv's tap step (its dilation times the strides before it) over convs with more
    than one tap."""
    step, jump = 0, 1
    for view in run:
        if view.kernel[axis] > 1:
            step = int(np.gcd(step, jump * view.dilations[axis]))
        jump *= view.strides[axis]
    return step or 1


def merge_run(run: List[ConvView]) -> ConvView:
    """Merge a run of convs into its last node (which keeps its output tensor); returns the
    updated view."""
    first, last = run[0], run[-1]
    weight = algebra.dilate_kernel(first.weight.astype(np.float64), first.dilations)
    bias = first.bias
    groups, stride = first.groups, first.strides
    for nxt in run[1:]:
        w2 = algebra.dilate_kernel(nxt.weight.astype(np.float64), nxt.dilations)
        if groups == nxt.groups and groups > 1:
            weight, bias = algebra.compose_grouped(weight, bias, stride, w2, nxt.bias, groups)
        else:
            weight, bias = algebra.compose(weight, bias, stride, w2, nxt.bias, groups, nxt.groups)
            groups = 1
        stride = (stride[0] * nxt.strides[0], stride[1] * nxt.strides[1])
    if groups == 1:
        groups = algebra.largest_groups(weight)
        weight = algebra.to_grouped(weight, groups)
    weight, dilations = algebra.recover_dilation(weight)
    last.node.inputs[0] = first.node.inputs[0]
    write_conv(
        last,
        weight,
        np.zeros(weight.shape[0]) if bias is None else bias,
        stride,
        first.pads,
        groups,
        dilations,
    )
    return conv_view(last.node)  # type: ignore


def _residual_saving(graph: gs.Graph, run: List[ConvView], cost: CostModel) -> float:
    """What merging the whole run saves besides its convs: a residual Add that then folds away."""
    add = sole_consumer(graph, run[-1].node.outputs[0])
    if add is None or add.op != "Add" or run[0].node.inputs[0] not in add.inputs:
        return 0.0
    geometry = run[-1].geometry
    return cost.elementwise_cost(3 * 4 * int(np.prod(geometry.out_shape))) if geometry else 0.0


def _segment_cost(
    run: List[ConvView], first: int, last: int, spans: Spans, cost: CostModel, saving: float
) -> float:
    """Predicted seconds of ``run[first..last]`` as one conv; merging the whole run also removes the
    residual Add after it (``saving``)."""
    price = cost.conv_cost(segment_geometry(run[first : last + 1], spans))
    whole = first == 0 and last == len(run) - 1 and last > 0
    return price - saving if whole else price


def margin_waived(run: List[ConvView], spans: Spans) -> bool:
    """Whether the run merged is ``within`` one of its convs: it replaces that conv at no added work
    and removes the others outright, so the cost model's error on it cannot turn the saving into a
    loss."""
    merged = segment_geometry(run, spans)
    return any(merged.within(segment_geometry([view], spans)) for view in run)


def merge_risk(run: List[ConvView], spans: Spans, cost: CostModel, margin: float) -> float:
    """What a merged run is charged beyond its predicted cost: the decision margin times the merged
    conv's predicted cost, or nothing when ``margin_waived``."""
    if margin_waived(run, spans):
        return 0.0
    return margin * cost.conv_cost(segment_geometry(run, spans))


def best_segments(
    run: List[ConvView], spans: Spans, cost: CostModel, saving: float
) -> Tuple[List[Tuple[int, int]], float, float]:
    """Minimum-cost split of a run into merged segments (DP over split points): (segments, their
    predicted cost, the unmerged cost). A merged segment is charged its predicted cost plus the
    cost model's decision margin (``CostModel.decision_margin``) unless ``merge_risk`` waives it:
    a merge is taken only when its predicted saving exceeds the error the model reports on the
    merged conv."""
    margin, _ = cost.decision_margin()
    n = len(run)
    best = [0.0] + [float("inf")] * n
    choice = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            price = _segment_cost(run, i, j - 1, spans, cost, saving)
            if j - i > 1:
                price += merge_risk(run[i:j], spans, cost, margin)
            if best[i] + price < best[j]:
                best[j], choice[j] = best[i] + price, i
    segments, j = [], n
    while j > 0:
        segments.append((choice[j], j - 1))
        j = choice[j]
    segments.reverse()
    predicted = sum(_segment_cost(run, i, j, spans, cost, saving) for i, j in segments)
    unmerged = sum(cost.conv_cost(segment_geometry([v], spans)) for v in run)
    return segments, predicted, unmerged


def declined_merges(
    run: List[ConvView],
    segments: List[Tuple[int, int]],
    spans: Spans,
    cost: CostModel,
    saving: float,
) -> List[FoldRecord]:
    """A record per merge the plan declines (two neighbouring segments left apart), saying why: the
    merge is predicted slower, or its predicted saving lies within the decision margin."""
    margin, source = cost.decision_margin()
    records = []
    for (a, b), (c, d) in zip(segments, segments[1:]):
        apart = _segment_cost(run, a, b, spans, cost, saving)
        apart += _segment_cost(run, c, d, spans, cost, saving)
        together = _segment_cost(run, a, d, spans, cost, saving)
        gain = apart - together
        if gain <= 0:
            why = f"predicted slower merged: {apart * 1e6:.1f} us -> {together * 1e6:.1f} us"
        else:
            price = cost.conv_cost(segment_geometry(run[a : d + 1], spans))
            why = (
                f"predicted to save {gain * 1e6:.1f} us ({apart * 1e6:.1f} -> {together * 1e6:.1f}"
                f" us), within the decision margin: {margin:.1%} of the merged conv's "
                f"{price * 1e6:.1f} us ({source})"
            )
        records.append(
            FoldRecord(
                "merge_conv_chains",
                FoldAction.KEPT,
                [v.name for v in run[a : d + 1]],
                f"not merged: {why}",
            )
        )
    return records


def merge_conv_chains(
    graph: gs.Graph, mode: str, cost: CostModel, spans: Spans
) -> List[FoldRecord]:
    """Merge exact conv chains: all of each (``all``) or the cost model's choice (``auto``)."""
    records: List[FoldRecord] = []
    for chain in linear_chains(graph):
        runs, current = [], [chain[0]]
        for first, second in zip(chain, chain[1:]):
            reason = _refusal(first, second)
            if reason:
                records.append(
                    FoldRecord(
                        "merge_conv_chains", FoldAction.REFUSED, [first.name, second.name], reason
                    )
                )
                runs.append(current)
                current = [second]
            else:
                current.append(second)
        runs.append(current)
        for run in [r for r in runs if len(r) > 1]:
            saving = _residual_saving(graph, run, cost)
            if mode == "all":
                segments = [(0, len(run) - 1)]
            else:
                segments, chosen, unmerged = best_segments(run, spans, cost, saving)
                whole = cost.conv_cost(segment_geometry(run, spans)) - saving
                margin, source = cost.decision_margin()
                waived = [
                    [i, j] for i, j in segments if j > i and margin_waived(run[i : j + 1], spans)
                ]
                records.append(
                    FoldRecord(
                        "merge_conv_chains",
                        FoldAction.PLANNED,
                        [v.name for v in run],
                        f"{cost.name}: segments {[[i, j] for i, j in segments]} estimated "
                        f"{chosen * 1e6:.1f} us; all unmerged {unmerged * 1e6:.1f} us; "
                        f"all merged {whole * 1e6:.1f} us"
                        + (" (incl. the residual Add it removes)" if saving else "")
                        + f"; decision margin {margin:.1%} ({source})"
                        + (
                            f", waived for segments {waived} (each merged conv within one of its"
                            " convs: no more channels or taps)"
                            if waived and margin
                            else ""
                        ),
                        segments=[[i, j] for i, j in segments],
                    )
                )
                records += declined_merges(run, segments, spans, cost, saving)
            for i, j in segments:
                if j > i:
                    records.append(_merge_record(run[i : j + 1], spans, cost))
    return records


def _merge_record(part: List[ConvView], spans: Spans, cost: CostModel) -> FoldRecord:
    singles = [segment_geometry([v], spans) for v in part]
    merged_geometry = segment_geometry(part, spans)
    cost_before = sum(cost.conv_cost(g) for g in singles) * 1e6
    cost_after = cost.conv_cost(merged_geometry) * 1e6
    before = [v.describe() for v in part]
    merged = merge_run(part)
    spans[merged.name] = (
        spans.get(part[0].name, (-1, -1))[0],
        spans.get(part[-1].name, (-1, -1))[1],
    )
    batch = max(merged_geometry.out_shape[0], 1)
    return FoldRecord(
        "merge_conv_chains",
        FoldAction.MERGED,
        [v.name for v in part],
        f"{len(part)} convs -> one {merged.describe()}",
        result=merged.name,
        before=before,
        after=merged.describe(),
        flops_before=sum(g.flops for g in singles) // batch,  # per sample, as the totals
        flops_after=merged_geometry.flops // batch,
        cost_before_us=round(cost_before, 3),
        cost_after_us=round(cost_after, 3),
    )


def merge_gemm_chains(graph: gs.Graph, mode: str) -> List[FoldRecord]:
    """Merge Gemm -> Gemm with nothing between (fully connected layers left linear) into one Gemm.

    In ``auto`` mode only when the merged matrix needs no more multiply-accumulates than the pair.
    """
    records = []
    for first in [n for n in graph.nodes if n.op == "Gemm"]:
        if not first.outputs:
            continue
        second = sole_consumer(graph, first.outputs[0])
        a, b = plain_gemm(first), (plain_gemm(second) if second is not None else None)
        if a is None or b is None or second.inputs[0] is not first.outputs[0]:
            continue
        (m1, c1), (m2, c2) = a, b
        if mode == "auto" and m1.shape[0] * m2.shape[1] > m1.size + m2.size:
            records.append(
                FoldRecord(
                    "merge_gemm_chains",
                    FoldAction.KEPT,
                    node_names([first, second]),
                    "merging would raise the multiply-accumulates",
                )
            )
            continue
        dtype = constant(second.inputs[1]).dtype
        name = second.name or second.outputs[0].name
        set_inputs(
            second,
            [
                first.inputs[0],
                gs.Constant(f"{name}.folded_weight", (m1 @ m2).astype(dtype)),
                gs.Constant(f"{name}.folded_bias", (c1 @ m2 + c2).astype(dtype)),
            ],
        )
        second.attrs["transB"] = 0
        records.append(
            FoldRecord(
                "merge_gemm_chains",
                FoldAction.MERGED,
                node_names([first, second]),
                f"Gemm {m1.shape[0]}->{m1.shape[1]}->{m2.shape[1]} -> one Gemm "
                f"{m1.shape[0]}->{m2.shape[1]}",
                result=name,
                flops_before=2 * (m1.size + m2.size),
                flops_after=2 * m1.shape[0] * m2.shape[1],
            )
        )
    return records
