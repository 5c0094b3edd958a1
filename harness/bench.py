"""``harness bench``: export, fold, time and report a suite of models on one device profile.

Every source and the profile are resolved before any work starts, so bad input fails at once and
writes nothing. The results file is rewritten atomically after each model, marked ``complete`` only
at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness import energy, envinfo, memory, timing
from harness.backends import get_runner_class
from harness.backends.base import open_runners, resolve_batch
from harness.calibrate import cost_model_for
from harness.errors import HarnessError
from harness.export import ModelSource, materialize
from harness.fold import fold_model, verify_fold
from harness.graph_stats import count_params, flop_count, op_histogram
from harness.onnx_io import save_model
from harness.precision import check_graph_precision
from harness.profiles import Profile
from harness.report.pipeline import write_bench_tables
from harness.results import ESTIMATOR, RunEnergy, as_results, new_results, write_results

DEFAULT_MODELS = ("lenet5", "resnet20", "resnet56", "vgg16", "mobilenetv2", "resnet34", "resnet50")
# share of a model's progress bar given to each stage
STAGES = (("export", 15), ("fold", 15), ("time", 70))


@dataclasses.dataclass
class BenchOptions:
    """What to run and how."""

    sources: List[
        Tuple[ModelSource, List[str]]
    ]  # each source with the variants to run (zoo) or ["baseline"]
    profile: Profile
    out_dir: Path
    merge: str = "auto"
    verify: bool = True
    batch: int = 1
    precision: str = "fp32"
    # graphs exported and folded elsewhere (a remote device times what the workstation prepared)
    prepared: Optional[Dict[str, List[_Config]]] = None


@dataclasses.dataclass
class _Config:
    """One graph to time: a variant, unfolded or folded."""

    run_id: str
    variant: str
    folded: bool
    onnx_path: Path
    info: Dict[str, Any]


def file_sha256(path: Path) -> str:
    """The sha256 of a timed ONNX file, so that a compare can tell a changed graph."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _graph_info(model) -> Dict[str, Any]:
    flops = flop_count(model)
    if flops.holes:
        warnings.warn(flops.warning(), stacklevel=2)
    return {
        "flops": flops.total,
        "flops_floor": bool(flops.holes),  # nodes of unknown shapes not counted: a floor
        "flops_per_sample": True,  # results from before per-sample FLOPs lack it (results.Run)
        "params": count_params(model),
        "nodes": op_histogram(model),
    }


def _prepare_model(
    source: ModelSource, variants: List[str], options: BenchOptions, cost_model, advance
) -> List[_Config]:
    """Export and fold every variant of one model; returns the graphs to time."""
    onnx_dir = options.out_dir / "onnx"
    exported = {}
    for variant in variants:
        path = onnx_dir / f"{source.name.replace(':', '_')}-{variant}.onnx"
        exported[variant] = (
            path,
            materialize(dataclasses.replace(source, variant=variant), path, options.batch),
        )
        advance("export", 1 / len(variants))
    configs = []
    for variant, (path, model) in exported.items():
        info = _graph_info(model)
        what = source.reference if source.kind == "onnx" else f"{source.name}/{variant}"
        info.update(
            onnx=str(path),
            onnx_sha256=file_sha256(path),
            graph_precision=check_graph_precision(model, options.precision, what),
        )
        configs.append(_Config(f"{source.name}/{variant}", variant, False, path, info))
        folded = fold_model(model, merge=options.merge, cost_model=cost_model)
        if folded.report.changed:
            reference = folded.reference or model  # as the passes read it: opset converted
            verification = verify_fold(reference, folded.model) if options.verify else None
            folded_path = path.with_suffix(".folded.onnx")
            save_model(folded.model, folded_path)
            folded_info = _graph_info(folded.model)
            folded_info.update(
                onnx=str(folded_path),
                onnx_sha256=file_sha256(folded_path),
                fold=folded.report.to_dict(),
                graph_precision=info["graph_precision"],
                verification=verification.to_dict() if verification else None,
            )
            configs.append(
                _Config(f"{source.name}/{variant}/folded", variant, True, folded_path, folded_info)
            )
        else:
            info["fold"] = folded.report.to_dict()
        advance("fold", 1 / len(variants))
    return configs


