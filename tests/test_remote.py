"""The SSH path end to end against real sshd instances started by the tests on 127.0.0.1: one device
for `time`, two devices benched in parallel by one `harness bench` with a merged report, the device
lock, host-key checking and argument quoting."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from harness.cli import main
from harness.errors import HarnessError
from harness.profiles import load_profile
from harness.remote import LOCK_NAME, DeviceLock, RemoteDevice, quote_remote_path
from harness.results import read_results

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
needs_sshd = pytest.mark.skipif(
    not SSHD or not shutil.which("ssh"), reason="needs openssh-server (sshd) and ssh"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_sshd(root: Path, user_key: Path, known_hosts: Path) -> Dict:
    """A throwaway sshd on 127.0.0.1 accepting ``user_key``; its host key goes into known_hosts."""
    root.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host")], check=True
    )
    authorized = root / "authorized_keys"
    shutil.copy(f"{user_key}.pub", authorized)
    os.chmod(authorized, 0o600)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\nPidFile {root / 'pid'}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\n"
        f"SetEnv PATH={os.path.dirname(sys.executable)}:/usr/bin:/bin\n"
    )
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder, as root
    except OSError:
        pass
    log = root / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log.open("w"))
    host_key = (root / "host.pub").read_text().split()
    with known_hosts.open("a") as f:
        f.write(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return {"port": port, "proc": proc}
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(10)
    pytest.skip(f"sshd could not start here: {log.read_text().strip()[-300:] or 'no message'}")


@pytest.fixture
def sshds(tmp_path):
    """Two sshd "devices" on 127.0.0.1, one user key, one known_hosts file holding both host
    keys."""
    keys = tmp_path / "keys"
    keys.mkdir()
    user = keys / "user"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user)], check=True)
    known = keys / "known_hosts"
    known.write_text("")
    servers: List[Dict] = []
    try:
        for i in range(2):
            servers.append(_start_sshd(tmp_path / f"sshd-{i}", user, known))
        yield {"ports": [s["port"] for s in servers], "identity": user, "known_hosts": known}
    finally:  # also when the second one could not start
        for server in servers:
            server["proc"].terminate()
            server["proc"].wait(timeout=10)


def _device(
    tmp_path: Path, fast_profile: Path, name: str, port: int, sshds: Dict, timing: Dict = None
) -> Path:
    """A device's workdir holding its own profile, and the workstation's profile naming it."""
    workdir = tmp_path / f"device-{name}"
    workdir.mkdir()
    data = yaml.safe_load(fast_profile.read_text())
    data["name"] = name
    data["timing"].update(timing or {})
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(data))
    data["remote"] = {
        "host": "127.0.0.1",
        "port": port,
        "python": sys.executable,
        "workdir": str(workdir),
        "profile": f"{name}.yaml",
        "identity": str(sshds["identity"]),
        "known_hosts": str(sshds["known_hosts"]),
    }
    path = tmp_path / "workstation" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "path,quoted",
    [
        ("~", '"$HOME"'),
        ("~/harness", '"$HOME"/harness'),
        ("~/my dir", "\"$HOME\"/'my dir'"),
        ("/opt/h; rm -rf /", "'/opt/h; rm -rf /'"),
    ],
)
def test_remote_paths_are_quoted_with_home_expanded(path, quoted):
    assert quote_remote_path(path) == quoted
    out = subprocess.run(
        ["sh", "-c", f"printf %s {quote_remote_path(path)}"],
        capture_output=True,
        text=True,
        env={"HOME": "/home/u"},
    ).stdout
    assert out == path.replace("~", "/home/u", 1)


def _hold(path: str, started, release) -> None:
    with DeviceLock(Path(path), timeout_s=5, owner="first job"):
        started.set()
        release.wait(10)


def test_device_lock_is_exclusive_names_its_owner_and_frees_on_exit(tmp_path):
    lock = tmp_path / LOCK_NAME
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(lock), started, release))
    holder.start()
    try:
        assert started.wait(30)
        with pytest.raises(HarnessError, match="device busy: .* held by first job, since "):
            with DeviceLock(lock, timeout_s=0.3, poll_s=0.1):
                pass
    finally:
        release.set()
        holder.join(30)
    with DeviceLock(lock, timeout_s=5, owner="second job"):  # free again once the holder ended
        assert lock.read_text().startswith("second job, since ")


def test_a_command_run_under_the_lock_holds_it_until_it_ends(tmp_path):
    lock, started = tmp_path / LOCK_NAME, tmp_path / "started"
    script = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(2)"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.remote",
            str(lock),
            "5",
            "job 7 on bench-host",
            "--",
            sys.executable,
            "-c",
            script,
        ]
    )
    try:
        for _ in range(300):
            if started.exists() or holder.poll() is not None:
                break
            time.sleep(0.05)
        assert started.exists()  # the command runs as the process that holds the lock
        with pytest.raises(HarnessError, match="held by job 7 on bench-host, since "):
            with DeviceLock(lock, timeout_s=0.2, poll_s=0.05):
                pass
    finally:
        assert holder.wait(30) == 0
    with DeviceLock(lock, timeout_s=1):
        pass
    usage = subprocess.run(
        [sys.executable, "-m", "harness.remote", str(lock), "soon", "x", "--", "true"],
        capture_output=True,
        text=True,
    )
    assert usage.returncode == 2 and usage.stderr.startswith("error: TIMEOUT_S 'soon'")


@pytest.mark.ssh
@needs_sshd
def test_time_on_a_remote_device_over_ssh(sshds, tmp_path, fast_profile):
    model = tmp_path / "lenet.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    profile = _device(tmp_path, fast_profile, "dev-a", sshds["ports"][0], sshds)
    device = RemoteDevice(load_profile(str(profile)))
    twin = tmp_path / "other" / "lenet.onnx"  # another file of the same name
    twin.parent.mkdir()
    twin.write_bytes(model.read_bytes())
    data = json.loads(device.time([model, twin], tmp_path / "times.json").read_text())
    runs = data["runs"]  # the results schema, named by the local paths
    assert sorted(r["id"] for r in runs) == sorted([str(model), str(twin)])
    assert sorted(r["onnx"] for r in runs) == sorted([str(model), str(twin)])
    for entry in runs:
        assert entry["stats"]["n"] >= 10 and entry["stats"]["median"] > 0
    assert data["device"]["profile"]["name"] == "dev-a"  # the device's own profile
    assert not list((tmp_path / "device-dev-a" / "harness-jobs").iterdir())  # uploads cleaned
    with pytest.raises(HarnessError, match="fixed batch of 1, not 4"):  # options reach the device
        device.time([model], tmp_path / "t4.json", options=["--batch=4"])


@pytest.mark.ssh
@needs_sshd
def test_fleet_bench_two_devices_in_parallel_one_broken(sshds, tmp_path, fast_profile, capsys):
    slow = {"min_duration_s": 1.0, "max_duration_s": 1.5}  # each device times for >= 3 s
    profiles = [
        _device(tmp_path, fast_profile, f"dev-{c}", port, sshds, slow)
        for c, port in zip("ab", sshds["ports"])
    ]
    broken = _device(tmp_path, fast_profile, "dev-c", _free_port(), sshds)  # nothing listens
    out = tmp_path / "fleet"
    devices = ",".join(map(str, [*profiles, broken]))
    assert main(["bench", "--device", devices, "--models", "lenet5", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert (
        "dev-c: upload on 127.0.0.1 failed" in captured.err
        or "dev-c: remote command" in captured.err
    )
    assert "1 of 3 devices failed (dev-c); the others' results are kept" in captured.err
    windows: List = []
    for name in ("dev-a", "dev-b"):
        results = read_results(out / name / "results.json")
        assert results.device_name == name and results.complete
        assert results.command[0] == "harness" and "--manifest" not in results.command  # ours
        command = results.extra["device_command"]  # timed on the device, by its harness, locked
        assert (
            command[command.index("--manifest") - 2 : command.index("--manifest")]
            == ["--device", f"{name}.yaml"]
            and "--backend" in command
        )
        assert (tmp_path / f"device-{name}" / LOCK_NAME).read_text().startswith("job ")
        assert {run.label for run in results.runs} >= {"lenet5/baseline"}
        assert all(run.stats.median > 0 for run in results.runs)
        assert results.runs[0].source["kind"] == "zoo"
        assert results.comparison("lenet5", results.runs[-1].variant) is not None
        assert (out / name / "report.md").is_file()
        assert not list((tmp_path / f"device-{name}" / "harness-jobs").iterdir())
        windows.append(
            (results.environment_before["captured_at"], results.environment_after["captured_at"])
        )
    (a_start, a_end), (b_start, b_end) = windows
    assert a_start < b_end and b_start < a_end  # the two devices timed at the same time
    merged = (out / "fleet-report" / "report.md").read_text()
    assert "dev-a" in merged and "dev-b" in merged and "dev-c" not in merged


@pytest.mark.ssh
@needs_sshd
def test_a_busy_device_is_waited_for_then_refused(sshds, tmp_path, fast_profile, capsys):
    profile = _device(tmp_path, fast_profile, "dev-a", sshds["ports"][0], sshds)
    lock = tmp_path / "device-dev-a" / LOCK_NAME
    with DeviceLock(lock, timeout_s=1, owner="ci job 41"):
        code = main(
            [
                "bench",
                "--device",
                str(profile),
                "--models",
                "lenet5",
                "--out",
                str(tmp_path / "out"),
                "--lock-timeout",
                "1",
            ]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert "device busy" in err and "held by ci job 41" in err


@pytest.mark.ssh
@needs_sshd
def test_unknown_host_key_is_refused(sshds, tmp_path, fast_profile):
    profile = _device(tmp_path, fast_profile, "dev-a", sshds["ports"][0], sshds)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    device = RemoteDevice(load_profile(str(profile)), known_hosts=empty, timeout_s=30)
    with pytest.raises(HarnessError, match="failed"):
        device.run(["true"])


@pytest.mark.ssh
@needs_sshd
def test_arguments_are_quoted_not_interpreted(sshds, tmp_path, fast_profile):
    profile = _device(tmp_path, fast_profile, "dev-a", sshds["ports"][0], sshds)
    device = RemoteDevice(load_profile(str(profile)))
    out = device.run(["echo", "$(touch pwned); rm -rf ~"])
    assert out.strip() == "$(touch pwned); rm -rf ~"
    assert not (tmp_path / "device-dev-a" / "pwned").exists()


NO_TORCH = """import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("no torch on this device")
sys.meta_path.insert(0, NoTorch())
"""


def test_the_device_times_a_prepared_suite_without_torch(tmp_path, fast_profile):
    """What a device runs (``bench --manifest``) imports no torch: JetPack 5.1 has none."""
    from harness.bench import BenchOptions, prepare_suite, resolve_suite
    from harness.remote import read_manifest, write_manifest

    options = BenchOptions(
        resolve_suite(["lenet5"], "first", None),
        load_profile(str(fast_profile)),
        tmp_path / "prepared",
    )
    manifest = tmp_path / "prepared" / "manifest.json"
    files = write_manifest(options, prepare_suite(options), manifest)
    device = tmp_path / "device"
    device.mkdir()
    for path in [manifest, *files]:
        shutil.copy(path, device / path.name)  # what scp ships
    argv = [
        "bench",
        "--device",
        str(fast_profile),
        "--manifest",
        str(device / "manifest.json"),
        "--out",
        str(device / "out"),
    ]
    code = NO_TORCH + f"from harness.cli import main\nsys.exit(main({argv!r}))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = read_results(device / "out" / "results.json")
    assert {run.id for run in results.runs} == {c.run_id for c in prepare_suite(options)["lenet5"]}
    assert all(run.source["kind"] == "zoo" and run.flops for run in results.runs)

    # what the manifest fixes cannot be asked for again, and a broken manifest is one line
    assert main(argv + ["--batch", "4"]) == 2
    bad = device / "bad.json"
    data = json.loads((device / "manifest.json").read_text())
    for broken, message in [
        ([1], "not a JSON object"),
        ({**data, "models": []}, "no models"),
        ({**data, "merge": "bogus"}, "merge 'bogus'"),
        ({**data, "models": [{**data["models"][0], "graphs": []}]}, "has no graphs"),
    ]:
        bad.write_text(json.dumps(broken))
        with pytest.raises(HarnessError, match=message):
            read_manifest(bad, load_profile(str(fast_profile)), device / "out2")
