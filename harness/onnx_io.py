"""Loading and saving ONNX files as the runtimes do: what ONNX Runtime accepts is accepted (the
strict checker only warns), external data stays inside the model's folder, writes are atomic and
carry the lowest IR version that holds the model's opsets (so that old runtimes, e.g. JetPack's ONNX
Runtime and TensorRT 8.5, read them)."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, external_data_helper, helper

from harness.errors import HarnessError, first_line, shown
from harness.outputs import is_special_file

PathLike = Union[str, "os.PathLike[str]"]
Dim = Union[int, str, None]  # a fixed size, a named dynamic dimension, or an unnamed one


def _dims(value: onnx.ValueInfoProto) -> List[Dim]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in value.type.tensor_type.shape.dim
    ]


def graph_inputs(model: onnx.ModelProto) -> List[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds: initializers listed as inputs are left out (constants with
    a default)."""
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def input_shapes(path: PathLike) -> Dict[str, List[Dim]]:
    """Graph input name -> dims (int, or the dim's name / None when dynamic), no initializers."""
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: _dims(v) for v in graph_inputs(model)}


# ops whose operands after the first hold parameters (weights, biases, norm statistics), not data
_PARAMETER_READERS = {
    "Conv",
    "ConvTranspose",
    "Gemm",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "PRelu",
}


