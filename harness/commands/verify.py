"""``harness verify``: do two ONNX graphs compute the same function?

For graphs folded by hand or by other tools.
"""

from __future__ import annotations

from pathlib import Path

from harness.commands import add_batch, add_command, add_input_shapes, add_output, input_shapes_arg

DESCRIPTION = """Run ORIGINAL and CANDIDATE in ONNX Runtime on the same seeded random inputs (two
seeds, the model's own batch; --batches adds re-batched checks) and compare the outputs and every
intermediate tensor both graphs hold under the same name (the boundaries of each rewrite), each
relative to its own magnitude; each rewritten node is also compared with the part of the original it
replaced, on random inputs of its own. A comparison in which no compared tensor responds to the
input is not called equivalent.

Exit status: 0 equivalent (max relative error within --rtol), 1 different (a candidate ONNX
Runtime cannot run on the original's inputs included), 2 bad input (a missing or invalid file,
inputs or outputs that differ in number, element type or fixed shape, an original ONNX Runtime
cannot run: nothing could be compared)."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "verify",
        "check that two ONNX graphs compute the same (exit 1 if not)",
        DESCRIPTION,
        "harness verify model.onnx model-folded.onnx",
    )
    parser.add_argument("original", type=Path, help="the reference ONNX model")
    parser.add_argument("candidate", type=Path, help="the rewritten ONNX model to check against it")
    parser.add_argument(
        "--rtol",
        type=float,
        default=1e-4,
        help="largest relative error (max |a - b| / max |a| per tensor) accepted (default 1e-4)",
    )
    parser.add_argument("--seeds", type=int, default=2, help="how many random inputs (default 2)")
    parser.add_argument(
        "--batches",
        default="",
        help="also check these batch sizes where the graphs can be re-batched, e.g. 2,8",
    )
    add_input_shapes(parser)
    add_batch(parser, help="bind a dynamic batch dim to this size", default_text="the model's own")
    parser.add_argument(
        "--outputs-only",
        action="store_true",
        help="compare the graph outputs only, not the tensors both graphs share",
    )
    add_output(parser, "--json", help="also write the result as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import math

    from harness.errors import HarnessError
    from harness.fold.report import verification_text
    from harness.fold.verify import DIFFERENT, NOT_VERIFIED, compare_models
    from harness.onnx_io import bind_shapes, load_model, write_text_atomic

    if not 0 < args.rtol < math.inf or args.seeds < 1:
        raise HarnessError("--rtol must be a positive finite number and --seeds at least 1")
    shape = input_shapes_arg(args)
    original, _ = bind_shapes(load_model(args.original), shape, args.batch)
    candidate, _ = bind_shapes(load_model(args.candidate), shape, args.batch)
    _check_interfaces(original, candidate)
    try:
        batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    except ValueError:
        raise HarnessError(
            f"--batches takes comma-separated sizes, e.g. 2,8, not {args.batches!r}"
        ) from None
    if any(b < 1 for b in batches):
        raise HarnessError("--batches sizes must be positive")
    result = compare_models(
        original,
        candidate,
        seeds=tuple(range(args.seeds)),
        rtol=args.rtol,
        batch_sizes=batches or (1,),
        intermediates=not args.outputs_only,
    )
    if args.json:
        write_text_atomic(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
    if result.status == NOT_VERIFIED:
        raise HarnessError(f"cannot verify {args.candidate} against {args.original}: {result.note}")
    if result.status == DIFFERENT:
        where = f" at tensor {result.worst_tensor!r}" if result.worst_tensor else ""
        print(
            f"different: max relative error {result.max_rel_error:.3g}{where} > {args.rtol:g}"
            + (f" ({result.note})" if result.note else "")
        )
        return 1
    print(verification_text(result.to_dict()))
    print(f"equivalent: {args.candidate} computes what {args.original} computes")
    return 0


def _check_interfaces(original, candidate) -> None:
    """Refuse graphs whose inputs or outputs differ in number or element type.

    Exit 2: not comparable.
    """
    from harness.errors import HarnessError
    from harness.fold import graph_inputs

    for what, mine, theirs in (
        ("inputs", graph_inputs(original), graph_inputs(candidate)),
        ("outputs", list(original.graph.output), list(candidate.graph.output)),
    ):
        if len(mine) != len(theirs):
            raise HarnessError(
                f"the graphs have different {what}: {len(mine)} against {len(theirs)}"
            )
        for a, b in zip(mine, theirs):
            if a.type.tensor_type.elem_type != b.type.tensor_type.elem_type:
                raise HarnessError(f"{what} {a.name!r} and {b.name!r} have different element types")
            if what == "inputs":
                _check_input_shapes(a, b)


def _check_input_shapes(a, b) -> None:
    """Refuse two inputs whose ranks or fixed dims differ, or whose dims one fixes and the other
    leaves dynamic: the same random input cannot feed both."""
    from harness.errors import HarnessError
    from harness.fold import input_dims

    mine, theirs = ([d if isinstance(d, int) else "?" for d in input_dims(v)] for v in (a, b))
    if mine == theirs or not mine or not theirs:  # a rank-less input: ONNX Runtime will tell
        return
    shown = f"{'x'.join(map(str, mine))} against {'x'.join(map(str, theirs))}"
    if len(mine) != len(theirs) or any(
        isinstance(x, int) and isinstance(y, int) for x, y in zip(mine, theirs) if x != y
    ):
        raise HarnessError(f"inputs {a.name!r} and {b.name!r} have different shapes: {shown}")
    raise HarnessError(
        f"inputs {a.name!r} and {b.name!r} differ in which dims are dynamic ({shown}): bind "
        "them with --batch and --input-shape"
    )
