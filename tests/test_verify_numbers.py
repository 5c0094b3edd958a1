"""Verification judged by tolerances that fit the numbers, on models built here: a correct fold of a
conv net whose sigmoid output is saturated near 0 passes (and a wrong one does not), an output only
rounding separates from the original (as ONNX Runtime's own optimiser does) passes, --rtol/--atol
set per output, float16 graphs get float16 tolerances; index inputs span their table; outputs of
another shape are said to differ in shape; old opsets are converted by verify as by fold and fold
writes them converted; binding shapes keeps the per-rewrite checks; FLOPs that miss nodes print as
a floor."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.errors import FoldVerificationError, HarnessError
from harness.fold import fold_model, verify_fold
from harness.fold.tolerance import DEFAULT_RTOL, Tolerance, precision_rtol
from harness.fold.verify import DIFFERENT, EQUIVALENT, compare_models, index_ranges
from harness.graph_stats import flops_text
from harness.onnx_io import infer_shapes_lenient, make_model, save_model

SATURATED_MAX = -9.7  # the largest pre-sigmoid value: sigmoid(-9.7) = 6.1e-5
SPREAD = 2.0  # the pre-sigmoid values' standard deviation
OFFSET = 1e5  # the features the head's sums cancel


def _conv_bn_relu(prefix: str, cin: int, cout: int, x: str, rng, inits: list, offset=0.0) -> list:
    inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)), f"{prefix}w"))
    stats = (
        rng.uniform(0.5, 2, cout),
        rng.standard_normal(cout) + offset,
        rng.standard_normal(cout),
        rng.uniform(0.5, 2, cout),
    )
    inits += [numpy_helper.from_array(a, f"{prefix}{k}") for k, a in zip("sbmv", stats)]
    return [
        helper.make_node("Conv", [x, f"{prefix}w"], [f"{prefix}c"], pads=[1] * 4),
        helper.make_node(
            "BatchNormalization", [f"{prefix}c"] + [f"{prefix}{k}" for k in "sbmv"], [f"{prefix}n"]
        ),
        helper.make_node("Relu", [f"{prefix}n"], [f"{prefix}r"]),
    ]


def _head_model(scale: float, shift: float, last: str, offset: float) -> onnx.ModelProto:
    """Three conv-BN-ReLU layers of 16 channels, the last shifted by ``offset``, which the head
    conv's zero-sum weights cancel (in exact arithmetic: rounding is left, as in a detector's head),
    and a BatchNorm that scales the head by ``scale`` and shifts it by ``shift``, then ``last``
    (Sigmoid, Exp) on that: output 'y'."""
    rng = np.random.default_rng(0)
    inits: list = []
    nodes, x = [], "x"
    for i, (cin, cout) in enumerate([(3, 16), (16, 16), (16, 16)]):
        nodes += _conv_bn_relu(f"l{i}_", cin, cout, x, rng, inits, offset if i == 2 else 0.0)
        x = f"l{i}_r"
    head = rng.standard_normal((1, 16, 3, 3))
    inits.append(numpy_helper.from_array(head - head.mean(), "hw"))
    for name, value in zip("sbmv", (scale, shift, 0.0, 1.0)):
        inits.append(numpy_helper.from_array(np.array([value]), f"h{name}"))
    nodes += [
        helper.make_node("Conv", [x, "hw"], ["u"]),  # no padding: the offset cancels everywhere
        helper.make_node("BatchNormalization", ["u"] + [f"h{k}" for k in "sbmv"], ["pre"]),
        helper.make_node(last, ["pre"], ["y"]),
    ]
    for tensor in inits:
        tensor.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
        )
    graph = helper.make_graph(
        nodes,
        "saturated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 30, 30])],
        inits,
    )
    return infer_shapes_lenient(make_model(graph, 13))


def saturated_model(last: str = "Sigmoid", offset: float = OFFSET) -> onnx.ModelProto:
    """``_head_model`` scaled so that the pre-activations spread over ``SPREAD`` (std) and shifted
    so that the largest over the verification's inputs is ``SATURATED_MAX``: a sigmoid output
    saturated near 0 (max 6e-5), as a text detector's."""
    probe = _head_model(1.0, 0.0, "Identity", offset)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = [np.random.default_rng(seed).standard_normal((1, 3, 32, 32)) for seed in (0, 1)]
    heads = [session.run(["y"], {"x": x.astype(np.float32)})[0] for x in feeds]
    scale = SPREAD / float(np.std(heads))
    return _head_model(scale, SATURATED_MAX - scale * float(np.max(heads)), last, offset)


