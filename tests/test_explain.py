"""Measured per-layer profiles, their mapping to ONNX nodes and the fold, the deployability lint.

TensorRT data are NVIDIA's own recorded files (tests/trt_recordings.py): trt-engine-explorer's
ResNet-18 A100 FP16 ``--exportLayerInfo`` / ``--exportProfile`` pair (NVIDIA/TensorRT release/8.5,
tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/fp16, TensorRT 8.x format),
turned into the 10.x and 11.x formats by the changes NVIDIA documents (``as_trt10``, ``as_trt11``:
derived, no 10.x or 11.x recording was found).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from harness.backends.base import Runner
from harness.cli import main
from harness.cost.model import CalibratedCostModel
from harness.errors import HarnessError
from harness.explain import (
    conv_geometries,
    kernel_growth_findings,
    lint,
    merge_times,
    original_nodes,
)
from harness.fold import fold_model
from harness.layer_profile import (
    CHAIN_NODES,
    CONV_KINDS,
    LayerProfile,
    LayerTime,
    ProfilerCost,
    map_to_nodes,
    parse_layer_info,
    parse_trt_profile,
    profile_records,
    trt_layer_profile,
)
from harness.measure import CostChain, measure_graphs, open_runner, profile_layers
from harness.profiles import load_profile
from tests.trt_recordings import (
    DLA_PROFILE,
    LAYERS_85,
    PROFILE_85,
    as_trt10,
    as_trt11,
    resnet_head,
)


def _chain_model(channels: int = 12, opset: int = 17) -> onnx.ModelProto:
    """conv3x3 -> conv3x3 (nothing between: a linear chain that merges into a 5x5) -> Relu ->
    depthwise 3x3 -> Add (residual), named nodes."""
    rng = np.random.default_rng(1)
    c = channels
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, n)
        for n, s in (("wa", (c, c, 3, 3)), ("wb", (c, c, 3, 3)), ("wd", (c, 1, 3, 3)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], "conv_a", pads=[1] * 4),
        helper.make_node("Conv", ["a", "wb"], ["b"], "conv_b", pads=[0] * 4),
        helper.make_node("Relu", ["b"], ["r"], "relu"),
        helper.make_node("Conv", ["r", "wd"], ["d"], "conv_dw", pads=[1] * 4, group=c),
        helper.make_node("Add", ["d", "r"], ["y"], "add"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 18, 18])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _gpu_profile(tmp_path: Path, **tensorrt) -> Path:
    data = yaml.safe_load(
        (Path(__file__).parent.parent / "device_profiles/xavier.yaml").read_text()
    )
    data["tensorrt"].update(tensorrt)
    path = tmp_path / "xavier-test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- ONNX Runtime and torch: real profilers on tiny models ---------------------------------------
def test_onnxruntime_profile_ties_every_node_to_a_measured_layer(fast_profile, tmp_path):
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    layers = profile_layers(path, load_profile(str(fast_profile)), runs=5)
    covered = [n for layer in layers.layers for n in layer.nodes]
    assert sorted(covered) == sorted(n.name for n in model.graph.node)  # each node once
    assert len(covered) == len(set(covered))
    assert all(layer.time_ms > 0 for layer in layers.layers)
    assert "on their own, no timed run beside them" in layers.note
    assert layers.time_of(["conv_a"]) > 0


def test_onnxruntime_nchwc_layers_are_tied_by_the_tensor_they_replace(fast_profile, tmp_path):
    """With 16 channels ONNX Runtime (level all) runs NCHWc convs named ``<tensor>_nchwc`` with
    the Relu and the residual Add fused in, and reorders at the edges that compute nothing."""
    model = _chain_model(channels=16)
    path = tmp_path / "chain16.onnx"
    onnx.save(model, path)
    layers = profile_layers(path, load_profile(str(fast_profile)), runs=3)
    by_name = {layer.name: layer for layer in layers.layers}
    if "r_nchwc" not in by_name:
        pytest.skip(f"this ONNX Runtime did not use NCHWc here: {sorted(by_name)}")
    assert by_name["r_nchwc"].nodes == ["conv_b", "relu"]
    assert by_name["d_nchwc"].nodes == ["conv_dw", "add"]
    assert {layer.name for layer in layers.unmapped()} <= {"ReorderInput", "ReorderOutput"}


def _check_taken_off(layers: LayerProfile) -> ProfilerCost:
    """The profiler's cost was measured on the calibration chain and taken off every layer."""
    cost = layers.overhead
    assert cost is not None and cost.nodes == CHAIN_NODES and cost.runs > 0
    assert cost.span_ms > 0 and cost.unprofiled_ms > 0
    assert cost.per_layer_ms == pytest.approx(max(cost.span_ms - cost.unprofiled_ms, 0.0))
    for layer in layers.layers:  # off the convs; other layers keep the profiler's figure
        taken = cost.per_layer_ms if layer.kind in CONV_KINDS else 0.0
        assert layer.time_ms == pytest.approx(max(layer.profiled_ms - taken, 0.0))
    assert layers.profiled_total_ms == pytest.approx(
        sum(layer.profiled_ms for layer in layers.layers)
    )
    stored = layers.to_dict()
    assert stored["overhead"]["per_layer_ms"] == cost.per_layer_ms
    assert stored["profiled_total_ms"] >= stored["total_ms"]
    return cost


