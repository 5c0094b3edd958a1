"""The table of one bench run: per model and variant, cost, latency and speed-ups with their
intervals."""

from __future__ import annotations

from typing import Any, Dict, List, Union

from harness.report.edge import EDGE_CSV_FIELDS, edge_markdown, edge_record
from harness.report.formats import (
    DRIFT_NOTE,
    SPEEDUP_NOTE,
    comparison_drifted,
    csv_text,
    drifted_runs,
    markdown_table,
    marked,
    partial_warnings,
)
from harness.results import (
    RatioCI,
    Results,
    as_results,
    format_interval,
    format_latency,
    format_ratio,
)

CSV_FIELDS = [
    "model",
    "variant",
    "flops",
    "flops_floor",
    "params",
    "convs",
    "median_ms",
    "median_ci_low_ms",
    "median_ci_high_ms",
    "p90_ms",
    "folded_convs",
    "folded_median_ms",
    "fold_speedup",
    "fold_speedup_ci_low",
    "fold_speedup_ci_high",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "drifted",
    "folded_drifted",
    "fold_speedup_drifted",
    "speedup_drifted",
    *EDGE_CSV_FIELDS,
]
MARKDOWN_COLUMNS = [
    "model",
    "variant",
    "GFLOPs",
    "params (M)",
    "convs",
    "latency ms [95% CI]",
    "p90 ms",
    "folded convs",
    "folded ms",
    "fold speed-up",
    "speed-up vs baseline",
]
ResultsLike = Union[Results, Dict[str, Any]]


def comparison_records(results: ResultsLike) -> List[Dict[str, Any]]:
    """One record per unfolded run (model and variant) with its folded twin and speed-ups; raw
    numbers."""
    results = as_results(results)
    drifted = drifted_runs(results)
    records = []
    for run in results.runs:
        if run.folded:
            continue
        folded = results.deployed(run) if run.folded_run else None
        record: Dict[str, Any] = {
            "model": run.model,
            "variant": run.variant,
            "flops": run.flops,
            "flops_floor": bool(run.flops_floor),  # nodes of unknown shapes uncounted
            "params": run.params,
            "convs": run.nodes.get("Conv", 0),
            "median_ms": run.stats.median,
            "median_ci_low_ms": run.stats.median_ci_low,
            "median_ci_high_ms": run.stats.median_ci_high,
            "p90_ms": run.stats.p90,
            "folded_convs": folded.nodes.get("Conv", 0) if folded else None,
            "folded_median_ms": folded.stats.median if folded else None,
            "drifted": run.id in drifted,
            "folded_drifted": folded.id in drifted if folded else None,
        }
        for kind, prefix in (("fold", "fold_speedup"), ("vs_baseline", "speedup")):
            found = results.comparison(run.model, run.variant, kind)
            ci = found.speedup if found else None
            record[prefix] = ci.ratio if ci else None
            record[f"{prefix}_ci_low"] = ci.low if ci else None
            record[f"{prefix}_ci_high"] = ci.high if ci else None
            record[f"{prefix}_drifted"] = comparison_drifted(found, drifted)
        record.update(edge_record(results, results.deployed(run)))
        records.append(record)
    return records


def _ratio(record: Dict[str, Any], prefix: str) -> str:
    if record[prefix] is None:
        return ""
    ci = RatioCI(record[prefix], record[f"{prefix}_ci_low"], record[f"{prefix}_ci_high"])
    return marked(format_ratio(ci), record[f"{prefix}_drifted"])


def _number(value: Any, scale: float = 1.0) -> str:
    return "" if value is None else f"{value / scale:.3f}"


def _gflops(record: Dict[str, Any]) -> str:
    """GFLOPs; a floor (nodes of unknown shapes not counted) as '>= 0.044', or 'unknown'."""
    if record["flops_floor"] and not record["flops"]:
        return "unknown"
    return (">= " if record["flops_floor"] else "") + _number(record["flops"], 1e9)


def markdown_cells(record: Dict[str, Any]) -> List[str]:
    """A record formatted as the cells of ``MARKDOWN_COLUMNS``."""
    return [
        record["model"],
        record["variant"],
        _gflops(record),
        _number(record["params"], 1e6),
        str(record["convs"]),
        marked(
            format_interval(
                record["median_ms"], record["median_ci_low_ms"], record["median_ci_high_ms"]
            ),
            record["drifted"],
        ),
        _number(record["p90_ms"]),
        "" if record["folded_convs"] is None else str(record["folded_convs"]),
        ""
        if record["folded_median_ms"] is None
        else marked(format_latency(record["folded_median_ms"]), record["folded_drifted"]),
        _ratio(record, "fold_speedup"),
        _ratio(record, "speedup"),
    ]


def to_markdown(results: ResultsLike) -> str:
    """A GitHub-ready report: the table, how to read it, and the provenance of the numbers."""
    results = as_results(results)
    env = results.environment_before
    profile = results.profile
    backend = next((r.backend for r in results.runs), {})
    backend = {k: v for k, v in backend.items() if k != "input_shape"}  # per model: listed below
    lines = [f"# Benchmark on `{results.device_name}`: {profile.get('description', '')}", ""]
    lines += [f"> **Warning: partial results.** {w}" for w in partial_warnings([results])]
    records = comparison_records(results)
    lines += markdown_table(MARKDOWN_COLUMNS, [markdown_cells(r) for r in records])
    cpu = env.get("cpu") or {}
    drift = any(r[k] for r in records for k in ("drifted", "folded_drifted"))
    lines += [
        "",
        "Latency: median of the end-to-end samples (ms), batch as recorded; 95% CI of the median "
        f"from order statistics. {SPEEDUP_NOTE} 'fold speed-up' divides the latency by the folded "
        "ms; 'speed-up vs baseline' the deployable graphs' medians (folded where folding changed "
        "the graph). FLOPs = 2 x multiply-accumulates of Conv/Gemm/MatMul, counted from the ONNX "
        "graph of the unfolded model." + (f" {DRIFT_NOTE}" if drift else ""),
        *edge_markdown(results),
        "",
        "## Provenance",
        f"- command: `{' '.join(results.command)}`",
        f"- harness {results.harness_version}, git {env.get('git_sha')}, created {results.created}",
        f"- host: {env.get('hostname')}, {env.get('platform')}, Python {env.get('python')}",
        f"- CPU: {cpu.get('model')}, {cpu.get('available_cores')} cores available",
        f"- backend: {', '.join(f'{k}={v}' for k, v in backend.items())}",
        f"- input shape per model: {input_shapes_text(results)}",
        "- libraries: "
        + ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v),
    ]
    warnings = results.all_warnings()
    if warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def input_shapes_text(results: Results) -> str:
    """Each model's input shape (batch first) as timed, e.g. 'resnet20 1x3x32x32, lenet5
    1x1x28x28'; 'unknown' for a run that recorded none."""
    shapes: Dict[str, str] = {}
    for run in results.runs:
        shape = run.input_shape or run.backend.get("input_shape") or []
        shapes.setdefault(run.model, "x".join(map(str, shape)) or "unknown")
    return ", ".join(f"{model} {shape}" for model, shape in shapes.items()) or "none"


def to_csv(results: ResultsLike) -> str:
    """The comparison table as CSV with raw numbers (FLOPs, params, ms, ratios)."""
    return csv_text(CSV_FIELDS, comparison_records(results))
