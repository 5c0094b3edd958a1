"""TensorRT backend: build an engine from ONNX per device profile (cached in ``engines/``), run it with pycuda.

Supports TensorRT 8.5 (Jetson AGX Xavier, JetPack 5.1, Python 3.8), 10.x and 11.x; the version rules live in
``harness.backends.trt.versions``. One CUDA context per process, shared by every runner: the device's primary
context, made current by ``pycuda.autoprimaryctx`` (as NVIDIA's 8.5 samples do), never pushed or popped by a
runner. Every TensorRT and CUDA status is checked: a failed enqueue is an error, never a fast sample.

Timing definitions, as trtexec's (samples/common/sampleReporting.h, ``InferenceTime``):
- H2D latency: the input copies, from an event before them to an event after them;
- GPU compute: from the event after the input copies to the event after ``execute_async_v3``;
- D2H latency: the output copies, from that event to the last one;
- latency = H2D + GPU compute + D2H (trtexec's ``InferenceTime::latency()``);
- enqueue: host time spent in ``execute_async_v3``.
trtexec enqueues queries back to back (and, from 11, by default with CUDA graphs, spin-wait and no data
transfers); harness times one query at a time with a blocking event sync, so its figures compare with
trtexec run with ``--noCudaGraph --noSpinWait --includeDataTransfers`` (what ``trtexec_command`` passes).
Polygraphy is not used to build yet: the builder calls below are ours, checked per version against strict
doubles of TensorRT 8.5, 10.13 and 11.4 (tests/fake_tensorrt.py).
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
import pycuda.autoprimaryctx  # noqa: F401 - the primary context, current for the whole process
# isort: on

from harness.backends.base import LATENCY, Runner
from harness.backends.trt.cache import BuildSettings, EngineCache, engine_identity, file_sha256
from harness.backends.trt.versions import RANDOM_CALIBRATION_WARNING, build_plan
from harness.errors import HarnessError
from harness.profiles import Profile

log = logging.getLogger(__name__)


# --- pure decisions (no TensorRT objects) ----------------------------------------------------------------------
def profile_shapes(
    shape: Sequence[int], settings: BuildSettings
) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """(min, opt, max) for an input whose batch dimension is dynamic; None when static. DLA: min = opt = max."""
    if all(d >= 0 for d in shape):
        return None
    if any(d < 0 for d in shape[1:]):
        raise HarnessError(
            f"input shape {tuple(shape)} is dynamic beyond the batch dimension: export it with "
            f"static image sizes"
        )
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
        where = (
            f"node {name or '#' + str(index)}" + (f" ({op})" if op else "")
            if index >= 0 or name
            else "model"
        )
        parts.append(f"{where}: {error.desc()}")
    return "; ".join(parts) or "no error reported by the parser"


def calibration_batches(
    shape: Sequence[int], data_dir: Optional[str], count: int
) -> List[np.ndarray]:
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
                raise HarnessError(
                    f"calibration input {path} has shape {array.shape}, expected {tuple(shape)}"
                )
            batches.append(np.ascontiguousarray(array.reshape(shape), dtype=np.float32))
        return batches
    warnings.warn(RANDOM_CALIBRATION_WARNING, stacklevel=2)
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count)]


def onnx_node_names(onnx_path: Path) -> List[str]:
    """Node names in graph order, to name the nodes TensorRT 8.5's parser reports by index."""
    try:
        import onnx

        return [
            node.name or f"{node.op_type}#{i}"
            for i, node in enumerate(onnx.load(str(onnx_path), load_external_data=False).graph.node)
        ]
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