def test_profiles_taken_on_their_own_share_one_cost_from_the_bursts_between_them(
    fast_profile, tmp_path
):
    """The cost check compares spans across profiles of different plans: the cost chain is
    sampled between them and one cost, from every burst, is taken off them all."""
    profile = load_profile(str(fast_profile))
    profiles, chain = [], CostChain(profile)
    for channels in (12, 16):
        path = tmp_path / f"chain{channels}.onnx"
        onnx.save(_chain_model(channels=channels), path)
        profiles.append(profile_layers(path, profile, runs=3))
        assert profiles[-1].overhead is None  # nothing taken off a profile on its own
        chain.sample(20)
    cost = chain.cost()
    for layers in profiles:
        layers.take_off(cost)
        assert _check_taken_off(layers) is cost and cost.runs == 40  # both bursts' runs
    assert "us per conv layer" in cost.describe()
    assert not Runner.profiler_in_spans  # a backend says so: TensorRT's are the GPU's own times


def test_a_profilers_cost_is_taken_off_down_to_zero_and_none_changes_nothing():
    layers = [
        LayerTime("conv", "Conv", 0.040, ["conv"]),
        LayerTime("tiny", "Conv", 0.002, ["tiny"]),
        LayerTime("add", "Add", 0.002),
    ]
    profile = LayerProfile("onnxruntime", "ONNX Runtime", 10, copy.deepcopy(layers))
    profile.take_off(ProfilerCost.measured([], 0.1, CHAIN_NODES, 1))  # no conv span
    assert profile.overhead is None and profile.layers == layers
    profile.take_off(ProfilerCost.measured([0.008, 0.009, 0.007], 0.16, 32, 3))
    assert profile.overhead.per_layer_ms == pytest.approx(0.008 - 0.16 / 32)
    assert [layer.time_ms for layer in profile.layers] == pytest.approx([0.037, 0.0, 0.002])
    assert [layer.profiled_ms for layer in profile.layers] == [0.040, 0.002, 0.002]
    assert profile.profiled_total_ms == pytest.approx(0.044)


@pytest.mark.slow
def test_torch_profile_names_each_onnx_node(tmp_path):
    pytest.importorskip("torch")
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    cpu = dataclasses.replace(load_profile("host"), backend="torch")
    layers = profile_layers(path, cpu, runs=3)
    layers.take_off(CostChain(cpu).sample(20).cost())  # the CPU profiler works inside the ranges
    assert [layer.nodes for layer in layers.layers] == [[n.name] for n in model.graph.node]
    assert layers.source.startswith("torch") and layers.profiled_total_ms > 0
    _check_taken_off(layers)


@pytest.mark.slow
def test_torch_profiles_every_graph_in_its_own_blocks(fast_profile, tmp_path):
    """torch keeps one profiler session per process and it records every runner's ops: two
    profiling runners with sessions open at once left the second graph's profile empty and the
    timed runs under a live profiler. A session now lives through its runner's block only."""
    pytest.importorskip("torch")
    cpu = dataclasses.replace(load_profile(str(fast_profile)), backend="torch")
    models = {"a": _chain_model(), "b": _chain_model(channels=16)}
    for name, model in models.items():
        onnx.save(model, tmp_path / f"{name}.onnx")
    timed = measure_graphs({n: tmp_path / f"{n}.onnx" for n in models}, cpu, layers=True)
    for name, model in models.items():
        layers = timed.layers[name]
        assert [la.nodes for la in layers.layers] == [[n.name] for n in model.graph.node]
        assert layers.overhead is not None and layers.note == timed.layers["a"].note
        assert layers.overhead.per_layer_ms == timed.layers["a"].overhead.per_layer_ms
        _check_taken_off(layers)


