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

DESCRIPTION = """Enumerate the spans of a model's activation chains that depth compression could
merge into one conv, build each merged conv (+ ReLU) at its real input shape, and time it on the
device profile's backend with the measurement protocol. Writes TABLE (id,st,end,time,stdev),
TABLE_long.csv (id,st,end,ker,str,is_dw,time,stdev) and TABLE.json (device state, settings,
counts). Times are medians in ms per batch; st/end index convolutions in graph order. Spans with
identical shapes are timed once. Interrupted runs resume where they stopped: measurements are
kept in TABLE.progress.jsonl until the table is complete."""


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
        "--max-span", type=int, default=4, help="longest span in convs (default: 4)"
    )
    add_batch(parser)
    add_input_shapes(
        parser,
        "factories: required; zoo models: instead of theirs; ONNX files: binds their dynamic dims",
    )
    add_local(parser, "measure the table")
    parser.set_defaults(func=run)


def _companions(path: Path) -> List[Tuple[Path, str]]:
    from harness.lut import table_companions

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
    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source, with_input_shape
    from harness.lut import (
        Entry,
        activation_chains,
        enumerate_spans,
        measure_spans,
        measurement_context,
        span_model,
        table_rows,
        table_sidecar,
        write_tables,
    )
    from harness.measure import measure_graphs
    from harness.onnx_io import (
        bind_shapes,
        input_shapes,
        save_model,
        write_text_atomic,
    )
    from harness.profiles import load_profile, with_backend

    if args.max_span < 1:
        raise HarnessError("--max-span must be at least 1")
    profile = with_backend(load_profile(args.device), args.backend)
    refuse_remote(profile, args, "lut")
    batch = args.batch or profile.batch_sizes[0]
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
        spans = enumerate_spans(activation_chains(model), args.max_span)
        if not spans:
            raise HarnessError(f"{args.model} has no convolutions to tabulate")

        def measure(span) -> Entry:
            path = save_model(span_model(span), Path(tmp) / f"{span.key}.onnx")
            stats = measure_graphs({span.key: path}, profile, batch=batch).runs[span.key].stats
            return Entry(stats.median, stats.std, stats.n)

        progress_path = args.output.with_name(args.output.name + ".progress.jsonl")
        context = measurement_context(profile, profile.precisions[0], batch)
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
    short_path, long_path = write_tables(table_rows(spans, entries), args.output)
    unique = len({s.key for s in spans})
    meta = {
        "model": args.model,
        "batch": batch,
        "input_shapes": shapes,
        "max_span": args.max_span,
        "spans": len(spans),
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
        f"{len(spans)} spans, {unique} distinct shapes timed "
        f"({len(spans) - unique} measurements saved), {measured_now} measured in this run"
    )
    print(f"wrote {short_path}\nwrote {long_path}\nwrote {sidecar}")
    return 0
