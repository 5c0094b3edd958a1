"""Every trtexec command line harness composes, run against a stand-in of each TensorRT version's
trtexec.

The stand-ins (tests/trtexec_standin.py) accept exactly the options each version's sampleOptions.cpp
parses (tests/data/trt/trtexec_flags.json, read from NVIDIA's sources) and fail on any other, as the
real binary does.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from harness.backends.trt.trtexec import (
    TrtexecRunner,
    parse_export_times,
    parse_trtexec_version,
    trtexec_command,
)
from harness.backends.trt.versions import build_only_flag
from harness.cli import main
from harness.profiles import load_profile
from harness.results import read_results
from tests.trtexec_standin import FLAGS, VERSIONS, install

FAST = {
    "warmup_s": 0.0,
    "min_iterations": 5,
    "min_duration_s": 0.05,
    "max_duration_s": 0.5,
    "target_ci": 0.5,
    "block_iterations": 5,
    "block_s": 0.02,
}


def _conv_model(path: Path, batch=1) -> Path:
    """A 3x3 conv + ReLU on a (batch, 3, 8, 8) input; ``batch`` an int or a symbolic name."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


@pytest.fixture(params=VERSIONS)
def trtexec(request, tmp_path, monkeypatch):
    """(version, path) of a stand-in trtexec put first on PATH."""
    binary = install(tmp_path / f"bin-{request.param}", request.param)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    return request.param, binary


