"""pytest plugin: time models on a device profile inside a user's test suite, via pytest-benchmark.

Adds ``--harness-device`` (a profile name or YAML path; default ``host``) and the
``harness_latency`` fixture::

    def test_resnet20_latency(harness_latency):
        stats = harness_latency("resnet20", variant="dc-1x1")  # zoo name and variant, or .onnx
        assert stats.p99 < 5.0

    def test_my_model(harness_latency):
        stats = harness_latency("mypkg.models:build", input_shape="3x32x32")  # give its shape

Each call warms up for the profile's ``timing.warmup_s``, then runs its rounds through
``benchmark.pedantic``, so pytest-benchmark's own options work (``--benchmark-autosave``,
``--benchmark-compare``, ``--benchmark-compare-fail=median:5%``). Every round is one
device-synchronised inference (the backend's ``measure_once``). Rounds: the profile's
``timing.min_iterations``, raised to the 100 that a nearest-rank p99 needs to be anything but the
maximum; an explicit ``rounds=`` below that is honoured and ``extra_info`` says which percentiles
are then just the maximum. ``benchmark.extra_info`` gets what pytest-benchmark lacks: nearest-rank
p90/p95/p99 of the device latencies, the median's 95% CI, CoV, the device profile, the backend's
settings and a summary of the machine.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import pytest

REPORTED_PERCENTILES = (90, 95, 99)


def pytest_addoption(parser) -> None:
    group = parser.getgroup("harness", "edge-device latency with harness")
    group.addoption(
        "--harness-device",
        default="host",
        help="device profile (name in device_profiles/ or a YAML path) for harness_latency",
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


def _onnx_path(
    model: Union[str, Path], variant: str, input_shape: Optional[str], workdir: Path
) -> Path:
    """The ONNX file to time: the file itself, or the zoo variant or factory exported."""
    from harness.errors import HarnessError
    from harness.export import materialize, resolve_source

    source = resolve_source(str(model), input_shape)
    if source.kind == "zoo":
        from harness.zoo import variant_spec

        variant_spec(source.name, variant)  # an unknown variant names the known ones
    elif variant != "baseline":
        raise HarnessError(f"variant={variant!r} applies to zoo models only, not {model}")
    if source.kind == "onnx":
        return Path(source.reference)
    path = workdir / f"{source.name.replace(':', '_')}-{variant}.onnx"
    materialize(dataclasses.replace(source, variant=variant), path)
    return path


@pytest.fixture
def harness_latency(benchmark, harness_profile) -> Callable:
    """Time a zoo variant, a factory or an ONNX file on the device profile; returns its Stats.

    Call it as ``harness_latency(model, variant="baseline", input_shape=None, rounds=None)``;
    ``input_shape`` (``"3x32x32"`` or ``(3, 32, 32)``, without batch) is needed for
    ``package.module:factory`` models.
    """
    from harness import envinfo, timing
    from harness.backends import LATENCY, get_runner_class
    from harness.backends.base import resolve_batch

    def run(
        model: Union[str, Path],
        variant: str = "baseline",
        input_shape: Union[str, Sequence[int], None] = None,
        rounds: Optional[int] = None,
    ):
        profile = harness_profile
        if rounds is None:
            rounds = max(profile.timing.min_iterations, rounds_for_percentiles())
        if rounds < 1:
            raise ValueError(f"rounds must be positive, got {rounds}")
        shape = (
            input_shape
            if input_shape is None or isinstance(input_shape, str)
            else "x".join(str(d) for d in input_shape)
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = _onnx_path(model, variant, shape, Path(tmp))
            runner_class = get_runner_class(profile.backend)
            batch = resolve_batch(path, profile.batch_sizes[0])
            with runner_class(path, profile, profile.precisions[0], batch) as runner:
                started = time.perf_counter()
                while time.perf_counter() - started < profile.timing.warmup_s:
                    runner.measure_once()
                samples = []
                benchmark.pedantic(
                    lambda: samples.append(runner.measure_once()[LATENCY]),
                    rounds=rounds,
                    iterations=1,
                    warmup_rounds=1,
                )
                backend = runner.describe()
        measured = samples[1:]  # the first call is pedantic's warm-up round
        stats = timing.summarize(measured, batch)
        env = envinfo.capture_environment(profile)
        at_maximum = percentiles_at_maximum(stats.n)
        benchmark.extra_info.update(
            device=profile.name,
            backend=backend,
            model=str(model),
            variant=variant,
            batch=batch,
            device_latency_ms={
                "median": stats.median,
                "median_ci": [stats.median_ci_low, stats.median_ci_high],
                "p90": stats.p90,
                "p95": stats.p95,
                "p99": stats.p99,
                "cov": stats.cov,
                "n": stats.n,
            },
            percentiles_at_maximum=at_maximum,
            machine={
                "cpu": env["cpu"].get("model"),
                "cores": env["cpu"].get("available_cores"),
                "git_sha": env.get("git_sha"),
            },
        )
        if at_maximum:
            benchmark.extra_info["percentile_note"] = (
                f"with {stats.n} rounds {', '.join(at_maximum)} equal the maximum sample; "
                f"{rounds_for_percentiles()} rounds resolve every reported percentile"
            )
        return stats

    return run
