"""``harness export``: one model to a checked, static-shape ONNX file.

The model is a zoo variant, a factory or an ONNX file.
"""

from __future__ import annotations

import sys

from harness.commands import add_batch, add_command, add_input_shapes, add_output


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "export",
        "export a model to ONNX and count its FLOPs and parameters",
        "Export a zoo model variant or a package.module:factory to ONNX (opset 17, static shapes, "
        "checked and shape-inferred), or check an existing ONNX file, and print its FLOPs (2 x "
        "multiply-accumulates of Conv/Gemm/MatMul), parameters and node counts.",
        "harness export resnet56 --variant dc-all -o resnet56-dc-all.onnx",
    )
    parser.add_argument("model", help="zoo name, path.onnx, or package.module:factory")
    add_output(parser, dest="output", required=True, help="ONNX file to write")
    parser.add_argument("--variant", default="baseline", help="zoo variant (default: baseline)")
    add_input_shapes(parser, "required for factories, applied to zoo models", named=False)
    add_batch(parser, default=1, help="static batch size")
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source, with_input_shape
    from harness.graph_stats import count_params, flop_count, op_histogram

    source = resolve_source(args.model, args.input_shape)
    variant = args.variant if args.variant != "baseline" else source.variant  # zoo:variant
    if source.kind == "zoo":
        from harness.zoo import variant_spec

        if variant != source.variant != "baseline":
            raise HarnessError(f"{args.model} names variant {source.variant}, --variant {variant}")
        variant_spec(source.name, variant)
    elif args.variant != "baseline":
        raise HarnessError("--variant applies to zoo models only")
    if source.kind == "onnx" and args.batch != 1:
        raise HarnessError(
            "--batch applies to zoo models and factories; an ONNX file keeps its own batch "
            "(bind a dynamic batch with harness fold --batch)"
        )
    shaped = with_input_shape(source, args.input_shape)
    if source.kind == "zoo" and shaped != source:
        print(
            f"input shape {'x'.join(map(str, shaped.input_shape or ()))} (the zoo's default for "
            f"{source.name} is {'x'.join(map(str, source.input_shape or ()))})"
        )
    source = shaped
    model = materialize(dataclasses.replace(source, variant=variant), args.output, args.batch)
    nodes = ", ".join(f"{op} {n}" for op, n in op_histogram(model).items())
    flops = flop_count(model)
    amount = flops.text(" MFLOPs")
    print(
        f"wrote {args.output}: {amount if amount != 'unknown' else 'FLOPs unknown'}"
        + (f" ({flops.note})" if flops.note else "")
        + f", {count_params(model) / 1e6:.3f} M params; nodes: {nodes}"
    )
    if flops.holes:
        print(f"warning: {flops.warning()}: the FLOPs above are a floor", file=sys.stderr)
    return 0
