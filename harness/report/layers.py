"""Per-layer view from ONNX Runtime's profiler: where the time goes, before and after folding."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import onnxruntime as ort

from harness.report.formats import markdown_table
from harness.results import Results

Layer = Tuple[str, str, float]  # node name, op type, median ms per inference


def profile_layers(onnx_path: str, runs: int = 30) -> List[Layer]:
    """Median time per node over ``runs`` inferences (ONNX Runtime CPU, profiling on), slowest
    first."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "layers")
        options.log_severity_level = 3
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        feeds = {
            i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
            for i in session.get_inputs()
        }
        for _ in range(runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            node = event["name"][: -len("_kernel_time")]
            op = event.get("args", {}).get("op_name", "?")
            durations[(node, op)].append(event["dur"] / 1000.0)
    medians = [(name, op, float(np.median(d))) for (name, op), d in durations.items()]
    return sorted(medians, key=lambda x: -x[2])


def layers_markdown(results: Results, top: int = 5) -> str:
    """Top layers by time of each graph in an ONNX Runtime results file, unfolded next to folded."""
    lines = [
        f"# Where the time goes (ONNX Runtime profiler on this machine, top {top} layers per "
        "graph)",
        "",
    ]
    for run in results.runs:
        if not run.onnx or not Path(run.onnx).is_file():
            continue
        layers = profile_layers(run.onnx)
        total = sum(ms for _, _, ms in layers)
        lines += [
            f"## {run.id} ({len(layers)} nodes, {total:.3f} ms in kernels)",
            "",
        ]
        rows = [[name, op, f"{ms:.4f}", f"{ms / total:.1%}"] for name, op, ms in layers[:top]]
        lines += markdown_table(["node", "op", "ms", "share"], rows)
        lines.append("")
    return "\n".join(lines)
