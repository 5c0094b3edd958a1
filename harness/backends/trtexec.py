"""Timing with NVIDIA's trtexec (on every Jetson), with harness's settings, read back from ``--exportTimes``.

Records trtexec's version and the exact flags, since its defaults differ between TensorRT 8.5, 10 and 11.
Runs on the device: Python 3.8, no torch.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from harness.backends.trt_config import parse_export_times, parse_trtexec_version, trtexec_command
from harness.errors import HarnessError
from harness.profiles import Profile

JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"


def find_trtexec() -> str:
    """trtexec on PATH or where JetPack puts it."""
    found = shutil.which("trtexec") or (JETSON_TRTEXEC if Path(JETSON_TRTEXEC).is_file() else None)
    if not found:
        raise HarnessError("trtexec not found: on a Jetson it is /usr/src/tensorrt/bin/trtexec (JetPack); on a "
                           "desktop it ships with the TensorRT tar/deb packages")
    return found


def trtexec_version(binary: str) -> str:
    """The TensorRT version of a trtexec binary, from its banner."""
    proc = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    version = parse_trtexec_version(proc.stdout + proc.stderr)
    if not version:
        raise HarnessError(f"cannot tell the TensorRT version of {binary}")
    return version


def run_trtexec(onnx_path: Path, profile: Profile, precision: str, batch: int,
                input_shape: Optional[tuple] = None, input_name: str = "input") -> Dict[str, Any]:
    """Build and time one model with trtexec; returns its series (ms), version and command line."""
    binary = find_trtexec()
    version = trtexec_version(binary)
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        cmd: List[str] = trtexec_command(onnx_path, profile, precision, batch, version, times_path=times,
                                         input_name=input_name, input_shape=input_shape)
        cmd[0] = binary
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise HarnessError(f"trtexec failed on {onnx_path}: {' | '.join(tail)}")
        series = parse_export_times(times.read_text())
    return {"series_ms": series, "tensorrt": version, "command": cmd}