def data_inputs(model: onnx.ModelProto) -> List[onnx.ValueInfoProto]:
    """The graph inputs that are data: neither initializers nor parameters (inputs read only as
    the weight, or a later operand, of Conv, Gemm or a normalisation)."""
    readers: Dict[str, List[bool]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append(node.op_type in _PARAMETER_READERS and position > 0)
    return [
        value
        for value in graph_inputs(model)
        if not (readers.get(value.name) and all(readers[value.name]))
    ]


def data_input_shapes(path: PathLike) -> Dict[str, List[Dim]]:
    """``input_shapes`` of the ``data_inputs`` only: the batch is theirs."""
    model = onnx.load(str(path), load_external_data=False)
    return {v.name: _dims(v) for v in data_inputs(model)}


# the largest dimension a shape may give: TensorRT's dims are int32 (ONNX's int64)
MAX_DIM = 2**31 - 1


def parse_shape(text: str) -> Tuple[int, ...]:
    """Parse ``3x224x224`` or ``3,224,224`` into a tuple of positive ints."""
    parts = re.split(r"[x,]", text.strip().lower())
    try:
        shape = tuple(int(p) for p in parts)  # an empty part ("3x16x") is no dimension
    except ValueError:
        raise HarnessError(f"invalid input shape {shown(text)}; write it like 3x224x224") from None
    if not shape or any(not 0 < d <= MAX_DIM for d in shape):
        raise HarnessError(
            f"invalid input shape {shown(text)}: every dimension must be a positive integer of "
            f"at most {MAX_DIM}"
        )
    return shape


@dataclasses.dataclass(frozen=True)
class InputShapes:
    """Shapes to bind a model's dynamic inputs to: ``sample``, one sample's shape without the
    batch for a single-input model (``--input-shape 3x320x320``), and ``named``, whole shapes per
    input (``--shapes images:1x3x320x320``, as trtexec and Polygraphy write them)."""

    sample: Optional[Tuple[int, ...]] = None
    named: Tuple[Tuple[str, Tuple[int, ...]], ...] = ()

    @classmethod
    def parse(cls, input_shape: Optional[str], shapes: Optional[str] = None) -> InputShapes:
        """From the two options' texts (either may be None); a malformed one is refused."""
        named = []
        for item in (shapes or "").split(","):
            if not item.strip():
                continue
            name, colon, dims = item.strip().rpartition(":")
            if not colon or not name:
                raise HarnessError(
                    f"--shapes {item.strip()!r}: write name:1x3x320x320 (several joined by ',')"
                )
            named.append((name, parse_shape(dims)))
        if shapes is not None and not named:
            raise HarnessError("--shapes is empty: write name:1x3x320x320")
        if len({n for n, _ in named}) != len(named):
            raise HarnessError("--shapes names an input twice")
        return cls(parse_shape(input_shape) if input_shape else None, tuple(named))

    @classmethod
    def of(cls, value: Union[None, Sequence[int], InputShapes]) -> InputShapes:
        """``value`` as InputShapes: a sequence of ints is a sample shape."""
        if isinstance(value, InputShapes):
            return value
        return cls(tuple(int(d) for d in value) if value is not None else None)

    def __bool__(self) -> bool:
        return self.sample is not None or bool(self.named)

    def options(self) -> List[str]:
        """The command-line options that give these shapes (for a device that binds them)."""
        found = [f"--input-shape={'x'.join(map(str, self.sample))}"] if self.sample else []
        if self.named:
            joined = ",".join(f"{n}:{'x'.join(map(str, s))}" for n, s in self.named)
            found.append(f"--shapes={joined}")
        return found


def _shown(value: onnx.ValueInfoProto) -> str:
    return "x".join(str(d) if d else "?" for d in _dims(value))


def _wanted_dims(
    value: onnx.ValueInfoProto, shapes: InputShapes, batch: Optional[int], single: bool
) -> List[Optional[int]]:
    """The size each dim of a data input is to be bound to (None: left as it is)."""
    dims = value.type.tensor_type.shape.dim
    named = dict(shapes.named)
    if value.name in named:
        full = list(named[value.name])
        if dims and len(dims) != len(full):
            raise HarnessError(
                f"input {value.name!r} has {len(dims)} dims ({_shown(value)}); --shapes gives "
                f"{'x'.join(map(str, full))}"
            )
        return full
    if shapes.sample is not None and single:
        if dims and len(dims) != len(shapes.sample) + 1:
            raise HarnessError(
                f"input {value.name!r} has {len(dims)} dims ({_shown(value)}); --input-shape "
                f"{'x'.join(map(str, shapes.sample))} gives {len(shapes.sample)} without the "
                f"batch, not {len(dims) - 1}"
            )
        return [batch or (None if dims else 1)] + list(shapes.sample)
    return [batch] + [None] * (len(dims) - 1) if dims else []


def bind_shapes(
    model: onnx.ModelProto,
    shapes: Union[None, Sequence[int], InputShapes] = None,
    batch: Optional[int] = None,
) -> Tuple[onnx.ModelProto, List[str]]:
    """A copy with the dynamic dims of the data inputs bound (the batch, the first dim, to
    ``batch``; the rest from ``shapes``), the new sizes propagated through the graph by ONNX shape
    inference. Returns the copy and what was bound (empty: the model unchanged). A fixed dim that
    disagrees, a dim count that does not fit, or a ``--shapes`` name that is no input is refused."""
    shapes = InputShapes.of(shapes)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inputs = [v for v in data_inputs(copy) if v.type.HasField("tensor_type")]
    unknown = sorted(set(dict(shapes.named)) - {v.name for v in inputs})
    if unknown:
        names = ", ".join(v.name for v in inputs)
        raise HarnessError(f"--shapes names {', '.join(unknown)}: the model's inputs are {names}")
    unnamed = [v for v in inputs if v.name not in dict(shapes.named)]
    if shapes.sample is not None and len(unnamed) != 1:
        raise HarnessError(
            f"--input-shape binds the one input that --shapes does not name; this model has "
            f"{len(unnamed)} such inputs of {len(inputs)} (give each its shape with --shapes "
            f"name:1x3x320x320,... or drop --input-shape)"
        )
    bound: List[str] = []
    params: Dict[str, int] = {}
    for value in inputs:
        wanted = _wanted_dims(value, shapes, batch, len(unnamed) == 1 and value in unnamed)
        shape = value.type.tensor_type.shape
        if not shape.dim and wanted:
            shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in wanted)
        for i, (dim, size) in enumerate(zip(shape.dim, wanted)):
            fixed = dim.HasField("dim_value") and dim.dim_value > 0
            if fixed and size is not None and dim.dim_value != size:
                named = dict(shapes.named)
                if value.name in named:
                    given = f"--shapes {value.name}:{'x'.join(map(str, named[value.name]))}"
                elif i == 0:
                    given = f"--batch {size}"
                else:
                    given = f"--input-shape {'x'.join(map(str, shapes.sample or ()))}"
                raise HarnessError(
                    f"input {value.name!r} has the fixed shape {_shown(value)}; {given} does not "
                    "match it"
                )
            if not fixed and size is not None:
                if dim.dim_param:
                    params[dim.dim_param] = size
                dim.Clear()
                dim.dim_value = size
                bound.append(f"{value.name}[{i}] = {size}")
    if not bound:
        return model, []
    return _propagate(copy, params), bound


