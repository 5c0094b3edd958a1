"""The TensorRT engine cache: ``engines/<key>.engine`` plus a sidecar ``engines/<key>.json`` saying
what is inside.

The key is a SHA-256 over everything that changes the plan TensorRT builds: the ONNX file's bytes,
the profile's build settings, the precision and batch, the calibration data, the TensorRT version,
the GPU (name and compute capability) and the profiling verbosity (``PROFILING_VERBOSITY``). An
engine is only ever used when its sidecar matches that identity exactly and the engine's own bytes
still hash to what the sidecar recorded; anything else (missing, stale, truncated, built
elsewhere) is rebuilt, never run. Pure Python: runs on the device
(Python 3.8), needs neither torch nor tensorrt.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from harness.errors import HarnessError
from harness.profiles import Profile, checked_precision

CACHE_FORMAT = 2  # bump when the identity's layout changes: every older engine then misses
# Engines are built with ProfilingVerbosity.DETAILED, and that is part of their identity. DETAILED
# stores each layer's type, tensors, formats and tactic in the plan (what IEngineInspector reports
# and a per-layer profile is joined with); it may add host time to enqueue through NVTX ranges
# (TensorRT's IExecutionContext.nvtx_verbosity note). One engine for timing and profiling rather
# than a separate profiling engine: a second build may pick other tactics, and the layers profiled
# must be those of the engine timed. Polygraphy's CreateConfig already picks DETAILED when given no
# verbosity (0.53), so the engines timed before this setting was explicit were DETAILED too.
PROFILING_VERBOSITY = "DETAILED"
ENGINE_DIR = Path(
    os.environ.get("HARNESS_ENGINE_DIR", Path(__file__).resolve().parents[3] / "engines")
)


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Everything from the profile and the command line that changes the engine TensorRT builds."""

    precision: str
    batch: int
    max_batch: int  # upper end of the optimisation profile when the ONNX batch dimension is dynamic
    workspace_mib: int
    builder_optimization_level: int
    dla_core: Optional[int]
    gpu_fallback: bool
    calibration: Optional[str]  # identity of the INT8 calibration data (None unless int8)

    @classmethod
    def from_profile(cls, profile: Profile, precision: str, batch: int) -> BuildSettings:
        """Resolve and check the build settings of ``profile`` for one precision and batch size."""
        checked_precision(profile, precision)
        if batch < 1:
            raise HarnessError(f"batch size must be positive, got {batch}")
        t = profile.tensorrt
        if t.dla_core is not None and precision == "fp32":
            raise HarnessError(
                f"device {profile.name!r} builds for DLA core {t.dla_core}, which runs fp16 or "
                f"int8 only: choose --precision fp16 (or set tensorrt.dla_core: null)"
            )
        max_batch = max([batch, t.max_batch or 0] + list(profile.batch_sizes))
        calibration = calibration_identity(profile) if precision == "int8" else None
        return cls(
            precision,
            batch,
            max_batch,
            t.workspace_mib,
            t.builder_optimization_level,
            t.dla_core,
            t.gpu_fallback,
            calibration,
        )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def calibration_identity(profile: Profile) -> str:
    """'npy:<sha256 over names and bytes>' for a folder of ``.npy`` batches, 'random:<n>' for
    generated data."""
    folder = profile.tensorrt.int8_calibration_dir
    if not folder:
        return f"random:{profile.tensorrt.int8_calibration_batches}"
    files = sorted(Path(folder).expanduser().glob("*.npy"))
    if not files:
        raise HarnessError(f"tensorrt.int8_calibration_dir {folder} holds no .npy input batches")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return f"npy:{digest.hexdigest()}"


