"""``harness time``: time ONNX files on a device profile's backend with the measurement protocol."""

from __future__ import annotations

import json
from pathlib import Path

from harness.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "time", "time one or more ONNX files (interleaved) and print their statistics",
        "Time ONNX files on the profile's backend with the measurement protocol: warm-up, interleaved blocks, "
        "median with its 95% CI, mean, p90/p95/p99, std, CoV, throughput. With two or more files, the speed-up "
        "of each against the first is given with a bootstrap 95% interval.",
        "harness time base.onnx folded.onnx --device host --json timings.json")
    parser.add_argument("onnx", nargs="+", type=Path, help="ONNX files; the first is the reference")
    parser.add_argument("--device", default="host", help="device profile name or YAML path (default: host)")
    parser.add_argument("--json", type=Path, default=None, help="also write raw samples and statistics here")
    parser.add_argument("--local", action="store_true",
                        help="time on this machine even when the profile names a remote device")
    parser.add_argument("--trtexec", action="store_true",
                        help="time each file with NVIDIA's trtexec instead (its --exportTimes, one file at a time)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from harness import timing
    from harness.backends import get_runner_class
    from harness.backends.base import open_runners, resolve_batch
    from harness.errors import HarnessError
    from harness.onnx_io import load_model, write_text_atomic
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    if len(set(args.onnx)) != len(args.onnx):
        raise HarnessError("the same ONNX file is named twice")
    for path in args.onnx:
        load_model(path)  # clear errors for missing, corrupt or unsafe files before timing anything
    if profile.remote.host and not args.local:  # on the device itself, over SSH, with its own profile copy
        import tempfile

        from harness.remote import RemoteDevice

        with tempfile.TemporaryDirectory() as tmp:
            fetched = RemoteDevice(profile).time(args.onnx, Path(tmp) / "times.json")
            text = fetched.read_text()
        for name, entry in json.loads(text).items():
            s = entry["stats"]
            print(f"{name} on {profile.remote.host}: median {s['median']:.3f} ms [{s['median_ci_low']:.3f}, "
                  f"{s['median_ci_high']:.3f}], p90 {s['p90']:.3f}, p99 {s['p99']:.3f}, n={s['n']}")
        if args.json:
            write_text_atomic(args.json, text)
        return 0
    if args.trtexec:
        return _time_with_trtexec(args, profile)
    runner_class = get_runner_class(profile.backend)
    runners = {str(p): runner_class(p, profile, profile.precisions[0], resolve_batch(p, profile.batch_sizes[0]))
               for p in args.onnx}
    with open_runners(runners):
        measured = timing.measure_interleaved(runners, profile.timing)
    reference = measured[str(args.onnx[0])]
    report = {}
    for name, m in measured.items():
        s = m.stats()
        line = (f"{name}: median {s.median:.3f} ms [{s.median_ci_low:.3f}, {s.median_ci_high:.3f}], mean "
                f"{s.mean:.3f}, p90 {s.p90:.3f}, p99 {s.p99:.3f}, CoV {s.cov:.1%}, {s.throughput_per_s:.1f}/s, "
                f"n={s.n}")
        entry = {"stats": dataclasses.asdict(s), "series_ms": m.series, "warnings": m.warnings()}
        if m is not reference:
            ratio, low, high = timing.measurement_ratio_ci(reference, m)
            line += f"; speed-up {ratio:.2f}x [{low:.2f}, {high:.2f}]"
            entry["speedup"] = {"value": ratio, "ci_low": low, "ci_high": high}
        print(line)
        for warning in m.warnings():
            print(f"  warning: {warning}")
        report[name] = entry
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
    return 0


def _time_with_trtexec(args, profile) -> int:
    """Each file through trtexec with the profile's settings; statistics from its per-query records."""
    import json

    from harness.backends.trtexec import run_trtexec
    from harness.onnx_io import load_model, write_text_atomic
    from harness.timing import summarize

    report = {}
    for path in args.onnx:
        model = load_model(path)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        run = run_trtexec(path, profile, profile.precisions[0], profile.batch_sizes[0],
                          tuple(d.dim_value for d in dims), model.graph.input[0].name)
        stats = summarize(run["series_ms"]["latency_ms"], profile.batch_sizes[0])
        compute = summarize(run["series_ms"]["gpu_compute_ms"])
        print(f"{path} (trtexec, TensorRT {run['tensorrt']}): latency median {stats.median:.3f} ms, p99 "
              f"{stats.p99:.3f}; GPU compute median {compute.median:.3f} ms; n={stats.n}")
        report[str(path)] = {"trtexec": run["command"], "tensorrt": run["tensorrt"], "series_ms": run["series_ms"]}
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
    return 0