@pytest.fixture(scope="module")
def saturated():
    model = saturated_model()
    return model, fold_model(model, merge="none")


def test_a_correct_fold_of_a_saturated_sigmoid_passes(saturated):
    model, folded = saturated
    assert [r.detail for r in folded.report.records if r.pass_name == "fold_batchnorm"]
    output = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(["y"], {"x": np.random.default_rng(0).standard_normal((1, 3, 32, 32), np.float32)})[0]
    assert 0 < output.max() < 1e-4  # saturated near 0
    result = verify_fold(folded.reference, folded.model)
    assert result.verified, result.note
    assert result.local_checks == 4 and result.compared > 1


@pytest.mark.parametrize("change", [0.02, 0.3])
def test_a_wrong_fold_of_a_saturated_sigmoid_is_caught(saturated, change):
    _, folded = saturated
    mutant = onnx.ModelProto()
    mutant.CopyFrom(folded.model)
    head = [n for n in mutant.graph.node if n.op_type == "Conv"][-1]
    bias = next(t for t in mutant.graph.initializer if t.name == head.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + change, bias.name))
    with pytest.raises(FoldVerificationError, match="max relative error .* at tensor"):
        verify_fold(folded.reference, mutant)
    alone = compare_models(folded.reference, mutant, intermediates=False)  # the output only
    if change > 0.1:  # below that, the output moves by less than its range floor
        assert alone.status == DIFFERENT and alone.worst_tensor == "y"
        assert "max |a| = 6" in alone.difference and "allowed" in alone.difference


def test_tensors_that_differ_by_rounding_alone_pass(saturated):
    # Exp of pre-activations that cancel 1e7: no bounded range, relative errors of ~1e-3 from the
    # rounding of the BatchNorm folding, at the output and the pre-activations, which ONNX
    # Runtime's own optimiser makes too
    model = saturated_model("Exp", offset=1e7)
    folded = fold_model(model, merge="none")
    result = verify_fold(folded.reference, folded.model)
    if result.max_rel_error <= DEFAULT_RTOL:
        pytest.skip("this CPU's kernels round the fold below the tolerance")
    assert result.verified and result.local_checks == 4, result.note
    assert "ONNX Runtime's own optimisations of the original" in result.note
    assert "rounding, not a wrong rewrite" in result.note
    mutant = onnx.ModelProto()
    mutant.CopyFrom(folded.model)
    head = [n for n in mutant.graph.node if n.op_type == "Conv"][-1]
    bias = next(t for t in mutant.graph.initializer if t.name == head.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.02, bias.name))
    with pytest.raises(FoldVerificationError, match="max relative error"):
        verify_fold(folded.reference, mutant)


def test_tolerances_parse_per_output_and_refuse_unknown_outputs(saturated):
    model, _ = saturated
    tolerance = Tolerance.parse(["1e-3", "y=0.5"], ["y=1e-6"])
    assert tolerance.limits("y", DEFAULT_RTOL) == (0.5, 1e-6)
    assert tolerance.limits("other", DEFAULT_RTOL) == (1e-3, 0.0)
    assert Tolerance.parse().limits("y", 0.01) == (0.01, 0.0)
    tolerance.check_outputs(model)
    with pytest.raises(HarnessError, match="no output 'z'"):
        Tolerance.parse(["z=1"]).check_outputs(model)
    for bad in ("-1", "y=inf", "y=nan", "x=", "abc"):
        with pytest.raises(HarnessError, match="non-negative number"):
            Tolerance.parse([bad])


