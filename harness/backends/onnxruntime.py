"""ONNX Runtime on the CPU execution provider: the embedded default that runs anywhere."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnxruntime as ort

from harness.backends.base import LATENCY, Runner
from harness.errors import HarnessError, first_line
from harness.layer_profile import LayerProfile, onnxruntime_layer_profile, profiled_runs_cap
from harness.onnx_io import load_model
from harness.profiles import OnnxRuntimeSettings, Profile

ort.set_default_logger_severity(3)  # its C++ warnings would reach the terminal: errors only

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container limits where visible)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(settings: OnnxRuntimeSettings) -> ort.SessionOptions:
    """Session options from a profile's ``onnxruntime`` section.

    Threads, optimisation level, spinning.
    """
    if settings.graph_optimization_level not in _OPT_LEVELS:
        raise HarnessError(
            f"onnxruntime.graph_optimization_level must be one of {', '.join(_OPT_LEVELS)}"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads or available_cores()
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization_level]
    options.log_severity_level = 3
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    return options


def _numeric_dtype(arg: Any, onnx_path: Path) -> np.dtype:
    """The numpy dtype of a session input (``tensor(float)``, ...); harness times numeric inputs
    only (random data of a string or sequence input means nothing)."""
    name = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else arg.type
    try:
        dtype = np.dtype({"float": np.float32, "double": np.float64}.get(name, name))
    except TypeError:
        dtype = np.dtype(object)
    if dtype.kind not in "biuf":
        raise HarnessError(
            f"input {arg.name!r} of {onnx_path} is {arg.type}: harness times models with "
            f"numeric inputs only"
        )
    return dtype


class OnnxRuntimeRunner(Runner):
    """A CPU ``InferenceSession`` with threads set from the profile and recorded.

    With ``profiling=True`` the session profiles (same options otherwise) until its trace holds
    ``profiled_runs_cap`` runs, and keeps the optimised graph it ran, whose tensor names tie ONNX
    Runtime's fused NCHWc nodes to the graph's."""

    backend_name = "onnxruntime"
    layer_profiler = True
    profiler_in_spans = True  # each node's span holds the profiler's bookkeeping

    def __init__(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str = "fp32",
        batch: int = 1,
        profiling: bool = False,
    ) -> None:
        super().__init__(onnx_path, profile, precision, batch, profiling)
        if precision != "fp32":
            raise HarnessError(f"the onnxruntime backend runs fp32 models only, not {precision}")
        self.session = None
        self._folder: Optional[str] = None
        self._trace: Optional[List[Dict[str, Any]]] = None
        self._profiled, self._cap = 0, 0
        self._optimized: Optional[onnx.ModelProto] = None

    def _activate_impl(self) -> None:
        onnx_path = self.onnx_path
        options = session_options(self.profile.onnxruntime)
        self.intra_op_threads = options.intra_op_num_threads
        if self.profiling:
            self._folder = tempfile.mkdtemp(prefix="harness-ort-profile-")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self._folder) / "ort")
            options.optimized_model_filepath = str(Path(self._folder) / "optimized.onnx")
            self._trace, self._profiled = None, 0
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise HarnessError(f"ONNX Runtime cannot load {onnx_path}: {first_line(exc)}") from None
        self._specs = {}
        for arg in self.session.get_inputs():
            shape = list(arg.shape)
            if shape and not isinstance(shape[0], int):
                shape[0] = self.batch  # a dynamic batch: the caller resolved it
            if any(not isinstance(d, int) for d in shape):
                raise HarnessError(
                    f"input {arg.name!r} of {onnx_path} has a dynamic shape {arg.shape}: bind "
                    f"it with --input-shape CxHxW (or --shapes {arg.name}:NxCxHxW), or export "
                    f"with static shapes"
                )
            self._specs[arg.name] = (tuple(shape), _numeric_dtype(arg, onnx_path))
        self._feeds = self.random_inputs()
        quiet = ort.RunOptions()
        quiet.log_severity_level = 4  # the failure is reported below, in one line
        try:  # a graph ONNX Runtime loads but cannot run (a Conv whose group does not divide
            self.session.run(None, self._feeds, quiet)  # its channels) fails here, before timing
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types
            raise HarnessError(
                f"ONNX Runtime cannot run {onnx_path}: {str(exc).strip().splitlines()[0]:.300}"
            ) from None
        if self.profiling:  # the graph ONNX Runtime runs: its nodes' tensors, not its weights
            self._optimized = onnx.load(options.optimized_model_filepath)
            del self._optimized.graph.initializer[:]
            self._cap = profiled_runs_cap(len(self._optimized.graph.node))

    def _deactivate_impl(self) -> None:
        self.session = self._optimized = None
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return dict(self._specs)

    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds)))

    def _measure_impl(self) -> Dict[str, float]:
        start = time.perf_counter_ns()
        self.session.run(None, self._feeds)
        latency = {LATENCY: (time.perf_counter_ns() - start) / 1e6}
        if self.profiling and self._trace is None:
            self._profiled += 1
            if self._profiled >= self._cap:
                self._end_profiling()
        return latency

    def _end_profiling(self) -> None:
        """Stop the session's profiler (later runs are not recorded) and read its trace."""
        self._trace = json.loads(Path(self.session.end_profiling()).read_text())

    def _layer_profile_impl(self) -> LayerProfile:
        if self._trace is None:
            self._end_profiling()
        return onnxruntime_layer_profile(
            self._trace,
            self._optimized,
            load_model(self.onnx_path, infer_shapes=False),
            ort.__version__,
            self.intra_op_threads,
        )

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            version=ort.__version__,
            provider="CPUExecutionProvider",
            intra_op_threads=self.intra_op_threads,
            inter_op_threads=self.profile.onnxruntime.inter_op_threads,
            graph_optimization_level=self.profile.onnxruntime.graph_optimization_level,
            allow_spinning=self.profile.onnxruntime.allow_spinning,
        )
        return info
