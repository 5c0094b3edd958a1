"""The comparison table of one results file: per model and variant, cost, latency and speed-ups with intervals."""

from __future__ import annotations

import csv
import io
from typing import Any, Dict, List

from harness.results import run_by_id

CSV_FIELDS = ["model", "variant", "flops", "params", "convs", "median_ms", "median_ci_low_ms", "median_ci_high_ms",
              "p90_ms", "folded_convs", "folded_median_ms", "fold_speedup", "fold_speedup_ci_low",
              "fold_speedup_ci_high", "speedup", "speedup_ci_low", "speedup_ci_high"]
MARKDOWN_COLUMNS = ["model", "variant", "GFLOPs", "params (M)", "convs", "latency ms [95% CI]", "p90 ms",
                    "folded convs", "folded ms", "fold speed-up", "speed-up vs baseline"]


def comparison_records(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One record per unfolded run (model and variant) with its folded twin and speed-ups; raw numbers."""
    runs = run_by_id(results)
    comparisons = {(c["model"], c["variant"], c["kind"]): c for c in results["comparisons"]}
    records = []
    for run in results["runs"]:
        if run["folded"]:
            continue
        folded = runs.get(run.get("folded_run") or "")
        record: Dict[str, Any] = {
            "model": run["model"], "variant": run["variant"], "flops": run["flops"], "params": run["params"],
            "convs": run["nodes"].get("Conv", 0), "median_ms": run["stats"]["median"],
            "median_ci_low_ms": run["stats"]["median_ci_low"], "median_ci_high_ms": run["stats"]["median_ci_high"],
            "p90_ms": run["stats"]["p90"],
            "folded_convs": folded["nodes"].get("Conv", 0) if folded else None,
            "folded_median_ms": folded["stats"]["median"] if folded else None,
        }
        for kind, prefix in (("fold", "fold_speedup"), ("vs_baseline", "speedup")):
            found = comparisons.get((run["model"], run["variant"], kind))
            record[prefix] = found["speedup"] if found else None
            record[f"{prefix}_ci_low"] = found["ci_low"] if found else None
            record[f"{prefix}_ci_high"] = found["ci_high"] if found else None
        records.append(record)
    return records


def _ratio(record: Dict[str, Any], prefix: str) -> str:
    if record[prefix] is None:
        return ""
    return f"{record[prefix]:.2f}x [{record[prefix + '_ci_low']:.2f}, {record[prefix + '_ci_high']:.2f}]"


def markdown_cells(record: Dict[str, Any]) -> List[str]:
    """A record formatted as the cells of ``MARKDOWN_COLUMNS``."""
    return [
        record["model"], record["variant"], f"{record['flops'] / 1e9:.3f}", f"{record['params'] / 1e6:.3f}",
        str(record["convs"]),
        f"{record['median_ms']:.3f} [{record['median_ci_low_ms']:.3f}, {record['median_ci_high_ms']:.3f}]",
        f"{record['p90_ms']:.3f}",
        "" if record["folded_convs"] is None else str(record["folded_convs"]),
        "" if record["folded_median_ms"] is None else f"{record['folded_median_ms']:.3f}",
        _ratio(record, "fold_speedup"), _ratio(record, "speedup"),
    ]


def to_markdown(results: Dict[str, Any]) -> str:
    """A GitHub-ready report: the table, how to read it, and the provenance of the numbers."""
    records = comparison_records(results)
    env = results["device"]["environment_before"]
    profile = results["device"]["profile"]
    backend = next((r["backend"] for r in results["runs"]), {})
    lines = [f"# Benchmark on `{profile['name']}`: {profile['description']}", ""]
    lines.append("| " + " | ".join(MARKDOWN_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in MARKDOWN_COLUMNS) + "|")
    for record in records:
        lines.append("| " + " | ".join(markdown_cells(record)) + " |")
    lines += [
        "",
        "Latency: median of the end-to-end samples (ms), batch as recorded; 95% CI of the median from order "
        "statistics. Speed-ups are ratios of medians with 95% bootstrap intervals; 'speed-up vs baseline' compares "
        "the deployable graphs (folded where folding changed the graph). FLOPs = 2 x multiply-accumulates of "
        "Conv/Gemm/MatMul, counted from the ONNX graph of the unfolded model.",
        "",
        "## Provenance",
        f"- command: `{' '.join(results['command'])}`",
        f"- harness {results['harness_version']}, git {env.get('git_sha')}, created {results['created']}",
        f"- host: {env.get('hostname')}, {env.get('platform')}, Python {env.get('python')}",
        f"- CPU: {env.get('cpu', {}).get('model')}, {env.get('cpu', {}).get('available_cores')} cores available",
        f"- backend: {', '.join(f'{k}={v}' for k, v in backend.items())}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items() if v),
    ]
    warnings = list(results["device"].get("warnings", []))
    warnings += [f"{r['model']}/{r['variant']}{' (folded)' if r['folded'] else ''}: {w}"
                 for r in results["runs"] for w in r.get("warnings", [])]
    if warnings:
        lines += ["", "## Warnings"] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def to_csv(results: Dict[str, Any]) -> str:
    """The comparison table as CSV with raw numbers (FLOPs, params, ms, ratios)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(comparison_records(results))
    return buffer.getvalue()