def _conv_model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    return make_model(graph)


def test_verify_takes_rtol_and_atol_per_output(tmp_path, capsys):
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    changed = weight.copy()
    changed[0, 0, 1, 1] += 0.05  # about 1% of the output's magnitude
    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for path, w in zip(paths, (weight, changed)):
        save_model(_conv_model(w), path)
    files = [str(p) for p in paths]
    assert main(["verify", *files]) == 1
    out = capsys.readouterr().out
    assert "different: max relative error" in out and "max |a - b| =" in out
    assert main(["verify", *files, "--rtol", "y=0.1"]) == 0
    assert main(["verify", *files, "--atol", "y=1"]) == 0
    assert main(["verify", *files, "--rtol", "0.1"]) == 0
    assert main(["verify", *files, "--rtol", "q=0.1"]) == 2
    assert "no output 'q'" in capsys.readouterr().err


def test_fold_takes_tolerances_and_refuses_unknown_outputs_before_folding(tmp_path, capsys):
    model = saturated_model()
    path = tmp_path / "m.onnx"
    save_model(model, path)
    out = tmp_path / "f.onnx"
    assert main(["fold", str(path), "-o", str(out), "--merge", "none", "--rtol", "q=1"]) == 2
    assert "no output 'q'" in capsys.readouterr().err and not out.exists()
    assert main(["fold", str(path), "-o", str(out), "--merge", "none", "--atol", "y=1e-5"]) == 0
    assert "verified" in capsys.readouterr().out


def test_float16_graphs_get_float16_tolerances():
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3))
    model = _conv_model(weight)
    assert precision_rtol(model) == DEFAULT_RTOL
    half = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
            helper.make_node("Conv", ["h", "w"], ["c"], pads=[1] * 4),
            helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT),
        ],
        "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weight.astype(np.float16), "w")],
    )
    model = make_model(half)
    assert precision_rtol(model) == 16 * 2.0**-10
    assert compare_models(model, model).tolerance == 16 * 2.0**-10


def _gather_model(table: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 4])],
        [numpy_helper.from_array(table.astype(np.float32), "table")],
    )
    return make_model(graph)


def test_index_inputs_span_the_table_they_index():
    table = np.random.default_rng(0).standard_normal((10, 4))
    other = table.copy()
    other[2:] += 1.0  # rows 2-9 differ: indices drawn from {0, 1} would never see it
    model = _gather_model(table)
    assert index_ranges(model) == {"idx": (-10, 9)}
    last_axis = onnx.ModelProto()
    last_axis.CopyFrom(model)
    last_axis.graph.node[0].attribute[0].i = -1  # Gather along the table's 4 columns
    assert index_ranges(last_axis) == {"idx": (-4, 3)}
    assert compare_models(model, _gather_model(table)).status == EQUIVALENT
    assert compare_models(model, _gather_model(other)).status == DIFFERENT


def _matmul_model(columns: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
        [numpy_helper.from_array(np.ones((4, columns), np.float32), "w")],
    )
    return make_model(graph)


