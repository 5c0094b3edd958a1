"""The backend interface: ``Runner(onnx_path, profile, precision, batch)`` as a context manager.

A backend implements ``_infer_impl`` (outputs for given inputs, for checks) and ``_measure_impl`` (one timed
inference on inputs already resident where the device needs them). Runs on the device: Python 3.8, no torch.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from harness.errors import HarnessError
from harness.profiles import Profile

LATENCY = "latency_ms"


class Runner(abc.ABC):
    """One loaded model on one backend, ready to run and to time."""

    backend_name = "base"

    def __init__(self, onnx_path: Path, profile: Profile, precision: str = "fp32", batch: int = 1) -> None:
        self.onnx_path = Path(onnx_path)
        self.profile = profile
        self.precision = precision
        self.batch = batch

    # --- what a backend provides -------------------------------------------------------------------------
    @abc.abstractmethod
    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        """Input name -> (shape, dtype)."""

    @abc.abstractmethod
    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once on ``feeds`` and return the outputs."""

    @abc.abstractmethod
    def _measure_impl(self) -> Dict[str, float]:
        """Run once on the prepared inputs; return timings in ms, at least ``latency_ms`` (device-synchronised)."""

    def describe(self) -> Dict[str, Any]:
        """Backend name, version and the settings that affect timing (recorded in results)."""
        return {"backend": self.backend_name, "precision": self.precision, "batch": self.batch}

    def close(self) -> None:
        """Release the backend's resources."""

    # --- shared behaviour ----------------------------------------------------------------------------------
    def random_inputs(self, seed: int = 0) -> Dict[str, np.ndarray]:
        """Seeded random inputs matching the model's input specs."""
        rng = np.random.default_rng(seed)
        return {name: rng.standard_normal(shape).astype(dtype) for name, (shape, dtype) in self.input_specs().items()}

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs, then run once."""
        specs = self.input_specs()
        missing: List[str] = sorted(set(specs) - set(feeds))
        if missing:
            raise HarnessError(f"missing model inputs: {', '.join(missing)}")
        for name, (shape, _dtype) in specs.items():
            if tuple(feeds[name].shape) != tuple(shape):
                raise HarnessError(f"input {name!r} has shape {tuple(feeds[name].shape)}, expected {tuple(shape)}")
        return self._infer_impl(feeds)

    def measure_once(self) -> Dict[str, float]:
        """One timed inference; the protocol in ``harness.timing`` calls this in a loop."""
        return self._measure_impl()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Optional[BaseException]) -> None:
        self.close()