# --- TensorRT: NVIDIA's recorded files, three formats ---------------------------------------------
@pytest.mark.parametrize("convert", [lambda d: d, as_trt10, as_trt11], ids=["8.5", "10.13", "11.4"])
def test_trt_layer_information_parses_in_each_version_format(convert):
    layers = parse_layer_info(convert(LAYERS_85))
    assert [layer["Name"] for layer in layers] == [layer["Name"] for layer in LAYERS_85["Layers"]]
    profile = trt_layer_profile(PROFILE_85, convert(LAYERS_85), resnet_head(), "x")
    by_name = {layer.name: layer for layer in profile.layers}
    fused = by_name["Conv_5 + Add_6 + Relu_7"]
    assert fused.nodes == ["Conv_5", "Add_6", "Relu_7"]
    assert fused.kind == "CaskConvolution" and fused.precision == "FP16" and fused.device == "GPU"
    assert fused.tactic and fused.time_ms == pytest.approx(
        next(r["averageMs"] for r in PROFILE_85[1:] if r["name"] == fused.name)
    )
    reformat = by_name["Reformatting CopyNode for Input Tensor 0 to Conv_5 + Add_6 + Relu_7"]
    assert reformat.nodes == ["Conv_5", "Add_6", "Relu_7"]  # tied to the layer it feeds
    assert by_name["Reformatting CopyNode for Output Tensor 0 to reshape_after_Gemm_48"].precision
    assert profile.runs == PROFILE_85[0]["count"]


def _second_shape_profile(name: str) -> str:
    return f"{name} [profile 1]"  # TensorRT's suffix on the layer and tensor names of profile 1


@pytest.mark.parametrize("convert", [lambda d: d, as_trt10], ids=["8.5", "10.13"])
def test_a_second_shape_profile_and_sync_layers_join_and_tie_like_the_first(convert):
    """An engine built with two shape profiles: its layer information lists profile 0's layers
    and profile 1's (suffixed ``[profile 1]``, trt-engine-explorer's parser.py), a context on
    profile 1 reports suffixed names; 10.x auxiliary-stream ``signal``/``wait`` layers are
    reported too and have no work of their own. Both derived from the recorded pair."""
    info = convert(LAYERS_85)
    second = copy.deepcopy(info["Layers"])
    for layer in second:
        layer["Name"] = _second_shape_profile(layer["Name"])
        for tensor in layer.get("Inputs", []) + layer.get("Outputs", []):
            tensor["Name"] = _second_shape_profile(tensor["Name"])
    sync = [{"Name": f"{kind} aux 1", "LayerType": kind} for kind in ("signal", "wait")]
    info["Layers"] = info["Layers"] + second + sync
    records = [dict(r, name=_second_shape_profile(r["name"])) for r in PROFILE_85[1:]]
    records += [{"name": f"{kind} aux 1", "averageMs": 0.001} for kind in ("signal", "wait")]
    profile = trt_layer_profile([PROFILE_85[0]] + records, info, resnet_head(), "x")
    first = trt_layer_profile(PROFILE_85, convert(LAYERS_85), resnet_head(), "x")
    assert [(la.name, la.nodes, la.kind, la.precision) for la in profile.layers] == [
        (la.name, la.nodes, la.kind, la.precision) for la in first.layers
    ]
    assert profile.source.endswith("shape profile 1") and "profile" not in first.source


def test_trt_names_only_layer_information_asks_for_detailed_verbosity():
    with pytest.raises(HarnessError, match="profilingVerbosity=detailed"):
        parse_layer_info({"Layers": ["Conv_0 + Relu_1"], "Bindings": []})


def test_trt_11_metadata_ties_layers_whose_names_say_nothing():
    info = as_trt11(LAYERS_85)
    info["Layers"][1]["Name"] = "myelin region 0"  # a name that lists no node
    profile = copy.deepcopy(PROFILE_85)
    profile[2]["name"] = "myelin region 0"
    layers = trt_layer_profile(profile, info, resnet_head())
    assert layers.layers[1].nodes == ["Conv_0", "Relu_1"]  # from Metadata


def test_dla_engine_layers_are_placed_and_gpu_fallback_is_reported(tmp_path):
    info = {"Layers": [dict(layer) for layer in LAYERS_85["Layers"]], "Bindings": []}
    layers = trt_layer_profile(DLA_PROFILE, info, resnet_head(), "8.5")
    by_name = {layer.name: layer for layer in layers.layers}
    foreign = by_name["{ForeignNode[Conv_0...Relu_4]}"]
    assert foreign.device == "DLA"
    assert foreign.nodes == ["Conv_0", "Relu_1", "MaxPool_2", "Conv_3", "Relu_4"]
    assert by_name["onnx::Conv_129 from nvm"].device == "DLA"
    assert by_name["Conv_5 + Add_6 + Relu_7"].device == "GPU"
    profile = load_profile(str(_gpu_profile(tmp_path, dla_core=0)))
    findings = lint(resnet_head(), layers, profile, "fp16")
    fallback = [f for f in findings if f.rule == "gpu-fallback"]
    assert [f.layer for f in fallback] == ["Conv_5 + Add_6 + Relu_7"]
    assert fallback[0].measured_ms == pytest.approx(0.1)
    assert fallback[0].nodes == ["Conv_5", "Add_6", "Relu_7"]


