"""pytest plugin: time models on a device profile inside a user's test suite.

Adds ``--harness-device`` (a profile name or YAML path; default ``host``), ``--harness-threshold``
(default 5%) and the ``harness_latency`` fixture::

    def test_resnet20_latency(harness_latency):
        stats = harness_latency("resnet20", variant="dc-1x1")  # zoo name and variant, or .onnx
        assert stats.p99 < 5.0

    def test_my_model(harness_latency):
        stats = harness_latency("mypkg.models:build", input_shape="3x32x32")  # give its shape

    def test_pruned_is_faster(harness_latency):
        r = harness_latency({"base": "models/base.onnx", "pruned": "models/pruned.onnx"})
        assert r.speedup("pruned").low > 1.0  # the paired 95% interval lies above 1
        harness_latency.gate(r, "pruned")  # fails only when significantly slower than 5%

A single model is timed through pytest-benchmark's ``benchmark.pedantic`` (the first such call of
a test: pytest-benchmark keeps one timing per test; later calls are timed with the same loop and
recorded in ``extra_info["calls"]``), so its options work (``--benchmark-autosave``,
``--benchmark-compare``). Every round is one device-synchronised inference (the backend's
``measure_once``). Rounds: the profile's ``timing.min_iterations``, raised to the 100 that a
nearest-rank p99 needs to be anything but the maximum; an explicit ``rounds=`` below that is
honoured and ``extra_info`` says which percentiles are then just the maximum. ``extra_info`` gets
what pytest-benchmark lacks: nearest-rank p90/p95/p99 of the device latencies, the median's 95%
CI, CoV, the device profile, the backend's settings and a summary of the machine.

A mapping of names to models is timed interleaved under the harness protocol
(``measure.measure_graphs``, the first the reference) and returns its ``measure.Timed``: paired
speed-ups with their 95% intervals (``r.speedup(name)``) and each graph's ``r.stats(name)``.
``harness_latency.gate`` judges a speed-up as ``harness compare`` judges a change: slower only when
the whole interval lies beyond the threshold (pytest-benchmark's ``--benchmark-compare-fail``
compares bare medians, and flags noise as a regression).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pytest

REPORTED_PERCENTILES = (90, 95, 99)
THRESHOLD = "--harness-threshold"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("harness", "edge-device latency with harness")
    group.addoption(
        "--harness-device",
        default="host",
        help="device profile (name in device_profiles/ or a YAML path) for harness_latency",
    )
    group.addoption(
        THRESHOLD,
        default="5%",
        help="harness_latency.gate fails a graph significantly slower than this (default 5%%)",
    )


@pytest.fixture(scope="session")
def harness_profile(request):
    """The device profile chosen with ``--harness-device``."""
    from harness.profiles import load_profile

    return load_profile(request.config.getoption("--harness-device"))


def rounds_for_percentiles(percentiles: Sequence[float] = REPORTED_PERCENTILES) -> int:
    """The fewest samples for which every nearest-rank percentile given lies below the maximum."""
    return max(int(-(-100 // (100 - p))) for p in percentiles)


def percentiles_at_maximum(
    n: int, percentiles: Sequence[float] = REPORTED_PERCENTILES
) -> List[str]:
    """Names (``p99``) of the nearest-rank percentiles that are the maximum of ``n`` samples."""
    return [f"p{p:g}" for p in percentiles if int((100 - p) * n / 100 + 1e-9) == 0]


def _bound(path: Path, input_shape: Optional[str], workdir: Path) -> Path:
    """An ONNX file, or a copy with its dynamic dims bound to ``input_shape``."""
    from harness.onnx_io import InputShapes, bind_shapes, load_model, save_model

    if not input_shape:
        return path
    model, bound = bind_shapes(load_model(path, infer_shapes=False), InputShapes.parse(input_shape))
    return save_model(model, workdir / path.name) if bound else path


def _onnx_path(
    model: Union[str, Path], variant: str, input_shape: Optional[str], workdir: Path
) -> Path:
    """The ONNX file to time: the file itself, or the zoo variant or factory exported."""
    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source

    source = resolve_source(str(model), input_shape)
    if source.kind == "zoo":
        from harness.zoo import variant_spec

        variant = source.variant if variant == "baseline" else variant  # "zoo:variant"
        variant_spec(source.name, variant)  # an unknown variant names the known ones
    elif variant != "baseline":
        raise HarnessError(f"variant={variant!r} applies to zoo models only, not {model}")
    if source.kind == "onnx":
        return _bound(Path(source.reference), input_shape, workdir)
    path = workdir / f"{source.name.replace(':', '_')}-{variant}.onnx"
    materialize(dataclasses.replace(source, variant=variant), path)
    return path


def gate(timed: Any, subject: str, reference: Optional[str] = None, threshold: str = "5%") -> None:
    """Fail the test when ``subject`` is significantly slower than ``reference`` (default: the
    first graph) by more than ``threshold``, judged as ``harness compare`` judges: the change in
    latency (1 / speed-up) with its 95% interval, slower only when all of it exceeds the
    threshold."""
    from harness.compare import SLOWER, parse_threshold, threshold_verdict

    ci = timed.speedup(subject, reference)
    limit = parse_threshold(threshold)
    change_low, change_high = 1.0 / ci.high, 1.0 / ci.low
    if threshold_verdict(change_low, change_high, limit)[0] == SLOWER:
        pytest.fail(
            f"{subject} is slower than {reference or timed.reference}: latency "
            f"{1.0 / ci.ratio - 1:+.1%} [{change_low - 1:+.1%}, {change_high - 1:+.1%}], "
            f"threshold {limit:.1%}",
            pytrace=False,
        )


def _source(model: Any) -> Tuple[Union[str, Path], str]:
    """``(model, variant)`` of a mapping's value: a model, or a (zoo model, variant) pair."""
    if isinstance(model, tuple):
        return model[0], model[1]
    return model, "baseline"


