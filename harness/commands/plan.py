"""``harness plan``: choose the activations to remove under a latency budget from measured
tables."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import add_command, add_device, add_input_shapes, add_output

DESCRIPTION = """Solve the depth-compression choice with a dynamic program: cut each activation
chain of the model into segments, each merged into one conv, maximising the total importance
while the table latency of the chains stays within --budget-ms. TABLE comes from `harness lut` on
the same model and device. IMPORTANCE is a CSV st,end,importance that YOU supply from your own
training or accuracy measurements (e.g. the accuracy kept when convs st..end are merged): this
harness does not train and does not invent importance numbers. Single-conv segments missing from
it count as importance 0; multi-conv segments missing from it are never chosen. Writes a JSON
plan: the segments, the ONNX activation nodes to remove, predicted latency and importance."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "plan",
        "choose which activations to remove under a latency budget",
        DESCRIPTION,
        "harness plan resnet34 --table lut.csv --importance imp.csv --budget-ms 40 -o plan.json",
    )
    parser.add_argument(
        "model", help="zoo name, path.onnx, or package.module:factory (with --input-shape)"
    )
    parser.add_argument(
        "--table", type=Path, required=True, help="latency table from `harness lut`"
    )
    parser.add_argument(
        "--importance", type=Path, required=True, help="CSV st,end,importance from your training"
    )
    parser.add_argument(
        "--budget-ms",
        type=float,
        required=True,
        help="latency budget for the activation chains (ms)",
    )
    add_device(
        parser,
        default=TABLE_DEVICE,
        purpose="the one the table was measured on, recorded in the plan; checked against the "
        "table's JSON sidecar",
    )
    add_input_shapes(parser, "for factories", named=False)
    add_output(parser, dest="output", default=None, help="JSON plan to write")
    parser.set_defaults(func=run)


TABLE_DEVICE = "the table's"


def _device(args) -> str:
    """The device the plan is for: the table's (from its JSON sidecar), which ``--device`` must
    match when given."""
    import json

    from harness.cost.lut import table_sidecar
    from harness.errors import HarnessError
    from harness.profiles import load_profile

    sidecar = table_sidecar(args.table)
    measured_on = None
    if sidecar.is_file():
        try:
            measured_on = json.loads(sidecar.read_text())["profile"]["name"]
        except (ValueError, KeyError, TypeError):
            raise HarnessError(f"{sidecar} is not the JSON sidecar of a latency table") from None
    if args.device == TABLE_DEVICE:
        return measured_on or "unknown (the table has no JSON sidecar)"
    name = load_profile(args.device).name
    if measured_on and name != measured_on:
        raise HarnessError(
            f"--device {args.device}: the table {args.table} was measured on {measured_on!r} "
            f"(its {sidecar.name} says so)"
        )
    return name


def run(args) -> int:
    import json
    import tempfile

    from harness.cost.lut import activation_chains, read_table
    from harness.cost.plan import plan_chains, read_importance
    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source, with_input_shape
    from harness.onnx_io import write_text_atomic

    latency = read_table(args.table)
    importance = read_importance(args.importance)
    device = _device(args)
    unknown = sorted(span for span in importance if span not in latency)
    if unknown:
        print(
            f"warning: {args.importance}: {len(unknown)} span(s) the latency table lacks, "
            f"ignored (first {unknown[0]})",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory() as tmp:
        chains = activation_chains(
            materialize(
                with_input_shape(resolve_source(args.model, args.input_shape), args.input_shape),
                Path(tmp) / "m.onnx",
            )
        )
    plan = plan_chains(
        [[c.index for c in chain.convs] for chain in chains], latency, importance, args.budget_ms
    )
    if plan is None:
        floor = sum(
            min(ms for (st, end), ms in latency.items() if st == c.convs[0].index) for c in chains
        )
        raise HarnessError(
            f"no plan fits in {args.budget_ms} ms (rough floor of this table: {floor:.4g} ms)"
        )
    activation_of = {}
    for chain in chains:
        for conv, activation in zip(chain.convs[:-1], chain.activations):
            activation_of[conv.index] = activation
    remove = [
        activation_of[i] for st, end in plan.merged for i in range(st, end) if activation_of.get(i)
    ]
    result = {
        "model": args.model,
        "device": device,
        "budget_ms": args.budget_ms,
        "predicted_latency_ms": plan.latency_ms,
        "importance": plan.importance,
        "segments": plan.segments,
        "merged_segments": plan.merged,
        "remove_activations": remove,
        "note": "importance numbers come from the user's table, not from harness",
    }
    text = json.dumps(result, indent=1)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    print(
        f"plan: {len(plan.merged)} merged segments, predicted {plan.latency_ms:.3f} ms "
        f"(budget {args.budget_ms} ms), importance {plan.importance:.4g}"
    )
    for st, end in plan.merged:
        print(f"  merge convs {st}..{end}")
    if args.output:
        print(f"wrote {args.output}")
    return 0