def test_a_gpu_only_foreign_node_is_not_taken_for_the_dla():
    records = [{"count": 1}, {"name": "{ForeignNode[Conv_0...Relu_1]}", "averageMs": 0.1}]
    layers = parse_trt_profile(records)
    assert layers[0].kind == ""
    info = {"Layers": [{"Name": "{ForeignNode[Conv_0...Relu_1]}", "LayerType": "Myelin"}]}
    profile = trt_layer_profile(records, info, resnet_head())
    assert profile.layers[0].device == "GPU" and profile.layers[0].nodes == ["Conv_0", "Relu_1"]


def _no_average(records):
    del records[3]["averageMs"]


def _average_text(records):
    records[2]["averageMs"] = "fast"


def _header_null(records):
    records[0] = None


@pytest.mark.parametrize(
    "change,message",
    [
        (_no_average, "record 3 ('MaxPool_2'): averageMs None is not a time in ms"),
        (_average_text, "record 2 ('Conv_0 + Relu_1'): averageMs 'fast' is not a time in ms"),
        (_header_null, "record 0 is not an object with a name"),
    ],
)
def test_a_broken_trtexec_profile_names_its_record(change, message):
    records = copy.deepcopy(PROFILE_85)
    change(records)
    with pytest.raises(HarnessError, match=re.escape(message)):
        trt_layer_profile(records, LAYERS_85, resnet_head())


def test_layer_information_whose_tensors_are_not_lists_keeps_the_layer():
    info = copy.deepcopy(LAYERS_85)  # found by fuzzing: a number here was an internal error
    conv = next(layer for layer in info["Layers"] if layer["Name"] == "Conv_3 + Relu_4")
    conv["Inputs"], conv["Outputs"] = 7, None
    layers = trt_layer_profile(PROFILE_85, info, resnet_head())
    kept = next(layer for layer in layers.layers if layer.name == "Conv_3 + Relu_4")
    assert kept.inputs == [] and kept.precision == "" and kept.nodes == ["Conv_3", "Relu_4"]


def test_other_precision_than_asked_is_reported(tmp_path):
    info = copy.deepcopy(LAYERS_85)
    conv = next(layer for layer in info["Layers"] if layer["Name"] == "Conv_3 + Relu_4")
    conv["Outputs"][0]["Format/Datatype"] = "Row major linear FP32"
    layers = trt_layer_profile(PROFILE_85, info, resnet_head())
    findings = lint(resnet_head(), layers, load_profile(str(_gpu_profile(tmp_path))), "fp16")
    other = [f for f in findings if f.rule == "other-precision"]
    assert [f.layer for f in other] == ["Conv_3 + Relu_4"]
    assert "FP32" in other[0].detail and other[0].measured_ms > 0


# --- the lint's graph rules and the merges ------------------------------------------------------
def _profile_of(model: onnx.ModelProto, times: dict) -> LayerProfile:
    layers = [LayerTime(name, "", ms) for name, ms in times.items()]
    map_to_nodes(layers, model)
    return LayerProfile("test", "recorded by hand", 1, layers)


def test_fused_activations_join_the_layer_named_after_their_conv():
    """ONNX Runtime's FusedConv keeps the conv's name: the Relu and Add it absorbed have no layer
    of their own and join it; a MaxPool with no layer is not pulled into a named layer."""
    model = resnet_head()
    layers = _profile_of(model, {"Conv_0": 0.2, "Conv_3": 0.1, "Conv_5": 0.1})
    nodes = {layer.name: layer.nodes for layer in layers.layers}
    assert nodes == {
        "Conv_0": ["Conv_0", "Relu_1"],
        "Conv_3": ["Conv_3", "Relu_4"],
        "Conv_5": ["Conv_5", "Add_6", "Relu_7"],
    }


