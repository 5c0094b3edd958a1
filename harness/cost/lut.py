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
import itertools
import json
import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from harness.envinfo import cpu_state, library_versions
from harness.errors import HarnessError
from harness.geometry import ConvGeometry, conv_output_size, merged_kernel
from harness.onnx_io import write_text_atomic

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSwish", "HardSigmoid")
SHORT_COLUMNS = ["id", "st", "end", "time", "stdev"]
LONG_COLUMNS = ["id", "st", "end", "ker", "str", "is_dw", "time", "stdev"]
OPTIMAL_COLUMNS = SHORT_COLUMNS + ["breaks"]


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


def table_rows(
    spans: List[Span], entries: Dict[str, Entry], layout: str = "harness"
) -> List[Dict[str, object]]:
    """Rows of the latency table in the long layout (the short layout is a subset of its
    columns); ``is_dw`` is ``True``/``False`` in the ``layermerge`` layout, as LayerMerge's reader
    needs (0/1 would turn every column float in pandas), 0/1 otherwise."""
    return [
        {
            "id": i,
            "st": s.st,
            "end": s.end,
            "ker": s.kernel,
            "str": s.stride,
            "is_dw": str(s.is_dw) if layout == "layermerge" else int(s.is_dw),
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


def optimal_table_path(path: Path) -> Path:
    """Where the ``efficientdc`` layout writes its T_opt table: ``opt_<name>``, as their
    ``generate_tables.py --mode opt-time`` writes ``opt_time_<tag>.csv`` for ``time_<tag>.csv``."""
    return path.with_name("opt_" + path.name)


def table_companions(path: Path) -> List[Tuple[Path, str]]:
    """The files ``harness lut`` may write beside a table at ``path`` (in some layout), each with
    what it is."""
    return [
        (long_table_path(path), "long-layout table"),
        (optimal_table_path(path), "efficientdc opt_time table"),
        (path.with_suffix(".json"), "JSON sidecar"),
    ]


def _write_csv(rows: List[Dict[str, object]], columns: List[str], target: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(target, buffer.getvalue())


def write_tables(rows: List[Dict[str, object]], path: Path) -> Tuple[Path, Path]:
    """Write ``path`` (``id,st,end,time,stdev``) and ``<stem>_long.csv``
    (``id,st,end,ker,str,is_dw,...``)."""
    return (
        _write_csv(rows, SHORT_COLUMNS, path),
        _write_csv(rows, LONG_COLUMNS, long_table_path(path)),
    )


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


def _paper_layout(path: Path) -> Optional[str]:
    """``layermerge`` or ``efficientdc`` for a table written in that layout (its sidecar says so,
    it has EfficientDC's ``breaks``, or its ``is_dw`` is ``True``/``False``); None otherwise."""
    sidecar = table_sidecar(Path(path))
    try:
        layout = json.loads(sidecar.read_text()).get("layout") if sidecar.is_file() else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        layout = None
    if layout in ("layermerge", "efficientdc"):
        return layout
    try:
        with Path(path).open(newline="") as handle:
            first = next(csv.DictReader(handle), None) or {}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if "breaks" in first:
        return "efficientdc"
    return "layermerge" if first.get("is_dw") in ("True", "False") else None


def read_table(path: Path) -> Dict[Tuple[int, int], float]:
    """A latency table in the harness layout (short or long): (st, end) -> time in ms. Tables in
    the papers' layouts (activation positions, LayerMerge's one row per pruning option) are
    refused: they are for the papers' solvers."""
    layout = _paper_layout(path) if Path(path).is_file() else None
    if layout:
        raise HarnessError(
            f"{path} is a {layout}-layout table (st/end are activation positions, for the "
            f"paper's own solver); `harness plan` and `harness fold --cost` read "
            "`harness lut --layout harness` tables"
        )
    return read_span_values(path, "time", "latency table")


# --- LayerMerge's and EfficientDC's tables -------------------------------------------------------
#
# Both papers' code numbers a network of residual blocks by *activation positions*: position 0 is
# the output of the stem conv, and body conv k (1-based, in graph order, leaving out the stem, the
# convs of shortcut branches and the head after the last block) lies between positions k - 1 and
# k. A span (st, end), st < end, is convs st + 1 .. end merged into one conv. Which spans may merge
# (``depth_spans``) follows their rules: a span never crosses a stride break; a span that reaches
# a residual block's input either stops there or covers the whole block (the skip then folds into
# the merged kernel's centre tap, which leaves its shape unchanged); a span that starts inside a
# block ends by the block's output.

POOLING = ("MaxPool", "AveragePool", "LpPool")
PASS_THROUGH = ACTIVATIONS + ("BatchNormalization", "Identity", "Dropout")


@dataclasses.dataclass
class DepthNetwork:
    """A network numbered as LayerMerge and EfficientDC number it: ``convs[k - 1]`` is body conv k,
    between activation positions k - 1 and k (``positions`` in all, 0 after the stem)."""

    convs: List[ConvLayer]
    skips: Dict[int, int]  # residual block: input position -> output position
    breaks: List[int]  # positions no span crosses: stride breaks, pooling
    left_out: List[ConvLayer]  # the stem, shortcut-branch convs and the head

    @property
    def positions(self) -> int:
        """The last activation position (their ``act_num``)."""
        return len(self.convs)


def _data_inputs(model: onnx.ModelProto) -> Callable[[onnx.NodeProto], List[str]]:
    constants = {init.name for init in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return lambda node: [t for t in node.input if t and t not in constants]


def _branch(
    node: onnx.NodeProto, consumers: Dict[str, List[onnx.NodeProto]]
) -> Optional[List[onnx.NodeProto]]:
    """The nodes from ``node`` up to and including the Add it reaches through single-consumer
    tensors; None when it branches or ends first."""
    nodes = [node]
    while node.op_type != "Add":
        following = consumers.get(node.output[0], [])
        if len(following) != 1:
            return None
        node = following[0]
        nodes.append(node)
    return nodes


class _Walk:
    """The main path of a network from its stem: body convs, residual blocks, breaks."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.layers = {layer.name: layer for layer in conv_layers(model)}
        data = _data_inputs(model)
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for tensor in data(node):
                self.consumers.setdefault(tensor, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.body: List[ConvLayer] = []
        self.shortcuts: List[ConvLayer] = []
        self.skips: Dict[int, int] = {}
        self.breaks = set()
        self.block_ends = set()  # residual outputs and linear (activation-free) conv outputs
        self.stopped_at = "the output"

    def layer(self, node: onnx.NodeProto) -> ConvLayer:
        return self.layers[node.name or node.output[0]]

    def take(self, node: onnx.NodeProto, linear: bool) -> bool:
        """Take one node of the main path; returns whether the path is linear after it (no
        activation since the last conv)."""
        if node.op_type == "Conv":
            if linear:
                self.block_ends.add(len(self.body))  # a linear bottleneck ends here
            self.body.append(self.layer(node))
            return True
        if node.op_type in POOLING:
            self.breaks.add(len(self.body))
        return linear and node.op_type not in ACTIVATIONS

    def block(self, tensor: str) -> Optional[str]:
        """Take the residual block whose input is ``tensor``; returns its output, or None when the
        tensor's consumers do not meet at one Add."""
        branches = [_branch(node, self.consumers) for node in self.consumers[tensor]]
        if len(branches) != 2 or branches[0] is None or branches[1] is None:
            return None
        if branches[0][-1] is not branches[1][-1]:
            return None
        convs = [sum(n.op_type == "Conv" for n in b) for b in branches]
        main, shortcut = branches if convs[0] > convs[1] else branches[::-1]
        start, linear = len(self.body), False
        for node in main[:-1]:
            linear = self.take(node, linear)
        self.shortcuts += [self.layer(n) for n in shortcut if n.op_type == "Conv"]
        self.skips[start] = len(self.body)
        self.block_ends.add(len(self.body))
        return main[-1].output[0]

    def run(self, tensor: str) -> None:
        """Walk from ``tensor`` (the stem's output) to where the main path stops being convs,
        pass-through ops and residual blocks (pooling to a vector, a reshape, the output); the
        node it stopped at is kept in ``stopped_at``."""
        linear = False
        while tensor not in self.outputs and self.consumers.get(tensor):
            following = self.consumers[tensor]
            if len(following) > 1:
                if linear:
                    self.block_ends.add(len(self.body))
                block_output, linear = self.block(tensor), False
                if block_output is None:
                    self.stopped_at = f"{tensor!r}, whose {len(following)} consumers are no block"
                    break
                tensor = block_output
                continue
            node = following[0]
            if node.op_type not in ("Conv",) + POOLING + PASS_THROUGH:
                self.stopped_at = f"{node.op_type} {node.name or node.output[0]!r}"
                break
            linear = self.take(node, linear)
            tensor = node.output[0]
        if linear:
            self.block_ends.add(len(self.body))


def depth_network(model: onnx.ModelProto) -> DepthNetwork:
    """Number a shape-inferred network of residual blocks (inverted residuals, basic or bottleneck
    blocks) as LayerMerge and EfficientDC do.

    Left out: the stem (the first conv), the convs of shortcut branches (ResNet's downsample) and
    the head after the last block (MobileNetV2's last 1x1), as in both papers' code. Stride breaks:
    a strided conv ends every span that contains it, except that the 1x1 right after it may join
    when no residual block spans the strided conv (EfficientDC's rule for inverted residuals,
    which LayerMerge keeps; LayerMerge's ResNets break at the strided conv).
    """
    stem = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    if stem is None:
        raise HarnessError("the model has no convolutions to tabulate")
    walk = _Walk(model)
    walk.run(stem.output[0])
    if not walk.skips:
        raise HarnessError(
            "the layermerge and efficientdc layouts number networks of residual blocks "
            "(inverted residuals, basic or bottleneck blocks); this model has none on its main path"
        )
    missed = len(walk.layers) - 1 - len(walk.body) - len(walk.shortcuts)
    if missed:
        raise HarnessError(
            f"the main path stops at {walk.stopped_at} with {missed} convs after it: the "
            "layermerge and efficientdc layouts number chains of residual blocks of convs"
        )
    last = max(walk.block_ends)
    body, head = walk.body[:last], walk.body[last:]
    dilated = [c.name for c in body if c.geometry.dilation != (1, 1)]
    if dilated:
        raise HarnessError(f"dilated convs cannot be merged into one kernel: {dilated[:3]}")
    breaks = set(b for b in walk.breaks if b <= last)
    for k, conv in enumerate(body, start=1):
        if conv.geometry.stride == 1:
            continue
        spanned = any(s < k < t for s, t in walk.skips.items())
        joins = k < len(body) and body[k].geometry.kernel == (1, 1) and not spanned
        breaks.add(k + 1 if joins else k)
    return DepthNetwork(
        body, dict(walk.skips), sorted(breaks), [walk.layer(stem)] + walk.shortcuts + head
    )


def depth_spans(network: DepthNetwork) -> List[Tuple[int, int]]:
    """Every span (st, end) the papers' solvers consider, in their order (st, then end)."""
    spans = []
    skips = list(network.skips.items())
    for st in range(network.positions):
        for end in range(st + 1, network.positions + 1):
            if any(st < b < end for b in network.breaks):
                break
            if any(s < st < t < end for s, t in skips):
                break  # a span starting inside a block ends by its output
            if any(st < s < end < t for s, t in skips):
                continue  # a span entering a block covers all of it
            spans.append((st, end))
    return spans


def pruning_options(convs: Sequence[ConvGeometry]) -> List[Tuple[int, bool]]:
    """(kernel, is_dw) of each merged conv LayerMerge's layer pruning can leave of ``convs``, in
    its order: for each (kernel, depthwise) class of conv in order of first appearance, keep from
    its irreducible convs (channels change or stride > 1) up to all of them, the first class
    varying slowest; distinct results in first-seen order; keeping none is not an option."""
    classes: Dict[Tuple[int, bool], List[int]] = {}
    for g in convs:
        counts = classes.setdefault((g.kernel[0], g.depthwise), [0, 0])
        counts[1] += 1
        counts[0] += g.in_channels != g.out_channels or g.stride > 1
    options: List[Tuple[int, bool]] = []
    for kept in itertools.product(*(range(lo, hi + 1) for lo, hi in classes.values())):
        if not any(kept):
            continue
        kernel = 1 + sum(n * (k - 1) for (k, _), n in zip(classes, kept))
        option = (kernel, all(dw for (_, dw), n in zip(classes, kept) if n))
        if option not in options:
            options.append(option)
    return options


def at_batch(spans: List[Span], batch: int) -> List[Span]:
    """``spans`` timed at ``batch`` (an ONNX file keeps the batch it was exported at)."""
    return [dataclasses.replace(s, in_shape=(batch,) + s.in_shape[1:]) for s in spans]


def layout_spans(network: DepthNetwork, layout: str) -> List[Span]:
    """The rows of a ``layermerge`` table (one per layer-pruning option of each span) or an
    ``efficientdc`` one (one per span: all its convs merged), ``st``/``end`` as positions."""
    rows = []
    for st, end in depth_spans(network):
        part = [c.geometry for c in network.convs[st:end]]
        stride = int(np.prod([g.stride for g in part]))
        if layout == "layermerge":
            options = pruning_options(part)
        else:
            kernel = merged_kernel([g.kernel[0] for g in part], [g.stride for g in part])
            options = [(kernel, all(g.depthwise for g in part))]
        for kernel, is_dw in options:
            rows.append(
                Span(st, end, part[0].in_shape, part[-1].out_channels, kernel, stride, is_dw)
            )
    return rows


def optimal_rows(rows: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """EfficientDC's T_opt table from its raw one (one row per span, in their order): each span's
    fastest split into spans of the table, ``breaks`` the positions it keeps (``"st,...,end"``).
    As their ``generate_optimal_time_table``: splits tried left to right, kept only when strictly
    faster; ``stdev`` sums the parts'."""
    raw = {
        (int(r["st"]), int(r["end"])): (float(r["time"]), float(r["stdev"]))  # type: ignore
        for r in rows
    }
    best: Dict[Tuple[int, int], Tuple[float, float, List[int]]] = {}
    out = []
    for i, (st, end) in enumerate(raw):
        time, stdev = raw[(st, end)]
        breaks = [st, end]
        for j in range(st + 1, end):
            if (st, j) in best and (j, end) in raw:
                head, tail = best[(st, j)], raw[(j, end)]
                if head[0] + tail[0] < time:
                    time, stdev, breaks = head[0] + tail[0], head[1] + tail[1], head[2] + [end]
        best[(st, end)] = (time, stdev, breaks)
        out.append(
            {
                "id": i,
                "st": st,
                "end": end,
                "time": round(time, 6),
                "stdev": round(stdev, 6),
                "breaks": ",".join(map(str, breaks)),
            }
        )
    return out


def write_layout(rows: List[Dict[str, object]], path: Path, layout: str) -> List[Path]:
    """Write a table in ``layout``: ``harness`` (``path`` and ``<stem>_long.csv``), ``layermerge``
    (``path``: ``id,st,end,ker,str,is_dw,time,stdev``, what LayerMerge's ``--time_path`` reads) or
    ``efficientdc`` (``path``: ``id,st,end,time,stdev``, their raw table, and ``opt_<name>``: the
    T_opt table with ``breaks`` that their ``solve_dp.py --time-path`` reads)."""
    if layout == "layermerge":
        return [_write_csv(rows, LONG_COLUMNS, path)]
    if layout == "efficientdc":
        return [
            _write_csv(rows, SHORT_COLUMNS, path),
            _write_csv(optimal_rows(rows), OPTIMAL_COLUMNS, optimal_table_path(path)),
        ]
    return list(write_tables(rows, path))