def _propagate(model: onnx.ModelProto, params: Dict[str, int]) -> onnx.ModelProto:
    """Outputs' dims named like a bound input dim take its size, other dynamic output dims are
    cleared, and shapes are inferred again (leniently: where onnx cannot infer them, outputs keep
    only the sizes named like a bound dim)."""
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in params:
                size = params[dim.dim_param]
                dim.Clear()
                dim.dim_value = size
            elif not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.Clear()  # re-inferred below from the bound inputs
    del model.graph.value_info[:]
    return infer_shapes_lenient(model)


def input_dtypes(path: PathLike) -> Dict[str, np.dtype]:
    """Graph input name -> numpy dtype, initializers excluded."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        value.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
        for value in graph_inputs(model)
    }


PROTOBUF_LIMIT = 2**31 - 1  # bytes: protobuf cannot serialise (or onnx check in memory) more
_COUNT = re.compile(r"[0-9]{1,19}")  # a byte offset or length as the external-data spec writes it


def _stored_bytes(tensor: onnx.TensorProto, base: Path) -> int:
    """Check one external-data reference against its file; the bytes it reads. Refused: a missing
    or empty location, a NUL byte in it, a path outside the model's folder (a traversal), a file
    that does not exist, is not a regular file or has other names (a hard link may be a file from
    anywhere), offsets or lengths that are not byte counts or reach past the file's end."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    where = f"tensor {shown(tensor.name)}"
    location = entries.get("location", "")
    if not location or "\x00" in location:
        raise HarnessError(f"{where} keeps its data at {shown(location)}: not a file name")
    target = (base / location).resolve()
    if os.path.isabs(location) or (target != base and base not in target.parents):
        raise HarnessError(
            f"{where} keeps its data at {shown(location)}, outside the model's "
            f"folder {base}: refusing to read it (move the data file beside the model)"
        )
    if not target.is_file():
        raise HarnessError(f"{where} keeps its data in {target}, which does not exist")
    info = target.stat()
    if info.st_nlink > 1:
        raise HarnessError(
            f"{where} keeps its data in {target}, a file with {info.st_nlink} names (a hard "
            f"link): refusing to read it (copy the data file instead)"
        )
    for key in ("offset", "length"):
        if key in entries and not _COUNT.fullmatch(entries[key]):
            raise HarnessError(
                f"{where}: external-data {key} {shown(entries[key])} is not a byte count"
            )
    offset = int(entries.get("offset", "0"))
    length = int(entries["length"]) if "length" in entries else info.st_size - offset
    if offset + max(length, 0) > info.st_size or length < 0:
        raise HarnessError(
            f"{where}: its external data (offset {offset}, length {length}) reach past the end "
            f"of {target} ({info.st_size} bytes): the data file is truncated or not this model's"
        )
    return length


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> int:
    """Refuse external-data references that do not hold (see ``_stored_bytes``); the number of
    bytes they read."""
    base = base_dir.resolve()
    return sum(
        _stored_bytes(tensor, base)
        for tensor in external_data_helper._get_all_tensors(model)
        if external_data_helper.uses_external_data(tensor)
    )


def available_memory() -> Optional[int]:
    """Bytes of memory a new allocation can have without swapping (``MemAvailable``; None where
    that is unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_allocation(arrays: Dict[str, Tuple[Sequence[int], np.dtype]], what: str) -> None:
    """Refuse arrays (name -> shape and dtype) that do not fit the memory available, before any is
    allocated: random data are drawn as float64 (8 bytes an element) and then cast."""
    sizes = {name: math.prod(int(d) for d in shape) for name, (shape, _) in arrays.items()}
    needed = sum(sizes.values()) * 8 + sum(
        sizes[name] * np.dtype(dtype).itemsize for name, (_, dtype) in arrays.items()
    )
    available = available_memory()
    if available is not None and needed > available:
        name = max(sizes, key=sizes.__getitem__)
        raise HarnessError(
            f"{what}: input {name!r} of shape {tuple(arrays[name][0])} needs "
            f"{needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of memory "
            f"available (give a smaller input shape or batch)"
        )


def require_onnx_file(path: Path) -> None:
    """Refuse, in one line, an ONNX path that is missing or a folder."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise HarnessError(f"ONNX file {path} {what}")


