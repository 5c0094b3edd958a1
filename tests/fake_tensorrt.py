"""Strict test doubles of the ``tensorrt`` module (per version) and of ``pycuda.driver``, from
recorded data.

The TensorRT surfaces (classes, members, member kinds, enum values, pybind11 signatures) were read
out of NVIDIA's binding modules (shared/trt-api, vendored in tests/data/trt/surfaces/). A double of
one version:
- has exactly that version's classes, functions and members: anything else raises AttributeError;
- takes enum values from the data (they differ between versions);
- checks each call's positional argument count against the recorded signatures;
- behaves just enough for build -> serialize -> deserialize -> context -> set_input_shape /
  set_tensor_address -> execute_async_v3 -> read-back: the "engine" runs the ONNX file with ONNX
  Runtime, and "device memory" is host memory owned by the pycuda double. Every other method returns
  None;
- profiles as TensorRT documents (NvInferRuntime.h): a context's ``IProfiler`` is called once per
  layer per ``execute_async_v3``, inside it while ``enqueue_emits_profile`` is on (the default),
  else at ``report_to_profiler()``; the engine inspector returns layer information in the version's
  layout, detailed only when the engine was built with ``ProfilingVerbosity.DETAILED`` (names
  otherwise). Both come from NVIDIA's recorded files (tests/trt_recordings.py): the layer
  information and each layer's recorded ``averageMs``, whatever the model.
No figure a double produces is a TensorRT measurement: its layer times are a recording's, replayed.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from harness.onnx_io import graph_inputs

SURFACES = Path(__file__).parent / "data" / "trt" / "surfaces"
VERSIONS = {
    "8.5": "trt-8.5.3.1.srcbuild.json",
    "10.13": "trt-10.13.0.35.wheel.json",
    "11.4": "trt-11.4.0.106.wheel.json",
}
MEMORY: Dict[int, np.ndarray] = {}  # device pointer -> host array standing in for device memory
CALLS: List[str] = []  # "Class.member" of every call into the double, for tests to inspect


def _arity(signature: Any) -> Optional[range]:
    """Allowed positional argument counts (self excluded) from pybind11 signature strings; None:
    unknown."""
    texts = signature if isinstance(signature, list) else [signature]
    counts = set()
    for text in texts:
        match = re.match(r"\w+\((.*)\) ->", str(text))
        if not match or "*args" in match.group(1):
            continue
        params = [
            p
            for p in re.split(r",\s*(?![^\[]*\])", match.group(1))
            if p and not p.startswith("self")
        ]
        required = sum(1 for p in params if "=" not in p)
        counts.update(range(required, len(params) + 1))
    return range(min(counts), max(counts) + 1) if counts else None


class _Enum(int):
    """An enum member with the recorded integer value."""

    def __new__(cls, name: str, value: int):
        member = int.__new__(cls, value)
        member.name = name
        return member

    def __repr__(self) -> str:
        return self.name


def _enum_class(name: str, members: Dict[str, int]) -> type:
    namespace: Dict[str, Any] = {member: _Enum(member, value) for member, value in members.items()}
    namespace["__members__"] = dict(namespace)  # pybind11 enums list their members here
    return type(name, (), namespace)


class _Strict:
    """Base of every class double: members outside the recorded surface raise AttributeError."""

    _surface: Dict[str, Any] = {}
    _behaviour: Dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_values", {})

    def __getattr__(self, name: str) -> Any:
        surface = type(self)._surface
        if name not in surface.get("members", ()):
            raise AttributeError(
                f"'tensorrt.{type(self).__name__}' object has no attribute '{name}' "
                f"(not in TensorRT {_module_version(self)})"
            )
        kind = surface.get("kinds", {}).get(name, "method")
        if kind.startswith("property"):
            default = PROPERTY_DEFAULTS.get(f"{type(self).__name__}.{name}")
            return self._values.get(name, default() if default else None)
        arity = _arity(surface.get("signatures", {}).get(name))

        def method(*args: Any, **kwargs: Any) -> Any:
            if arity is not None and len(args) + len(kwargs) not in arity:
                raise TypeError(f"{type(self).__name__}.{name}(): incompatible arguments {args!r}")
            CALLS.append(f"{type(self).__name__}.{name}")
            behaviour = type(self)._behaviour.get(name)
            return behaviour(self, *args, **kwargs) if behaviour else None

        return method

    def __setattr__(self, name: str, value: Any) -> None:
        surface = type(self)._surface
        kind = surface.get("kinds", {}).get(name)
        if "_surface" not in type(self).__dict__ and kind is None:  # a Python subclass (a logger)
            object.__setattr__(self, name, value)
            return
        if kind is None and name in type(self).__dict__:
            object.__setattr__(self, name, value)
            return
        if kind != "property_rw":
            raise AttributeError(f"can't set attribute '{name}' of tensorrt.{type(self).__name__}")
        _check_type(f"{type(self).__name__}.{name}", value)
        CALLS.append(f"{type(self).__name__}.{name}=")
        self._values[name] = value


def _module_version(obj: Any) -> str:
    return getattr(sys.modules.get("tensorrt"), "__version__", "?")


# What pybind11 accepts for a property (a TensorRT class or enum of the module; None resets)
PROPERTY_TYPES = {
    "IExecutionContext.profiler": "IProfiler",
    "IBuilderConfig.profiling_verbosity": "ProfilingVerbosity",
    "EngineInspector.execution_context": "IExecutionContext",
}


def _check_type(where: str, value: Any) -> None:
    """TypeError, as pybind11 raises, when ``value`` is not what the recorded property takes; a
    Python subclass (an IProfiler) must have run its base ``__init__``, as pybind11 requires."""
    wanted = PROPERTY_TYPES.get(where)
    if wanted is None or value is None:
        return
    _is(value, wanted, where)
    if isinstance(value, _Strict) and "_values" not in vars(value):
        raise TypeError(f"{where}: {type(value).__name__}.__init__() must call the base __init__")


def _is(value: Any, wanted: str, where: str) -> None:
    """TypeError unless ``value`` is a ``tensorrt.<wanted>`` (class instance or enum member)."""
    cls = getattr(sys.modules["tensorrt"], wanted)
    members = getattr(cls, "__members__", None)
    if members is not None:
        ok = isinstance(value, _Enum) and int(members.get(value.name, -1)) == int(value)
    else:
        ok = isinstance(value, cls)
    if not ok:
        raise TypeError(f"{where}: incompatible argument {value!r}, a tensorrt.{wanted} is needed")


# --- behaviour: just enough for the build -> run path ---------------------------------------------
def _tensor(name: str, shape, dtype) -> Any:
    """An ITensor double: name, shape, dtype; never a shape tensor (image models)."""
    tensor = sys.modules["tensorrt"].ITensor()
    tensor._values.update(name=name, shape=tuple(shape), dtype=dtype, is_shape_tensor=False)
    return tensor


_LAYER_TYPES = {  # ONNX op -> trt.LayerType member, for the few ops the tests' graphs hold
    "Conv": "CONVOLUTION",
    "Relu": "ACTIVATION",
    "Add": "ELEMENTWISE",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
}


def _layer(node: Any) -> Any:
    trt = sys.modules["tensorrt"]
    layer = trt.ILayer()
    kind = getattr(trt.LayerType, _LAYER_TYPES.get(node.op_type, "PLUGIN_V2"), None)
    layer._values.update(name=node.name, type=kind, precision_is_set=False)
    return layer


def _network_from_onnx(network, path: str) -> bool:
    import onnx

    model = onnx.load(path, load_external_data=False)
    trt = sys.modules["tensorrt"]

    def tensors(values):
        found = []
        for value in values:
            dims = [
                d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim
            ]
            half = value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
            found.append(
                _tensor(value.name, dims, trt.DataType.HALF if half else trt.DataType.FLOAT)
            )
        return found

    network._values.update(
        _onnx=path,
        _inputs=tensors(graph_inputs(model)),
        _outputs=tensors(model.graph.output),
        _layers=[_layer(node) for node in model.graph.node],
    )
    return True


def _parse_from_file(parser, path: str) -> bool:
    """Parse into the parser's network; an unreadable model is one ParserError at node -1, as
    TensorRT's."""
    try:
        return _network_from_onnx(parser._values["_network"], path)
    except Exception as exc:  # noqa: BLE001 - any load failure is a parser error
        error = sys.modules["tensorrt"].ParserError()
        error._values.update(_node=-1, _desc=f"Failed to parse ONNX model: {exc}")
        parser._errors.append(error)
        return False


