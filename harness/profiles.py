"""Device profiles: validated YAML files in ``device_profiles/``.

Each describes a target and how to benchmark on it.

Runs on the device too: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union, get_type_hints

import yaml

from harness.errors import HarnessError, finite_number, shown

PROFILE_DIR = Path(
    os.environ.get(
        "HARNESS_PROFILE_DIR", Path(__file__).resolve().parent.parent / "device_profiles"
    )
)

KINDS = ("cpu", "gpu", "jetson")
BACKENDS = ("onnxruntime", "tensorrt", "trtexec", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
# ONNX Runtime's GraphOptimizationLevel values as the onnxruntime backend names them
# (ORT_DISABLE_ALL, ...)
ORT_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}"  # a profile name: a file stem, never a path
# ssh destinations: a host name or address (IPv6 in brackets), a user name; never an ssh option
HOST_PATTERN = r"[A-Za-z0-9_\[][A-Za-z0-9._:%\[\]-]*"
USER_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
NAME_RULE = (
    "up to 200 letters, digits, '.', '_' and '-', no path separators, not beginning with '.' or '-'"
)


@dataclasses.dataclass(frozen=True)
class Bound:
    """The range a numeric profile setting must lie in (finite always); ``above`` excludes
    ``low`` itself."""

    low: float
    high: float
    above: bool = False

    def holds(self, value: float) -> bool:
        """Whether ``value`` is finite and in range."""
        if not finite_number(value) or value > self.high:
            return False
        return value > self.low if self.above else value >= self.low

    def __str__(self) -> str:
        low, high = (
            str(int(v)) if float(v).is_integer() else f"{v:g}" for v in (self.low, self.high)
        )
        return f"{'>' if self.above else '>='} {low} and <= {high}"


# every numeric setting's range (docs/profiles.md lists them; a test checks that each numeric
# field has one): wide enough for any real device, narrow enough that no run hangs or
# allocates without end
BOUNDS: Dict[str, Bound] = {
    "batch_sizes": Bound(1, 4096),
    "timing.warmup_s": Bound(0, 3600),
    "timing.min_iterations": Bound(1, 100_000),
    "timing.min_duration_s": Bound(0, 86_400),
    "timing.max_duration_s": Bound(0, 86_400, above=True),
    "timing.target_ci": Bound(0, 0.5, above=True),
    "timing.block_iterations": Bound(1, 100_000),
    "timing.block_s": Bound(0, 3600, above=True),
    "timing.block_warmup": Bound(0, 10_000),
    "onnxruntime.intra_op_threads": Bound(0, 1024),
    "onnxruntime.inter_op_threads": Bound(0, 1024),
    "tensorrt.workspace_mib": Bound(1, 1 << 20),
    "tensorrt.builder_optimization_level": Bound(0, 5),
    "tensorrt.dla_core": Bound(0, 1),
    "tensorrt.int8_calibration_batches": Bound(1, 10_000),
    "tensorrt.max_batch": Bound(1, 4096),
    "expect.gpu_clock_mhz": Bound(1, 100_000),
    "peaks.fp32_tflops": Bound(0, 100_000, above=True),
    "peaks.dram_gbps": Bound(0, 1_000_000, above=True),
    "peaks.fp16_tflops": Bound(0, 100_000, above=True),
    "peaks.int8_tops": Bound(0, 1_000_000, above=True),
    "peaks.layer_overhead_us": Bound(0, 1_000_000),
    "remote.port": Bound(1, 65_535),
}


@dataclasses.dataclass
class TimingSettings:
    """The measurement protocol's knobs (see ``harness.timing``)."""

    warmup_s: float = 2.0
    min_iterations: int = 200
    min_duration_s: float = 10.0
    max_duration_s: float = 60.0
    target_ci: float = 0.01
    block_iterations: int = 10
    block_s: float = 0.1
    # unrecorded inferences at the start of each block (the neighbour's threads settle)
    block_warmup: int = 1
    # stop when the paired speed-ups' CIs (or, "median", each median's) meet target_ci
    stop_on: str = "speedup"


@dataclasses.dataclass
class OnnxRuntimeSettings:
    """ONNX Runtime session options; ``intra_op_threads: 0`` means one per available core."""

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization_level: str = "all"
    allow_spinning: bool = (
        True  # ORT's default; the protocol's per-block warm-up absorbs the hand-over
    )


