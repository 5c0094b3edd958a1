"""``harness lut``: a latency lookup table of every mergeable span of a model, measured on a
device."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

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

DESCRIPTION = """Enumerate the spans of a model that depth compression could merge into one conv,
build each merged conv (+ ReLU) at its real input shape, and time it on the device profile's
backend with the measurement protocol. --layout harness (default): the spans of its activation
chains, st/end conv indices in graph order; writes TABLE (id,st,end,time,stdev) and
TABLE_long.csv (id,st,end,ker,str,is_dw,time,stdev); medians at the profile's batch.
--layout layermerge: LayerMerge's spans and numbering (st/end activation positions), one row per
layer-pruning option; writes TABLE (id,st,end,ker,str,is_dw,time,stdev, is_dw True/False), what
their generate_tables.py --mode solve reads as --time_path. --layout efficientdc: EfficientDC's
spans, one row per span; writes TABLE (id,st,end,time,stdev) and opt_TABLE (their T_opt table
with breaks, for solve_dp.py --time-path). Those two default to their tables' settings: batch 128
and the mean. Every layout writes TABLE.json (layout, batch, statistic, device state, settings).
Times in ms per batch. Spans with identical shapes are timed once. Interrupted runs resume where
they stopped: measurements are kept in TABLE.progress.jsonl until the table is complete."""

LAYOUTS = ("harness", "layermerge", "efficientdc")
PAPER_BATCH = 128  # LayerMerge's and EfficientDC's tables: ms per batch of 128, mean of the runs


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "lut",
        "measure a latency lookup table of mergeable conv spans",
        DESCRIPTION,
        "harness lut mobilenetv2 --device host --max-span 3 -o tables/mbv2-host.csv",
    )
    parser.add_argument(
        "model", help="zoo name, path.onnx, or package.module:factory (with --input-shape)"
    )
    add_output(
        parser, dest="output", required=True, help="CSV table to write", companions=_companions
    )
    add_device(parser)
    add_backend(parser, "measure on")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="harness",
        help="table layout and span set (default: harness; see above)",
    )
    parser.add_argument(
        "--max-span",
        type=int,
        default=None,
        help="longest span in convs, harness layout only (default: 4)",
    )
    add_batch(
        parser,
        default_text=f"{PAPER_BATCH} for the layermerge and efficientdc layouts, else the "
        "profile's first",
    )
    parser.add_argument(
        "--statistic",
        choices=("median", "mean"),
        default=None,
        help="what a span's time is (default: mean for the layermerge and efficientdc layouts, "
        "as their tables; else median)",
    )
    add_input_shapes(
        parser,
        "factories: required; zoo models: instead of theirs; ONNX files: binds their dynamic dims",
    )
    add_local(parser, "measure the table")
    parser.set_defaults(func=run)


def _companions(path: Path) -> List[Tuple[Path, str]]:
    from harness.cost.lut import table_companions

    return table_companions(path)


def run(args) -> int:
    import dataclasses
    import json
    import tempfile
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from harness import envinfo
    from harness.cost.lut import (
        Entry,
        activation_chains,
        at_batch,
        depth_network,
        enumerate_spans,
        layout_spans,
        measure_spans,
        measurement_context,
        span_model,
        table_rows,
        table_sidecar,
        write_layout,
    )
    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source, with_input_shape
    from harness.measure import measure_graphs
    from harness.onnx_io import (
        bind_shapes,
        input_shapes,
        save_model,
        write_text_atomic,
    )
    from harness.profiles import load_profile, with_backend

    paper = args.layout != "harness"
    if paper and args.max_span is not None:
        raise HarnessError(
            f"--max-span applies to the harness layout; the {args.layout} layout's spans are the "
            "paper's own set"
        )
    max_span = 4 if args.max_span is None else args.max_span
    if max_span < 1:
        raise HarnessError("--max-span must be at least 1")
    profile = with_backend(load_profile(args.device), args.backend)
    refuse_remote(profile, args, "lut")
    batch = args.batch or (PAPER_BATCH if paper else profile.batch_sizes[0])
    statistic = args.statistic or ("mean" if paper else "median")
    source = resolve_source(args.model, args.input_shape)
    shapes = input_shapes_arg(args)
    if source.kind != "onnx":
        source = with_input_shape(source, args.input_shape)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = materialize(source, Path(tmp) / "model.onnx", batch)
        if source.kind == "onnx" and shapes:  # an ONNX file's dynamic dims bound
            model = bind_shapes(model, shapes, batch)[0]
            save_model(model, Path(tmp) / "model.onnx")
        shapes = input_shapes(Path(tmp) / "model.onnx")
        if paper:
            spans = layout_spans(depth_network(model), args.layout)
        else:
            spans = enumerate_spans(activation_chains(model), max_span)
        if not spans:
            raise HarnessError(f"{args.model} has no convolutions to tabulate")
        spans = at_batch(spans, batch)
        count = len({(s.st, s.end) for s in spans})
        print(
            f"{args.layout} layout: {count} spans in {len(spans)} rows; each time is the "
            f"{statistic} of the protocol's runs, in ms per batch of {batch}"
        )

        def measure(span) -> Entry:
            path = save_model(span_model(span), Path(tmp) / f"{span.key}.onnx")
            stats = measure_graphs({span.key: path}, profile, batch=batch).runs[span.key].stats
            return Entry(getattr(stats, statistic), stats.std, stats.n)

        progress_path = args.output.with_name(args.output.name + ".progress.jsonl")
        context = measurement_context(profile, profile.precisions[0], batch)
        context["statistic"] = statistic
        args.output.parent.mkdir(parents=True, exist_ok=True)
        columns = (
            TextColumn("timing spans"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns) as progress:
            task = progress.add_task("", total=None)
            entries, measured_now = measure_spans(
                spans,
                measure,
                progress_path,
                on_step=lambda done, total: progress.update(task, completed=done, total=total),
                context=context,
            )
    written = write_layout(table_rows(spans, entries, args.layout), args.output, args.layout)
    unique = len({s.key for s in spans})
    meta = {
        "model": args.model,
        "layout": args.layout,
        "batch": batch,
        "statistic": statistic,
        "time_unit": "ms per batch",
        "input_shapes": shapes,
        "max_span": None if paper else max_span,
        "spans": count,
        "rows": len(spans),
        "unique_signatures": unique,
        "measured_this_run": measured_now,
        "measurements_saved_by_signature_cache": len(spans) - unique,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "profile": profile.to_dict(),
        "context": context,
        "timing": dataclasses.asdict(profile.timing),
        "environment": envinfo.capture_environment(profile),
    }
    sidecar = table_sidecar(args.output)
    write_text_atomic(sidecar, json.dumps(meta, indent=1) + "\n")
    progress_path.unlink()
    print(
        f"{len(spans)} rows, {unique} distinct shapes timed "
        f"({len(spans) - unique} measurements saved), {measured_now} measured in this run"
    )
    for path in written + [sidecar]:
        print(f"wrote {path}")
    return 0