def _network(builder, flags: int = 0) -> Any:
    trt = sys.modules["tensorrt"]
    network = trt.INetworkDefinition()
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    strongly_typed = (typed is not None and bool(flags & (1 << int(typed)))) or (
        int(trt.__version__.split(".")[0]) >= 11  # 11 builds every network strongly typed
    )
    network._values.update(_flags=int(flags), _strongly_typed=strongly_typed)
    return network


def _host_memory(data: bytes) -> Any:
    return sys.modules["tensorrt"].IHostMemory(data)


def _serialize(builder, network, config) -> Any:
    trt = sys.modules["tensorrt"]
    flags = [
        name
        for name, value in vars(trt.BuilderFlag).items()
        if isinstance(value, _Enum) and config._values.get("_flags", set()) & {int(value)}
    ]
    device = config._values.get("default_device_type")
    plan = {
        "onnx": network._values["_onnx"],
        "tensorrt": trt.__version__,
        "flags": sorted(flags),
        "profiles": config._values.get("_profiles", []),
        "strongly_typed": bool(network._values.get("_strongly_typed")),
        "device": device.name if device is not None else "GPU",
        "dla_core": config._values.get("DLA_core", -1),
        "calibration_batches": _calibrate(network, config) if "INT8" in flags else None,
        "profiling_verbosity": config.profiling_verbosity.name,
    }
    return _host_memory(json.dumps(plan).encode())


