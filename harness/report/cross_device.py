"""One table across devices from several results files (a Xavier run, a desktop GPU run, the host).

Rows are model and variant; per device column: the deployable graph's latency (folded where folding
changed it) with its 95% CI, the speed-up against the baseline with its bootstrap interval, and the
roofline floor and measured efficiency. FLOPs and parameters (and their reductions) come from the
unfolded export, the same on every device.

A column is one device at one precision and batch size; the same device may appear twice at
different settings (its columns are then labelled ``name fp16 b8``). Several results files of one
device at one setting (a zoo bench and a suite of one's own, a ``harness time``) are one column:
their models side by side; a model two files hold is shown from the later run (by ``created``),
and the table's notes say so.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness.errors import HarnessError
from harness.report.formats import comparison_drifted, drifted_runs
from harness.results import RatioCI, Results, Run, RunEnergy, Stats

Row = Tuple[str, str]  # (model, variant)
FLOPS_ONLY = "flops only: ONNX file gone"


@dataclasses.dataclass
class Cell:
    """One device column's numbers for one row."""

    stats: Stats  # of the deployable graph
    speedup: Optional[RatioCI]
    floor_ms: Optional[float]
    folded: bool
    floor_basis: str = "per layer"  # or FLOPS_ONLY when the run's ONNX file could not be read
    flops: Optional[int] = None  # of the deployable graph (folding can change them)
    params: Optional[int] = None
    drifted: bool = False  # the deployable graph's samples trended during the run
    speedup_drifted: bool = False  # so did those of either graph the speed-up divides
    energy: Optional[RunEnergy] = None  # of the deployable graph; None: not measured
    energy_ratio: Optional[RatioCI] = None  # against the baseline, paired over rounds

    @property
    def median_ms(self) -> float:
        """The deployable graph's median latency."""
        return self.stats.median

    @property
    def efficiency(self) -> Optional[float]:
        """Roofline floor over measured latency (1.0 = at the hardware's limit)."""
        return self.floor_ms / self.median_ms if self.floor_ms else None


@dataclasses.dataclass
class Device:
    """A device column: its label, settings and provenance."""

    name: str
    precision: str
    batch: int
    backend: str
    backend_version: str
    results: Results
    source: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name


@dataclasses.dataclass
class CrossDeviceTable:
    """The merged table: rows are (model, variant), columns are devices."""

    devices: List[Device]
    rows: List[Row]
    cells: Dict[Tuple[Row, str], Cell]  # keyed by (row, device label)
    flops: Dict[Row, int]  # of the unfolded graph (the network as trained)
    params: Dict[Row, int]
    deployed: Dict[Row, Optional[Tuple[int, int]]] = dataclasses.field(default_factory=dict)
    # FLOPs and params of the deployable graph; None where devices folded it differently
    # (cost-aware folding)
    notes: List[str] = dataclasses.field(default_factory=list)  # how files were merged

    def cost(self, row: Row, what: str) -> Optional[int]:
        """FLOPs or params of the deployable graph, or of the unfolded one where devices deploy
        different graphs."""
        deployed = self.deployed.get(row)
        if deployed is not None and self.deployed.get((row[0], "baseline")) is not None:
            return deployed[0 if what == "flops" else 1]
        return (self.flops if what == "flops" else self.params).get(row)

    def reduction(self, row: Row, what: str) -> Optional[float]:
        """Fraction of FLOPs or params removed against the model's baseline (deployable graphs
        where known)."""
        base, own = self.cost((row[0], "baseline"), what), self.cost(row, what)
        return 1 - own / base if base and own is not None else None


def _rate(peaks: Dict[str, Any], precision: str) -> float:
    """Peak operations per second at ``precision`` (FP32 where the profile gives none)."""
    by_precision = {"fp16": peaks.get("fp16_tflops"), "int8": peaks.get("int8_tops")}
    tera = by_precision.get(precision) or peaks["fp32_tflops"]
    return tera * 1e12


def roofline_floor_ms(
    onnx_path: Optional[str], peaks: Dict[str, Any], precision: str, batch: int = 1
) -> Optional[float]:
    """Sum over layers of max(FLOPs / peak, bytes / bandwidth) at ``batch`` (bound where the
    graph's batch is dynamic): no device can run the graph faster.

    None when the ONNX file is gone (see ``roofline_cell_floor`` for the FLOPs-only fallback).
    """
    if not onnx_path or not Path(onnx_path).is_file():
        return None
    from harness.fold import bind_shapes
    from harness.fold.skeleton import infer_shapes_quick
    from harness.graph_stats import layer_costs
    from harness.onnx_io import load_model

    rate, bandwidth = _rate(peaks, precision), peaks["dram_gbps"] * 1e9
    model = load_model(onnx_path)
    try:
        model, bound = bind_shapes(model, None, batch)
    except HarnessError:  # a fixed batch: the graph's own
        bound = []
    costs = layer_costs(infer_shapes_quick(model) if bound else model)
    return 1000 * sum(max(c.flops / rate, c.bytes / bandwidth) for c in costs)


def roofline_cell_floor(
    run: Run, peaks: Dict[str, Any], precision: str
) -> Tuple[Optional[float], str]:
    """The floor of a run and how it was computed; FLOPs over peak alone when its ONNX file is
    gone."""
    if not (peaks.get("fp32_tflops") and peaks.get("dram_gbps")):
        return None, "no peaks in the profile"
    floor = roofline_floor_ms(run.onnx, peaks, precision, run.batch)
    if floor is not None:
        return floor, "per layer"
    flops = run.flops
    # FLOPs are recorded per sample (graph_stats.flop_count): the floor is for the whole batch
    return (1000 * flops * run.batch / _rate(peaks, precision) if flops else None), FLOPS_ONLY


