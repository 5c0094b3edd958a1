"""Benchmark on devices over SSH (the system ``ssh``/``scp``): one device, or a fleet in parallel.

Host keys are checked (``BatchMode``, ``StrictHostKeyChecking=yes``: an unknown host is refused,
not trusted). No local shell is used; the remote command is built from ``shlex.quote``-d
arguments, since ssh hands the remote side one command string. The device needs harness installed
(Python 3.8, no torch); ``remote.workdir`` is where it runs, and where its engine cache
(``engines/``) stays.

A fleet run (``harness bench --device a,b``) exports and folds on the workstation, ships each
device its ONNX files and a manifest (``harness-jobs/<job>/``), runs ``harness bench --manifest``
there with the device's own profile under a device lock, brings ``results.json`` back, and merges
the devices' results into one report. Remote ``bench`` and ``time`` run on the device through
``python -m harness.remote`` (``main`` below), which takes ``fcntl.flock`` on
``<workdir>/.harness.lock`` and then execs the harness command holding it: the kernel releases the
lock when that process ends, however it ends, so a lock is never stale; the file says who holds it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from harness.errors import HarnessError, shown
from harness.onnx_io import write_text_atomic
from harness.profiles import PRECISIONS, Profile
from harness.results import parse_results, time_roles, write_results

LOCK_NAME = ".harness.lock"
JOBS_DIR = "harness-jobs"
MANIFEST_VERSION = 2  # 2: each variant with its own source (suites)


def quote_remote_path(path: str) -> str:
    """A remote path for a shell command line: quoted, with a leading ``~`` kept as ``$HOME``."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