def _calibrate(network, config) -> int:
    """What the builder does with an INT8 calibrator: use its cached table, or pull every batch from
    it (device pointers it copied to), then hand it the table to cache. Returns the batches
    pulled."""
    calibrator = config._values.get("int8_calibrator")
    if calibrator is None or calibrator.read_calibration_cache():
        return 0
    names = [t.name for t in network._values["_inputs"]]
    pulled = 0
    while True:
        pointers = calibrator.get_batch(names)
        if not pointers:
            break
        assert all(int(p) in MEMORY for p in pointers), "calibration batch not in device memory"
        pulled += 1
    calibrator.write_calibration_cache(b"calibration table")
    return pulled


def _deserialize(runtime, plan) -> Any:
    data = json.loads(bytes(plan).decode())
    if data["tensorrt"] != sys.modules["tensorrt"].__version__:
        return None  # a plan of another version does not load (the runtime logs, returns None)
    engine = sys.modules["tensorrt"].ICudaEngine()
    engine._values.update(_plan=data, _dla_core=runtime._values.get("DLA_core"))
    return engine


def _engine_tensors(engine) -> List[Any]:
    if "_tensors" not in engine._values:
        import onnxruntime as ort

        trt = sys.modules["tensorrt"]
        session = ort.InferenceSession(
            engine._values["_plan"]["onnx"], providers=["CPUExecutionProvider"]
        )
        tensors = []
        for arg, mode in [(a, trt.TensorIOMode.INPUT) for a in session.get_inputs()] + [
            (a, trt.TensorIOMode.OUTPUT) for a in session.get_outputs()
        ]:
            dims = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
            half = arg.type == "tensor(float16)"
            tensors.append(
                (_tensor(arg.name, dims, trt.DataType.HALF if half else trt.DataType.FLOAT), mode)
            )
        engine._values.update(_tensors=tensors, _session=session)
    return engine._values["_tensors"]


