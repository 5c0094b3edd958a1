"""Verification in one ONNX Runtime session: the joint graph computes what the two graphs compute
(it reaches the verdicts one session per graph reaches, on real folds and on broken ones), stores a
weight both graphs hold once and keeps large weights out of the serialised graph; graphs it cannot
join, and candidates ONNX Runtime refuses, are still judged one session per graph. Shapes inferred
on a weightless skeleton are the shapes inferred on the whole model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import harness.fold.verify as verify
from harness.export import export_module
from harness.fold import fold_model
from harness.fold.joint import joint_model
from harness.fold.skeleton import checker_problem_quick, infer_shapes_quick, is_large, skeleton
from harness.fold.tolerance import Judge, Tolerance
from harness.onnx_io import checker_problem, infer_shapes_lenient
from harness.zoo import build_model


@pytest.fixture(scope="module")
def folded(tmp_path_factory) -> tuple:
    """ResNet-20 with its 1x1 convs left linear (merges and residual folds) and its fold."""
    module, shape = build_model("resnet20", "dc-1x1")
    path = tmp_path_factory.mktemp("joint") / "resnet20.onnx"
    original = export_module(module, shape, path)
    return original, fold_model(original, merge="all").model


def _one_session_per_graph(monkeypatch, original, candidate) -> verify.VerifyResult:
    monkeypatch.setattr(verify, "_compare_joint", lambda *args: None)
    return verify.compare_models(original, candidate)


def _corrupted(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with the largest weight of the deepest merged conv changed by a tenth of its range."""
    mutant = onnx.ModelProto()
    mutant.CopyFrom(model)
    weights = {t.name: t for t in mutant.graph.initializer}
    conv = [n for n in mutant.graph.node if n.op_type == "Conv"][-2]
    tensor = weights[conv.input[1]]
    values = numpy_helper.to_array(tensor).copy()
    values.reshape(-1)[np.argmax(np.abs(values))] *= 1.1
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    return mutant


def _joint(original: onnx.ModelProto, candidate: onnx.ModelProto):
    """The joint comparison alone, its verdict concluded: (result, responses, notes) or None."""
    judge = Judge(original, Tolerance())
    joint = verify._compare_joint(original, candidate, verify.SEEDS, judge, True, {})
    if joint is not None:
        verify._conclude(judge, joint[0])
    return joint


def test_the_joint_graph_reaches_the_verdict_of_one_session_per_graph(folded, monkeypatch):
    original, candidate = folded
    joint = _joint(original, candidate)
    assert joint is not None, "the fold of a zoo model can be verified in one session"
    result = verify.compare_models(original, candidate)
    apart = _one_session_per_graph(monkeypatch, original, candidate)
    assert result.verified and apart.verified
    assert result.compared == apart.compared > len(original.graph.output)
    assert result.local_checks == apart.local_checks > 0
    assert result.responsive == apart.responsive > 0
    assert result.max_rel_error < 1e-4 and apart.max_rel_error < 1e-4


def test_a_corrupted_weight_is_caught_by_the_joint_graph_itself(folded, monkeypatch):
    original, candidate = folded
    mutant = _corrupted(candidate)
    joint = _joint(original, mutant)
    assert joint is not None
    result, _, _ = joint
    assert result.status == verify.DIFFERENT and result.max_rel_error > 1e-3
    assert _one_session_per_graph(monkeypatch, original, mutant).status == verify.DIFFERENT


def test_shared_weights_are_stored_once_and_large_ones_stay_out_of_the_graph(folded):
    original, candidate = folded
    shared = verify.shared_tensors(original, candidate)
    changed = verify.changed_nodes(original, candidate)
    joint = joint_model(original, candidate, shared, changed, outside=True)
    mine = {t.name: t for t in original.graph.initializer}
    own = [t for t in candidate.graph.initializer if mine.get(t.name) != t]
    assert 0 < len(own) < len(candidate.graph.initializer)
    assert len(joint.model.graph.initializer) == len(mine) + len(own)
    external = [t for t in joint.model.graph.initializer if t.external_data]
    assert external and len(joint.weights) == len(external)
    for tensor in external:
        entries = {e.key: e.value for e in tensor.external_data}
        assert int(entries["length"]) == joint.weights[entries["location"]].nbytes > 0
    assert joint.model.ByteSize() < original.ByteSize() / 4
    assert len(joint.local) + joint.skipped == len(changed)


def test_a_candidate_onnx_runtime_cannot_load_is_pinned_on_the_candidate(folded):
    original, candidate = folded
    broken = onnx.ModelProto()
    broken.CopyFrom(candidate)
    next(n for n in broken.graph.node if n.op_type == "Conv").op_type = "NoSuchOp"
    result = verify.compare_models(original, broken)
    assert result.status == verify.DIFFERENT
    assert "cannot load the candidate" in result.note


def test_graphs_that_cannot_be_joined_are_compared_one_session_each(folded):
    original, candidate = folded
    other = onnx.ModelProto()
    other.CopyFrom(candidate)
    other.opset_import[0].version += 1  # nothing this graph uses changed between the two opsets
    assert joint_model(original, other, [], []) is None
    result = verify.compare_models(original, other)
    assert result.verified and result.local_checks > 0


def test_shapes_inferred_on_the_skeleton_are_the_whole_models(folded):
    original, _ = folded
    bare = onnx.ModelProto()
    bare.CopyFrom(original)
    del bare.graph.value_info[:]
    before = bare.SerializeToString()
    quick, slow = infer_shapes_quick(bare), infer_shapes_lenient(bare)
    assert bare.SerializeToString() == before, "the input model is not modified"
    assert len(quick.graph.value_info) > 0
    assert list(quick.graph.value_info) == list(slow.graph.value_info)
    assert list(quick.graph.output) == list(slow.graph.output)
    assert skeleton(bare).ByteSize() < bare.ByteSize() / 4


def test_a_skeleton_keeps_the_small_initializers_shape_inference_reads(tmp_path: Path):
    original = export_module(build_model("lenet5", "baseline")[0], (1, 28, 28), tmp_path / "l.onnx")
    bare = skeleton(original)
    names = [t.name for t in original.graph.initializer]
    assert [t.name for t in bare.graph.initializer] == names
    for tensor, kept in zip(original.graph.initializer, bare.graph.initializer):
        assert kept.dims == tensor.dims and kept.data_type == tensor.data_type
        assert (kept == tensor) == (len(tensor.raw_data) < 4096)


def _broken(model: onnx.ModelProto, how: str) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    large = next(t for t in copy.graph.initializer if is_large(t))
    if how == "dangling input":
        copy.graph.node[3].input[0] = "nowhere"
    elif how == "short weight":
        large.raw_data = large.raw_data[:-4]
    elif how == "two value fields":
        large.float_data.append(1.0)
    return copy


@pytest.mark.parametrize("how", ["valid", "dangling input", "short weight", "two value fields"])
def test_the_quick_checker_finds_what_onnx_checker_finds(folded, how):
    model = _broken(folded[1], how)
    quick, full = checker_problem_quick(model), checker_problem(model)
    assert bool(quick) == bool(full) == (how != "valid")
    if how != "short weight":  # the checker says "too small", the quick one "does not match"
        assert quick == full
