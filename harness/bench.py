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
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness.cost.calibrate import cost_model_for
from harness.cost.model import CostModel
from harness.errors import HarnessError, name_problem
from harness.explain import record_on_run
from harness.export import ModelSource, materialize
from harness.fold import fold_model, verify_fold
from harness.fold.report import FoldReport
from harness.graph_stats import graph_facts
from harness.measure import Timed, check_backend, finish_results, measure_graphs, start_results
from harness.onnx_io import (
    InputShapes,
    bind_shapes,
    data_inputs,
    load_model,
    require_onnx_file,
    save_model,
)
from harness.precision import check_graph_precision
from harness.profiles import Profile
from harness.report.layers import LAYER_FILES, profiled
from harness.report.pipeline import write_bench_tables
from harness.results import Comparison, Results, Run, write_results

DEFAULT_MODELS = ("lenet5", "resnet20", "resnet56", "vgg16", "mobilenetv2", "resnet34", "resnet50")
# share of a model's progress bar given to each stage
STAGES = (("export", 15), ("fold", 15), ("time", 70))


@dataclasses.dataclass
class SuiteModel:
    """One model of a suite: its baseline and variants, each from its own source (a zoo variant,
    a factory, an ONNX file), exported, folded and timed together against the baseline."""

    name: str
    graphs: Dict[str, ModelSource]  # variant name -> source; "baseline" first
    shapes: InputShapes = InputShapes()  # binds dynamic dims of its ONNX files

    @property
    def variants(self) -> List[str]:
        """The variant names, baseline first."""
        return list(self.graphs)


@dataclasses.dataclass
class BenchOptions:
    """What to run and how."""

    sources: List[SuiteModel]
    profile: Profile
    out_dir: Path
    merge: str = "auto"
    verify: bool = True
    batch: int = 1
    precision: str = "fp32"
    # graphs exported and folded elsewhere (a remote device times what the workstation prepared)
    prepared: Optional[Dict[str, List[_Config]]] = None
    layers: bool = False  # a per-layer profile and the lint's findings on every run


@dataclasses.dataclass
class _Config:
    """One graph to time: a variant, unfolded or folded; ``info`` holds results.Run fields."""

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


def _file_name(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts)


def _export(suite_model: SuiteModel, variant: str, path: Path, batch: int):
    """Export (or copy) one variant's graph to ``path``; an ONNX file's dynamic dims bound."""
    source = suite_model.graphs[variant]
    model = materialize(source, path, batch)
    if source.kind == "onnx" and suite_model.shapes and _dynamic_sample_dims(model):
        model, bound = bind_shapes(model, suite_model.shapes)
        if bound:
            save_model(model, path)
    return model


def _dynamic_sample_dims(model) -> bool:
    """Whether a data input has a dynamic dim besides the batch (the shapes given bind it)."""
    return any(
        not (d.HasField("dim_value") and d.dim_value > 0)
        for value in data_inputs(model)
        for d in list(value.type.tensor_type.shape.dim)[1:]
    )