@dataclasses.dataclass
class TensorRTSettings:
    """TensorRT builder settings (workspace, optimisation level, DLA, timing cache)."""

    workspace_mib: int = 1024
    builder_optimization_level: int = (
        3  # applied from TensorRT 8.6 (the setting does not exist in 8.5)
    )
    dla_core: Optional[int] = (
        None  # DLA core to build for (Xavier/AGX Orin); needs fp16 or int8 and static shapes
    )
    gpu_fallback: bool = True  # layers the DLA cannot run go to the GPU
    timing_cache: bool = True
    timing_cache_file: Optional[str] = None  # default: engines/timing-<tensorrt>-sm<cc>.cache
    int8_calibration_dir: Optional[str] = (
        None  # folder of .npy input batches; unset = random data, with a warning
    )
    int8_calibration_batches: int = 16  # batches of generated data when no folder is given
    # dynamic-batch ONNX: optimisation profile 1..max_batch (default: max batch_sizes)
    max_batch: Optional[int] = None
    # extra trtexec flags, recorded verbatim
    trtexec_flags: List[str] = dataclasses.field(default_factory=list)
    # what trtexec times: "harness" (H2D + compute + D2H, no CUDA graph, no spin-wait, on every
    # version, as harness's runner) or "trtexec" (that version's own defaults: from 11, CUDA graph,
    # spin-wait, no transfers); the results record what was in force
    trtexec_timing: str = "harness"


@dataclasses.dataclass
class TorchSettings:
    """The torch reference backend.

    Replay a captured CUDA graph; let cuDNN pick algorithms by timing them.
    """

    cuda_graph: bool = False
    cudnn_benchmark: bool = True


@dataclasses.dataclass
class Expectations:
    """What the hardware must look like; a mismatch warns (``--strict`` refuses)."""

    gpu_name: Optional[str] = None
    compute_capability: Optional[str] = None
    nvpmodel: Optional[str] = None
    jetson_clocks: Optional[bool] = None
    cpu_governor: Optional[str] = None
    gpu_clock_mhz: Optional[int] = (
        None  # Jetson: the GPU clock jetson_clocks pins (e.g. 1377 on AGX Xavier MAXN)
    )
    l4t: Optional[str] = None  # Jetson: L4T release prefix, e.g. "R35" (JetPack 5.1)
    tensorrt: Optional[str] = None  # TensorRT version prefix, e.g. "8.5"


@dataclasses.dataclass
class Peaks:
    """Peak rates for a roofline cost model.

    TFLOPS/TOPS, DRAM GB/s, fixed cost per layer in microseconds.
    """

    fp32_tflops: float
    dram_gbps: float
    fp16_tflops: Optional[float] = None
    int8_tops: Optional[float] = None
    layer_overhead_us: float = 5.0

    def tflops(self, precision: str) -> float:
        """Peak rate for ``precision``, falling back to FP32 where the profile gives none."""
        value = {"fp16": self.fp16_tflops, "int8": self.int8_tops}.get(precision)
        return value if value else self.fp32_tflops


@dataclasses.dataclass
class Remote:
    """An optional SSH target where build and time run."""

    host: Optional[str] = None
    user: Optional[str] = None
    port: int = 22
    python: str = "python3"
    workdir: str = "~/harness"
    profile: Optional[str] = None  # the profile the device loads (default: this profile's name)
    identity: Optional[str] = None  # ssh -i key file (default: ssh's own)
    known_hosts: Optional[str] = (
        None  # UserKnownHostsFile (default: ssh's own); keys are always checked
    )


