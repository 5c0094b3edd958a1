"""What the machine was and was doing during a run.

CPU, threads, library versions, git SHA, device state.

Runs on the device: Python 3.8 compatible, no torch import (its version is read from package
metadata).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness import __version__
from harness.errors import HarnessError
from harness.profiles import Profile

LIBRARIES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnx-graphsurgeon",
    "torch",
    "tensorrt",
    "pycuda",
    "scipy",
)
REPO_DIR = Path(__file__).resolve().parent.parent


def library_versions() -> Dict[str, Optional[str]]:
    """Installed versions of the libraries that affect results (None when not installed)."""
    from importlib import metadata

    versions: Dict[str, Optional[str]] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha(repo: Path = REPO_DIR) -> Optional[str]:
    """The harness checkout's commit, ``-dirty`` if it has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """CPU model name and logical CPU count from the text of ``/proc/cpuinfo``."""
    models: List[str] = [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.lower().startswith(("model name", "hardware"))
    ]
    count = sum(1 for line in text.splitlines() if line.startswith("processor"))
    return {"model": models[0] if models else None, "logical_cpus": count or None}


def cpu_state() -> Dict[str, Any]:
    """CPU model, cores visible to this process, frequency governor and current frequency."""
    info = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    if not info["model"]:
        info["model"] = platform.processor() or platform.machine()
    try:
        info["available_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["available_cores"] = os.cpu_count()
    info["governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    info["cur_freq_mhz"] = int(freq) / 1000 if freq and freq.isdigit() else None
    info["loadavg"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


def machine_load(environment: Dict[str, Any]) -> Optional[str]:
    """Why a captured environment's machine was busy (1-minute load average at least the cores
    the process could use), or None: other work then shares the cores the timing needs."""
    cpu = environment.get("cpu") if isinstance(environment, dict) else None
    if not isinstance(cpu, dict):
        return None
    load, cores = cpu.get("loadavg"), cpu.get("available_cores") or cpu.get("logical_cpus")
    if not isinstance(load, list) or not load or not isinstance(cores, int) or cores <= 0:
        return None
    first = load[0]
    if not isinstance(first, (int, float)) or isinstance(first, bool) or first < cores:
        return None
    return f"load average {first:.1f} on {cores} core{'s' if cores != 1 else ''}"


def _run(argv: List[str]) -> Optional[str]:
    """A command's stdout, or None when it is missing or fails (never through a shell)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_nvpmodel(text: str) -> Dict[str, Any]:
    """``nvpmodel -q`` -> {mode: 'MAXN', id: 0}."""
    mode = re.search(r"NV Power Mode:\s*(\S+)", text)
    ident = re.search(r"^\s*(\d+)\s*$", text, re.MULTILINE)
    return {"mode": mode.group(1) if mode else None, "id": int(ident.group(1)) if ident else None}


def parse_jetson_clocks(text: str) -> Dict[str, Any]:
    """``jetson_clocks --show`` -> GPU/EMC min/max/current Hz, CPU governors, clocks locked?"""
    clocks: Dict[str, Dict[str, int]] = {}
    pattern = (
        r"^(GPU|EMC|DLA\d_CORE):?\s+(?:Online=\d\s+)?"
        r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)"
    )
    for name, low, high, current in re.findall(pattern, text, re.MULTILINE):
        clocks[name.lower()] = {"min_hz": int(low), "max_hz": int(high), "current_hz": int(current)}
    governors = sorted(set(re.findall(r"Governor=(\S+)", text)))
    gpu = clocks.get("gpu")
    locked = bool(gpu) and gpu["min_hz"] == gpu["max_hz"] == gpu["current_hz"]
    mode = re.search(r"NV Power Mode:\s*(\S+)", text)
    return {
        "clocks": clocks,
        "cpu_governors": governors,
        "locked": locked,
        "power_mode": mode.group(1) if mode else None,
    }


def parse_tegra_release(text: str) -> Optional[str]:
    """``/etc/nv_tegra_release`` -> 'R35.2.1' (the L4T release; JetPack 5.1 is L4T R35)."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def read_thermal(root: Path = Path("/sys/class/thermal")) -> Dict[str, float]:
    """Temperatures in degrees Celsius by thermal zone type."""
    temperatures = {}
    for zone in sorted(root.glob("thermal_zone*")):
        kind, temp = _read(str(zone / "type")), _read(str(zone / "temp"))
        if kind and temp and temp.lstrip("-").isdigit():
            temperatures[kind] = int(temp) / 1000.0
    return temperatures


GPU_DEVFREQ = ("gv11b", "ga10b", "gp10b", "gpu")  # Xavier, Orin, TX2 GPU devfreq node names
EMC_RATE_FILES = (
    "/sys/kernel/debug/bpmp/debug/clk/emc/rate",
    "/sys/kernel/debug/clk/emc/clk_rate",
)  # root only


def parse_devfreq(files: Dict[str, str]) -> Dict[str, Any]:
    """A devfreq node's files (cur_freq, min_freq, max_freq in Hz; governor) -> MHz, locked flag."""
    mhz = {
        k: int(v.strip()) / 1e6
        for k, v in files.items()
        if k.endswith("_freq") and v.strip().isdigit()
    }
    state: Dict[str, Any] = {f"{k[:-5]}_mhz": v for k, v in mhz.items()}
    state["governor"] = files.get("governor", "").strip() or None
    cur, low, high = mhz.get("cur_freq"), mhz.get("min_freq"), mhz.get("max_freq")
    state["locked"] = cur is not None and cur == low == high
    return state


def read_gpu_devfreq(root: Path = Path("/sys/class/devfreq")) -> Optional[Dict[str, Any]]:
    """The integrated GPU's devfreq state (readable without root, unlike ``jetson_clocks``)."""
    for node in sorted(root.glob("*")):
        if any(tag in node.name for tag in GPU_DEVFREQ):
            files = {
                name: _read(str(node / name)) or ""
                for name in ("cur_freq", "min_freq", "max_freq", "governor")
            }
            return dict(parse_devfreq(files), node=node.name)
    return None


def read_emc_mhz() -> Optional[float]:
    """The memory controller clock in MHz from debugfs (needs root; None otherwise)."""
    for path in EMC_RATE_FILES:
        rate = _read(path)
        if rate and rate.isdigit():
            return int(rate) / 1e6
    return None


def jetson_state() -> Optional[Dict[str, Any]]:
    """Power mode, clocks, temperatures and L4T release on a Jetson; None elsewhere."""
    release = _read("/etc/nv_tegra_release")
    if release is None:
        return None
    nvpmodel = _run(["nvpmodel", "-q"])
    clocks = _run(["jetson_clocks", "--show"])  # needs root: None when run as a user
    return {
        "l4t": parse_tegra_release(release),
        "nvpmodel": parse_nvpmodel(nvpmodel) if nvpmodel else None,
        "jetson_clocks": parse_jetson_clocks(clocks) if clocks else None,
        "gpu_devfreq": read_gpu_devfreq(),
        "emc_mhz": read_emc_mhz(),
        "temperatures_c": read_thermal(),
    }


def jetson_gpu_clock(jetson: Dict[str, Any]) -> Tuple[Optional[float], Optional[bool]]:
    """(GPU MHz, locked) from ``jetson_clocks --show`` when it could run, else from devfreq."""
    gpu = ((jetson.get("jetson_clocks") or {}).get("clocks") or {}).get("gpu")
    if gpu:
        return gpu["current_hz"] / 1e6, (jetson.get("jetson_clocks") or {}).get("locked")
    devfreq = jetson.get("gpu_devfreq") or {}
    return devfreq.get("cur_mhz"), devfreq.get("locked")


THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def decode_throttle_reasons(mask: int) -> List[str]:
    """NVML's clocks-throttle-reasons bit mask as names."""
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


def _throttle_mask(pynvml: Any, handle: Any) -> int:
    getter = (
        getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )  # renamed in NVML 12.x; the old name is deprecated
    return int(getter(handle))


def gpu_state() -> Optional[Dict[str, Any]]:
    """Desktop GPU state through NVML (nvidia-ml-py); None without it or without a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "compute_capability": f"{major}.{minor}",
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            "pstate": pynvml.nvmlDeviceGetPerformanceState(handle),
            "throttle_reasons": decode_throttle_reasons(_throttle_mask(pynvml, handle)),
        }
    except pynvml.NVMLError as exc:
        return {"error": f"NVML: {exc}"}
    finally:
        pynvml.nvmlShutdown()


class GpuMonitor:
    """An NVML handle held for a run, read after every timing block: SM and memory clocks, power,
    temperature and throttle reasons (``harness.timing`` records them per block and flags a run
    where they moved)."""

    def __init__(self, nvml: Any, index: int = 0) -> None:
        self.nvml = nvml
        self.handle = nvml.nvmlDeviceGetHandleByIndex(index)

    @classmethod
    def open(cls, index: int = 0, nvml: Any = None) -> Optional[GpuMonitor]:
        """A monitor of GPU ``index``; None without nvidia-ml-py, a driver or a GPU."""
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None
        try:
            nvml.nvmlInit()
        except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return None
        try:
            return cls(nvml, index)
        except nvml.NVMLError:
            nvml.nvmlShutdown()
            return None

    def sample(self) -> Dict[str, Any]:
        """The device state now; a field NVML cannot read on this GPU is left out."""
        nvml, handle = self.nvml, self.handle
        readers = {
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temperature_c": lambda: nvml.nvmlDeviceGetTemperature(
                handle, nvml.NVML_TEMPERATURE_GPU
            ),
            "throttle_reasons": lambda: decode_throttle_reasons(_throttle_mask(nvml, handle)),
        }
        state: Dict[str, Any] = {}
        for key, read in readers.items():
            try:
                state[key] = read()
            except nvml.NVMLError:
                continue
        return state

    def close(self) -> None:
        """Release NVML."""
        self.nvml.nvmlShutdown()

    def __enter__(self) -> GpuMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def capture_environment(profile: Profile) -> Dict[str, Any]:
    """A JSON-able snapshot of the host, the device state and the software, for results files."""
    return {
        "captured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "harness_version": __version__,
        "git_sha": git_sha(),
        "profile": profile.name,
        "cpu": cpu_state(),
        "jetson": jetson_state(),
        "gpu": gpu_state(),
        "libraries": library_versions(),
    }


def check_expectations(env: Dict[str, Any], profile: Profile) -> List[str]:
    """Ways in which the captured state differs from what the profile expects (empty if none)."""
    expect, problems = profile.expect, []
    governor = expect.cpu_governor
    if governor and env.get("cpu", {}).get("governor") not in (None, governor):
        problems.append(f"CPU governor is {env['cpu']['governor']!r}, profile expects {governor!r}")
    jetson, gpu = env.get("jetson"), env.get("gpu")
    if profile.kind == "jetson":
        if not jetson:
            problems.append(
                f"profile {profile.name!r} is for a Jetson, "
                "but this is not one (no /etc/nv_tegra_release)"
            )
        else:
            mode = (jetson.get("nvpmodel") or {}).get("mode")
            if expect.nvpmodel and mode != expect.nvpmodel:
                problems.append(
                    f"power mode is {mode!r}, profile expects {expect.nvpmodel!r} "
                    "(sudo nvpmodel -m 0)"
                )
            mhz, locked = jetson_gpu_clock(jetson)
            if expect.jetson_clocks and not locked:
                problems.append(
                    "clocks are not locked (run sudo jetson_clocks before benchmarking)"
                    if locked is not None
                    else "cannot tell whether clocks are locked "
                    "(jetson_clocks --show needs root and no GPU devfreq node was readable)"
                )
            if expect.gpu_clock_mhz and mhz is not None and abs(mhz - expect.gpu_clock_mhz) > 1:
                problems.append(
                    f"GPU clock is {mhz:.0f} MHz, profile expects {expect.gpu_clock_mhz} MHz"
                )
            l4t = jetson.get("l4t")
            if expect.l4t and l4t and not l4t.startswith(expect.l4t):
                problems.append(f"L4T release is {l4t}, profile expects {expect.l4t}")
    elif profile.kind == "gpu":
        if gpu and "error" in gpu:
            problems.append(f"cannot read the GPU's state: {gpu['error']}")
        elif not gpu:
            problems.append(
                f"profile {profile.name!r} expects a GPU, "
                "but NVML sees none (pip install nvidia-ml-py)"
            )
        else:
            if expect.gpu_name and expect.gpu_name.lower() not in gpu["name"].lower():
                problems.append(f"GPU is {gpu['name']!r}, profile expects {expect.gpu_name!r}")
            if expect.compute_capability and gpu["compute_capability"] != expect.compute_capability:
                problems.append(
                    f"compute capability {gpu['compute_capability']}, profile expects "
                    f"{expect.compute_capability}"
                )
            if any(
                r not in ("gpu_idle", "applications_clocks_setting")
                for r in gpu["throttle_reasons"]
            ):
                problems.append(f"GPU is throttling: {', '.join(gpu['throttle_reasons'])}")
    installed = (env.get("libraries") or {}).get("tensorrt")
    if (
        expect.tensorrt
        and profile.backend in ("tensorrt", "trtexec")
        and installed
        and not (installed + ".").startswith(expect.tensorrt.rstrip(".") + ".")
    ):
        problems.append(f"TensorRT is {installed}, profile expects {expect.tensorrt}")
    return problems


def state_changes(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """What changed on the device between two captures.

    Power mode, clock locking, throttling, governor.
    """

    def pick(env: Dict[str, Any], *path: str) -> Any:
        for key in path:
            env = env.get(key) if isinstance(env, dict) else None
        return env

    watched = {
        "power mode": ("jetson", "nvpmodel", "mode"),
        "clock locking": ("jetson", "jetson_clocks", "locked"),
        "GPU throttle reasons": ("gpu", "throttle_reasons"),
        "GPU SM clock": ("gpu", "sm_clock_mhz"),
        "Jetson GPU clock": ("jetson", "gpu_devfreq", "cur_mhz"),
        "CPU governor": ("cpu", "governor"),
    }
    changes = []
    for label, path in watched.items():
        old, new = pick(before, *path), pick(after, *path)
        if old != new:
            changes.append(f"{label} changed during the run: {old} -> {new}")
    return changes


def enforce_expectations(env: Dict[str, Any], profile: Profile, strict: bool) -> List[str]:
    """``check_expectations``, raising HarnessError when ``strict`` and anything differs."""
    problems = check_expectations(env, profile)
    if strict and problems:
        raise HarnessError(
            f"device state differs from profile {profile.name!r}: " + "; ".join(problems)
        )
    return problems