def _context(engine) -> Any:
    context = sys.modules["tensorrt"].IExecutionContext()
    context._values.update(_engine=engine, _shapes={}, _addresses={})
    return context


def _find(engine, name: str):
    for tensor, mode in _engine_tensors(engine):
        if tensor.name == name:
            return tensor, mode
    raise KeyError(name)


def _context_shape(context, name: str):
    engine = context._values["_engine"]
    tensor, mode = _find(engine, name)
    if name in context._values["_shapes"]:
        return tuple(context._values["_shapes"][name])
    if mode == sys.modules["tensorrt"].TensorIOMode.OUTPUT and any(d < 0 for d in tensor.shape):
        batch = next((s[0] for s in context._values["_shapes"].values()), -1)
        return (batch,) + tuple(tensor.shape[1:])
    return tensor.shape


def _set_input_shape(context, name: str, shape) -> bool:
    tensor, _mode = _find(context._values["_engine"], name)
    shape = tuple(shape)
    if len(shape) != len(tensor.shape) or any(
        t >= 0 and t != s for t, s in zip(tensor.shape, shape)
    ):
        return False
    context._values["_shapes"][name] = shape
    return True


def _set_tensor_address(context, name: str, address: int) -> bool:
    if int(address) not in MEMORY:
        return False
    context._values["_addresses"][name] = int(address)
    return True


def _execute_async_v3(context, stream_handle: int) -> bool:
    engine = context._values["_engine"]
    session = engine._values["_session"]
    addresses = context._values["_addresses"]
    trt = sys.modules["tensorrt"]
    tensors = _engine_tensors(engine)
    if any(t.name not in addresses for t, _ in tensors):
        return False
    feeds = {
        t.name: MEMORY[addresses[t.name]]
        .view(_NP[int(t.dtype)])
        .reshape(_context_shape(context, t.name))
        for t, mode in tensors
        if mode == trt.TensorIOMode.INPUT
    }
    names = [t.name for t, mode in tensors if mode == trt.TensorIOMode.OUTPUT]
    for name, value in zip(names, session.run(names, feeds)):
        MEMORY[addresses[name]][...] = np.frombuffer(value.tobytes(), dtype=np.uint8)
    _report_layers(context)
    return True


# --- profiling: IProfiler reports and the engine inspector, from NVIDIA's recordings -------------
def _recording(engine) -> tuple:
    """(layer information, profile records) of this version's recording (tests/trt_recordings.py);
    the DLA profile on an engine built for the DLA."""
    from tests.trt_recordings import recording

    version = sys.modules["tensorrt"].__version__
    key = next(k for k in VERSIONS if version.startswith(k + "."))
    return recording(key, dla=engine._values["_plan"]["device"] == "DLA")


def _report_layers(context) -> None:
    """After an enqueue with a profiler: report now (``enqueue_emits_profile`` on), or keep the
    reports for ``report_to_profiler``."""
    profiler = context._values.get("profiler")
    if profiler is None:
        return
    _, records = _recording(context._values["_engine"])
    reports = [(r["name"], float(r["averageMs"])) for r in records if "name" in r]
    if context.enqueue_emits_profile:
        for name, ms in reports:
            profiler.report_layer_time(name, ms)
    else:
        context._values["_pending"] = reports


def _report_to_profiler(context) -> bool:
    profiler = context._values.get("profiler")
    if profiler is None:
        return False  # "e.g. profiler not provided"
    for name, ms in context._values.pop("_pending", []):
        profiler.report_layer_time(name, ms)
    return True


def _inspector(engine) -> Any:
    inspector = sys.modules["tensorrt"].EngineInspector()
    inspector._values["_engine"] = engine
    return inspector


