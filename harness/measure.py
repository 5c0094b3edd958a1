"""Timing graphs on a device profile: the one place runners are made.

``measure_graphs`` makes a runner per graph on the profile's backend (each graph's batch resolved
once, dynamic input dims bound where shapes are given), activates them together, holds a GPU
monitor so that the device state is recorded after every block, runs the protocol
(``timing.measure_interleaved``) and returns the typed runs (``results.Run``) with their paired
speed-ups (``results.RatioCI``, ``results.Comparison``). ``open_runner`` hands out one active
runner for code that drives it itself (an engine build, pytest-benchmark's loop).
``start_results`` and ``finish_results`` bracket a results file with the device's environment.
With ``metered``, each graph's memory is measured before timing (``harness.memory``) and an
energy meter brackets every block (``harness.energy``, idle power first): what an edge
deployment is judged on besides latency, recorded on the same runs.

Runs on the device: Python 3.8, no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import onnx

from harness import energy, envinfo, memory, timing
from harness.backends import get_runner_class
from harness.backends.base import LATENCY, Runner, open_runners, resolve_batch
from harness.errors import HarnessError
from harness.layer_profile import (
    CHAIN_BURST,
    CHAIN_NODES,
    PROFILE_RUNS,
    LayerProfile,
    ProfilerCost,
    profile_trtexec,
    profiler_cost_chain,
)
from harness.onnx_io import InputShapes, bind_shapes, load_model, save_model
from harness.profiles import Profile, TimingSettings
from harness.results import ESTIMATOR, Comparison, RatioCI, Results, Run, Stats

GraphSource = Union[str, Path, onnx.ModelProto]
COST_CHAIN = "profiler cost chain"  # timed and profiled beside the graphs: the profiler's cost


@dataclasses.dataclass
class Timed:
    """Graphs timed together: a typed run per graph (keyed by the name it was given; ``model``
    and ``variant`` are the name and ``baseline`` until a stage names them) and the raw
    measurements the paired speed-ups are computed from. The first graph is the reference."""

    runs: Dict[str, Run]
    measurements: Dict[str, timing.Measurement]
    reference: str
    energy_note: Optional[Dict[str, Any]] = None  # the meter used, or why there was none
    interrupted: bool = False  # Ctrl-C or SIGTERM stopped it; whole blocks kept (keep_partial)
    layers: Dict[str, LayerProfile] = dataclasses.field(default_factory=dict)  # per graph

    def speedup(self, subject: str, reference: Optional[str] = None) -> RatioCI:
        """``subject``'s paired speed-up over ``reference`` (default: the first graph), 95% CI."""
        reference = reference or self.reference
        for name in (subject, reference):
            if name not in self.measurements:
                raise KeyError(f"{name!r} was not timed here (timed: {', '.join(self.runs)})")
        ratio, low, high = timing.measurement_ratio_ci(
            self.measurements[reference], self.measurements[subject]
        )
        return RatioCI(ratio, low, high)

    def comparison(
        self, subject: str, reference: Optional[str] = None, kind: str = "vs_baseline"
    ) -> Comparison:
        """The speed-up as a results comparison, named by the subject's model and variant."""
        reference = reference or self.reference
        run, base = self.runs[subject], self.runs[reference]
        spent = None
        if run.energy is not None and base.energy is not None:
            spent = energy.energy_ratio(run.energy, base.energy)
        return Comparison(
            run.model,
            run.variant,
            kind,
            base.id,
            run.id,
            self.speedup(subject, reference),
            extra={"estimator": ESTIMATOR},
            energy=spent,
        )

    def stats(self, name: str) -> Stats:
        """The statistics of one graph's latencies."""
        return self.runs[name].stats

    @property
    def stop_reason(self) -> str:
        """Why sampling stopped (the same for every graph of one interleaved run)."""
        return self.measurements[self.reference].stop_reason


def check_backend(name: str) -> None:
    """Refuse, before any work, a backend whose library is missing here (saying what to
    install)."""
    get_runner_class(name)


