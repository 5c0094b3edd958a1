"""Memory per graph: ONNX bytes from graphs made in code, TensorRT engine memory through the
recorded API surfaces of 8.5, 10.13 and 11.4 (tests/fake_tensorrt.py), and the CPU peak resident
memory of a child process, measured here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import memory
from harness.errors import HarnessError


def _gemm(path: Path, features: int, outputs: int = 10, external: bool = False) -> int:
    """A one-Gemm graph with a ``features x outputs`` float32 weight; returns the weight bytes."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        rng.standard_normal((features, outputs)).astype(np.float32), "w"
    )
    shift = helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(
        np.zeros(outputs, np.float32), "b"))  # fmt: skip
    graph = helper.make_graph(
        [shift, helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location="w.bin",
                  size_threshold=0)  # fmt: skip
    else:
        onnx.save(model, str(path))
    return features * outputs * 4 + outputs * 4


def test_onnx_file_and_weight_bytes(tmp_path):
    weights = _gemm(tmp_path / "m.onnx", 300)
    figures = memory.onnx_memory(tmp_path / "m.onnx")
    assert figures["weights"].bytes == weights
    assert figures["onnx_file"].bytes == (tmp_path / "m.onnx").stat().st_size
    assert figures["onnx_file"].bytes > weights  # the file holds the weights and the graph
    external = tmp_path / "ext"
    external.mkdir()
    assert _gemm(external / "m.onnx", 300, external=True) == weights
    figures = memory.onnx_memory(external / "m.onnx")
    assert figures["weights"].bytes == weights
    assert figures["onnx_file"].bytes == sum(p.stat().st_size for p in external.iterdir())


@pytest.mark.parametrize(
    "version, member", [("8.5", "device_memory_size"), ("10.13", "device_memory_size_v2"),
                        ("11.4", "device_memory_size_v2")]
)  # fmt: skip
def test_engine_memory_reads_the_member_each_version_has(version, member, monkeypatch):
    from tests.fake_tensorrt import make_tensorrt

    trt = make_tensorrt(version)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    engine = trt.ICudaEngine()
    engine._values[member] = 1 << 20  # what the engine would report: an input of this test
    figures = memory.engine_memory(engine, 1234)
    assert figures["engine_file"].bytes == 1234
    assert figures["activation"].bytes == 1 << 20
    assert member in figures["activation"].method
    if version == "11.4":
        assert not hasattr(engine, "device_memory_size")  # 11 has no v1


def test_cpu_peak_rss_of_a_child_grows_with_the_weights(tmp_path):
    small = _gemm(tmp_path / "small.onnx", 16)
    large = _gemm(tmp_path / "large.onnx", 100_000, outputs=100)  # 40 MB of weights
    figures = {
        name: memory.cpu_peak_rss(tmp_path / f"{name}.onnx", iterations=3)
        for name in ("small", "large")
    }
    grown = figures["large"]["graph_rss"].bytes - figures["small"]["graph_rss"].bytes
    # the weights are resident at least once (ONNX Runtime may hold a second, pre-packed copy)
    assert 0.9 * (large - small) <= grown <= 3.5 * (large - small)
    assert figures["large"]["peak_rss"].bytes > figures["large"]["graph_rss"].bytes
    assert "child process" in figures["large"]["peak_rss"].method


def test_cpu_peak_rss_of_a_broken_graph_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(HarnessError, match="child process failed"):
        memory.cpu_peak_rss(tmp_path / "bad.onnx", iterations=1)


def test_system_ram_from_a_recorded_meminfo(tmp_path):
    # /proc/meminfo in the kernel's format (proc(5): "Name:  value kB"); a 32 GB machine's figures
    (tmp_path / "meminfo").write_text(
        "MemTotal:       31002176 kB\nMemFree:        26841888 kB\n"
        "MemAvailable:   28556284 kB\nBuffers:           58552 kB\n"
    )
    assert memory.system_ram_in_use(tmp_path / "meminfo") == (31002176 - 28556284) * 1024
    assert memory.system_ram_in_use(tmp_path / "absent") is None


def test_graph_memory_on_a_cpu_device_and_what_it_cannot_measure(tmp_path):
    weights = _gemm(tmp_path / "m.onnx", 64)
    runner = object()  # an ONNX Runtime runner offers no engine and no CUDA device
    figures, problems = memory.graph_memory(tmp_path / "m.onnx", runner, "cpu")
    assert problems == []
    assert figures["weights"].bytes == weights and figures["graph_rss"].bytes >= 0
    assert "engine_file" not in figures and "cuda_max_allocated" not in figures
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    figures, problems = memory.graph_memory(tmp_path / "bad.onnx", runner, "cpu")
    assert figures == {}
    assert [p.split(" (")[0] for p in problems] == [
        "memory: ONNX bytes not measured",
        "memory: peak RSS not measured",
    ]


@pytest.fixture(params=["8.5", "10.13", "11.4"])
def trt_runner_module(request, monkeypatch):
    """harness's TensorRT runner imported against the doubles of one version."""
    import importlib
    import sys

    from tests import fake_tensorrt

    fake_tensorrt.install(monkeypatch, request.param)
    yield request.param, importlib.import_module("harness.backends.trt.runner")
    for name in fake_tensorrt.TRT_MODULES:
        sys.modules.pop(name, None)


def test_graph_memory_of_a_tensorrt_runner_reads_its_engine(trt_runner_module, tmp_path):
    from harness.backends.trt.cache import EngineCache
    from harness.profiles import load_profile

    version, module = trt_runner_module
    weights = _gemm(tmp_path / "m.onnx", 32)
    runner = module.TensorRTRunner(
        tmp_path / "m.onnx", load_profile("xavier"), "fp32", 1, cache=EngineCache(tmp_path / "e")
    )
    with runner:
        figures, problems = memory.graph_memory(tmp_path / "m.onnx", runner, "jetson")
        plan_bytes = runner.engine_path.stat().st_size
    assert problems == []
    assert figures["weights"].bytes == weights
    assert figures["engine_file"].bytes == plan_bytes
    # the double reports no activation size (None): left out, never a made-up figure
    assert "activation" not in figures
    assert figures["system_ram_in_use"].bytes > 0  # this machine's /proc/meminfo
