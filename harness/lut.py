"""Latency lookup tables: every mergeable span of a network's activation chains, merged into one
conv and timed.

An *activation chain* is a straight run of convolutions joined by element-wise activations (Relu,
Clip/ReLU6) or nothing, each feeding only the next; a skip connection (Add), pooling or a reshape
ends it. (The folder's *linear chains*, ``harness.fold.chains``, are the runs with nothing between:
what merges exactly as it is.) A *span* (st, end) of an activation chain is what depth compression
can turn into one conv by removing the activations inside it. ``st`` and ``end`` index convolutions
in graph order, as LayerMerge's tables do. Each span is built as one conv (merged kernel, centred
padding, depthwise only if every conv in it is) followed by a ReLU, at its real input shape, and
timed with the measurement protocol; spans with the same shape signature are timed once.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.errors import HarnessError
from harness.geometry import ConvGeometry, conv_output_size, merged_kernel
from harness.onnx_io import write_text_atomic

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSwish", "HardSigmoid")
SHORT_COLUMNS = ["id", "st", "end", "time", "stdev"]
LONG_COLUMNS = ["id", "st", "end", "ker", "str", "is_dw", "time", "stdev"]


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One Conv node of the graph: its index in graph order, its name and its geometry (square
    kernel and stride: the tables' ``ker`` and ``str``)."""

    index: int
    name: str
    geometry: ConvGeometry


@dataclasses.dataclass
class ActivationChain:
    """Convs joined by activations (``activations[i]`` sits between ``convs[i]`` and
    ``convs[i + 1]``, or None where nothing does)."""

    convs: List[ConvLayer]
    activations: List[Optional[str]]


@dataclasses.dataclass(frozen=True)
class Span:
    """Convolutions ``st..end`` of one activation chain merged into one conv: a latency table's row
    (LayerMerge's ``st, end, ker, str, is_dw``) and the input shape it is timed at."""

    st: int
    end: int
    in_shape: Tuple[int, int, int, int]
    out_ch: int
    kernel: int
    stride: int
    is_dw: bool

    @property
    def key(self) -> str:
        """What determines the merged conv's latency, as text: spans that share it are timed
        once."""
        return (
            "x".join(map(str, self.in_shape))
            + f"-o{self.out_ch}-k{self.kernel}-s{self.stride}-dw{int(self.is_dw)}"
        )

    @property
    def geometry(self) -> ConvGeometry:
        """The merged conv as timed: a dense kernel with centred padding."""
        groups = self.in_shape[1] if self.is_dw else 1
        return ConvGeometry.centred(
            self.in_shape, self.out_ch, self.kernel, self.stride, groups, (self.st, self.end)
        )


def _square(values: List[int], what: str, name: str) -> int:
    if len(set(values)) != 1:
        raise HarnessError(
            f"conv {name!r} has a non-square {what} {values}: latency tables need square kernels"
        )
    return values[0]


