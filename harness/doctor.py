"""``harness doctor``: what to run first on a new Jetson or GPU, to validate the TensorRT path on
it.

Checks the software (TensorRT, Polygraphy, pycuda, trtexec, the driver, JetPack), the device state
the profile expects, then builds a tiny engine, times it with harness's runner and the same engine
with trtexec, and says whether their GPU compute medians agree (within 2%) or why not. Runs on the
device: Python 3.8, no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from harness.errors import HarnessError
from harness.profiles import Profile

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
AGREEMENT = 0.02  # GPU compute medians of harness and trtexec must agree within this fraction
TINY_SHAPE = (1, 3, 64, 64)


@dataclasses.dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    status: str
    detail: str
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _module_version(name: str) -> Optional[str]:
    """``name.__version__`` when the module imports, else None."""
    try:
        module = importlib.import_module(name)
    except (
        Exception
    ):  # a broken install raises more than ImportError (OSError for a missing libnvinfer)
        return None
    return str(getattr(module, "__version__", "unknown"))


def check_tensorrt() -> Check:
    """The TensorRT Python module."""
    version = _module_version("tensorrt")
    if version is None:
        return Check(
            "tensorrt",
            FAIL,
            "not importable: on a Jetson install JetPack's python3-libnvinfer; "
            "on a desktop pip install '.[tensorrt]'",
        )
    return Check("tensorrt", PASS, f"TensorRT {version}", {"version": version})


def check_cuda_binding() -> Check:
    """pycuda, which the runner uses (its primary context); cuda-python reported when present."""
    found = {
        name: _module_version(module)
        for name, module in (("pycuda", "pycuda"), ("cuda-python", "cuda"))
    }
    present = {k: v for k, v in found.items() if v is not None}
    if "pycuda" not in present:
        return Check(
            "cuda binding",
            FAIL,
            "pycuda does not import: pip install pycuda (it builds against "
            "the CUDA toolkit: on a Jetson, JetPack's)",
            present,
        )
    return Check("cuda binding", PASS, ", ".join(f"{k} {v}" for k, v in present.items()), present)


def check_polygraphy() -> Check:
    """NVIDIA's Polygraphy, which builds and loads harness's engines: 0.53 or newer."""
    from harness.backends.trt.versions import version_tuple

    version = _module_version("polygraphy")
    if version is None:
        return Check(
            "polygraphy",
            FAIL,
            "not installed: pip install 'polygraphy>=0.53' (engines are built with it)",
        )
    if version_tuple(version) < (0, 53):
        return Check(
            "polygraphy",
            FAIL,
            f"Polygraphy {version} is older than 0.53: pip install -U 'polygraphy>=0.53'",
            {"version": version},
        )
    return Check("polygraphy", PASS, f"Polygraphy {version}", {"version": version})


def check_trtexec(tensorrt_version: Optional[str]) -> Check:
    """trtexec found, its version read, and the same TensorRT major.minor as the Python module."""
    from harness.backends.trt.trtexec import find_trtexec, trtexec_version
    from harness.backends.trt.versions import version_tuple

    try:
        binary = find_trtexec()
        version = trtexec_version(binary)
    except HarnessError as exc:
        return Check("trtexec", FAIL, str(exc))
    data = {"binary": binary, "version": version}
    if tensorrt_version and version_tuple(version)[:2] != version_tuple(tensorrt_version)[:2]:
        return Check(
            "trtexec",
            FAIL,
            f"trtexec is TensorRT {version} but the Python module is "
            f"{tensorrt_version}: their engines are not interchangeable",
            data,
        )
    return Check("trtexec", PASS, f"{binary} (TensorRT {version})", data)


def check_device_state(profile: Profile, environment: Dict[str, Any]) -> Check:
    """The driver, JetPack release and device state against what the profile expects."""
    from harness.envinfo import check_expectations

    gpu, jetson = environment.get("gpu") or {}, environment.get("jetson") or {}
    facts = {
        "driver": gpu.get("driver"),
        "gpu": gpu.get("name"),
        "l4t": jetson.get("l4t"),
        "nvpmodel": jetson.get("nvpmodel"),
    }
    problems = check_expectations(environment, profile)
    seen = ", ".join(f"{k} {v}" for k, v in facts.items() if v) or "no GPU or Jetson state readable"
    if problems:
        return Check(
            "device state",
            WARN,
            f"{seen}; differs from {profile.name}: " + "; ".join(problems),
            {"facts": facts, "problems": problems},
        )
    return Check("device state", PASS, f"{seen}; as {profile.name} expects", {"facts": facts})


def check_energy_counter(profile: Profile) -> Check:
    """Which energy counter the device offers (``harness.energy``); a missing one warns: energy
    is then not measured, latency still is."""
    from harness.energy import describe_meter, open_meter

    meter, reason = open_meter(profile.kind)
    if meter is None:
        return Check("energy counter", WARN, reason)
    with meter:
        return Check("energy counter", PASS, describe_meter(meter), {"source": meter.source})


def tiny_model(path: Path) -> Path:
    """A conv + ReLU + conv on a (1, 3, 64, 64) input: enough work for stable GPU compute times."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.onnx_io import save_model

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32) * 0.1, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1, "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "doctor",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(TINY_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 64, 64])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # the lowest IR that holds opset 13: TensorRT 8.5's parser reads it
    onnx.checker.check_model(model)
    return save_model(model, path)


