"""How much memory a graph needs, per backend, each figure with how it was measured.

- ONNX: the file's bytes (external data included) and its weights' bytes (initializers and
  Constant nodes, from their shapes and element types, without loading external data);
- TensorRT: the serialized engine's bytes and the activation memory the engine asks for
  (``ICudaEngine.device_memory_size_v2`` on 10.x/11.x, ``device_memory_size`` on 8.5);
- torch on CUDA: ``torch.cuda.max_memory_allocated`` over the inferences run;
- CPU (ONNX Runtime): the peak resident set (``VmHWM``, else ``ru_maxrss``) of a child process
  that loads and runs only this graph, and that peak less the child's own after importing
  onnxruntime (the graph's share): measured apart from the parent, whose RSS holds every other
  graph of the suite;
- Jetson (shared CPU/GPU RAM): the system's RAM in use (``MemTotal - MemAvailable``).

Runs on the device: Python 3.8 compatible, no torch at import (``torch_cuda_peak`` imports it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import onnx
from onnx import helper

from harness.errors import HarnessError
from harness.memory_child import SETTLED_RUNS
from harness.results import MemoryFigure

PathLike = Union[str, Path]
CHILD_ITERATIONS = 20


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def onnx_memory(path: PathLike) -> Dict[str, MemoryFigure]:
    """File bytes (with external data files) and weight bytes of an ONNX graph."""
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, truncated files, ...
        raise HarnessError(f"{path} is not a readable ONNX file ({exc})") from None
    graph = model.graph
    tensors = list(graph.initializer) + [
        attr.t for node in graph.node if node.op_type == "Constant" for attr in node.attribute
        if attr.type == onnx.AttributeProto.TENSOR
    ]  # fmt: skip
    external = {
        entry.value
        for tensor in graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    file_bytes = path.stat().st_size + sum(
        (path.parent / name).stat().st_size for name in external if (path.parent / name).is_file()
    )
    return {
        "onnx_file": MemoryFigure(file_bytes, "size of the .onnx file and its external data"),
        "weights": MemoryFigure(
            sum(_tensor_bytes(t) for t in tensors),
            "initializers and Constant tensors: element count x element size",
        ),
    }


def engine_memory(engine: Any, serialized_bytes: Optional[int] = None) -> Dict[str, MemoryFigure]:
    """Serialized size and activation memory of a TensorRT engine (``device_memory_size_v2``
    where the version has it, else ``device_memory_size``)."""
    figures = {}
    if serialized_bytes is not None:
        figures["engine_file"] = MemoryFigure(serialized_bytes, "size of the serialized engine")
    for member in ("device_memory_size_v2", "device_memory_size"):
        if hasattr(engine, member):
            value = getattr(engine, member)
            if value is not None:
                figures["activation"] = MemoryFigure(
                    int(value), f"ICudaEngine.{member} (execution context scratch memory)"
                )
            break
    return figures


def torch_cuda_peak(run: Callable[[], Any], iterations: int = CHILD_ITERATIONS) -> MemoryFigure:
    """``torch.cuda.max_memory_allocated`` over ``iterations`` calls of ``run`` (weights and
    activations torch allocated, not the caching allocator's reserve)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(iterations):
        run()
    torch.cuda.synchronize()
    return MemoryFigure(
        int(torch.cuda.max_memory_allocated()),
        f"torch.cuda.max_memory_allocated over {iterations} inferences",
    )


def cpu_peak_rss(
    onnx_path: PathLike, threads: int = 1, iterations: int = CHILD_ITERATIONS
) -> Dict[str, MemoryFigure]:
    """Peak resident memory of a child process that runs only this graph in ONNX Runtime (CPU),
    and its share above the child's own after importing onnxruntime."""
    # run as a script, not a module of the package: the child imports numpy and onnxruntime only
    child = str(Path(__file__).with_name("memory_child.py"))
    argv = [sys.executable, child, str(onnx_path), str(threads), str(iterations)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"memory of {onnx_path}: the child process failed ({last})")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    how = (
        f"peak resident set ({figures['counter']}) of a child process that loads this graph in "
        f"ONNX Runtime (CPU, {threads} threads) and runs it until its peak holds for "
        f"{SETTLED_RUNS} runs ({figures['runs']} runs, at most {iterations})"
    )
    return {
        "peak_rss": MemoryFigure(figures["peak"], how),
        "graph_rss": MemoryFigure(
            max(0, figures["peak"] - figures["baseline"]),
            how + ", less its peak after importing onnxruntime and numpy",
        ),
    }


def graph_memory(
    onnx_path: PathLike, runner: Any, kind: str, threads: int = 1
) -> Tuple[Dict[str, MemoryFigure], List[str]]:
    """Every figure the device and the runner's backend offer for one graph, the runner active:
    ONNX bytes; a TensorRT runner's engine; a torch runner's CUDA peak; on a CPU device the child
    process's peak; on a Jetson the shared RAM in use. And what could not be measured, and why."""
    figures: Dict[str, MemoryFigure] = {}
    problems: List[str] = []
    measures: List[Tuple[str, Callable[[], Dict[str, MemoryFigure]]]] = [
        ("ONNX bytes", lambda: onnx_memory(onnx_path))
    ]
    engine = getattr(runner, "engine", None)
    if engine is not None:
        plan = getattr(runner, "engine_path", None)
        size = Path(plan).stat().st_size if plan else None
        measures.append(("engine memory", lambda: engine_memory(engine, size)))
    if getattr(getattr(runner, "device", None), "type", None) == "cuda":
        measures.append(
            ("CUDA peak", lambda: {"cuda_max_allocated": torch_cuda_peak(runner.measure_once)})
        )
    if kind == "cpu":
        measures.append(("peak RSS", lambda: cpu_peak_rss(onnx_path, threads)))
    if kind == "jetson":
        measures.append(("shared RAM", _shared_ram))
    for what, measure in measures:
        try:
            figures.update(measure())
        except (HarnessError, OSError, ValueError, subprocess.SubprocessError) as exc:
            problems.append(f"memory: {what} not measured ({exc})")
    return figures, problems


def _shared_ram() -> Dict[str, MemoryFigure]:
    in_use = system_ram_in_use()
    if in_use is None:
        return {}
    how = "MemTotal - MemAvailable (/proc/meminfo) with the model's graphs loaded"
    return {"system_ram_in_use": MemoryFigure(in_use, how)}


def system_ram_in_use(meminfo: PathLike = "/proc/meminfo") -> Optional[int]:
    """``MemTotal - MemAvailable`` in bytes (on a Jetson the RAM CPU and GPU share), None where
    /proc/meminfo does not say."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[name] = int(words[0]) * (1024 if words[1:2] == ["kB"] else 1)
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return values["MemTotal"] - values["MemAvailable"]