def load_model(path: PathLike, infer_shapes: bool = True) -> onnx.ModelProto:
    """Load an ONNX file with its external data, if ``onnx.checker`` or ONNX Runtime accepts it.

    Validity is what the runtimes accept: a model the strict checker refuses (outputs without
    shapes, an unnamed graph, ...) is loaded when ONNX Runtime loads it. Shapes are inferred
    leniently: a graph whose shapes onnx cannot infer keeps the shapes it has.
    """
    path = Path(path)
    require_onnx_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for garbage input
        raise HarnessError(
            f"{path} is not a valid ONNX file ({type(exc).__name__}); export it again"
        ) from None
    if not model.graph.node:
        raise HarnessError(f"{path} holds no graph nodes: is it an ONNX model?")
    field = undecodable_text(model)
    if field:
        raise HarnessError(f"{path}: {field} is not UTF-8 text; export it again")
    external = check_external_data(model, path.parent)
    # over protobuf's 2 GB (external data): checked from the file, shapes inferred before the
    # weights are read in (neither the checker nor ONNX Runtime can take it from memory)
    large = external + model.ByteSize() >= PROTOBUF_LIMIT
    if not large:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    problem = checker_problem(path if large else model)
    if problem:
        runtime_problem = ort_problem(path if large else model)
        if runtime_problem:
            raise HarnessError(
                f"{path} is not a valid ONNX model: {problem}; ONNX Runtime refuses it too: "
                f"{runtime_problem}"
            )
    if infer_shapes:
        model = infer_shapes_lenient(model)
    problem = conv_group_problem(model)
    if problem:
        raise HarnessError(f"{path}: {problem}; ONNX Runtime cannot run it")
    if large:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
    return model


def undecodable_text(message: Any, where: str = "") -> str:
    """The first string field of a protobuf message or its nested ones (as ``graph.node[3].name``)
    that does not decode as UTF-8, which the checker and ONNX Runtime pass and protobuf gives as
    bytes; '' when every one decodes. Bytes fields (tensor data) are not read."""
    for field in message.DESCRIPTOR.fields:
        if field.type not in (field.TYPE_STRING, field.TYPE_MESSAGE):
            continue
        name = f"{where}.{field.name}" if where else field.name
        # protobuf 7 drops ``label`` for ``is_repeated`` (older releases lack the latter)
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if not repeated and field.type == field.TYPE_MESSAGE and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        for i, item in enumerate(value if repeated else [value]):
            at = f"{name}[{i}]" if repeated else name
            found = undecodable_text(item, at) if field.type == field.TYPE_MESSAGE else ""
            if found or isinstance(item, bytes):
                return found or at
    return ""


