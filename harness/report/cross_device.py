"""One comparison across devices from several results files (a Xavier run, a desktop GPU run, the host run).

Rows are model and variant; per device: the deployable graph's latency (folded where folding changed it) with
its 95% CI, the speed-up against the baseline with its bootstrap interval, and the roofline floor and measured
efficiency. FLOPs and parameters (and their reductions) come from the unfolded export, the same on every device.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness.errors import HarnessError
from harness.results import load_results

Row = Tuple[str, str]  # (model, variant)


@dataclasses.dataclass
class Cell:
    """One device's numbers for one row."""

    median_ms: float
    ci_low: float
    ci_high: float
    speedup: Optional[Tuple[float, float, float]]
    floor_ms: Optional[float]
    folded: bool

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
    results: Dict[str, Any]


@dataclasses.dataclass
class Comparison:
    """The merged table."""

    devices: List[Device]
    rows: List[Row]
    cells: Dict[Tuple[Row, str], Cell]
    flops: Dict[Row, int]
    params: Dict[Row, int]

    def reduction(self, row: Row, what: str) -> Optional[float]:
        """Fraction of FLOPs or params removed against the model's baseline."""
        table = self.flops if what == "flops" else self.params
        base = table.get((row[0], "baseline"))
        return 1 - table[row] / base if base and row in table else None


def roofline_floor_ms(onnx_path: Optional[str], peaks: Dict[str, Any], precision: str) -> Optional[float]:
    """Sum over layers of max(FLOPs / peak, bytes / bandwidth): no device can run the graph faster."""
    if not onnx_path or not Path(onnx_path).is_file():
        return None
    from harness.graph_stats import layer_costs
    from harness.onnx_io import load_model

    rate = {"fp16": peaks.get("fp16_tflops"), "int8": peaks.get("int8_tops")}.get(precision) or peaks["fp32_tflops"]
    seconds = sum(max(c.flops / (rate * 1e12), c.bytes / (peaks["dram_gbps"] * 1e9))
                  for c in layer_costs(load_model(onnx_path)))
    return seconds * 1000


def _device(results: Dict[str, Any], path: Path) -> Device:
    runs = results["runs"]
    if not runs:
        raise HarnessError(f"{path} holds no runs")
    settings = {(r["precision"], r["batch"]) for r in runs}
    if len(settings) != 1:
        raise HarnessError(f"{path} mixes precisions or batch sizes {sorted(settings)}: one column needs one")
    precision, batch = settings.pop()
    backend = runs[0]["backend"]
    return Device(results["device"]["profile"]["name"], precision, batch, backend.get("backend", "?"),
                  str(backend.get("version", "?")), results)


def merge(paths: List[Path]) -> Comparison:
    """Merge results files into one comparison; refuses files that cannot share a table."""
    if not paths:
        raise HarnessError("give at least one results.json")
    devices: List[Device] = []
    shapes: Dict[str, Tuple[Any, str]] = {}
    rows: List[Row] = []
    cells: Dict[Tuple[Row, str], Cell] = {}
    flops: Dict[Row, int] = {}
    params: Dict[Row, int] = {}
    for path in paths:
        results = load_results(path)
        device = _device(results, path)
        if any(d.name == device.name for d in devices):
            raise HarnessError(f"device {device.name!r} appears in two files ({path}); merge one run per device")
        devices.append(device)
        peaks = results["device"]["profile"]["peaks"]
        runs = {r["id"]: r for r in results["runs"]}
        comparisons = {(c["model"], c["variant"]): c for c in results["comparisons"] if c["kind"] == "vs_baseline"}
        for run in results["runs"]:
            if run["folded"]:
                continue
            row = (run["model"], run["variant"])
            shape = (tuple(run["input_shape"]), str(path))
            if run["model"] in shapes and shapes[run["model"]][0] != shape[0]:
                raise HarnessError(f"{run['model']} was run with input shape {list(shape[0])} in {path} but "
                                   f"{list(shapes[run['model']][0])} in {shapes[run['model']][1]}: not comparable")
            shapes.setdefault(run["model"], shape)
            if row not in rows:
                rows.append(row)
            flops.setdefault(row, run["flops"])
            params.setdefault(row, run["params"])
            deployed = runs.get(run.get("folded_run") or "") or run
            stats = deployed["stats"]
            comparison = comparisons.get(row)
            cells[(row, device.name)] = Cell(
                stats["median"], stats["median_ci_low"], stats["median_ci_high"],
                (comparison["speedup"], comparison["ci_low"], comparison["ci_high"]) if comparison else None,
                roofline_floor_ms(deployed.get("onnx"), peaks, device.precision), deployed is not run)
    return Comparison(devices, rows, cells, flops, params)
