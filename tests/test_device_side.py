"""Device profiles, TensorRT settings and device-state parsers.

TensorRT settings cover cache keys, trtexec lines and result parsing.

These are the device-independent parts of the TensorRT path; the real build and run need a GPU and
TensorRT and skip with that reason here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.envinfo import (
    check_expectations,
    decode_throttle_reasons,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_tegra_release,
    read_thermal,
)
from harness.errors import HarnessError
from harness.profiles import available_profiles, load_profile
from tests.conftest import zoo_case
from tests.test_profiles import SHIPPED

DATA = Path(__file__).parent / "data"


def test_every_shipped_profile_loads():
    assert set(SHIPPED) <= set(available_profiles())
    for name in available_profiles():
        profile = load_profile(name)
        assert profile.peaks.fp32_tflops > 0 and profile.peaks.dram_gbps > 0
        assert profile.backend in ("onnxruntime", "tensorrt")
    xavier = load_profile("xavier")
    assert (xavier.expect.compute_capability, xavier.expect.nvpmodel, xavier.peaks.dram_gbps) == (
        "7.2",
        "MAXN",
        136.5,
    )


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (
            lambda d: d["timing"].update(min_iterations="many"),
            "timing.min_iterations: expected an integer",
        ),
        (lambda d: d.pop("peaks"), "missing required key 'peaks'"),
        (lambda d: d.update(backend="tflite"), "backend: 'tflite' is not one of"),
        (
            lambda d: d["tensorrt"].update(gpu_fallback="yes"),
            "tensorrt.gpu_fallback: expected true or false",
        ),
    ],
)
def test_profile_errors_name_the_file_and_the_key(tmp_path, edit, message):
    data = yaml.safe_load(
        (Path(__file__).parent.parent / "device_profiles" / "xavier.yaml").read_text()
    )
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(HarnessError) as info:
        load_profile(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_jetson_state_parsers_on_real_outputs(tmp_path):
    assert parse_nvpmodel((DATA / "nvpmodel_q_xavier.txt").read_text()) == {"mode": "MAXN", "id": 0}
    locked = parse_jetson_clocks((DATA / "jetson_clocks_show_xavier_locked.txt").read_text())
    assert locked["locked"] and locked["clocks"]["gpu"]["current_hz"] == 1377000000
    assert locked["power_mode"] == "MAXN" and locked["cpu_governors"] == ["schedutil"]
    default = parse_jetson_clocks((DATA / "jetson_clocks_show_xavier_default.txt").read_text())
    assert not default["locked"] and default["clocks"]["emc"]["current_hz"] == 1600000000
    assert parse_tegra_release((DATA / "nv_tegra_release_r35.txt").read_text()) == "R35.2.1"
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("GPU-therm\n")
    (zone / "temp").write_text("41500\n")
    assert read_thermal(tmp_path) == {"GPU-therm": 41.5}
    assert decode_throttle_reasons(0x20 | 0x4) == ["sw_power_cap", "sw_thermal_slowdown"]


def test_expectations_flag_an_unprepared_jetson():
    xavier = load_profile("xavier")
    unlocked = {
        "cpu": {},
        "gpu": None,
        "jetson": {
            "nvpmodel": {"mode": "MODE_30W_ALL", "id": 3},
            "jetson_clocks": parse_jetson_clocks(
                (DATA / "jetson_clocks_show_xavier_default.txt").read_text()
            ),
        },
    }
    problems = check_expectations(unlocked, xavier)
    assert any("MODE_30W_ALL" in p for p in problems) and any("not locked" in p for p in problems)
    ready = {
        "cpu": {},
        "gpu": None,
        "jetson": {
            "nvpmodel": {"mode": "MAXN", "id": 0},
            "jetson_clocks": parse_jetson_clocks(
                (DATA / "jetson_clocks_show_xavier_locked.txt").read_text()
            ),
        },
    }
    assert check_expectations(ready, xavier) == []
    assert any(
        "not one" in p for p in check_expectations({"cpu": {}, "jetson": None, "gpu": None}, xavier)
    )


def test_cli_profiles_env_and_explain(tmp_path, capsys):
    assert main(["profiles"]) == 0
    assert "xavier" in capsys.readouterr().out
    assert main(["profiles", "show", "xavier"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["expect"]["compute_capability"] == "7.2"
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["cpu"]["available_cores"] >= 1 and "onnxruntime" in env["libraries"]
    assert main(["env", "--device", "xavier", "--strict"]) == 2
    model = tmp_path / "m.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    capsys.readouterr()
    assert main(["build", str(model), "--device", "xavier", "--explain"]) == 0
    out = capsys.readouterr().out
    # static model: no shapes
    assert "trtexec --onnx=" in out and "--fp16" in out and "--shapes" not in out


TENSORRT = (
    importlib.util.find_spec("tensorrt") is not None
    and importlib.util.find_spec("pycuda") is not None
)


@pytest.mark.skipif(
    TENSORRT, reason="TensorRT is installed: the missing-backend message does not apply"
)
def test_tensorrt_device_without_tensorrt_says_what_to_install(capsys):
    assert main(["bench", "--device", "xavier", "--models", "lenet5"]) == 2
    err = capsys.readouterr().err
    assert "backend 'tensorrt' is not available" in err and "python3-libnvinfer" in err


@pytest.mark.tensorrt
@pytest.mark.skipif(
    not TENSORRT, reason="needs TensorRT and pycuda on an NVIDIA GPU (not on this machine)"
)
def test_tensorrt_engine_builds_runs_and_matches_onnxruntime(
    tmp_path,
):  # pragma: no cover - needs a GPU
    import numpy as np

    from harness.backends.onnxruntime import OnnxRuntimeRunner
    from harness.backends.trt.runner import TensorRTRunner

    model = tmp_path / "m.onnx"
    assert main(["export", "resnet20", "-o", str(model)]) == 0
    profile = load_profile("rtx3090")
    with TensorRTRunner(model, profile, "fp32", 1) as trt_runner, OnnxRuntimeRunner(
        model, load_profile("host")
    ) as ref:
        feeds = ref.random_inputs(3)
        expected = ref.infer(feeds)["output"]
        actual = next(iter(trt_runner.infer(feeds).values()))
        np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)
        timings = trt_runner.measure_once()
        assert timings["latency_ms"] >= timings["gpu_compute_ms"] > 0


@pytest.mark.parametrize(
    "name,variant", [zoo_case("resnet20", "dc-1x1"), zoo_case("mobilenetv2", "dc-ds")]
)
def test_torch_backend_matches_onnxruntime_on_the_cpu(tmp_path, name, variant):
    import numpy as np

    from harness.backends import get_runner_class
    from harness.backends.onnxruntime import OnnxRuntimeRunner

    exported, model = tmp_path / "m.onnx", tmp_path / "folded.onnx"
    assert main(["export", name, "--variant", variant, "-o", str(exported)]) == 0
    assert main(["fold", str(exported), "-o", str(model), "--merge", "all", "--no-verify"]) == 0
    host = load_profile("host")
    with get_runner_class("torch")(model, host) as torch_runner, OnnxRuntimeRunner(
        model, host
    ) as reference:
        feeds = reference.random_inputs(1)
        np.testing.assert_allclose(
            torch_runner.infer(feeds)["output"],
            reference.infer(feeds)["output"],
            rtol=1e-4,
            atol=1e-5,
        )
        assert torch_runner.measure_once()["latency_ms"] > 0
        assert torch_runner.describe()["device"] == "cpu"


def test_state_changes_during_a_run_are_flagged():
    from harness.envinfo import state_changes

    before = {
        "cpu": {"governor": "performance"},
        "gpu": {"throttle_reasons": [], "sm_clock_mhz": 1695},
        "jetson": None,
    }
    after = {
        "cpu": {"governor": "performance"},
        "gpu": {"throttle_reasons": ["sw_thermal_slowdown"], "sm_clock_mhz": 1410},
        "jetson": None,
    }
    changes = state_changes(before, after)
    assert (
        len(changes) == 2
        and any("throttle" in c for c in changes)
        and any("1695 -> 1410" in c for c in changes)
    )
    assert state_changes(before, before) == []


@pytest.mark.skipif(
    __import__("shutil").which("trtexec") is not None,
    reason="trtexec is installed here: the missing-tool message does not apply",
)
def test_trtexec_timing_without_trtexec_says_where_it_lives(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    assert main(["time", str(model), "--device", "xavier", "--trtexec"]) == 2
    assert "/usr/src/tensorrt/bin/trtexec" in capsys.readouterr().err