def _output_shape(
    x: List[int], out_channels: int, extent: int, stride: int, attrs: Dict[str, object]
) -> List[int]:
    """A square conv's output shape computed from its attributes (shape inference left it out)."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if str(auto_pad).startswith("SAME"):
        return [x[0], out_channels] + [-(-size // stride) for size in x[2:]]
    pads = [0] * 4 if auto_pad == "VALID" else list(attrs.get("pads", [0, 0, 0, 0]))  # type: ignore
    return [x[0], out_channels] + [
        conv_output_size(x[2 + axis], extent, stride, pads[axis] + pads[2 + axis])
        for axis in (0, 1)
    ]


def conv_layers(model: onnx.ModelProto) -> List[ConvLayer]:
    """The 2-D Conv nodes of a shape-inferred model, in graph order."""
    shapes = {}
    for info in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = weights.get(node.input[1])
        x = shapes.get(node.input[0])
        if w is None or x is None or len(x) != 4 or not all(x):
            raise HarnessError(
                f"conv {node.name!r} needs constant weights and a static 4-D input shape"
            )
        name = node.name or node.output[0]
        kernel = _square(w[2:], "kernel", name)
        stride = _square(list(attrs.get("strides", [1, 1])), "stride", name)
        dilation = _square(list(attrs.get("dilations", [1, 1])), "dilation", name)
        extent = (kernel - 1) * dilation + 1
        out = shapes.get(node.output[0])
        if out is None or len(out) != 4 or not all(out):
            out = _output_shape(x, w[0], extent, stride, attrs)
        geometry = ConvGeometry(
            tuple(x),  # type: ignore[arg-type]
            tuple(out),  # type: ignore[arg-type]
            (extent, extent),
            int(attrs.get("group", 1)),
            (len(layers), len(layers)),
            stride,
            (dilation, dilation),
        )
        layers.append(ConvLayer(len(layers), name, geometry))
    return layers


def activation_chains(model: onnx.ModelProto) -> List[ActivationChain]:
    """Maximal chains of convs joined by at most one activation, each tensor with a single
    consumer."""
    layers = {layer.name: layer for layer in conv_layers(model)}
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in model.graph.output}

    def only_consumer(tensor: str) -> Optional[onnx.NodeProto]:
        found = consumers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in outputs else None

    successors: Dict[str, Tuple[str, Optional[str]]] = {}  # conv -> (next conv, activation between)
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        tensor, activation = node.output[0], None
        following = only_consumer(tensor)
        if following is not None and following.op_type in ACTIVATIONS:
            tensor, activation = following.output[0], following.name or following.output[0]
            following = only_consumer(tensor)
        if following is not None and following.op_type == "Conv" and following.input[0] == tensor:
            successors[node.name or node.output[0]] = (
                following.name or following.output[0],
                activation,
            )
    heads = set(layers) - {name for name, _ in successors.values()}
    chains = []
    for head in sorted(heads, key=lambda n: layers[n].index):
        chain, current = ActivationChain([layers[head]], []), head
        while current in successors:
            current, activation = successors[current]
            chain.convs.append(layers[current])
            chain.activations.append(activation)
        chains.append(chain)
    return chains


def enumerate_spans(chains: Iterable[ActivationChain], max_span: int) -> List[Span]:
    """Every span of at most ``max_span`` convs of each chain that can be merged into one conv.

    Spans containing a dilated conv are left out (the merged kernel would need a dilation of its
    own).
    """
    spans = []
    for chain in chains:
        convs = [c.geometry for c in chain.convs]
        for i in range(len(convs)):
            for j in range(i, min(len(convs), i + max_span)):
                part = convs[i : j + 1]
                if any(g.dilation != (1, 1) for g in part):
                    break
                strides = [g.stride for g in part]
                spans.append(
                    Span(
                        chain.convs[i].index,
                        chain.convs[j].index,
                        part[0].in_shape,
                        part[-1].out_channels,
                        merged_kernel([g.kernel[0] for g in part], strides),
                        int(np.prod(strides)),
                        all(g.depthwise for g in part),
                    )
                )
    return spans


def span_model(span: Span, activation: bool = True, seed: int = 0) -> onnx.ModelProto:
    """One conv with the span's merged geometry (centred padding) and a ReLU, at the span's input
    shape."""
    geometry = span.geometry
    groups, c = geometry.groups, geometry.in_channels
    rng = np.random.default_rng(seed)
    shape = (span.out_ch, c // groups, span.kernel, span.kernel)
    weight = rng.standard_normal(shape).astype(np.float32) * 0.01
    bias = np.zeros(span.out_ch, np.float32)
    pad = (span.kernel - 1) // 2
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "w", "b"],
            ["conv"],
            kernel_shape=[span.kernel] * 2,
            strides=[span.stride] * 2,
            pads=[pad] * 4,
            group=groups,
        )
    ]
    nodes.append(
        helper.make_node("Relu", ["conv"], ["output"])
        if activation
        else helper.make_node("Identity", ["conv"], ["output"])
    )
    graph = helper.make_graph(
        nodes,
        f"span_{span.key}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(geometry.in_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(geometry.out_shape))],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@dataclasses.dataclass
class Entry:
    """A measured span latency (ms per batch)."""

    time: float
    stdev: float
    n: int


def backend_settings(profile) -> Dict[str, object]:
    """The settings of the profile's backend section that a measurement depends on."""
    torch_settings = getattr(profile, "torch", None)
    if profile.backend == "torch" and torch_settings is not None:
        return dataclasses.asdict(torch_settings)
    return {
        "onnxruntime": dataclasses.asdict(profile.onnxruntime),
        "tensorrt": dataclasses.asdict(profile.tensorrt),
    }.get(profile.backend, {})


