"""trtexec: command lines per TensorRT version, and its --exportTimes / summary / output files
parsed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.backends.trt.trtexec import (
    effective_settings,
    parse_export_output,
    parse_export_times,
    parse_summary,
    parse_trtexec_version,
    trtexec_command,
    trtexec_defaults,
)
from harness.errors import HarnessError
from harness.profiles import load_profile

DATA = Path(__file__).parent / "data"
STATIC = {"input": [1, 3, 32, 32]}
DYNAMIC = {"input": ["N", 3, 32, 32]}


def test_tensorrt_85_line_for_xavier():
    cmd = trtexec_command(
        Path("m.onnx"),
        load_profile("xavier"),
        "fp16",
        1,
        "8.5.2",
        input_shapes=STATIC,
        engine_path=Path("e.engine"),
        times_path=Path("t.json"),
        timing_cache=Path("tc"),
    )
    assert cmd[:4] == ["trtexec", "--onnx=m.onnx", "--memPoolSize=workspace:1024", "--fp16"]
    assert {
        "--timingCacheFile=tc",
        "--saveEngine=e.engine",
        "--exportTimes=t.json",
        "--warmUp=2000",
        "--duration=10",
        "--iterations=200",
        "--percentile=90,95,99",
    } <= set(cmd)
    assert not any(
        a.startswith(("--builderOptimizationLevel", "--shapes", "--minShapes")) for a in cmd
    )
    assert not any(a in cmd for a in ("--noCudaGraph", "--int8", "--useDLACore=0"))


def test_newer_versions_get_the_optimisation_level_and_tensorrt_11_is_pinned():
    orin = load_profile("orin")
    assert "--builderOptimizationLevel=3" in trtexec_command(
        Path("m.onnx"), orin, "fp16", 1, "8.6.1"
    )
    ten = trtexec_command(Path("m.onnx"), orin, "fp16", 1, "10.3.0")
    assert "--builderOptimizationLevel=3" in ten and "--noCudaGraph" not in ten
    with pytest.raises(HarnessError, match="strongly typed"):
        trtexec_command(Path("m.onnx"), orin, "fp16", 1, "11.1")
    eleven = trtexec_command(Path("m.onnx"), orin, "fp32", 1, "11.1")
    assert {"--noCudaGraph", "--includeDataTransfers", "--noSpinWait"} <= set(eleven)
    assert trtexec_defaults("11.1") == {
        "cuda_graph": True,
        "spin_wait": True,
        "data_transfers": False,
    }
    assert (
        effective_settings(eleven, "11.1")
        == effective_settings(ten, "10.3.0")
        == {"cuda_graph": False, "spin_wait": False, "data_transfers": True}
    )
    assert effective_settings(["trtexec", "--useCudaGraph"], "8.5.2")["cuda_graph"] is True


def test_trtexec_timing_can_follow_the_versions_own_defaults_and_says_so():
    orin = load_profile("orin")
    orin.tensorrt.trtexec_timing = "trtexec"
    eleven = trtexec_command(Path("m.onnx"), orin, "fp32", 1, "11.1")
    assert not {"--noCudaGraph", "--includeDataTransfers", "--noSpinWait"} & set(eleven)
    assert effective_settings(eleven, "11.1") == trtexec_defaults("11.1")
    assert effective_settings(eleven, "11.1") != effective_settings(
        trtexec_command(Path("m.onnx"), load_profile("orin"), "fp32", 1, "11.1"), "11.1"
    )


def test_an_unknown_trtexec_timing_is_refused(tmp_path):
    text = Path(load_profile("orin").source).read_text()
    bad = tmp_path / "p.yaml"
    bad.write_text(text.replace("tensorrt:", "tensorrt:\n  trtexec_timing: fastest", 1))
    with pytest.raises(
        HarnessError, match="trtexec_timing: 'fastest' is not one of harness, trtexec"
    ):
        load_profile(str(bad))


def test_shapes_only_for_a_dynamic_batch_and_static_for_dla():
    xavier = load_profile("xavier")
    xavier.batch_sizes = [1, 8]
    cmd = trtexec_command(Path("m.onnx"), xavier, "fp16", 4, "8.5.2", input_shapes=DYNAMIC)
    assert {
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:4x3x32x32",
        "--maxShapes=input:8x3x32x32",
        "--shapes=input:4x3x32x32",
    } <= set(cmd)
    xavier.tensorrt.dla_core = 1
    dla = trtexec_command(Path("m.onnx"), xavier, "fp16", 4, "8.5.2", input_shapes=DYNAMIC)
    assert {
        "--useDLACore=1",
        "--allowGPUFallback",
        "--minShapes=input:4x3x32x32",
        "--maxShapes=input:4x3x32x32",
    } <= set(dla)
    with pytest.raises(HarnessError, match="dynamic dimensions besides the batch"):
        trtexec_command(
            Path("m.onnx"), xavier, "fp16", 1, "8.5.2", input_shapes={"input": [1, 3, "H", "W"]}
        )
    loaded = trtexec_command(
        Path("m.onnx"),
        xavier,
        "fp16",
        4,
        "8.5.2",
        input_shapes=DYNAMIC,
        load_engine=Path("e.engine"),
    )
    assert loaded[1:3] == ["--loadEngine=e.engine", "--shapes=input:4x3x32x32"]
    assert not any(
        a.startswith(("--onnx", "--fp16", "--useDLACore", "--memPoolSize")) for a in loaded
    )


def test_int8_and_extra_flags():
    xavier = load_profile("xavier")
    xavier.precisions.append("int8")
    xavier.tensorrt.trtexec_flags = ["--useSpinWait"]
    cmd = trtexec_command(
        Path("m.onnx"), xavier, "int8", 1, "8.5.2", calibration_cache=Path("c.cache")
    )
    assert cmd[3:6] == ["--int8", "--fp16", "--calib=c.cache"] and cmd[-1] == "--useSpinWait"
    assert effective_settings(cmd, "8.5.2")["spin_wait"] is True


def test_export_times_85_sample():
    series = parse_export_times((DATA / "trtexec_export_times_85.json").read_text())
    assert len(series["latency_ms"]) == 8 and set(series) == {
        "latency_ms",
        "gpu_compute_ms",
        "enqueue_ms",
        "h2d_ms",
        "d2h_ms",
    }
    assert series["gpu_compute_ms"][0] == pytest.approx(1.30053) and series["h2d_ms"][
        0
    ] == pytest.approx(0.0150017)
    for i in range(8):  # trtexec: latency = H2D + compute + D2H
        total = series["h2d_ms"][i] + series["gpu_compute_ms"][i] + series["d2h_ms"][i]
        assert series["latency_ms"][i] == pytest.approx(total, abs=1e-4)
        assert 0 < series["enqueue_ms"][i] < series["latency_ms"][i]


def test_export_times_older_keys_and_errors():
    old = (
        '[{"startEnqMs": 1.0, "endEnqMs": 1.25, "inMs": 0.1, "computeMs": 2.0, "outMs": 0.05, '
        '"latencyMs": 2.15}]'
    )
    assert parse_export_times(old) == {
        "latency_ms": [2.15],
        "gpu_compute_ms": [2.0],
        "enqueue_ms": [0.25],
        "h2d_ms": [0.1],
        "d2h_ms": [0.05],
    }
    for bad in ("[]", "{}", "not json", '[{"count": 3}]'):
        with pytest.raises(HarnessError, match="trtexec times file"):
            parse_export_times(bad)


def test_summary_version_and_outputs():
    text = (DATA / "trtexec_output_85.txt").read_text()
    summary = parse_summary(text)
    assert summary["throughput_qps"] == 760.231 and summary["unstable_cov_percent"] == 1.43
    assert summary["GPU Compute Time"]["median"] == 1.29248 and summary["Latency"]["p99"] == 1.39453
    assert set(summary["H2D Latency"]) == {"min", "max", "mean", "median", "p90", "p95", "p99"}
    assert parse_trtexec_version(text) == "8.5.2"
    assert parse_trtexec_version((DATA / "trtexec_banner_85.txt").read_text()) == "8.5.2"
    assert parse_trtexec_version("[TensorRT v100300]") == "10.3.0"
    assert (
        parse_trtexec_version("[TensorRT v8601]") == "8.6.1"
        and parse_trtexec_version("nothing") is None
    )
    outputs = parse_export_output((DATA / "trtexec_export_output.json").read_text())
    assert outputs["output"].shape == (1, 10) and outputs["output"].dtype == np.float32


TRTEXEC = shutil.which("trtexec") or Path("/usr/src/tensorrt/bin/trtexec").is_file()


@pytest.mark.skipif(
    bool(TRTEXEC), reason="trtexec is installed here: the missing-tool message does not apply"
)
def test_trtexec_backend_without_trtexec_says_where_it_lives(tmp_path):
    from harness.backends import get_runner_class

    with pytest.raises(HarnessError, match="/usr/src/tensorrt/bin/trtexec"):
        get_runner_class("trtexec")(
            tmp_path / "m.onnx", load_profile("xavier"), "fp16", 1
        ).activate()


@pytest.mark.tensorrt
@pytest.mark.skipif(not TRTEXEC, reason="trtexec not installed (needs TensorRT and an NVIDIA GPU)")
def test_trtexec_backend_times_a_real_model(tmp_path):  # pragma: no cover - needs a GPU
    from harness.backends.trt.trtexec import TrtexecRunner
    from harness.cli import main

    model = tmp_path / "m.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    profile = load_profile("rtx3090")
    profile.precisions, profile.timing.min_duration_s, profile.timing.min_iterations = (
        ["fp32"],
        1.0,
        20,
    )
    with TrtexecRunner(model, profile, "fp32", 1) as runner:
        sample = runner.measure_once()
        assert sample["latency_ms"] >= sample["gpu_compute_ms"] > 0
        assert runner.infer(runner.random_inputs())["output"].shape == (1, 10)