def _prepare_model(
    suite_model: SuiteModel, options: BenchOptions, cost_model, advance
) -> List[_Config]:
    """Export and fold every variant of one model; returns the graphs to time."""
    onnx_dir = options.out_dir / "onnx"
    exported = {}
    variants = suite_model.variants
    for variant in variants:
        path = onnx_dir / (_file_name(suite_model.name, variant) + ".onnx")
        exported[variant] = (path, _export(suite_model, variant, path, options.batch))
        advance("export", 1 / len(variants))
    configs = []
    name = suite_model.name
    for variant, (path, model) in exported.items():
        source = suite_model.graphs[variant]
        info = graph_facts(model)
        what = source.reference if source.kind == "onnx" else f"{name}/{variant}"
        info.update(
            onnx=str(path),
            onnx_sha256=file_sha256(path),
            graph_precision=check_graph_precision(model, options.precision, what),
            source={"kind": source.kind, "reference": source.reference or source.name},
        )
        configs.append(_Config(f"{name}/{variant}", variant, False, path, info))
        folded = fold_model(model, merge=options.merge, cost_model=cost_model)
        if folded.report.changed:
            reference = folded.reference or model  # as the passes read it: opset converted
            verification = verify_fold(reference, folded.model) if options.verify else None
            folded_path = path.with_suffix(".folded.onnx")
            save_model(folded.model, folded_path)
            folded_info = graph_facts(folded.model)
            folded_info.update(
                onnx=str(folded_path),
                onnx_sha256=file_sha256(folded_path),
                fold=folded.report.to_dict(),
                graph_precision=info["graph_precision"],
                source=info["source"],
                verification=verification.to_dict() if verification else None,
            )
            configs.append(
                _Config(f"{name}/{variant}/folded", variant, True, folded_path, folded_info)
            )
        else:
            info["fold"] = folded.report.to_dict()
        advance("fold", 1 / len(variants))
    return configs


def _deployable(configs: List[_Config], variant: str) -> _Config:
    """The graph a user would deploy for a variant: the folded one where folding changed it."""
    matching = [c for c in configs if c.variant == variant]
    return next((c for c in matching if c.folded), matching[0])


def _comparisons(configs: List[_Config], timed: Timed) -> List[Comparison]:
    """Each folded graph against its unfolded one, each variant's deployable graph against the
    baseline's (paired: all were timed in one interleaved run)."""
    found = []
    variants = list(dict.fromkeys(c.variant for c in configs))
    for variant in variants:
        unfolded = next(c for c in configs if c.variant == variant and not c.folded)
        folded = next((c for c in configs if c.variant == variant and c.folded), None)
        if folded:
            found.append(timed.comparison(folded.run_id, unfolded.run_id, "fold"))
        if variant != "baseline" and "baseline" in variants:
            subject = _deployable(configs, variant)
            found.append(timed.comparison(subject.run_id, _deployable(configs, "baseline").run_id))
    return found


def _named_run(model: str, config: _Config, timed: Timed, configs: List[_Config]) -> Run:
    """The timed run of ``config`` named by its model and variant, with its graph's facts."""
    folded_twin = next(
        (c.run_id for c in configs if c.variant == config.variant and c.folded), None
    )
    info = {k: v for k, v in config.info.items() if k != "flops_per_sample"}
    return dataclasses.replace(
        timed.runs[config.run_id],
        model=model,
        variant=config.variant,
        folded=config.folded,
        folded_run=None if config.folded else folded_twin,
        **info,
    )


def _explain_runs(
    configs: List[_Config], timed: Timed, options: BenchOptions, cost_model: CostModel
) -> None:
    """Each run's measured layers tied to its variant's unfolded graph (through the fold records
    of a folded graph) and linted."""
    for config in configs:
        run = timed.runs[config.run_id]
        fold = config.info.get("fold") if config.folded else None
        records = FoldReport.from_dict(fold).records if fold else []
        unfolded = next(c for c in configs if c.variant == config.variant and not c.folded)
        original = load_model(unfolded.onnx_path) if records else None
        model = load_model(config.onnx_path)
        layers = timed.layers[config.run_id]
        record_on_run(run, layers, model, options.profile, cost_model, records, original)


def _write_or_keep(results: Results, path: Path) -> None:
    """Write results.json; when its folder no longer takes it, keep the measurements elsewhere."""
    import json

    from harness.outputs import save_fallback

    try:
        write_results(results, path)
    except OSError as exc:
        text = json.dumps(results.to_dict(), indent=1, default=str) + "\n"
        kept = save_fallback(text, path.name)
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


