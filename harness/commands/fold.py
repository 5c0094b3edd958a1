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
from harness.commands.verify import add_tolerance

DESCRIPTION = """Fold an ONNX model with graph surgery: BatchNorm into convs, identity-like nodes
removed, chains of convs with nothing nonlinear between them merged into one conv (exact chains
only: a padded inner conv is refused, with the reason), residual and parallel branches folded
into one conv, linear Gemm chains merged. --merge auto lets the device's cost model decide which
chains pay off (a roofline of the profile's peaks, or a latency table measured with `harness lut`
via --cost). The result is checked against the original in ONNX Runtime on random inputs (several
seeds, batch 1 and 2; the outputs and every tensor both graphs share) unless --no-verify, with the
tolerances of `harness verify` (--rtol/--atol set them, for all tensors or one output); a graph
ONNX Runtime cannot run is written "not verified: <reason>". Any model ONNX Runtime loads is
accepted: opsets below 11 are converted (onnx.version_converter) and written converted, dynamic
dimensions are bound from --input-shape and --batch (else only the rewrites that need no shapes
run; FLOPs are then a floor, shown '>= x'), and a model with nothing to fold is written
unchanged."""


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
        "--check-cost",
        action="store_true",
        help="with --merge auto: fold every partition of each chain considered, profile them "
        "layer by layer here, and list predicted against measured cost per merge",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the numerical check (not recommended)"
    )
    add_tolerance(parser)
    add_input_shapes(parser)
    add_batch(parser, help="bind a dynamic batch dim to this size", default_text="the model's own")
    add_output(parser, "--report", help="also write the fold report as JSON")
    add_local(parser, "time --arbitrate and --measure")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import time

    from harness.cost.calibrate import cost_model_for
    from harness.errors import HarnessError
    from harness.fold import fold_model, verify_fold
    from harness.fold.skeleton import infer_shapes_quick
    from harness.fold.tolerance import Tolerance
    from harness.onnx_io import (
        bind_shapes,
        copy_unchanged,
        load_model,
        save_model,
        write_text_atomic,
    )
    from harness.profiles import load_profile, with_backend

    profile = with_backend(load_profile(args.device), args.backend)
    if args.measure and not args.cost:
        raise HarnessError("--measure compares against a latency table: give --cost table.csv too")
    if args.arbitrate and args.merge != "auto":
        raise HarnessError("--arbitrate weighs auto's plan against none and all: use --merge auto")
    if args.check_cost and args.merge != "auto":
        raise HarnessError("--check-cost checks auto's cost model: use --merge auto")
    if args.arbitrate or args.measure or args.check_cost:  # these time graphs here
        refuse_remote(profile, args, "fold --arbitrate/--measure/--check-cost")
    tolerance = Tolerance.parse(args.rtol, args.atol)
    cost, cost_note = cost_model_for(profile, profile.precisions[0], args.cost, batch=args.batch)
    shape = input_shapes_arg(args)
    loading = time.perf_counter()
    model = infer_shapes_quick(load_model(args.onnx, infer_shapes=False), in_place=True)
    tolerance.check_outputs(model)
    if args.merge == "auto":
        print(f"cost model: {cost_note}")
    started = time.perf_counter()
    result = fold_model(
        model, merge=args.merge, cost_model=cost, input_shape=shape, batch=args.batch
    )
    arbitration = None
    if args.arbitrate:
        from harness.cost.arbitrate import arbitrate

        results = {"auto": result}
        for merge in ("none", "all"):
            results[merge] = fold_model(
                model, merge=merge, cost_model=cost, input_shape=shape, batch=args.batch
            )
        arbitration = arbitrate({k: r.model for k, r in results.items()}, profile, args.batch)
        result = results[arbitration.chosen]
    if args.check_cost:
        summary_check = _check_cost(args, model, result, cost, profile)
    verify_s = 0.0
    reference, bound = bind_shapes(model, shape, args.batch)
    if not args.no_verify and result.report.changed:
        verify_started = time.perf_counter()
        result.report.verification = verify_fold(
            result.reference or model, result.model, tolerance=tolerance
        ).to_dict()
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
    if args.check_cost:
        summary["cost_check"] = summary_check
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


def _check_cost(args, model, result, cost, profile) -> dict:
    """``--check-cost``: profile every partition of the chains auto considered; the measured cost
    goes on the merge records, and a line per chain and the summary are printed."""
    import tempfile

    from harness.cost.check import annotate, check_model, conv_indices, summary, to_record

    batch = args.batch or profile.batch_sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        spans, chains = check_model(model, args.onnx.stem, profile, cost, batch, Path(tmp))
    annotate(result.report.records, spans, conv_indices(model))
    for chain in chains:
        shown = "; ".join(
            f"{list(map(list, p))}: predicted {pr * 1e3:.1f} us, measured {me * 1e3:.1f} us"
            for p, (pr, me) in chain.partitions.items()
        )
        print(
            f"  cost check, convs {chain.convs}: auto {list(map(list, chain.auto))}, oracle "
            f"{list(map(list, chain.oracle))}; {shown}"
        )
    totals = summary(spans, chains)
    print(
        f"  cost check: {totals['within_10pct']:.0%} of {totals['spans']} spans within +/-10% of "
        f"measured, {totals['within_20pct']:.0%} within +/-20%; auto "
        f"{totals['auto_vs_oracle']:+.1%} against the oracle (profiled per layer, apart from "
        "timing)"
        if totals["spans"] and totals["chains"]
        else "  cost check: no chain to check"
    )
    return dict(to_record(spans, chains), summary=totals)


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
