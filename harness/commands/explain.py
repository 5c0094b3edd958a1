"""``harness explain``: why a model is (not) faster on a device: measured layers, merges, lint."""

from __future__ import annotations

from pathlib import Path

from harness.commands import (
    add_batch,
    add_command,
    add_device,
    add_input_shapes,
    add_local,
    add_output,
    add_precision,
    input_shapes_arg,
    positive_int,
    refuse_remote,
)

DESCRIPTION = """Profile a model layer by layer with the backend's own profiler (ONNX Runtime's
session profiling, the torch profiler, TensorRT's IProfiler and engine inspector on the tensorrt
backend, trtexec's profiling run on the trtexec backend; or read trtexec's --exportProfile and
--exportLayerInfo files), in profiled runs apart from the timed runs that give the end-to-end
latency (a profiler perturbs timing), interleaved with them so that both see the same machine. Each
measured layer is tied to the ONNX nodes it covers and, through the fold records, to the original
graph's nodes; each merge shows its original nodes' measured time against the merged conv's. The
lint lists, per layer, the rule, its source and the measured time it explains: channel counts
tensor cores pad (FP16/INT8 on GPUs), layers TensorRT ran off the DLA or in another precision than
asked, grouped convs the device runs no faster dense, kernels merging grew, launch-bound layers,
opsets and operators the profile's TensorRT parser does not read."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "explain",
        "measured per-layer profile, merges and a deployability lint",
        DESCRIPTION,
        "harness explain resnet56 --variant dc-1x1 --device host --merge auto",
    )
    parser.add_argument("model", help="zoo name, path.onnx, or package.module:factory")
    parser.add_argument("--variant", default="baseline", help="zoo variant (default: baseline)")
    add_input_shapes(parser, "required for factories, binds an ONNX file's dynamic dims")
    add_device(parser)
    add_precision(parser)
    add_batch(parser)
    parser.add_argument(
        "--merge",
        choices=("auto", "all", "none"),
        default="auto",
        help="fold first with this merge mode (default auto: the device's cost model decides; "
        "not with --trt-profile: those files describe the engine as it was built)",
    )
    parser.add_argument(
        "--trt-profile", type=Path, default=None, help="trtexec --exportProfile JSON to read"
    )
    parser.add_argument(
        "--trt-layers", type=Path, default=None, help="trtexec --exportLayerInfo JSON to read"
    )
    parser.add_argument("--top", type=positive_int, default=15, help="layers to list (default 15)")
    add_output(parser, "--json", help="also write the explanation as JSON")
    add_output(parser, "--markdown", help="also write top layers, merges and findings as Markdown")
    add_output(parser, "--csv", help="also write every layer and finding as CSV")
    add_local(parser, "profile")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import tempfile

    from harness.errors import HarnessError
    from harness.onnx_io import write_text_atomic
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    precision = args.precision or profile.precisions[0]
    if bool(args.trt_profile) != bool(args.trt_layers):
        raise HarnessError("--trt-profile and --trt-layers go together (both trtexec exports)")
    exports = [args.trt_profile, args.trt_layers] if args.trt_profile else []
    missing = [str(p) for p in exports if not p.is_file()]
    if missing:
        raise HarnessError(f"no such file: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = _materialize(args, Path(tmp))
            if exports:
                explanation = _from_trtexec(args, path, profile, precision)
            else:
                explanation = _measured(args, path, profile, precision, Path(tmp))
        except HarnessError as exc:  # named by what the user gave, not by the working copies
            raise type(exc)(
                str(exc)
                .replace(str(Path(tmp) / "model.onnx"), str(args.model))
                .replace(str(Path(tmp) / "folded.onnx"), f"{args.model} folded")
            ) from None
    _print(explanation, args.top)
    from harness.explain import to_csv, to_markdown

    written = {
        args.json: lambda: json.dumps(explanation.to_dict(), indent=1) + "\n",
        args.markdown: lambda: to_markdown(explanation, args.top),
        args.csv: lambda: to_csv(explanation),
    }
    for path, text in written.items():
        if path:
            write_text_atomic(path, text())
            print(f"wrote {path}")
    return 0


def _materialize(args, folder: Path) -> Path:
    import dataclasses

    from harness.export import materialize, resolve_source, with_input_shape
    from harness.onnx_io import bind_shapes, save_model

    source = resolve_source(args.model, args.input_shape)
    shapes = input_shapes_arg(args)
    if source.kind != "onnx":
        source = with_input_shape(source, args.input_shape)
    path = folder / "model.onnx"  # an ONNX file is checked and copied
    model = materialize(dataclasses.replace(source, variant=args.variant), path, args.batch or 1)
    if source.kind == "onnx" and shapes:  # an ONNX file's dynamic dims bound
        save_model(bind_shapes(model, shapes, args.batch)[0], path)
    return path


def _from_trtexec(args, path: Path, profile, precision: str):
    from harness.errors import HarnessError
    from harness.explain import Explanation, lint
    from harness.layer_profile import load_json, trt_layer_profile
    from harness.onnx_io import load_model

    model = load_model(path)
    layers = trt_layer_profile(
        load_json(args.trt_profile),
        load_json(args.trt_layers),
        model,
        profile.expect.tensorrt or "(version not in the profile)",
    )
    layers.note = "trtexec's profiling run (its exported files): apart from any timed run here"
    if layers.layers and not any(layer.nodes for layer in layers.layers):
        raise HarnessError(
            f"none of the {len(layers.layers)} layers in {args.trt_profile} is tied to a node of "
            f"{args.model}: are these the exports of this model's engine?"
        )
    return Explanation(layers, lint(model, layers, profile, precision))


def _measured(args, path: Path, profile, precision: str, folder: Path):
    from harness.backends.base import resolve_batch
    from harness.cost.calibrate import cost_model_for
    from harness.explain import explain_model

    refuse_remote(profile, args, "explain")
    batch = resolve_batch(path, args.batch or profile.batch_sizes[0])
    cost, note = cost_model_for(profile, precision, batch=batch)
    if args.merge == "auto":
        print(f"cost model: {note}")
    return explain_model(path, profile, precision, batch, folder, args.merge, cost)


def _print(explanation, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from harness.explain import sum_lines

    console = Console()
    layers = explanation.layers
    console.print(f"{layers.source}, {layers.runs} runs: {layers.note}", soft_wrap=True)
    table = Table(title=f"top {top} of {len(layers.layers)} measured layers")
    for column in ("layer", "kind", "ms", "share", "original nodes"):
        table.add_column(column, justify="right" if column in ("ms", "share") else "left")
    total = layers.total_ms or 1.0
    for layer in sorted(layers.layers, key=lambda x: -x.time_ms)[:top]:
        nodes = ", ".join(explanation.original_nodes_of(layer.nodes)) or "-"
        where = f" ({layer.device}, {layer.precision})" if layer.precision else ""
        table.add_row(
            layer.name,
            layer.kind + where,
            f"{layer.time_ms:.4f}",
            f"{layer.time_ms / total:.1%}",
            nodes,
        )
    console.print(table)
    for line in sum_lines(explanation):
        console.print(line, soft_wrap=True)
    if explanation.merges:
        merges = Table(title="merges and residual folds: original nodes (before fold) vs the conv")
        for column in ("merged conv", "original nodes", "before ms", "after ms", "predicted ms"):
            merges.add_column(column)
        for m in explanation.merges:
            predicted = (
                f"{m.predicted_before_us / 1e3:.4f} -> {m.predicted_after_us / 1e3:.4f}"
                if m.predicted_before_us is not None and m.predicted_after_us is not None
                else "-"
            )
            merges.add_row(
                m.result,
                ", ".join(m.nodes),
                f"{m.measured_before_ms:.4f}",
                f"{m.measured_after_ms:.4f}",
                predicted,
            )
        console.print(merges)
    if not explanation.findings:
        console.print("no findings: no lint rule matched these layers")
        return
    findings = Table(title=f"{len(explanation.findings)} findings")
    for column in ("layer", "rule", "measured ms", "detail", "source"):
        findings.add_column(column)
    for f in explanation.findings:
        shown = f"{f.measured_ms:.4f}" if f.measured_ms is not None else "-"
        findings.add_row(f.layer, f.rule, shown, f.detail, f.source)
    console.print(findings)
