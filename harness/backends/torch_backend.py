"""PyTorch reference backend: the ONNX graph run eagerly as a torch module.

The graph becomes a module through ``onnx2torch`` when installed, else through harness's own small
interpreter of the CNN ops its graphs use. On CUDA it times with CUDA events around the forward
pass, or around the replay of a CUDA graph captured from it (profile ``torch: {cuda_graph: true,
cudnn_benchmark: true}``); on the CPU with ``perf_counter``. The ONNX graph is the
source of truth so that every backend runs the same (folded) network.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import onnx
import torch

from harness.backends.base import LATENCY, Runner
from harness.backends.onnx_to_torch import OnnxModule
from harness.errors import HarnessError, first_line
from harness.layer_profile import LayerProfile, profiled_runs_cap, torch_layer_profile
from harness.outputs import quiet_native
from harness.profiles import Profile

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
WARMUP_RUNS = 3  # a profiling runner's runs before its profiler starts


def _to_module(model: onnx.ModelProto) -> torch.nn.Module:
    try:
        import onnx2torch
    except ImportError:
        return OnnxModule(model)
    return onnx2torch.convert(model)


class TorchRunner(Runner):
    """PyTorch on the GPU for gpu and jetson profiles, on the CPU for cpu ones.

    A GPU profile is refused where torch sees no CUDA device.

    The profile's ``torch`` section selects ``cuda_graph`` (capture the forward pass once into a
    CUDA graph with a static input and output buffer, after a warm-up on a side stream, then time
    its replay with CUDA events) and ``cudnn_benchmark`` (let cuDNN time its algorithms during
    warm-up); both are recorded by ``describe``.
    """

    backend_name = "torch"
    layer_profiler = True

    def __init__(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str = "fp32",
        batch: int = 1,
        cuda_graph: Optional[bool] = None,
        profiling: bool = False,
    ) -> None:
        super().__init__(onnx_path, profile, precision, batch, profiling)
        if precision not in DTYPES:
            raise HarnessError(f"the torch backend runs fp32 or fp16, not {precision}")
        self.cuda_graph = profile.torch.cuda_graph if cuda_graph is None else cuda_graph
        self.cuda_graph = self.cuda_graph and not profiling  # a replay has no layers to record
        self._profiler: Optional[contextlib.ExitStack] = None
        if profile.kind != "cpu" and not torch.cuda.is_available():
            raise HarnessError(
                f"profile {profile.name!r} is for a {profile.kind}, but torch {torch.__version__} "
                "sees no CUDA device: install a CUDA build of torch there, "
                "or time on a cpu profile"
            )
        self.device = torch.device("cpu" if profile.kind == "cpu" else "cuda")
        self.graph = None

    def _activate_impl(self) -> None:
        model = onnx.load(str(self.onnx_path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        self.input_name = model.graph.input[0].name
        self.shape = (self.batch,) + tuple(d.dim_value for d in dims)[
            1:
        ]  # batch resolved by the caller
        dtype = DTYPES[self.precision]
        # profiling: harness's interpreter, which names every ONNX node it runs
        self.module = (OnnxModule(model, True) if self.profiling else _to_module(model)).eval()
        self.module = self.module.to(self.device, dtype)
        self.static_input = torch.randn(self.shape, device=self.device, dtype=dtype)
        self.static_output = None
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.profile.torch.cudnn_benchmark
            self.start, self.end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            if self.cuda_graph:
                self.graph = self._capture()
        elif self.cuda_graph:
            raise HarnessError(
                "cuda_graph: true needs a CUDA GPU and a CUDA build of torch; this runner is on "
                "the CPU (set torch.cuda_graph: false, or use a gpu profile on a GPU)"
            )

        if self.profiling:
            self._prepare_profiling(model)

    def _prepare_profiling(self, model: onnx.ModelProto) -> None:
        """Ready to profile: a few warm-up runs, then ``torch.profiler`` on in each block of runs
        (``start_block``) until ``profiled_runs_cap`` runs are recorded."""
        self._ops = {n.name or n.output[0]: n.op_type for n in model.graph.node}
        self._model, self._cap = model, profiled_runs_cap(len(self.module.names))
        self._profiled: List[float] = []  # the latencies of the runs the profiler recorded
        self._events: List[Any] = []  # the recorded ranges of this graph's nodes
        with torch.no_grad():
            for _ in range(WARMUP_RUNS):  # first calls allocate and pick kernels: not recorded
                self.module(self.static_input)

    def start_block(self) -> None:
        """torch keeps one profiler session per process, recording every op while it is on: a
        profiling runner's session lives through its own block only, never another runner's."""
        if self.profiling and len(self._profiled) < self._cap:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = contextlib.ExitStack()
            with quiet_native():
                self._session = self._profiler.enter_context(
                    torch.profiler.profile(activities=activities)
                )

    def end_block(self) -> None:
        """The block's session off; its node ranges kept."""
        if self._profiler is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            with quiet_native():
                self._profiler.close()
            self._profiler = None
            self._events += [e for e in self._session.events() if e.name in self._ops]

    def _layer_profile_impl(self) -> LayerProfile:
        self.end_block()
        layers = torch_layer_profile(
            self._events,
            self._model,
            self._ops,
            len(self._profiled),
            self.device.type,
            torch.__version__,
        )
        layers.run_ms = statistics.median(self._profiled) if self._profiled else None
        return layers

    @property
    def profiler_in_spans(self) -> bool:
        """On the CPU a node's range holds the profiler's own events; CUDA times are the GPU's."""
        return self.device.type == "cpu"

    def _deactivate_impl(self) -> None:
        self.end_block()
        self.graph = self.module = self.static_input = self.static_output = None

    def _capture(self):
        """Warm up on a side stream (cuDNN picks its algorithms, allocations settle), then capture
        one forward pass reading ``static_input`` and writing ``static_output``; replays reuse both
        buffers."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(3):
                self.module(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph), torch.no_grad():
                self.static_output = self.module(self.static_input)
        except RuntimeError as exc:
            raise HarnessError(
                f"CUDA graph capture of {self.onnx_path} failed ({first_line(exc)}): "
                f"set torch.cuda_graph: false in the profile"
            ) from None
        torch.cuda.synchronize()
        return graph

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {self.input_name: (self.shape, np.dtype(np.float32))}

    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = torch.from_numpy(feeds[self.input_name]).to(self.device, DTYPES[self.precision])
        with torch.no_grad():
            if self.graph is not None:  # the captured graph reads its static input buffer
                self.static_input.copy_(x)
                self.graph.replay()
                out = self.static_output.clone()
            else:
                out = self.module(x)
        return {"output": out.float().cpu().numpy()}

    def _measure_impl(self) -> Dict[str, float]:
        if self._profiler is not None:
            return self._measure_recorded()
        with torch.no_grad():
            if self.device.type == "cuda":
                self.start.record()
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self.module(self.static_input)
                self.end.record()
                self.end.synchronize()
                return {LATENCY: self.start.elapsed_time(self.end)}
            started = time.perf_counter_ns()
            self.module(self.static_input)
            return {LATENCY: (time.perf_counter_ns() - started) / 1e6}

    def _measure_recorded(self) -> Dict[str, float]:
        """A profiled run (its latency includes the profiler's own work)."""
        started = time.perf_counter_ns()
        with torch.no_grad():
            self.module(self.static_input)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self._profiled.append((time.perf_counter_ns() - started) / 1e6)
        return {LATENCY: self._profiled[-1]}

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            version=torch.__version__,
            device=str(self.device),
            cuda_graph=self.graph is not None,
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark)
            if self.device.type == "cuda"
            else None,
            threads=torch.get_num_threads(),
            gpu=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
        )
        return info