def engine_identity(
    onnx_sha256: str,
    settings: BuildSettings,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: str,
) -> Dict[str, Any]:
    """What an engine is built from: hashed into its key and stored beside it."""
    return {
        "format": CACHE_FORMAT,
        "onnx_sha256": onnx_sha256,
        "build": dataclasses.asdict(settings),
        "tensorrt": tensorrt_version,
        "gpu": gpu_name,
        "compute_capability": compute_capability,
        "profiling_verbosity": PROFILING_VERBOSITY,
    }


def engine_key(identity: Dict[str, Any]) -> str:
    """SHA-256 (hex) of the identity's canonical JSON."""
    return hashlib.sha256(
        json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class EngineCache:
    """A folder of engines keyed by identity; lookups say why an engine cannot be used."""

    def __init__(self, directory: Path = ENGINE_DIR) -> None:
        self.directory = Path(directory)

    def paths(self, identity: Dict[str, Any]) -> Tuple[Path, Path]:
        """(engine, sidecar) paths for an identity."""
        key = engine_key(identity)
        return self.directory / f"{key}.engine", self.directory / f"{key}.json"

    def lookup(self, identity: Dict[str, Any]) -> Tuple[Path, Optional[str]]:
        """(engine path, None) when the cached engine may be run, else (path, the reason it may
        not)."""
        engine, sidecar = self.paths(identity)
        if not engine.is_file():
            return engine, "no cached engine"
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return engine, "its sidecar is missing or unreadable"
        old = recorded.get("identity") if isinstance(recorded, dict) else None
        if old != identity:
            changed = sorted(
                k for k in identity if not isinstance(old, dict) or old.get(k) != identity[k]
            )
            return (
                engine,
                f"its sidecar describes a different build ({', '.join(changed) or 'format'})",
            )
        if recorded.get("engine_sha256") != file_sha256(engine):
            return (
                engine,
                "the engine file no longer matches the hash in its sidecar (truncated or replaced)",
            )
        return engine, None

    def store(
        self, identity: Dict[str, Any], plan: bytes, extra: Optional[Dict[str, Any]] = None
    ) -> Path:
        """Write an engine and its sidecar (each atomically, engine first); returns the engine
        path."""
        if not plan:
            raise HarnessError("refusing to cache an empty engine")
        self.directory.mkdir(parents=True, exist_ok=True)
        engine, sidecar = self.paths(identity)
        _write_atomic(engine, plan)
        record = {
            "identity": identity,
            "engine_sha256": hashlib.sha256(plan).hexdigest(),
            "bytes": len(plan),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        record.update(extra or {})
        _write_atomic(sidecar, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
        return engine

    def get_or_build(
        self,
        identity: Dict[str, Any],
        build: Callable[[], bytes],
        extra: Optional[Dict[str, Any]] = None,
    ) -> Tuple[Path, Optional[str]]:
        """The usable engine for ``identity``, built with ``build()`` when needed: (path, why it was
        rebuilt)."""
        engine, problem = self.lookup(identity)
        if problem is None:
            return engine, None
        return self.store(identity, build(), extra), problem

    def discard(self, identity: Dict[str, Any]) -> None:
        """Remove an engine that failed to load, so that the next run rebuilds it."""
        for path in self.paths(identity):
            if path.exists():
                path.unlink()

    def timing_cache_path(
        self, profile: Profile, tensorrt_version: str, compute_capability: str
    ) -> Path:
        """The profile's timing cache file; by default one per TensorRT version and compute
        capability."""
        if profile.tensorrt.timing_cache_file:
            return Path(profile.tensorrt.timing_cache_file).expanduser()
        return (
            self.directory
            / f"timing-{tensorrt_version}-sm{compute_capability.replace('.', '')}.cache"
        )

    def calibration_cache_path(self, onnx_sha256: str, settings: BuildSettings) -> Path:
        """Where TensorRT's INT8 calibration table for this model, batch and calibration data is
        kept."""
        data = hashlib.sha256(
            f"{onnx_sha256}|{settings.calibration}|{settings.batch}".encode()
        ).hexdigest()
        return self.directory / f"calibration-{data[:24]}.cache"