def test_outputs_of_another_shape_are_said_to_differ_in_shape(tmp_path, capsys):
    baseline, pruned = tmp_path / "baseline.onnx", tmp_path / "pruned.onnx"
    save_model(_matmul_model(10), baseline)
    save_model(_matmul_model(8), pruned)
    assert main(["verify", str(baseline), str(pruned)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "inf" not in out[0]
    assert out[0].startswith("different: tensor 'y' has shape 1x8 in the candidate, 1x10 in the")


def _opset6_model(nodes_after: str = "BatchNormalization") -> onnx.ModelProto:
    """Conv then BatchNormalization (is_test, as opset 6 had it), or then only a Relu, at opset 6
    and IR 3 (initializers listed as inputs): ONNX Runtime has no BatchNormalization(6)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    stats = (
        rng.uniform(0.5, 2, 4),
        rng.standard_normal(4),
        rng.standard_normal(4),
        rng.uniform(1, 2, 4),
    )
    inits += [numpy_helper.from_array(a.astype(np.float32), k) for k, a in zip("sbmv", stats)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4)]
    if nodes_after == "BatchNormalization":
        nodes.append(
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], is_test=1)
        )
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
        inits = inits[:1]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [
        helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in inits
    ]
    graph = helper.make_graph(
        nodes,
        "old",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3)


@pytest.mark.parametrize("after", ["BatchNormalization", "Relu"])
def test_old_opsets_verify_and_fold_into_models_the_runtimes_load(tmp_path, capsys, after):
    path, out = tmp_path / "old.onnx", tmp_path / "folded.onnx"
    onnx.save(_opset6_model(after), path)
    assert main(["verify", str(path), str(path)]) == 0
    assert "opset 6 converted to opset 11" in capsys.readouterr().out
    assert main(["fold", str(path), "-o", str(out), "--merge", "none", "--device", "host"]) == 0
    text = capsys.readouterr().out
    assert "converted" in text and "verified: max relative error" in text
    folded = onnx.load(str(out))
    assert folded.opset_import[0].version == 11
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # loads
    assert main(["verify", str(path), str(out)]) == 0


def _dynamic_model() -> onnx.ModelProto:
    """Conv-BN-ReLU, conv-BN, with dynamic batch, height and width."""
    rng = np.random.default_rng(0)
    inits: list = []
    nodes = _conv_bn_relu("a", 3, 8, "x", rng, inits)
    nodes += _conv_bn_relu("b", 8, 8, "ar", rng, inits)[:2]
    for tensor in inits:
        tensor.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
        )
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("bn", TensorProto.FLOAT, None)],
        inits,
    )
    return make_model(graph)


def test_binding_shapes_keeps_the_per_rewrite_checks(tmp_path):
    path = tmp_path / "dynamic.onnx"
    save_model(_dynamic_model(), path)
    reports = {}
    for name, extra in (("unbound", []), ("bound", ["--input-shape", "3x16x16", "--batch", "1"])):
        report = tmp_path / f"{name}.json"
        args = ["fold", str(path), "-o", str(tmp_path / f"{name}.onnx"), "--merge", "none"]
        assert main(args + extra + ["--report", str(report)]) == 0
        reports[name] = json.loads(report.read_text())["verification"]
    bound, unbound = reports["bound"], reports["unbound"]
    assert bound["verified"] and bound["compared"] >= unbound["compared"] > 1
    assert bound["local_checks"] == 2  # both BatchNorm-folded convs, cut out of the bound graph


def test_verify_with_a_bound_shape_compares_the_shared_tensors(tmp_path, capsys):
    model = _dynamic_model()
    path, folded = tmp_path / "dynamic.onnx", tmp_path / "folded.onnx"
    save_model(model, path)
    save_model(fold_model(model, merge="none").model, folded)
    bound = ["--input-shape", "3x16x16", "--batch", "1", "--json", str(tmp_path / "v.json")]
    assert main(["verify", str(path), str(folded), *bound]) == 0
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["compared"] > 1 and result["local_checks"] == 2


def test_flops_that_miss_nodes_print_as_a_floor():
    assert flops_text(220_000, floor=True) == ">= 0.22M"
    assert flops_text(0, floor=True) == "unknown"
    assert flops_text(220_000, floor=False) == "0.22M"
    report = fold_model(_dynamic_model(), merge="none").report
    assert report.flops_before_floor and report.flops_after_floor
    text = report.to_text()
    assert "FLOPs: unknown -> unknown" in text and "0.00M" not in text
    assert report.to_dict()["flops_before_floor"] is True
