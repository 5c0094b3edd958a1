"""Measured per-layer profiles from each backend's own profiler, tied to the ONNX nodes they cover.

A backend's runner made with ``profiling=True`` (``harness.measure``) runs the graph with the
backend's profiler on, in a session of its own: ONNX Runtime's session profiling
(``SessionOptions.enable_profiling``, per-node kernel times from its JSON trace, read here by
``onnxruntime_layer_profile``), ``torch.profiler`` around harness's interpreter (one
``record_function`` per ONNX node, ``torch_layer_profile``). TensorRT, two routes to the same two
pieces: per-layer times (TensorRT's ``IProfiler``: the tensorrt runner's own, or trtexec's
``--exportProfile``) and the engine's layer information (``IEngineInspector`` JSON of an engine
built with detailed profiling verbosity: the runner's inspector, or trtexec's
``--exportLayerInfo``; each layer's type, tensors, formats, tactic), as TensorRT 8.5, 10.x and
11.x write them, joined by ``trt_layer_profile``. Profiled runs are never the timed runs (a
profiler perturbs what it measures: ONNX Runtime's adds its bookkeeping to every node);
``measure_graphs`` interleaves them with the timed runs so that both see the same machine, and
every profile says so. A host-side profiler (ONNX Runtime's, torch's on the CPU) also works
inside the spans it reports: ``measure`` times and profiles ``profiler_cost_chain`` beside the
graphs and takes that measured cost off each conv layer (``ProfilerCost``,
``LayerProfile.take_off``).

A backend's layers are not the graph's nodes: ONNX Runtime and TensorRT fuse (``Conv_5 + Add_6 +
Relu_7``), insert reformats and rename. ``map_to_nodes`` ties each measured layer to the ONNX nodes
it covers, by name first and by the tensors it reads and writes otherwise.

Runs on the device: Python 3.8, torch imported only for the torch backend.
"""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import onnx

from harness.errors import HarnessError, finite_number, shown

NOTE = (
    "profiled runs, apart from the timed runs and interleaved with them (a profiler perturbs "
    "timing): per-layer times are the profiler's, end-to-end latency the timed runs'"
)
PROFILE_RUNS = 50  # inferences a profile on its own records, after as many warm-ups
# a profiling runner records its runs until its profiler holds about this many layer events (ONNX
# Runtime keeps at most 1,000,000), then runs unprofiled: its runs spread over an interleaved run
PROFILED_EVENTS = 200_000
CHAIN_NODES = 32  # convs of the chain a profiler's own cost is measured on
CONV_KINDS = frozenset(("Conv", "FusedConv", "ConvTranspose"))  # layers that cost is taken off
CHAIN_BURST = 60  # runs of the chain in one burst between profiles, timed and profiled each


