"""Engine cache: the key covers everything that changes the engine.

Stale or damaged engines are never reused.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from harness.backends.trt.cache import BuildSettings, EngineCache, engine_identity, engine_key
from harness.errors import HarnessError
from harness.profiles import load_profile


def _identity(
    profile_name="xavier",
    precision="fp16",
    batch=1,
    onnx="a" * 64,
    trt="8.5.2.2",
    gpu="Xavier",
    cc="7.2",
    **tensorrt,
):
    profile = load_profile(profile_name)
    profile.tensorrt = dataclasses.replace(profile.tensorrt, **tensorrt)
    return engine_identity(
        onnx, BuildSettings.from_profile(profile, precision, batch), trt, gpu, cc
    )


def test_key_is_stable_and_covers_everything_that_changes_the_engine():
    base = _identity()
    assert engine_key(base) == engine_key(_identity()) and len(engine_key(base)) == 64
    variants = [
        _identity(onnx="b" * 64),
        _identity(precision="fp32"),
        _identity(batch=4),
        _identity(trt="8.5.1.7"),
        _identity(trt="10.3.0"),
        _identity(gpu="Orin"),
        _identity(cc="8.7"),
        _identity(workspace_mib=2048),
        _identity(builder_optimization_level=5),
        _identity(dla_core=0),
        _identity(gpu_fallback=False),
        _identity(max_batch=8),
    ]
    keys = {engine_key(v) for v in variants}
    assert len(keys) == len(variants) and engine_key(base) not in keys


def test_int8_key_follows_the_calibration_data(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "0.npy", np.zeros((1, 3, 8, 8), np.float32))
    profile = load_profile("xavier")
    profile.precisions = ["fp16", "int8"]
    random_data = BuildSettings.from_profile(profile, "int8", 1)
    assert random_data.calibration == "random:16"
    profile.tensorrt.int8_calibration_dir = str(folder)
    first = BuildSettings.from_profile(profile, "int8", 1)
    np.save(folder / "0.npy", np.ones((1, 3, 8, 8), np.float32))
    second = BuildSettings.from_profile(profile, "int8", 1)
    assert first.calibration.startswith("npy:") and first.calibration != second.calibration
    assert BuildSettings.from_profile(profile, "fp16", 1).calibration is None
    profile.tensorrt.int8_calibration_dir = str(tmp_path / "empty")
    with pytest.raises(HarnessError, match="no .npy"):
        BuildSettings.from_profile(profile, "int8", 1)


def test_settings_refuse_what_cannot_be_built():
    xavier = load_profile("xavier")
    with pytest.raises(HarnessError, match="precisions"):
        BuildSettings.from_profile(xavier, "int8", 1)
    xavier.tensorrt.dla_core = 0
    with pytest.raises(HarnessError, match="DLA core 0.*fp16"):
        BuildSettings.from_profile(xavier, "fp32", 1)
    assert BuildSettings.from_profile(xavier, "fp16", 4).max_batch == 4


def test_store_then_lookup_reuses_only_an_intact_matching_engine(tmp_path):
    cache, identity = EngineCache(tmp_path), _identity()
    engine, reason = cache.lookup(identity)
    assert reason == "no cached engine" and engine == tmp_path / f"{engine_key(identity)}.engine"
    assert cache.store(identity, b"plan bytes", {"onnx": "m.onnx"}) == engine
    assert cache.lookup(identity) == (engine, None)
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    assert (
        sidecar["identity"] == identity and sidecar["bytes"] == 10 and sidecar["onnx"] == "m.onnx"
    )

    engine.write_bytes(b"plan")  # truncated or replaced
    assert "no longer matches" in cache.lookup(identity)[1]
    cache.store(identity, b"plan bytes")
    recorded = json.loads(engine.with_suffix(".json").read_text())
    recorded["identity"]["tensorrt"] = (
        "8.5.1.7"  # a sidecar that says something else is never trusted
    )
    engine.with_suffix(".json").write_text(json.dumps(recorded))
    assert cache.lookup(identity)[1] == "its sidecar describes a different build (tensorrt)"
    engine.with_suffix(".json").unlink()
    assert "sidecar is missing" in cache.lookup(identity)[1]
    with pytest.raises(HarnessError, match="empty"):
        cache.store(identity, b"")


def test_get_or_build_builds_once_and_rebuilds_when_stale(tmp_path):
    cache, identity, builds = EngineCache(tmp_path / "engines"), _identity(), []

    def build():
        builds.append(1)
        return b"engine %d" % len(builds)

    path, why = cache.get_or_build(identity, build)
    assert why == "no cached engine" and path.read_bytes() == b"engine 1"
    assert cache.get_or_build(identity, build) == (path, None) and len(builds) == 1
    path.write_bytes(b"corrupt")
    assert (
        "no longer matches" in cache.get_or_build(identity, build)[1]
        and path.read_bytes() == b"engine 2"
    )
    cache.discard(identity)
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_timing_and_calibration_cache_paths(tmp_path):
    cache, xavier = EngineCache(tmp_path), load_profile("xavier")
    assert (
        cache.timing_cache_path(xavier, "8.5.2.2", "7.2") == tmp_path / "timing-8.5.2.2-sm72.cache"
    )
    xavier.tensorrt.timing_cache_file = str(tmp_path / "mine.cache")
    assert cache.timing_cache_path(xavier, "8.5.2.2", "7.2") == tmp_path / "mine.cache"
    settings = BuildSettings.from_profile(xavier, "fp16", 1)
    assert cache.calibration_cache_path("a" * 64, settings) != cache.calibration_cache_path(
        "b" * 64, settings
    )


def test_engine_folder_is_the_checkouts_engines_folder(monkeypatch):
    import importlib
    from pathlib import Path

    import harness.backends.trt.cache as cache

    monkeypatch.delenv("HARNESS_ENGINE_DIR", raising=False)
    reloaded = importlib.reload(cache)
    assert reloaded.ENGINE_DIR == Path(__file__).resolve().parent.parent / "engines"
