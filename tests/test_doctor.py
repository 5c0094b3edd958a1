"""``harness doctor`` on a machine without TensorRT, with stand-in trtexec binaries of each
version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from harness.backends.trt.trtexec import trtexec_command
from harness.cli import main
from harness.doctor import FAIL, PASS, check_trtexec, compare_medians, time_with_trtexec, tiny_model
from harness.profiles import load_profile
from tests.trtexec_standin import install


@pytest.fixture
def standin_85(tmp_path, monkeypatch):
    binary = install(tmp_path / "bin", "8.5")
    monkeypatch.setenv("PATH", f"{binary.parent}:{os.environ['PATH']}")
    return binary


def test_doctor_without_tensorrt_says_what_is_missing_and_exits_1(standin_85, tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--device", "xavier", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "verdict: FAIL" in text and "python3-libnvinfer" in text
    report = json.loads(out.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["trtexec"]["status"] == PASS and checks["trtexec"]["data"]["version"].startswith(
        "8.5"
    )
    assert checks["tensorrt"]["status"] == FAIL
    assert checks["timing agreement"]["status"] == "skip"
    # this machine has no power counter: a warning with the reason, not a failure
    assert checks["energy counter"]["status"] in (PASS, "warn")
    if checks["energy counter"]["status"] == "warn":
        assert "energy not measured" in checks["energy counter"]["detail"]
    assert report["verdict"] == FAIL and report["environment"]["profile"] == "xavier"


def test_doctor_refuses_a_bad_output_path_before_any_check(tmp_path, capsys):
    occupied = tmp_path / "file"
    occupied.write_text("x")
    assert main(["doctor", "--device", "xavier", "--json", str(occupied / "r.json")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_trtexec_of_another_tensorrt_than_the_python_module_fails(standin_85, monkeypatch):
    assert check_trtexec("8.5.2.2").status == PASS
    check = check_trtexec("10.13.0.35")
    assert check.status == FAIL and "not interchangeable" in check.detail


def test_the_same_engine_is_timed_by_trtexec(standin_85, tmp_path):
    model = tiny_model(tmp_path / "tiny.onnx")
    profile = load_profile("xavier")
    profile.timing.warmup_s, profile.timing.min_duration_s, profile.timing.min_iterations = (
        0,
        0.2,
        5,
    )
    engine = tmp_path / "tiny.engine"
    build = trtexec_command(model, profile, "fp16", 1, "8.5.2", engine_path=engine)
    subprocess.run(
        [str(standin_85)] + build[1:] + ["--buildOnly"], check=True, stdout=subprocess.PIPE
    )
    timed = time_with_trtexec(
        engine, model, profile, "fp16", {"binary": str(standin_85), "version": "8.5.2"}
    )
    assert f"--loadEngine={engine}" in timed["command"] and len(timed["gpu_compute_ms"]) >= 5
    assert timed["effective"] == {"cuda_graph": False, "spin_wait": False, "data_transfers": True}


def test_medians_agree_within_two_percent_or_fail_with_the_numbers():
    rng = np.random.default_rng(1)
    base = list(1.0 + 0.01 * rng.standard_normal(200))
    assert compare_medians(base, [x * 1.01 for x in base]).status == PASS
    far = compare_medians(base, [x * 1.05 for x in base])
    assert far.status == FAIL and "more than 2%" in far.detail
    assert far.data["relative_difference"] == pytest.approx(1 - 1 / 1.05, rel=1e-6)


def test_the_python_module_version_is_read_from_tensorrt(monkeypatch):
    from harness.doctor import check_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.5.2.2"))
    assert check_tensorrt().data == {"version": "8.5.2.2"}


def test_polygraphy_is_required_from_0_53(monkeypatch):
    from importlib.metadata import version

    from harness.doctor import check_polygraphy

    installed = check_polygraphy()  # the dev extra installs the real one
    assert installed.status == PASS and installed.data["version"] == version("polygraphy")
    monkeypatch.setitem(sys.modules, "polygraphy", types.SimpleNamespace(__version__="0.49.9"))
    old = check_polygraphy()
    assert old.status == FAIL and "older than 0.53" in old.detail
    monkeypatch.setitem(sys.modules, "polygraphy", None)  # import fails
    assert check_polygraphy().status == FAIL


def test_doctor_times_harness_engine_and_the_same_engine_with_trtexec(
    standin_85, tmp_path, monkeypatch
):
    """With the TensorRT 8.5 and pycuda doubles: every step runs; the numbers are ONNX Runtime's,
    not GPU's."""
    import harness.doctor as doctor
    from harness.envinfo import capture_environment
    from tests import fake_tensorrt

    fake_tensorrt.install(monkeypatch, "8.5")
    monkeypatch.chdir(tmp_path)
    profile = load_profile("xavier")
    profile.precisions = ["fp32"]
    for key, value in {
        "warmup_s": 0.0,
        "min_iterations": 20,
        "min_duration_s": 0.1,
        "max_duration_s": 1.0,
        "target_ci": 0.5,
    }.items():
        setattr(profile.timing, key, value)
    checks = {
        c.name: c
        for c in doctor.run_doctor(
            profile, "fp32", capture_environment(profile), engine_dir=tmp_path / "engines"
        )
    }
    for name in fake_tensorrt.TRT_MODULES:
        sys.modules.pop(name, None)
    assert checks["tensorrt"].status == PASS and checks["cuda binding"].status == PASS
    assert checks["harness runner"].status == PASS
    agreement = checks["timing agreement"]
    assert agreement.status in (PASS, FAIL) and agreement.data["harness_median_ms"] > 0
    engine = checks["harness runner"].data["engine"]
    assert f"--loadEngine={engine}" in agreement.data["trtexec_command"]
