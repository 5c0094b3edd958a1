"""FLOPs and parameters counted from ONNX graphs whose answers can be computed by hand."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.fold import fold_model
from harness.graph_stats import (
    count_flops,
    count_flops_with,
    count_params,
    flop_count,
    layer_costs,
    observed_shapes,
    op_histogram,
)
from harness.onnx_io import load_model, make_model
from tests.onnx_corpus import corpus


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(
        nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()]
    )
    model = make_model(graph, 17)
    return onnx.shape_inference.infer_shapes(model)


def test_conv_flops_and_params_by_hand():
    # 3->8 channels, 3x3 kernel, stride 1, pad 1 on 2x3x10x10:
    # each of 2*8*10*10 outputs does 3*9 MACs.
    w = np.zeros((8, 3, 3, 3), np.float32)
    b = np.zeros(8, np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w, "b": b},
    )
    assert count_flops(model) == 2 * (2 * 8 * 10 * 10) * (3 * 9) // 2  # per sample of the 2
    assert count_params(model) == 8 * 3 * 9 + 8
    cost = layer_costs(model)[0]
    assert cost.bytes == 4 * (2 * 3 * 100 + 8 * 27 + 8 + 2 * 8 * 100)


def test_grouped_strided_conv_flops():
    # depthwise 3x3 stride 2 on 1x4x8x8 -> 1x4x4x4, one input channel per group:
    # 64 outputs x 9 MACs.
    w = np.zeros((4, 1, 3, 3), np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, strides=[2, 2], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w},
    )
    assert count_flops(model) == 2 * 64 * 9


def test_gemm_matmul_and_integer_initializers():
    w = np.zeros((5, 7), np.float32)  # Gemm with transB: 3x7 @ (5x7)^T -> 3x5, 7 MACs each
    m = np.zeros((5, 2), np.float32)  # MatMul 3x5 @ 5x2 -> 3x2, 5 MACs each
    shape = np.array([3, 2], np.int64)  # not a parameter
    model = _model(
        [
            helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
            helper.make_node("MatMul", ["h", "m"], ["y0"]),
            helper.make_node("Reshape", ["y0", "shape"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w, "m": m, "shape": shape},
    )
    assert count_flops(model) == (2 * (15 * 7) + 2 * (6 * 5)) // 3  # per sample: 3 rows
    assert count_params(model) == 35 + 10
    assert op_histogram(model) == {"Gemm": 1, "MatMul": 1, "Reshape": 1}


def test_a_dynamic_batch_is_counted_per_sample_not_as_zero():
    w = np.zeros((8, 3, 3, 3), np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w},
    )
    count = flop_count(model)
    assert count.total == 2 * (8 * 10 * 10) * (3 * 9) and not count.holes
    assert "batch 1" in count.note


def test_shapes_no_source_can_give_are_a_warning_never_a_silent_zero():
    # a Reshape to a shape fed at run time: nothing can size the Conv after it before a real
    # input arrives
    w = np.zeros((4, 3, 1, 1), np.float32)
    model = _model(
        [
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Conv", ["r", "w"], ["y"], name="the_conv"),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w},
    )
    count = flop_count(model)
    assert count.holes == ["the_conv"] and "the_conv" in count.warning()
    with pytest.warns(UserWarning, match="FLOPs incomplete"):
        count_flops(model)


def test_shapes_onnx_cannot_infer_are_taken_from_a_real_run():
    # the same Reshape, its target a constant computed by a node onnx's inference does not evaluate
    w = np.zeros((4, 3, 1, 1), np.float32)
    model = _model(
        [
            helper.make_node(
                "Constant",
                [],
                ["s0"],
                value=numpy_helper.from_array(np.array([1, 3, 10, 10], np.int64)),
            ),
            helper.make_node("Sign", ["s0"], ["s1"]),
            helper.make_node("Mul", ["s0", "s1"], ["shape"]),
            helper.make_node("Reshape", ["x", "shape"], ["r"]),
            helper.make_node("Conv", ["r", "w"], ["y"], name="the_conv"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": w},
    )
    count = flop_count(model)
    assert count.total == 2 * (4 * 10 * 10) * 3 and not count.holes
    assert count.source != "onnx shape inference"


def test_flops_of_the_onnx_wheels_model_zoo_graphs_match_shapes_observed_in_onnx_runtime():
    light = [m for m in corpus() if m.group == "light"]
    assert len(light) == 9
    for entry in light:
        model = load_model(entry.path)
        count = flop_count(model)
        observed = count_flops_with(model, observed_shapes(model))
        assert not count.holes and count.total == observed > 0, entry.name


def test_flops_are_per_sample_whatever_the_static_batch(tmp_path):
    from harness.export import export_module
    from harness.graph_stats import flop_count
    from harness.zoo import build_model

    module, _ = build_model("lenet5", "baseline")
    counts = {
        batch: flop_count(
            export_module(module, (1, 28, 28), tmp_path / f"b{batch}.onnx", batch=batch)
        )
        for batch in (1, 3)
    }
    assert counts[1].total == counts[3].total > 0
    assert not counts[1].note and "per sample: counted at batch 3, divided by 3" in counts[3].note


def _constant(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    tensor = numpy_helper.from_array(np.asarray(values, dtype), f"{name}_value")
    return helper.make_node("Constant", [], [name], value=tensor)


def test_params_count_weights_computed_from_constants():
    # weights as onnx's light models ship them: ConstantOfShape of a Constant shape, and a
    # float16 bias cast to float32 (counted once, as read); an integer shape is no parameter
    fill = numpy_helper.from_array(np.array([0.1], np.float32), "fill")
    nodes = [
        _constant("shape", [8, 3, 3, 3]),
        helper.make_node("ConstantOfShape", ["shape"], ["w"], value=fill),
        _constant("b16", np.ones(8), np.float16),
        helper.make_node("Cast", ["b16"], ["b"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("Reshape", ["c", "flat"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "light",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, -1], np.int64), "flat")],
    )
    model = make_model(graph, 17)
    assert count_params(model) == 8 * 3 * 9 + 8
    folded = fold_model(model, merge="none").model  # constants evaluated into initializers
    assert not [n for n in folded.graph.node if n.op_type in ("Constant", "ConstantOfShape")]
    assert count_params(folded) == count_params(model)


def test_params_of_constants_shape_inference_cannot_size_are_evaluated():
    # NonZero's output shape depends on the values: only evaluating the constants sizes it
    mask = np.arange(16).reshape(4, 4) % 3
    nodes = [
        _constant("mask", mask, np.float32),
        helper.make_node("NonZero", ["mask"], ["where"]),
        helper.make_node("Cast", ["where"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "computed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    assert count_params(make_model(graph, 17)) == 2 * np.count_nonzero(mask)


def _stored_float_params(model: onnx.ModelProto) -> int:
    return sum(
        int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT
    )


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet"])
def test_params_of_the_onnx_light_models_are_their_weights(name):
    import onnx_graphsurgeon as gs

    found = [m for m in corpus() if m.group == "light" and m.name == name]
    if not found:
        pytest.skip(f"this onnx wheel ships no {name}")
    model = onnx.load(str(found[0].path))
    assert _stored_float_params(model) < 10_000  # the weights are ConstantOfShape nodes
    evaluated = gs.export_onnx(gs.import_onnx(model).fold_constants().cleanup())
    assert count_params(model) == _stored_float_params(evaluated) > 1_000_000
