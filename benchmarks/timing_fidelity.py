"""Fidelity of the timing protocol on ONNX Runtime (issue 5), written as a Markdown report.

(a) Overhead: the runner's per-inference timing (perf_counter around ``session.run``, as
    OnnxRuntimeRunner does) against ONNX Runtime's own profiler (``enable_profiling``, the
    ``model_run`` events of the same runs).
(b) Repeatability: the same ``harness bench`` twice in a row; do the per-model speed-ups agree
    within their stated 95% intervals?

    python benchmarks/timing_fidelity.py -o benchmarks/timing_fidelity.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.backends.onnxruntime import session_options
from harness.export import ModelSource, materialize
from harness.onnx_io import write_text_atomic
from harness.profiles import load_profile
from harness.zoo import ZOO

MODELS = ("lenet5", "resnet20", "resnet56", "mobilenetv2")


def overhead(name: str, workdir: Path, runs: int, profile) -> dict:
    """Median runner time vs median ORT model_run time over the same inferences (after warm-up)."""
    path = workdir / f"{name}.onnx"
    materialize(ModelSource("zoo", name, input_shape=ZOO[name].input_shape), path)
    options = session_options(profile.onnxruntime)
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / name)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32)
        for i in session.get_inputs()
    }
    for _ in range(20):
        session.run(None, feeds)
    ours = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feeds)
        ours.append((time.perf_counter_ns() - start) / 1e6)
    events = json.loads(Path(session.end_profiling()).read_text())
    model_runs = [e["dur"] / 1000 for e in events if e.get("name") == "model_run"][-runs:]
    ours_med, ort_med = float(np.median(ours)), float(np.median(model_runs))
    diff_us = (ours_med - ort_med) * 1000
    return {
        "model": name,
        "runner_ms": ours_med,
        "ort_profiler_ms": ort_med,
        "overhead_us": diff_us,
        "overhead_pct": diff_us / 1000 / ort_med,
        "ok": diff_us <= max(20.0, 0.03 * ort_med * 1000),
    }


def repeatability(models: str, workdir: Path) -> list:
    """Run the same bench twice; per variant, the two speed-ups and whether their CIs overlap."""
    found = []
    for attempt in (1, 2):
        out = workdir / f"bench{attempt}"
        subprocess.run(
            [sys.executable, "-m", "harness.cli", "bench", "--models", models, "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        found.append(
            {
                (c["model"], c["variant"], c["kind"]): c
                for c in json.loads((out / "results.json").read_text())["comparisons"]
            }
        )
    rows = []
    for key, first in found[0].items():
        second = found[1][key]
        overlap = first["ci_low"] <= second["ci_high"] and second["ci_low"] <= first["ci_high"]
        rows.append({"key": key, "first": first, "second": second, "overlap": overlap})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/timing_fidelity.md"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--bench-models", default="lenet5,resnet20,resnet56,vgg16")
    args = parser.parse_args(argv)
    profile = load_profile("host")
    with tempfile.TemporaryDirectory() as tmp:
        overheads = [overhead(m, Path(tmp), args.runs, profile) for m in MODELS]
        repeat = repeatability(args.bench_models, Path(tmp))
    lines = [
        "# Timing fidelity on ONNX Runtime (host CPU)",
        "",
        "## Runner overhead vs ONNX Runtime's profiler "
        f"({args.runs} inferences each, same session)",
        "",
        "| model | runner median ms | ORT model_run median ms | overhead us | overhead % | within "
        "3% or 20 us |",
        "|---|---|---|---|---|---|",
    ]
    for o in overheads:
        lines.append(
            f"| {o['model']} | {o['runner_ms']:.4f} | {o['ort_profiler_ms']:.4f} | "
            f"{o['overhead_us']:.1f} | {o['overhead_pct']:.2%} | {'yes' if o['ok'] else 'NO'} |"
        )
    lines += [
        "",
        f"## Repeatability: `harness bench --models {args.bench_models}` twice in a row",
        "",
        "| model | variant | comparison | run 1 | run 2 | intervals overlap |",
        "|---|---|---|---|---|---|",
    ]
    for r in repeat:
        a, b = r["first"], r["second"]
        lines.append(
            f"| {r['key'][0]} | {r['key'][1]} | {r['key'][2]} | {a['speedup']:.3f}x "
            f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}] | {b['speedup']:.3f}x [{b['ci_low']:.3f}, "
            f"{b['ci_high']:.3f}] | {'yes' if r['overlap'] else 'NO'} |"
        )
    write_text_atomic(args.output, "\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