@dataclasses.dataclass
class Profile:
    """One device profile, resolved and validated."""

    name: str
    description: str
    kind: str
    backend: str
    peaks: Peaks
    precisions: List[str] = dataclasses.field(default_factory=lambda: ["fp32"])
    batch_sizes: List[int] = dataclasses.field(default_factory=lambda: [1])
    timing: TimingSettings = dataclasses.field(default_factory=TimingSettings)
    onnxruntime: OnnxRuntimeSettings = dataclasses.field(default_factory=OnnxRuntimeSettings)
    tensorrt: TensorRTSettings = dataclasses.field(default_factory=TensorRTSettings)
    torch: TorchSettings = dataclasses.field(default_factory=TorchSettings)
    expect: Expectations = dataclasses.field(default_factory=Expectations)
    remote: Remote = dataclasses.field(default_factory=Remote)
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        """Plain-data form, as stored in results files."""
        return dataclasses.asdict(self)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Validate (and lightly coerce) ``value`` against a type hint; HarnessError names ``where``."""
    origin = getattr(hint, "__origin__", None)
    if origin is Union:
        options = [h for h in hint.__args__ if h is not type(None)]
        if value is None:
            return None
        return _check_type(value, options[0], where)
    if origin in (list, List):
        if not isinstance(value, list):
            raise HarnessError(
                f"{where}: expected a list, got {type(value).__name__} {shown(value)}"
            )
        return [_check_type(v, hint.__args__[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HarnessError(f"{where}: expected a number, got {shown(value)}")
        try:
            return float(value)
        except OverflowError:
            raise HarnessError(
                f"{where}: expected a number, got {shown(value)} (too large)"
            ) from None
    if hint is bool and not isinstance(value, bool):
        raise HarnessError(f"{where}: expected true or false, got {shown(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise HarnessError(f"{where}: expected an integer, got {shown(value)}")
    if hint is str and not isinstance(value, str):
        raise HarnessError(f"{where}: expected a string, got {shown(value)}")
    if hint is str and "\x00" in value:  # paths, flags and ssh arguments cannot hold one
        raise HarnessError(f"{where}: {shown(value)} holds a NUL byte")
    return value


def _build(cls: Any, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise HarnessError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise HarnessError(
            f"{where}: unknown key {shown(unknown[0])} "
            f"(expected one of: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _check_type(data[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:  # type: ignore
            raise HarnessError(f"{where}: missing required key {name!r}")
    return cls(**values)


def _check_choices(profile: Profile, where: str) -> None:
    checks = [
        ("kind", [profile.kind], KINDS),
        ("backend", [profile.backend], BACKENDS),
        ("timing.stop_on", [profile.timing.stop_on], ("speedup", "median")),
        ("precisions", profile.precisions, PRECISIONS),
        ("tensorrt.trtexec_timing", [profile.tensorrt.trtexec_timing], ("harness", "trtexec")),
        (
            "onnxruntime.graph_optimization_level",
            [profile.onnxruntime.graph_optimization_level],
            ORT_OPTIMIZATION_LEVELS,
        ),
    ]
    for key, values, allowed in checks:
        for value in values:
            if value not in allowed:
                raise HarnessError(f"{where}.{key}: {value!r} is not one of {', '.join(allowed)}")
    if not profile.batch_sizes:
        raise HarnessError(f"{where}.batch_sizes: expected a non-empty list of positive integers")
    _check_bounds(profile, where)
    _check_names(profile, where)
    trt = profile.tensorrt
    if trt.max_batch is not None and trt.max_batch < max(profile.batch_sizes):
        raise HarnessError(
            f"{where}.tensorrt.max_batch: {trt.max_batch} is below the largest batch size "
            f"{max(profile.batch_sizes)}"
        )
    t = profile.timing
    if t.max_duration_s < t.min_duration_s:
        raise HarnessError(
            f"{where}.timing.max_duration_s: {t.max_duration_s:g} is below min_duration_s "
            f"{t.min_duration_s:g}"
        )


def _setting(profile: Profile, key: str) -> List[Any]:
    """The values of a dotted setting (a list for ``batch_sizes``; [] when unset)."""
    value: Any = profile
    for part in key.split("."):
        value = getattr(value, part)
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v is not None]


def _check_bounds(profile: Profile, where: str) -> None:
    """Every numeric setting finite and within its ``BOUNDS``."""
    for key, bound in BOUNDS.items():
        for value in _setting(profile, key):
            if not bound.holds(value):
                raise HarnessError(
                    f"{where}.{key}: {shown(value)} is out of range (expected {bound})"
                )


def _check_names(profile: Profile, where: str) -> None:
    """Names that become paths or ssh arguments: file stems and host names, never options."""
    checks = [
        ("name", profile.name, NAME_PATTERN, NAME_RULE),
        ("remote.profile", profile.remote.profile, NAME_PATTERN, NAME_RULE),
        (
            "remote.host",
            profile.remote.host,
            HOST_PATTERN,
            "a host name or address, not beginning with '-'",
        ),
        ("remote.user", profile.remote.user, USER_PATTERN, "a user name, not beginning with '-'"),
    ]
    for key, value, pattern, expected in checks:
        if value is not None and not re.fullmatch(pattern, value):
            raise HarnessError(
                f"{where}.{key}: {shown(value)} is not allowed (expected {expected})"
            )


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a mapping that names a key twice (plain yaml silently keeps
    the last) and aliases (``*name``): a profile needs none, and a few hundred bytes of nested
    aliases expand to gigabytes (a "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        """The next node; an alias is refused where it appears."""
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in a profile", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        """The mapping, after checking that no key of ``node`` repeats."""
        lines: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                continue  # yaml's own constructor refuses unhashable keys with its message
            line = key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {lines[key]} and {line})",
                    key_node.start_mark,
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def load_profile_file(path: Path) -> Profile:
    """Load and validate one profile file; every problem names the file and the key."""
    if not path.is_file():
        raise HarnessError(f"device profile file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(
            f"{path}: not UTF-8 text (byte {shown(raw[exc.start : exc.start + 1])} at offset "
            f"{exc.start}); save the profile as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ").strip()
        raise HarnessError(f"{path}: not valid YAML ({first:.200})") from None
    except (ValueError, OverflowError) as exc:  # an integer longer than Python reads
        raise HarnessError(f"{path}: a value yaml cannot read ({str(exc):.120})") from None
    except RecursionError:
        raise HarnessError(f"{path}: not a profile (lists or mappings nested too deeply)") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of profile keys at the top level")
    data.setdefault("name", path.stem)
    profile = _build(Profile, data, str(path))
    _check_choices(profile, str(path))
    profile.source = str(path)
    return profile


def checked_precision(profile: Profile, precision: Optional[str]) -> str:
    """``precision`` (default: the profile's first), refused when the profile does not list it."""
    chosen = precision or profile.precisions[0]
    if chosen not in profile.precisions:
        raise HarnessError(
            f"device {profile.name!r} lists precisions {profile.precisions}, not {chosen!r}"
        )
    return chosen


def with_backend(profile: Profile, backend: Optional[str]) -> Profile:
    """The profile with its backend replaced (``--backend``), checked; itself when None."""
    if backend is None or backend == profile.backend:
        return profile
    if backend not in BACKENDS:
        raise HarnessError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    description = f"{profile.description} [run on the {backend} backend: --backend {backend}]"
    return dataclasses.replace(profile, backend=backend, description=description)


def calibration_path(
    profile: Profile, backend: Optional[str] = None, precision: Optional[str] = None
) -> Path:
    """Where ``harness calibrate`` stores a profile's calibration for one backend and precision:
    beside the profile's YAML file (``<profile>.<backend>.<precision>.calibration.json``), to be
    committed with it."""
    directory = Path(profile.source).parent if profile.source else PROFILE_DIR
    return directory / (
        f"{profile.name}.{backend or profile.backend}.{precision or profile.precisions[0]}"
        ".calibration.json"
    )


def available_profiles(directory: Path = PROFILE_DIR) -> List[str]:
    """Names of the profiles in ``directory`` (file stems)."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(name_or_path: str, directory: Path = PROFILE_DIR) -> Profile:
    """Resolve ``--device``: a profile name from ``device_profiles/`` or a path to a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        return load_profile_file(Path(name_or_path))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name_or_path):
        raise HarnessError(f"invalid device name {name_or_path!r}")
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise HarnessError(
            f"unknown device {name_or_path!r}; known devices: {known} "
            f"(or pass --device path/to/profile.yaml)"
        )
    return load_profile_file(path)


def read_yaml_mapping(path: Path, what: str) -> Dict[str, Any]:
    """A YAML file's top-level mapping (a key written twice refused); errors name the file."""
    if not path.is_file():
        raise HarnessError(f"{what} {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping at the top level")
    return data


def build_validated(cls: Any, data: Any, where: str) -> Any:
    """A dataclass from ``data``, as profiles are: unknown keys, wrong types and missing keys
    refused with ``where`` and the key."""
    return _build(cls, data, where)
