"""TensorRT backend: build an engine from ONNX per device profile (cached in ``engines/``), run it with pycuda.

Supports TensorRT 8.5 (Jetson Xavier, JetPack 5.1, Python 3.8) and 10.x. Timing follows trtexec: end-to-end
latency (H2D + GPU compute + D2H) from CUDA events, GPU compute alone, and the host's enqueue time, reported
separately. Needs ``tensorrt`` and ``pycuda`` (``pip install .[tensorrt]`` or JetPack's python3-libnvinfer).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from harness.backends.base import LATENCY, Runner
from harness.backends.trt_config import (
    BuildSettings,
    cache_identity,
    cached_engine,
    execution_api,
    sha256_file,
    version_tuple,
)
from harness.errors import HarnessError
from harness.onnx_io import write_text_atomic
from harness.profiles import Profile

ENGINE_DIR = Path(__file__).resolve().parent.parent.parent / "engines"
LOGGER = trt.Logger(trt.Logger.WARNING)
log = logging.getLogger(__name__)


def _calibrator(shape: Tuple[int, ...], data_dir: Optional[Path], cache_path: Path, batches: int = 16):
    """An entropy calibrator fed from ``.npy`` files (each one input batch) or, with a warning, random data."""
    if data_dir is not None:
        files = sorted(Path(data_dir).glob("*.npy"))
        if not files:
            raise HarnessError(f"no .npy calibration inputs in {data_dir}")
        data = [np.load(f).astype(np.float32).reshape(shape) for f in files]
    else:
        warnings.warn("INT8 calibration with random data: latency is representative, accuracy is not",
                      stacklevel=2)
        rng = np.random.default_rng(0)
        data = [rng.standard_normal(shape).astype(np.float32) for _ in range(batches)]

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.device = cuda.mem_alloc(data[0].nbytes)

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names):  # noqa: ARG002 - one input
            if self.index >= len(data):
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(data[self.index]))
            self.index += 1
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(onnx_path: Path, settings: BuildSettings, timing_cache: Optional[Path],
                 calibration_dir: Optional[Path] = None) -> bytes:
    """Parse the ONNX file and build a serialized engine with the given settings."""
    major = version_tuple(trt.__version__)[0]
    builder = trt.Builder(LOGGER)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, LOGGER)
    if not parser.parse(Path(onnx_path).read_bytes(), str(onnx_path)):
        problems = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            node = error.node_name() if hasattr(error, "node_name") else f"node #{error.node()}"
            problems.append(f"{node}: {error.desc()}")
        raise HarnessError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(problems))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if hasattr(config, "builder_optimization_level"):  # TensorRT 8.6+
        config.builder_optimization_level = settings.builder_optimization_level
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif settings.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        shape = tuple(network.get_input(0).shape)
        config.int8_calibrator = _calibrator((settings.batch,) + shape[1:], calibration_dir,
                                             ENGINE_DIR / f"{Path(onnx_path).stem}.calib")
    if settings.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        if settings.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if any(d < 0 for i in range(network.num_inputs) for d in network.get_input(i).shape):
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            fixed = (settings.batch,) + tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, (1,) + fixed[1:], fixed, fixed)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise HarnessError(f"TensorRT failed to build an engine for {onnx_path} (see the log above)")
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _gpu() -> Tuple[str, str]:
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return device.name(), f"{major}.{minor}"


class TensorRTRunner(Runner):
    """A cached engine with page-locked host buffers, one stream and CUDA events around the device work."""

    backend_name = "tensorrt"

    def __init__(self, onnx_path: Path, profile: Profile, precision: str = "fp16", batch: int = 1) -> None:
        super().__init__(onnx_path, profile, precision, batch)
        cuda.init()
        self.cuda_context = cuda.Device(0).make_context()
        self.settings = BuildSettings.from_profile(profile, precision, batch)
        gpu, capability = _gpu()
        identity = cache_identity(sha256_file(onnx_path), self.settings, trt.__version__, gpu, capability)
        ENGINE_DIR.mkdir(exist_ok=True)
        engine_path, usable = cached_engine(ENGINE_DIR, Path(onnx_path).stem, identity)
        if not usable:  # missing, stale or built elsewhere: rebuild, never run it
            timing_cache = ENGINE_DIR / "timing.cache" if profile.tensorrt.timing_cache else None
            engine_path.write_bytes(build_engine(onnx_path, self.settings, timing_cache))
            write_text_atomic(engine_path.with_suffix(".json"), json.dumps(identity, indent=1))
        self.identity, self.engine_path = identity, engine_path
        self.engine = trt.Runtime(LOGGER).deserialize_cuda_engine(engine_path.read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.api = execution_api(trt.__version__)
        self.inputs, self.outputs = self._allocate()
        self.events = [cuda.Event() for _ in range(4)]

    def _tensors(self) -> List[Tuple[str, bool, Tuple[int, ...], np.dtype]]:
        found = []
        if self.api == "v3":
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                shape = tuple(self.engine.get_tensor_shape(name))
                if is_input and any(d < 0 for d in shape):
                    shape = (self.batch,) + shape[1:]
                    self.context.set_input_shape(name, shape)
                found.append((name, is_input, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))))
        else:
            for i in range(self.engine.num_bindings):
                shape = tuple(self.engine.get_binding_shape(i))
                if self.engine.binding_is_input(i) and any(d < 0 for d in shape):
                    shape = (self.batch,) + shape[1:]
                    self.context.set_binding_shape(i, shape)
                found.append((self.engine.get_binding_name(i), self.engine.binding_is_input(i), shape,
                              np.dtype(trt.nptype(self.engine.get_binding_dtype(i)))))
        return found

    def _allocate(self):
        inputs, outputs = [], []
        self.bindings: List[int] = []
        for name, is_input, shape, dtype in self._tensors():
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype).reshape(shape)
            device = cuda.mem_alloc(host.nbytes)
            self.bindings.append(int(device))
            if self.api == "v3":
                self.context.set_tensor_address(name, int(device))
            (inputs if is_input else outputs).append((name, host, device))
        rng = np.random.default_rng(0)
        for _, host, _ in inputs:
            host[...] = rng.standard_normal(host.shape).astype(host.dtype)
        return inputs, outputs

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {name: (host.shape, host.dtype) for name, host, _ in self.inputs}

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
        enqueue_ms = (time.perf_counter() - enqueue_start) * 1000
        after_compute.record(self.stream)
        for _, host, device in self.outputs:
            cuda.memcpy_dtoh_async(host, device, self.stream)
        end.record(self.stream)
        self.stream.synchronize()
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
                    gpu=self.identity["gpu"], compute_capability=self.identity["compute_capability"],
                    build=self.identity["build"])
        return info

    def close(self) -> None:
        self.cuda_context.pop()
