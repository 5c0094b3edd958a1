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
input is not called equivalent. Models below opset 11 are converted first, as fold converts them.

A tensor may differ by atol + rtol x max |a| (a: the original's tensor): rtol 1e-4 for float32
graphs, 16 ulps of float16's epsilon for graphs computing in float16; a sigmoid's, tanh's or
softmax's tensor also by 8 ulps of its range (they are computed to that, not relative to their
magnitude); a tensor that differs by up to 4x what ONNX Runtime's own optimisations of the
original change it by is rounding (unless a rewritten node's own check differs). --rtol/--atol
set them, for all tensors or one output.

Exit status: 0 equivalent (every tensor within its tolerance), 1 different (outputs of another
shape, and a candidate ONNX Runtime cannot run on the original's inputs, included), 2 bad input (a
missing or invalid file, inputs or outputs that differ in number or element type, inputs of
another fixed shape, an original ONNX Runtime cannot run: nothing could be compared)."""


def add_tolerance(parser) -> None:
    """``--rtol`` and ``--atol`` (``harness.fold.tolerance.Tolerance.parse``): repeatable, a number
    for every tensor or OUTPUT=number for one output."""
    parser.add_argument(
        "--rtol",
        action="append",
        default=[],
        metavar="[OUTPUT=]R",
        help="relative error accepted, max |a - b| / max |a| per tensor (default 1e-4 for float32 "
        "graphs, 16 ulps for float16 ones); OUTPUT=R sets it for one output; repeatable",
    )
    parser.add_argument(
        "--atol",
        action="append",
        default=[],
        metavar="[OUTPUT=]A",
        help="absolute error accepted besides it (default 0); OUTPUT=A for one output; repeatable",
    )


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "verify",
        "check that two ONNX graphs compute the same (exit 1 if not)",
        DESCRIPTION,
        "harness verify resnet56-dc-all.onnx folded.onnx",
    )
    parser.add_argument("original", type=Path, help="the reference ONNX model")
    parser.add_argument("candidate", type=Path, help="the rewritten ONNX model to check against it")
    add_tolerance(parser)
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

    from harness.errors import HarnessError
    from harness.fold.report import verification_text
    from harness.fold.tolerance import Tolerance
    from harness.fold.verify import DIFFERENT, NOT_VERIFIED, compare_models, difference_text
    from harness.onnx_io import bind_shapes, write_text_atomic

    tolerance = Tolerance.parse(args.rtol, args.atol)
    if args.seeds < 1:
        raise HarnessError("--seeds must be at least 1")
    shape = input_shapes_arg(args)
    original, _ = bind_shapes(_load(args.original), shape, args.batch)
    candidate, _ = bind_shapes(_load(args.candidate), shape, args.batch)
    _check_interfaces(original, candidate)
    tolerance.check_outputs(original)
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
        tolerance=tolerance,
        batch_sizes=batches or (1,),
        intermediates=not args.outputs_only,
    )
    if args.json:
        write_text_atomic(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
    if result.status == NOT_VERIFIED:
        raise HarnessError(f"cannot verify {args.candidate} against {args.original}: {result.note}")
    if result.status == DIFFERENT:
        print(f"different: {difference_text(result)}")
        return 1
    print(verification_text(result.to_dict()))
    print(f"equivalent: {args.candidate} computes what {args.original} computes")
    return 0


def _load(path: Path):
    """The model as fold reads it: shapes inferred, an opset below 11 converted (and said)."""
    from harness.errors import HarnessError
    from harness.onnx_io import infer_shapes_lenient, load_model, upgraded_opset

    model, done = upgraded_opset(load_model(path))
    if model is None:
        raise HarnessError(f"cannot verify {path}: {done}")
    if done:
        print(f"{path}: {done}, as fold converts it")
        model = infer_shapes_lenient(model)
    return model


def _check_interfaces(original, candidate) -> None:
    """Refuse graphs whose inputs or outputs differ in number or element type.

    Exit 2: not comparable.
    """
    from harness.errors import HarnessError
    from harness.onnx_io import graph_inputs

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