def run_bench(options: BenchOptions, argv: List[str], console: Optional[Console] = None) -> Results:
    """Run the suite; writes results.json, report.md and report.csv into ``options.out_dir``."""
    console = console or Console(stderr=True)
    profile = options.profile
    check_backend(profile.backend)  # a backend missing here fails before any export
    results = start_results(profile, argv)
    cost_model, cost_note = cost_model_for(profile, options.precision, batch=options.batch)
    results.device_extra["cost_model"] = cost_note
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
            m.name: progress.add_task("", total=100, model=m.name, stage="queued")
            for m in options.sources
        }
        for suite_model in options.sources:
            task = tasks[suite_model.name]
            done = {"value": 0.0}

            def advance(stage: str, fraction: float, _task=task, _done=done) -> None:
                _done["value"] += dict(STAGES)[stage] * fraction
                progress.update(_task, completed=_done["value"], stage=stage)

            progress.update(task, stage="export")
            configs = (
                options.prepared[suite_model.name]
                if options.prepared is not None
                else _prepare_model(suite_model, options, cost_model, advance)
            )
            progress.update(task, stage="time")
            base = done["value"]
            timed = measure_graphs(
                {c.run_id: c.onnx_path for c in configs},
                profile,
                options.precision,
                options.batch,
                on_round=lambda f, _t=task, _b=base: progress.update(_t, completed=_b + 70 * f),
                metered=True,
                layers=options.layers,
            )
            results.device_extra["energy"] = timed.energy_note
            for config in configs:
                timed.runs[config.run_id] = _named_run(suite_model.name, config, timed, configs)
            if options.layers:
                _explain_runs(configs, timed, options, cost_model)
            results.runs += [timed.runs[c.run_id] for c in configs]
            results.comparisons += _comparisons(configs, timed)
            progress.update(task, completed=100, stage="done")
            _write_or_keep(results, results_path)
    finish_results(results, profile)
    _write_or_keep(results, results_path)
    write_bench_tables(results, options.out_dir)
    return results


def prepare_suite(options: BenchOptions) -> Dict[str, List[_Config]]:
    """Export and fold every model of the suite without timing (for a device that times them)."""
    cost_model, _ = cost_model_for(options.profile, options.precision, batch=options.batch)
    return {
        model.name: _prepare_model(model, options, cost_model, lambda *_: None)
        for model in options.sources
    }


def resolve_model(
    text: str, input_shape: Optional[str], batch: int = 1, base: Optional[Path] = None
) -> ModelSource:
    """One model source (zoo name, ``zoo:variant``, ``pkg.module:factory``, ``file.py:factory``
    or an ``.onnx`` file; paths relative to ``base``), checked before any work."""
    from harness.export import check_factory, resolve_source

    text = text.strip()
    if base is not None and (text.endswith(".onnx") or ".py:" in text):
        path, colon, attr = text.rpartition(":") if ".py:" in text else (text, "", "")
        if not Path(path).is_absolute():
            text = str(base / path) + colon + attr
    source = resolve_source(text, input_shape)
    if source.kind == "onnx":
        require_onnx_file(Path(source.reference))
    if source.kind == "factory":
        source = check_factory(source, batch)
    return source


def _zoo_variants(source: ModelSource, variants: str) -> List[str]:
    from harness.zoo import list_variants, variant_spec

    available = list_variants(source.name)
    if variants == "all":
        return available
    if variants == "first":
        return available[:2]
    chosen = ["baseline"] + [v for v in variants.split(",") if v and v != "baseline"]
    for v in chosen:
        variant_spec(source.name, v)
    return chosen


def _variant_name(source: ModelSource) -> str:
    """What a variant given by its source is called: its zoo variant, factory or file name."""
    if source.kind == "zoo":
        return source.variant
    if source.kind == "factory":
        return source.reference.rpartition(":")[2]
    return source.name