class RemoteDevice:
    """An SSH target from a profile's ``remote`` section."""

    def __init__(
        self,
        profile: Profile,
        identity: Optional[Path] = None,
        known_hosts: Optional[Path] = None,
        timeout_s: float = 600.0,
    ) -> None:
        remote = profile.remote
        if not remote.host:
            raise HarnessError(f"profile {profile.name!r} has no remote.host")
        self.profile, self.remote, self.timeout_s = profile, remote, timeout_s
        self.target = f"{remote.user}@{remote.host}" if remote.user else remote.host
        self.options = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
        ]
        identity = identity or remote.identity
        known_hosts = known_hosts or remote.known_hosts
        if identity:
            self.options += ["-i", str(identity)]
        if known_hosts:
            self.options += ["-o", f"UserKnownHostsFile={known_hosts}"]

    @property
    def device_profile(self) -> str:
        """The profile the device loads: ``remote.profile``, else this profile's name."""
        return self.remote.profile or self.profile.name

    def _call(self, argv: List[str], what: str, timeout_s: Optional[float] = None) -> str:
        timeout_s = timeout_s or self.timeout_s
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{what} on {self.target} timed out after {timeout_s:g} s") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise HarnessError(f"{what} on {self.target} failed: {last}")
        return proc.stdout

    def run(self, args: Sequence[str], timeout_s: Optional[float] = None) -> str:
        """Run a command in the remote workdir; arguments are quoted, never interpreted by a
        shell."""
        command = f"cd {quote_remote_path(self.remote.workdir)} && " + " ".join(
            shlex.quote(a) for a in args
        )
        return self._call(
            ["ssh", "-p", str(self.remote.port), *self.options, "--", self.target, command],
            "remote command",
            timeout_s,
        )

    def _remote(self, name: str) -> str:
        return f"{self.target}:{self.remote.workdir.rstrip('/')}/{name}"

    def put(self, local: Sequence[Path], remote_dir: str) -> None:
        """Copy files into a folder (relative to the workdir) that exists on the device."""
        self._call(
            [
                "scp",
                "-q",
                "-P",
                str(self.remote.port),
                *self.options,
                "--",
                *map(str, local),
                self._remote(remote_dir.rstrip("/") + "/"),
            ],
            "upload",
        )

    def get(self, remote_name: str, local: Path) -> Path:
        """Copy a file from the remote workdir."""
        self._call(
            [
                "scp",
                "-q",
                "-P",
                str(self.remote.port),
                *self.options,
                "--",
                self._remote(remote_name),
                str(local),
            ],
            "download",
        )
        return local

    def locked(self, job: str, lock_timeout_s: float, args: Sequence[str]) -> List[str]:
        """``args`` run on the device holding its lock (``python -m harness.remote``)."""
        return [
            self.remote.python,
            "-m",
            "harness.remote",
            LOCK_NAME,
            f"{lock_timeout_s:g}",
            f"job {job.rsplit('/', 1)[-1]}",
            "--",
            *args,
        ]

    def time(
        self,
        onnx_files: Sequence[Path],
        out: Path,
        device: Optional[str] = None,
        lock_timeout_s: float = 3600.0,
        options: Sequence[str] = (),
    ) -> Path:
        """Upload ONNX files, run ``harness time`` (with ``options``) on the device with its own
        profile under its lock, bring the JSON back, its runs keyed by the local paths. Files are
        uploaded under distinct names (two ``model.onnx`` from two folders stay two)."""
        job = _job_dir()
        self.run(["mkdir", "-p", job])
        try:
            with tempfile.TemporaryDirectory() as staging:
                uploads = []
                for index, path in enumerate(onnx_files):
                    uploads.append(Path(staging) / f"{index}-{path.name}")
                    os.symlink(Path(path).resolve(), uploads[-1])  # scp copies what it points to
                self.put(uploads, job)
            names = [f"{job}/{upload.name}" for upload in uploads]
            self.run(
                self.locked(
                    job,
                    lock_timeout_s,
                    [
                        self.remote.python,
                        "-m",
                        "harness.cli",
                        "time",
                        *names,
                        "--device",
                        device or self.device_profile,
                        "--local",
                        *options,
                        "--json",
                        f"{job}/times.json",
                    ],
                ),
                timeout_s=self.timeout_s + lock_timeout_s,
            )
            self.get(f"{job}/times.json", out)
        finally:
            self._clean(job)
        local = dict(zip(names, map(str, onnx_files)))
        results = parse_results(json.loads(out.read_text()), f"the results of {self.remote.host}")
        for run in results.runs:
            run.id, run.onnx = local.get(run.id, run.id), local.get(run.onnx or "", run.onnx)
        roles = dict(zip([r.id for r in results.runs], time_roles([r.id for r in results.runs])))
        for run in results.runs:  # named by the local files, as a local run names them
            run.model, run.variant = roles[run.id]
        for comparison in results.comparisons:
            comparison.reference = local.get(comparison.reference, comparison.reference)
            comparison.subject = local.get(comparison.subject, comparison.subject)
            comparison.model, comparison.variant = roles.get(
                comparison.subject, (comparison.model, comparison.variant)
            )
        write_results(results, out)
        return out

    def bench(
        self,
        manifest: Path,
        onnx_files: Sequence[Path],
        out_dir: Path,
        lock_timeout_s: float,
        extra_args: Sequence[str] = (),
    ) -> Path:
        """Time a prepared suite on the device under its lock (``extra_args`` go to its ``harness
        bench``); returns the local results.json."""
        job = _job_dir()
        self.run(["mkdir", "-p", job])
        try:
            self.put([manifest, *onnx_files], job)
            self.run(
                self.locked(
                    job,
                    lock_timeout_s,
                    [
                        self.remote.python,
                        "-m",
                        "harness.cli",
                        "bench",
                        "--device",
                        self.device_profile,
                        "--manifest",
                        f"{job}/{manifest.name}",
                        "--out",
                        f"{job}/out",
                        *extra_args,
                    ],
                ),
                timeout_s=self.timeout_s + lock_timeout_s,
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            results = out_dir / "results.json"  # complete or absent: fetched beside it, renamed
            part = self.get(f"{job}/out/results.json", out_dir / ".results.json.part")
            data = json.loads(part.read_text())  # the user's command, and what the device ran
            data["device_command"] = data.get("command")
            data["command"] = ["harness"] + sys.argv[1:]
            part.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(part, results)
            return results
        finally:
            self._clean(job)

    def _clean(self, job: str) -> None:
        """Remove a job's uploads from the device (best effort: the results are already back)."""
        try:
            self.run(["rm", "-rf", job], timeout_s=60)
        except HarnessError as exc:
            print(f"warning: {self.profile.name}: could not remove {job}: {exc}", file=sys.stderr)


def _job_dir() -> str:
    return f"{JOBS_DIR}/{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class DeviceLock:
    """One benchmark at a time on a device: an exclusive ``flock`` on a file, with its owner.

    Taken on the device (``python -m harness.remote`` hands it to the command it becomes);
    released when the holding process ends, however it ends.
    """

    def __init__(self, path: Path, timeout_s: float, owner: str = "", poll_s: float = 0.5) -> None:
        self.path, self.timeout_s, self.poll_s = Path(path), timeout_s, poll_s
        self.owner = owner or f"{socket.gethostname()} pid {os.getpid()}"
        self._fd: Optional[int] = None

    def __enter__(self) -> DeviceLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise HarnessError(
                        f"device busy: {self.path} is held by {holder} "
                        f"(waited {self.timeout_s:g} s)"
                    ) from None
                time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(fd, f"{self.owner}, since {since}\n".encode(), 0)
        self._fd = fd
        return self

    def exec_holding(self, argv: Sequence[str]) -> None:
        """Become ``argv`` (``os.execvp``) with the lock held: it is released when that process
        ends, as with util-linux ``flock``."""
        if self._fd is None:
            raise HarnessError("the device lock is not held")
        os.set_inheritable(self._fd, True)
        try:
            os.execvp(argv[0], list(argv))
        except OSError as exc:
            raise HarnessError(f"cannot run {argv[0]} on the device: {exc.strerror}") from None

    def __exit__(self, *exc_info: Any) -> None:
        import fcntl

        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def write_manifest(options: Any, prepared: Dict[str, List[Any]], path: Path) -> List[Path]:
    """The prepared suite for a device: sources, graphs (ONNX file names) and settings; returns
    the ONNX files to ship beside it."""
    models, files = [], []
    for suite_model in options.sources:
        graphs = []
        for config in prepared[suite_model.name]:
            files.append(config.onnx_path)
            graphs.append(
                {
                    "run_id": config.run_id,
                    "variant": config.variant,
                    "folded": config.folded,
                    "file": config.onnx_path.name,
                    "info": config.info,
                }
            )
        sources = {
            variant: {
                "kind": s.kind,
                "name": s.name,
                "reference": s.reference,
                "variant": s.variant,
            }
            for variant, s in suite_model.graphs.items()
        }
        models.append({"name": suite_model.name, "variants": sources, "graphs": graphs})
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise HarnessError("two prepared graphs share a file name; rename the models")
    manifest = {
        "manifest": MANIFEST_VERSION,
        "merge": options.merge,
        "verify": options.verify,
        "batch": options.batch,
        "precision": options.precision,
        "layers": options.layers,  # read as False where absent (manifests before it)
        "models": models,
    }
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return files


def _check_manifest_model(model: Any) -> None:
    """One model entry of a manifest, typed; its graphs' files plain names beside the manifest
    (ValueError, which ``read_manifest`` reports in one line)."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError("a model entry is not an object with a name")
    variants = model.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"model {model['name']!r:.40}: variants is not an object of sources")
    for variant, source in variants.items():
        if not (
            isinstance(source, dict)
            and source.get("kind") in ("zoo", "factory", "onnx")
            and all(isinstance(source.get(key), str) for key in ("name", "reference"))
            and isinstance(source.get("variant"), (str, type(None)))
        ):
            raise ValueError(
                f"model {model['name']!r:.40}: variant {variant!r:.40} is not a source "
                "(kind zoo, factory or onnx; name, variant, reference)"
            )
    for graph in model.get("graphs") or []:
        file = graph.get("file") if isinstance(graph, dict) else None
        if not (
            isinstance(file, str)
            and re.fullmatch(r"[^/\\\x00]+", file)
            and file not in (".", "..")
            and all(isinstance(graph.get(key), str) for key in ("run_id", "variant"))
            and isinstance(graph.get("info"), dict)
        ):
            raise ValueError(f"graph {graph!r:.60} (file: a name beside the manifest)")


def read_manifest(path: Path, profile: Profile, out_dir: Path) -> Any:
    """BenchOptions for a prepared suite (device side); ONNX files lie beside the manifest."""
    from harness.bench import BenchOptions, SuiteModel, _Config
    from harness.export import ModelSource

    if not Path(path).is_file():
        raise HarnessError(f"bench manifest {path} does not exist")
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("manifest") != MANIFEST_VERSION:
            raise HarnessError(
                f"{path}: manifest version {shown(data.get('manifest'))}, this harness "
                f"reads {MANIFEST_VERSION}"
            )
        sources, prepared = [], {}
        for model in data["models"]:
            _check_manifest_model(model)
            graphs = {
                variant: ModelSource(s["kind"], s["name"], s["variant"], s["reference"])
                for variant, s in model["variants"].items()
            }
            sources.append(SuiteModel(str(model["name"]), graphs))
            prepared[sources[-1].name] = [
                _Config(
                    g["run_id"],
                    g["variant"],
                    bool(g["folded"]),
                    path.parent / g["file"],
                    dict(g["info"]),
                )
                for g in model["graphs"]
            ]
            if not prepared[sources[-1].name]:
                raise ValueError(f"model {sources[-1].name!r} has no graphs")
        if not sources:
            raise ValueError("no models")
        if data["merge"] not in ("auto", "all", "none") or int(data["batch"]) < 1:
            raise ValueError(f"merge {data['merge']!r} or batch {data['batch']!r}")
        if str(data["precision"]) not in PRECISIONS:
            raise ValueError(f"precision {data['precision']!r}")
        return BenchOptions(
            sources,
            profile,
            out_dir,
            merge=data["merge"],
            verify=bool(data["verify"]),
            batch=int(data["batch"]),
            precision=str(data["precision"]),
            prepared=prepared,
            layers=data.get("layers", False) is True,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise HarnessError(f"{path} is not a readable bench manifest ({reason:.120})") from None


@dataclasses.dataclass
class DeviceOutcome:
    """What became of one device of a fleet run."""

    device: str
    out_dir: Path
    results: Optional[Path] = None
    error: Optional[str] = None


def _prepare_remote(options: Any, log: Callable[[str], None]) -> Tuple[Path, List[Path]]:
    """Export and fold here for the device of ``options.profile``; the manifest and its files."""
    from harness.bench import prepare_suite

    log(f"{options.profile.name}: exporting and folding")
    prepared = prepare_suite(options)
    manifest = options.out_dir / "manifest.json"
    return manifest, write_manifest(options, prepared, manifest)


def _time_remote(
    options: Any,
    manifest: Path,
    files: List[Path],
    lock_timeout_s: float,
    log: Callable[[str], None],
    strict: bool,
) -> DeviceOutcome:
    """Ship a prepared suite, time it on the device (on the backend chosen here, ``--strict``
    passed on), bring results.json back and tabulate it."""
    from harness.report.pipeline import write_bench_tables
    from harness.results import read_results

    device = RemoteDevice(options.profile)
    log(f"{options.profile.name}: timing on {device.target} (profile {device.device_profile})")
    extra = ["--backend", options.profile.backend] + (["--strict"] if strict else [])
    results_path = device.bench(manifest, files, options.out_dir, lock_timeout_s, extra)
    write_bench_tables(read_results(results_path), options.out_dir)
    log(f"{options.profile.name}: results back in {results_path}")
    return DeviceOutcome(options.profile.name, options.out_dir, results_path)


def run_fleet(
    jobs: List[Any],
    lock_timeout_s: float,
    run_local: Callable[[Any], Path],
    log: Callable[[str], None],
    strict: bool = False,
) -> List[DeviceOutcome]:
    """Bench every device: remote ones in parallel (one thread each, once exported and folded
    here, one after the other), local ones here meanwhile.

    A device's failure is recorded in its outcome; the other devices carry on.
    """
    outcomes: Dict[str, DeviceOutcome] = {}
    timing: Dict[str, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        for options in jobs:
            if not options.profile.remote.host:
                continue
            try:
                manifest, files = _prepare_remote(options, log)
            except Exception as exc:  # noqa: BLE001 -- reported per device, others carry on
                outcomes[options.profile.name] = _failure(options, exc)
                continue
            timing[options.profile.name] = pool.submit(
                _time_remote, options, manifest, files, lock_timeout_s, log, strict
            )
        for options in jobs:
            if not options.profile.remote.host:
                outcomes[options.profile.name] = _guarded(
                    options,
                    lambda o=options: DeviceOutcome(o.profile.name, o.out_dir, run_local(o)),
                )
        for options in jobs:
            if options.profile.name in timing:
                outcomes[options.profile.name] = _guarded(
                    options, timing[options.profile.name].result
                )
    return [outcomes[o.profile.name] for o in jobs]


def _failure(options: Any, exc: BaseException) -> DeviceOutcome:
    message = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
    return DeviceOutcome(options.profile.name, options.out_dir, error=message)


def _guarded(options: Any, call: Callable[[], DeviceOutcome]) -> DeviceOutcome:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 -- a device's crash must not lose the others' results
        return _failure(options, exc)


def fleet_summary(outcomes: List[DeviceOutcome]) -> Tuple[List[Path], List[str]]:
    """The results files that came back and one line per failed device."""
    done = [o.results for o in outcomes if o.results is not None]
    failed = [f"{o.device}: {o.error}" for o in outcomes if o.error is not None]
    return done, failed


USAGE = "python -m harness.remote LOCK_FILE TIMEOUT_S OWNER -- COMMAND [ARG...]"


def main(argv: Optional[List[str]] = None) -> int:
    """Device side: run COMMAND holding the device lock (waiting up to TIMEOUT_S for it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) < 5 or argv[3] != "--":
            raise HarnessError(f"usage: {USAGE}")
        try:
            timeout_s = float(argv[1])
        except ValueError:
            raise HarnessError(f"TIMEOUT_S {argv[1]!r} is not a number (usage: {USAGE})") from None
        with DeviceLock(Path(argv[0]), timeout_s, argv[2]) as lock:
            lock.exec_holding(argv[4:])  # on success this process is COMMAND, lock and all
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
