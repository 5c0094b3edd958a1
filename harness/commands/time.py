"""``harness time``: time ONNX files on a device profile's backend with the measurement protocol."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from harness.commands import add_batch, add_command, add_device, add_local, add_output
from harness.profiles import Profile


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "time",
        "time one or more ONNX files (interleaved) and print their statistics",
        "Time ONNX files on the profile's backend with the measurement protocol: warm-up, "
        "interleaved blocks, median with its 95% CI, mean, p90/p95/p99, std, CoV, throughput. With "
        "two or more files, the speed-up of each against the first (the ratio of their medians) is "
        "given with a 95% interval from a paired bootstrap over rounds, and sampling continues "
        "until those intervals meet the profile's target_ci or its time cap (then the resolution "
        "reached is printed). On a GPU with nvidia-ml-py the SM clock, power and throttle reasons "
        "are recorded after every block.",
        "harness time base.onnx folded.onnx --device host --json timings.json",
    )
    parser.add_argument("onnx", nargs="+", type=Path, help="ONNX files; the first is the reference")
    add_device(parser)
    parser.add_argument(
        "--backend", default=None, help="run on this backend instead of the profile's"
    )
    add_batch(parser, help="batch size, e.g. 128 for throughput next to latency")
    add_output(
        parser,
        "--json",
        help="also write everything measured here: samples, blocks, device state per block, "
        "settings, environment (checked before timing; kept in a temporary file when "
        "it cannot be written)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) when the device state differs from the profile or moved during the "
        "run (the JSON is still written)",
    )
    add_local(parser, "time")
    parser.add_argument(
        "--trtexec",
        action="store_true",
        help="time each file with NVIDIA's trtexec instead (its --exportTimes, one file at a time)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.errors import HarnessError
    from harness.onnx_io import load_model
    from harness.outputs import write_measured
    from harness.precision import check_graph_precision
    from harness.profiles import load_profile, with_backend

    if args.trtexec and args.backend not in (None, "tensorrt", "trtexec"):
        raise HarnessError(
            f"--trtexec times with TensorRT; --backend {args.backend} contradicts it"
        )
    profile = with_backend(load_profile(args.device), args.backend)
    if len({os.path.realpath(path) for path in args.onnx}) != len(args.onnx):
        raise HarnessError("the same ONNX file is named twice")
    for (
        path
    ) in args.onnx:  # clear errors for missing, corrupt, unsafe or mislabelled files before timing
        check_graph_precision(load_model(path), profile.precisions[0], str(path))
    if (
        profile.remote.host and not args.local
    ):  # on the device itself, over SSH, with its own profile copy
        import tempfile

        from harness.remote import RemoteDevice

        with tempfile.TemporaryDirectory() as tmp:
            options = [f"--batch={args.batch}"] if args.batch else []
            options += [f"--backend={args.backend}"] if args.backend else []
            options += ["--strict"] * bool(args.strict) + ["--trtexec"] * bool(args.trtexec)
            fetched = RemoteDevice(profile).time(
                args.onnx, Path(tmp) / "times.json", options=options
            )
            text = fetched.read_text()
        data = json.loads(text)
        for name, entry in data.get("runs", data).items():
            s = entry["stats"]
            print(
                f"{name} on {profile.remote.host}: median {s['median']:.3f} ms "
                f"[{s['median_ci_low']:.3f}, {s['median_ci_high']:.3f}], p90 {s['p90']:.3f}, p99 "
                f"{s['p99']:.3f}, n={s['n']}"
            )
        if args.json:
            write_measured(args.json, text)
        return 0
    if args.trtexec:
        return _time_with_trtexec(args, profile)
    report = time_files(args.onnx, profile, args.batch, args.strict)
    problems = report["device"]["warnings"] + [
        f"{name}: {w}" for name, entry in report["runs"].items() for w in entry["warnings"]
    ]
    if args.json:
        write_measured(args.json, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    if not report["complete"]:
        print("interrupted: the blocks measured so far are kept", file=sys.stderr)
        return 130
    if args.strict and problems:
        raise HarnessError(
            "--strict: the device was not in a state to measure: "
            + "; ".join(problems)
            + (f" (measurements kept in {args.json})" if args.json else "")
        )
    return 0


def time_files(
    paths: List[Path], profile: Profile, batch: Optional[int] = None, strict: bool = False
) -> Dict[str, Any]:
    """Time ONNX files interleaved and print one line each.

    Returns the complete record (as ``--json`` writes it).
    """
    import dataclasses

    from harness import energy, envinfo, timing
    from harness.backends import get_runner_class
    from harness.backends.base import open_runners, resolve_batch
    from harness.results import RatioCI, format_interval

    environment = envinfo.capture_environment(profile)
    device_warnings = envinfo.enforce_expectations(environment, profile, strict)
    batch = batch or profile.batch_sizes[0]
    runner_class = get_runner_class(profile.backend)
    runners = {
        str(p): runner_class(p, profile, profile.precisions[0], resolve_batch(p, batch))
        for p in paths
    }
    monitor = envinfo.GpuMonitor.open() if profile.kind != "cpu" else None
    meter = None
    measured: Dict[str, timing.Measurement] = {}
    interrupted = False
    try:
        with open_runners(runners):
            meter, idle_w, energy_note = energy.open_for_run(profile.kind)
            try:
                timing.measure_interleaved(
                    runners,
                    profile.timing,
                    monitor=monitor.sample if monitor else None,
                    energy=meter,
                    into=measured,
                )
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep the whole blocks measured
                if not timing.keep_interrupted(measured):
                    raise
                interrupted = True
            backends = {name: runner.describe() for name, runner in runners.items()}
            shapes = {
                name: {k: list(v[0]) for k, v in runner.input_specs().items()}
                for name, runner in runners.items()
            }
    finally:
        if monitor:
            monitor.close()
        if meter:
            meter.close()
    spent = {
        name: energy.run_energy(meter, m.block_energy, m.block_inferences, idle_w)
        for name, m in measured.items()
        if meter and m.block_energy
    }
    after = envinfo.capture_environment(profile)
    device_warnings += envinfo.state_changes(environment, after)
    reference = measured[str(paths[0])]
    runs = {}
    for name, m in measured.items():
        s = m.stats()
        line = (
            f"{name}: median {format_interval(s.median, s.median_ci_low, s.median_ci_high)} ms, "
            f"mean {s.mean:.3f}, p90 {s.p90:.3f}, p99 {s.p99:.3f}, CoV {s.cov:.1%}, "
            f"{s.throughput_per_s:.1f}/s, n={s.n}"
        )
        entry = {
            "backend": backends[name],
            "inputs": shapes[name],
            "stats": dataclasses.asdict(s),
            "series_ms": m.series,
            "block_ends": m.block_ends,
            "block_state": m.block_state,
            "warmup_iterations": m.warmup_iterations,
            "run_time_s": m.run_time_s,
            "stop_reason": m.stop_reason,
            "resolution": m.resolution,
            "warnings": m.warnings(),
        }
        if name in spent:
            entry["energy"] = spent[name].to_dict()
            line += f", {spent[name].format()} mJ/inference"
        if m is not reference:
            ratio, low, high = timing.measurement_ratio_ci(reference, m)
            line += f"; speed-up {RatioCI(ratio, low, high).format(decimals=3)}"
            cost = energy.energy_ratio(spent[name], spent[str(paths[0])]) if name in spent else None
            if cost is not None:
                line += f"; energy ratio {cost.format()}"
                entry["energy_ratio"] = dataclasses.asdict(cost)
            entry["speedup"] = {
                "value": ratio,
                "ci_low": low,
                "ci_high": high,
                "reference": str(paths[0]),
                "paired": True,
            }
        print(line)
        for warning in m.warnings():
            print(f"  warning: {warning}")
        runs[name] = entry
    print(f"stopped: {reference.stop_reason}")
    if not meter:
        print(f"energy: {energy_note['reason']}")
    for warning in device_warnings:
        print(f"warning: {warning}")
    return {
        "schema": 1,
        "kind": "harness time",
        "complete": not interrupted,
        "argv": ["harness"] + sys.argv[1:],
        "reference": str(paths[0]),
        "profile": profile.to_dict(),
        "settings": dataclasses.asdict(profile.timing),
        "batch": batch,
        "device": {
            "environment": environment,
            "environment_after": after,
            "warnings": device_warnings,
            "energy": energy_note,
        },
        "runs": runs,
    }


def _time_with_trtexec(args, profile) -> int:
    """Each file through trtexec with the profile's settings; statistics from per-query records."""
    import json

    from harness.backends.trt.trtexec import run_trtexec
    from harness.onnx_io import load_model
    from harness.outputs import write_measured
    from harness.timing import summarize

    report = {}
    for path in args.onnx:
        model = load_model(path)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        run = run_trtexec(
            path,
            profile,
            profile.precisions[0],
            profile.batch_sizes[0],
            tuple(d.dim_value for d in dims),
            model.graph.input[0].name,
        )
        stats = summarize(run["series_ms"]["latency_ms"], profile.batch_sizes[0])
        compute = summarize(run["series_ms"]["gpu_compute_ms"])
        print(
            f"{path} (trtexec, TensorRT {run['tensorrt']}): latency median {stats.median:.3f} ms, "
            f"p99 {stats.p99:.3f}; GPU compute median {compute.median:.3f} ms; n={stats.n}"
        )
        report[str(path)] = {
            "trtexec": run["command"],
            "tensorrt": run["tensorrt"],
            "series_ms": run["series_ms"],
        }
    if args.json:
        write_measured(args.json, json.dumps(report, indent=1) + "\n")
    return 0