def runner_for(
    path: Path,
    profile: Profile,
    precision: Optional[str] = None,
    batch: Optional[int] = None,
    backend: Optional[str] = None,
    **options: Any,
) -> Runner:
    """An inactive runner of ``path`` on ``backend`` (default: the profile's), its batch resolved
    (a fixed batch must match); ``options`` go to the backend (a TensorRT engine cache)."""
    runner_class = get_runner_class(backend or profile.backend)
    size = resolve_batch(path, batch or profile.batch_sizes[0])
    return runner_class(path, profile, precision or profile.precisions[0], size, **options)


@contextlib.contextmanager
def open_runner(
    path: Path,
    profile: Profile,
    precision: Optional[str] = None,
    batch: Optional[int] = None,
    backend: Optional[str] = None,
    **options: Any,
) -> Iterator[Runner]:
    """One active runner (see ``runner_for``), released on exit."""
    with runner_for(path, profile, precision, batch, backend, **options) as runner:
        yield runner


def _graph_path(name: str, graph: GraphSource, shapes: InputShapes, folder: Path) -> Path:
    """The file a runner loads: the graph itself, or a copy with its input dims bound."""
    if isinstance(graph, onnx.ModelProto):
        model, path = graph, None
    else:
        path = Path(graph)
        if not shapes:
            return path
        model = load_model(path, infer_shapes=False)
    bound, changed = bind_shapes(model, shapes) if shapes else (model, [])
    if path is not None and not changed:
        return path
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return save_model(bound, folder / f"{len(list(folder.iterdir()))}-{safe}.onnx")


def _run(name: str, source: GraphSource, runner: Runner, m: timing.Measurement) -> Run:
    """The typed run of one measured graph."""
    inputs = {k: list(shape) for k, (shape, _) in runner.input_specs().items()}
    return Run(
        id=name,
        model=name,
        variant="baseline",
        folded=False,
        series_ms=m.series,
        stats=m.stats(),
        backend=dict(runner.describe()),
        precision=runner.precision,
        batch=runner.batch,
        input_shape=next(iter(inputs.values()), []),
        onnx=None if isinstance(source, onnx.ModelProto) else str(source),
        warnings=m.warnings(),
        inputs=inputs,
        block_ends=m.block_ends,
        block_state=m.block_state,
        resolution=m.resolution,
        warmup_iterations=m.warmup_iterations,
        run_time_s=m.run_time_s,
        stop_reason=m.stop_reason,
    )


