"""Compare graph optimisers on the compressed zoo variants: node counts and ONNX Runtime CPU
latency.

Contenders: the unfolded export; harness fold (merge=auto with the host roofline, and merge=all);
onnxsim; onnxslim; ONNX Runtime's own ORT_ENABLE_ALL optimisation (the optimised graph saved to a
file, then timed with optimisation off so that each graph is timed as it is). Every graph is timed
interleaved with the others of its model under the host profile's protocol, with ORT_ENABLE_ALL at
session creation for all of them (what a user deploying any of these files gets).

    python benchmarks/fold_compare.py -o benchmarks/fold_compare.md [--models resnet20,mobilenetv2]

Needs `pip install onnxsim onnxslim` (a missing one is reported in the table, not faked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import onnx
import onnxruntime as ort

from harness.export import ModelSource, materialize
from harness.fold import RooflineCostModel, fold_model
from harness.graph_stats import op_histogram
from harness.measure import measure_graphs
from harness.onnx_io import save_model, write_text_atomic
from harness.profiles import load_profile
from harness.zoo import ZOO, list_variants

DEFAULT_MODELS = ("resnet20", "resnet56", "vgg16", "mobilenetv2", "resnet34")


def _onnxsim(model: onnx.ModelProto, path: Path) -> Optional[str]:
    try:
        import onnxsim
    except ImportError:
        return "onnxsim not installed"
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        return "onnxsim could not validate its result"
    save_model(simplified, path)
    return None


def _onnxslim(model: onnx.ModelProto, path: Path) -> Optional[str]:
    try:
        import onnxslim
    except ImportError:
        return "onnxslim not installed"
    save_model(onnxslim.slim(model), path)
    return None


def _ort_all(model: onnx.ModelProto, path: Path) -> Optional[str]:
    source = path.with_suffix(".src.onnx")
    save_model(model, source)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return None


def _fold(mode: str) -> Callable[[onnx.ModelProto, Path], Optional[str]]:
    def run(model: onnx.ModelProto, path: Path) -> Optional[str]:
        cost = RooflineCostModel.from_profile(load_profile("host"))  # as in the published table
        save_model(fold_model(model, merge=mode, cost_model=cost).model, path)
        return None

    return run


CONTENDERS = {
    "harness fold (auto)": _fold("auto"),
    "harness fold (all)": _fold("all"),
    "onnxsim": _onnxsim,
    "onnxslim": _onnxslim,
    "ORT_ENABLE_ALL": _ort_all,
}


def compare_model(name: str, variant: str, workdir: Path, profile) -> Dict[str, Dict]:
    """Optimise one variant with every contender and time all the results interleaved."""
    original = materialize(
        ModelSource("zoo", name, variant, input_shape=ZOO[name].input_shape),
        workdir / f"{name}.onnx",
    )
    rows: Dict[str, Dict] = {"unfolded export": {"path": workdir / f"{name}.onnx", "note": ""}}
    for label, optimise in CONTENDERS.items():
        path = workdir / f"{name}-{label.split()[0]}-{label[-4:-1]}.onnx"
        started = time.perf_counter()
        try:
            problem = optimise(original, path)
        except Exception as exc:  # a contender failing is a result to report, not a crash
            problem = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
        rows[label] = {
            "path": None if problem else path,
            "note": problem or "",
            "optimise_s": time.perf_counter() - started,
        }
    timed = measure_graphs(
        {label: row["path"] for label, row in rows.items() if row["path"]}, profile
    )
    for label, row in rows.items():
        if row["path"]:
            row["nodes"] = op_histogram(onnx.load(str(row["path"]), load_external_data=False))
            row["stats"] = timed.stats(label)
            if label != "unfolded export":
                ci = timed.speedup(label, "unfolded export")
                row["speedup"] = (ci.ratio, ci.low, ci.high)
    return rows


def to_markdown(results: Dict[str, Dict[str, Dict]], profile, elapsed: float) -> str:
    lines = [
        "# Graph optimisers on the compressed zoo variants (ONNX Runtime CPU)",
        "",
        f"Device profile `{profile.name}`; timing protocol: warm-up {profile.timing.warmup_s} s, "
        f"interleaved blocks, >= {profile.timing.min_iterations} samples and "
        f"{profile.timing.min_duration_s} s each. Speed-up = median(unfolded) / median(optimised), "
        f"95% bootstrap CI. Sessions use ORT_ENABLE_ALL. Total wall time {elapsed:.0f} s.",
        "",
        "| model / variant | graph | nodes | Conv | Add | median ms [95% CI] | "
        "speed-up vs unfolded | optimise s | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, rows in results.items():
        for label, row in rows.items():
            if not row["path"]:
                lines.append(f"| {model} | {label} | | | | | | | {row['note']} |")
                continue
            s, nodes = row["stats"], row["nodes"]
            speed = row.get("speedup")
            lines.append(
                f"| {model} | {label} | {sum(nodes.values())} | {nodes.get('Conv', 0)} | "
                f"{nodes.get('Add', 0)} | "
                f"{s.median:.3f} [{s.median_ci_low:.3f}, {s.median_ci_high:.3f}] | "
                + (f"{speed[0]:.2f}x [{speed[1]:.2f}, {speed[2]:.2f}]" if speed else "")
                + " | "
                + (f"{row['optimise_s']:.2f}" if "optimise_s" in row else "")
                + f" | {row['note']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/fold_compare.md"))
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--device", default="host")
    args = parser.parse_args(argv)
    profile = load_profile(args.device)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            variant = list_variants(name)[1]
            print(f"{name}/{variant} ...", file=sys.stderr, flush=True)
            results[f"{name}/{variant}"] = compare_model(name, variant, Path(tmp), profile)
    write_text_atomic(args.output, to_markdown(results, profile, time.perf_counter() - started))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
