"""The onnx wheel's model corpus (149 models nobody in this project wrote): every model ONNX Runtime
loads folds (or passes through unchanged) without a traceback and keeps its reference outputs under
ONNX Runtime; the nine model-zoo graphs of ``light/`` bench."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from harness.cli import main
from harness.errors import HarnessError
from harness.fold import fold_model, verify_fold
from harness.fold.verify import NOT_VERIFIED, _session, relative_error
from harness.onnx_io import load_model, ort_problem
from tests.onnx_corpus import corpus

MODELS = corpus()
RTOL = 1e-3  # onnx's backend tests compare with rtol 1e-3


def _run(model: onnx.ModelProto, feeds: dict):
    session = _session(model)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, feeds.values())))


def test_the_corpus_is_there():
    groups = {m.group for m in MODELS}
    assert groups == {"light", "pytorch-converted", "pytorch-operator", "simple"}
    assert len([m for m in MODELS if m.group == "light"]) == 9 and len(MODELS) >= 140


# the onnx wheel's largest graphs (5-30 s each on a loaded 2-core host) run under the slow marker
HEAVY = {"light_vgg19", "light_resnet50", "light_bvlc_alexnet", "light_inception_v2"}
HEAVY |= {"light_densenet121", "light_shufflenet"}


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(m, id=m.id, marks=[pytest.mark.slow] if m.id.split("/")[-1] in HEAVY else [])
        for m in MODELS
    ],
)
def test_every_model_onnx_runtime_loads_folds_and_keeps_its_outputs(entry):
    try:
        model = load_model(entry.path)
    except HarnessError as exc:  # refused only where ONNX Runtime refuses too
        assert "ONNX Runtime refuses it too" in str(exc)
        pytest.skip(f"ONNX Runtime refuses it: {exc}")
    problem = ort_problem(model)
    if problem:
        pytest.skip(f"ONNX Runtime refuses it: {problem}")
    result = fold_model(model, merge="all")  # never raises on a model ONNX Runtime loads
    # nothing to fold: the very same model back
    assert result.report.changed or result.model is model
    if (
        entry.group != "light"
    ):  # the large model-zoo graphs are checked on their reference input below
        verification = verify_fold(model, result.model)
        assert verification.verified or verification.status == NOT_VERIFIED
    feeds = entry.feeds(model)
    references = entry.references()
    try:
        original = _run(model, feeds)
    except Exception as exc:  # noqa: BLE001 - a stored input ONNX Runtime itself cannot run
        pytest.skip(f"ONNX Runtime cannot run the original on its stored input: {exc}")
    folded = _run(result.model, feeds)
    assert len(folded) == len(original)
    # against the stored reference where ONNX Runtime reproduces it,
    # else against ONNX Runtime's own result
    expected = (
        references
        if references and all(relative_error(r, o) <= RTOL for r, o in zip(references, original))
        else original
    )
    for want, got in zip(expected, folded):
        assert relative_error(want, got) <= RTOL


@pytest.mark.slow
def test_the_nine_model_zoo_graphs_bench(fast_profile, tmp_path):
    # VGG-19 is 40 GFLOPs: few iterations, short blocks
    profile = yaml.safe_load(fast_profile.read_text())
    profile["timing"].update(
        min_iterations=3,
        min_duration_s=0.0,
        max_duration_s=0.3,
        warmup_s=0.0,
        block_iterations=1,
        block_s=0.001,
    )
    fast_profile.write_text(yaml.safe_dump(profile))
    light = [m for m in MODELS if m.group == "light"]
    paths = ",".join(str(m.path) for m in light)
    out = tmp_path / "bench"
    # verification is the corpus test's job above; here: export (copy), fold and time each one
    code = main(
        [
            "bench",
            "--device",
            str(fast_profile),
            "--models",
            paths,
            "--merge",
            "all",
            "--no-verify",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    timed = {run["model"] for run in results["runs"]}
    assert timed == {m.name for m in light}
    for run in results["runs"]:
        samples = np.asarray(run["series_ms"]["latency_ms"], dtype=float)
        assert samples.size >= 3 and np.all(samples > 0)


def test_the_corpus_helper_reads_stored_inputs():
    entry = next(m for m in MODELS if m.id == "pytorch-converted/test_Conv2d")
    model = onnx.load(str(entry.path))
    (feed,) = entry.feeds(model).values()
    (reference,) = entry.references()
    assert feed.ndim == 4 and reference.ndim == 4 and Path(entry.path).is_file()