class HarnessLatency:
    """The fixture's value: call it with one model (its Stats, through pytest-benchmark) or a
    mapping of models (timed interleaved; a ``measure.Timed``); ``gate`` judges a speed-up."""

    def __init__(self, request, profile) -> None:
        self.request = request
        self.profile = profile
        self.benchmarked = False
        self.calls: List[Dict[str, Any]] = []

    def __call__(
        self,
        model: Any,
        variant: str = "baseline",
        input_shape: Union[str, Sequence[int], None] = None,
        rounds: Optional[int] = None,
    ):
        shape = (
            input_shape
            if input_shape is None or isinstance(input_shape, str)
            else "x".join(str(d) for d in input_shape)
        )
        if isinstance(model, Mapping):
            return self._paired(model, shape)
        return self._single(model, variant, shape, rounds)

    def gate(
        self,
        timed: Any,
        subject: str,
        reference: Optional[str] = None,
        threshold: Optional[str] = None,
    ) -> None:
        """``gate`` at ``threshold``, by default ``--harness-threshold``."""
        gate(timed, subject, reference, threshold or self.request.config.getoption(THRESHOLD))

    def _paired(self, models: Mapping[str, Any], shape: Optional[str]):
        from harness.measure import measure_graphs

        if len(models) < 2:
            raise ValueError("give two or more models to compare (the first is the reference)")
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for i, (name, value) in enumerate(models.items()):
                model, variant = _source(value)
                folder = Path(tmp) / str(i)
                folder.mkdir()
                paths[name] = _onnx_path(model, variant, shape, folder)
            timed = measure_graphs(paths, self.profile)
        self.calls.append(
            {
                "models": {name: str(_source(v)) for name, v in models.items()},
                "speedups": {name: timed.speedup(name).format() for name in list(models)[1:]},
                "medians_ms": {name: run.stats.median for name, run in timed.runs.items()},
            }
        )
        return timed

    def _single(self, model, variant: str, shape: Optional[str], rounds: Optional[int]):
        from harness import envinfo, timing
        from harness.backends import LATENCY
        from harness.measure import open_runner

        profile = self.profile
        if rounds is None:
            rounds = max(profile.timing.min_iterations, rounds_for_percentiles())
        if rounds < 1:
            raise ValueError(f"rounds must be positive, got {rounds}")
        benchmark = None if self.benchmarked else self.request.getfixturevalue("benchmark")
        self.benchmarked = True
        with tempfile.TemporaryDirectory() as tmp:
            path = _onnx_path(model, variant, shape, Path(tmp))
            with open_runner(path, profile) as runner:
                started = time.perf_counter()
                while time.perf_counter() - started < profile.timing.warmup_s:
                    runner.measure_once()
                samples: List[float] = []
                if benchmark is not None:
                    benchmark.pedantic(
                        lambda: samples.append(runner.measure_once()[LATENCY]),
                        rounds=rounds,
                        iterations=1,
                        warmup_rounds=1,
                    )
                    samples = samples[1:]  # the first call is pedantic's warm-up round
                else:
                    samples = [runner.measure_once()[LATENCY] for _ in range(rounds)]
                backend, batch = runner.describe(), runner.batch
        stats = timing.summarize(samples, batch)
        at_maximum = percentiles_at_maximum(stats.n)
        info = {
            "model": str(model),
            "variant": variant,
            "batch": batch,
            "device_latency_ms": {
                "median": stats.median,
                "median_ci": [stats.median_ci_low, stats.median_ci_high],
                "p90": stats.p90,
                "p95": stats.p95,
                "p99": stats.p99,
                "cov": stats.cov,
                "n": stats.n,
            },
            "percentiles_at_maximum": at_maximum,
        }
        if benchmark is None:
            self.calls.append(info)
            return stats
        env = envinfo.capture_environment(profile)
        benchmark.extra_info.update(
            device=profile.name,
            backend=backend,
            machine={
                "cpu": env["cpu"].get("model"),
                "cores": env["cpu"].get("available_cores"),
                "git_sha": env.get("git_sha"),
            },
            calls=self.calls,
            **info,
        )
        if at_maximum:
            benchmark.extra_info["percentile_note"] = (
                f"with {stats.n} rounds {', '.join(at_maximum)} equal the maximum sample; "
                f"{rounds_for_percentiles()} rounds resolve every reported percentile"
            )
        return stats


@pytest.fixture
def harness_latency(request, harness_profile) -> HarnessLatency:
    """Time models on the device profile: one model (zoo name, ``zoo:variant``, factory or
    ``.onnx``) returns its Stats; a mapping of names to models returns their paired speed-ups.

    Call it as ``harness_latency(model, variant="baseline", input_shape=None, rounds=None)`` or
    ``harness_latency({"base": a, "pruned": b}, input_shape=None)``; ``input_shape``
    (``"3x32x32"`` or ``(3, 32, 32)``, without batch) is needed for ``package.module:factory``
    models.
    """
    return HarnessLatency(request, harness_profile)
