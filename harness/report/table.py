"""The table of one bench run: per model and variant, cost, latency and speed-ups with their
intervals."""

from __future__ import annotations

from typing import Any, Dict, List, Union

from harness.report.formats import csv_text, markdown_table, partial_warnings
from harness.results import RatioCI, Results, as_results, format_interval, format_ratio

CSV_FIELDS = [
    "model",
    "variant",
    "flops",
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
    records = []
    for run in results.runs:
        if run.folded:
            continue
        folded = results.deployed(run) if run.folded_run else None
        record: Dict[str, Any] = {
            "model": run.model,
            "variant": run.variant,
            "flops": run.flops,
            "params": run.params,
            "convs": run.nodes.get("Conv", 0),
            "median_ms": run.stats.median,
            "median_ci_low_ms": run.stats.median_ci_low,
            "median_ci_high_ms": run.stats.median_ci_high,
            "p90_ms": run.stats.p90,
            "folded_convs": folded.nodes.get("Conv", 0) if folded else None,
            "folded_median_ms": folded.stats.median if folded else None,
        }
        for kind, prefix in (("fold", "fold_speedup"), ("vs_baseline", "speedup")):
            found = results.comparison(run.model, run.variant, kind)
            ci = found.speedup if found else None
            record[prefix] = ci.ratio if ci else None
            record[f"{prefix}_ci_low"] = ci.low if ci else None
            record[f"{prefix}_ci_high"] = ci.high if ci else None
        records.append(record)
    return records


def _ratio(record: Dict[str, Any], prefix: str) -> str:
    if record[prefix] is None:
        return ""
    ci = RatioCI(record[prefix], record[f"{prefix}_ci_low"], record[f"{prefix}_ci_high"])
    return format_ratio(ci)


def _number(value: Any, scale: float = 1.0) -> str:
    return "" if value is None else f"{value / scale:.3f}"


def markdown_cells(record: Dict[str, Any]) -> List[str]:
    """A record formatted as the cells of ``MARKDOWN_COLUMNS``."""
    return [
        record["model"],
        record["variant"],
        _number(record["flops"], 1e9),
        _number(record["params"], 1e6),
        str(record["convs"]),
        format_interval(
            record["median_ms"], record["median_ci_low_ms"], record["median_ci_high_ms"]
        ),
        _number(record["p90_ms"]),
        "" if record["folded_convs"] is None else str(record["folded_convs"]),
        _number(record["folded_median_ms"]),
        _ratio(record, "fold_speedup"),
        _ratio(record, "speedup"),
    ]


def to_markdown(results: ResultsLike) -> str:
    """A GitHub-ready report: the table, how to read it, and the provenance of the numbers."""
    results = as_results(results)
    env = results.environment_before
    profile = results.profile
    backend = next((r.backend for r in results.runs), {})
    lines = [f"# Benchmark on `{results.device_name}`: {profile.get('description', '')}", ""]
    lines += [f"> **Warning: partial results.** {w}" for w in partial_warnings([results])]
    rows = [markdown_cells(r) for r in comparison_records(results)]
    lines += markdown_table(MARKDOWN_COLUMNS, rows)
    cpu = env.get("cpu") or {}
    lines += [
        "",
        "Latency: median of the end-to-end samples (ms), batch as recorded; 95% CI of the median "
        "from order statistics. Speed-ups are ratios of medians with 95% bootstrap intervals; "
        "'speed-up vs baseline' compares the deployable graphs (folded where folding changed the "
        "graph). FLOPs = 2 x multiply-accumulates of Conv/Gemm/MatMul, counted from the ONNX graph "
        "of the unfolded model.",
        "",
        "## Provenance",
        f"- command: `{' '.join(results.command)}`",
        f"- harness {results.harness_version}, git {env.get('git_sha')}, created {results.created}",
        f"- host: {env.get('hostname')}, {env.get('platform')}, Python {env.get('python')}",
        f"- CPU: {cpu.get('model')}, {cpu.get('available_cores')} cores available",
        f"- backend: {', '.join(f'{k}={v}' for k, v in backend.items())}",
        "- libraries: "
        + ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items() if v),
    ]
    warnings = results.all_warnings()
    if warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def to_csv(results: ResultsLike) -> str:
    """The comparison table as CSV with raw numbers (FLOPs, params, ms, ratios)."""
    return csv_text(CSV_FIELDS, comparison_records(results))