def conv_group_problem(model: onnx.ModelProto) -> str:
    """A Conv whose ``group`` does not divide its channels ('' when there is none): the checker
    and ONNX Runtime's loader accept it, running it fails."""
    shapes = {v.name: _dims(v) for v in list(model.graph.input) + list(model.graph.value_info)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kernel, data = weights[node.input[1]], shapes.get(node.input[0]) or []
        where = f"Conv {shown(node.name or node.output[0])}"
        if len(kernel) < 3:
            return f"{where}: its weight has shape {kernel}, not (out, in / group, *kernel)"
        if group < 1 or kernel[0] % group:
            return f"{where}: group {group} does not divide its {kernel[0]} output channels"
        if len(data) > 1 and isinstance(data[1], int) and data[1] != kernel[1] * group:
            return (
                f"{where}: {data[1]} input channels, but its weight takes {kernel[1]} per group "
                f"x group {group} = {kernel[1] * group}"
            )
    return ""


MIN_OPSET = 11  # older models are converted to it (the oldest opset the rewrites and TensorRT read)


def main_opset(model: onnx.ModelProto) -> int:
    """The model's version of the default (ai.onnx) opset; 0 when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgraded_opset(model: onnx.ModelProto) -> Tuple[Optional[onnx.ModelProto], str]:
    """The model at opset ``MIN_OPSET`` or later: itself (and '') when it already is, else a copy
    converted by onnx.version_converter and what was done, or None and why it could not be."""
    opset = main_opset(model)
    if opset >= MIN_OPSET or not opset:
        return model, ""
    try:
        converted = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - RuntimeError and C++ errors alike
        return None, (
            f"opset {opset} could not be converted to opset {MIN_OPSET} "
            f"(onnx.version_converter: {first_line(exc)})"
        )
    converted.ir_version = max(converted.ir_version, lowest_ir_version(converted))
    return converted, f"opset {opset} converted to opset {MIN_OPSET} with onnx.version_converter"


def checker_problem(model: Union[onnx.ModelProto, Path]) -> str:
    """What ``onnx.checker`` finds wrong with the model, or the model file ('' when it passes)."""
    try:
        onnx.checker.check_model(model if isinstance(model, onnx.ModelProto) else str(model))
    except Exception as exc:  # noqa: BLE001 - ValidationError, and C++ errors surfaced as others
        return first_line(exc)
    return ""


def ort_problem(model: Union[onnx.ModelProto, Path]) -> str:
    """Why ONNX Runtime (CPU) refuses to load the model, or the model file ('' when it loads
    it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    ort.set_default_logger_severity(3)  # its C++ warnings would reach the terminal: errors only
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        return first_line(exc)
    return ""


def infer_shapes_lenient(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape inference where it can (data propagation on), else the model unchanged."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a help, never a reason to refuse a model a runtime runs
        return model


# element types newer than IR 4 (the IR of opset 9): the IR version that introduced each
_TYPE_IR = {
    name: ir
    for ir, names in (
        (9, ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")),
        (10, ("UINT4", "INT4")),
        (11, ("FLOAT4E2M1",)),
        (12, ("FLOAT8E8M0", "UINT2", "INT2")),
    )
    for name in names
}


def _element_types(graph: onnx.GraphProto) -> Iterable[int]:
    for tensor in graph.initializer:
        yield tensor.data_type
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        yield info.type.tensor_type.elem_type


def lowest_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version that holds the model's opsets and element types (opset 17 -> IR 8)."""
    ir = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    types = set(_element_types(model.graph))
    for name, needed in _TYPE_IR.items():
        if getattr(TensorProto, name, None) in types:
            ir = max(ir, needed)
    if model.functions:
        ir = max(ir, 8)  # model-local functions came with IR 8
    return ir


def with_lowest_ir(model: onnx.ModelProto) -> onnx.ModelProto:
    """Lower the model's IR version, in place, to the lowest that holds it (never raised: IR 3
    graphs list their initializers as inputs, which later IRs read differently); returns the
    model."""
    lowest = lowest_ir_version(model)
    if not model.ir_version or lowest < model.ir_version:
        model.ir_version = lowest
    return model


def make_model(
    graph: onnx.GraphProto, opset: int = 17, extra_opsets: Optional[Dict[str, int]] = None
) -> onnx.ModelProto:
    """``onnx.helper.make_model`` with the lowest IR version that holds ``opset`` (not the installed
    onnx's newest, which older ONNX Runtime and TensorRT parsers refuse)."""
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(domain, v) for domain, v in (extra_opsets or {}).items()]
    return with_lowest_ir(helper.make_model(graph, opset_imports=opsets))


PARTIAL_SUFFIX = (
    ".partial"  # temporary files of atomic writes: .<name>.<host>-<pid>.<random>.partial
)


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _clean_stale_partials(folder: Path) -> None:
    """Remove the temporary files that writes into ``folder`` on this host left behind when they
    were killed (``kill -9``, a power cut): those whose process is gone."""
    pattern = re.compile(
        rf"\..+\.{re.escape(socket.gethostname())}-(\d+)\.[^.]+{re.escape(PARTIAL_SUFFIX)}"
    )
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.unlink(folder / name)
            except OSError:
                pass  # another run cleaned it first, or the folder does not let us


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def _temporary_beside(path: Path) -> str:
    """A new temporary file in ``path``'s folder, with the permissions a plain ``open`` gives; stale
    ones that killed writes left in that folder are removed first."""
    _clean_stale_partials(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_owner()}.", suffix=PARTIAL_SUFFIX, dir=str(path.parent)
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _open_in_place(path: Path) -> BinaryIO:
    """A character device or FIFO opened for writing, as a shell's ``>`` opens it."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise HarnessError(
            f"{path} is neither a regular file, a character device nor a FIFO: not written"
        )
    try:  # non-blocking: a FIFO nobody reads fails at once instead of hanging
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise HarnessError(f"{path} is a FIFO that nothing reads: not written") from None
        raise
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "wb")


def _write_atomic(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)``: into a temporary file beside it, then renamed over
    it, so that a failure never leaves a half-written file; a device node or FIFO is written in
    place (a rename would replace /dev/null with a regular file)."""
    path = Path(path)
    if is_special_file(path):
        with _open_in_place(path) as handle:
            write(handle)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_model(model: onnx.ModelProto, path: PathLike) -> Path:
    """Write a model atomically (a temporary file in the same folder, then a rename), with the
    lowest IR version that holds its opsets (the model passed in is not modified)."""
    path = Path(path)
    stored_ir = model.ir_version
    try:
        with_lowest_ir(model)
        if _inline_bytes(model) < PROTOBUF_LIMIT - (64 << 20):  # the graph itself is < 64 MB
            return _write_atomic(path, lambda handle: onnx.save(model, handle))
        return _save_with_external_data(model, path)
    finally:
        model.ir_version = stored_ir


def _inline_bytes(model: onnx.ModelProto) -> int:
    return sum(len(tensor.raw_data) for tensor in external_data_helper._get_all_tensors(model))


def _save_with_external_data(model: onnx.ModelProto, path: Path) -> Path:
    """A model over protobuf's 2 GB: its weights in ``<name>.data`` beside it (each written
    atomically), as ONNX Runtime and TensorRT read them; the model passed in is left as it was."""
    if is_special_file(path):
        raise HarnessError(
            f"{path}: the model is over 2 GB and needs a regular file (its weights go beside it)"
        )
    data = path.with_name(f"{path.name}.data")
    moved: List[Tuple[onnx.TensorProto, bytes, bool]] = []  # tensor, its bytes, data_location set

    def write_weights(handle: BinaryIO) -> None:
        for tensor in external_data_helper._get_all_tensors(model):
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
                raw, location = tensor.raw_data, tensor.HasField("data_location")
                external_data_helper.set_external_data(tensor, data.name, handle.tell(), len(raw))
                handle.write(raw)
                tensor.ClearField("raw_data")
                moved.append((tensor, raw, location))

    try:
        _write_atomic(data, write_weights)
        return _write_atomic(path, lambda handle: onnx.save(model, handle))
    finally:
        for tensor, raw, location in moved:
            del tensor.external_data[:]
            tensor.data_location = TensorProto.DEFAULT
            if not location:
                tensor.ClearField("data_location")
            tensor.raw_data = raw


def copy_unchanged(source: PathLike, target: PathLike) -> Path:
    """Write the model of ``source`` to ``target`` unchanged: its very bytes, atomically, when it
    has no external data and already carries the lowest IR version; else through ``save_model``
    (data inlined, IR lowered)."""
    source, target = Path(source), Path(target)
    model = onnx.load(str(source), load_external_data=False)
    external = any(
        external_data_helper.uses_external_data(t)
        for t in external_data_helper._get_all_tensors(model)
    )
    if external or lowest_ir_version(model) < model.ir_version:
        check_external_data(model, source.parent)
        external_data_helper.load_external_data_for_model(model, str(source.parent))
        return save_model(model, target)

    def copy(handle: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle)

    return _write_atomic(target, copy)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write a text file (UTF-8) atomically, so that a failure never leaves a half-written file."""
    return _write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))