def time_with_harness(
    onnx_path: Path, profile: Profile, precision: str, engine_dir: Optional[Path] = None
) -> Dict[str, Any]:
    """Build (cached) and time the model with harness's TensorRT runner; GPU compute samples and
    engine."""
    from harness.backends.trt.cache import EngineCache
    from harness.measure import measure_graphs

    cache = EngineCache(engine_dir) if engine_dir is not None else EngineCache()
    timed = measure_graphs(
        {"harness": onnx_path}, profile, precision, 1, backend="tensorrt", cache=cache
    )
    run = timed.runs["harness"]
    return {
        "gpu_compute_ms": run.series_ms.get("gpu_compute_ms", run.series_ms["latency_ms"]),
        "engine": run.backend.get("engine"),
        "describe": run.backend,
    }


def time_with_trtexec(
    engine: Path, onnx_path: Path, profile: Profile, precision: str, trtexec: Dict[str, Any]
) -> Dict[str, Any]:
    """Time an existing engine with trtexec (``--loadEngine``), with harness's measured-quantity
    flags."""
    from harness.backends.trt.trtexec import (
        effective_settings,
        parse_export_times,
        run_command,
        trtexec_command,
    )
    from harness.onnx_io import input_shapes

    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        cmd = trtexec_command(
            onnx_path,
            profile,
            precision,
            1,
            trtexec["version"],
            times_path=times,
            input_shapes=input_shapes(onnx_path),
            load_engine=engine,
        )
        cmd[0] = trtexec["binary"]
        run_command(cmd, str(engine))
        series = parse_export_times(times.read_text())
    return {
        "gpu_compute_ms": series["gpu_compute_ms"],
        "command": cmd,
        "effective": effective_settings(cmd, trtexec["version"]),
    }


def compare_medians(ours: List[float], theirs: List[float], tolerance: float = AGREEMENT) -> Check:
    """Whether two GPU compute series agree: relative difference of medians within ``tolerance``."""
    a, b = statistics.median(ours), statistics.median(theirs)
    difference = abs(a - b) / b if b else float("inf")
    data = {
        "harness_median_ms": a,
        "trtexec_median_ms": b,
        "relative_difference": difference,
        "tolerance": tolerance,
    }
    text = f"GPU compute median harness {a:.4f} ms, trtexec {b:.4f} ms ({difference:+.1%})"
    if difference <= tolerance:
        return Check("timing agreement", PASS, text + f": within {tolerance:.0%}", data)
    return Check(
        "timing agreement",
        FAIL,
        text + f": more than {tolerance:.0%} apart (check that the device "
        "is idle with clocks locked, and that both measured the same engine)",
        data,
    )


def run_doctor(
    profile: Profile,
    precision: str,
    environment: Dict[str, Any],
    progress: Callable[[str], None] = lambda _line: None,
    engine_dir: Optional[Path] = None,
) -> List[Check]:
    """Every check in order; later checks are skipped, with the reason, when what they need
    failed."""
    checks = [Check("python", PASS, f"Python {platform.python_version()}")]
    checks += [check_tensorrt(), check_cuda_binding(), check_polygraphy()]
    trt_version = checks[1].data.get("version")
    checks.append(check_trtexec(trt_version))
    checks.append(check_device_state(profile, environment))
    checks.append(check_energy_counter(profile))
    for check in checks:
        progress(f"{check.status:>4}  {check.name}: {check.detail}")
    runtime_ok = all(c.status == PASS for c in checks[1:3])
    trtexec = checks[4].data if checks[4].status == PASS else None
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "doctor.onnx")
        ours = None
        if runtime_ok:
            try:
                ours = time_with_harness(model, profile, precision, engine_dir)
                median = statistics.median(ours["gpu_compute_ms"])
                checks.append(
                    Check(
                        "harness runner",
                        PASS,
                        f"built {ours['engine']}, GPU compute median {median:.4f} ms",
                        {"engine": ours["engine"], "median_ms": median},
                    )
                )
            except HarnessError as exc:
                checks.append(Check("harness runner", FAIL, str(exc)))
        else:
            checks.append(Check("harness runner", SKIP, "TensorRT and pycuda are needed"))
        progress(f"{checks[-1].status:>4}  {checks[-1].name}: {checks[-1].detail}")
        if ours is not None and trtexec is not None:
            try:
                theirs = time_with_trtexec(Path(ours["engine"]), model, profile, precision, trtexec)
                checks.append(compare_medians(ours["gpu_compute_ms"], theirs["gpu_compute_ms"]))
                checks[-1].data["trtexec_command"] = theirs["command"]
                checks[-1].data["trtexec_effective"] = theirs["effective"]
            except HarnessError as exc:
                checks.append(
                    Check("timing agreement", FAIL, f"trtexec could not time the engine: {exc}")
                )
        else:
            checks.append(
                Check("timing agreement", SKIP, "needs both harness's runner and trtexec")
            )
        progress(f"{checks[-1].status:>4}  {checks[-1].name}: {checks[-1].detail}")
    return checks


def doctor_report(
    profile: Profile, precision: str, checks: List[Check], environment: Dict[str, Any]
) -> Dict[str, Any]:
    """The JSON report: verdict, every check, the environment."""
    return {
        "schema": 1,
        "profile": profile.name,
        "precision": precision,
        "verdict": FAIL if any(c.status == FAIL for c in checks) else PASS,
        "checks": [dataclasses.asdict(c) for c in checks],
        "environment": environment,
    }
