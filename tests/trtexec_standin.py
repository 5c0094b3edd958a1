"""A stand-in for NVIDIA's trtexec, one per TensorRT version, for tests on machines without
TensorRT.

What it copies from the real binary (sources: NVIDIA/TensorRT, per release branch, see
tests/data/trt/trtexec_flags.json):
- the options each version parses (sampleOptions.cpp); anything else prints "Unknown option: <name>
  <value>", the help, "&&&& FAILED" and exits 1 (trtexec.cpp main);
- the banner "&&&& RUNNING TensorRT.trtexec [TensorRT v<NV_TENSORRT_VERSION>] # <command>"
  (common/logging.h);
- "Static model does not take explicit shapes ..." for shape flags on a static model
  (sampleEngines.cpp);
- the --exportTimes JSON records (sampleReporting.cpp exportJSONTrace) and the --exportOutput
  layout;
- the --exportProfile layout (exportJSONProfile: a {"count"} record, then name, timeMs,
  averageMs, medianMs, percentage per layer) and the --exportLayerInfo layout of each version
  (IEngineInspector JSON: 8.5 "Layers" + "Bindings"; 10.x adds "Metadata" "[ONNX Layer: n]"
  records; 11.x "I/O Tensors" objects instead of "Bindings"; names only unless
  --profilingVerbosity=detailed), one "layer" per ONNX node.
What it does not copy: TensorRT itself. The "engine" is the ONNX file run by ONNX Runtime on the
CPU, so the times it writes are ONNX Runtime's: they exercise harness's plumbing and are never
figures of TensorRT.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

FLAGS = json.loads((Path(__file__).parent / "data" / "trt" / "trtexec_flags.json").read_text())
VERSIONS = tuple(FLAGS["versions"])
SHAPE_FLAGS = ("--shapes", "--minShapes", "--optShapes", "--maxShapes")


def install(folder: Path, version: str) -> Path:
    """Write an executable ``trtexec`` for ``version`` into ``folder``; returns its path."""
    if version not in FLAGS["versions"]:
        raise ValueError(f"no trtexec data for {version}; known: {', '.join(VERSIONS)}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trtexec"
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"from trtexec_standin import main\nsys.exit(main({version!r}, sys.argv[1:]))\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _arguments(argv: List[str]) -> List[Tuple[str, str]]:
    """trtexec's argsToArgumentsMap: '--name=value' -> (name, value), '--flag' -> (flag, '')."""
    pairs = []
    for arg in argv:
        name, _, value = arg.partition("=")
        pairs.append((name, value))
    return pairs


def _shapes(spec: str) -> Dict[str, Tuple[int, ...]]:
    """'input:4x3x32x32,other:1x8' -> {name: shape}."""
    found = {}
    for item in filter(None, spec.split(",")):
        name, _, dims = item.rpartition(":")
        found[name] = tuple(int(d) for d in dims.split("x"))
    return found


def _session_and_feeds(onnx_path: str, options: Dict[str, str]):
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    bound = _shapes(options.get("--shapes", ""))
    rng = np.random.default_rng(0)
    feeds, dynamic = {}, False
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else None for d in arg.shape]
        dynamic = dynamic or None in shape
        shape = list(bound.get(arg.name, [1 if d is None else d for d in shape]))
        dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
        feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
    for name, path in (
        item.split(":", 1) for item in filter(None, options.get("--loadInputs", "").split(","))
    ):
        feeds[name] = np.fromfile(path, dtype=feeds[name].dtype).reshape(feeds[name].shape)
    return session, feeds, dynamic


def _records(session, feeds, options: Dict[str, str]) -> List[Dict[str, float]]:
    """Timed queries in exportJSONTrace's layout; compute is ONNX Runtime's wall time, H2D/D2H are
    0."""
    iterations = int(options.get("--iterations", "10"))
    duration_s = float(options.get("--duration", "3"))
    warmup_s = float(options.get("--warmUp", "200")) / 1000.0
    started = time.perf_counter()
    while time.perf_counter() - started < warmup_s:
        session.run(None, feeds)
    records, origin = [], time.perf_counter()
    while len(records) < iterations or time.perf_counter() - origin < duration_s:
        begin = (time.perf_counter() - origin) * 1000.0
        session.run(None, feeds)
        end = (time.perf_counter() - origin) * 1000.0
        records.append(
            {
                "startEnqMs": begin,
                "endEnqMs": begin + 0.001,
                "startH2dMs": begin,
                "endH2dMs": begin,
                "startComputeMs": begin,
                "endComputeMs": end,
                "startD2hMs": end,
                "endD2hMs": end,
                "h2dMs": 0.0,
                "computeMs": end - begin,
                "d2hMs": 0.0,
                "latencyMs": end - begin,
            }
        )
        if len(records) >= 100000:
            break
    return records


