"""The SSH path end to end against a real sshd started by the test on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.profiles import load_profile
from harness.remote import RemoteDevice

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
pytestmark = [pytest.mark.ssh,
              pytest.mark.skipif(not SSHD or not shutil.which("ssh"), reason="needs openssh-server and ssh")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """A throwaway sshd on 127.0.0.1 accepting one key, and a known_hosts file holding its host key."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    authorized = keys / "authorized_keys"
    shutil.copy(keys / "user.pub", authorized)
    os.chmod(authorized, 0o600)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
                      f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nPidFile {tmp_path / 'pid'}\n"
                      "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
                      f"SetEnv PATH={os.path.dirname(sys.executable)}:/usr/bin:/bin\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    known = tmp_path / "known_hosts"
    host_key = (keys / "host.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield {"port": port, "identity": keys / "user", "known_hosts": known}
    proc.terminate()
    proc.wait(timeout=10)


def _remote_profile(tmp_path: Path, fast_profile: Path, port: int) -> Path:
    """The host's profile (with the SSH target); the device keeps its own copy, without one, in its workdir."""
    workdir = tmp_path / "device"
    workdir.mkdir()
    data = yaml.safe_load(fast_profile.read_text())
    (workdir / "fast.yaml").write_text(yaml.safe_dump(data))
    data["remote"] = {"host": "127.0.0.1", "port": port, "python": sys.executable, "workdir": str(workdir)}
    path = tmp_path / "fast-remote.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_time_on_a_remote_device_over_ssh(sshd, tmp_path, fast_profile):
    from harness.cli import main

    model = tmp_path / "lenet.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    profile_path = _remote_profile(tmp_path, fast_profile, sshd["port"])
    device = RemoteDevice(load_profile(str(profile_path)), sshd["identity"], sshd["known_hosts"])
    result = device.time([model], tmp_path / "times.json", device="fast.yaml")
    data = json.loads(result.read_text())
    (entry,) = data.values()
    assert entry["stats"]["n"] >= 10 and entry["stats"]["median"] > 0
    assert (tmp_path / "device" / "harness-lenet.onnx").is_file()  # uploaded into the device's workdir


def test_unknown_host_key_is_refused(sshd, tmp_path, fast_profile):
    profile_path = _remote_profile(tmp_path, fast_profile, sshd["port"])
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    device = RemoteDevice(load_profile(str(profile_path)), sshd["identity"], empty, timeout_s=30)
    with pytest.raises(HarnessError, match="failed"):
        device.run(["true"])


def test_arguments_are_quoted_not_interpreted(sshd, tmp_path, fast_profile):
    profile_path = _remote_profile(tmp_path, fast_profile, sshd["port"])
    device = RemoteDevice(load_profile(str(profile_path)), sshd["identity"], sshd["known_hosts"])
    out = device.run(["echo", "$(touch pwned); rm -rf ~"])
    assert out.strip() == "$(touch pwned); rm -rf ~"
    assert not (tmp_path / "device" / "pwned").exists()
