"""TensorRT backend: build an engine from ONNX per device profile (cached in ``engines/``), run it
with pycuda.

Supports TensorRT 8.5 (Jetson AGX Xavier, JetPack 5.1, Python 3.8), 10.x and 11.x; the version rules
live in ``harness.backends.trt.versions``. One CUDA context per process, shared by every runner: the
device's primary context, made current by ``pycuda.autoprimaryctx`` (as NVIDIA's 8.5 samples do),
never pushed or popped by a runner. Every TensorRT and CUDA status is checked: a failed enqueue is
an error, never a fast sample.

Timing definitions, as trtexec's (samples/common/sampleReporting.h, ``InferenceTime``):
- H2D latency: the input copies, from an event before them to an event after them;
- GPU compute: from the event after the input copies to the event after ``execute_async_v3``;
- D2H latency: the output copies, from that event to the last one;
- latency = H2D + GPU compute + D2H (trtexec's ``InferenceTime::latency()``);
- enqueue: host time spent in ``execute_async_v3``.
trtexec enqueues queries back to back (and, from 11, by default with CUDA graphs, spin-wait and no
data transfers); harness times one query at a time with a blocking event sync, so its figures
compare with trtexec run with ``--noCudaGraph --noSpinWait --includeDataTransfers`` (what
``trtexec_command`` passes). Engines are built and loaded through NVIDIA's Polygraphy
(``polygraphy.backend.trt`` loaders), which carries the differences between TensorRT 8.5, 10 and 11;
the calls are checked per version against strict doubles of TensorRT 8.5, 10.13 and 11.4
(tests/fake_tensorrt.py). Polygraphy's ``TrtRunner`` is not used for timing: it times ``infer()`` on
the host around its own cudart (ctypes) copies and gives no split into H2D, GPU compute and D2H, so
the loop below stays ours, on pycuda.
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

from polygraphy.backend.trt import (
    CreateConfig,
    EngineBytesFromNetwork,
    EngineFromBytes,
    NetworkFromOnnxPath,
    PostprocessConfig,
    get_trt_logger,
)
from polygraphy.backend.trt import Profile as ShapeProfile
from polygraphy.exception import PolygraphyException
from polygraphy.logger import G_LOGGER

from harness.backends.base import LATENCY, Runner
from harness.backends.trt.cache import BuildSettings, EngineCache, engine_identity, file_sha256
from harness.backends.trt.versions import RANDOM_CALIBRATION_WARNING, build_plan
from harness.errors import HarnessError
from harness.profiles import Profile

log = logging.getLogger(__name__)
# Polygraphy prints to stdout by default, which would corrupt ``--json`` output: route it through
# logging (the "Polygraphy" logger, to stderr at the CLI's level), without colour codes.
G_LOGGER.use_python_logging_system = True
G_LOGGER.colors = G_LOGGER.letter = False


# --- pure decisions (no TensorRT objects) ---------------------------------------------------------
def profile_shapes(
    shape: Sequence[int], settings: BuildSettings
) -> Optional[Tuple[Tuple[int, ...], ...]]:
    """(min, opt, max) for an input whose batch dimension is dynamic; None when static. DLA: min =
    opt = max."""
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


def calibration_batches(
    shape: Sequence[int], data_dir: Optional[str], count: int
) -> List[np.ndarray]:
    """INT8 calibration inputs: every ``.npy`` in ``data_dir`` (each one batch of ``shape``), or,
    with a warning, ``count`` batches of seeded standard-normal data."""
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


# --- TensorRT, through Polygraphy's loaders -------------------------------------------------------
def _calibrator(batches: List[np.ndarray], cache_path: Path):
    """An IInt8EntropyCalibrator2 that copies ``batches`` to the GPU one by one and keeps its table
    on disk."""

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
    """Parse the ONNX file and build a serialized engine through Polygraphy's loaders.

    Polygraphy (NVIDIA's) makes the network (explicit batch before 10, strongly typed on 11), the
    config (precision flags, TF32, memory pool, optimization profiles, calibrator and its profile,
    DLA, timing cache) and the engine; ``build_plan`` decides what this TensorRT version gets. Two
    pieces stay ours: the DLA core (Polygraphy's ``use_dla`` always picks core 0) and the INT8
    calibrator (Polygraphy's allocates through its own ctypes cudart; ours uses pycuda on the one
    primary context).
    """
    plan = build_plan(settings, trt.__version__)
    for note in plan["notes"]:
        log.warning(note)
    errors = _ErrorLog()
    logging.getLogger("Polygraphy").addHandler(errors)
    try:
        builder, network, parser = NetworkFromOnnxPath(
            str(onnx_path), strongly_typed=plan["strongly_typed"] or None
        )()
    except PolygraphyException as exc:
        reasons = "; ".join(errors.messages) or _first_line(exc)
        raise HarnessError(f"TensorRT cannot parse {onnx_path}: {reasons}") from None
    finally:
        logging.getLogger("Polygraphy").removeHandler(errors)
    if settings.dla_core is not None and settings.dla_core >= builder.num_DLA_cores:
        raise HarnessError(
            f"DLA core {settings.dla_core} requested, this device has {builder.num_DLA_cores}"
        )
    shapes = ShapeProfile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = profile_shapes(tuple(tensor.shape), settings)
        if dims is not None:
            shapes.add(tensor.name, *dims)
    calibrator = None
    if "INT8" in plan["flags"]:
        shape = (settings.batch,) + tuple(network.get_input(0).shape)[1:]
        batches = calibration_batches(
            shape, profile.tensorrt.int8_calibration_dir, profile.tensorrt.int8_calibration_batches
        )
        calibrator = _calibrator(batches, calibration_cache or Path("calibration.cache"))
    cache = str(timing_cache) if timing_cache is not None else None
    create = CreateConfig(
        tf32=plan["tf32"],
        fp16="FP16" in plan["flags"],
        int8="INT8" in plan["flags"],
        profiles=[shapes],
        calibrator=calibrator,
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: settings.workspace_mib << 20},
        load_timing_cache=cache if timing_cache is not None and timing_cache.is_file() else None,
        builder_optimization_level=(
            settings.builder_optimization_level if plan["optimization_level"] else None
        ),
        use_dla=settings.dla_core is not None,
        allow_gpu_fallback=settings.gpu_fallback,
    )

    def dla_core(builder: Any, network: Any, config: Any) -> None:
        config.DLA_core = settings.dla_core

    config = create if settings.dla_core is None else PostprocessConfig(create, dla_core)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        serialized = EngineBytesFromNetwork(
            (builder, network, parser), config=config, save_timing_cache=cache
        )()
    except PolygraphyException as exc:
        raise HarnessError(
            f"TensorRT failed to build an engine for {onnx_path}: {_first_line(exc)}"
        ) from None
    return bytes(serialized)


class _ErrorLog(logging.Handler):
    """Keeps the errors Polygraphy logs (the ONNX parser's, one per failing node) for the one-line
    error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check(ok: Any, what: str) -> None:
    """TensorRT's Python API reports failures as False/None: turn them into errors."""
    if ok is False or ok is None:
        raise HarnessError(f"TensorRT: {what} failed")


class TensorRTRunner(Runner):
    """A cached engine with page-locked host buffers, one stream and CUDA events around the device
    work."""

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
        runtime = trt.Runtime(get_trt_logger())
        if self.settings.dla_core is not None:  # the engine runs on the DLA core it was built for
            runtime.DLA_core = self.settings.dla_core
        try:
            self.engine = EngineFromBytes(self.engine_path.read_bytes(), runtime=runtime)()
        except PolygraphyException:  # e.g. a plan from another TensorRT: never run it, rebuild
            self.cache.discard(self.identity)
            raise HarnessError(
                f"TensorRT could not load {self.engine_path}; it was removed, run again to rebuild"
            ) from None
        self.context = self.engine.create_execution_context()
        _check(self.context, "create_execution_context")
        self.stream = cuda.Stream()
        self._allocate()
        self.events = [cuda.Event() for _ in range(4)]

    def _allocate(self) -> None:
        """Bind every I/O tensor by name (all versions): dynamic batch set, buffers allocated,
        addresses set."""
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
