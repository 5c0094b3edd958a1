"""Shared fixtures: a fast device profile and tiny real models exported with torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

# zoo models whose export, fold and verification take 5-35 s a case on a loaded 2-core host: their
# cases run under the slow marker (make test-all, CI), the small models' by default (make test)
HEAVY_MODELS = frozenset({"resnet34", "resnet50", "vgg16", "vgg19", "mobilenetv2"})


def zoo_case(model: str, *rest, id: str = None):
    """A parametrize case of a zoo model, marked slow when the model is a heavy one."""
    marks = [pytest.mark.slow] if model in HEAVY_MODELS else []
    return pytest.param(model, *rest, id=id, marks=marks)


FAST_TIMING = {
    "warmup_s": 0.05,
    "min_iterations": 10,
    "min_duration_s": 0.1,
    "max_duration_s": 0.5,
    "target_ci": 0.05,
    "block_iterations": 5,
    "block_s": 0.02,
}


@pytest.fixture
def fast_profile(tmp_path: Path) -> Path:
    """A host-like profile whose timing settings keep tests quick (tests are not about numbers)."""
    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    data["timing"] = dict(FAST_TIMING)
    data["onnxruntime"]["intra_op_threads"] = 1
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
