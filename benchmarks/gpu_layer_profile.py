"""Device check for the lead (needs a CUDA GPU with trtexec on PATH): real per-layer profiles.

For resnet56 dc-1x1 and mobilenetv2 dc-ds: a trtexec profiling run (``layer_profile.
profile_trtexec``: ``--profilingVerbosity=detailed --exportProfile --exportLayerInfo
--separateProfileRun``) read back and tied to the ONNX nodes, its sum against trtexec's own timed
GPU compute median; the tensorrt runner's own route when the ``tensorrt`` Python module and pycuda
are installed (a profiling ``TensorRTRunner``: ``IProfiler`` + ``IEngineInspector``), its sum
against its profiled runs' median; and the torch profiler on CUDA when torch sees a GPU. The raw
exports (trtexec's files, the runner's inspector JSON and profile records) are copied to
``--out`` so that they can become recorded test data (tests/data/trt/profiles/); both pairs read
back with ``harness explain --trt-profile P --trt-layers L``.

    python benchmarks/gpu_layer_profile.py --device h100 --out "$OUT"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from harness.backends.trt.trtexec import (
    find_trtexec,
    run_command,
    run_trtexec,
    trtexec_command,
    trtexec_version,
)
from harness.errors import HarnessError
from harness.export import materialize, resolve_source
from harness.layer_profile import (
    PROFILE_RUNS,
    load_json,
    trt_layer_profile,
    trtexec_profile_flags,
)
from harness.measure import measure_graphs, runner_for
from harness.onnx_io import load_model
from harness.profiles import load_profile, with_backend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="h100")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    profile = load_profile(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, variant in (("resnet56", "dc-1x1"), ("mobilenetv2", "dc-ds")):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}-{variant}.onnx"
            materialize(dataclasses.replace(resolve_source(name), variant=variant), path, 1)
            _trtexec(path, profile, args.out)
            _runner(path, profile, args.out)
            _torch(path, profile, args.out)
    return 0


def _trtexec(path: Path, profile, out: Path) -> None:
    timed = run_trtexec(path, profile, "fp32", 1)
    binary = find_trtexec()
    version = trtexec_version(binary)
    stem = f"{path.stem}.trt{version}"
    prof, info = out / f"{stem}.profile.json", out / f"{stem}.layers.json"
    cmd = trtexec_command(path, profile, "fp32", 1, version)
    cmd[0] = binary
    run_command(cmd + trtexec_profile_flags(prof, info) + ["--separateProfileRun"], str(path))
    layers = trt_layer_profile(load_json(prof), load_json(info), load_model(path), version)
    compute = sorted(timed["series_ms"].get("gpu_compute_ms") or timed["series_ms"]["latency_ms"])
    median = compute[len(compute) // 2]
    print(
        f"{path.stem} TensorRT {version}: {len(layers.layers)} layers, sum {layers.total_ms:.4f}"
        f" ms vs timed GPU compute median {median:.4f} ms ({layers.total_ms / median:.0%}); "
        f"{len(layers.unmapped())} layers tied to no node"
    )
    for layer in sorted(layers.layers, key=lambda x: -x.time_ms)[:5]:
        print(
            f"  {layer.time_ms:.4f} ms {layer.kind} {layer.precision} {layer.name}: {layer.nodes}"
        )
    (out / f"{stem}.explained.json").write_text(json.dumps(layers.to_dict(), indent=1))


def _runner(path: Path, profile, out: Path) -> None:
    try:
        with runner_for(path, profile, "fp32", 1, "tensorrt", profiling=True) as runner:
            for _ in range(PROFILE_RUNS):
                runner.measure_once()
            info, records = runner.layer_data()
            run_ms = runner.layer_profile().run_ms
            version = runner.describe()["version"]
    except HarnessError as exc:  # no tensorrt/pycuda module here: trtexec only
        print(f"tensorrt runner skipped: {exc}")
        return
    stem = f"{path.stem}.trt{version}.runner"
    (out / f"{stem}.layers.json").write_text(info)
    (out / f"{stem}.profile.json").write_text(json.dumps(records, indent=1))
    source = f"TensorRT {version} IProfiler + IEngineInspector (tensorrt runner)"
    layers = trt_layer_profile(records, info, load_model(path), version, source)
    print(
        f"{path.stem} TensorRT {version} runner: {len(layers.layers)} layers, sum "
        f"{layers.total_ms:.4f} ms vs its profiled runs' median {run_ms:.4f} ms; "
        f"{len(layers.unmapped())} layers tied to no node"
    )
    (out / f"{stem}.explained.json").write_text(json.dumps(layers.to_dict(), indent=1))


def _torch(path: Path, profile, out: Path) -> None:
    try:
        import torch
    except ImportError:
        print("torch not installed: torch profiler skipped")
        return
    if not torch.cuda.is_available():
        print("torch sees no GPU: torch profiler skipped")
        return
    timed = measure_graphs({"m": path}, with_backend(profile, "torch"), "fp32", 1, layers=True)
    layers = timed.layers["m"]
    print(
        f"{path.stem} torch CUDA: {len(layers.layers)} nodes, sum {layers.total_ms:.4f} ms vs "
        f"timed median {layers.timed_ms:.4f} ms (interleaved)"
    )
    (out / f"{path.stem}.torch.json").write_text(json.dumps(layers.to_dict(), indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