def test_channels_tensor_cores_pad_are_found_on_gpus_only(tmp_path, fast_profile):
    model = _chain_model(channels=12)
    layers = _profile_of(model, {n.name: 0.5 for n in model.graph.node})
    gpu = load_profile(str(_gpu_profile(tmp_path)))
    rules = {f.rule: f for f in lint(model, layers, gpu, "fp16")}
    found = rules["channels-not-multiple-of-8"]
    assert found.nodes in (["conv_a"], ["conv_b"]) and found.measured_ms == 0.5
    assert "in 12, out 12" in found.detail
    assert not [f for f in lint(model, layers, gpu, "fp32") if f.rule.startswith("channels")]
    host = load_profile(str(fast_profile))
    assert not [f for f in lint(model, layers, host, "fp32") if f.rule.startswith("channels")]
    aligned = _chain_model(channels=16)
    assert not [
        f
        for f in lint(aligned, _profile_of(aligned, {}), gpu, "fp16")
        if f.rule.startswith("channels")
    ]


def test_opset_beyond_the_profiles_trt_parser(tmp_path):
    model = _chain_model(opset=19)
    gpu = load_profile(str(_gpu_profile(tmp_path)))  # Xavier: TensorRT 8.5, opset <= 17
    (finding,) = [f for f in lint(model, _profile_of(model, {}), gpu, "fp16") if "opset" in f.rule]
    assert "opset 19" in finding.detail and "17" in finding.detail


def _with_ops(model: onnx.ModelProto, *ops: str) -> onnx.ModelProto:
    """``model`` with a unary node of each op appended after its output (only its op type is
    read: the lint does not run it)."""
    out = model.graph.output[0].name
    for index, op in enumerate(ops):
        model.graph.node.append(onnx.helper.make_node(op, [out], [f"{op}_{index}"], name=op))
        out = f"{op}_{index}"
    return model


@pytest.mark.parametrize(
    "expected_tensorrt,release", [("8.5", "8.5"), ("8.5.2", "8.5"), ("10.3", "10.1")]
)
def test_ops_the_releases_parser_matrix_marks_unsupported_or_does_not_list(
    tmp_path, expected_tensorrt, release
):
    """onnx-tensorrt's own support matrix of the release (harness/backends/trt/parser_ops.py):
    Unique is N in 8.5 and 10.1; BitwiseNot is N in 10.1 and newer than 8.5's matrix."""
    model = _with_ops(_chain_model(), "Unique", "BitwiseNot", "Relu")
    gpu = load_profile(str(_gpu_profile(tmp_path)))
    gpu.expect.tensorrt = expected_tensorrt
    found = {f.rule: f for f in lint(model, _profile_of(model, {}), gpu, "fp16") if "op-" in f.rule}
    unique = found["op-unsupported-by-parser"]
    assert unique.nodes == ["Unique"] and release in unique.source and "Unique" in unique.detail
    bitwise = "op-not-in-parser-matrix" if release == "8.5" else "op-unsupported-by-parser"
    assert any(
        "BitwiseNot" in f.detail
        for f in lint(model, _profile_of(model, {}), gpu, "fp16")
        if f.rule == bitwise
    )
    gpu.expect.tensorrt = "11.4"  # no matrix recorded for 11.x: opsets only
    assert not [f for f in lint(model, _profile_of(model, {}), gpu, "fp16") if "op-" in f.rule]


def test_grouped_convs_the_calibration_prices_above_dense(fast_profile):
    model = _chain_model()
    slow_dw = CalibratedCostModel(
        {"dense-k3-s1": 1e-6, "dw-k3-s1": 50e-6}, {"dense-k3-s1": 1e-12, "dw-k3-s1": 1e-9}, 0, 0, 0
    )
    layers = _profile_of(model, {"conv_dw": 0.2})
    profile = load_profile(str(fast_profile))
    (found,) = [f for f in lint(model, layers, profile, "fp32", slow_dw) if "grouped" in f.rule]
    assert found.nodes == ["conv_dw"] and found.measured_ms == 0.2
    fast_dw = CalibratedCostModel(
        {"dense-k3-s1": 50e-6, "dw-k3-s1": 1e-6}, {"dense-k3-s1": 1e-9, "dw-k3-s1": 1e-12}, 0, 0, 0
    )
    assert not [f for f in lint(model, layers, profile, "fp32", fast_dw) if "grouped" in f.rule]


def test_merges_measured_before_and_after_through_the_fold_records():
    model = _chain_model()
    result = fold_model(model, merge="all")
    (merge,) = [r for r in result.report.records if r.action.value == "merged"]
    assert original_nodes(result.report.records)[merge.result] == ["conv_a", "conv_b"]
    before = _profile_of(model, {"conv_a": 0.3, "conv_b": 0.2, "relu": 0.01, "conv_dw": 0.1})
    after = _profile_of(result.model, {merge.result: 0.4, "conv_dw": 0.1})
    timed, residual = merge_times(result.report.records, before, after)
    assert timed.nodes == ["conv_a", "conv_b"]
    assert timed.measured_before_ms == pytest.approx(0.5)  # conv_a + conv_b with relu fused in
    assert timed.measured_after_ms == pytest.approx(0.4)
    # the residual's Add folded into the depthwise conv: both stand behind conv_dw
    assert residual.nodes == ["conv_dw", "add"] and residual.result == "conv_dw"
    assert original_nodes(result.report.records)["conv_dw"] == ["conv_dw", "add"]
    grown = kernel_growth_findings(
        result.report.records, conv_geometries(model), conv_geometries(result.model), {}
    )
    assert len(grown) == 1 and "3x3, 3x3" in grown[0].detail and "5x5" in grown[0].detail