def _profile(tmp_path: Path, backend: str, precision: str) -> Path:
    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "xavier.yaml").read_text()
    )
    data.update(backend=backend, precisions=[precision], timing=dict(FAST))
    data["expect"] = {}
    path = tmp_path / "standin-device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(binary: Path, cmd):
    return subprocess.run(
        [str(binary)] + list(cmd[1:]),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def _precision(version: str) -> str:
    """fp16 through BuilderFlag-style --fp16 before 11; fp32 on 11 (strongly typed: no --fp16)."""
    return "fp32" if version.startswith("11") else "fp16"


def test_standins_are_faithful_to_the_flag_data(trtexec, tmp_path):
    version, binary = trtexec
    options = set(FLAGS["versions"][version]["options"])
    banner = _run(binary, ["trtexec", "--help"])
    assert banner.returncode == 0
    assert parse_trtexec_version(banner.stdout).startswith(version.split(".")[0])
    absent = "--skipInference" if version == "8.5" else "--buildOnly"
    assert absent not in options
    refused = _run(binary, ["trtexec", f"--onnx={_conv_model(tmp_path / 'm.onnx')}", absent])
    assert refused.returncode == 1 and f"Unknown option: {absent}" in refused.stdout


def test_build_and_time_command_lines_run_on_each_version(trtexec, tmp_path):
    version, binary = trtexec
    model = _conv_model(tmp_path / "m.onnx")
    profile = load_profile(str(_profile(tmp_path, "tensorrt", _precision(version))))
    engine, times = tmp_path / "m.engine", tmp_path / "times.json"
    shapes = {"x": [1, 3, 8, 8]}
    build = trtexec_command(
        model,
        profile,
        _precision(version),
        1,
        version,
        engine_path=engine,
        input_shapes=shapes,
        timing_cache=tmp_path / "timing.cache",
    )
    built = _run(binary, build + [build_only_flag(version)])
    assert built.returncode == 0, built.stdout
    timed = _run(
        binary,
        trtexec_command(
            model,
            profile,
            _precision(version),
            1,
            version,
            input_shapes=shapes,
            load_engine=engine,
            times_path=times,
        ),
    )
    assert timed.returncode == 0, timed.stdout
    series = parse_export_times(times.read_text())
    assert len(series["latency_ms"]) >= 5 and all(v > 0 for v in series["gpu_compute_ms"])


def test_dynamic_batch_shapes_accepted_and_static_shapes_never_sent(trtexec, tmp_path):
    version, binary = trtexec
    dynamic = _conv_model(tmp_path / "dyn.onnx", "N")
    profile = load_profile(str(_profile(tmp_path, "tensorrt", _precision(version))))
    cmd = trtexec_command(
        dynamic, profile, _precision(version), 2, version, input_shapes={"x": ["N", 3, 8, 8]}
    )
    assert any(a.startswith("--shapes=x:2x3x8x8") for a in cmd)
    assert _run(binary, cmd).returncode == 0
    static = _conv_model(tmp_path / "static.onnx")
    cmd = trtexec_command(
        static, profile, _precision(version), 1, version, input_shapes={"x": [1, 3, 8, 8]}
    )
    assert not any(a.startswith("--shapes") for a in cmd)
    # the rule the stand-in enforces is real: shapes on a static model fail
    assert _run(binary, cmd + ["--shapes=x:1x3x8x8"]).returncode == 1


def test_explain_line_runs_on_each_version(trtexec, tmp_path, capsys, monkeypatch):
    version, binary = trtexec
    monkeypatch.chdir(tmp_path)
    (tmp_path / "engines").mkdir()
    model = _conv_model(tmp_path / "m.onnx")
    profile = _profile(tmp_path, "tensorrt", _precision(version))
    assert (
        main(
            [
                "build",
                str(model),
                "--device",
                str(profile),
                "--explain",
                "--tensorrt-version",
                version,
            ]
        )
        == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = _run(binary, shlex.split(line))
    assert result.returncode == 0, result.stdout


def test_tensorrt_11_refuses_builder_fp16_with_what_to_do(tmp_path):
    profile = load_profile(str(_profile(tmp_path, "tensorrt", "fp16")))
    with pytest.raises(Exception, match="strongly typed"):
        trtexec_command(Path("m.onnx"), profile, "fp16", 1, "11.1")


def test_trtexec_runner_lifecycle_and_outputs_on_each_version(trtexec, tmp_path):
    version, _ = trtexec
    model = _conv_model(tmp_path / "m.onnx")
    profile = load_profile(str(_profile(tmp_path, "trtexec", _precision(version))))
    runner = TrtexecRunner(model, profile, _precision(version), 1)
    with runner:
        assert runner.version.split(".")[:1] == version.split(".")[:1]
        assert build_only_flag(version) not in runner._command()
        feeds = runner.random_inputs(3)
        out = runner.infer(feeds)["y"]
        import onnxruntime as ort

        expected = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
            None, feeds
        )[0]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        sample = runner.measure_once()
        assert sample["latency_ms"] > 0 and set(sample) >= {
            "gpu_compute_ms",
            "h2d_ms",
            "d2h_ms",
            "enqueue_ms",
        }
        assert runner.describe()["effective"]["data_transfers"] is True
    assert not runner.is_active


def test_time_with_trtexec_on_each_version(trtexec, tmp_path):
    version, _ = trtexec
    model = _conv_model(tmp_path / "m.onnx")
    profile = _profile(tmp_path, "tensorrt", _precision(version))
    out = tmp_path / "times.json"
    assert (
        main(["time", str(model), "--device", str(profile), "--trtexec", "--json", str(out)]) == 0
    )
    text = out.read_text()
    assert version.split(".")[0] in text and "latency" in text
    json.loads(text)


@pytest.mark.parametrize("version", ["8.5", "10.13", "11.1"])
def test_bench_with_the_trtexec_backend(version, tmp_path, monkeypatch):
    binary = install(tmp_path / "bin", version)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    profile = _profile(tmp_path, "trtexec", _precision(version))
    out = tmp_path / "out"
    assert main(["bench", "--device", str(profile), "--models", "lenet5", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert runs and all(r["backend"]["backend"] == "trtexec" for r in runs)
    assert all(r["backend"]["version"].startswith(version.split(".")[0]) for r in runs)


def test_int8_on_11_through_a_qdq_graph_and_no_precision_flags(tmp_path, monkeypatch):
    binary = install(tmp_path / "bin", "11.1")
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    model = _conv_model(tmp_path / "m.onnx")
    profile = load_profile(str(_profile(tmp_path, "trtexec", "int8")))
    profile.tensorrt.int8_calibration_batches = 4
    with pytest.warns(UserWarning, match="random"):
        with TrtexecRunner(model, profile, "int8", 1) as runner:
            info = runner.describe()
            out = runner.infer(runner.random_inputs(0))["y"]
    assert not {"--int8", "--fp16", "--best"} & set(info["build_command"])
    assert info["built_from"].endswith("-int8-qdq.onnx") and out.shape == (1, 4, 8, 8)
    assert info["prepared_graph"]["calibration"].startswith("random:")


@pytest.mark.parametrize("version", ["10.13", "11.1"])
def test_fp16_on_each_version_through_flags_or_an_fp16_graph(version, tmp_path, monkeypatch):
    binary = install(tmp_path / "bin", version)
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    model = _conv_model(tmp_path / "m.onnx")
    profile = load_profile(str(_profile(tmp_path, "trtexec", "fp16")))
    with TrtexecRunner(model, profile, "fp16", 1) as runner:
        info = runner.describe()
        feeds = runner.random_inputs(0)
        out = runner.infer(feeds)["y"]
    if version.startswith("11"):  # strongly typed: an FP16 graph, no --fp16 (11 has none)
        assert "--fp16" not in info["build_command"] and info["built_from"].endswith("-fp16.onnx")
        assert feeds["x"].dtype == np.float16
    else:
        assert "--fp16" in info["build_command"] and info["built_from"] == str(model)
    assert out.shape == (1, 4, 8, 8)


def test_time_trtexec_on_11_times_an_fp16_profile_through_the_fp16_graph(tmp_path, monkeypatch):
    """``harness time --trtexec`` is the trtexec backend: on TensorRT 11 (strongly typed) an fp16
    profile is timed through the FP16 graph it prepares, as bench's trtexec backend is."""
    binary = install(tmp_path / "bin", "11.1")
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    model = _conv_model(tmp_path / "m.onnx")
    profile = _profile(tmp_path, "tensorrt", "fp16")
    out = tmp_path / "t.json"
    argv = ["time", str(model), "--device", str(profile), "--trtexec", "--json", str(out)]
    assert main(argv) == 0
    (run,) = read_results(out).runs
    assert run.backend["backend"] == "trtexec" and run.backend["version"].startswith("11")
    assert run.backend["built_from"].endswith("-fp16.onnx") and run.precision == "fp16"
    assert "--fp16" not in run.backend["build_command"] and run.stats.n >= 5
