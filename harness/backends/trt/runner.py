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
``trtexec_command`` passes). Engines are built (``build.py``) and loaded through NVIDIA's Polygraphy
(``polygraphy.backend.trt`` loaders), which carries the differences between TensorRT 8.5, 10 and 11;
the calls are checked per version against strict doubles of TensorRT 8.5, 10.13 and 11.4
(tests/fake_tensorrt.py). Polygraphy's ``TrtRunner`` is not used for timing: it times ``infer()`` on
the host around its own cudart (ctypes) copies and gives no split into H2D, GPU compute and D2H, so
the loop below stays ours, on pycuda.

Per-layer profile: a runner made with ``profiling=True`` (``harness.measure`` times one beside the
timed runner, interleaved) carries TensorRT's ``IProfiler`` on its execution context (a timed
runner's context never does: with one, each enqueue records per-layer events); ``layer_profile``
joins its reports with the engine's ``IEngineInspector`` JSON.
``enqueue_emits_profile`` is turned off and ``report_to_profiler()`` called after each run's sync,
as trtexec does (samples/common/sampleInference.cpp): with the default (on) TensorRT makes the
enqueue synchronous and reports inside ``execute_async_v3`` (NvInferRuntime.h,
``setEnqueueEmitsProfile``). The layer information needs an engine built with detailed profiling
verbosity: every engine here is (``cache.PROFILING_VERBOSITY``).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

# isort: off
import tensorrt as trt  # before pycuda, so that a machine with neither is told about TensorRT first
import pycuda.driver as cuda
import pycuda.autoprimaryctx  # noqa: F401 - the primary context, current for the whole process
# isort: on

from polygraphy.backend.trt import EngineFromBytes, get_trt_logger
from polygraphy.exception import PolygraphyException

from harness.backends.base import LATENCY, Runner
from harness.backends.trt.build import build_engine
from harness.backends.trt.cache import BuildSettings, EngineCache, engine_identity, file_sha256
from harness.backends.trt.versions import build_plan
from harness.errors import HarnessError
from harness.layer_profile import (
    LayerProfile,
    profile_records,
    profiled_runs_cap,
    trt_layer_profile,
)
from harness.onnx_io import load_model
from harness.profiles import Profile

log = logging.getLogger(__name__)


def _check(ok: Any, what: str) -> None:
    """TensorRT's Python API reports failures as False/None: turn them into errors."""
    if ok is False or ok is None:
        raise HarnessError(f"TensorRT: {what} failed")


class _LayerTimes(trt.IProfiler):
    """Keeps TensorRT's per-layer reports in the order made (TensorRT calls it from C++, which
    swallows any exception: keep it trivial)."""

    def __init__(self) -> None:
        trt.IProfiler.__init__(self)  # pybind11: a subclass must initialise its base
        self.reports: List[Tuple[str, float]] = []

    def report_layer_time(self, layer_name: str, ms: float) -> None:
        self.reports.append((layer_name, ms))


