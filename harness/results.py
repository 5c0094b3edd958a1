"""The results file (versioned schema): what was run, where, every raw sample, and the comparisons.

Schema 1::

    {schema: 1, created, harness_version, command,
     device: {profile: {...}, environment_before: {...}, environment_after: {...}, warnings: [...]},
     runs: [{id, model, variant, folded, source, onnx, backend: {...}, precision, batch, input_shape,
             flops, params, nodes: {op: count}, fold: {...} | null, series_ms: {latency_ms: [...], ...},
             stats: {...}, warmup_iterations, stop_reason, warnings: [...]}],
     comparisons: [{model, variant, kind: "vs_baseline" | "fold", reference, subject, speedup, ci_low, ci_high}]}
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Dict, List

from harness.errors import HarnessError
from harness.onnx_io import write_text_atomic

SCHEMA_VERSION = 1


def new_results(command: List[str], profile: Dict[str, Any], environment: Dict[str, Any]) -> Dict[str, Any]:
    """An empty results document for one device."""
    from harness import __version__

    return {
        "schema": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "harness_version": __version__,
        "command": command,
        "device": {"profile": profile, "environment_before": environment, "environment_after": None,
                   "warnings": []},
        "runs": [],
        "comparisons": [],
    }


def write_results(results: Dict[str, Any], path: Path) -> Path:
    """Write a results file atomically."""
    return write_text_atomic(path, json.dumps(results, indent=1, sort_keys=False) + "\n")


def load_results(path: Path) -> Dict[str, Any]:
    """Read a results file, checking that it is one and that its schema is the one this harness writes."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is not a JSON results file ({exc})") from None
    if not isinstance(data, dict) or "schema" not in data or "runs" not in data:
        raise HarnessError(f"{path} is not a harness results file (no 'schema' and 'runs' keys)")
    if data["schema"] != SCHEMA_VERSION:
        raise HarnessError(f"{path} has results schema {data['schema']}, this harness reads schema {SCHEMA_VERSION}")
    return data


def run_by_id(results: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Runs of a results document keyed by their id."""
    return {run["id"]: run for run in results["runs"]}
