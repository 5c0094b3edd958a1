"""Real-world ONNX inputs: whatever ONNX Runtime runs goes through fold and verification without
a traceback (Constant nodes, shared initializers, initializers listed as inputs, subgraphs,
several outputs, any dtype, custom ops, old opsets, dynamic shapes), and every ONNX file harness
writes carries the lowest IR version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.errors import HarnessError
from harness.fold import FoldAction, bind_shapes, fold_model, verify_fold
from harness.fold.verify import NOT_VERIFIED
from harness.graph_stats import op_histogram
from harness.onnx_io import InputShapes, load_model, lowest_ir_version, make_model, save_model

RNG = np.random.default_rng(0)


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _graph(nodes, inputs, outputs, weights=None, value_info=None):
    inits = [numpy_helper.from_array(v, k) for k, v in (weights or {}).items()]
    return helper.make_graph(nodes, "g", inputs, outputs, inits, value_info=value_info or [])


def _bn_inputs(prefix: str, channels: int) -> dict:
    return {
        f"{prefix}_s": _w(channels) + 2,
        f"{prefix}_b": _w(channels),
        f"{prefix}_m": _w(channels),
        f"{prefix}_v": np.abs(_w(channels)) + 0.5,
    }


def _bn(x: str, prefix: str, y: str) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "sbmv"], [y])


def _x(shape=(1, 3, 8, 8), name="x", dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _y(name="y", dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, None)


def _conv_bn_model(opset: int = 17, batch="N") -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _bn("c", "bn", "y")]
    graph = _graph(
        nodes, [_x((batch, 3, 8, 8))], [_y()], {"w": _w(4, 3, 3, 3), **_bn_inputs("bn", 4)}
    )
    return make_model(graph, opset)


def test_constant_nodes_with_tensor_attributes_fold():
    weight = helper.make_node(
        "Constant", [], ["w"], value=numpy_helper.from_array(_w(4, 3, 3, 3), "wv")
    )
    nodes = [weight, helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "bn", "y")]
    model = make_model(_graph(nodes, [_x()], [_y()], _bn_inputs("bn", 4)))
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 1}
    assert verify_fold(model, result.model).verified


def test_shared_initializers_and_initializers_listed_as_inputs():
    w = _w(3, 3, 1, 1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        _bn("a", "bn", "y1"),
        helper.make_node("Conv", ["x", "w"], ["y2"]),
    ]  # one weight read by two convs
    inputs = [
        _x(),
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 3, 1, 1]),
    ]  # an IR-3 habit
    model = make_model(_graph(nodes, inputs, [_y("y1"), _y("y2")], {"w": w, **_bn_inputs("bn", 3)}))
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 2}
    assert verify_fold(model, result.model).verified
    untouched = next(n for n in result.model.graph.node if n.output[0] == "y2")
    values = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert np.array_equal(
        values[untouched.input[1]], w
    )  # the other reader still sees the original weight
    assert [v.name for v in result.model.graph.input] == ["x"]  # w's default is folded in: said
    warned = [r.detail for r in result.report.records if r.action is FoldAction.WARNING]
    assert any("inputs with a default value (w) were folded" in d for d in warned)


def test_subgraphs_are_left_alone_and_several_outputs_kept():
    then = helper.make_graph([helper.make_node("Identity", ["c"], ["t"])], "then", [], [_y("t")])
    other = helper.make_graph([helper.make_node("Neg", ["c"], ["e"])], "else", [], [_y("e")])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c0"]),
        _bn("c0", "bn", "c"),
        helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
        helper.make_node("Dropout", ["c"], ["y2"]),
    ]
    weights = {"w": _w(3, 3, 1, 1), "zero": np.zeros((), np.float32), **_bn_inputs("bn", 3)}
    model = make_model(_graph(nodes, [_x()], [_y(), _y("y2")], weights))
    result = fold_model(model, merge="all")
    histogram = op_histogram(result.model)
    assert (
        histogram["If"] == 1
        and "BatchNormalization" not in histogram
        and "Dropout" not in histogram
    )
    assert [o.name for o in result.model.graph.output] == ["y", "y2"]
    assert verify_fold(model, result.model).verified


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes_fold_and_verify_or_say_why_not(dtype):
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _bn("c", "bn", "y")]
    weights = {k: v.astype(dtype) for k, v in {"w": _w(4, 3, 3, 3), **_bn_inputs("bn", 4)}.items()}
    model = make_model(_graph(nodes, [_x(dtype=elem)], [_y(dtype=elem)], weights))
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 1}
    verification = verify_fold(model, result.model)
    if dtype == np.float64:  # ONNX Runtime's CPU provider has no double Conv
        assert verification.status == NOT_VERIFIED and "Conv" in verification.note
    else:
        assert verification.verified, verification.note


def test_verification_that_cannot_run_says_why(tmp_path, capsys):
    # a custom-domain op ONNX Runtime does not know, after a BatchNorm that folds
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        _bn("c", "bn", "d"),
        helper.make_node("Mystery", ["d"], ["y"], domain="com.example"),
    ]
    graph = _graph(nodes, [_x()], [_x(name="y")], {"w": _w(3, 3, 1, 1), **_bn_inputs("bn", 3)})
    model = make_model(graph, extra_opsets={"com.example": 1})
    path = tmp_path / "custom.onnx"
    save_model(model, path)
    result = fold_model(load_model(path), merge="all")
    verification = verify_fold(model, result.model)
    assert verification.status == NOT_VERIFIED and "cannot load the original" in verification.note
    assert main(["fold", str(path), "-o", str(tmp_path / "f.onnx"), "--merge", "all"]) == 0
    out = capsys.readouterr().out
    assert (
        "not verified: ONNX Runtime cannot load the original" in out
        and (tmp_path / "f.onnx").is_file()
    )


def test_bf16_matmul_is_not_verified_rather_than_a_traceback():
    bf16 = TensorProto.BFLOAT16
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("MatMul", ["i", "w"], ["y"]),
    ]
    w = helper.make_tensor("w", bf16, [4, 4], _w(16))
    graph = helper.make_graph(nodes, "g", [_x((2, 4), dtype=bf16)], [_y(dtype=bf16)], [w])
    model = make_model(graph)
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"MatMul": 1}
    verification = verify_fold(model, result.model)
    assert verification.status == NOT_VERIFIED and verification.note


def test_nothing_to_fold_gives_the_same_model_back(tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = make_model(_graph(nodes, [_x()], [_y()]))
    path = tmp_path / "relu.onnx"
    save_model(model, path)
    result = fold_model(model, merge="all")
    assert result.model is model and not result.report.changed
    assert "nothing to fold" in result.report.to_text()
    assert main(["fold", str(path), "-o", str(tmp_path / "out.onnx"), "--merge", "all"]) == 0
    assert "nothing to fold" in capsys.readouterr().out
    assert (tmp_path / "out.onnx").read_bytes() == path.read_bytes()


def test_old_opsets_are_converted_and_the_report_says_so():
    model = _conv_bn_model(opset=9, batch=1)
    result = fold_model(model, merge="all")
    converted = [r for r in result.report.records if r.action is FoldAction.CONVERTED]
    assert converted and "opset 9 converted to opset 11" in converted[0].detail
    assert op_histogram(result.model) == {"Conv": 1}
    assert verify_fold(model, result.model).verified


def test_dynamic_dims_are_bound_or_only_shape_independent_passes_run():
    model = _conv_bn_model(batch="N")
    limited = fold_model(model, merge="all")
    notes = [r.detail for r in limited.report.records if r.action is FoldAction.LIMITED]
    assert notes and "dynamic input shapes" in notes[0] and "--input-shape" in notes[0]
    assert op_histogram(limited.model) == {"Conv": 1}  # BatchNorm folding needs no shapes
    bound = fold_model(model, merge="all", batch=2)
    assert any("x[0] = 2" in r.detail for r in bound.report.records if r.action is FoldAction.BOUND)
    assert [d.dim_value for d in bound.model.graph.input[0].type.tensor_type.shape.dim] == [
        2,
        3,
        8,
        8,
    ]
    reference, _ = bind_shapes(model, None, 2)
    assert verify_fold(reference, bound.model).verified
    assert bound.report.flops_before == bound.report.flops_after > 0  # both counted bound
    with pytest.raises(Exception, match="does not match"):
        bind_shapes(model, (3, 9, 9), 1)


@pytest.mark.parametrize(
    "batch,input_shape,message",
    [
        (4, None, "input 'x' has the fixed shape 1x3x8x8; --batch 4 does not match it"),
        (None, (3, 8, 8, 2), "input 'x' has 4 dims (1x3x8x8); --input-shape 3x8x8x2 gives 4"),
        (None, (8, 8), "--input-shape 8x8 gives 2 without the batch, not 3"),
    ],
)
def test_a_shape_or_batch_that_cannot_apply_is_refused_not_ignored(batch, input_shape, message):
    with pytest.raises(HarnessError) as caught:
        bind_shapes(_conv_bn_model(batch=1), input_shape, batch)
    assert message in str(caught.value)


def test_an_input_shape_for_a_model_of_two_inputs_is_refused():
    graph = _graph(
        [helper.make_node("Add", ["x", "z"], ["y"])], [_x(name="x"), _x(name="z")], [_y()]
    )
    with pytest.raises(HarnessError, match="this model has 2 such inputs of 2"):
        bind_shapes(make_model(graph, 17), (3, 8, 8), None)
    # found by a probe: an input named by --shapes too leaves none for --input-shape to bind
    one = _graph([helper.make_node("Relu", ["x"], ["y"])], [_x(name="x")], [_y()])
    with pytest.raises(HarnessError, match="this model has 0 such inputs of 1"):
        bind_shapes(make_model(one, 17), InputShapes((3, 8, 8), (("x", (1, 3, 8, 8)),)), None)


def test_everything_harness_writes_has_the_lowest_ir_version(tmp_path):
    model = helper.make_model(
        _graph([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_y()]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    assert model.ir_version > 8  # what the installed onnx writes by default
    path = save_model(model, tmp_path / "m.onnx")
    assert onnx.load(str(path)).ir_version == 8 == lowest_ir_version(model)
    assert model.ir_version > 8  # the caller's model is not modified
    assert (
        make_model(_graph([helper.make_node("Relu", ["x"], ["y"])], [_x()], [_y()]), 13).ir_version
        == 7
    )
    folded = fold_model(_conv_bn_model(batch=1), merge="all").model
    assert folded.ir_version == 8


def test_a_model_the_strict_checker_refuses_but_onnx_runtime_runs_is_accepted(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "bn", "y")]
    graph = _graph(
        nodes,
        [_x()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        {"w": _w(3, 3, 1, 1), **_bn_inputs("bn", 3)},
    )
    graph.name = ""  # the checker wants a graph name; runtimes do not care
    model = make_model(graph)
    path = tmp_path / "unnamed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    loaded = load_model(path)
    assert main(["fold", str(path), "-o", str(tmp_path / "f.onnx"), "--merge", "all"]) == 0
    assert op_histogram(loaded) == {"BatchNormalization": 1, "Conv": 1}


def test_verify_command_binds_dynamic_shapes(tmp_path, capsys):
    model = _conv_bn_model(batch="N")
    folded = fold_model(model, merge="all").model
    paths = [save_model(m, tmp_path / f"{i}.onnx") for i, m in enumerate((model, folded))]
    assert main(["verify", str(paths[0]), str(paths[1]), "--batch", "3", "--batches", "2"]) == 0
    assert "equivalent" in capsys.readouterr().out
    assert Path(paths[1]).is_file()


def _uint8_doubling(cast_first: bool) -> onnx.ModelProto:
    """y = 2x for uint8 pixels: cast then double (exact), or double in uint8 (wraps above 127)."""
    weights = {"two_f": np.array(2, np.float32), "two_u": np.array(2, np.uint8)}
    if cast_first:
        nodes = [
            helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["c", "two_f"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("Mul", ["x", "two_u"], ["m"]),
            helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT),
        ]
    inputs = [_x((1, 3, 4, 4), dtype=TensorProto.UINT8)]
    return make_model(_graph(nodes, inputs, [_y()], weights), 17)


def test_pixel_inputs_span_their_range_so_an_overflow_is_caught():
    from harness.fold.verify import DIFFERENT, compare_models

    exact, wrapping = _uint8_doubling(True), _uint8_doubling(False)
    assert compare_models(exact, wrapping).status == DIFFERENT
    assert compare_models(exact, exact).verified


@pytest.mark.parametrize("bias_shape", [(1, 6), (6,), (1,), ()])
def test_gemm_biases_of_every_per_column_shape_fold(bias_shape):
    weights = {"w": _w(4, 3, 3, 3), **_bn_inputs("bn", 4), "g1": _w(6, 64), "c1": _w(*bias_shape)}
    weights.update({"g2": _w(6, 5), "c2": _w(5)})
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        _bn("c", "bn", "b"),
        helper.make_node("Flatten", ["b"], ["f"]),
        helper.make_node("Gemm", ["f", "g1", "c1"], ["h"], transB=1),
        helper.make_node("Gemm", ["h", "g2", "c2"], ["y"]),
    ]
    graph = _graph(nodes, [_x((1, 3, 4, 4))], [_y()], weights)
    model = make_model(graph, 17)
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 1, "Flatten": 1, "Gemm": 1}
    assert verify_fold(model, result.model).verified


def test_a_gemm_bias_per_row_is_left_alone():
    weights = {"g1": _w(4, 6), "c1": _w(2, 1), "g2": _w(6, 5), "c2": _w(5)}
    nodes = [
        helper.make_node("Gemm", ["x", "g1", "c1"], ["h"]),
        helper.make_node("Gemm", ["h", "g2", "c2"], ["y"]),
    ]
    model = make_model(_graph(nodes, [_x((2, 4))], [_y()], weights), 17)
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Gemm": 2}
    assert not any("folding stopped" in r.detail for r in result.report.records)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_after_a_gemm_with_a_row_vector_bias_folds(trans_b):
    weights = {"g": _w(6, 4) if trans_b else _w(4, 6), "c": _w(1, 6), **_bn_inputs("bn", 6)}
    nodes = [helper.make_node("Gemm", ["x", "g", "c"], ["h"], transB=trans_b), _bn("h", "bn", "y")]
    model = make_model(_graph(nodes, [_x((2, 4))], [_y()], weights), 17)
    result = fold_model(model, merge="none")
    assert op_histogram(result.model) == {"Gemm": 1}
    assert verify_fold(model, result.model).verified


def test_flops_before_and_after_are_counted_at_the_bound_shape():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), _bn("c", "bn", "y")]
    weights = {"w": _w(4, 3, 3, 3), **_bn_inputs("bn", 4)}
    model = make_model(_graph(nodes, [_x(("N", 3, "H", "W"))], [_y()], weights), 17)
    result = fold_model(model, merge="all", input_shape=(3, 8, 8), batch=2)
    assert result.report.flops_before == result.report.flops_after == 2 * 4 * 64 * 27
