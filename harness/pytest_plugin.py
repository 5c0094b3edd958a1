"""pytest plugin: time models on a device profile inside a user's test suite, through pytest-benchmark.

Adds ``--harness-device`` (a profile name or YAML path; default ``host``) and the ``harness_latency`` fixture::

    def test_resnet20_latency(harness_latency):
        stats = harness_latency("resnet20")          # zoo name or path to an .onnx file
        assert stats.p99 < 5.0

Each call warms up for the profile's ``timing.warmup_s``, then runs ``timing.min_iterations`` rounds through
``benchmark.pedantic``, so pytest-benchmark's own options work (``--benchmark-autosave``,
``--benchmark-compare``, ``--benchmark-compare-fail=median:5%``). Every round is one device-synchronised
inference (the backend's ``measure_once``). ``benchmark.extra_info`` gets what pytest-benchmark lacks:
nearest-rank p90/p95/p99 of the device latencies, the median's 95% CI, CoV, the device profile, the backend's
settings and a summary of the machine.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable, Union

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("harness", "edge-device latency with harness")
    group.addoption("--harness-device", default="host",
                    help="device profile (name in device_profiles/ or a YAML path) for harness_latency")


@pytest.fixture(scope="session")
def harness_profile(request):
    """The device profile chosen with ``--harness-device``."""
    from harness.profiles import load_profile

    return load_profile(request.config.getoption("--harness-device"))


def _onnx_path(model: Union[str, Path], workdir: Path) -> Path:
    from harness.export import materialize, resolve_source

    source = resolve_source(str(model))
    if source.kind == "onnx":
        return Path(source.reference)
    path = workdir / f"{source.name}.onnx"
    materialize(source, path)
    return path


@pytest.fixture
def harness_latency(benchmark, harness_profile) -> Callable:
    """Time a zoo model or an ONNX file on the device profile; returns its ``harness.timing.Stats``."""
    from harness import envinfo, timing
    from harness.backends import LATENCY, get_runner_class
    from harness.backends.base import resolve_batch

    def run(model: Union[str, Path]):
        profile = harness_profile
        with tempfile.TemporaryDirectory() as tmp:
            path = _onnx_path(model, Path(tmp))
            runner_class = get_runner_class(profile.backend)
            batch = resolve_batch(path, profile.batch_sizes[0])
            with runner_class(path, profile, profile.precisions[0], batch) as runner:
                started = time.perf_counter()
                while time.perf_counter() - started < profile.timing.warmup_s:
                    runner.measure_once()
                samples = []
                benchmark.pedantic(lambda: samples.append(runner.measure_once()[LATENCY]),
                                   rounds=profile.timing.min_iterations, iterations=1, warmup_rounds=1)
                backend = runner.describe()
        stats = timing.summarize(samples[1:] or samples, profile.batch_sizes[0])
        env = envinfo.capture_environment(profile)
        benchmark.extra_info.update(
            device=profile.name, backend=backend, model=str(model),
            device_latency_ms={"median": stats.median, "median_ci": [stats.median_ci_low, stats.median_ci_high],
                               "p90": stats.p90, "p95": stats.p95, "p99": stats.p99, "cov": stats.cov,
                               "n": stats.n},
            machine={"cpu": env["cpu"].get("model"), "cores": env["cpu"].get("available_cores"),
                     "git_sha": env.get("git_sha")})
        return stats

    return run
