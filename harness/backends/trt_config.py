"""TensorRT decisions that need no GPU: build settings from a profile, engine cache keys, the equivalent
trtexec command line, and parsing of trtexec's outputs. Runs on the device: Python 3.8, no torch, no tensorrt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness.errors import HarnessError
from harness.profiles import Profile


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Everything that changes the engine TensorRT builds (and so belongs in the cache key)."""

    precision: str
    batch: int
    workspace_mib: int
    builder_optimization_level: int
    dla_core: Optional[int]
    gpu_fallback: bool

    @classmethod
    def from_profile(cls, profile: Profile, precision: str, batch: int) -> BuildSettings:
        if precision not in profile.precisions:
            raise HarnessError(f"device {profile.name!r} lists precisions {profile.precisions}, not {precision!r}")
        t = profile.tensorrt
        return cls(precision, batch, t.workspace_mib, t.builder_optimization_level, t.dla_core, t.gpu_fallback)


def version_tuple(version: str) -> Tuple[int, ...]:
    """'8.5.2.2' -> (8, 5, 2, 2)."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def execution_api(version: str) -> str:
    """'v3' (name-based tensors, execute_async_v3) from TensorRT 10, 'v2' (bindings) on 8.x as on JetPack 5.1."""
    return "v3" if version_tuple(version)[:1] >= (10,) else "v2"


def sha256_file(path: Path) -> str:
    """Hex digest of a file's bytes (the ONNX model's identity in the cache key)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_identity(onnx_sha256: str, settings: BuildSettings, trt_version: str, gpu_name: str,
                   compute_capability: str) -> Dict[str, Any]:
    """What an engine was built from; stored beside it and compared before it is ever run."""
    return {"onnx_sha256": onnx_sha256, "build": dataclasses.asdict(settings), "tensorrt": trt_version,
            "gpu": gpu_name, "compute_capability": compute_capability}


def cache_key(identity: Dict[str, Any]) -> str:
    """A short stable key of an engine identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def cached_engine(cache_dir: Path, stem: str, identity: Dict[str, Any]) -> Tuple[Path, bool]:
    """(engine path, usable): usable only when the engine and its sidecar exist and the sidecar matches exactly."""
    engine = Path(cache_dir) / f"{stem}-{cache_key(identity)}.engine"
    sidecar = engine.with_suffix(".json")
    if not engine.is_file() or not sidecar.is_file():
        return engine, False
    try:
        recorded = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        return engine, False
    return engine, recorded == identity


def trtexec_command(onnx_path: Path, profile: Profile, precision: str, batch: int, trt_version: str = "8.5",
                    engine_path: Optional[Path] = None, times_path: Optional[Path] = None,
                    input_name: str = "input", input_shape: Optional[Tuple[int, ...]] = None) -> List[str]:
    """The trtexec invocation equivalent to harness's build and timing settings for this TensorRT version.

    trtexec's defaults moved in TensorRT 11 (CUDA graphs and spin-wait on, data transfers off, no --fp16/--int8
    for strongly typed networks): flags are added so that the measured quantity matches harness's runner
    (H2D + compute + D2H, no CUDA graph).
    """
    settings = BuildSettings.from_profile(profile, precision, batch)
    version = version_tuple(trt_version)
    timing = profile.timing
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--memPoolSize=workspace:{settings.workspace_mib}"]
    if precision in ("fp16", "int8"):
        if version >= (11,):
            raise HarnessError("TensorRT 11 builds strongly typed networks: export the model in "
                               f"{precision} (or with Q/DQ nodes) instead of asking trtexec for --{precision}")
        cmd.append(f"--{precision}")
    if version >= (8, 6):
        cmd.append(f"--builderOptimizationLevel={settings.builder_optimization_level}")
    if settings.dla_core is not None:
        cmd.append(f"--useDLACore={settings.dla_core}")
        if settings.gpu_fallback:
            cmd.append("--allowGPUFallback")
    if input_shape is not None:
        cmd.append(f"--shapes={input_name}:" + "x".join(str(d) for d in (batch,) + tuple(input_shape[1:])))
    if profile.tensorrt.timing_cache:
        cmd.append(f"--timingCacheFile={Path('engines') / 'timing.cache'}")
    cmd += [f"--warmUp={int(timing.warmup_s * 1000)}", f"--duration={int(max(1, timing.min_duration_s))}",
            f"--iterations={timing.min_iterations}", "--percentile=90,95,99"]
    if version >= (11,):
        cmd += ["--noCudaGraph", "--includeDataTransfers", "--noSpinWait"]
    if engine_path is not None:
        cmd.append(f"--saveEngine={engine_path}")
    if times_path is not None:
        cmd.append(f"--exportTimes={times_path}")
    return cmd


def parse_export_times(text: str) -> Dict[str, List[float]]:
    """trtexec ``--exportTimes`` JSON -> series in ms (latency, GPU compute, enqueue, H2D, D2H)."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"trtexec times file is not JSON ({exc})") from None
    if not isinstance(records, list) or not records or "latencyMs" not in records[0]:
        raise HarnessError("trtexec times file holds no per-query records with latencyMs")
    return {
        "latency_ms": [float(r["latencyMs"]) for r in records],
        "gpu_compute_ms": [float(r["computeMs"]) for r in records],
        "enqueue_ms": [float(r["endEnqMs"]) - float(r["startEnqMs"]) for r in records],
        "h2d_ms": [float(r.get("h2dMs", 0.0)) for r in records],
        "d2h_ms": [float(r.get("d2hMs", 0.0)) for r in records],
    }


def parse_trtexec_version(output: str) -> Optional[str]:
    """The TensorRT version from trtexec's banner, e.g. '[TensorRT v8502]' -> '8.5.2' ('v100300' -> '10.3.0')."""
    match = re.search(r"TensorRT v(\d+)", output)
    if not match:
        return None
    digits = match.group(1)
    if len(digits) == 4:  # 8502: major, minor, patch x 2
        return f"{digits[0]}.{digits[1]}.{int(digits[2:])}"
    major = int(digits) // 10000
    return f"{major}.{int(digits) // 100 % 100}.{int(digits) % 100}"
