"""What the machine was and was doing during a run: CPU, threads, library versions, git SHA, device state.

Runs on the device: Python 3.8 compatible, no torch import (its version is read from package metadata).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from harness import __version__
from harness.profiles import Profile

LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnx-graphsurgeon", "torch", "tensorrt", "pycuda", "scipy")
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
    """The harness checkout's commit, with ``-dirty`` when it has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
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
    models: List[str] = [line.split(":", 1)[1].strip() for line in text.splitlines()
                         if line.lower().startswith(("model name", "hardware"))]
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
        "libraries": library_versions(),
    }


def check_expectations(env: Dict[str, Any], profile: Profile) -> List[str]:
    """Ways in which the captured state differs from what the profile expects (empty when all is as expected)."""
    problems = []
    governor = profile.expect.cpu_governor
    if governor and env.get("cpu", {}).get("governor") not in (None, governor):
        problems.append(f"CPU governor is {env['cpu']['governor']!r}, profile expects {governor!r}")
    return problems
