"""One conv geometry: ConvGeometry as the graphsurgeon view, the latency tables and ONNX Runtime
see it; typed fold records and their JSON form."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cost.lut import Span, activation_chains, conv_layers, enumerate_spans, span_model
from harness.fold.graph import conv_view
from harness.fold.report import FoldAction, FoldRecord, FoldReport
from harness.geometry import ConvGeometry
from harness.graph_stats import flop_count

# (out channels, kernel, stride, dilation, groups, pads) of each conv of a chain on a 1x8x20x20
# input
CONVS = [
    (8, 3, 1, 1, 1, 1),
    (8, 3, 2, 2, 8, 2),  # depthwise, dilated, strided
    (16, 1, 1, 1, 1, 0),
    (16, 5, 1, 1, 2, 0),  # grouped, unpadded
]


def _chain_model() -> onnx.ModelProto:
    """Convs with the geometries of ``CONVS`` joined by Relus, shapes inferred by ONNX."""
    rng = np.random.default_rng(0)
    nodes, weights, channels, tensor = [], [], 8, "x"
    for i, (out, kernel, stride, dilation, groups, pad) in enumerate(CONVS):
        weight = rng.standard_normal((out, channels // groups, kernel, kernel)).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(
            helper.make_node(
                "Conv",
                [tensor, f"w{i}"],
                [f"c{i}"],
                name=f"conv{i}",
                strides=[stride] * 2,
                dilations=[dilation] * 2,
                group=groups,
                pads=[pad] * 4,
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        channels, tensor = out, f"r{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _run_shapes(model: onnx.ModelProto) -> dict:
    """Every conv output's shape as ONNX Runtime computes it."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    convs = [n.output[0] for n in model.graph.node if n.op_type == "Conv"]
    model.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in convs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim], np.float32)
    return dict(zip(convs, (out.shape for out in session.run(convs, {"x": x}))))


def test_the_folder_and_the_tables_see_one_geometry_as_onnx_runtime_runs_it():
    model = _chain_model()
    ran = _run_shapes(model)
    layers = conv_layers(model)
    graph = gs.import_onnx(model)
    views = [conv_view(n) for n in graph.nodes if n.op == "Conv"]
    assert len(layers) == len(views) == len(CONVS)
    for layer, view, node in zip(
        layers, views, [n for n in model.graph.node if n.op_type == "Conv"]
    ):
        assert view.geometry == dataclasses.replace(layer.geometry, span=None)
        assert layer.geometry.out_shape == ran[node.output[0]]
        assert layer.geometry.span == (layer.index, layer.index)
    assert [g.geometry.depthwise for g in layers] == [False, True, False, False]
    assert layers[1].geometry.taps == (3, 3) and layers[1].geometry.kernel == (5, 5)
    flops = sum(layer.geometry.flops for layer in layers)
    assert flops == flop_count(model).total  # graph_stats counts from the weights' shapes


def test_conv_layers_compute_an_output_shape_inference_left_out():
    model = _chain_model()
    inferred = [g.geometry for g in conv_layers(model)]
    del model.graph.value_info[:]  # relu inputs and outputs: only the graph input is known now
    model.graph.value_info.extend(
        helper.make_tensor_value_info(f"r{i}", TensorProto.FLOAT, list(inferred[i].out_shape))
        for i in range(len(CONVS) - 1)
    )
    assert [g.geometry for g in conv_layers(model)] == inferred


def test_a_span_model_runs_at_the_spans_geometry():
    spans = enumerate_spans(activation_chains(_chain_model()), 3)
    assert {(s.st, s.end) for s in spans} == {(0, 0), (2, 2), (2, 3), (3, 3)}  # no dilated conv
    for span in spans:
        geometry = span.geometry
        model = span_model(span)
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        (out,) = session.run(None, {"input": np.zeros(span.in_shape, np.float32)})
        assert out.shape == geometry.out_shape and geometry.span == (span.st, span.end)
        assert geometry.flops == flop_count(model).total
        assert geometry.depthwise == span.is_dw and geometry.kernel == (span.kernel,) * 2


def test_span_keys_keep_the_stored_format():
    """Stored progress files and tables are keyed by these strings: they must not change."""
    span = Span(3, 4, (1, 16, 8, 8), 16, 5, 2, True)
    assert span.key == "1x16x8x8-o16-k5-s2-dw1"
    assert span.geometry == ConvGeometry((1, 16, 8, 8), (1, 16, 4, 4), (5, 5), 16, (3, 4), 2)


def test_fold_records_keep_their_json_keys_and_read_back():
    merged = FoldRecord(
        "merge_conv_chains",
        FoldAction.MERGED,
        ["a", "b"],
        "2 convs -> one 5x5 s1 p0 g1 8->8",
        result="b",
        before=["3x3 s1 p0 g1 8->8", "3x3 s1 p0 g1 8->8"],
        after="5x5 s1 p0 g1 8->8",
        flops_before=10,
        flops_after=8,
        cost_before_us=1.5,
        cost_after_us=1.0,
    )
    note = FoldRecord("prepare", FoldAction.BOUND, [], "dynamic dimensions bound: x[0] = 1")
    assert list(merged.to_dict()) == [
        "pass",
        "action",
        "nodes",
        "result",
        "before",
        "after",
        "flops_before",
        "flops_after",
        "cost_before_us",
        "cost_after_us",
        "detail",
    ]
    assert note.to_dict() == {
        "pass": "prepare",
        "action": "bound",
        "nodes": [],
        "detail": "dynamic dimensions bound: x[0] = 1",
    }
    report = FoldReport("all", "roofline", [note, merged], {"Conv": 2}, {"Conv": 1}, 10, 8, 0.1)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["changed"] and [r["action"] for r in data["records"]] == ["bound", "merged"]
    again = FoldReport.from_dict(data)
    assert again == report and again.records[1].action is FoldAction.MERGED
    assert "[merged] merge_conv_chains: a, b" in again.to_text()
    assert "estimated 1.5 us -> 1.0 us" in again.to_text()


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_layers_compute_an_auto_padded_output_shape(auto_pad):
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], auto_pad=auto_pad)
    graph = helper.make_graph(
        [conv],
        "same",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (layer,) = conv_layers(model)  # no shape inference: the output shape is computed
    assert layer.geometry.out_shape == _run_shapes(model)["y"]
