"""Measured per-layer profiles, their mapping to ONNX nodes and the fold, the deployability lint.

TensorRT doubles are NVIDIA's own recorded files: trt-engine-explorer's ResNet-18 A100 FP16
``--exportLayerInfo`` / ``--exportProfile`` pair (NVIDIA/TensorRT release/8.5,
tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/fp16, TensorRT 8.x format),
turned into the 10.x and 11.x formats by the changes NVIDIA documents (``as_trt10``, ``as_trt11``).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

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
    LayerProfile,
    LayerTime,
    map_to_nodes,
    parse_layer_info,
    parse_trt_profile,
    trt_layer_profile,
)
from harness.measure import profile_layers
from harness.profiles import load_profile

DATA = Path(__file__).parent / "data" / "trt" / "profiles"
LAYERS_85 = json.loads((DATA / "resnet18_a100_fp16.layers.json").read_text())
PROFILE_85 = json.loads((DATA / "resnet18_a100_fp16.profile.json").read_text())


def as_trt10(info: dict) -> dict:
    """The 8.5 layer information as 10.x writes it: each layer with a ``Metadata`` field of
    ``[ONNX Layer: name]`` records joined by U+001E (added in 8.6; NVIDIA/TensorRT issue 2779, and
    trt-engine-explorer's parser.py ``fix_unicode``)."""
    out = copy.deepcopy(info)
    for layer in out["Layers"]:
        parts = [p for p in layer["Name"].split(" + ") if not p.startswith("Reformatting")]
        layer["Metadata"] = "\x1e".join(f"[ONNX Layer: {p}]" for p in parts)
    return out


def as_trt11(info: dict) -> dict:
    """The 10.x layer information as 11.x writes it: ``Bindings`` (names) replaced by ``I/O
    Tensors`` (objects with Name, IOMode, ...), per NVIDIA's 'Migrating IEngineInspector Usage from
    TensorRT 10.x to 11.x'."""
    out = as_trt10(info)
    names = out.pop("Bindings")
    out["I/O Tensors"] = [
        {"Name": n, "IOMode": "Input" if i == 0 else "Output", "Location": "Device"}
        for i, n in enumerate(names)
    ]
    return out


def _resnet_head() -> onnx.ModelProto:
    """The first block of the recorded ResNet-18, with its exporter's node and tensor names
    (Conv_0 ... Relu_7: what TensorRT's layer names refer to)."""
    rng = np.random.default_rng(0)

    def weight(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)

    nodes = [
        helper.make_node("Conv", ["input.1", "w0"], ["c0"], "Conv_0", pads=[3] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["c0"], ["onnx::MaxPool_125"], "Relu_1"),
        helper.make_node(
            "MaxPool",
            ["onnx::MaxPool_125"],
            ["input.8"],
            "MaxPool_2",
            kernel_shape=[3, 3],
            pads=[1] * 4,
            strides=[2, 2],
        ),
        helper.make_node("Conv", ["input.8", "w3"], ["c3"], "Conv_3", pads=[1] * 4),
        helper.make_node("Relu", ["c3"], ["onnx::Conv_129"], "Relu_4"),
        helper.make_node("Conv", ["onnx::Conv_129", "w5"], ["c5"], "Conv_5", pads=[1] * 4),
        helper.make_node("Add", ["c5", "input.8"], ["a6"], "Add_6"),
        helper.make_node("Relu", ["a6"], ["input.24"], "Relu_7"),
    ]
    graph = helper.make_graph(
        nodes,
        "resnet18-head",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("input.24", TensorProto.FLOAT, [1, 64, 16, 16])],
        [weight("w0", (64, 3, 7, 7)), weight("w3", (64, 64, 3, 3)), weight("w5", (64, 64, 3, 3))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


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
    assert "apart from the timed runs" in layers.note
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


@pytest.mark.slow
def test_torch_profile_names_each_onnx_node(tmp_path):
    pytest.importorskip("torch")
    model = _chain_model()
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    cpu = dataclasses.replace(load_profile("host"), backend="torch")
    layers = profile_layers(path, cpu, runs=3)
    assert [layer.nodes for layer in layers.layers] == [[n.name] for n in model.graph.node]
    assert layers.source.startswith("torch") and layers.total_ms > 0


# --- TensorRT: NVIDIA's recorded files, three formats ---------------------------------------------
@pytest.mark.parametrize("convert", [lambda d: d, as_trt10, as_trt11], ids=["8.5", "10.13", "11.4"])
def test_trt_layer_information_parses_in_each_version_format(convert):
    layers = parse_layer_info(convert(LAYERS_85))
    assert [layer["Name"] for layer in layers] == [layer["Name"] for layer in LAYERS_85["Layers"]]
    profile = trt_layer_profile(PROFILE_85, convert(LAYERS_85), _resnet_head(), "x")
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


def test_trt_names_only_layer_information_asks_for_detailed_verbosity():
    with pytest.raises(HarnessError, match="profilingVerbosity=detailed"):
        parse_layer_info({"Layers": ["Conv_0 + Relu_1"], "Bindings": []})


def test_trt_11_metadata_ties_layers_whose_names_say_nothing():
    info = as_trt11(LAYERS_85)
    info["Layers"][1]["Name"] = "myelin region 0"  # a name that lists no node
    profile = copy.deepcopy(PROFILE_85)
    profile[2]["name"] = "myelin region 0"
    layers = trt_layer_profile(profile, info, _resnet_head())
    assert layers.layers[1].nodes == ["Conv_0", "Relu_1"]  # from Metadata


# The DLA layer names are those trtexec printed for a DLA engine in NVIDIA/TensorRT issue 3143
# (per-layer profile: 'images to nvm', '{ForeignNode[Conv_0...Concat_198]}', 'head_3 from nvm',
# 'images copy finish'), here over the recorded ResNet head.
DLA_PROFILE = [
    {"count": 400},
    {"name": "input.1 to nvm", "timeMs": 34.0, "averageMs": 0.085, "percentage": 1.1},
    {"name": "{ForeignNode[Conv_0...Relu_4]}", "timeMs": 3.4, "averageMs": 0.0085, "percentage": 1},
    {"name": "onnx::Conv_129 from nvm", "timeMs": 3069.6, "averageMs": 7.69, "percentage": 98.4},
    {"name": "input.1 copy finish", "timeMs": 0.67, "averageMs": 0.0017, "percentage": 0.0},
    {"name": "Conv_5 + Add_6 + Relu_7", "timeMs": 40.0, "averageMs": 0.1, "percentage": 0.5},
]


def test_dla_engine_layers_are_placed_and_gpu_fallback_is_reported(tmp_path):
    info = {"Layers": [dict(layer) for layer in LAYERS_85["Layers"]], "Bindings": []}
    layers = trt_layer_profile(DLA_PROFILE, info, _resnet_head(), "8.5")
    by_name = {layer.name: layer for layer in layers.layers}
    foreign = by_name["{ForeignNode[Conv_0...Relu_4]}"]
    assert foreign.device == "DLA"
    assert foreign.nodes == ["Conv_0", "Relu_1", "MaxPool_2", "Conv_3", "Relu_4"]
    assert by_name["onnx::Conv_129 from nvm"].device == "DLA"
    assert by_name["Conv_5 + Add_6 + Relu_7"].device == "GPU"
    profile = load_profile(str(_gpu_profile(tmp_path, dla_core=0)))
    findings = lint(_resnet_head(), layers, profile, "fp16")
    fallback = [f for f in findings if f.rule == "gpu-fallback"]
    assert [f.layer for f in fallback] == ["Conv_5 + Add_6 + Relu_7"]
    assert fallback[0].measured_ms == pytest.approx(0.1)
    assert fallback[0].nodes == ["Conv_5", "Add_6", "Relu_7"]


def test_a_gpu_only_foreign_node_is_not_taken_for_the_dla():
    layers = parse_trt_profile([{"count": 1}, {"name": "{ForeignNode[Conv_0...Relu_1]}"}])
    assert layers[0].kind == ""
    info = {"Layers": [{"Name": "{ForeignNode[Conv_0...Relu_1]}", "LayerType": "Myelin"}]}
    profile = trt_layer_profile(
        [{"count": 1}, {"name": "{ForeignNode[Conv_0...Relu_1]}"}], info, _resnet_head()
    )
    assert profile.layers[0].device == "GPU" and profile.layers[0].nodes == ["Conv_0", "Relu_1"]


def test_other_precision_than_asked_is_reported(tmp_path):
    info = copy.deepcopy(LAYERS_85)
    conv = next(layer for layer in info["Layers"] if layer["Name"] == "Conv_3 + Relu_4")
    conv["Outputs"][0]["Format/Datatype"] = "Row major linear FP32"
    layers = trt_layer_profile(PROFILE_85, info, _resnet_head())
    findings = lint(_resnet_head(), layers, load_profile(str(_gpu_profile(tmp_path))), "fp16")
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
    model = _resnet_head()
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
    (timed,) = merge_times(result.report.records, before, after)
    assert timed.nodes == ["conv_a", "conv_b"]
    assert timed.measured_before_ms == pytest.approx(0.5)  # conv_a + conv_b with relu fused in
    assert timed.measured_after_ms == pytest.approx(0.4)
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
    assert len([r for r in rows if r["record"] == "layer"]) == len(data["layers"]["layers"])
    assert "kernel-grown-by-merge" in md.read_text() and "| merged conv |" in md.read_text()
    text = capsys.readouterr().out
    assert "sum of measured layers" in text and "timed end to end" in text
    assert data["end_to_end_ms"] > 0 and data["layers"]["total_ms"] > 0
    assert data["merges"][0]["nodes"] == ["conv_a", "conv_b"]
    merged = [x for x in data["layers"]["layers"] if "conv_a" in x["original_nodes"]]
    assert merged and "conv_b" in merged[0]["original_nodes"]
    assert any(f["rule"] == "kernel-grown-by-merge" for f in data["findings"])


def test_explain_command_reads_trtexec_exports(tmp_path, capsys):
    path, prof, info = tmp_path / "head.onnx", tmp_path / "p.json", tmp_path / "l.json"
    onnx.save(_resnet_head(), path)
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
    onnx.save(_resnet_head(), path)
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
    assert all(layer.device == "GPU" and layer.precision == "FP32" for layer in layers.layers)
