"""TensorRT backend: build an engine from ONNX per device profile (cached in ``engines/``), run it with pycuda.

Supports TensorRT 8.5 (Jetson AGX Xavier, JetPack 5.1, Python 3.8) and 10.x. Timing follows trtexec: end-to-end
latency (H2D + GPU compute + D2H) from CUDA events, GPU compute alone and the host's enqueue time, reported
separately. Needs ``tensorrt`` and ``pycuda`` (``pip install .[tensorrt]``, or JetPack's python3-libnvinfer).
The decisions that differ between versions are pure functions (``build_plan``, ``execution_api``, ...) so that
they are tested without a GPU; only ``build_engine`` and ``TensorRTRunner`` touch TensorRT.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# isort: off
import tensorrt as trt  # before pycuda, so that a machine with neither is told about TensorRT first
import pycuda.driver as cuda
# isort: on

from harness.backends.base import LATENCY, Runner
from harness.backends.trt.cache import BuildSettings, EngineCache, engine_identity, file_sha256
from harness.backends.trt.versions import version_tuple
from harness.errors import HarnessError
from harness.profiles import Profile

log = logging.getLogger(__name__)
RANDOM_CALIBRATION_WARNING = ("INT8 calibration with random data: the engine's latency is representative, its "
                              "accuracy is not (set tensorrt.int8_calibration_dir to a folder of .npy inputs)")


# --- pure decisions (no TensorRT objects) ----------------------------------------------------------------------
def execution_api(version: str) -> str:
    """'v3' (name-based tensors, ``execute_async_v3``) from TensorRT 10; 'v2' (bindings) on 8.x as on JetPack 5.1."""
    return "v3" if version_tuple(version) >= (10,) else "v2"


def build_plan(settings: BuildSettings, version: str) -> Dict[str, Any]:
    """Which builder calls a TensorRT version gets for these settings, and what to warn about."""
    v = version_tuple(version)
    if settings.dla_core is not None and (10, 8) <= v < (11, 4, 1):
        raise HarnessError(f"TensorRT {version} has no DLA support (dropped after 10.7, back in 11.4.1 for AGX "
                           f"Orin): build for the GPU (tensorrt.dla_core: null) or use another TensorRT")
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[settings.precision]
    if settings.dla_core is not None and settings.gpu_fallback:
        flags = flags + ["GPU_FALLBACK"]
    notes = []
    if settings.precision == "int8" and v >= (10, 1):
        notes.append("INT8 calibrators are deprecated from TensorRT 10.1: prefer an ONNX with Q/DQ nodes")
    if settings.precision == "int8" and (settings.calibration or "").startswith("random:"):
        notes.append(RANDOM_CALIBRATION_WARNING)
    if v < (8, 6):
        notes.append(f"builder_optimization_level {settings.builder_optimization_level} not applied: "
                     f"TensorRT {version} predates the setting (8.6)")
    return {"explicit_batch_flag": v < (10,), "optimization_level": v >= (8, 6), "flags": flags,
            "dla_core": settings.dla_core, "execution_api": execution_api(version), "notes": notes}


def profile_shapes(shape: Sequence[int], settings: BuildSettings) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """(min, opt, max) for an input whose batch dimension is dynamic; None when static. DLA: min = opt = max."""
    if all(d >= 0 for d in shape):
        return None
    if any(d < 0 for d in shape[1:]):
        raise HarnessError(f"input shape {tuple(shape)} is dynamic beyond the batch dimension: export it with "
                           f"static image sizes")
    rest = tuple(shape[1:])
    high = settings.batch if settings.dla_core is not None else settings.max_batch
    low = settings.batch if settings.dla_core is not None else 1
    return (low,) + rest, (settings.batch,) + rest, (high,) + rest


def describe_parser_errors(errors: Sequence[Any], node_names: Sequence[str]) -> str:
    """Parser errors as 'node <name> (<op>): <desc>'; 8.5's errors give a node index, 10.x's a name too."""
    parts = []
    for error in errors:
        name = error.node_name() if hasattr(error, "node_name") else ""
        index = error.node()
        if not name and 0 <= index < len(node_names):
            name = node_names[index]
        op = error.node_operator() if hasattr(error, "node_operator") else ""
        where = f"node {name or '#' + str(index)}" + (f" ({op})" if op else "") if index >= 0 or name else "model"
        parts.append(f"{where}: {error.desc()}")
    return "; ".join(parts) or "no error reported by the parser"


def calibration_batches(shape: Sequence[int], data_dir: Optional[str], count: int) -> List[np.ndarray]:
    """INT8 calibration inputs: every ``.npy`` in ``data_dir`` (each one batch of ``shape``), or, with a warning,
    ``count`` batches of seeded standard-normal data."""
    if data_dir:
        files = sorted(Path(data_dir).expanduser().glob("*.npy"))
        if not files:
            raise HarnessError(f"no .npy calibration inputs in {data_dir}")
        batches = []
        for path in files:
            array = np.load(str(path))
            if array.size != int(np.prod(shape)):
                raise HarnessError(f"calibration input {path} has shape {array.shape}, expected {tuple(shape)}")
            batches.append(np.ascontiguousarray(array.reshape(shape), dtype=np.float32))
        return batches
    warnings.warn(RANDOM_CALIBRATION_WARNING, stacklevel=2)
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count)]


def onnx_node_names(onnx_path: Path) -> List[str]:
    """Node names in graph order, to name the nodes TensorRT 8.5's parser reports by index."""
    try:
        import onnx

        return [node.name or f"{node.op_type}#{i}"
                for i, node in enumerate(onnx.load(str(onnx_path), load_external_data=False).graph.node)]
    except Exception:  # noqa: BLE001 - names are a courtesy; the parser's own message still stands
        return []


