"""NVIDIA's recorded TensorRT per-layer files, in each version's layer information layout.

Real: trt-engine-explorer's ResNet-18 A100 FP16 ``--exportLayerInfo`` / ``--exportProfile`` pair
(NVIDIA/TensorRT release/8.5, tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/
fp16; TensorRT 8.x layout; see tests/data/trt/profiles/README.md). Every ``graph.json`` in that tool
up to release/11.0 is the same 8.x recording: no 10.x or 11.x recording exists there, so the 10.x
and 11.x layouts below are derived from the 8.5 one by the changes NVIDIA documents
(``as_trt10``, ``as_trt11``). ``DLA_PROFILE`` is hand-made from the DLA layer names of a real
trtexec log. Shared by tests/test_explain.py and the TensorRT doubles (tests/fake_tensorrt.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).parent / "data" / "trt" / "profiles"
LAYERS_85: Dict[str, Any] = json.loads((DATA / "resnet18_a100_fp16.layers.json").read_text())
PROFILE_85: List[Dict[str, Any]] = json.loads(
    (DATA / "resnet18_a100_fp16.profile.json").read_text()
)

# The DLA layer names are those trtexec printed for a DLA engine in NVIDIA/TensorRT issue 3143
# (per-layer profile: 'images to nvm', '{ForeignNode[Conv_0...Concat_198]}', 'head_3 from nvm',
# 'images copy finish'), here over the recorded ResNet head; the times are made up.
DLA_PROFILE: List[Dict[str, Any]] = [
    {"count": 400},
    {"name": "input.1 to nvm", "timeMs": 34.0, "averageMs": 0.085, "percentage": 1.1},
    {"name": "{ForeignNode[Conv_0...Relu_4]}", "timeMs": 3.4, "averageMs": 0.0085, "percentage": 1},
    {"name": "onnx::Conv_129 from nvm", "timeMs": 3069.6, "averageMs": 7.69, "percentage": 98.4},
    {"name": "input.1 copy finish", "timeMs": 0.67, "averageMs": 0.0017, "percentage": 0.0},
    {"name": "Conv_5 + Add_6 + Relu_7", "timeMs": 40.0, "averageMs": 0.1, "percentage": 0.5},
]


def as_trt10(info: Dict[str, Any]) -> Dict[str, Any]:
    """The 8.5 layer information as 10.x writes it (derived): each layer with a ``Metadata`` field
    of ``[ONNX Layer: name]`` records (added in 8.6), joined by U+001F (10.0; 8.6 joined them by
    U+001E: NVIDIA/TensorRT issue 2779 and trt-engine-explorer's parser.py ``fix_unicode``, which
    replaces both)."""
    out = copy.deepcopy(info)
    for layer in out["Layers"]:
        parts = [p for p in layer["Name"].split(" + ") if not p.startswith("Reformatting")]
        layer["Metadata"] = "\x1f".join(f"[ONNX Layer: {p}]" for p in parts)
    return out


def as_trt11(info: Dict[str, Any]) -> Dict[str, Any]:
    """The 10.x layer information as 11.x writes it (derived), per NVIDIA's 'Migrating
    IEngineInspector Usage from TensorRT 10.x to 11.x': ``Bindings`` (names) replaced by ``I/O
    Tensors`` (objects: Name, IOMode, DataType, Dimensions, Location, IsShapeInferenceIO,
    ProfileInfo), and each tensor's ``Format/Datatype`` split in two. The guide names the split
    without the layer tensors' new keys (in what could be read of it); ``Format`` and
    ``DataType`` are the keys its I/O tensors use, and are assumed here."""
    out = as_trt10(info)
    names = out.pop("Bindings")
    out["I/O Tensors"] = [
        {"Name": n, "IOMode": "Input" if i == 0 else "Output", "Location": "Device"}
        for i, n in enumerate(names)
    ]
    for layer in out["Layers"]:
        for tensor in layer.get("Inputs", []) + layer.get("Outputs", []):
            text = tensor.pop("Format/Datatype")
            words = text.split()
            kind = next((w for w in words if w in ("FP32", "FP16", "Int8", "INT8")), "")
            tensor["Format"] = text
            tensor["DataType"] = {"FP32": "Float", "FP16": "Half", "INT8": "Int8"}.get(kind, kind)
    return out


def resnet_head() -> onnx.ModelProto:
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


FORMATS = {"8.5": lambda info: copy.deepcopy(info), "10.13": as_trt10, "11.4": as_trt11}


def recording(version: str, dla: bool = False) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(layer information in ``version``'s layout, per-layer profile records) for an engine of
    that version: the recorded ResNet-18 pair, or on a DLA engine the DLA profile over the same
    layer information (8.5: DLA engines need 8.5 here, 10.8 to 11.4.0 have none)."""
    return FORMATS[version](LAYERS_85), copy.deepcopy(DLA_PROFILE if dla else PROFILE_85)