def measurement_context(profile, precision: str, batch: int) -> Dict[str, object]:
    """What a measurement depends on besides the span: device, backend and its settings,
    precision, batch, host, versions. Stored with every saved measurement, so that a resumed run
    never reuses another context's."""
    import platform

    from harness.envinfo import cpu_state, library_versions

    versions = library_versions()
    return {
        "device": profile.name,
        "backend": profile.backend,
        "backend_settings": backend_settings(profile),
        "precision": precision,
        "batch": batch,
        "host": platform.node(),
        "cpu": cpu_state().get("model"),
        "versions": {k: versions.get(k) for k in sorted(versions)},
    }


def load_progress(
    path: Path, context: Optional[Dict[str, object]] = None
) -> Tuple[Dict[str, Entry], int]:
    """Measurements already made in ``context`` (one JSON object per line) and how many lines of
    another context were ignored; a torn last line from a crash is ignored too."""
    found: Dict[str, Entry] = {}
    other = 0
    if not path.is_file():
        return found, other
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            entry = Entry(record["time"], record["stdev"], record["n"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if record.get("context") != context:
            other += 1
            continue
        found[record["key"]] = entry
    return found, other


def append_progress(
    path: Path, key: str, entry: Entry, context: Optional[Dict[str, object]] = None
) -> None:
    """Record one measurement durably before moving on (fsync), so an interruption loses nothing
    measured."""
    import os

    with path.open("a") as handle:
        handle.write(
            json.dumps({"key": key, **dataclasses.asdict(entry), "context": context}) + "\n"
        )
        handle.flush()
        os.fsync(handle.fileno())


def measure_keyed(
    todo: Dict[str, Callable[[], Entry]],
    progress_path: Path,
    context: Optional[Dict[str, object]] = None,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> Tuple[Dict[str, Entry], int, int]:
    """Run every measurement of ``todo`` (key -> measure) not saved before in this context;
    returns all entries, how many were measured now, and how many saved lines of another context
    were ignored."""
    done, other = load_progress(progress_path, context)
    missing = [key for key in todo if key not in done]
    for i, key in enumerate(missing):
        entry = todo[key]()
        append_progress(progress_path, key, entry, context)
        done[key] = entry
        if on_step:
            on_step(i + 1, len(missing))
    return done, len(missing), other


def measure_spans(
    spans: List[Span],
    measure: Callable[[Span], Entry],
    progress_path: Path,
    on_step: Optional[Callable[[int, int], None]] = None,
    context: Optional[Dict[str, object]] = None,
) -> Tuple[Dict[str, Entry], int]:
    """Time every distinct span signature not measured before in ``context``; returns all entries
    and how many were timed now."""
    unique: Dict[str, Span] = {}
    for span in spans:
        unique.setdefault(span.key, span)
    todo = {key: (lambda s=span: measure(s)) for key, span in unique.items()}
    done, measured, _ = measure_keyed(todo, progress_path, context, on_step)
    return done, measured


def table_rows(spans: List[Span], entries: Dict[str, Entry]) -> List[Dict[str, object]]:
    """Rows of the latency table in LayerMerge's long layout (the short layout is a subset of its
    columns)."""
    return [
        {
            "id": i,
            "st": s.st,
            "end": s.end,
            "ker": s.kernel,
            "str": s.stride,
            "is_dw": int(s.is_dw),
            "time": round(entries[s.key].time, 6),
            "stdev": round(entries[s.key].stdev, 6),
        }
        for i, s in enumerate(spans)
    ]


def long_table_path(path: Path) -> Path:
    """Where ``harness lut`` writes the long layout of a table at ``path``: ``<stem>_long.csv``."""
    return path.with_name(path.stem + "_long.csv")


def table_sidecar(path: Path) -> Path:
    """The JSON sidecar of a table (``<stem>.json``), also when ``path`` is its long layout."""
    sidecar = path.with_suffix(".json")
    if path.stem.endswith("_long") and not sidecar.is_file():
        return path.with_name(path.stem[: -len("_long")] + ".json")
    return sidecar


def table_companions(path: Path) -> List[Tuple[Path, str]]:
    """The files ``harness lut`` writes beside a table at ``path``, each with what it is."""
    return [
        (long_table_path(path), "long-layout table"),
        (path.with_suffix(".json"), "JSON sidecar"),
    ]


def write_tables(rows: List[Dict[str, object]], path: Path) -> Tuple[Path, Path]:
    """Write ``path`` (``id,st,end,time,stdev``) and ``<stem>_long.csv``
    (``id,st,end,ker,str,is_dw,...``)."""
    written = []
    for columns, target in (
        (SHORT_COLUMNS, path),
        (LONG_COLUMNS, long_table_path(path)),
    ):
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        written.append(write_text_atomic(target, buffer.getvalue()))
    return written[0], written[1]


def read_geometry(path: Path) -> Dict[Tuple[int, int], Tuple[int, int]]:
    """(st, end) -> (kernel, stride) from a table in the long layout; empty for the short layout."""
    with Path(path).open(newline="") as handle:
        if not {"ker", "str"} <= set(csv.DictReader(handle).fieldnames or []):
            return {}
    kernels = read_span_values(path, "ker", "latency table")
    strides = read_span_values(path, "str", "latency table")
    return {span: (int(kernels[span]), int(strides[span])) for span in kernels}


def read_span_values(
    path: Path, column: str, what: str, non_negative: bool = True
) -> Dict[Tuple[int, int], float]:
    """A CSV of spans ``st,end,<column>``: (st, end) -> the value. Refused with the row named: a
    file that is not text, a missing column, a span that is not 0 <= st <= end, a value that is not
    finite (or negative where ``non_negative``), a span given twice."""
    if not Path(path).is_file():
        raise HarnessError(f"{what} {path} does not exist")
    values: Dict[Tuple[int, int], float] = {}
    try:
        with Path(path).open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"st", "end", column} - set(reader.fieldnames or [])
            if missing:
                raise HarnessError(
                    f"{path} is not a valid {what}: missing columns {', '.join(sorted(missing))}"
                )
            for row in reader:
                line = reader.line_num
                try:
                    span = (int(row["st"]), int(row["end"]))
                    value = float(row[column])
                except (TypeError, ValueError):
                    raise HarnessError(
                        f"{path} line {line}: expected integers st,end and a number {column}"
                    ) from None
                if not 0 <= span[0] <= span[1]:
                    raise HarnessError(f"{path} line {line}: span {span} is not 0 <= st <= end")
                if not math.isfinite(value) or (non_negative and value < 0):
                    kind = "a finite number >= 0" if non_negative else "a finite number"
                    raise HarnessError(f"{path} line {line}: {column} {value!r} is not {kind}")
                if span in values:
                    raise HarnessError(f"{path} line {line}: span {span} is given twice")
                values[span] = value
    except (UnicodeDecodeError, csv.Error):  # csv.Error: a NUL byte (Python < 3.11)
        raise HarnessError(f"{path} is not a valid {what}: not a text (CSV) file") from None
    return values


def read_table(path: Path) -> Dict[Tuple[int, int], float]:
    """A latency table in either layout: (st, end) -> time in ms."""
    return read_span_values(path, "time", "latency table")
