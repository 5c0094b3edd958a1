#!/usr/bin/env bash
# Minimum-versions job: a fresh venv with the LOWEST versions pyproject.toml declares for numpy, scipy, onnx,
# onnxruntime and onnx-graphsurgeon (the floor that applies to this Python, environment markers evaluated), the
# CI's torch pin, then the tests of the code those libraries run under (ONNX loading, fold, verification, FLOPs,
# the onnx wheel's corpus, timing, results, the CLI), without the slow marker. It shows that the declared floors
# are true. Usage: .ci/min_versions.sh [extra pytest arguments]
# PYTHON, MIN_VENV, TORCH_SPEC override the defaults; MIN_TESTS=tests runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MIN_VENV:-.venv-min}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MIN_TESTS=${MIN_TESTS:-tests/test_fold.py tests/test_fold_edges.py tests/test_fold_inputs.py \
tests/test_graph_stats.py tests/test_onnx_corpus.py tests/test_verify_mutations.py tests/test_timing.py \
tests/test_results.py tests/test_compare.py tests/test_runner_lifecycle.py tests/test_cli.py tests/test_external_data.py}
started=$(date +%s)
"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# name==floor for each package checked, read from pyproject.toml with pip's own requirement parser
floors=$("$VENV/bin/python" - <<'PY'
import re
from pip._vendor.packaging.requirements import Requirement

CHECKED = {"numpy", "scipy", "onnx", "onnxruntime", "onnx-graphsurgeon"}
text = open("pyproject.toml").read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
pins = {}
for line in re.findall(r'"([^"]+)"', block):
    req = Requirement(line)
    if req.name in CHECKED and (req.marker is None or req.marker.evaluate()):
        floor = next(s.version for s in req.specifier if s.operator == ">=")
        pins[req.name] = f"{req.name}=={floor}"
missing = CHECKED - set(pins)
if missing:
    raise SystemExit(f"pyproject.toml declares no floor for {sorted(missing)}")
print(" ".join(sorted(pins.values())))
PY
)
echo "minimum versions: $floors ($TORCH_SPEC)"
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
# shellcheck disable=SC2086  # one argument per pin
"$VENV/bin/python" -m pip install -q -e ".[dev]" $floors
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "^(numpy|scipy|onnx|onnxruntime|onnx.graphsurgeon|torch) "
installed=$(date +%s)
# shellcheck disable=SC2086  # one argument per test file
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider $MIN_TESTS "$@"
echo "minimum-versions job: set-up $((installed - started)) s, tests $(($(date +%s) - installed)) s"
