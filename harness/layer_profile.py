"""Measured per-layer profiles from each backend's own profiler, tied to the ONNX nodes they cover.

A backend's runner made with ``profiling=True`` (``harness.measure``) runs the graph with the
backend's profiler on, in a session of its own: ONNX Runtime's session profiling
(``SessionOptions.enable_profiling``, per-node kernel times from its JSON trace, read here by
``onnxruntime_layer_profile``), ``torch.profiler`` around harness's interpreter (one
``record_function`` per ONNX node, ``torch_layer_profile``). TensorRT: trtexec's
``--exportProfile`` (per-layer times) and ``--exportLayerInfo`` with
``--profilingVerbosity=detailed`` (each layer's type, tensors, formats, tactic), as TensorRT 8.5,
10.x and 11.x write them. Profiled runs are never the timed runs (a profiler perturbs what it
measures: ONNX Runtime's adds its bookkeeping to every node); ``measure_graphs`` interleaves them
with the timed runs so that both see the same machine, and every profile says so.

A backend's layers are not the graph's nodes: ONNX Runtime and TensorRT fuse (``Conv_5 + Add_6 +
Relu_7``), insert reformats and rename. ``map_to_nodes`` ties each measured layer to the ONNX nodes
it covers, by name first and by the tensors it reads and writes otherwise.

Runs on the device: Python 3.8, torch imported only for the torch backend.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

import onnx

from harness.errors import HarnessError

NOTE = (
    "profiled runs, apart from the timed runs and interleaved with them (a profiler perturbs "
    "timing): per-layer times are the profiler's, end-to-end latency the timed runs'"
)
PROFILE_RUNS = 50  # inferences a profile on its own records, after as many warm-ups
# a profiling runner records its runs until its profiler holds about this many layer events (ONNX
# Runtime keeps at most 1,000,000), then runs unprofiled: its runs spread over an interleaved run
PROFILED_EVENTS = 200_000


def profiled_runs_cap(layers: int) -> int:
    """How many runs a profiling runner records for a graph of ``layers`` nodes."""
    return max(PROFILE_RUNS, PROFILED_EVENTS // max(layers, 1))


_DLA_TRANSFER = re.compile(r"^(.*) (to nvm|from nvm|copy finish)$")
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
# ops a backend fuses into the layer before them
POST_OPS = frozenset(
    ("Relu", "Clip", "Add", "Mul", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu")
    + ("BatchNormalization", "Sum", "Tanh", "Sub", "Div")
)
# layers that only change a tensor's layout (ONNX Runtime's NCHWc reorders, TensorRT's reformats)
LAYOUT_OPS = frozenset(("ReorderInput", "ReorderOutput", "Reformat", "NoOp"))
_REFORMAT = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor \d+ to (.*)$")


@dataclasses.dataclass
class LayerTime:
    """One layer as the backend ran it, its mean time per inference, and the ONNX nodes it
    covers."""

    name: str
    kind: str  # the op type (ONNX Runtime, torch) or TensorRT's layer type
    time_ms: float
    nodes: List[str] = dataclasses.field(default_factory=list)
    inputs: List[str] = dataclasses.field(default_factory=list)
    outputs: List[str] = dataclasses.field(default_factory=list)
    precision: str = ""  # TensorRT: the datatype of its output (FP32, FP16, Int8)
    device: str = ""  # where it ran: CPU, GPU or DLA
    tactic: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """The layer as the JSON output lists it (empty fields left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in ("", [], None)}


@dataclasses.dataclass
class LayerProfile:
    """A backend's measured layers for one model (times are per inference, in ms)."""

    backend: str
    source: str  # which profiler, in words
    runs: int
    layers: List[LayerTime]
    note: str = NOTE
    run_ms: Optional[float] = None  # the profiling run's own median per inference, where known
    timed_ms: Optional[float] = None  # the timed run's median, from the same interleaved rounds

    @property
    def total_ms(self) -> float:
        """The sum of the layers' times: the profiled latency the layers account for."""
        return sum(layer.time_ms for layer in self.layers)

    def time_of(self, nodes: Iterable[str]) -> float:
        """Measured ms of the layers that cover any of ``nodes`` (each layer counted once)."""
        wanted = set(nodes)
        return sum(layer.time_ms for layer in self.layers if wanted & set(layer.nodes))

    def unmapped(self) -> List[LayerTime]:
        """Layers tied to no ONNX node (reformats at the graph's edges, DLA transfers)."""
        return [layer for layer in self.layers if not layer.nodes]

    def to_dict(self) -> Dict[str, Any]:
        """The profile as ``harness explain --json`` writes it."""
        return {
            "backend": self.backend,
            "source": self.source,
            "runs": self.runs,
            "note": self.note,
            "total_ms": self.total_ms,
            "run_ms": self.run_ms,
            "timed_ms": self.timed_ms,
            "layers": [layer.to_dict() for layer in self.layers],
        }


