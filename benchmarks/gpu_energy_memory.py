"""GPU check of issue 24: NVML energy per inference with intervals, and torch's CUDA peak memory.

Two small conv nets (a "base" of 8 convs and a "lean" one of 4, same width) are exported to ONNX
and timed interleaved on harness's torch backend (CUDA), the NVML energy counter
(``nvmlDeviceGetTotalEnergyConsumption``) bracketing every timing block; NVML power sampled in a
thread over the same blocks is integrated beside it, to check the integration against the
counter. Also measured: idle power, how often the counter moves, and
``torch.cuda.max_memory_allocated``.
Prints one JSON document (and writes it to $OUT/gpu_energy_memory.json when $OUT is set).

Needs a CUDA build of torch, onnx, numpy, scipy, pyyaml and nvidia-ml-py; no TensorRT:

    pip install --target /tmp/x wheels/*.whl
    PYTHONPATH=/tmp/x:. python benchmarks/gpu_energy_memory.py --seconds 15
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

NEEDED = ("numpy", "scipy", "yaml", "onnx", "torch", "pynvml")


def preflight() -> List[str]:
    """The modules this check needs and cannot import."""
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    return missing


class BothMeters:
    """The energy counter brackets each block; NVML power sampled over the same block too."""

    def __init__(self, counter: Any, sampled: Any) -> None:
        self.counter, self.sampled = counter, sampled
        self.source, self.rails = counter.source, counter.rails
        self.interval_ms, self.min_window_s = counter.interval_ms, counter.min_window_s
        self.integrated: List[Any] = []

    def start(self) -> None:
        self.sampled.start()
        self.counter.start()

    def stop(self) -> Any:
        block = self.counter.stop()
        self.integrated.append(self.sampled.stop())
        return block


def counter_update_ms(nvml: Any, handle: Any, seconds: float = 2.0) -> Dict[str, Any]:
    """How often the energy counter changes when polled in a loop: median ms between changes."""
    import numpy as np

    changes, last, began = [], nvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    while time.perf_counter() - began < seconds:
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if value != last:
            changes.append(time.perf_counter())
            last = value
    gaps = np.diff(changes) * 1000.0 if len(changes) > 1 else np.array([])
    return {
        "changes": len(changes),
        "median_ms_between_changes": float(np.median(gaps)) if gaps.size else None,
    }


def nets(width: int):
    """The base net (8 convs) and the lean one (4): conv3x3 + ReLU, ``width`` channels."""
    import torch

    def net(depth: int) -> torch.nn.Module:
        layers: List[torch.nn.Module] = []
        for i in range(depth):
            layers += [
                torch.nn.Conv2d(3 if i == 0 else width, width, 3, padding=1),
                torch.nn.ReLU(),
            ]
        return torch.nn.Sequential(*layers).eval()

    torch.manual_seed(0)
    return {"base": net(8), "lean": net(4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="minimum time per net")
    parser.add_argument("--block-s", type=float, default=0.5, help="timing block length")
    parser.add_argument("--shape", default="3x112x112", help="input shape CxHxW")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    missing = preflight()
    if missing:
        print(json.dumps({"error": "missing modules", "missing": missing}, indent=1))
        return 2
    import numpy as np
    import pynvml
    import torch

    from harness import energy, memory, timing
    from harness.backends.base import open_runners
    from harness.backends.torch_backend import TorchRunner
    from harness.export import export_module
    from harness.profiles import TimingSettings, load_profile

    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device", "torch": torch.__version__}))
        return 2
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = pynvml.nvmlDeviceGetName(handle)
    report: Dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "gpu": name.decode() if isinstance(name, bytes) else name,
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "nvml_version": getattr(pynvml, "__version__", None),
        "architecture": pynvml.nvmlDeviceGetArchitecture(handle),
        "power_is_1s_average": energy.nvml_power_is_averaged(pynvml, handle),
        "torch": torch.__version__,
        "settings": vars(args),
    }
    try:
        report["counter"] = counter_update_ms(pynvml, handle)
    except pynvml.NVMLError as exc:
        report["counter"] = {"error": str(exc)}
    counter, why = energy.open_nvml_meter(nvml=pynvml)
    if counter is None or counter.source != "nvml-energy-counter":
        report["error"] = f"no NVML energy counter: {why or counter.source}"
        print(json.dumps(report, indent=1))
        return 1
    rail = counter.rails[0]
    window = energy.NVML_POWER_WINDOW_S if report["power_is_1s_average"] else 0.0
    sampled = energy.SampledMeter(
        "nvml-power-integrated",
        lambda: {rail: float(pynvml.nvmlDeviceGetPowerUsage(handle))},
        [rail],
        min_window_s=window,
    )
    meter = BothMeters(counter, sampled)
    report["idle_w"] = energy.measure_idle_w(counter, 5.0)
    shape = tuple(int(d) for d in args.shape.split("x"))
    profile = dataclasses.replace(
        load_profile("h100"),
        backend="torch",
        timing=TimingSettings(
            warmup_s=3.0,
            min_iterations=50,
            min_duration_s=args.seconds,
            max_duration_s=2 * args.seconds,
            target_ci=0.005,
            block_s=args.block_s,
        ),
    )
    with tempfile.TemporaryDirectory() as work:
        paths = {}
        for label, module in nets(args.width).items():
            paths[label] = Path(work) / f"{label}.onnx"
            export_module(module, shape, paths[label], batch=args.batch)
        runners = {k: TorchRunner(p, profile, "fp32", args.batch) for k, p in paths.items()}
        with open_runners(runners):
            began = time.perf_counter()
            measured = timing.measure_interleaved(runners, profile.timing, energy=meter)
            report["timed_s"] = time.perf_counter() - began
            spent = {}
            for label, m in measured.items():
                spent[label] = energy.run_energy(
                    counter, m.block_energy, m.block_inferences, report["idle_w"]
                )
            integrated = {label: [] for label in measured}  # blocks ran in round order
            names = list(measured)
            for index, block in enumerate(meter.integrated):
                round_index, slot = divmod(index, len(names))
                integrated[names[(slot + round_index) % len(names)]].append(block)
            runs = {}
            for label, m in measured.items():
                stats = m.stats()
                counted = [b.total_mj for b in m.block_energy]
                summed = [b.total_mj for b in integrated[label]]
                runs[label] = {
                    "latency_ms": {
                        "median": stats.median,
                        "ci": [stats.median_ci_low, stats.median_ci_high],
                    },
                    "blocks": len(m.block_ends),
                    "inferences_per_block": m.block_inferences,
                    "energy": spent[label].to_dict(),
                    "integrated_over_counter": [s / c for s, c in zip(summed, counted) if c > 0],
                    "memory": {
                        k: dataclasses.asdict(v)
                        for k, v in {
                            **memory.onnx_memory(paths[label]),
                            "cuda_max_allocated": memory.torch_cuda_peak(
                                runners[label].measure_once
                            ),
                        }.items()
                    },
                    "warnings": m.warnings(),
                }
                ratios = runs[label]["integrated_over_counter"]
                runs[label]["integrated_over_counter_median"] = (
                    float(np.median(ratios)) if ratios else None
                )
            report["runs"] = runs
            speedup = timing.measurement_ratio_ci(measured["base"], measured["lean"])
            ratio = energy.energy_ratio(spent["lean"], spent["base"])
            report["lean_vs_base"] = {
                "speedup": list(speedup),
                "energy_ratio": [ratio.ratio, ratio.low, ratio.high] if ratio else None,
                "energy_ratio_text": ratio.format() if ratio else "fewer than 5 rounds",
            }
    meter.sampled.close()
    counter.close()
    text = json.dumps(report, indent=1)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_energy_memory.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
