"""The Runner lifecycle: cheap constructors, activate/deactivate, every runner closed on any
failure, and the batch resolved once before any backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harness.backends.base import open_runners, resolve_batch
from harness.backends.onnxruntime import OnnxRuntimeRunner
from harness.errors import HarnessError
from harness.profiles import load_profile


def _relu_model(path: Path, batch) -> Path:
    """Relu over a (batch, 3, 4, 4) input; ``batch`` an int or a symbolic name."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class _Recording(OnnxRuntimeRunner):
    """An ONNX Runtime runner that records its lifecycle calls; told to, it fails to activate."""

    def __init__(self, path: Path, log: list, fail: bool = False) -> None:
        super().__init__(path, load_profile("host"))
        self.log, self.fail = log, fail

    def _activate_impl(self) -> None:
        self.log.append(("activate", self.onnx_path.name))
        super()._activate_impl()
        if self.fail:
            raise HarnessError("activation failed on purpose")

    def _deactivate_impl(self) -> None:
        self.log.append(("deactivate", self.onnx_path.name))
        super()._deactivate_impl()


def test_constructor_loads_nothing_and_inactive_runner_refuses_work(tmp_path):
    runner = OnnxRuntimeRunner(_relu_model(tmp_path / "m.onnx", 1), load_profile("host"))
    assert runner.session is None and not runner.is_active
    with pytest.raises(HarnessError, match="not active"):
        runner.measure_once()
    with runner:
        assert runner.is_active
        out = runner.infer({"x": -np.ones((1, 3, 4, 4), np.float32)})
        assert float(np.abs(out["y"]).max()) == 0.0
    assert not runner.is_active and runner.session is None


def test_open_runners_deactivates_every_activated_runner_when_a_later_one_fails(tmp_path):
    log: list = []
    runners = {
        name: _Recording(_relu_model(tmp_path / f"{name}.onnx", 1), log, fail=(name == "c"))
        for name in "abc"
    }
    with pytest.raises(HarnessError, match="on purpose"):
        with open_runners(runners):
            pytest.fail("the body must not run when an activation fails")
    assert log == [
        ("activate", "a.onnx"),
        ("activate", "b.onnx"),
        ("activate", "c.onnx"),
        ("deactivate", "c.onnx"),
        ("deactivate", "b.onnx"),
        ("deactivate", "a.onnx"),
    ]
    assert not any(r.is_active for r in runners.values())


def test_open_runners_deactivates_all_when_the_body_fails(tmp_path):
    log: list = []
    runners = {name: _Recording(_relu_model(tmp_path / f"{name}.onnx", 1), log) for name in "ab"}
    with pytest.raises(RuntimeError):
        with open_runners(runners):
            raise RuntimeError("timing failed")
    assert [entry for entry in log if entry[0] == "deactivate"] == [
        ("deactivate", "b.onnx"),
        ("deactivate", "a.onnx"),
    ]


def test_batch_is_resolved_once_for_static_and_dynamic_models(tmp_path):
    static = _relu_model(tmp_path / "static.onnx", 1)
    dynamic = _relu_model(tmp_path / "dynamic.onnx", "N")
    assert resolve_batch(static, 1) == 1
    assert resolve_batch(dynamic, 8) == 8
    with pytest.raises(HarnessError, match="fixed batch of 1"):
        resolve_batch(static, 8)  # would otherwise report 8x the throughput
    with pytest.raises(HarnessError, match="1 or more"):
        resolve_batch(dynamic, 0)
    with OnnxRuntimeRunner(dynamic, load_profile("host"), batch=4) as runner:
        assert runner.input_specs()["x"][0] == (4, 3, 4, 4)
        assert runner.infer(runner.random_inputs())["y"].shape == (4, 3, 4, 4)


def test_a_weight_fed_as_a_graph_input_is_not_taken_for_the_batch(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "weight_input",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "w.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert resolve_batch(path, 2) == 2  # w's 4 output channels are not a fixed batch