def test_launch_bound_layers(fast_profile):
    model = _chain_model()
    layers = _profile_of(model, {"conv_a": 0.5, "relu": 0.001})
    profile = load_profile(str(fast_profile))  # layer_overhead_us: 2
    found = [f for f in lint(model, layers, profile, "fp32") if f.rule == "launch-overhead"]
    assert [f.layer for f in found] == ["relu"]


# --- the command ---------------------------------------------------------------------------------
def test_explain_command_measures_ties_and_writes_json(fast_profile, tmp_path, capsys):
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model(), path)
    out, md, table = tmp_path / "explain.json", tmp_path / "e.md", tmp_path / "e.csv"
    argv = ["explain", str(path), "--device", str(fast_profile), "--merge", "all"]
    argv += ["--json", str(out), "--markdown", str(md), "--csv", str(table)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert {r["record"] for r in rows} == {"layer", "finding"}
    layer_rows = [r for r in rows if r["record"] == "layer"]
    assert len(layer_rows) == len(data["layers"]["layers"])
    for row, layer in zip(layer_rows, data["layers"]["layers"]):  # the profiler's own figure too
        assert float(row["profiled_ms"]) == pytest.approx(layer["profiled_ms"], abs=1e-6)
    assert "kernel-grown-by-merge" in md.read_text() and "| merged conv |" in md.read_text()
    text = capsys.readouterr().out
    assert "sum of measured layers" in text and "timed end to end" in text
    assert "taken off each" in text and "raw spans" in text
    assert data["end_to_end_ms"] > 0 and data["layers"]["total_ms"] > 0
    assert data["merges"][0]["nodes"] == ["conv_a", "conv_b"]
    merged = [x for x in data["layers"]["layers"] if "conv_a" in x["original_nodes"]]
    assert merged and "conv_b" in merged[0]["original_nodes"]
    assert any(f["rule"] == "kernel-grown-by-merge" for f in data["findings"])


def test_explain_command_reads_trtexec_exports(tmp_path, capsys):
    path, prof, info = tmp_path / "head.onnx", tmp_path / "p.json", tmp_path / "l.json"
    onnx.save(resnet_head(), path)
    prof.write_text(json.dumps(DLA_PROFILE))
    info.write_text(json.dumps(LAYERS_85))
    device = _gpu_profile(tmp_path, dla_core=0)
    code = main(
        [
            "explain",
            str(path),
            "--device",
            str(device),
            "--trt-profile",
            str(prof),
            "--trt-layers",
            str(info),
        ]
    )
    assert code == 0
    assert "gpu-fallback" in capsys.readouterr().out


def test_explain_command_needs_both_trtexec_files(tmp_path, capsys):
    path = tmp_path / "head.onnx"
    onnx.save(resnet_head(), path)
    assert main(["explain", str(path), "--trt-profile", str(path)]) == 2
    assert "go together" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["8.5", "10.13", "11.1"])
def test_a_trtexec_profiling_run_is_read_back_per_version(version, tmp_path, monkeypatch):
    """The stand-in writes trtexec's export layouts (ONNX Runtime's times, not TensorRT's): the
    profiling command is accepted by each version and both files are read back."""
    import os

    from harness.layer_profile import profile_trtexec
    from tests.trtexec_standin import install

    binary = install(tmp_path / "bin", version)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    profile = load_profile(str(_gpu_profile(tmp_path)))
    layers = profile_trtexec(path, profile, "fp32", 1)
    assert [layer.nodes for layer in layers.layers] == [[n.name] for n in model.graph.node]
    assert layers.runs == 10 and layers.source.startswith(f"TensorRT {version}")
    assert "after the timed runs" in layers.note  # not interleaved: said so
    assert all(layer.device == "GPU" and layer.precision == "FP32" for layer in layers.layers)


