#!/bin/sh
# GPU check of the one measurement path (issue 22), for a machine with TensorRT and a GPU:
# the example suite on the h100 profile (TensorRT runner), `time` of a dynamic-H/W graph with
# --input-shape/--shapes, `time --trtexec`, and the pytest plugin's paired speed-ups.
# Run from the repository root: sh examples/suite/device_check.sh [device] ; outputs in $OUT.
set -eu
DEVICE=${1:-h100}
OUT=${OUT:-results/device-check}
mkdir -p "$OUT"
harness export examples/suite/models/rn18c.py:pruned --input-shape 3x32x32 \
    -o examples/suite/exported/rn18c-pruned.onnx
harness bench --suite examples/suite/suite.yaml --device "$DEVICE" --out "$OUT/suite"
harness report "$OUT/suite/results.json" -o "$OUT/suite/report"
python - <<'PY'
import sys
sys.path.insert(0, ".")
from pathlib import Path
from tests.conftest import conv_net
conv_net(Path("results/device-check/dynamic.onnx"), 4, 32, dynamic=True)
conv_net(Path("results/device-check/small.onnx"), 1, 8)
PY
harness time "$OUT/small.onnx" "$OUT/dynamic.onnx" --shapes x:1x3x32x32 --device "$DEVICE" \
    --json "$OUT/time.json"
harness time "$OUT/dynamic.onnx" --input-shape 3x320x320 --device "$DEVICE" --trtexec \
    --json "$OUT/time-trtexec.json"
harness report "$OUT/time.json" -o "$OUT/time-report"
harness compare "$OUT/time.json" "$OUT/time.json"
cat > "$OUT/test_paired.py" <<'PY'
def test_paired(harness_latency):
    r = harness_latency({"big": "results/device-check/dynamic.onnx",
                         "small": "results/device-check/small.onnx"}, input_shape="3x32x32")
    assert r.speedup("small").low > 1.0
PY
python -m pytest "$OUT/test_paired.py" -q --harness-device "$DEVICE" -p no:cacheprovider
