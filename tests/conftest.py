"""Shared fixtures: a fast device profile and tiny real models exported with torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