def _device(results: Results) -> Device:
    if not results.runs:
        raise HarnessError(f"{results.source} holds no runs")
    settings = {(r.precision, r.batch) for r in results.runs}
    if len(settings) != 1:
        raise HarnessError(
            f"{results.source} mixes precisions or batch sizes {sorted(settings)}: "
            "one column needs one"
        )
    precision, batch = settings.pop()
    backend = results.runs[0].backend
    return Device(
        results.device_name,
        precision,
        batch,
        backend.get("backend", "?"),
        str(backend.get("version", "?")),
        results,
        results.source,
    )


LATER_RUN_WINS = "the later run (by its created time) is shown"


def _combined(devices: List[Device]) -> Tuple[Device, List[str]]:
    """One column from several files of one device at one setting: every model, a model two
    files hold taken from the later run; the notes say which files gave what."""
    ordered = sorted(devices, key=lambda d: d.results.created)
    owner: Dict[str, Device] = {}
    holders: Dict[str, List[str]] = {}
    for d in ordered:
        for model in dict.fromkeys(r.model for r in d.results.runs):
            owner[model] = d
            holders.setdefault(model, []).append(d.source)
    notes = [
        f"{ordered[-1].name}: {model} is in {', '.join(files)}; {LATER_RUN_WINS} "
        f"({owner[model].source})"
        for model, files in holders.items()
        if len(files) > 1
    ]
    versions = sorted({f"{d.backend} {d.backend_version}" for d in ordered})
    if len(versions) > 1:
        notes.append(f"{ordered[-1].name}: the merged files ran on {', '.join(versions)}")
    latest = ordered[-1]
    source = " + ".join(d.source for d in ordered)
    merged = dataclasses.replace(
        latest.results,
        runs=[r for d in ordered for r in d.results.runs if owner[r.model] is d],
        comparisons=[c for d in ordered for c in d.results.comparisons if owner[c.model] is d],
        complete=all(d.results.complete is not False for d in ordered),
        warnings=[w for d in ordered for w in d.results.warnings],
        source=source,
    )
    notes.insert(0, f"{latest.name}: one column from {len(ordered)} files ({source})")
    return dataclasses.replace(latest, results=merged, source=source), notes


def _one_column_per_setting(devices: List[Device]) -> Tuple[List[Device], List[str]]:
    """Files of one device at one setting combined into one column (``_combined``)."""
    groups: Dict[Tuple[str, str, int], List[Device]] = {}
    for d in devices:
        groups.setdefault((d.name, d.precision, d.batch), []).append(d)
    columns, notes = [], []
    for group in groups.values():
        if len(group) == 1:
            columns.append(group[0])
            continue
        column, said = _combined(group)
        columns.append(column)
        notes += said
    return columns, notes


def _label_columns(devices: List[Device]) -> None:
    """Refuse one column twice; label a device seen at several settings by its settings."""
    seen: Dict[Tuple[str, str, int], Device] = {}
    for d in devices:
        key = (d.name, d.precision, d.batch)
        if key in seen:
            raise HarnessError(
                f"device {d.name!r} at {d.precision}, batch {d.batch} appears in "
                f"two files ({seen[key].source} and {d.source}): merge one run per "
                "device and setting"
            )
        seen[key] = d
    for d in devices:
        if sum(o.name == d.name for o in devices) > 1:
            d.label = f"{d.name} {d.precision} b{d.batch}"


def _check_shapes(devices: List[Device]) -> None:
    """Every file must feed a model the same sample shape (the batch may differ per column)."""
    shapes: Dict[str, Tuple[List[int], str]] = {}
    for d in devices:
        for run in d.results.runs:
            sample = list(run.input_shape)[1:]
            known = shapes.setdefault(run.model, (sample, d.source))
            if known[0] != sample:
                raise HarnessError(
                    f"{run.model} was run on samples of shape {sample} in "
                    f"{d.source} but {known[0]} in {known[1]}: not comparable in "
                    "one row"
                )


def merge(documents: List[Results]) -> CrossDeviceTable:
    """Merge results files into one table; refuses files that cannot share a table."""
    if not documents:
        raise HarnessError("give at least one results.json")
    sources = [os.path.realpath(d.source) for d in documents if d.source]
    twice = next((s for s in sources if sources.count(s) > 1), None)
    if twice:
        raise HarnessError(f"{twice} is given twice: give each results file once")
    devices, notes = _one_column_per_setting([_device(results) for results in documents])
    _label_columns(devices)
    _check_shapes(devices)
    table = CrossDeviceTable(devices, [], {}, {}, {}, notes=notes)
    for device in devices:
        peaks = device.results.profile.get("peaks")
        peaks = peaks if isinstance(peaks, dict) else {}  # a file's copy of its profile, unchecked
        drifted = drifted_runs(device.results)
        for run in device.results.runs:
            if run.folded:
                continue
            row = (run.model, run.variant)
            if row not in table.rows:
                table.rows.append(row)
            table.flops.setdefault(row, run.flops)
            table.params.setdefault(row, run.params)
            deployed = device.results.deployed(run)
            cost = (deployed.flops, deployed.params)
            if table.deployed.setdefault(row, cost) != cost:
                table.deployed[row] = None
            found = device.results.comparison(run.model, run.variant)
            floor, basis = roofline_cell_floor(deployed, peaks, device.precision)
            table.cells[(row, device.label)] = Cell(
                deployed.stats,
                found.speedup if found else None,
                floor,
                deployed is not run,
                basis,
                deployed.flops,
                deployed.params,
                deployed.id in drifted,
                comparison_drifted(found, drifted),
                deployed.energy,
                found.energy if found else None,
            )
    return table
