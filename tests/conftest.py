"""Shared fixtures: a fast device profile and tiny real models exported with torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import settings
from onnx import TensorProto, helper, numpy_helper

# every run draws the same property-test examples (a suite that passed once passes again, on CI
# too); HARNESS_FUZZ_EXPLORE=1 draws new ones each run, to look for inputs not yet tried
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile("explore" if os.environ.get("HARNESS_FUZZ_EXPLORE") == "1" else "repeatable")

# zoo models whose export, fold and verification take 5-35 s a case on a loaded 2-core host: their
# cases run under the slow marker (make test-all, CI), the small models' by default (make test)
HEAVY_MODELS = frozenset({"resnet34", "resnet50", "vgg16", "vgg19", "mobilenetv2"})


def zoo_case(model: str, *rest, id: str = None):
    """A parametrize case of a zoo model, marked slow when the model is a heavy one."""
    marks = [pytest.mark.slow] if model in HEAVY_MODELS else []
    return pytest.param(model, *rest, id=id, marks=marks)


FAST_TIMING = {
    "warmup_s": 0.05,
    "min_iterations": 10,
    "min_duration_s": 0.1,
    "max_duration_s": 0.5,
    "target_ci": 0.05,
    "block_iterations": 5,
    "block_s": 0.02,
}


@pytest.fixture
def fast_profile(tmp_path: Path) -> Path:
    """A host-like profile whose timing settings keep tests quick (tests are not about numbers)."""
    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    data["timing"] = dict(FAST_TIMING)
    data["onnxruntime"]["intra_op_threads"] = 1
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def conv_net(path: Path, convs: int, channels: int, size: int = 32, dynamic: bool = False) -> Path:
    """An ONNX chain of ``convs`` 3x3 convs + ReLU with ``channels`` channels on a 3 x size x size
    input (``dynamic``: height and width named, not fixed), made without torch (pytester runs
    reload modules, which torch does not survive)."""
    rng = np.random.default_rng(0)
    nodes, inits, current, cin = [], [], "x", 3
    for i in range(convs):
        weight = rng.standard_normal((channels, cin, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("Conv", [current, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        current, cin = f"r{i}", channels
    hw = ["height", "width"] if dynamic else [size, size]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, *hw])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, channels, *hw])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