def _deployable(configs: List[_Config], variant: str) -> _Config:
    """The graph a user would deploy for a variant: the folded one where folding changed it."""
    matching = [c for c in configs if c.variant == variant]
    return next((c for c in matching if c.folded), matching[0])


def _comparisons(
    source: ModelSource,
    configs: List[_Config],
    measured: Dict[str, timing.Measurement],
    energies: Optional[Dict[str, RunEnergy]] = None,
) -> List[Dict]:
    found = []
    energies = energies or {}

    def compare(kind: str, variant: str, reference: _Config, subject: _Config) -> None:
        ratio, low, high = timing.measurement_ratio_ci(
            measured[reference.run_id], measured[subject.run_id]
        )
        entry = {
            "model": source.name,
            "variant": variant,
            "kind": kind,
            "reference": reference.run_id,
            "subject": subject.run_id,
            "speedup": ratio,
            "ci_low": low,
            "ci_high": high,
            "estimator": ESTIMATOR,
        }
        if subject.run_id in energies and reference.run_id in energies:
            spent = energy.energy_ratio(energies[subject.run_id], energies[reference.run_id])
            if spent is not None:
                entry.update(
                    energy_ratio=spent.ratio, energy_ci_low=spent.low, energy_ci_high=spent.high
                )
        found.append(entry)

    variants = list(dict.fromkeys(c.variant for c in configs))
    for variant in variants:
        unfolded = next(c for c in configs if c.variant == variant and not c.folded)
        folded = next((c for c in configs if c.variant == variant and c.folded), None)
        if folded:
            compare("fold", variant, unfolded, folded)
        if variant != "baseline" and "baseline" in variants:
            compare(
                "vs_baseline",
                variant,
                _deployable(configs, "baseline"),
                _deployable(configs, variant),
            )
    return found


def _run_entry(
    source: ModelSource,
    config: _Config,
    runner_info: Dict[str, Any],
    measurement: timing.Measurement,
    options: BenchOptions,
    configs: List[_Config],
) -> Dict[str, Any]:
    stats = measurement.stats()
    folded_twin = next(
        (c.run_id for c in configs if c.variant == config.variant and c.folded), None
    )
    return {
        "id": config.run_id,
        "model": source.name,
        "variant": config.variant,
        "folded": config.folded,
        "folded_run": None if config.folded else folded_twin,
        "source": {"kind": source.kind, "reference": source.reference or source.name},
        "backend": runner_info,
        "precision": options.precision,
        "batch": options.batch,
        "input_shape": list(runner_info.get("input_shape", [])),
        **config.info,
        "series_ms": measurement.series,
        "block_ends": measurement.block_ends,
        "block_state": measurement.block_state,
        "resolution": measurement.resolution,
        "stats": dataclasses.asdict(stats),
        "warmup_iterations": measurement.warmup_iterations,
        "run_time_s": measurement.run_time_s,
        "stop_reason": measurement.stop_reason,
        "warnings": measurement.warnings(),
    }


def _memory_entries(
    configs: List[_Config], runners: Dict[str, Any], kind: str
) -> Dict[str, Tuple[Dict[str, Any], List[str]]]:
    """Each graph's memory figures (``harness.memory``), measured with its runner active and
    before timing (the ONNX files may not be readable afterwards); what could not be measured is
    a warning of that run, never a failure."""
    entries = {}
    for config in configs:
        runner = runners[config.run_id]
        threads = getattr(runner, "intra_op_threads", 1)  # the ONNX Runtime runner's, recorded
        figures, problems = memory.graph_memory(config.onnx_path, runner, kind, threads)
        entries[config.run_id] = (
            {name: dataclasses.asdict(f) for name, f in figures.items()},
            problems,
        )
    return entries