def check_suite(suite: List[SuiteModel]) -> List[SuiteModel]:
    """Refuse a model named twice (its files and rows would collide), and model and variant names
    that cannot label a table or a file (from a file or factory reference: a suite file names
    them)."""
    names = [m.name for m in suite]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise HarnessError(f"a model is named twice in the suite: {twice}")
    for model in suite:
        for name in [model.name, *model.graphs]:
            problem = name_problem(name)
            if problem:
                raise HarnessError(
                    f"the model or variant name {problem}: name it in a suite file "
                    "(docs/own-models.md)"
                )
    return suite


def resolve_suite(
    models: List[str],
    variants: str,
    factory_shape: Optional[str],
    batch: int = 1,
    shapes: Optional[str] = None,
) -> List[SuiteModel]:
    """Resolve ``--models`` and ``--variants`` into a suite; a bad name fails before any work.

    ``--input-shape`` is the export shape of factories and binds the dynamic dims of ONNX files.
    """
    if not [v for v in variants.split(",") if v.strip()]:
        raise HarnessError("--variants is empty (give names, first or all)")
    named = [v for v in variants.split(",") if v and v not in ("baseline", "all", "first")]
    bound = InputShapes.parse(factory_shape, shapes)
    suite = []
    for name in models:
        source = resolve_model(name, factory_shape, batch)
        if source.kind == "zoo" and source.variant == "baseline":
            chosen = _zoo_variants(source, variants)
            graphs = {v: dataclasses.replace(source, variant=v) for v in chosen}
        else:  # a factory, an ONNX file or one zoo variant: a model of its own
            graphs = {"baseline": source}
        display = name if source.kind == "zoo" and ":" in name else source.name
        suite.append(SuiteModel(display, graphs, bound))
    check_suite(suite)
    kinds = {m.graphs["baseline"].kind for m in suite}
    if factory_shape and not kinds & {"factory", "onnx"}:
        raise HarnessError(
            "--input-shape applies to factories (package.module:factory) and ONNX files with "
            "dynamic dims, and none of --models is one: zoo models run at their own shapes"
        )
    if named and "zoo" not in kinds:
        raise HarnessError("--variants applies to zoo models and none of --models is one")
    return suite


def resolve_pair(
    baseline: str,
    variants: str,
    input_shape: Optional[str],
    batch: int = 1,
    shapes: Optional[str] = None,
) -> List[SuiteModel]:
    """``--baseline A --variants B,C``: one model, each variant its own source (a zoo variant's
    name alone means that variant of a zoo baseline)."""
    base = resolve_model(baseline, input_shape, batch)
    graphs: Dict[str, ModelSource] = {"baseline": base}
    for text in [v.strip() for v in variants.split(",")]:
        if not text:
            raise HarnessError("--variants holds an empty name")
        if base.kind == "zoo" and ":" not in text and not text.endswith(".onnx"):
            text = f"{base.name}:{text}"
        source = resolve_model(text, input_shape, batch)
        name = _variant_name(source)
        if name in graphs:
            raise HarnessError(f"--variants names the variant {name!r} twice")
        graphs[name] = source
    return check_suite([SuiteModel(base.name, graphs, InputShapes.parse(input_shape, shapes))])


def print_summary(results: Results, out_dir: Path, console: Optional[Console] = None) -> None:
    """The short comparison table and the paths of the report files, on stdout."""
    from rich.table import Table

    from harness.report.table import MARKDOWN_COLUMNS, comparison_records, markdown_cells

    console = console or Console(file=sys.stdout, width=200)
    table = Table(title=f"harness bench on {results.device_name}")
    for title in MARKDOWN_COLUMNS:
        table.add_column(title, overflow="fold")
    for record in comparison_records(results):
        table.add_row(*markdown_cells(record))
    console.print(table)
    for warning in results.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for run in results.runs:
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/] {run.id}: {warning}")
    layered = LAYER_FILES if profiled([(results.device_name, results)]) else ()
    for name in ("results.json", "report.md", "report.csv", *layered):
        console.print(f"wrote {out_dir / name}")