class TensorRTRunner(Runner):
    """A cached engine with page-locked host buffers, one stream and CUDA events around the device
    work."""

    backend_name = "tensorrt"
    layer_profiler = True

    def __init__(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str = "fp16",
        batch: int = 1,
        cache: Optional[EngineCache] = None,
        profiling: bool = False,
    ) -> None:
        super().__init__(onnx_path, profile, precision, batch, profiling)
        self.settings = BuildSettings.from_profile(profile, precision, batch)
        self.cache = cache or EngineCache()
        self.engine = self.context = None
        self.inputs: List[Tuple[str, np.ndarray, Any]] = []
        self.outputs: List[Tuple[str, np.ndarray, Any]] = []
        self._recorder: Optional[_LayerTimes] = None
        self._profiled: List[float] = []  # the latencies of the runs the profiler reported

    def _activate_impl(self) -> None:
        device = cuda.Device(0)
        self.plan = build_plan(self.settings, trt.__version__)
        capability = "{}.{}".format(*device.compute_capability())
        built_from, self.prepared = self.onnx_path, None
        if self.plan["onnx_precision"] != "fp32":  # strongly typed: the graph carries the precision
            from harness.backends.trt.prepare import strongly_typed_onnx

            built_from, self.prepared = strongly_typed_onnx(
                self.onnx_path, self.precision, self.profile, self.batch, self.cache.directory
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
        if self.profiling:
            self._recorder, self._profiled = _LayerTimes(), []
            self._cap = profiled_runs_cap(
                len(load_model(self.onnx_path, infer_shapes=False).graph.node)
            )
            self.context.profiler = self._recorder
            self.context.enqueue_emits_profile = False

    def _allocate(self) -> None:
        """Allocate a buffer per I/O tensor (dynamic batch set first) and bind them all by name
        (all versions)."""
        engine, context = self.engine, self.context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._set_shapes(context, inputs)
        rng = np.random.default_rng(0)
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            host = cuda.pagelocked_empty(shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            device = cuda.mem_alloc(max(host.nbytes, 1))
            if name in inputs:
                host[...] = rng.standard_normal(host.shape).astype(host.dtype)
                self.inputs.append((name, host, device))
            else:
                self.outputs.append((name, host, device))
        self._bind(context)

    def _set_shapes(self, context: Any, inputs: List[str]) -> None:
        """The batch of every input whose batch dimension is dynamic."""
        for name in inputs:
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                _check(
                    context.set_input_shape(name, (self.batch,) + shape[1:]),
                    f"set_input_shape({name})",
                )

    def _bind(self, context: Any) -> None:
        """Point ``context`` at this runner's device buffers."""
        for name, _, device in self.inputs + self.outputs:
            _check(context.set_tensor_address(name, int(device)), f"set_tensor_address({name})")

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {name: (tuple(host.shape), host.dtype) for name, host, _ in self.inputs}

    def _run(self) -> Dict[str, float]:
        context = self.context
        start, after_h2d, after_compute, end = self.events
        start.record(self.stream)
        for _, host, device in self.inputs:
            cuda.memcpy_htod_async(device, host, self.stream)
        after_h2d.record(self.stream)
        enqueue_start = time.perf_counter()
        ok = context.execute_async_v3(self.stream.handle)
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
        measured = self._run()
        if self._recorder is not None and len(self._profiled) < self._cap:
            _check(self.context.report_to_profiler(), "report_to_profiler")
            self._profiled.append(measured[LATENCY])
        return measured

    def layer_data(self) -> Tuple[str, List[Dict[str, Any]]]:
        """(the engine's ``IEngineInspector`` JSON text, the profiler's reports so far as trtexec's
        ``--exportProfile`` records)."""
        inspector = self.engine.create_engine_inspector()
        _check(inspector, "create_engine_inspector")
        inspector.execution_context = self.context  # concrete shapes and formats for dynamic inputs
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        if not self._recorder.reports:
            raise HarnessError("TensorRT reported no layer times to the profiler")
        return str(info), profile_records(self._recorder.reports)

    def _layer_profile_impl(self) -> LayerProfile:
        """TensorRT's own per-layer profile of the runs so far (``layer_data``), joined by
        ``layer_profile.trt_layer_profile`` (the join trtexec's exports go through) and tied to
        the ONNX file's nodes."""
        info, records = self.layer_data()
        layers = trt_layer_profile(
            records,
            info,
            load_model(self.onnx_path, infer_shapes=False),
            trt.__version__,
            f"TensorRT {trt.__version__} IProfiler + IEngineInspector (tensorrt runner)",
        )
        layers.run_ms = statistics.median(self._profiled)
        return layers

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
            prepared_graph=self.prepared,
            cuda_context="primary (pycuda.autoprimaryctx)",
        )
        return info

    def _deactivate_impl(self) -> None:
        for _, _, device in self.inputs + self.outputs:
            device.free()
        self.inputs, self.outputs = [], []
        self.context = self.engine = None
