"""Strict test doubles of the ``tensorrt`` module (per version) and of ``pycuda.driver``, from recorded data.

The TensorRT surfaces (classes, members, member kinds, enum values, pybind11 signatures) were read out of
NVIDIA's binding modules (shared/trt-api, vendored in tests/data/trt/surfaces/). A double of one version:
- has exactly that version's classes, functions and members: anything else raises AttributeError;
- takes enum values from the data (they differ between versions);
- checks each call's positional argument count against the recorded signatures;
- behaves just enough for build -> serialize -> deserialize -> context -> set_input_shape /
  set_tensor_address -> execute_async_v3 -> read-back: the "engine" runs the ONNX file with ONNX Runtime, and
  "device memory" is host memory owned by the pycuda double. Every other method returns None.
No figure a double produces is a TensorRT measurement.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

SURFACES = Path(__file__).parent / "data" / "trt" / "surfaces"
VERSIONS = {
    "8.5": "trt-8.5.3.1.srcbuild.json",
    "10.13": "trt-10.13.0.35.wheel.json",
    "11.4": "trt-11.4.0.106.wheel.json",
}
MEMORY: Dict[int, np.ndarray] = {}  # device pointer -> host array standing in for device memory
CALLS: List[str] = []  # "Class.member" of every call into the double, for tests to inspect


def _arity(signature: Any) -> Optional[range]:
    """Allowed positional argument counts (self excluded) from pybind11 signature strings; None: unknown."""
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
    namespace = {member: _Enum(member, value) for member, value in members.items()}
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
            return self._values.get(name)
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
        if kind is None and name in type(self).__dict__:
            object.__setattr__(self, name, value)
            return
        if kind != "property_rw":
            raise AttributeError(f"can't set attribute '{name}' of tensorrt.{type(self).__name__}")
        CALLS.append(f"{type(self).__name__}.{name}=")
        self._values[name] = value


def _module_version(obj: Any) -> str:
    return getattr(sys.modules.get("tensorrt"), "__version__", "?")


# --- behaviour: just enough for the build -> run path --------------------------------------------------------
class _Tensor:
    def __init__(self, name: str, shape, dtype) -> None:
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


def _network_from_onnx(network, path: str) -> bool:
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    trt = sys.modules["tensorrt"]

    def tensors(values):
        found = []
        for value in values:
            if value.name in initializers:
                continue
            dims = [
                d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim
            ]
            half = value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
            found.append(
                _Tensor(value.name, dims, trt.DataType.HALF if half else trt.DataType.FLOAT)
            )
        return found

    network._values.update(
        _onnx=path, _inputs=tensors(model.graph.input), _outputs=tensors(model.graph.output)
    )
    return True


def _serialize(builder, network, config) -> bytes:
    trt = sys.modules["tensorrt"]
    flags = [
        name
        for name, value in vars(trt.BuilderFlag).items()
        if isinstance(value, _Enum) and config._values.get("_flags", set()) & {int(value)}
    ]
    plan = {
        "onnx": network._values["_onnx"],
        "tensorrt": trt.__version__,
        "flags": sorted(flags),
        "profiles": config._values.get("_profiles", []),
        "strongly_typed": bool(network._values.get("_strongly_typed")),
    }
    return json.dumps(plan).encode()


def _deserialize(runtime, plan) -> Any:
    data = json.loads(bytes(plan).decode())
    if data["tensorrt"] != sys.modules["tensorrt"].__version__:
        return None  # a plan of another TensorRT version does not load (the real runtime logs and returns None)
    engine = sys.modules["tensorrt"].ICudaEngine()
    engine._values.update(_plan=data, _dla_core=runtime._values.get("DLA_core"))
    return engine


def _engine_tensors(engine) -> List[_Tensor]:
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
                (_Tensor(arg.name, dims, trt.DataType.HALF if half else trt.DataType.FLOAT), mode)
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
    return True


def _timing_cache(data: bytes) -> Any:
    cache = sys.modules["tensorrt"].ITimingCache()
    cache._values["_data"] = data
    return cache


_NP = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.bool_, 5: np.uint8}

BEHAVIOUR = {
    "Builder": {
        "create_network": lambda self, *a: sys.modules["tensorrt"].INetworkDefinition(),
        "create_builder_config": lambda self: sys.modules["tensorrt"].IBuilderConfig(),
        "create_optimization_profile": lambda self: sys.modules["tensorrt"].IOptimizationProfile(),
        "build_serialized_network": _serialize,
    },
    "INetworkDefinition": {
        "get_input": lambda self, i: self._values["_inputs"][i],
        "get_output": lambda self, i: self._values["_outputs"][i],
    },
    "OnnxParser": {
        "parse_from_file": lambda self, path: _network_from_onnx(self._values["_network"], path)
    },
    "IBuilderConfig": {
        "set_flag": lambda self, f: self._values.setdefault("_flags", set()).add(int(f)),
        "clear_flag": lambda self, f: self._values.setdefault("_flags", set()).discard(int(f)),
        "get_flag": lambda self, f: int(f) in self._values.get("_flags", set()),
        "add_optimization_profile": lambda self, p: (
            self._values.setdefault("_profiles", []).append(p._values.get("_shapes", {})) or 0
        ),
        "create_timing_cache": lambda self, data: _timing_cache(bytes(data)),
        "set_timing_cache": lambda self, cache, ignore: (
            self._values.update(_timing_cache=cache) or True
        ),
        "get_timing_cache": lambda self: self._values.get("_timing_cache"),
    },
    "ITimingCache": {"serialize": lambda self: self._values["_data"] + b"+"},
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
    },
    "IExecutionContext": {
        "set_input_shape": _set_input_shape,
        "get_tensor_shape": _context_shape,
        "set_tensor_address": _set_tensor_address,
        "execute_async_v3": _execute_async_v3,
    },
}
PROPERTIES = {
    "INetworkDefinition": {
        "num_inputs": lambda self: len(self._values["_inputs"]),
        "num_outputs": lambda self: len(self._values["_outputs"]),
    },
    "ICudaEngine": {"num_io_tensors": lambda self: len(_engine_tensors(self))},
    "Builder": {"num_DLA_cores": lambda self: 0},
}


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
        cls = type(name, (_Strict,), namespace)
        setattr(module, name, cls)
    for name in ("Logger", "ILogger"):  # severities are class attributes of the logger classes
        cls = getattr(module, name)
        for severity, value in data["enums"].get("ILogger.Severity", {}).items():
            if severity in data["classes"][name]["members"]:
                setattr(cls, severity, _Enum(severity, value))

    def parser_init(self, network, logger) -> None:
        _Strict.__init__(self)
        self._values["_network"] = network

    module.OnnxParser.__init__ = parser_init
    if "nptype" in data["functions"]:
        module.nptype = lambda dtype: _NP[int(dtype)]
    return module


# --- pycuda.driver double ---------------------------------------------------------------------------------
class _DeviceAllocation(int):
    def free(self) -> None:
        MEMORY.pop(int(self), None)


def make_pycuda() -> Dict[str, types.ModuleType]:
    """``pycuda``, ``pycuda.driver`` and ``pycuda.autoprimaryctx`` doubles with pycuda's own names; device
    memory is host memory, events read a monotonic clock."""
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