def measure_graphs(
    graphs: Mapping[str, GraphSource],
    profile: Profile,
    precision: Optional[str] = None,
    batch: Optional[int] = None,
    shapes: Optional[InputShapes] = None,
    settings: Optional[TimingSettings] = None,
    backend: Optional[str] = None,
    on_round: Optional[Callable[[float], None]] = None,
    monitor: bool = True,
    metered: bool = False,
    keep_partial: bool = False,
    layers: bool = False,
    **options: Any,
) -> Timed:
    """Time ``graphs`` (name -> ONNX path or model) interleaved on the profile's backend (or
    ``backend``) at ``precision`` and ``batch`` (default: the profile's first), under the
    profile's protocol (or ``settings``); the first graph is the reference of the speed-ups.

    ``shapes`` binds dynamic input dims first; on a GPU with NVML the device state is recorded
    after every block; ``metered``: memory per graph and energy per block too; ``keep_partial``:
    a run Ctrl-C or SIGTERM stops keeps its whole blocks (``Timed.interrupted``); ``layers``: a
    per-layer profile of each graph (``Timed.layers``, ``Run.layers``) from a profiling runner
    timed in the same interleaved rounds as the graphs (its samples are not the graph's: a
    profiler perturbs timing), or for a backend whose runner has no profiler a profiling run of
    its own after timing (trtexec); ``options`` go to every runner.
    """
    if not graphs:
        raise HarnessError("nothing to time: no graphs given")
    shapes = shapes or InputShapes()
    with tempfile.TemporaryDirectory(prefix="harness-measure-") as folder:
        paths = {name: _graph_path(name, g, shapes, Path(folder)) for name, g in graphs.items()}
        runners = {
            name: runner_for(path, profile, precision, batch, backend, **options)
            for name, path in paths.items()
        }
        profiling = {
            f"{name} (profiled)": runner_for(
                path, profile, precision, batch, backend, profiling=True, **options
            )
            for name, path in paths.items()
            if layers and type(runners[name]).layer_profiler
        }
        chain = (
            _cost_chain(Path(folder), profile, precision, backend, options)
            if any(r.profiler_in_spans for r in profiling.values())
            else {}
        )
        gpu = envinfo.GpuMonitor.open() if monitor and profile.kind != "cpu" else None
        measured: Dict[str, timing.Measurement] = {}
        meter, idle_w, note, interrupted = None, None, None, False
        sizes: Dict[str, Any] = {}
        with contextlib.ExitStack() as held:
            if gpu is not None:
                held.callback(gpu.close)
            held.enter_context(open_runners({**runners, **profiling, **chain}))
            if metered:
                sizes = {name: _memory(paths[name], r, profile) for name, r in runners.items()}
                meter, idle_w, note = energy.open_for_run(profile.kind)
                if meter is not None:
                    held.callback(meter.close)
            try:
                timing.measure_interleaved(
                    {**runners, **profiling, **chain},
                    settings or profile.timing,
                    on_round=on_round,
                    monitor=gpu.sample if gpu is not None else None,
                    energy=meter,
                    into=measured,
                )
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: keep the whole blocks measured
                if not (keep_partial and timing.keep_interrupted(measured)):
                    raise
                interrupted = True
            runs = {}
            for name, runner in runners.items():
                run = _run(name, graphs[name], runner, measured[name])
                if metered:
                    run.memory, problems = sizes[name]
                    run.warnings += problems
                m = measured[name]
                if meter is not None and m.block_energy:
                    run.energy = energy.run_energy(
                        meter, m.block_energy, m.block_inferences, idle_w
                    )
                runs[name] = run
            profiles = {
                name: _layer_profile(runners[name], profiling.get(f"{name} (profiled)"))
                for name in runners
                if layers and not interrupted  # an interrupted run keeps its timed blocks only
            }
            if profiles and chain:  # the chain timed and profiled in the same rounds
                cost = (
                    CostChain(profile, precision, backend)
                    .add(
                        chain[f"{COST_CHAIN} (profiled)"].layer_profile(),
                        measured[COST_CHAIN].latencies,
                    )
                    .cost()
                )
                for layer_profile in profiles.values():
                    layer_profile.take_off(cost)
        for name, layer_profile in profiles.items():
            layer_profile.timed_ms = runs[name].stats.median
            runs[name].layers = layer_profile.to_dict()
    measured = {name: m for name, m in measured.items() if name in runners}
    return Timed(runs, measured, next(iter(graphs)), note, interrupted, profiles)


def _layer_profile(runner: Runner, profiling: Optional[Runner]) -> LayerProfile:
    """A graph's per-layer profile: its profiling runner's, else a profiling run of its own."""
    if profiling is not None:
        return profiling.layer_profile()
    if runner.backend_name == "trtexec":
        return profile_trtexec(runner.onnx_path, runner.profile, runner.precision, runner.batch)
    raise HarnessError(f"the {runner.backend_name} backend has no per-layer profiler")


def _cost_chain(
    folder: Path,
    profile: Profile,
    precision: Optional[str],
    backend: Optional[str],
    options: Mapping[str, Any],
) -> Dict[str, Runner]:
    """A timed and a profiling runner of ``profiler_cost_chain``: the profiler's cost per layer."""
    path = save_model(profiler_cost_chain(), folder / "profiler-cost-chain.onnx")
    return {
        COST_CHAIN: runner_for(path, profile, precision, 1, backend, **options),
        f"{COST_CHAIN} (profiled)": runner_for(
            path, profile, precision, 1, backend, profiling=True, **options
        ),
    }