def _engine_information(inspector, format) -> str:
    """The recording's layer information as this engine's verbosity allows: all of it when built
    DETAILED, layer names when LAYER_NAMES_ONLY, nothing when NONE."""
    trt = sys.modules["tensorrt"]
    _is(format, "LayerInformationFormat", "EngineInspector.get_engine_information")
    engine = inspector._values["_engine"]
    info, _ = _recording(engine)
    verbosity = engine._values["_plan"]["profiling_verbosity"]
    if verbosity == "NONE":
        return ""
    if verbosity != "DETAILED":
        info["Layers"] = [layer["Name"] for layer in info["Layers"]]
    if int(format) == int(trt.LayerInformationFormat.ONELINE):
        return "\n".join(str(layer) for layer in info["Layers"])
    return json.dumps(info, indent=2)


def _timing_cache(data: bytes) -> Any:
    cache = sys.modules["tensorrt"].ITimingCache()
    cache._values["_data"] = data
    return cache


_NP = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.bool_, 5: np.uint8}

BEHAVIOUR = {
    "Builder": {
        "create_network": lambda self, flags=0: _network(self, flags),
        "create_builder_config": lambda self: sys.modules["tensorrt"].IBuilderConfig(),
        "create_optimization_profile": lambda self: sys.modules["tensorrt"].IOptimizationProfile(),
        "build_serialized_network": _serialize,
    },
    "INetworkDefinition": {
        "get_input": lambda self, i: self._values["_inputs"][i],
        "get_output": lambda self, i: self._values["_outputs"][i],
        "get_layer": lambda self, i: self._values["_layers"][i],
        "__len__": lambda self: len(self._values["_layers"]),
        "__getitem__": lambda self, i: self._values["_layers"][i],
        "get_flag": lambda self, flag: bool(self._values["_flags"] & (1 << int(flag))),
    },
    "OnnxParser": {
        "parse_from_file": _parse_from_file,
        "get_error": lambda self, i: self._errors[i],
    },
    "ParserError": {
        "node": lambda self: self._values["_node"],
        "desc": lambda self: self._values["_desc"],
        "__str__": lambda self: f"In node {self.node()}: {self.desc()}",
    },
    "IBuilderConfig": {
        "set_flag": lambda self, f: self._values.setdefault("_flags", set()).add(int(f)),
        "clear_flag": lambda self, f: self._values.setdefault("_flags", set()).discard(int(f)),
        "get_flag": lambda self, f: int(f) in self._values.get("_flags", set()),
        "add_optimization_profile": lambda self, p: (
            self._values.setdefault("_profiles", []).append(p._values.get("_shapes", {})) or 0
        ),
        "create_timing_cache": lambda self, data: _timing_cache(bytes(data)),
        "set_timing_cache": lambda self, cache, ignore_mismatch: (
            self._values.update(_timing_cache=cache) or True
        ),
        "set_memory_pool_limit": lambda self, pool, size: self._values.setdefault(
            "_pools", {}
        ).update({int(pool): int(size)}),
        "get_memory_pool_limit": lambda self, pool: self._values.get("_pools", {}).get(
            int(pool), 0
        ),
        "get_tactic_sources": lambda self: 0,
        "get_preview_feature": lambda self, feature: False,
        "get_quantization_flag": lambda self, flag: False,
        "get_timing_cache": lambda self: self._values.get("_timing_cache"),
    },
    "ITimingCache": {
        "serialize": lambda self: _host_memory(self._values["_data"] + b"+"),
        "combine": lambda self, other, ignore_mismatch: True,
    },
    "IOptimizationProfile": {
        "set_shape": lambda self, name, lo, opt, hi: self._values.setdefault("_shapes", {}).update(
            {name: [list(lo), list(opt), list(hi)]}
        )
    },
    "Runtime": {"deserialize_cuda_engine": _deserialize},
    "ICudaEngine": {
        "get_tensor_name": lambda self, i: _engine_tensors(self)[i][0].name,
        "get_tensor_mode": lambda self, name: _find(self, name)[1],
        "get_tensor_shape": lambda self, name: _find(self, name)[0].shape,
        "get_tensor_dtype": lambda self, name: _find(self, name)[0].dtype,
        "create_execution_context": _context,
        "create_engine_inspector": _inspector,
    },
    "IExecutionContext": {
        "set_input_shape": _set_input_shape,
        "get_tensor_shape": _context_shape,
        "set_tensor_address": _set_tensor_address,
        "execute_async_v3": _execute_async_v3,
        "report_to_profiler": _report_to_profiler,
    },
    "EngineInspector": {"get_engine_information": _engine_information},
}
PROPERTIES = {
    "INetworkDefinition": {
        "num_inputs": lambda self: len(self._values["_inputs"]),
        "num_outputs": lambda self: len(self._values["_outputs"]),
    },
    "ICudaEngine": {"num_io_tensors": lambda self: len(_engine_tensors(self))},
    "Builder": {"num_DLA_cores": lambda self: 0},
    "IBuilderConfig": {
        "num_optimization_profiles": lambda self: len(self._values.get("_profiles", []))
    },
    "OnnxParser": {"num_errors": lambda self: len(self._errors)},
}
# What a read-write property holds before it is set (TensorRT's documented defaults).
PROPERTY_DEFAULTS = {
    "IBuilderConfig.DLA_core": lambda: -1,
    "IBuilderConfig.default_device_type": lambda: sys.modules["tensorrt"].DeviceType.GPU,
    "IBuilderConfig.profiling_verbosity": lambda: (
        sys.modules["tensorrt"].ProfilingVerbosity.LAYER_NAMES_ONLY
    ),
    "IExecutionContext.enqueue_emits_profile": lambda: True,
}
FUNCTIONS = {"init_libnvinfer_plugins": lambda logger, namespace: True}
_DUNDERS = {"__len__": None, "__getitem__": None, "__str__": None, "__enter__": lambda self: self}
_DUNDERS["__exit__"] = lambda self, *exc: False


