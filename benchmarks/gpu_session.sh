#!/usr/bin/env bash
# One GPU session's checks, for a CUDA machine WITHOUT TensorRT (the lent H200: CUDA torch, onnx,
# onnxruntime, nvidia-ml-py; no registry). What it measures there, on harness's torch backend:
#   1. NVML energy per inference with intervals and torch's CUDA peak memory (gpu_energy_memory.py)
#   2. the example suite of your own models (examples/suite) paired against its baselines
#   3. `time` of a dynamic-H/W graph with --shapes, then report / compare / history add of its JSON
#   4. `explain` with the torch profiler on CUDA (per-layer, mapped to the original graph)
#   5. `lut --layout layermerge` rows for ResNet-34 at the papers' batch 128
#   6. the pytest fixture's paired speed-up
# Usage (repository root; onnx-graphsurgeon carried as a wheel in .whl/):
#   bash benchmarks/gpu_session.sh            # results under $OUT (or results/gpu-session)
# GPU_SESSION_PROFILE=path.yaml replaces the generated profile (a dry run on the host: host.yaml).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu-session}
W=$(mktemp -d /tmp/gpu-session.XXXX)
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
H="python3 -m harness.cli"
P=${GPU_SESSION_PROFILE:-$W/h200.yaml}
# peaks: H100 SXM's compute rows of shared/FACTS.md (the H200 has the same GH100 compute);
# 4.8 TB/s is NVIDIA's H200 datasheet figure (HBM3e), not in FACTS.md
cat > "$W/h200.yaml" <<'EOF'
description: NVIDIA H200 via PyTorch CUDA (the session's machine has no TensorRT)
kind: gpu
backend: torch
precisions: [fp32]
batch_sizes: [1]
timing: {warmup_s: 1, min_iterations: 100, min_duration_s: 3, max_duration_s: 12, target_ci: 0.01}
expect: {gpu_name: "H200", compute_capability: "9.0"}
peaks: {fp32_tflops: 67.0, fp16_tflops: 989.0, dram_gbps: 4800, layer_overhead_us: 3}
EOF
sed 's/min_duration_s: 3, max_duration_s: 12/min_duration_s: 0.3, max_duration_s: 1.5/' \
  "$P" > "$W/lut.yaml"
step() {  # step NAME SECONDS COMMAND...: a failed or timed-out step is reported, the rest run on
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S))"
  if timeout "$limit" "$@" > "$W/$name.log" 2>&1; then echo "ok: $name"; else
    echo "FAILED ($?): $name"; fi
  tail -n 25 "$W/$name.log"
  tar -czf "$OUT/session.tar.gz" -C "$W" . 2>/dev/null  # kept up to date: a cut-off run returns it
}
{ nvidia-smi --query-gpu=name,driver_version,power.draw,clocks.sm --format=csv
  python3 -c "import torch, onnx, onnxruntime as o; print(torch.__version__, onnx.__version__, \
o.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
} > "$W/machine.txt" 2>&1
cat "$W/machine.txt"
step energy 150 python3 benchmarks/gpu_energy_memory.py --seconds 10
cp "$W/energy.log" "$OUT/energy.log" 2>/dev/null
step suite 150 bash -c "$H export examples/suite/models/rn18c.py:pruned --input-shape 3x32x32 \
  -o examples/suite/exported/rn18c-pruned.onnx && $H bench --suite examples/suite/suite.yaml \
  --device $P --out $W/suite"
cp "$W/suite/report.md" "$OUT/suite-report.md" 2>/dev/null
step time 80 bash -c "python3 -c \"
import sys; sys.path.insert(0, '.')
from pathlib import Path
from tests.conftest import conv_net
conv_net(Path('$W/dynamic.onnx'), 4, 32, dynamic=True)
conv_net(Path('$W/small.onnx'), 1, 8, size=64)
\" && $H time $W/dynamic.onnx $W/small.onnx --shapes x:1x3x64x64 --device $P --json $W/time.json \
  && $H report $W/time.json -o $W/time-report --no-plots && $H compare $W/time.json $W/time.json \
  && $H history add $W/time.json --history $W/history.sqlite --commit 0000000"
cp "$W/time.json" "$OUT/time.json" 2>/dev/null
step explain 60 $H explain resnet56 --variant dc-1x1 --device "$P" --json "$W/explain.json"
step lut 90 $H lut resnet34 --device "$W/lut.yaml" --layout layermerge -o "$W/rn34-lm.csv"
cat > "$W/test_paired.py" <<EOF
def test_paired(harness_latency):
    r = harness_latency({"big": "$W/dynamic.onnx", "small": "$W/small.onnx"}, input_shape="3x64x64")
    assert r.speedup("small").low > 1.0
EOF
step pytest 60 python3 -m pytest "$W/test_paired.py" -q -p harness.pytest_plugin --harness-device "$P" -p no:cacheprovider
echo "done: $OUT/session.tar.gz"
