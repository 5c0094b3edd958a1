"""``harness calibrate``: fit the fold cost model to micro-benchmarks measured on a device and
backend."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import (
    add_backend,
    add_batch,
    add_command,
    add_device,
    add_local,
    add_output,
    refuse_remote,
)

DESCRIPTION = """Time convolutions on the device (dense and depthwise; kernels 1-7; several channel
counts and spatial sizes) and element-wise Adds, each as the marginal cost of one more layer inside
a graph (timed once and three times in a row, interleaved), with a shortened measurement protocol;
fit the cost model that `fold --merge auto` uses (a fixed cost and a FLOP rate per kind of conv, a
bandwidth term) and write it beside the profile as <profile>.<backend>.<precision>.calibration.json,
with the measured points, the fit's error on them and the provenance (device state, versions, date).
Commit that file with the profile. Interrupted runs resume from <output>.progress.jsonl (only
measurements made with the same device, backend, settings and versions).

--check a.onnx,b.onnx checks the cost model fold would use (this calibration) where it decides:
every partition of each conv chain `fold --merge auto` considers is folded and profiled layer by
layer; the share of predictions within +/-10% and +/-20% of measured and auto against the oracle
(the partition measured fastest) are stored beside the calibration
(<profile>.<backend>.<precision>.costcheck.json) and shown by --show."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "calibrate",
        "fit the merge cost model to micro-benchmarks on a device",
        DESCRIPTION,
        "harness calibrate --device host",
    )
    add_device(parser)
    add_backend(parser, "calibrate")
    add_batch(parser)
    add_output(
        parser,
        dest="output",
        default=None,
        help="calibration file to write (default: beside the profile, where fold finds it)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a third of the grid: a first look, not for use"
    )
    parser.add_argument(
        "--check",
        default=None,
        help="ONNX files (comma-separated) to check the stored cost model on, instead of fitting",
    )
    parser.add_argument("--show", action="store_true", help="print the stored cost check and exit")
    add_local(parser, "calibrate")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from harness import envinfo
    from harness.cost.calibrate import (
        calibration_record,
        calibration_timing,
        measure_point,
        micro_benchmarks,
        run_calibration,
    )
    from harness.cost.lut import Entry, measurement_context
    from harness.outputs import FILE, check_output, write_measured
    from harness.profiles import calibration_path, load_profile, with_backend

    profile = with_backend(load_profile(args.device), args.backend)
    refuse_remote(profile, args, "calibrate")
    precision = profile.precisions[0]
    batch = args.batch if args.batch is not None else profile.batch_sizes[0]
    if args.check or args.show:
        return _check(args, profile, precision, batch)
    output = args.output or calibration_path(profile, profile.backend, precision)
    check_output(output, FILE, "-o")  # the default path too, before measuring anything
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = calibration_timing(profile.timing)
    points = micro_benchmarks(batch, quick=args.quick)
    context = measurement_context(profile, precision, batch)
    environment = envinfo.capture_environment(profile)
    progress_path = output.with_name(output.name + ".progress.jsonl")

    def measure(point) -> Entry:
        return measure_point(point, profile, precision, batch, settings)

    columns = (
        TextColumn("calibrating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("", total=None)
        entries, measured, ignored = run_calibration(
            points,
            measure,
            progress_path,
            context,
            on_step=lambda done, total: progress.update(task, completed=done, total=total),
        )
    record = calibration_record(
        profile, profile.backend, precision, batch, points, entries, context, environment, settings
    )
    record["measured_this_run"] = measured
    write_measured(output, json.dumps(record, indent=1) + "\n")
    progress_path.unlink()
    quality, fit = record["quality"], record["fit"]
    if ignored:
        print(
            f"{ignored} saved measurements of another device, backend, settings or version were "
            f"not reused"
        )
    print(
        f"{len(points)} micro-benchmarks ({measured} measured now) on "
        f"{profile.name}/{profile.backend}/"
        f"{precision}, batch {batch}"
    )
    print(
        f"  fit error on the convs' marginal costs: median "
        f"{quality['median_abs_rel_error']:.1%}, p90 {quality['p90_abs_rel_error']:.1%} (fold "
        f"--merge auto's decision margin); element-wise: "
        f"{fit['elementwise_overhead_s'] * 1e6:.1f} us + "
        f"{fit['elementwise_seconds_per_byte'] * 1e12:.1f} ps/byte"
    )
    for name, seconds in sorted(fit["seconds_per_flop"].items()):
        rate = f"{1e-9 / seconds:8.1f} GFLOP/s" if seconds else "   (no FLOP term)"
        print(f"  {name:<12} fixed {fit['fixed_s'][name] * 1e6:7.1f} us, {rate}")
    negative, free = quality.get("negative_points"), quality.get("degenerate_classes")
    if negative:
        print(
            f"warning: {negative} micro-benchmark(s) measured a marginal cost <= 0 (noise above "
            "the layer's own cost); calibrate again on a quieter machine for a better fit",
            file=sys.stderr,
        )
    if free:
        print(
            f"warning: classes fitted to cost nothing, priced by the nearest calibrated one "
            f"instead: {', '.join(free)}",
            file=sys.stderr,
        )
    print(f"wrote {output}")
    from harness.cost.check import check_path, summary_text

    stored = check_path(profile, profile.backend, precision)
    if stored.is_file():
        print(
            f"  the stored {summary_text(json.loads(stored.read_text()))}; it measured the "
            "previous fit: run harness calibrate --check MODELS again"
        )
    return 0


def _check(args, profile, precision: str, batch: int) -> int:
    """``--check``: the stored cost model checked on models and the result stored beside it;
    ``--show``: the stored check printed."""
    import json
    import tempfile

    from harness import envinfo
    from harness.cost.calibrate import cost_model_for
    from harness.cost.check import check_model, check_path, store, summary_text
    from harness.errors import HarnessError
    from harness.onnx_io import load_model

    path = check_path(profile, profile.backend, precision)
    if not args.check:
        if not path.is_file():
            raise HarnessError(f"no cost check stored ({path.name}): run with --check MODELS")
        print(summary_text(json.loads(path.read_text())))
        return 0
    cost, note = cost_model_for(profile, precision, batch=batch)
    print(f"cost model: {note}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in filter(None, args.check.split(",")):
            model = load_model(Path(name))
            results[Path(name).stem] = check_model(
                model, Path(name).stem, profile, cost, batch, Path(tmp)
            )
    data = store(
        path,
        profile,
        profile.backend,
        precision,
        cost,
        results,
        envinfo.capture_environment(profile),
    )
    print(summary_text(data))
    print(f"wrote {path}")
    return 0
