"""Engine building for the TensorRT backend, through NVIDIA's Polygraphy loaders.

``build_plan`` (versions.py) decides what a TensorRT version gets; Polygraphy makes the network
(explicit batch before 10, strongly typed on 11), the config (precision flags, TF32, memory pool,
optimization profiles, calibrator and its profile, DLA, timing cache) and the serialized engine.
Runs on the device: Python 3.8, no torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

# isort: off
import tensorrt as trt  # before pycuda, so that a machine with neither is told about TensorRT first
import pycuda.driver as cuda
import pycuda.autoprimaryctx  # noqa: F401 - the primary context, current for the whole process
# isort: on

from polygraphy.backend.trt import (
    CreateConfig,
    EngineBytesFromNetwork,
    NetworkFromOnnxPath,
    PostprocessConfig,
)
from polygraphy.backend.trt import Profile as ShapeProfile
from polygraphy.exception import PolygraphyException
from polygraphy.logger import G_LOGGER

from harness.backends.trt.cache import PROFILING_VERBOSITY, BuildSettings
from harness.backends.trt.prepare import calibration_batches  # shared with the Q/DQ route
from harness.backends.trt.versions import build_plan
from harness.errors import HarnessError, first_line
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
    DLA, timing cache, detailed profiling verbosity) and the engine; ``build_plan`` decides what
    this TensorRT version gets. Two pieces stay ours: the DLA core (Polygraphy's ``use_dla``
    always picks core 0) and the INT8 calibrator (Polygraphy's allocates through its own ctypes
    cudart; ours uses pycuda on the one primary context).
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
        reasons = "; ".join(errors.messages) or first_line(exc)
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
        static = tuple(tensor.shape)  # static inputs named too, or Polygraphy warns it guessed
        shapes.add(tensor.name, *(profile_shapes(static, settings) or (static, static, static)))
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
        # detailed layer information for IEngineInspector (the cache identity says why)
        profiling_verbosity=getattr(trt.ProfilingVerbosity, PROFILING_VERBOSITY),
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
            f"TensorRT failed to build an engine for {onnx_path}: {first_line(exc)}"
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
