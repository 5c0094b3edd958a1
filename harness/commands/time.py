"""``harness time``: time ONNX files on a device profile's backend with the measurement protocol."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from harness.commands import (
    add_backend,
    add_batch,
    add_command,
    add_device,
    add_input_shapes,
    add_local,
    add_output,
    input_shapes_arg,
)
from harness.errors import HarnessError, name_problem
from harness.onnx_io import InputShapes
from harness.profiles import Profile
from harness.results import Results


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
        "harness time resnet56-dc-all.onnx folded.onnx --device host --json timings.json",
    )
    parser.add_argument("onnx", nargs="+", type=Path, help="ONNX files; the first is the reference")
    add_device(parser)
    add_backend(parser)
    add_input_shapes(parser)
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
        "--layers",
        action="store_true",
        help="also profile each graph per layer with the backend's own profiler (profiled runs "
        "interleaved with the timed ones) and lint it: recorded in --json, rendered by report",
    )
    parser.add_argument(
        "--trtexec",
        action="store_true",
        help="time with NVIDIA's trtexec: the trtexec backend (its --exportTimes records, "
        "interleaved like any backend; FP16/INT8 on TensorRT 11 through the prepared graph)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.onnx_io import load_model
    from harness.outputs import write_measured
    from harness.precision import check_graph_precision
    from harness.profiles import load_profile, with_backend

    if args.trtexec and args.backend not in (None, "tensorrt", "trtexec"):
        raise HarnessError(
            f"--trtexec times with TensorRT; --backend {args.backend} contradicts it"
        )
    profile = load_profile(args.device)
    local = not profile.remote.host or args.local
    # --trtexec is the trtexec backend (on a remote device, that device's profile decides)
    profile = with_backend(profile, "trtexec" if args.trtexec and local else args.backend)
    shapes = input_shapes_arg(args)
    if len({os.path.realpath(path) for path in args.onnx}) != len(args.onnx):
        raise HarnessError("the same ONNX file is named twice")
    for (
        path
    ) in args.onnx:  # clear errors for missing, corrupt, unsafe or mislabelled files before timing
        check_graph_precision(load_model(path), profile.precisions[0], str(path))
    if not local:  # on the device itself, over SSH, with its own profile copy
        import tempfile

        from harness.remote import RemoteDevice
        from harness.results import parse_results

        with tempfile.TemporaryDirectory() as tmp:
            options = [f"--batch={args.batch}"] if args.batch else []
            options += [f"--backend={args.backend}"] if args.backend else []
            options += ["--strict"] * bool(args.strict) + ["--trtexec"] * bool(args.trtexec)
            options += ["--layers"] * bool(args.layers)
            options += shapes.options()
            fetched = RemoteDevice(profile).time(
                args.onnx, Path(tmp) / "times.json", options=options
            )
            text = fetched.read_text()
        for run in parse_results(json.loads(text), f"the results of {profile.remote.host}").runs:
            s = run.stats
            print(
                f"{run.id} on {profile.remote.host}: median {s.format()} ms, p90 {s.p90:.3f}, "
                f"p99 {s.p99:.3f}, n={s.n}"
            )
        if args.json:
            write_measured(args.json, text)
        return 0
    results = time_files(args.onnx, profile, args.batch, args.strict, shapes, args.layers)
    problems = results.all_warnings()
    if args.json:
        write_measured(args.json, json.dumps(results.to_dict(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if not results.complete:
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
    paths: List[Path],
    profile: Profile,
    batch: Optional[int] = None,
    strict: bool = False,
    shapes: Optional[InputShapes] = None,
    layers: bool = False,
) -> Results:
    """Time ONNX files interleaved and print one line each; the first is the baseline.
    ``layers``: each graph profiled per layer beside its timed runs and linted.

    Returns the results (as ``--json`` writes them: the schema ``bench`` writes).
    """
    import sys

    from harness.explain import record_on_run
    from harness.graph_stats import graph_facts
    from harness.measure import finish_results, measure_graphs, start_results
    from harness.onnx_io import bind_shapes, load_model
    from harness.results import format_interval, time_roles

    names = [str(p) for p in paths]
    problem = next(filter(None, (name_problem(n) for role in time_roles(names) for n in role)), "")
    if problem:  # model and variant are named by the files
        raise HarnessError(f"a model or variant named by its file: {problem}; rename the file")
    results = start_results(profile, ["harness"] + sys.argv[1:], strict)
    timed = measure_graphs(
        dict(zip(names, paths)),
        profile,
        batch=batch,
        shapes=shapes,
        metered=True,
        keep_partial=True,
        layers=layers,
    )
    results.device_extra["energy"] = timed.energy_note
    for path, name, (model, variant) in zip(paths, names, time_roles(names)):
        run = timed.runs[name]
        run.model, run.variant = model, variant
        graph = load_model(path)
        graph = bind_shapes(graph, shapes)[0] if shapes else graph
        for key, value in graph_facts(graph).items():
            setattr(run, key, value)  # FLOPs (per sample), params and ops, as bench records
        if layers:
            record_on_run(run, timed.layers[name], graph, profile)
        results.runs.append(run)
        s = run.stats
        line = (
            f"{name}: median {format_interval(s.median, s.median_ci_low, s.median_ci_high)} ms, "
            f"mean {s.mean:.3f}, p90 {s.p90:.3f}, p99 {s.p99:.3f}, CoV {s.cov:.1%}, "
            f"{s.throughput_per_s:.1f}/s, n={s.n}"
        )
        if run.energy is not None:
            line += f", {run.energy.format()} mJ/inference"
        if run.layers is not None:
            line += (
                f"; {len(run.layers['layers'])} layers measured, summing to "
                f"{run.layers['total_ms']:.3f} ms"
                + (" after the profiler's own cost" if run.layers.get("overhead") else "")
                + f", {len(run.findings or [])} findings"
            )
        if name != timed.reference:
            comparison = timed.comparison(name)
            results.comparisons.append(comparison)
            line += f"; speed-up {comparison.speedup.format(decimals=3)}"
            if comparison.energy is not None:
                line += f"; energy ratio {comparison.energy.format()}"
        print(line)
        for warning in run.warnings:
            print(f"  warning: {warning}")
    finish_results(results, profile)
    results.complete = not timed.interrupted
    print(f"stopped: {timed.stop_reason}")
    if timed.energy_note and not timed.energy_note.get("source"):
        print(f"energy: {timed.energy_note.get('reason')}")
    for warning in results.warnings:
        print(f"warning: {warning}")
    return results