# --- mapping layers to ONNX nodes -----------------------------------------------------------------
def map_to_nodes(layers: Sequence[LayerTime], model: onnx.ModelProto) -> None:
    """Fill each layer's ``nodes`` with the ONNX nodes it covers.

    By name first: a node's own name, TensorRT's fusions (``A + B + C``), a DLA
    ``{ForeignNode[first...last]}`` range, a reformat feeding a named layer. Then by tensors: the
    node producing an ONNX tensor the layer writes (ONNX Runtime's NCHWc nodes are named after the
    tensor they replace, ``<tensor>_nchwc``). Last, nodes still uncovered join a neighbour's layer:
    activations and element-wise ops the layer they read from (fused into the conv before them),
    others the layer that reads them (a Pad or a conv fused into what follows)."""
    graph_nodes = list(model.graph.node)
    names = [n.name for n in graph_nodes]
    known = set(names)
    producer = {out: n for n in graph_nodes for out in n.output}
    owner: Dict[str, int] = {}
    for index, layer in enumerate(layers):
        layer.nodes = _nodes_by_name(layer.name, names, known)
        for node in layer.nodes:
            owner.setdefault(node, index)
    # the tensor a layer's name says it replaces first, then the ONNX tensors it writes (a layout
    # op writing a graph output does not compute it)
    named = {i: [layer.name[: -len("_nchwc")]] for i, layer in enumerate(layers)}
    written = {
        i: [] if layer.kind in LAYOUT_OPS else list(layer.outputs) for i, layer in enumerate(layers)
    }
    by_tensor: Set[int] = set()
    for anchors in (named, written):
        for index, tensors in anchors.items():
            for tensor in tensors if not layers[index].nodes else ():
                node = producer.get(tensor)
                if node is not None and node.name not in owner:
                    owner[node.name] = index
                    by_tensor.add(index)
                    layers[index].nodes.append(node.name)
    _adopt_uncovered(layers, graph_nodes, producer, owner, by_tensor)
    order = {name: i for i, name in enumerate(names)}
    for layer in layers:
        layer.nodes.sort(key=lambda name: order.get(name, 0))


def _adopt_uncovered(
    layers: Sequence[LayerTime],
    graph_nodes: List[onnx.NodeProto],
    producer: Dict[str, onnx.NodeProto],
    owner: Dict[str, int],
    by_tensor: Set[int],
) -> None:
    """Give nodes no layer covers to a neighbouring layer: an activation or element-wise op to the
    layer it reads from (any layer: ONNX Runtime's FusedConv keeps the conv's name), other nodes
    only to a layer found by tensors (``by_tensor``; a layer named after its nodes lists them all),
    the one reading them first."""
    readers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph_nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    changed = True
    while changed:
        changed = False
        for node in graph_nodes:
            if node.name in owner or node.op_type == "Constant":
                continue
            before = [producer[i].name for i in node.input if i in producer]
            after = [r.name for o in node.output for r in readers.get(o, [])]
            if node.op_type in POST_OPS:
                sources = [owner[s] for s in before if s in owner]
            else:
                sources = [owner[s] for s in after + before if owner.get(s) in by_tensor]
            if sources:
                owner[node.name] = sources[0]
                layers[sources[0]].nodes.append(node.name)
                changed = True


def _nodes_by_name(name: str, names: List[str], known: Set[str]) -> List[str]:
    reformat = _REFORMAT.match(name)
    if reformat:
        name = reformat.group(2)
    if name in known:
        return [name]
    foreign = _FOREIGN.match(name)
    if foreign:
        first, _, last = foreign.group(1).partition("...")
        if first in known and (last or first) in known:
            start, end = names.index(first), names.index(last or first)
            return names[start : end + 1]
        return []
    parts = [p.strip() for p in name.split(" + ")]
    return [p for p in parts if p in known] if len(parts) > 1 else []


# --- ONNX Runtime -------------------------------------------------------------------------------
def parse_onnxruntime_trace(events: List[Dict[str, Any]]) -> List[LayerTime]:
    """Per-node kernel times from ONNX Runtime's profiling JSON (``cat: Node`` events named
    ``<node>_kernel_time``, ``dur`` in us): each node's median over the runs the trace holds (a
    median: on a shared machine a few runs are preempted), in the order the nodes first ran."""
    import statistics

    found: Dict[str, LayerTime] = {}
    durations: Dict[str, List[float]] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        args = event.get("args") or {}
        if node not in found:
            provider = str(args.get("provider", "")).replace("ExecutionProvider", "")
            found[node] = LayerTime(node, str(args.get("op_name", "")), 0.0, device=provider)
        durations.setdefault(node, []).append(float(event.get("dur", 0)) / 1e3)
    for node, layer in found.items():
        layer.time_ms = statistics.median(durations[node])
    return list(found.values())