# --- TensorRT --------------------------------------------------------------------------------------------------
_LOGGER = None


def _logger():
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def _calibrator(batches: List[np.ndarray], cache_path: Path):
    """An IInt8EntropyCalibrator2 that copies ``batches`` to the GPU one by one and keeps its table on disk."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.index = 0
            self.device = cuda.mem_alloc(batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names):  # noqa: ARG002 - one input
            if self.index >= len(batches):
                return None
            cuda.memcpy_htod(self.device, batches[self.index])
            self.index += 1
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(onnx_path: Path, settings: BuildSettings, profile: Profile, timing_cache: Optional[Path],
                 calibration_cache: Optional[Path] = None) -> bytes:
    """Parse the ONNX file and build a serialized engine with the given settings (TensorRT 8.5 or 10.x)."""
    plan = build_plan(settings, trt.__version__)
    for note in plan["notes"]:
        log.warning(note)
    builder = trt.Builder(_logger())
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if plan["explicit_batch_flag"] else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise HarnessError(f"TensorRT cannot parse {onnx_path}: "
                           + describe_parser_errors(errors, onnx_node_names(onnx_path)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if plan["optimization_level"] and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings.builder_optimization_level
    for flag in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings.dla_core is not None:
        if settings.dla_core >= builder.num_DLA_cores:
            raise HarnessError(f"DLA core {settings.dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
    optimization_profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes = profile_shapes(tuple(tensor.shape), settings)
        if shapes is not None:
            optimization_profile = optimization_profile or builder.create_optimization_profile()
            optimization_profile.set_shape(tensor.name, *shapes)
    if optimization_profile is not None:
        config.add_optimization_profile(optimization_profile)
    if settings.precision == "int8":
        shape = (settings.batch,) + tuple(network.get_input(0).shape)[1:]
        batches = calibration_batches(shape, profile.tensorrt.int8_calibration_dir,
                                      profile.tensorrt.int8_calibration_batches)
        config.int8_calibrator = _calibrator(batches, calibration_cache or Path("calibration.cache"))
        if optimization_profile is not None:
            config.set_calibration_profile(optimization_profile)
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HarnessError(f"TensorRT failed to build an engine for {onnx_path} (see its log above)")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTRunner(Runner):
    """A cached engine with page-locked host buffers, one stream and CUDA events around the device work."""

    backend_name = "tensorrt"

    def __init__(self, onnx_path: Path, profile: Profile, precision: str = "fp16", batch: int = 1,
                 cache: Optional[EngineCache] = None) -> None:
        super().__init__(onnx_path, profile, precision, batch)
        self.settings = BuildSettings.from_profile(profile, precision, batch)
        self.cache = cache or EngineCache()

    def _activate_impl(self) -> None:
        cuda.init()
        device = cuda.Device(0)
        self.cuda_context = device.make_context()
        self._load(device, self.cache)

    def _load(self, device, cache: EngineCache) -> None:
        capability = "{}.{}".format(*device.compute_capability())
        onnx_sha = file_sha256(self.onnx_path)
        self.identity = engine_identity(onnx_sha, self.settings, trt.__version__, device.name(), capability)
        self.timing_cache = (cache.timing_cache_path(self.profile, trt.__version__, capability)
                             if self.profile.tensorrt.timing_cache else None)
        calibration = cache.calibration_cache_path(onnx_sha, self.settings)
        self.engine_path, self.rebuilt = cache.get_or_build(
            self.identity, lambda: build_engine(self.onnx_path, self.settings, self.profile, self.timing_cache,
                                                calibration),
            extra={"onnx": str(self.onnx_path), "profile": self.profile.name})
        if self.rebuilt:
            log.info("built %s (%s)", self.engine_path, self.rebuilt)
        self.engine = trt.Runtime(_logger()).deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:  # e.g. a plan from another TensorRT: never run it, rebuild next time
            cache.discard(self.identity)
            raise HarnessError(f"TensorRT could not load {self.engine_path}; it was removed, run again to rebuild")
        self.context = self.engine.create_execution_context()
        self.api = execution_api(trt.__version__)
        self.stream = cuda.Stream()
        self.inputs, self.outputs = self._allocate()
        self.events = [cuda.Event() for _ in range(4)]

    def _tensors(self) -> List[Tuple[str, bool, Tuple[int, ...], np.dtype]]:
        """(name, is_input, shape, dtype) per I/O tensor; inputs' dynamic batch set first, then output shapes."""
        engine, context, found = self.engine, self.context, []
        if self.api == "v3":
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            for name in inputs:
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    context.set_input_shape(name, (self.batch,) + shape[1:])
            for name in names:
                found.append((name, name in inputs, tuple(context.get_tensor_shape(name)),
                              np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
        else:
            for i in range(engine.num_bindings):
                shape = tuple(engine.get_binding_shape(i))
                if engine.binding_is_input(i) and any(d < 0 for d in shape):
                    context.set_binding_shape(i, (self.batch,) + shape[1:])
            for i in range(engine.num_bindings):
                found.append((engine.get_binding_name(i), engine.binding_is_input(i),
                              tuple(context.get_binding_shape(i)), np.dtype(trt.nptype(engine.get_binding_dtype(i)))))
        return found

    def _allocate(self):
        inputs, outputs = [], []
        self.bindings: List[int] = []
        for name, is_input, shape, dtype in self._tensors():
            host = cuda.pagelocked_empty(shape, dtype)
            device = cuda.mem_alloc(max(host.nbytes, 1))
            self.bindings.append(int(device))
            if self.api == "v3":
                self.context.set_tensor_address(name, int(device))
            (inputs if is_input else outputs).append((name, host, device))
        rng = np.random.default_rng(0)
        for _, host, _ in inputs:
            host[...] = rng.standard_normal(host.shape).astype(host.dtype)
        return inputs, outputs

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {name: (tuple(host.shape), host.dtype) for name, host, _ in self.inputs}

    def _execute(self) -> None:
        if self.api == "v3":
            self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.execute_async_v2(self.bindings, self.stream.handle)

    def _run(self) -> Dict[str, float]:
        start, after_h2d, after_compute, end = self.events
        start.record(self.stream)
        for _, host, device in self.inputs:
            cuda.memcpy_htod_async(device, host, self.stream)
        after_h2d.record(self.stream)
        enqueue_start = time.perf_counter()
        self._execute()
        enqueue_ms = (time.perf_counter() - enqueue_start) * 1000.0
        after_compute.record(self.stream)
        for _, host, device in self.outputs:
            cuda.memcpy_dtoh_async(host, device, self.stream)
        end.record(self.stream)
        end.synchronize()
        return {LATENCY: end.time_since(start), "gpu_compute_ms": after_compute.time_since(after_h2d),
                "h2d_ms": after_h2d.time_since(start), "d2h_ms": end.time_since(after_compute),
                "enqueue_ms": enqueue_ms}

    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        for name, host, _ in self.inputs:
            host[...] = feeds[name]
        self._run()
        return {name: host.copy() for name, host, _ in self.outputs}

    def _measure_impl(self) -> Dict[str, float]:
        return self._run()

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(version=trt.__version__, execution_api=self.api, engine=str(self.engine_path),
                    rebuilt=self.rebuilt, gpu=self.identity["gpu"],
                    compute_capability=self.identity["compute_capability"], build=self.identity["build"],
                    timing_cache=str(self.timing_cache) if self.timing_cache else None,
                    plan=build_plan(self.settings, trt.__version__))
        return info

    def _deactivate_impl(self) -> None:
        if getattr(self, "cuda_context", None) is None:
            return
        for _, _, device in getattr(self, "inputs", []) + getattr(self, "outputs", []):
            device.free()
        self.context = self.engine = None
        self.cuda_context.pop()
        self.cuda_context = None