def build_engine(
    onnx_path: Path,
    settings: BuildSettings,
    profile: Profile,
    timing_cache: Optional[Path],
    calibration_cache: Optional[Path] = None,
) -> bytes:
    """Parse the ONNX file and build a serialized engine with the given settings (TensorRT 8.5 or 10.x)."""
    plan = build_plan(settings, trt.__version__)
    for note in plan["notes"]:
        log.warning(note)
    builder = trt.Builder(_logger())
    flags = (
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if plan["explicit_batch_flag"]
        else 0
    )
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise HarnessError(
            f"TensorRT cannot parse {onnx_path}: "
            + describe_parser_errors(errors, onnx_node_names(onnx_path))
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if plan["optimization_level"] and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = settings.builder_optimization_level
    for flag in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan["clear_flags"]:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if settings.dla_core is not None:
        if settings.dla_core >= builder.num_DLA_cores:
            raise HarnessError(
                f"DLA core {settings.dla_core} requested, this device has {builder.num_DLA_cores}"
            )
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
        batches = calibration_batches(
            shape, profile.tensorrt.int8_calibration_dir, profile.tensorrt.int8_calibration_batches
        )
        config.int8_calibrator = _calibrator(
            batches, calibration_cache or Path("calibration.cache")
        )
        if optimization_profile is not None:
            config.set_calibration_profile(optimization_profile)
    if timing_cache is not None:
        cache = config.create_timing_cache(
            timing_cache.read_bytes() if timing_cache.is_file() else b""
        )
        config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HarnessError(
            f"TensorRT failed to build an engine for {onnx_path} (see its log above)"
        )
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _check(ok: Any, what: str) -> None:
    """TensorRT's Python API reports failures as False/None: turn them into errors."""
    if ok is False or ok is None:
        raise HarnessError(f"TensorRT: {what} failed")


class TensorRTRunner(Runner):
    """A cached engine with page-locked host buffers, one stream and CUDA events around the device work."""

    backend_name = "tensorrt"

    def __init__(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str = "fp16",
        batch: int = 1,
        cache: Optional[EngineCache] = None,
    ) -> None:
        super().__init__(onnx_path, profile, precision, batch)
        self.settings = BuildSettings.from_profile(profile, precision, batch)
        self.cache = cache or EngineCache()
        self.engine = self.context = None
        self.inputs: List[Tuple[str, np.ndarray, Any]] = []
        self.outputs: List[Tuple[str, np.ndarray, Any]] = []

    def _activate_impl(self) -> None:
        device = cuda.Device(0)
        self.plan = build_plan(self.settings, trt.__version__)
        capability = "{}.{}".format(*device.compute_capability())
        built_from = self.onnx_path
        if self.plan["onnx_precision"] == "fp16":
            from harness.backends.trt.prepare import fp16_onnx

            built_from = fp16_onnx(
                self.onnx_path,
                self.cache.directory / f"{file_sha256(self.onnx_path)[:16]}-fp16.onnx",
            )
        onnx_sha = file_sha256(built_from)
        self.identity = engine_identity(
            onnx_sha, self.settings, trt.__version__, device.name(), capability
        )
        self.timing_cache = (
            self.cache.timing_cache_path(self.profile, trt.__version__, capability)
            if self.profile.tensorrt.timing_cache
            else None
        )
        calibration = self.cache.calibration_cache_path(onnx_sha, self.settings)
        self.engine_path, self.rebuilt = self.cache.get_or_build(
            self.identity,
            lambda: build_engine(
                built_from, self.settings, self.profile, self.timing_cache, calibration
            ),
            extra={
                "onnx": str(self.onnx_path),
                "built_from": str(built_from),
                "profile": self.profile.name,
            },
        )
        if self.rebuilt:
            log.info("built %s (%s)", self.engine_path, self.rebuilt)
        runtime = trt.Runtime(_logger())
        if self.settings.dla_core is not None:
            runtime.DLA_core = (
                self.settings.dla_core
            )  # the engine runs on the DLA core it was built for
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if (
            self.engine is None
        ):  # e.g. a plan from another TensorRT: never run it, rebuild next time
            self.cache.discard(self.identity)
            raise HarnessError(
                f"TensorRT could not load {self.engine_path}; it was removed, run again to rebuild"
            )
        self.context = self.engine.create_execution_context()
        _check(self.context, "create_execution_context")
        self.stream = cuda.Stream()
        self._allocate()
        self.events = [cuda.Event() for _ in range(4)]

    def _allocate(self) -> None:
        """Bind every I/O tensor by name (all versions): dynamic batch set, buffers allocated, addresses set."""
        engine, context = self.engine, self.context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for name in inputs:
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                _check(
                    context.set_input_shape(name, (self.batch,) + shape[1:]),
                    f"set_input_shape({name})",
                )
        rng = np.random.default_rng(0)
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            host = cuda.pagelocked_empty(shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            device = cuda.mem_alloc(max(host.nbytes, 1))
            _check(context.set_tensor_address(name, int(device)), f"set_tensor_address({name})")
            if name in inputs:
                host[...] = rng.standard_normal(host.shape).astype(host.dtype)
                self.inputs.append((name, host, device))
            else:
                self.outputs.append((name, host, device))

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {name: (tuple(host.shape), host.dtype) for name, host, _ in self.inputs}

    def _run(self) -> Dict[str, float]:
        start, after_h2d, after_compute, end = self.events
        start.record(self.stream)
        for _, host, device in self.inputs:
            cuda.memcpy_htod_async(device, host, self.stream)
        after_h2d.record(self.stream)
        enqueue_start = time.perf_counter()
        ok = self.context.execute_async_v3(self.stream.handle)
        enqueue_ms = (time.perf_counter() - enqueue_start) * 1000.0
        _check(ok, "execute_async_v3")
        after_compute.record(self.stream)
        for _, host, device in self.outputs:
            cuda.memcpy_dtoh_async(host, device, self.stream)
        end.record(self.stream)
        end.synchronize()
        h2d, compute, d2h = (
            after_h2d.time_since(start),
            after_compute.time_since(after_h2d),
            end.time_since(after_compute),
        )
        return {
            LATENCY: h2d + compute + d2h,
            "gpu_compute_ms": compute,
            "h2d_ms": h2d,
            "d2h_ms": d2h,
            "enqueue_ms": enqueue_ms,
        }

    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        for name, host, _ in self.inputs:
            host[...] = feeds[name]
        self._run()
        return {name: host.copy() for name, host, _ in self.outputs}

    def _measure_impl(self) -> Dict[str, float]:
        return self._run()

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            version=trt.__version__,
            execution_api="v3",
            engine=str(self.engine_path),
            rebuilt=self.rebuilt,
            gpu=self.identity["gpu"],
            compute_capability=self.identity["compute_capability"],
            build=self.identity["build"],
            timing_cache=str(self.timing_cache) if self.timing_cache else None,
            plan=self.plan,
            tf32=self.plan["tf32"],
            strongly_typed=self.plan["strongly_typed"],
            cuda_context="primary (pycuda.autoprimaryctx)",
        )
        return info

    def _deactivate_impl(self) -> None:
        for _, _, device in self.inputs + self.outputs:
            device.free()
        self.inputs, self.outputs = [], []
        self.context = self.engine = None