def make_tensorrt(version: str) -> types.ModuleType:
    """A strict ``tensorrt`` module double of ``version`` ('8.5', '10.13' or '11.4')."""
    data = json.loads((SURFACES / VERSIONS[version]).read_text())
    module = types.ModuleType("tensorrt")
    module.__version__ = data["version"]
    enums = {
        name: _enum_class(name.split(".")[-1], members) for name, members in data["enums"].items()
    }
    for name, surface in data["classes"].items():
        if name in enums:
            setattr(module, name, enums[name])
            continue
        namespace: Dict[str, Any] = {"_surface": surface, "_behaviour": BEHAVIOUR.get(name, {})}
        for prop, getter in PROPERTIES.get(name, {}).items():
            if prop in surface["members"]:
                namespace[prop] = property(getter)
        for member in surface[
            "members"
        ]:  # nested enums (ILogger.Severity) and class-level constants
            nested = enums.get(f"{name}.{member}")
            if nested is not None:
                namespace[member] = nested
        behaviour = BEHAVIOUR.get(name, {})
        for (
            dunder,
            default,
        ) in _DUNDERS.items():  # Python looks these up on the type, not __getattr__
            if dunder in surface["members"] and (dunder in behaviour or default):
                namespace[dunder] = behaviour.get(dunder, default)
        bases = (bytes, _Strict) if name == "IHostMemory" else (_Strict,)  # the buffer protocol
        cls = type(name, bases, namespace)
        setattr(module, name, cls)
    for name in ("Logger", "ILogger"):  # severities are class attributes of the logger classes
        cls = getattr(module, name)
        for severity, value in data["enums"].get("ILogger.Severity", {}).items():
            if severity in data["classes"][name]["members"]:
                setattr(cls, severity, _Enum(severity, value))

    def parser_init(self, network, logger) -> None:
        _Strict.__init__(self)
        self._values["_network"] = network
        object.__setattr__(self, "_errors", [])

    module.OnnxParser.__init__ = parser_init
    for name, signature in data["functions"].items():
        setattr(module, name, _function(name, signature, FUNCTIONS.get(name)))
    if "nptype" in data["functions"]:
        module.nptype = lambda dtype: _NP[int(dtype)]
    return module


