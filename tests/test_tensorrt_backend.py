"""TensorRT backend: the version-dependent decisions, tested without TensorRT; the real build skips
without it.

Without TensorRT the module is imported against empty stand-in ``tensorrt``/``pycuda`` modules only
so that its pure functions can be called; nothing here builds or times an engine unless TensorRT and
a GPU are present.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np
import pytest

from harness.backends.trt.cache import BuildSettings
from harness.backends.trt.versions import build_plan
from harness.errors import HarnessError
from harness.profiles import load_profile

TENSORRT = (
    importlib.util.find_spec("tensorrt") is not None
    and importlib.util.find_spec("pycuda") is not None
)


@pytest.fixture(scope="module")
def trt_backend():
    """harness.backends.trt.build, imported against the strict TensorRT 8.5 and pycuda doubles
    where TensorRT is not installed."""
    if TENSORRT:
        return importlib.import_module("harness.backends.trt.build")
    from tests.fake_tensorrt import TRT_MODULES, make_pycuda, make_tensorrt

    fakes = {"tensorrt": make_tensorrt("8.5"), **make_pycuda()}
    polygraphy = [name for name in sys.modules if name.split(".")[0] == "polygraphy"]
    names = tuple(fakes) + TRT_MODULES + tuple(polygraphy)
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(fakes)
    for name in (*TRT_MODULES, *polygraphy):
        sys.modules.pop(name, None)
    try:
        return importlib.import_module("harness.backends.trt.build")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _settings(precision="fp16", batch=1, **tensorrt):
    profile = load_profile("xavier")
    profile.precisions = ["fp32", "fp16", "int8"]
    for key, value in tensorrt.items():
        setattr(profile.tensorrt, key, value)
    return BuildSettings.from_profile(profile, precision, batch)


def test_version_dispatch():
    old = build_plan(_settings(), "8.5.2.2")
    assert old["explicit_batch_flag"] and not old["optimization_level"] and old["flags"] == ["FP16"]
    assert any("predates" in note for note in old["notes"])
    new = build_plan(_settings(), "10.3.0")
    assert not new["explicit_batch_flag"] and new["optimization_level"] and new["notes"] == []
    assert build_plan(_settings(), "8.6.1")["optimization_level"]


def test_precision_dla_and_int8_plans():
    assert build_plan(_settings("fp32"), "8.5.2")["flags"] == []
    int8 = build_plan(_settings("int8"), "10.3.0")
    assert int8["flags"] == ["INT8", "FP16"]
    assert any("deprecated" in n for n in int8["notes"]) and any(
        "random data" in n for n in int8["notes"]
    )
    dla = build_plan(_settings(dla_core=1), "8.5.2")
    assert dla["flags"] == ["FP16", "GPU_FALLBACK"] and dla["dla_core"] == 1
    assert (
        "GPU_FALLBACK"
        not in build_plan(_settings(dla_core=0, gpu_fallback=False), "8.5.2")["flags"]
    )
    with pytest.raises(HarnessError, match="no DLA support"):
        build_plan(_settings(dla_core=0), "10.8.0")
    assert build_plan(_settings(dla_core=0), "11.4.1")["dla_core"] == 0


def test_optimisation_profile_shapes(trt_backend):
    assert trt_backend.profile_shapes((1, 3, 32, 32), _settings()) is None
    assert trt_backend.profile_shapes((-1, 3, 32, 32), _settings(batch=4, max_batch=16)) == (
        (1, 3, 32, 32),
        (4, 3, 32, 32),
        (16, 3, 32, 32),
    )
    assert (
        trt_backend.profile_shapes((-1, 3, 32, 32), _settings(batch=2, dla_core=0))
        == ((2, 3, 32, 32),) * 3
    )
    with pytest.raises(HarnessError, match="beyond the batch"):
        trt_backend.profile_shapes((1, 3, -1, -1), _settings())


def test_calibration_batches_from_npy_or_random_with_a_warning(trt_backend, tmp_path):
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.full((2, 3, 4, 4), i, np.float64))
    batches = trt_backend.calibration_batches((2, 3, 4, 4), str(tmp_path), 16)
    assert len(batches) == 3 and batches[2].dtype == np.float32 and batches[2].flags["C_CONTIGUOUS"]
    assert float(batches[2].mean()) == 2.0
    with pytest.raises(HarnessError, match="expected"):
        trt_backend.calibration_batches((1, 3, 4, 4), str(tmp_path), 16)
    with pytest.raises(HarnessError, match="no .npy"):
        trt_backend.calibration_batches((1, 3, 4, 4), str(tmp_path / "none"), 16)
    with pytest.warns(UserWarning, match="accuracy is not"):
        generated = trt_backend.calibration_batches((1, 3, 4, 4), None, 5)
        again = trt_backend.calibration_batches((1, 3, 4, 4), None, 1)
    assert len(generated) == 5 and np.array_equal(generated[0], again[0])  # seeded


@pytest.mark.skipif(
    TENSORRT, reason="TensorRT is installed: the missing-backend message does not apply"
)
def test_missing_tensorrt_says_what_to_install():
    from harness.backends import get_runner_class

    with pytest.raises(
        HarnessError, match=r"backend 'tensorrt' is not available.*python3-libnvinfer"
    ):
        get_runner_class("tensorrt")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(
    not TENSORRT, reason="TensorRT not installed (needs tensorrt + pycuda on an NVIDIA GPU)"
)
def test_real_build_is_cached_and_matches_onnxruntime(tmp_path):  # pragma: no cover - needs a GPU
    from harness.backends.onnxruntime import OnnxRuntimeRunner
    from harness.backends.trt.cache import EngineCache
    from harness.backends.trt.runner import TensorRTRunner
    from harness.cli import main

    model = tmp_path / "m.onnx"
    assert main(["export", "resnet20", "-o", str(model)]) == 0
    profile, cache = load_profile("rtx3090"), EngineCache(tmp_path / "engines")
    with TensorRTRunner(model, profile, "fp32", 1, cache=cache) as runner, OnnxRuntimeRunner(
        model, load_profile("host")
    ) as reference:
        assert runner.describe()["rebuilt"] == "no cached engine"
        feeds = reference.random_inputs(3)
        np.testing.assert_allclose(
            next(iter(runner.infer(feeds).values())),
            reference.infer(feeds)["output"],
            rtol=1e-3,
            atol=1e-3,
        )
        timings = runner.measure_once()
        assert timings["latency_ms"] >= timings["gpu_compute_ms"] > 0 and timings["enqueue_ms"] > 0
    with TensorRTRunner(model, profile, "fp32", 1, cache=cache) as again:
        assert again.describe()["rebuilt"] is None
