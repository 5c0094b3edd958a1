"""The backend interface, in the spirit of Polygraphy's runners.

A ``Runner`` is cheap to construct (it only stores what it was given). ``activate()`` does the heavy
work (build or load, allocate, warm caches) and ``deactivate()`` releases it; ``with runner:`` does
both. While active it can ``infer`` (outputs for given inputs, for checks), ``measure_once`` (one
timed inference on inputs already resident where the device needs them) and ``describe`` (what was
in force, for the results file).

A backend implements ``_activate_impl``, ``_deactivate_impl``, ``input_specs``, ``_infer_impl`` and
``_measure_impl``; one with a per-layer profiler (``layer_profiler``) also ``_layer_profile_impl``,
for runners made with ``profiling=True``: the backend's profiler on, in a session of their own.
The batch is resolved once, by ``resolve_batch``, before any backend sees the model. Runs on the
device: Python 3.8, no torch.
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from harness.errors import HarnessError
from harness.layer_profile import LayerProfile
from harness.onnx_io import check_allocation
from harness.profiles import Profile

LATENCY = "latency_ms"


class Runner(abc.ABC):
    """One model on one backend: construct cheaply, activate to load, measure, deactivate."""

    backend_name = "base"
    layer_profiler = False  # True: ``profiling=True`` runners and ``layer_profile`` exist
    # True: the profiler's own work lies inside the layer times it reports (a host-side profiler);
    # measure then takes its cost, measured beside the graphs, off each layer
    profiler_in_spans = False

    def __init__(
        self,
        onnx_path: Path,
        profile: Profile,
        precision: str = "fp32",
        batch: int = 1,
        profiling: bool = False,
    ) -> None:
        if profiling and not self.layer_profiler:
            raise HarnessError(f"the {self.backend_name} backend has no per-layer profiler")
        self.onnx_path = Path(onnx_path)
        self.profile = profile
        self.precision = precision
        self.batch = batch
        self.profiling = profiling  # the backend's profiler on: for layer_profile, not timing
        self.is_active = False

    # --- what a backend provides ------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None:
        """Load the model and allocate what timing needs; on failure HarnessError says why."""

    def _deactivate_impl(self) -> None:
        """Release what ``_activate_impl`` acquired (also called after a partial activation)."""

    @abc.abstractmethod
    def input_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype]]:
        """Input name -> (shape, dtype); valid while active."""

    @abc.abstractmethod
    def _infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once on ``feeds`` and return the outputs."""

    @abc.abstractmethod
    def _measure_impl(self) -> Dict[str, float]:
        """Run once on the prepared inputs; return timings in ms.

        At least ``latency_ms`` (device-synchronised).
        """

    def describe(self) -> Dict[str, Any]:
        """Backend name, version and the settings that affect timing (recorded in results)."""
        return {"backend": self.backend_name, "precision": self.precision, "batch": self.batch}

    def _layer_profile_impl(self) -> LayerProfile:
        raise HarnessError(f"the {self.backend_name} backend has no per-layer profiler")

    # --- the lifecycle ----------------------------------------------------------------------------
    def activate(self) -> Runner:
        """Load the model; on failure what was acquired is released before the error propagates."""
        if self.is_active:
            raise HarnessError(f"{self.backend_name} runner for {self.onnx_path} is already active")
        try:
            self._activate_impl()
        except BaseException:
            self._deactivate_impl()
            raise
        self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the backend's resources; safe to call on an inactive runner."""
        if self.is_active:
            self.is_active = False
            self._deactivate_impl()

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: Optional[BaseException]) -> None:
        self.deactivate()

    def _require_active(self) -> None:
        if not self.is_active:
            raise HarnessError(
                f"{self.backend_name} runner for {self.onnx_path} is not active: use "
                f"`with runner:` or runner.activate()"
            )

    # --- shared behaviour -------------------------------------------------------------------------
    def random_inputs(self, seed: int = 0) -> Dict[str, np.ndarray]:
        """Seeded random inputs matching the model's input specs (refused, before allocating,
        when they do not fit the memory available)."""
        check_allocation(self.input_specs(), f"the inputs of {self.onnx_path}")
        rng = np.random.default_rng(seed)
        return {
            name: rng.standard_normal(shape).astype(dtype)
            for name, (shape, dtype) in self.input_specs().items()
        }

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs, then run once."""
        self._require_active()
        specs = self.input_specs()
        missing: List[str] = sorted(set(specs) - set(feeds))
        if missing:
            raise HarnessError(f"missing model inputs: {', '.join(missing)}")
        for name, (shape, _dtype) in specs.items():
            if tuple(feeds[name].shape) != tuple(shape):
                raise HarnessError(
                    f"input {name!r} has shape {tuple(feeds[name].shape)}, expected {tuple(shape)}"
                )
        return self._infer_impl(feeds)

    def measure_once(self) -> Dict[str, float]:
        """One timed inference; the protocol in ``harness.timing`` calls this in a loop."""
        self._require_active()
        return self._measure_impl()

    def start_block(self) -> None:
        """Before a block of runs (``harness.timing``): a profiler that must not record other
        runners' work starts here."""

    def end_block(self) -> None:
        """After a block of runs: such a profiler stops here."""

    def layer_profile(self) -> LayerProfile:
        """The per-layer profile of the runs a ``profiling=True`` runner has made so far (its
        profiler stops recording here), tied to the graph's ONNX nodes."""
        self._require_active()
        if not self.profiling:
            raise HarnessError(f"{self.onnx_path}: this runner was not made with profiling=True")
        return self._layer_profile_impl()


@contextlib.contextmanager
def open_runners(runners: Mapping[str, Runner]) -> Iterator[Mapping[str, Runner]]:
    """Activate every runner; all that were activated are deactivated on exit or on any failure."""
    with contextlib.ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        yield runners


def resolve_batch(onnx_path: Path, batch: int) -> int:
    """The batch a model will run at: ``batch`` for a dynamic batch dim; a static one must match it.

    Resolved once, before any backend: a static-batch model timed "at batch 8" would otherwise
    report eight times its real throughput.
    """
    from harness.onnx_io import data_input_shapes

    if batch < 1:
        raise HarnessError(f"batch must be 1 or more, not {batch}")
    leading = {shape[0] for shape in data_input_shapes(onnx_path).values() if shape}
    static = {d for d in leading if isinstance(d, int) and d > 0}
    if not static:
        return batch
    if static != {batch}:
        fixed = ", ".join(str(d) for d in sorted(static))
        raise HarnessError(
            f"{onnx_path} has a fixed batch of {fixed}, not {batch}: time it with --batch "
            f"{fixed}, or export it at batch {batch} or with a dynamic batch dimension"
        )
    return batch