def profile_layers(
    path: Path,
    profile: Profile,
    precision: Optional[str] = None,
    batch: Optional[int] = None,
    runs: int = PROFILE_RUNS,
) -> LayerProfile:
    """A graph's per-layer profile on its own (no timed run beside it): ``runs`` profiled runs on
    the profile's backend (per-layer medians; the first run, which allocates, left out). The
    profiler's own cost is not taken off: profiles compared with each other share one, from a
    ``CostChain`` sampled between them."""
    profiling = get_runner_class(profile.backend).layer_profiler
    runner = runner_for(path, profile, precision, batch, profiling=profiling)
    if not profiling:
        return _layer_profile(runner, None)
    with runner:
        layers = _profiled_runs(runner, runs)
    layers.note = (
        "profiled runs on their own, no timed run beside them (a profiler perturbs timing)"
    )
    return layers


def _profiled_runs(runner: Runner, runs: int) -> LayerProfile:
    """``runs`` runs of an active profiling runner in one block, then its profile."""
    runner.start_block()
    for _ in range(runs):
        runner.measure_once()
    runner.end_block()
    return runner.layer_profile()


class CostChain:
    """The profiler's cost measured in bursts: each ``sample`` times the cost chain, then
    profiles it, each runner on its own; ``cost`` gives one profiler cost from all the bursts.
    Bursts taken between profiles see the same machine as they do, and the profiles share the
    one cost. Nothing runs for a profiler that works outside the spans it reports."""

    def __init__(
        self, profile: Profile, precision: Optional[str] = None, backend: Optional[str] = None
    ) -> None:
        self.profile, self.precision, self.backend = profile, precision, backend
        self._spans: List[float] = []
        self._timed: List[float] = []
        self._runs = 0

    def sample(self, runs: int = CHAIN_BURST) -> CostChain:
        """``runs`` timed runs of the chain, then as many profiled."""
        with tempfile.TemporaryDirectory(prefix="harness-chain-") as folder:
            chain = _cost_chain(Path(folder), self.profile, self.precision, self.backend, {})
            timed, profiled = chain[COST_CHAIN], chain[f"{COST_CHAIN} (profiled)"]
            if not profiled.profiler_in_spans:
                return self
            with timed:
                timed_ms = [timed.measure_once()[LATENCY] for _ in range(runs)]
            with profiled:
                return self.add(_profiled_runs(profiled, runs), timed_ms)

    def add(self, profiled: LayerProfile, timed_ms: Sequence[float]) -> CostChain:
        """Pool a profile of the chain and timed runs of it, however they were taken."""
        self._spans += [layer.time_ms for layer in profiled.layers if layer.kind == "Conv"]
        self._runs += profiled.runs
        self._timed += list(timed_ms)
        return self

    def cost(self) -> Optional[ProfilerCost]:
        """The profiler's cost per layer from every burst so far."""
        if not self._timed:
            return None
        return ProfilerCost.measured(
            self._spans, statistics.median(self._timed), CHAIN_NODES, self._runs
        )


def _memory(path: Path, runner: Runner, profile: Profile) -> Any:
    """A graph's memory figures and what could not be measured, its runner active (before
    timing: the graph files are temporary)."""
    threads = getattr(runner, "intra_op_threads", 1)  # the ONNX Runtime runner's, recorded
    return memory.graph_memory(path, runner, profile.kind, threads)


def start_results(profile: Profile, argv: List[str], strict: bool = False) -> Results:
    """An empty results file for a run on ``profile``: the environment captured and checked
    against the profile (``strict``: a difference is refused), marked incomplete."""
    from harness import __version__

    environment = envinfo.capture_environment(profile)
    warnings = envinfo.enforce_expectations(environment, profile, strict)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return Results(
        created,
        __version__,
        list(argv),
        profile.to_dict(),
        [],
        [],
        complete=False,
        environment_before=environment,
        warnings=warnings,
    )


def finish_results(results: Results, profile: Profile) -> Results:
    """The environment after the run, what changed in it, and the file marked complete."""
    results.environment_after = envinfo.capture_environment(profile)
    results.warnings += envinfo.state_changes(results.environment_before, results.environment_after)
    results.complete = True
    return results
