"""``harness build --explain`` (no TensorRT needed), the missing-TensorRT error.

Also ``profiles`` and ``env``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from harness.cli import main
from tests.test_profiles import SHIPPED

TENSORRT = (
    importlib.util.find_spec("tensorrt") is not None
    and importlib.util.find_spec("pycuda") is not None
)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "lenet5.onnx"
    assert main(["export", "lenet5", "-o", str(path)]) == 0
    return path


@pytest.fixture
def dynamic_model(tmp_path):
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 8, 8])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["out"], name="relu0")], "g", [x], [y]
    )
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _explain(capsys, *args):
    assert main(["build", *args, "--explain"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return out[0], shlex.split(out[-1])


def test_explain_for_xavier_needs_no_tensorrt(lenet, capsys):
    header, cmd = _explain(capsys, str(lenet), "--device", "xavier", "--tensorrt-version", "8.5.2")
    assert header.startswith("# TensorRT 8.5.2, device xavier, fp16, batch 1")
    assert "cuda graph off" in header and "data transfers on" in header
    assert cmd[:4] == ["trtexec", f"--onnx={lenet}", "--memPoolSize=workspace:1024", "--fp16"]
    assert "--timingCacheFile=engines/timing-8.5.2-sm72.cache" in cmd
    digest = hashlib.sha256(lenet.read_bytes()).hexdigest()[:8]  # one engine per file content
    assert (
        f"--saveEngine=engines/lenet5-{digest}-fp16-b1.engine" in cmd
        and f"--exportTimes=lenet5-{digest}-fp16-b1-times.json" in cmd
    )
    # static model, 8.5
    assert not any(a.startswith(("--shapes", "--builderOptimizationLevel")) for a in cmd)


def test_explain_follows_version_precision_and_dynamic_batch(lenet, dynamic_model, capsys):
    _, cmd = _explain(
        capsys,
        str(lenet),
        "--device",
        "orin",
        "--precision",
        "fp32",
        "--tensorrt-version",
        "10.3.0",
    )
    assert "--builderOptimizationLevel=3" in cmd and "--fp16" not in cmd
    _, cmd = _explain(
        capsys, str(lenet), "--device", "orin", "--precision", "fp32", "--tensorrt-version", "11.1"
    )
    assert {"--noCudaGraph", "--includeDataTransfers", "--noSpinWait"} <= set(cmd)
    _, cmd = _explain(
        capsys,
        str(dynamic_model),
        "--device",
        "rtx3090",
        "--batch",
        "4",
        "--tensorrt-version",
        "10.3",
    )
    assert {
        "--minShapes=images:1x3x8x8",
        "--optShapes=images:4x3x8x8",
        "--maxShapes=images:4x3x8x8",
        "--shapes=images:4x3x8x8",
    } <= set(cmd)


def test_explain_refuses_what_cannot_be_built(lenet, capsys):
    assert (
        main(["build", str(lenet), "--device", "orin", "--tensorrt-version", "11.1", "--explain"])
        == 2
    )
    assert "strongly typed" in capsys.readouterr().err
    assert (
        main(["build", str(lenet), "--device", "xavier", "--precision", "int8", "--explain"]) == 2
    )
    assert "precisions" in capsys.readouterr().err
    assert main(["build", "missing.onnx", "--explain"]) == 2
    assert "does not exist" in capsys.readouterr().err
    for version, message in [("abc", "is not a version"), ("7.2", "is not one this harness")]:
        argv = ["build", str(lenet), "--device", "xavier", "--tensorrt-version", version]
        assert main(argv + ["--explain"]) == 2
        assert message in capsys.readouterr().err
    assert main(["build", str(lenet), "--device", "host", "--explain"]) == 2
    assert "builds no engine" in capsys.readouterr().err
    assert main(["build", str(lenet), "--device", "orin", "--batch", "4", "--explain"]) == 2
    assert "fixed batch of 1, not 4" in capsys.readouterr().err
    _, cmd = _explain(capsys, str(lenet), "--device", "h100")  # 10.13 on a desktop GPU
    assert "--builderOptimizationLevel=3" in cmd


@pytest.mark.skipif(
    TENSORRT, reason="TensorRT is installed: the missing-backend message does not apply"
)
def test_build_without_tensorrt_says_what_is_missing(lenet, capsys):
    assert main(["build", str(lenet), "--device", "xavier"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "backend 'tensorrt' is not available" in err
    assert "pip install '.[tensorrt]'" in err and "python3-libnvinfer" in err


def test_profiles_list_and_show(capsys):
    assert main(["profiles"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert {row.split()[0] for row in rows} >= set(SHIPPED)
    assert any(row.split()[:3] == ["xavier", "jetson", "tensorrt"] for row in rows)
    assert main(["profiles", "show", "xavier"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (
        shown["expect"]["compute_capability"] == "7.2" and shown["tensorrt"]["timing_cache"] is True
    )
    assert shown["timing"]["min_iterations"] == 200 and shown["peaks"]["dram_gbps"] == 136.5
    assert main(["profiles", "show", "tx2"]) == 2
    assert "unknown device 'tx2'" in capsys.readouterr().err


def test_env_json_and_strict(capsys):
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["profile"] == "host" and env["cpu"]["available_cores"] >= 1 and "libraries" in env
    if env.get("jetson") is None:  # this machine is no Jetson: xavier warns, and --strict refuses
        assert main(["env", "--device", "xavier"]) == 0
        assert "warning: profile 'xavier' is for a Jetson" in capsys.readouterr().err
        assert main(["env", "--device", "xavier", "--json"]) == 0
        out = capsys.readouterr().out
        warned = json.loads(out)["expectation_warnings"]  # stdout is the JSON alone
        assert any("is for a Jetson" in w for w in warned)
        assert main(["env", "--device", "xavier", "--strict"]) == 2
        assert "differs from profile 'xavier'" in capsys.readouterr().err