def _function(name: str, signature: Any, behaviour: Any) -> Any:
    """A module-level function of the double: arity checked, call recorded, None unless given."""
    arity = _arity(signature)

    def function(*args: Any, **kwargs: Any) -> Any:
        if arity is not None and len(args) + len(kwargs) not in arity:
            raise TypeError(f"tensorrt.{name}(): incompatible arguments {args!r}")
        CALLS.append(name)
        return behaviour(*args, **kwargs) if behaviour else None

    return function


# --- pycuda.driver double -------------------------------------------------------------------------
class _DeviceAllocation(int):
    def free(self) -> None:
        MEMORY.pop(int(self), None)


def make_pycuda() -> Dict[str, types.ModuleType]:
    """``pycuda``, ``pycuda.driver`` and ``pycuda.autoprimaryctx`` doubles with pycuda's own names;
    device memory is host memory, events read a monotonic clock."""
    import time

    driver = types.ModuleType("pycuda.driver")
    counter = {"next": 0x10000}
    contexts: List[str] = []

    def mem_alloc(nbytes: int) -> _DeviceAllocation:
        address = counter["next"]
        counter["next"] += max(int(nbytes), 1) + 256
        MEMORY[address] = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        return _DeviceAllocation(address)

    def copy_in(device, host, stream=None) -> None:
        MEMORY[int(device)][: host.nbytes] = np.frombuffer(
            np.ascontiguousarray(host).tobytes(), np.uint8
        )

    def copy_out(host, device, stream=None) -> None:
        host[...] = np.frombuffer(MEMORY[int(device)][: host.nbytes].tobytes(), host.dtype).reshape(
            host.shape
        )

    class Stream:
        handle = 7

        def synchronize(self) -> None:
            pass

    class Event:
        def record(self, stream=None) -> None:
            self.at = time.perf_counter()

        def synchronize(self) -> None:
            pass

        def time_since(self, other: Event) -> float:
            return (self.at - other.at) * 1000.0

    class Device:
        def __init__(self, ordinal: int) -> None:
            self.ordinal = ordinal

        def name(self) -> str:
            return "stand-in GPU (host memory)"

        def compute_capability(self):
            return (7, 2)

        def retain_primary_context(self):
            contexts.append("primary")
            return types.SimpleNamespace(push=lambda: None, pop=lambda: None, detach=lambda: None)

        def make_context(self):
            contexts.append("made")
            return types.SimpleNamespace(push=lambda: None, pop=lambda: None, detach=lambda: None)

    driver.init = lambda: None
    driver.Device = Device
    driver.Stream, driver.Event = Stream, Event
    driver.mem_alloc, driver.pagelocked_empty = (
        mem_alloc,
        lambda shape, dtype: np.empty(shape, dtype),
    )
    driver.memcpy_htod_async, driver.memcpy_dtoh_async = copy_in, copy_out
    driver.memcpy_htod, driver.memcpy_dtoh = copy_in, copy_out
    driver.contexts_made = contexts
    package = types.ModuleType("pycuda")
    package.driver = driver
    primary = types.ModuleType("pycuda.autoprimaryctx")
    primary.context = Device(0).retain_primary_context()
    package.autoprimaryctx = primary
    return {"pycuda": package, "pycuda.driver": driver, "pycuda.autoprimaryctx": primary}


TRT_MODULES = ("harness.backends.trt.build", "harness.backends.trt.runner")  # import tensorrt


def install(monkeypatch: Any, version: str) -> None:
    """Put the doubles of ``version`` in place of tensorrt and pycuda for one test.

    Polygraphy imports tensorrt lazily and keeps the module it first got, so its modules (and the
    runner, which imports them) are dropped to be imported afresh against this version's double.
    """
    fakes = {"tensorrt": make_tensorrt(version), **make_pycuda()}
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in list(sys.modules):
        if name.split(".")[0] == "polygraphy" or name in TRT_MODULES:
            monkeypatch.delitem(sys.modules, name)
