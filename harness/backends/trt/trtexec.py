"""Timing with NVIDIA's ``trtexec`` (on every Jetson) using harness's settings, read back from
``--exportTimes``.

``trtexec_command`` is the single place that turns a device profile into a trtexec line: ``harness
build --explain`` prints it, the trtexec backend runs it. trtexec's defaults moved between versions
(TensorRT 11 turns CUDA graphs and spin-wait on and data transfers off, and drops
``--fp16/--int8``), so the command pins what harness measures (H2D + compute + D2H, no CUDA graph)
and ``effective_settings`` records what was in force. Runs on the device: Python 3.8, no torch, no
tensorrt module.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.backends.base import Runner
from harness.backends.trt.cache import BuildSettings
from harness.backends.trt.versions import build_only_flag, trtexec_defaults, version_tuple
from harness.errors import HarnessError
from harness.onnx_io import Dim, input_dtypes
from harness.onnx_io import input_shapes as onnx_input_shapes
from harness.profiles import Profile

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
SERIES = ("latency_ms", "gpu_compute_ms", "enqueue_ms", "h2d_ms", "d2h_ms")
TIMING_FLAGS = ("--warmUp=", "--duration=", "--iterations=", "--percentile=")


def is_dynamic(dim: Dim) -> bool:
    """Whether an ONNX dimension is symbolic or unknown."""
    return not isinstance(dim, int) or dim <= 0


def shape_flags(input_shapes: Dict[str, Sequence[Dim]], settings: BuildSettings) -> List[str]:
    """--min/opt/max/shapes for inputs with a dynamic batch; none for a static model (trtexec
    rejects them)."""
    if not any(is_dynamic(d) for shape in input_shapes.values() for d in shape):
        return []
    for name, shape in input_shapes.items():
        if any(is_dynamic(d) for d in list(shape)[1:]):
            raise HarnessError(
                f"input {name!r} has dynamic dimensions besides the batch: {list(shape)}; bind "
                f"them with --input-shape or --shapes, or export it with static image sizes"
            )
    dla = settings.dla_core is not None  # DLA needs static shapes: min = opt = max

    def spec(batch: int) -> str:
        return ",".join(
            f"{name}:" + "x".join(str(d) for d in [batch] + list(shape)[1:])
            for name, shape in input_shapes.items()
        )

    return [
        f"--minShapes={spec(settings.batch if dla else 1)}",
        f"--optShapes={spec(settings.batch)}",
        f"--maxShapes={spec(settings.batch if dla else settings.max_batch)}",
        f"--shapes={spec(settings.batch)}",
    ]


def trtexec_command(
    onnx_path: Path,
    profile: Profile,
    precision: str,
    batch: int,
    trt_version: str = "8.5.2",
    engine_path: Optional[Path] = None,
    times_path: Optional[Path] = None,
    input_shapes: Optional[Dict[str, Sequence[Dim]]] = None,
    timing_cache: Optional[Path] = None,
    calibration_cache: Optional[Path] = None,
    load_engine: Optional[Path] = None,
    typed_graph: bool = False,
) -> List[str]:
    """The trtexec invocation equivalent to harness's build and timing settings for this TensorRT
    version.

    With ``load_engine`` the build flags are left out and that engine is timed as it is.
    ``typed_graph``: the ONNX file's own types carry the precision (an FP16 graph for a strongly
    typed TensorRT 11).
    """
    settings = BuildSettings.from_profile(profile, precision, batch)
    version = version_tuple(trt_version)
    cmd = ["trtexec"]
    flags = shape_flags(input_shapes or {}, settings)
    if load_engine is not None:
        cmd += [f"--loadEngine={load_engine}"] + flags[
            -1:
        ]  # a loaded dynamic engine needs --shapes only
    else:
        cmd += [f"--onnx={onnx_path}", f"--memPoolSize=workspace:{settings.workspace_mib}"]
        if precision in ("fp16", "int8") and not (typed_graph and version >= (11,)):
            if version >= (11,):
                raise HarnessError(
                    "TensorRT 11 builds strongly typed networks: export the model in "
                    f"{precision} (or with Q/DQ nodes) instead of asking trtexec for --{precision}"
                )
            cmd += (
                ["--fp16"] if precision == "fp16" else ["--int8", "--fp16"]
            )  # as the Python builder does
            if precision == "int8" and calibration_cache is not None:
                cmd.append(f"--calib={calibration_cache}")
        if version >= (8, 6):
            cmd.append(f"--builderOptimizationLevel={settings.builder_optimization_level}")
        if settings.dla_core is not None:
            cmd.append(f"--useDLACore={settings.dla_core}")
            if settings.gpu_fallback:
                cmd.append("--allowGPUFallback")
        if timing_cache is not None and profile.tensorrt.timing_cache:
            cmd.append(f"--timingCacheFile={timing_cache}")
        if engine_path is not None:
            cmd.append(f"--saveEngine={engine_path}")
        cmd += flags
    timing = profile.timing
    cmd += [
        f"--warmUp={int(round(timing.warmup_s * 1000))}",
        f"--duration={max(1, int(math.ceil(timing.min_duration_s)))}",
        f"--iterations={timing.min_iterations}",
        "--percentile=90,95,99",
    ]
    if profile.tensorrt.trtexec_timing == "harness" and version >= (11,):
        # pin the measured quantity to harness's: H2D + compute + D2H, no graph, blocking sync
        cmd += ["--noCudaGraph", "--includeDataTransfers", "--noSpinWait"]
    if times_path is not None:
        cmd.append(f"--exportTimes={times_path}")
    return cmd + list(profile.tensorrt.trtexec_flags)


def effective_settings(cmd: Sequence[str], trt_version: str) -> Dict[str, bool]:
    """CUDA graph, spin-wait and data transfers as in force for ``cmd`` (its flags over the
    version's defaults)."""
    settings = trtexec_defaults(trt_version)
    flags = {
        "--useCudaGraph": ("cuda_graph", True),
        "--noCudaGraph": ("cuda_graph", False),
        "--useSpinWait": ("spin_wait", True),
        "--noSpinWait": ("spin_wait", False),
        "--noDataTransfers": ("data_transfers", False),
        "--includeDataTransfers": ("data_transfers", True),
    }
    for arg in cmd:
        if arg in flags:
            key, value = flags[arg]
            settings[key] = value
    return settings


def parse_export_times(text: str) -> Dict[str, List[float]]:
    """trtexec ``--exportTimes`` JSON -> series in ms: latency, GPU compute, enqueue, H2D, D2H.

    Reads the 8.x/10.x keys (``h2dMs``, ``d2hMs``) and the 7.x ones (``inMs``, ``outMs``).
    """
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise HarnessError(f"trtexec times file is not JSON ({exc})") from None
    if (
        not isinstance(records, list)
        or not records
        or not all(isinstance(r, dict) and "latencyMs" in r and "computeMs" in r for r in records)
    ):
        raise HarnessError(
            "trtexec times file holds no per-query records with latencyMs and computeMs"
        )

    def pick(record: Dict[str, Any], *keys: str) -> float:
        return float(next((record[k] for k in keys if k in record), 0.0))

    return {
        "latency_ms": [float(r["latencyMs"]) for r in records],
        "gpu_compute_ms": [float(r["computeMs"]) for r in records],
        "enqueue_ms": [pick(r, "endEnqMs") - pick(r, "startEnqMs") for r in records],
        "h2d_ms": [pick(r, "h2dMs", "inMs") for r in records],
        "d2h_ms": [pick(r, "d2hMs", "outMs") for r in records],
    }


_SUMMARY = re.compile(
    r"\[I\] (Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency): (.*)$", re.MULTILINE
)


def parse_summary(output: str) -> Dict[str, Any]:
    """trtexec's performance summary on stdout -> {'throughput_qps': .., 'GPU Compute Time':
    {'median': ..}}."""
    summary: Dict[str, Any] = {}
    throughput = re.search(r"Throughput: ([\d.]+) qps", output)
    if throughput:
        summary["throughput_qps"] = float(throughput.group(1))
    for name, rest in _SUMMARY.findall(output):
        summary[name] = {
            re.sub(r"percentile\((\d+(?:\.\d+)?)%\)", r"p\1", key): float(value)
            for key, value in re.findall(r"([\w().%]+) = ([\d.]+) ms", rest)
        }
    unstable = re.search(
        r"\[W\] \* GPU compute time is unstable, with coefficient of variance = ([\d.]+)%", output
    )
    if unstable:
        summary["unstable_cov_percent"] = float(unstable.group(1))
    return summary


def parse_trtexec_version(output: str) -> Optional[str]:
    """The TensorRT version from trtexec's banner: '[TensorRT v8502]' -> '8.5.2', 'v100300' ->
    '10.3.0'."""
    match = re.search(r"TensorRT v(\d+)", output)
    if not match:
        return None
    digits = match.group(1)
    if len(digits) == 4:  # 8502: major, minor, patch (two digits)
        return f"{digits[0]}.{digits[1]}.{int(digits[2:])}"
    number = int(digits)
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def parse_export_output(text: str) -> Dict[str, np.ndarray]:
    """trtexec ``--exportOutput`` JSON ([{name, dimensions: '1x10', values: [...]}]) -> arrays by
    name."""
    arrays = {}
    for entry in json.loads(text):
        dims = tuple(int(d) for d in str(entry["dimensions"]).split("x") if d)
        arrays[entry["name"]] = np.asarray(entry["values"], dtype=np.float32).reshape(dims)
    return arrays


def find_trtexec() -> str:
    """trtexec on PATH or where JetPack puts it."""
    found = shutil.which("trtexec") or (JETSON_TRTEXEC if Path(JETSON_TRTEXEC).is_file() else None)
    if not found:
        raise HarnessError(
            "trtexec not found: on a Jetson it is /usr/src/tensorrt/bin/trtexec (JetPack); on a "
            "desktop it ships with the TensorRT tar/deb packages (put its bin/ on PATH)"
        )
    return found


def trtexec_version(binary: str) -> str:
    """The TensorRT version of a trtexec binary, from its banner."""
    proc = subprocess.run(
        [binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )
    version = parse_trtexec_version(proc.stdout)
    if not version:
        raise HarnessError(f"cannot tell the TensorRT version of {binary} from its banner")
    return version


def run_command(cmd: List[str], what: str) -> str:
    """Run a trtexec command line; a failure raises HarnessError with its last error lines."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        lines = proc.stdout.strip().splitlines()
        tail = [line for line in lines if "[E]" in line][-3:] or lines[-3:]
        raise HarnessError(f"trtexec failed on {what}: {' | '.join(tail)}")
    return proc.stdout


def run_trtexec(
    onnx_path: Path,
    profile: Profile,
    precision: str,
    batch: int,
    input_shape: Optional[Sequence[Dim]] = None,
    input_name: str = "input",
    input_shapes: Optional[Dict[str, Sequence[Dim]]] = None,
) -> Dict[str, Any]:
    """Build and time one model with trtexec; returns its series (ms), version, command, summary and
    settings.

    Input shapes come from ``input_shapes``, else ``{input_name: input_shape}``, else the ONNX file.
    """
    binary = find_trtexec()
    version = trtexec_version(binary)
    shapes = input_shapes
    if shapes is None:
        shapes = (
            {input_name: input_shape} if input_shape is not None else onnx_input_shapes(onnx_path)
        )
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        cmd = trtexec_command(
            onnx_path, profile, precision, batch, version, times_path=times, input_shapes=shapes
        )
        cmd[0] = binary
        output = run_command(cmd, str(onnx_path))
        series = parse_export_times(times.read_text())
    return {
        "series_ms": series,
        "tensorrt": version,
        "command": cmd,
        "summary": parse_summary(output),
        "effective": effective_settings(cmd, version),
    }


class TrtexecRunner(Runner):
    """trtexec as a backend: builds once, then each refill is one real trtexec run whose per-query
    records (``--exportTimes``) are handed out one per ``measure_once``. trtexec enqueues ahead of
    the GPU, so its records come from a continuous stream, not from isolated queries: compare like
    with like.
    """

    backend_name = "trtexec"

    def _activate_impl(self) -> None:
        profile, precision, batch, onnx_path = (
            self.profile,
            self.precision,
            self.batch,
            self.onnx_path,
        )
        self.binary = find_trtexec()
        self.version = trtexec_version(self.binary)
        self.tmp = tempfile.TemporaryDirectory()
        self.engine = Path(self.tmp.name) / "model.engine"
        self.built_from, self.typed_graph, self.prepared = self.onnx_path, False, None
        if version_tuple(self.version) >= (11,) and precision in ("fp16", "int8"):
            from harness.backends.trt.prepare import strongly_typed_onnx

            # strongly typed: an FP16 or a Q/DQ graph, no precision flags
            self.built_from, self.prepared = strongly_typed_onnx(
                self.onnx_path, precision, profile, batch, Path(self.tmp.name)
            )
            self.typed_graph = True
        self.shapes = onnx_input_shapes(self.built_from)
        self.dtypes = input_dtypes(
            self.built_from
        )  # trtexec reads --loadInputs as the tensors' own type
        cmd = trtexec_command(
            self.built_from,
            profile,
            precision,
            batch,
            self.version,
            engine_path=self.engine,
            input_shapes=self.shapes,
            typed_graph=self.typed_graph,
        )
        self.build_command = [self.binary] + [a for a in cmd[1:] if not a.startswith(TIMING_FLAGS)]
        run_command(self.build_command + [build_only_flag(self.version)], str(onnx_path))
        self.buffer: List[Dict[str, float]] = []
        self.runs = 0

    def _command(self, *extra: str) -> List[str]:
        cmd = trtexec_command(
            self.built_from,
            self.profile,
            self.precision,
            self.batch,
            self.version,
            input_shapes=self.shapes,
            load_engine=self.engine,
            typed_graph=self.typed_graph,
        )
        return [self.binary] + cmd[1:] + list(extra)

    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        return {
            name: (
                tuple(self.batch if is_dynamic(d) else int(d) for d in shape),  # type: ignore[arg-type]
                self.dtypes[name],
            )
            for name, shape in self.shapes.items()
        }

    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        folder = Path(self.tmp.name)
        loads = []
        for i, (name, array) in enumerate(feeds.items()):
            path = folder / f"input{i}.bin"
            path.write_bytes(np.ascontiguousarray(array, dtype=self.dtypes[name]).tobytes())
            loads.append(f"{name}:{path}")
        out = folder / "outputs.json"
        cmd = [a for a in self._command() if not a.startswith(TIMING_FLAGS)]
        run_command(
            cmd
            + [
                "--iterations=1",
                "--duration=0",
                "--warmUp=0",
                f"--loadInputs={','.join(loads)}",
                f"--exportOutput={out}",
            ],
            str(self.onnx_path),
        )
        return parse_export_output(out.read_text())

    def _measure_impl(self) -> Dict[str, float]:
        if not self.buffer:
            times = Path(self.tmp.name) / "times.json"
            run_command(self._command(f"--exportTimes={times}"), str(self.onnx_path))
            series = parse_export_times(times.read_text())
            self.buffer = [
                dict(zip(SERIES, values)) for values in zip(*(series[k] for k in SERIES))
            ]
            self.runs += 1
        return self.buffer.pop(0)

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            version=self.version,
            binary=self.binary,
            built_from=str(self.built_from),
            prepared_graph=self.prepared,
            build_command=self.build_command,
            time_command=self._command("--exportTimes=<file>"),
            trtexec_runs=self.runs,
            effective=effective_settings(self._command(), self.version),
        )
        return info

    def _deactivate_impl(self) -> None:
        if getattr(self, "tmp", None) is not None:
            self.tmp.cleanup()
            self.tmp = None