# --- the measurement path: profiled runners interleaved with the timed ones ----------------------
def test_measure_graphs_profiles_each_graph_beside_its_timed_runs(fast_profile, tmp_path):
    """A profiling runner per graph is timed in the same rounds (its samples are not the graph's)
    and the run records its layers, each ONNX node covered once, with the timed median beside."""
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    profile = load_profile(str(fast_profile))
    timed = measure_graphs({"a": path, "b": path}, profile, layers=True)
    assert set(timed.runs) == set(timed.measurements) == {"a", "b"}
    for name, run in timed.runs.items():
        stored = run.layers
        covered = sorted(n for layer in stored["layers"] for n in layer.get("nodes", []))
        assert covered == sorted(n.name for n in model.graph.node)
        assert stored["timed_ms"] == run.stats.median
        assert "apart from the timed runs and interleaved with them" in stored["note"]
        assert stored["runs"] >= 1 and stored["run_ms"] > 0
        assert timed.layers[name].total_ms == pytest.approx(stored["total_ms"])
    assert measure_graphs({"a": path}, profile).runs["a"].layers is None


def test_a_backend_without_a_profiler_refuses_a_profiling_runner(fast_profile, tmp_path):
    class Plain(Runner):
        backend_name = "plain"

        def _activate_impl(self): ...
        def input_specs(self): ...
        def _infer_impl(self, feeds): ...
        def _measure_impl(self): ...

    with pytest.raises(HarnessError, match="plain backend has no per-layer profiler"):
        Plain(tmp_path / "m.onnx", load_profile(str(fast_profile)), profiling=True)
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model(), path)
    with open_runner(path, load_profile(str(fast_profile))) as runner:
        with pytest.raises(HarnessError, match="not made with profiling=True"):
            runner.layer_profile()