def _summary(records: List[Dict[str, float]], percentiles: List[float]) -> List[str]:
    lines = []
    for title, key in (("Latency", "latencyMs"), ("GPU Compute Time", "computeMs")):
        values = np.sort([r[key] for r in records])
        parts = [
            f"min = {values[0]:.5f} ms",
            f"max = {values[-1]:.5f} ms",
            f"mean = {values.mean():.5f} ms",
            f"median = {np.median(values):.5f} ms",
        ]
        for p in percentiles:
            rank = min(len(values) - 1, max(0, int(np.ceil(p / 100 * len(values))) - 1))
            parts.append(f"percentile({p:g}%) = {values[rank]:.5f} ms")
        lines.append(f"[I] {title}: " + ", ".join(parts))
    total_s = (records[-1]["endD2hMs"] - records[0]["startEnqMs"]) / 1000.0
    lines.insert(0, f"[I] Throughput: {len(records) / max(total_s, 1e-9):.4f} qps")
    return lines


def main(version: str, argv: List[str]) -> int:
    """Behave as trtexec of ``version`` would on ``argv``; returns the exit code."""
    entry = FLAGS["versions"][version]
    command = " ".join(["trtexec"] + argv)
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
    pairs = _arguments(argv)
    if any(name in ("--help", "-h") for name, _ in pairs):
        print("=== Model Options ===  (stand-in help)")
        return 0
    unknown = [(name, value) for name, value in pairs if name not in entry["options"]]
    if unknown:
        for name, value in unknown:
            print(f"[E] Unknown option: {name} {value}")
        print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
        return 1
    options = dict(pairs)
    model = options.get("--onnx")
    if "--loadEngine" in options:
        model = json.loads(Path(options["--loadEngine"]).read_text())["onnx"]
    if not model or not os.path.isfile(model):
        print("[E] Model missing or format not recognized")
        print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
        return 1
    session, feeds, dynamic = _session_and_feeds(model, options)
    if not dynamic and "--onnx" in options and any(name in SHAPE_FLAGS for name in options):
        print(
            "[E] Static model does not take explicit shapes since the shape of inference tensors "
            "will be determined by the model itself"
        )
        print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
        return 1
    if "--saveEngine" in options:
        Path(options["--saveEngine"]).write_text(
            json.dumps({"onnx": os.path.abspath(model), "standin_version": version})
        )
    if "--buildOnly" in options or "--skipInference" in options:
        print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
        return 0
    records = _records(session, feeds, options)
    percentiles = [float(p) for p in options.get("--percentile", "99").split(",")]
    print("\n".join(_summary(records, percentiles)))
    if "--exportTimes" in options:
        Path(options["--exportTimes"]).write_text(json.dumps(records, indent=1))
    if "--exportProfile" in options or "--exportLayerInfo" in options:
        _export_layers(model, feeds, options, version)
    if "--exportOutput" in options:
        outputs = session.run(None, feeds)
        Path(options["--exportOutput"]).write_text(
            json.dumps(
                [
                    {
                        "name": meta.name,
                        "dimensions": "x".join(str(d) for d in value.shape),
                        "values": value.astype(np.float64).ravel().tolist(),
                    }
                    for meta, value in zip(session.get_outputs(), outputs)
                ]
            )
        )
    print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{entry['banner']}] # {command}")
    return 0


def _export_layers(model: str, feeds, options: Dict[str, str], version: str) -> None:
    """--exportProfile and --exportLayerInfo in trtexec's layouts: each ONNX node a layer, timed
    by ONNX Runtime's session profiling (ONNX Runtime figures in TensorRT's layout, never
    TensorRT's)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    graph = onnx.load(model).graph
    runs = 10
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "p")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    total: Dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            total[name] = total.get(name, 0.0) + event["dur"] / 1e3
    nodes = [n for n in graph.node if n.name in total]
    whole = sum(total.values()) or 1.0
    if "--exportProfile" in options:
        records: List[Dict[str, float]] = [{"count": runs}]  # type: ignore[list-item]
        for n in nodes:
            records.append(
                {
                    "name": n.name,
                    "timeMs": total[n.name],
                    "averageMs": total[n.name] / runs,
                    "medianMs": total[n.name] / runs,
                    "percentage": 100 * total[n.name] / whole,
                }
            )
        Path(options["--exportProfile"]).write_text(json.dumps(records, indent=1))
    if "--exportLayerInfo" in options:
        detailed = options.get("--profilingVerbosity") == "detailed"
        major = int(version.split(".")[0])

        def tensors(names):
            return [
                {"Name": t, "Location": "Device", "Format/Datatype": "Row major linear FP32"}
                for t in names
                if t
            ]

        layers = []
        for n in nodes:
            if not detailed:
                layers.append(n.name)
                continue
            layer = {"Name": n.name, "LayerType": n.op_type}
            layer.update(Inputs=tensors(n.input), Outputs=tensors(n.output))
            if major >= 10:
                layer["Metadata"] = f"[ONNX Layer: {n.name}]"
            layers.append(layer)
        io = [i.name for i in graph.input] + [o.name for o in graph.output]
        info = {"Layers": layers}
        if major >= 11:
            info["I/O Tensors"] = [{"Name": t, "Location": "Device"} for t in io]
        else:
            info["Bindings"] = io
        Path(options["--exportLayerInfo"]).write_text(json.dumps(info, indent=1))