def profiled_runs_cap(layers: int) -> int:
    """How many runs a profiling runner records for a graph of ``layers`` nodes."""
    return max(PROFILE_RUNS, PROFILED_EVENTS // max(layers, 1))


_DLA_TRANSFER = re.compile(r"^(.*) (to nvm|from nvm|copy finish)$")
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
# a layer or tensor of an engine's second and later shape profiles: "Conv_5 [profile 1]" (the
# first profile's names carry no suffix; NVIDIA's trt-engine-explorer, trex/parser.py)
_SHAPE_PROFILE = re.compile(r" *\[profile +([0-9]+)\]$")
# 10.x auxiliary-stream synchronisation, no work of their own (trex/parser.py drops them too)
_SYNC_LAYERS = frozenset(("signal", "wait"))
# ops a backend fuses into the layer before them
POST_OPS = frozenset(
    ("Relu", "Clip", "Add", "Mul", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu")
    + ("BatchNormalization", "Sum", "Tanh", "Sub", "Div")
)
# layers that only change a tensor's layout (ONNX Runtime's NCHWc reorders, TensorRT's reformats)
LAYOUT_OPS = frozenset(("ReorderInput", "ReorderOutput", "Reformat", "NoOp"))
_REFORMAT = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor \d+ to (.*)$")


@dataclasses.dataclass
class ProfilerCost:
    """What a profiler adds inside each layer's span, measured on ``profiler_cost_chain`` profiled
    and timed beside the graphs with the same settings: a conv's median span in the profiled
    runs, less the timed runs' median per conv (which also holds each run's own overhead, so the
    cost is, if anything, low)."""

    per_layer_ms: float
    span_ms: float  # a conv's median span, profiled
    unprofiled_ms: float  # the timed chain's median run, per conv
    nodes: int
    runs: int  # profiled runs of the chain

    @classmethod
    def measured(
        cls, spans_ms: Sequence[float], run_ms: float, nodes: int, runs: int
    ) -> Optional[ProfilerCost]:
        """From the profiled spans of the chain's convs and the timed chain's median run (none
        where the profiler showed no conv span)."""
        if not spans_ms:
            return None
        span = statistics.median(spans_ms)
        unprofiled = run_ms / nodes
        return cls(max(span - unprofiled, 0.0), span, unprofiled, nodes, runs)

    def describe(self) -> str:
        """One line: the cost and how it was measured."""
        return (
            f"the profiler's own cost, {self.per_layer_ms * 1e3:.1f} us per conv layer, taken off "
            f"each: measured on a chain of {self.nodes} small convs profiled and timed "
            f"with the same settings ({self.runs} profiled runs), {self.span_ms * 1e3:.1f} us "
            f"per conv profiled, {self.unprofiled_ms * 1e3:.1f} us timed"
        )


def profiler_cost_chain(
    nodes: int = CHAIN_NODES, channels: int = 16, size: int = 8
) -> onnx.ModelProto:
    """``nodes`` small 3x3 convs in a row (``channels`` channels, ``size`` x ``size``, seeded
    weights): a CNN's commonest layer at a cost the profiler's own is not lost in."""
    import numpy as np

    rng = np.random.default_rng(0)
    weights, layers = [], []
    for i in range(nodes):
        w = rng.standard_normal((channels, channels, 3, 3)) / (3 * channels**0.5)  # gain ~1
        weights.append(onnx.numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        layers.append(
            onnx.helper.make_node(
                "Conv", [f"t{i}", f"w{i}"], [f"t{i + 1}"], f"conv{i}", pads=[1] * 4
            )
        )
    shape = [1, channels, size, size]
    graph = onnx.helper.make_graph(
        layers,
        "profiler_cost_chain",
        [onnx.helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info(f"t{nodes}", onnx.TensorProto.FLOAT, shape)],
        weights,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


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
    profiled_ms: Optional[float] = None  # the profiler's own figure, where its cost was taken off

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
    overhead: Optional[ProfilerCost] = None  # the profiler's cost taken off each layer

    @property
    def total_ms(self) -> float:
        """The sum of the layers' times: the profiled latency the layers account for."""
        return sum(layer.time_ms for layer in self.layers)

    @property
    def profiled_total_ms(self) -> float:
        """The sum of the profiler's own figures (before its cost was taken off)."""
        return sum(
            layer.time_ms if layer.profiled_ms is None else layer.profiled_ms
            for layer in self.layers
        )

    def take_off(self, cost: Optional[ProfilerCost]) -> None:
        """Take the profiler's cost measured inside a conv's span off each conv layer's time
        (TAU's overhead compensation, measured rather than assumed). Other layers keep the
        profiler's figure: a conv's cost holds the thread pool's parallel sections, which a
        reorder or a small Gemm does not have. The profiler's own figure stays in
        ``profiled_ms``, so a second cost replaces the first. A layer is never left below zero;
        no cost, no change."""
        if cost is None:
            return
        self.overhead = cost
        for layer in self.layers:
            if layer.profiled_ms is None:
                layer.profiled_ms = layer.time_ms
            taken = cost.per_layer_ms if layer.kind in CONV_KINDS else 0.0
            layer.time_ms = max(layer.profiled_ms - taken, 0.0)

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
            "profiled_total_ms": self.profiled_total_ms,
            "overhead": dataclasses.asdict(self.overhead) if self.overhead else None,
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
    kept = after_first_run(trace)
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


def after_first_run(trace: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """An ONNX Runtime trace less its first ``model_run`` and that run's node events (it
    allocates and touches memory first)."""
    runs = [e for e in trace if _is_model_run(e)]
    if not runs:
        return list(trace)
    start = runs[0]["ts"]
    end = start + runs[0]["dur"]
    first = {id(runs[0])} | {
        id(e) for e in trace if e.get("cat") == "Node" and start <= e.get("ts", -1) <= end
    }
    return [e for e in trace if id(e) not in first]


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
    per ONNX node, named after it: ``ops`` maps those names to op types), from its per-call
    events (``profile.events()``): each node's median over its calls (as ONNX Runtime's), CPU time
    or, on a GPU, CUDA time; ``runs`` inferences recorded."""
    calls: Dict[str, List[float]] = {}
    for event in events:
        if event.name in ops:
            cuda = getattr(event, "device_time_total", 0.0) or 0.0
            spent = cuda if device != "cpu" and cuda else event.cpu_time_total
            calls.setdefault(event.name, []).append(spent / 1e3)
    layers = [
        LayerTime(name, op, statistics.median(calls[name]), device=device.upper())
        for name, op in ops.items()
        if name in calls
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
    header = isinstance(data[0], dict) and set(data[0]) == {"count"}
    layers = []
    for i, record in enumerate(data[1:] if header else data, start=int(header)):
        average = record.get("averageMs") if isinstance(record, dict) else None
        if not isinstance(record, dict) or "name" not in record:
            raise HarnessError(f"the per-layer profile's record {i} is not an object with a name")
        if not finite_number(average) or average < 0:
            raise HarnessError(
                f"the per-layer profile's record {i} ({shown(record['name'], 60)}): averageMs "
                f"{shown(average, 40)} is not a time in ms"
            )
        name = str(record["name"])
        kind = "DLA transfer" if _DLA_TRANSFER.match(name) else ""
        layers.append(LayerTime(name, kind, float(average)))
    return layers


def profile_records(reports: Iterable[Tuple[str, float]]) -> List[Dict[str, Any]]:
    """TensorRT ``IProfiler`` reports (``report_layer_time(name, ms)``, in the order made) as
    trtexec's ``--exportProfile`` writes them, so that both routes are read by one parser:
    ``[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}, ...]``. A new
    iteration starts when the first layer is reported again, and each layer's average is over its
    own reports, as trtexec's ``Profiler`` counts (samples/common/sampleReporting.cpp)."""
    times: Dict[str, List[float]] = {}
    first, count = None, 0
    for name, ms in reports:
        if first is None:
            first = name
        count += name == first
        times.setdefault(str(name), []).append(float(ms))
    total = sum(sum(v) for v in times.values()) or 1.0
    records: List[Dict[str, Any]] = [{"count": count}]
    for name, values in times.items():
        records.append(
            {
                "name": name,
                "timeMs": sum(values),
                "averageMs": sum(values) / len(values),
                "medianMs": statistics.median(values),
                "percentage": sum(values) / total * 100,
            }
        )
    return records


def parse_layer_info(data: Any) -> List[Dict[str, Any]]:
    """The layers of ``IEngineInspector``'s JSON (trtexec ``--exportLayerInfo``, or the runner's
    ``get_engine_information``), as 8.5 (``Layers`` + ``Bindings``), 10.x (``Metadata`` added in
    8.6) and 11.x (``I/O Tensors`` instead of ``Bindings``) write it, or a bare list of layers;
    names only (an engine not built with detailed profiling verbosity) is refused with what to
    change. Text is parsed here too (``strict=False``: the ``Metadata`` separators are control
    characters)."""
    if isinstance(data, (str, bytes)) and not data.strip():
        raise HarnessError(
            "TensorRT gave no layer information (an engine built with ProfilingVerbosity.NONE): "
            "build it with ProfilingVerbosity.DETAILED (trtexec --profilingVerbosity=detailed)"
        )
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data, strict=False)
        except ValueError as exc:
            raise HarnessError(f"TensorRT's layer information is not JSON: {exc}") from None
    layers = data.get("Layers") if isinstance(data, dict) else data
    if not isinstance(layers, list):
        raise HarnessError("layer information JSON holds no 'Layers' list")
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise HarnessError(
            "the layer information lists names only: build the engine with "
            "--profilingVerbosity=detailed (trtexec) or ProfilingVerbosity.DETAILED"
        )
    if layers and not any("Name" in layer for layer in layers):
        raise HarnessError(
            "the layer information's layers have no 'Name': is it trtexec's --exportProfile "
            "file rather than its --exportLayerInfo?"
        )
    return layers


# datatype words in TensorRT's tensor descriptions -> one spelling (TREx's activations.py lists
# the format strings: "Row major linear FP32", "Channel major BFloat16 format ...", and the bare
# "Half"/"Float" of 10.x kgen kernels); first match wins
_DATATYPES = (
    ("BFloat16", "BF16"),
    ("BF16", "BF16"),
    ("FP32", "FP32"),
    ("Float", "FP32"),
    ("FP16", "FP16"),
    ("Half", "FP16"),
    ("FP8", "FP8"),
    ("FP4", "FP4"),
    ("Int8", "Int8"),
    ("INT8", "Int8"),
    ("Int4", "Int4"),
    ("Int32", "Int32"),
    ("INT32", "Int32"),
    ("Int64", "Int64"),
    ("UInt8", "UInt8"),
    ("Bool", "Bool"),
    ("BOOL", "Bool"),
)


def _datatype(tensor: Dict[str, Any]) -> str:
    """A tensor's datatype (FP32, FP16, BF16, FP8, Int8, ...) from 8.5/10.x ``Format/Datatype``
    text, or from 11.x's own datatype field (``DataType``, as NVIDIA's 11.x migration guide spells
    it for I/O tensors; ``Datatype`` read too); unknown text is kept as written."""
    text = next(
        (str(tensor[k]) for k in ("DataType", "Datatype", "Format/Datatype") if k in tensor), ""
    )
    for word, name in _DATATYPES:
        if re.search(rf"\b{word}\b", text):
            return name
    return text


def _tensors(layer: Dict[str, Any], key: str) -> List[Dict[str, Any]]:
    """A layer's ``Inputs`` or ``Outputs`` tensor descriptions (none where it lists no objects)."""
    tensors = layer.get(key)
    return [t for t in tensors if isinstance(t, dict)] if isinstance(tensors, list) else []


def _onnx_layers(metadata: str) -> List[str]:
    """The ONNX node names in an 8.6+ ``Metadata`` field: ``[ONNX Layer: name]`` records, joined
    by U+001E (8.6) or U+001F (10.0; TREx's parser.py ``fix_unicode`` replaces both)."""
    return re.findall(r"\[ONNX Layer: ([^\]]+)\]", metadata)


def trt_layer_profile(
    profile_json: Any,
    layer_info_json: Any,
    model: onnx.ModelProto,
    version: str = "",
    source: str = "",
) -> LayerProfile:
    """Per-layer times (trtexec ``--exportProfile`` records, or the runner's ``IProfiler`` reports
    through ``profile_records``) joined with the layer information (``IEngineInspector`` JSON) by
    layer name: type, tensors, output datatype, tactic and placement, tied to the ONNX nodes. The
    one join of both TensorRT routes.

    Placement: an engine with DLA transfers (``X to nvm`` / ``X from nvm``: NVDLA memory) ran its
    ``{ForeignNode[...]}`` layers on the DLA (on a GPU-only engine a ForeignNode is a Myelin region
    on the GPU), as does a layer whose type names the DLA; the rest ran on the GPU."""
    info = {str(layer.get("Name")): layer for layer in parse_layer_info(layer_info_json)}
    times = [
        layer
        for layer in parse_trt_profile(profile_json)
        if str(info.get(layer.name, {}).get("LayerType", "")).lower() not in _SYNC_LAYERS
    ]
    dla_engine = any(layer.kind == "DLA transfer" for layer in times)
    shape_profiles = {m.group(1) for m in map(_SHAPE_PROFILE.search, (t.name for t in times)) if m}
    for layer in times:
        detail = info.get(layer.name, {})
        layer.name = _SHAPE_PROFILE.sub("", layer.name)  # tied to the model by its own names
        layer.kind = layer.kind or str(detail.get("LayerType", ""))
        inputs, outputs = _tensors(detail, "Inputs"), _tensors(detail, "Outputs")
        layer.inputs = [_SHAPE_PROFILE.sub("", str(t.get("Name"))) for t in inputs]
        layer.outputs = [_SHAPE_PROFILE.sub("", str(t.get("Name"))) for t in outputs]
        layer.precision = _datatype(outputs[0]) if outputs else ""
        layer.tactic = str(detail.get("TacticName", detail.get("TacticValue", "")))
        foreign = dla_engine and bool(_FOREIGN.match(layer.name))
        on_dla = foreign or "DLA" in layer.kind.upper()
        layer.device = "DLA" if on_dla else "GPU"
    map_to_nodes(times, model)
    by_metadata = {
        _SHAPE_PROFILE.sub("", name): _onnx_layers(str(d.get("Metadata", "")))
        for name, d in info.items()
    }
    known = {n.name for n in model.graph.node}
    for layer in times:
        layer.nodes = layer.nodes or [n for n in by_metadata.get(layer.name, []) if n in known]
    first = profile_json[0] if isinstance(profile_json, list) else None
    count = first.get("count") if isinstance(first, dict) else None
    runs = int(count) if finite_number(count) and count >= 0 else 0
    source = source or f"TensorRT {version} trtexec --exportProfile/--exportLayerInfo"
    if shape_profiles:
        source += f", shape profile {', '.join(sorted(shape_profiles))}"
    return LayerProfile("tensorrt", source, runs, times)


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
        layers = trt_layer_profile(
            load_json(times), load_json(info), onnx.load(str(onnx_path)), version
        )
    layers.note = "a trtexec profiling run after the timed runs (a profiler perturbs timing)"
    return layers


def load_json(path: Optional[Path]) -> Any:
    """A JSON file, or a one-line error naming it."""
    try:
        # strict=False: TensorRT's Metadata fields hold control characters (U+001E, U+001F)
        return json.loads(Path(path).read_text(), strict=False)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from None