def test_bench_layers_records_profiles_tied_through_the_fold_and_findings(fast_profile, tmp_path):
    """bench --layers: every run has its layers; the folded graph's merged conv stands for both
    original convs; the lint ran on every run (the merge grew a kernel)."""
    path, narrow = tmp_path / "chain.onnx", tmp_path / "narrow.onnx"
    onnx.save(_chain_model(), path)
    onnx.save(_chain_model(channels=8), narrow)
    out = tmp_path / "b"
    argv = ["bench", "--baseline", str(path), "--variants", str(narrow), "--merge", "all"]
    assert main(argv + ["--device", str(fast_profile), "--layers", "--out", str(out)]) == 0
    runs = {r["id"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    folded = next(r for r in runs.values() if r["folded"])
    assert all(r["layers"]["layers"] and r["findings"] is not None for r in runs.values())
    merged = [x for x in folded["layers"]["layers"] if "conv_a" in x["original_nodes"]]
    assert merged and "conv_b" in merged[0]["original_nodes"]
    assert any(f["rule"] == "kernel-grown-by-merge" for f in folded["findings"])


# --- TensorRT: the runner's IProfiler reports go through the same join ----------------------------
def test_profiler_reports_become_trtexec_records_and_join_like_trtexec_files():
    """Three runs of ``report_layer_time`` calls (as TensorRT makes them, the recorded averages
    perturbed): the records are trtexec's layout, and the join gives what the files give."""
    names = [r["name"] for r in PROFILE_85[1:]]
    reports = [
        (name, r["averageMs"] * factor)
        for factor in (0.9, 1.0, 1.4)
        for name, r in zip(names, PROFILE_85[1:])
    ]
    records = profile_records(reports)
    assert records[0] == {"count": 3} and [r["name"] for r in records[1:]] == names
    conv = next(r for r in records if r.get("name") == "Conv_5 + Add_6 + Relu_7")
    recorded = next(r for r in PROFILE_85 if r.get("name") == conv["name"])["averageMs"]
    assert conv["averageMs"] == pytest.approx(recorded * 1.1)
    assert conv["medianMs"] == pytest.approx(recorded)
    assert sum(r["percentage"] for r in records[1:]) == pytest.approx(100)
    from_runner = trt_layer_profile(records, as_trt10(LAYERS_85), resnet_head(), "10.13", "runner")
    from_files = trt_layer_profile(PROFILE_85, as_trt10(LAYERS_85), resnet_head(), "10.13")
    assert from_runner.source == "runner" and from_runner.runs == 3
    assert [(x.name, x.nodes, x.precision, x.device) for x in from_runner.layers] == [
        (x.name, x.nodes, x.precision, x.device) for x in from_files.layers
    ]


def test_layer_information_as_text_with_raw_metadata_separators():
    """Inspector text straight from ``get_engine_information``; the separators unescaped (JSON's
    strict mode refuses control characters), U+001E (8.6) and U+001F (10.0) alike."""
    layer = {"Name": "__myl_ConvRelu_0", "LayerType": "kgen", "Outputs": []}
    layer["Metadata"] = "[ONNX Layer: Conv_0]\x1e[ONNX Layer: Relu_1]\x1f[ONNX Layer: gone]"
    text = json.dumps({"Layers": [layer], "Bindings": ["input.1"]}).replace("\\u001e", "\x1e")
    text = text.replace("\\u001f", "\x1f")
    assert "\x1e" in text and parse_layer_info(text)[0]["Name"] == "__myl_ConvRelu_0"
    records = [{"count": 1}, {"name": "__myl_ConvRelu_0", "averageMs": 0.1}]
    profile = trt_layer_profile(records, text, resnet_head())
    assert profile.layers[0].nodes == ["Conv_0", "Relu_1"]  # 'gone' is no node of the model
    with pytest.raises(HarnessError, match="ProfilingVerbosity.DETAILED"):
        parse_layer_info("")


@pytest.mark.parametrize(
    "tensor,expected",
    [
        ({"Format/Datatype": "Row major linear FP32"}, "FP32"),
        ({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}, "FP16"),
        ({"Format/Datatype": "Half"}, "FP16"),  # 10.x kgen kernels (TREx activations.py)
        ({"Format/Datatype": "Float"}, "FP32"),
        ({"Format/Datatype": "Channel major BFloat16 format where channel % 8 == 0"}, "BF16"),
        ({"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}, "Int8"),
        ({"Format/Datatype": "Row major linear FP8 format"}, "FP8"),
        ({"Format": "Row major linear FP16 format", "DataType": "Half"}, "FP16"),  # 11.x
        ({"Datatype": "Int8"}, "Int8"),
        ({"Format/Datatype": "Something new"}, "Something new"),
    ],
)
def test_datatypes_as_each_version_writes_them(tensor, expected):
    from harness.layer_profile import _datatype

    assert _datatype(tensor) == expected


def test_time_layers_records_profiles_that_report_renders(fast_profile, tmp_path, capsys):
    """harness time --layers: each file's run records its layers and findings, the line says so,
    and harness report writes the layer files from them."""
    path, again = tmp_path / "chain.onnx", tmp_path / "again.onnx"
    onnx.save(_chain_model(), path)
    onnx.save(_chain_model(), again)
    out = tmp_path / "t.json"
    argv = ["time", str(path), str(again), "--device", str(fast_profile), "--layers"]
    assert main(argv + ["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layers measured, summing to" in printed and "after the profiler's own cost" in printed
    runs = json.loads(out.read_text())["runs"]
    assert all(r["layers"]["layers"] and r["findings"] is not None for r in runs)
    assert main(["report", str(out), "-o", str(tmp_path / "r"), "--no-plots"]) == 0
    assert "conv_a" in (tmp_path / "r" / "layers.csv").read_text()
    cost = runs[0]["layers"]["overhead"]["per_layer_ms"] * 1e3  # measured, taken off each layer
    caption = f"after the profiler's own cost ({cost:.1f} us per conv, measured) was taken off"
    assert caption in (tmp_path / "r" / "layers.md").read_text()


def test_explain_refuses_bad_top_and_trt_exports_of_another_model(tmp_path, capsys):
    """--top must be positive (before any work); missing exports are all named; a profile file
    given as layer information, and exports whose layers name no node of the model, are refused
    in one line."""
    path, prof, info = tmp_path / "chain.onnx", tmp_path / "p.json", tmp_path / "l.json"
    onnx.save(_chain_model(), path)
    assert main(["explain", str(path), "--top", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    argv = ["explain", str(path), "--trt-profile", str(prof), "--trt-layers", str(info)]
    assert main(argv) == 2
    assert f"no such file: {prof}, {info}" in capsys.readouterr().err
    prof.write_text(json.dumps(PROFILE_85))
    info.write_text(json.dumps(PROFILE_85[1:]))
    assert main(argv) == 2
    assert "--exportProfile file rather than its --exportLayerInfo" in capsys.readouterr().err
    info.write_text(json.dumps(LAYERS_85))  # ResNet-18's engine, not this chain's
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is tied to a node of" in err and "Traceback" not in err


def test_explain_binds_an_onnx_files_dynamic_dims(fast_profile, tmp_path, capsys):
    """--input-shape (or --shapes) binds a dynamic ONNX file's dims, as time and bench do."""
    from tests.conftest import conv_net

    path = conv_net(tmp_path / "dynamic.onnx", 2, 8, dynamic=True)
    out = tmp_path / "e.json"
    argv = ["explain", str(path), "--device", str(fast_profile), "--merge", "none"]
    assert main(argv + ["--input-shape", "3x20x20", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["layers"]["total_ms"] > 0
    assert main(argv + ["--shapes", "x:1x3x16x16"]) == 0
    assert "sum of measured layers" in capsys.readouterr().out
