"""``harness fold``: merge the layers left linear into single convolutions, verified, with a
report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from harness.commands import (
    add_backend,
    add_batch,
    add_command,
    add_device,
    add_input_shapes,
    add_local,
    add_output,
    input_shapes_arg,
    refuse_remote,
)

DESCRIPTION = """Fold an ONNX model with graph surgery: BatchNorm into convs, identity-like nodes
removed, chains of convs with nothing nonlinear between them merged into one conv (exact chains
only: a padded inner conv is refused, with the reason), residual and parallel branches folded
into one conv, linear Gemm chains merged. --merge auto lets the device's cost model decide which
chains pay off (a roofline of the profile's peaks, or a latency table measured with `harness lut`
via --cost). The result is checked against the original in ONNX Runtime on random inputs (several
seeds, batch 1 and 2; the outputs and every tensor both graphs share) unless --no-verify; a graph
ONNX Runtime cannot run is written "not verified: <reason>". Any model ONNX Runtime loads is
accepted: opsets below 11 are converted (onnx.version_converter), dynamic dimensions are bound
from --input-shape and --batch (else only the rewrites that need no shapes run), and a model with
nothing to fold is written unchanged."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "fold",
        "merge linear layers into single convs (exact, verified)",
        DESCRIPTION,
        "harness fold resnet56-dc-all.onnx -o folded.onnx --device host --merge auto",
    )
    parser.add_argument("onnx", type=Path, help="ONNX model to fold")
    add_output(parser, dest="output", required=True, help="folded ONNX file to write")
    add_device(parser, purpose="its cost model decides")
    add_backend(parser, "decide by the calibration of (and time --arbitrate/--measure on)")
    parser.add_argument(
        "--merge",
        choices=("auto", "all", "none"),
        default="auto",
        help="merge chains the cost model favours (auto), every exact chain (all), or none",
    )
    parser.add_argument(
        "--cost",
        type=Path,
        default=None,
        help="latency table from `harness lut` to use as the cost model instead of the roofline",
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="also time the folded graph and compare it with the table's prediction (with --cost)",
    )
    parser.add_argument(
        "--arbitrate",
        action="store_true",
        help="with --merge auto: also fold none and all, time the three graphs here on the "
        "profile's backend and keep the plan only if it is not slower than the better of them",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the numerical check (not recommended)"
    )
    add_input_shapes(parser)
    add_batch(parser, help="bind a dynamic batch dim to this size", default_text="the model's own")
    add_output(parser, "--report", help="also write the fold report as JSON")
    add_local(parser, "time --arbitrate and --measure")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import time

    from harness.calibrate import cost_model_for
    from harness.errors import HarnessError
    from harness.fold import fold_model, verify_fold
    from harness.fold.skeleton import infer_shapes_quick
    from harness.onnx_io import (
        bind_shapes,
        copy_unchanged,
        load_model,
        save_model,
        write_text_atomic,
    )
    from harness.profiles import load_profile, with_backend

    if args.output.resolve() == args.onnx.resolve():
        raise HarnessError("the output would overwrite the input: choose another -o")
    profile = with_backend(load_profile(args.device), args.backend)
    if args.measure and not args.cost:
        raise HarnessError("--measure compares against a latency table: give --cost table.csv too")
    if args.arbitrate and args.merge != "auto":
        raise HarnessError("--arbitrate weighs auto's plan against none and all: use --merge auto")
    if args.arbitrate or args.measure:  # both time graphs here
        refuse_remote(profile, args, "fold --arbitrate/--measure")
    cost, cost_note = cost_model_for(profile, profile.precisions[0], args.cost, batch=args.batch)
    shape = input_shapes_arg(args)
    loading = time.perf_counter()
    model = infer_shapes_quick(load_model(args.onnx, infer_shapes=False), in_place=True)
    if args.merge == "auto":
        print(f"cost model: {cost_note}")
    started = time.perf_counter()
    result = fold_model(
        model, merge=args.merge, cost_model=cost, input_shape=shape, batch=args.batch
    )
    arbitration = None
    if args.arbitrate:
        from harness.arbitrate import arbitrate

        results = {"auto": result}
        for merge in ("none", "all"):
            results[merge] = fold_model(
                model, merge=merge, cost_model=cost, input_shape=shape, batch=args.batch
            )
        arbitration = arbitrate({k: r.model for k, r in results.items()}, profile, args.batch)
        result = results[arbitration.chosen]
    verify_s = 0.0
    reference, bound = bind_shapes(model, shape, args.batch)
    if not args.no_verify and result.report.changed:
        verify_started = time.perf_counter()
        result.report.verification = verify_fold(reference, result.model).to_dict()
        verify_s = time.perf_counter() - verify_started
    if result.report.changed:
        save_model(result.model, args.output)
    elif bound:  # nothing to fold, but the shapes asked for are bound in what is written
        save_model(reference, args.output)
    else:  # nothing to fold: the file as it was (no inferred shapes added)
        copy_unchanged(args.onnx, args.output)
    print(result.report.to_text())
    if arbitration is not None:
        print(arbitration.to_text())
    age = _process_age()
    print(
        f"  time: load {started - loading:.2f} s + fold {result.report.elapsed_s:.2f} s + "
        f"verification {verify_s:.2f} s + write = {time.perf_counter() - loading:.2f} s"
        + (f"; {age:.2f} s in all, Python start-up and imports included" if age else "")
    )
    summary = result.report.to_dict()
    if arbitration is not None:
        summary["arbitration"] = arbitration.to_dict()
    if args.cost:
        _table_prediction(args, result, cost, profile, summary)
    if args.report:
        write_text_atomic(args.report, json.dumps(summary, indent=1) + "\n")
    print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
    return 0


def _table_prediction(args, result, cost, profile, summary: dict) -> None:
    """Print (and add to ``summary``) what the ``--cost`` table predicts for the folded convs and,
    with ``--measure``, the measured network beside it."""
    if not result.spans:
        print("  table prediction: none (the folded graph holds no convs the table could price)")
        if args.measure:
            print("  --measure: no prediction to compare the network with")
        return
    predicted = sum(cost.table.get(span, 0.0) for span in result.spans.values())
    missing = sum(1 for span in result.spans.values() if span not in cost.table)
    summary["table_prediction_ms"] = {
        "convs_sum": predicted,
        "convs_not_in_table": missing,
        "spans_measured_for_another_kernel": cost.mismatches,
    }
    print(
        f"  table prediction for the folded convs: {predicted:.3f} ms"
        + (f" ({missing} convs not in the table)" if missing else "")
    )
    if cost.mismatches:
        print(
            f"  warning: {cost.mismatches} table spans were measured with another kernel or "
            f"stride (a table of another variant?): the roofline priced those; measure the "
            f"table on this architecture"
        )
    if args.measure:
        measured = _measure(args.output, profile)
        error = (predicted - measured) / measured
        summary["table_prediction_ms"].update(measured_network=measured, error=error)
        print(
            f"  measured whole folded network: {measured:.3f} ms (median); prediction error "
            f"{error:+.1%} (the table covers convs only)"
        )


def _process_age() -> Optional[float]:
    """Seconds since this process started (Linux: /proc), else None."""
    import os
    import time

    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, clock ticks after boot (field 22 of proc(5))
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _measure(path: Path, profile) -> float:
    """Median latency (ms) of one ONNX file on the profile's backend, with the measurement
    protocol."""
    from harness.measure import measure_graphs

    return measure_graphs({"folded": path}, profile).runs["folded"].stats.median