def onnxruntime_layer_profile(
    trace: List[Dict[str, Any]],
    optimized: onnx.ModelProto,
    model: onnx.ModelProto,
    version: str,
    threads: int,
) -> LayerProfile:
    """The layers of an ONNX Runtime profiling trace (its first run, which allocates, left out),
    with their tensors from the optimised graph the session ran, tied to ``model``'s nodes."""
    first = {id(e) for e in _first_run_events(trace)}
    kept = [e for e in trace if id(e) not in first]
    layers = parse_onnxruntime_trace(kept)
    tensors = {n.name: n for n in optimized.graph.node}
    for layer in layers:
        node = tensors.get(layer.name)
        layer.inputs = list(node.input) if node is not None else []
        layer.outputs = list(node.output) if node is not None else []
    map_to_nodes(layers, model)
    whole = sorted(e["dur"] / 1e3 for e in kept if _is_model_run(e))
    return LayerProfile(
        "onnxruntime",
        f"ONNX Runtime {version} session profiling ({threads} intra-op threads)",
        len(whole),
        layers,
        run_ms=whole[len(whole) // 2] if whole else None,
    )


def _is_model_run(event: Dict[str, Any]) -> bool:
    return event.get("cat") == "Session" and event.get("name") == "model_run"


def _first_run_events(trace: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The first ``model_run`` of a trace and its node events (allocations, first-touch)."""
    runs = [e for e in trace if _is_model_run(e)]
    if not runs:
        return []
    start = runs[0]["ts"]
    end = start + runs[0]["dur"]
    nodes = [e for e in trace if e.get("cat") == "Node" and start <= e.get("ts", -1) <= end]
    return [runs[0]] + nodes


# --- torch ----------------------------------------------------------------------------------------
def torch_layer_profile(
    events: Iterable[Any],
    model: onnx.ModelProto,
    ops: Dict[str, str],
    runs: int,
    device: str,
    version: str,
) -> LayerProfile:
    """The layers of a ``torch.profiler`` run of harness's interpreter (one ``record_function``
    per ONNX node, named after it: ``ops`` maps those names to op types), from its
    ``key_averages()``: CPU time per node, CUDA time on a GPU; ``runs`` inferences recorded."""
    totals: Dict[str, float] = {}
    for event in events:
        if event.key in ops:
            cuda = getattr(event, "device_time_total", 0.0) or 0.0
            totals[event.key] = (cuda if device != "cpu" and cuda else event.cpu_time_total) / 1e3
    layers = [
        LayerTime(name, op, totals[name] / max(runs, 1), device=device.upper())
        for name, op in ops.items()
        if name in totals
    ]
    map_to_nodes(layers, model)
    return LayerProfile("torch", f"torch {version} profiler", runs, layers)


# --- TensorRT -----------------------------------------------------------------------------------
def parse_trt_profile(data: Any) -> List[LayerTime]:
    """trtexec ``--exportProfile`` JSON: ``[{"count": N}, {"name", "timeMs", "averageMs",
    ("medianMs",) "percentage"}, ...]`` (samples/common/sampleReporting.cpp, exportJSONProfile).
    DLA transfers (``X to nvm``, ``X from nvm``, ``X copy finish``) stay as layers of their own."""
    if not isinstance(data, list) or not data:
        raise HarnessError("a trtexec --exportProfile file is a JSON list of per-layer records")
    records = data[1:] if set(data[0]) == {"count"} else data
    layers = []
    for record in records:
        if not isinstance(record, dict) or "name" not in record:
            continue
        name = str(record["name"])
        kind = "DLA transfer" if _DLA_TRANSFER.match(name) else ""
        layers.append(LayerTime(name, kind, float(record.get("averageMs", 0.0))))
    return layers


def parse_layer_info(data: Any) -> List[Dict[str, Any]]:
    """The layers of trtexec ``--exportLayerInfo`` (``IEngineInspector`` JSON), as 8.5 (``Layers`` +
    ``Bindings``), 10.x (``Metadata`` added) and 11.x (``I/O Tensors`` instead of ``Bindings``)
    write it, or a bare list of layers; names only (not ``--profilingVerbosity=detailed``) is
    refused with the flag to add."""
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list):
        raise HarnessError("layer information JSON holds no 'Layers' list")
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise HarnessError(
            "the layer information lists names only: build the engine with "
            "--profilingVerbosity=detailed (trtexec) or ProfilingVerbosity.DETAILED"
        )
    return layers


def _datatype(tensor: Dict[str, Any]) -> str:
    """A tensor's datatype from 8.5/10.x ``Format/Datatype`` text or 11.x ``Datatype``."""
    if "Datatype" in tensor:
        return str(tensor["Datatype"])
    text = str(tensor.get("Format/Datatype", ""))
    for name in ("FP32", "FP16", "BF16", "FP8", "Int8", "INT8", "Int32", "Float", "Half"):
        if re.search(rf"\b{name}\b", text):
            return {"Float": "FP32", "Half": "FP16", "INT8": "Int8"}.get(name, name)
    return text


def _onnx_layers(metadata: str) -> List[str]:
    """The ONNX node names in a 10.x/11.x ``Metadata`` field (``[ONNX Layer: name]`` records joined
    by the record separator ``\\x1e``)."""
    return re.findall(r"\[ONNX Layer: ([^\]]+)\]", metadata)


def trt_layer_profile(
    profile_json: Any, layer_info_json: Any, model: onnx.ModelProto, version: str = ""
) -> LayerProfile:
    """Per-layer times (``--exportProfile``) joined with the layer information
    (``--exportLayerInfo``) by layer name: type, tensors, output datatype, tactic and placement,
    tied to the ONNX nodes.

    Placement: an engine with DLA transfers (``X to nvm`` / ``X from nvm``: NVDLA memory) ran its
    ``{ForeignNode[...]}`` layers on the DLA (on a GPU-only engine a ForeignNode is a Myelin region
    on the GPU), as does a layer whose type names the DLA; the rest ran on the GPU."""
    times = parse_trt_profile(profile_json)
    dla_engine = any(layer.kind == "DLA transfer" for layer in times)
    info = {str(layer.get("Name")): layer for layer in parse_layer_info(layer_info_json)}
    for layer in times:
        detail = info.get(layer.name, {})
        layer.kind = layer.kind or str(detail.get("LayerType", ""))
        layer.inputs = [str(t.get("Name")) for t in detail.get("Inputs", []) if isinstance(t, dict)]
        outputs = [t for t in detail.get("Outputs", []) if isinstance(t, dict)]
        layer.outputs = [str(t.get("Name")) for t in outputs]
        layer.precision = _datatype(outputs[0]) if outputs else ""
        layer.tactic = str(detail.get("TacticName", detail.get("TacticValue", "")))
        foreign = dla_engine and bool(_FOREIGN.match(layer.name))
        on_dla = foreign or "DLA" in layer.kind.upper()
        layer.device = "DLA" if on_dla else "GPU"
    map_to_nodes(times, model)
    by_metadata = {name: _onnx_layers(str(d.get("Metadata", ""))) for name, d in info.items()}
    for layer in times:
        layer.nodes = layer.nodes or [n for n in by_metadata.get(layer.name, []) if n]
    runs = int(profile_json[0].get("count", 0)) if isinstance(profile_json[0], dict) else 0
    return LayerProfile(
        "tensorrt", f"TensorRT {version} trtexec --exportProfile/--exportLayerInfo", runs, times
    )


def trtexec_profile_flags(profile_path: Path, layer_info_path: Path) -> List[str]:
    """The trtexec flags of a profiling run (8.5 to 11): detailed layer information at build, the
    per-layer profile and the layer information exported."""
    return [
        "--profilingVerbosity=detailed",
        f"--exportProfile={profile_path}",
        f"--exportLayerInfo={layer_info_path}",
    ]


def profile_trtexec(onnx_path: Path, profile: Any, precision: str, batch: int) -> LayerProfile:
    """A profiling run of trtexec (apart from the timed runs: ``--separateProfileRun``, a no-op
    that 11.x still accepts): the profile's build settings plus ``trtexec_profile_flags``, both
    exports read back with ``trt_layer_profile``."""
    from harness.backends.trt.trtexec import (
        find_trtexec,
        run_command,
        trtexec_command,
        trtexec_version,
    )

    binary = find_trtexec()
    version = trtexec_version(binary)
    with tempfile.TemporaryDirectory() as tmp:
        times, info = Path(tmp) / "profile.json", Path(tmp) / "layers.json"
        cmd = trtexec_command(onnx_path, profile, precision, batch, version)
        cmd[0] = binary
        cmd += trtexec_profile_flags(times, info) + ["--separateProfileRun"]
        run_command(cmd, f"{onnx_path} (profiling run)")
        return trt_layer_profile(
            load_json(times), load_json(info), onnx.load(str(onnx_path)), version
        )


def load_json(path: Optional[Path]) -> Any:
    """A JSON file, or a one-line error naming it."""
    try:
        return json.loads(Path(path).read_text())  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None
