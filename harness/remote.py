"""Run build and time on a device over SSH (the system ``ssh``/``scp``), e.g. a Jetson on the bench.

Host keys are checked (``BatchMode``, ``StrictHostKeyChecking=yes``: an unknown host is refused, not trusted).
No local shell is used; the remote command is built from ``shlex.quote``-d arguments, since ssh hands the
remote side one command string. The device needs harness installed at ``remote.workdir`` (Python 3.8, no torch).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence

from harness.errors import HarnessError
from harness.profiles import Profile


class RemoteDevice:
    """An SSH target from a profile's ``remote`` section."""

    def __init__(self, profile: Profile, identity: Optional[Path] = None, known_hosts: Optional[Path] = None,
                 timeout_s: float = 600.0) -> None:
        remote = profile.remote
        if not remote.host:
            raise HarnessError(f"profile {profile.name!r} has no remote.host")
        self.profile, self.remote, self.timeout_s = profile, remote, timeout_s
        self.target = f"{remote.user}@{remote.host}" if remote.user else remote.host
        self.options = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]
        if identity:
            self.options += ["-i", str(identity)]
        if known_hosts:
            self.options += ["-o", f"UserKnownHostsFile={known_hosts}"]

    def _call(self, argv: List[str], what: str) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{what} on {self.target} timed out after {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise HarnessError(f"{what} on {self.target} failed: {last}")
        return proc.stdout

    def run(self, args: Sequence[str]) -> str:
        """Run a command in the remote workdir; arguments are quoted, never interpreted by a shell."""
        command = f"cd {shlex.quote(self.remote.workdir)} && " + " ".join(shlex.quote(a) for a in args)
        return self._call(["ssh", "-p", str(self.remote.port), *self.options, self.target, command],
                          "remote command")

    def put(self, local: Path, remote_name: str) -> str:
        """Copy a file into the remote workdir; returns its remote path (relative to the workdir)."""
        destination = f"{self.target}:{self.remote.workdir.rstrip('/')}/{remote_name}"
        self._call(["scp", "-q", "-P", str(self.remote.port), *self.options, str(local), destination], "upload")
        return remote_name

    def get(self, remote_name: str, local: Path) -> Path:
        """Copy a file from the remote workdir."""
        source = f"{self.target}:{self.remote.workdir.rstrip('/')}/{remote_name}"
        self._call(["scp", "-q", "-P", str(self.remote.port), *self.options, source, str(local)], "download")
        return local

    def time(self, onnx_files: Sequence[Path], out: Path, device: Optional[str] = None) -> Path:
        """Upload ONNX files, run ``harness time`` on the device with its own profile, bring the JSON back."""
        names = [self.put(path, f"harness-{path.name}") for path in onnx_files]
        self.run([self.remote.python, "-m", "harness.cli", "time", *names, "--device", device or self.profile.name,
                  "--local", "--json", "harness-times.json"])
        return self.get("harness-times.json", out)
