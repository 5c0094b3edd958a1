"""``harness lut``: a latency lookup table of every mergeable span of a model, measured on a
device."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from harness.commands import (
    add_batch,
    add_command,
    add_device,
    add_local,
    add_output,
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
    parser.add_argument(
        "--backend", default=None, help="backend to measure on (default: the profile's)"
    )
    parser.add_argument(
        "--max-span", type=int, default=4, help="longest span in convs (default: 4)"
    )
    add_batch(parser)
    parser.add_argument(
        "--input-shape",
        default=None,
        help="input shape without batch (factories: required; zoo models: instead of theirs)",
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

    from harness import envinfo, timing
    from harness.backends import get_runner_class
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
    from harness.onnx_io import input_shapes, save_model, write_text_atomic
    from harness.profiles import load_profile, with_backend

    if args.max_span < 1:
        raise HarnessError("--max-span must be at least 1")
    profile = with_backend(load_profile(args.device), args.backend)
    refuse_remote(profile, args, "lut")
    batch = args.batch or profile.batch_sizes[0]
    runner_class = get_runner_class(profile.backend)
    source = with_input_shape(resolve_source(args.model, args.input_shape), args.input_shape)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = materialize(source, Path(tmp) / "model.onnx", batch)
        shapes = input_shapes(Path(tmp) / "model.onnx")
        spans = enumerate_spans(activation_chains(model), args.max_span)
        if not spans:
            raise HarnessError(f"{args.model} has no convolutions to tabulate")

        def measure(span) -> Entry:
            path = save_model(span_model(span), Path(tmp) / f"{span.key}.onnx")
            with runner_class(path, profile, profile.precisions[0], batch) as runner:
                m = timing.measure_interleaved({span.key: runner}, profile.timing)[span.key]
            stats = m.stats()
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