def _write_or_keep(results: Dict[str, Any], path: Path) -> None:
    """Write results.json; when its folder no longer takes it, keep the measurements elsewhere."""
    import json

    from harness.outputs import save_fallback

    try:
        write_results(results, path)
    except OSError as exc:
        kept = save_fallback(json.dumps(results, indent=1, default=str) + "\n", path.name)
        raise HarnessError(
            f"cannot write {path} ({exc.strerror or type(exc).__name__}); the "
            f"measured data were saved to {kept}"
        ) from None


@contextlib.contextmanager
def lock_out_dir(out_dir: Path) -> Iterator[None]:
    """Hold a bench's output folder while it runs (``flock`` on the folder itself: no lock file,
    released when the process ends, however it ends): a second bench into the same folder is
    refused at once instead of both writing results.json and one run being lost."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise HarnessError(
                f"{out_dir} is in use by another bench: wait for it to end or give another --out"
            ) from None
        yield
    finally:
        os.close(fd)


def run_bench(
    options: BenchOptions, argv: List[str], console: Optional[Console] = None
) -> Dict[str, Any]:
    """Run the suite; writes results.json, report.md and report.csv into ``options.out_dir``."""
    console = console or Console(stderr=True)
    profile = options.profile
    runner_class = get_runner_class(profile.backend)
    environment = envinfo.capture_environment(profile)
    results = new_results(argv, profile.to_dict(), environment)
    results["complete"] = False
    results["device"]["warnings"] = envinfo.check_expectations(environment, profile)
    cost_model, cost_note = cost_model_for(profile, options.precision, batch=options.batch)
    results["device"]["cost_model"] = cost_note
    results_path = options.out_dir / "results.json"
    options.out_dir.mkdir(parents=True, exist_ok=True)

    columns = (
        TextColumn("{task.fields[model]:<12}"),
        TextColumn("{task.fields[stage]:<7}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {
            src.name: progress.add_task("", total=100, model=src.name, stage="queued")
            for src, _ in options.sources
        }
        for source, variants in options.sources:
            task = tasks[source.name]
            done = {"value": 0.0}

            def advance(stage: str, fraction: float, _task=task, _done=done) -> None:
                _done["value"] += dict(STAGES)[stage] * fraction
                progress.update(_task, completed=_done["value"], stage=stage)

            progress.update(task, stage="export")
            configs = (
                options.prepared[source.name]
                if options.prepared is not None
                else _prepare_model(source, variants, options, cost_model, advance)
            )
            runners = {
                c.run_id: runner_class(
                    c.onnx_path,
                    profile,
                    options.precision,
                    resolve_batch(c.onnx_path, options.batch),
                )
                for c in configs
            }
            with open_runners(runners), contextlib.ExitStack() as held:
                progress.update(task, stage="time")
                base = done["value"]
                monitor = envinfo.GpuMonitor.open() if profile.kind != "cpu" else None
                if monitor:
                    held.callback(monitor.close)
                sizes = _memory_entries(configs, runners, profile.kind)
                meter, idle_w, results["device"]["energy"] = energy.open_for_run(profile.kind)
                if meter:
                    held.callback(meter.close)
                measured = timing.measure_interleaved(
                    runners,
                    profile.timing,
                    on_round=lambda f, _t=task, _b=base: progress.update(_t, completed=_b + 70 * f),
                    monitor=monitor.sample if monitor else None,
                    energy=meter,
                )
                energies = {
                    run_id: energy.run_energy(meter, m.block_energy, m.block_inferences, idle_w)
                    for run_id, m in measured.items()
                    if meter and m.block_energy
                }
                for config in configs:
                    runner = runners[config.run_id]
                    info = dict(runner.describe())
                    info["input_shape"] = list(next(iter(runner.input_specs().values()))[0])
                    entry = _run_entry(
                        source, config, info, measured[config.run_id], options, configs
                    )
                    entry["memory"], problems = sizes[config.run_id]
                    entry["warnings"] += problems
                    if config.run_id in energies:
                        entry["energy"] = energies[config.run_id].to_dict()
                    results["runs"].append(entry)
            results["comparisons"] += _comparisons(source, configs, measured, energies)
            progress.update(task, completed=100, stage="done")
            _write_or_keep(results, results_path)
    results["device"]["environment_after"] = envinfo.capture_environment(profile)
    results["device"]["warnings"] += envinfo.state_changes(
        environment, results["device"]["environment_after"]
    )
    results["complete"] = True
    _write_or_keep(results, results_path)
    write_bench_tables(as_results(results, str(results_path)), options.out_dir)
    return results


def prepare_suite(options: BenchOptions) -> Dict[str, List[_Config]]:
    """Export and fold every model of the suite without timing (for a device that times them)."""
    cost_model, _ = cost_model_for(options.profile, options.precision, batch=options.batch)
    return {
        source.name: _prepare_model(source, variants, options, cost_model, lambda *_: None)
        for source, variants in options.sources
    }


def resolve_suite(
    models: List[str], variants: str, factory_shape: Optional[str], batch: int = 1
) -> List[Tuple[ModelSource, List[str]]]:
    """Resolve ``--models`` and ``--variants`` into sources; a bad name fails before any work."""
    from harness.export import check_factory, resolve_source
    from harness.zoo import list_variants, variant_spec

    if not [v for v in variants.split(",") if v.strip()]:
        raise HarnessError("--variants is empty (give names, first or all)")
    named = [v for v in variants.split(",") if v and v not in ("baseline", "all", "first")]
    suite = []
    for name in models:
        source = resolve_source(name, factory_shape)
        if source.kind == "onnx" and not Path(source.reference).is_file():
            raise HarnessError(f"ONNX file {source.reference} does not exist")
        if source.kind == "factory":
            source = check_factory(source, batch)
        if source.kind != "zoo":
            suite.append((source, ["baseline"]))
            continue
        available = list_variants(source.name)
        if variants == "all":
            chosen = available
        elif variants == "first":
            chosen = available[:2]
        else:
            chosen = ["baseline"] + [v for v in variants.split(",") if v and v != "baseline"]
            for v in chosen:
                variant_spec(source.name, v)
        suite.append((source, chosen))
    names = [s.name for s, _ in suite]
    if len(set(names)) != len(names):
        raise HarnessError("a model is named twice in --models")
    kinds = {s.kind for s, _ in suite}
    if factory_shape and "factory" not in kinds:
        raise HarnessError(
            "--input-shape applies to factories (package.module:factory) and none of --models is "
            "one: zoo models and ONNX files run at their own shapes"
        )
    if named and "zoo" not in kinds:
        raise HarnessError("--variants applies to zoo models and none of --models is one")
    return suite


def print_summary(
    results: Dict[str, Any], out_dir: Path, console: Optional[Console] = None
) -> None:
    """The short comparison table and the paths of the report files, on stdout."""
    from rich.table import Table

    from harness.report.table import MARKDOWN_COLUMNS, comparison_records, markdown_cells

    console = console or Console(file=sys.stdout, width=200)
    table = Table(title=f"harness bench on {results['device']['profile']['name']}")
    for title in MARKDOWN_COLUMNS:
        table.add_column(title, overflow="fold")
    for record in comparison_records(results):
        table.add_row(*markdown_cells(record))
    console.print(table)
    for warning in results["device"]["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    for run in results["runs"]:
        for warning in run["warnings"]:
            console.print(f"[yellow]warning:[/] {run['id']}: {warning}")
    for name in ("results.json", "report.md", "report.csv"):
        console.print(f"wrote {out_dir / name}")
