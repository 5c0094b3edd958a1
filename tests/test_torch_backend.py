"""The torch reference backend.

A capture-safe interpreter, profile settings, and CUDA graphs where a GPU exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.backends.onnx_to_torch import OnnxModule
from harness.backends.onnxruntime import OnnxRuntimeRunner
from harness.backends.torch_backend import TorchRunner
from harness.errors import HarnessError
from harness.export import export_module
from harness.profiles import load_profile

CUDA = torch.cuda.is_available()
NO_GPU = "no CUDA GPU here (CPU build of torch): the CUDA-graph path runs only on a GPU"


class Head(torch.nn.Module):
    """Conv, ReLU6 (Clip with constant bounds), global pooling, Reshape and a Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(torch.nn.functional.relu6(self.conv(x)), 1)
        return self.fc(x.reshape(-1, 8))  # a Reshape with a constant (integer) shape


@pytest.fixture
def head(tmp_path: Path) -> Path:
    export_module(Head().eval(), (3, 16, 16), tmp_path / "head.onnx")
    return tmp_path / "head.onnx"


def _profile(tmp_path: Path, kind: str = "cpu", **torch_settings) -> Path:
    data = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    data.update(kind=kind, backend="torch", torch=torch_settings)
    path = tmp_path / f"torch-{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_interpreter_never_reads_device_values_back(head):
    """A forward pass that reads a device tensor back to the host (``.tolist()``, ``float()``)
    invalidates CUDA graph capture; on the meta device such a read fails, so a meta forward proves
    the graph is capture-safe."""
    import onnx

    module = OnnxModule(onnx.load(str(head))).eval().to("meta")
    assert all(
        not c.is_floating_point() and c.device.type == "cpu"
        for c in module.constants.values()
        if not c.is_floating_point()
    )
    out = module(torch.empty(2, 3, 16, 16, device="meta"))
    assert tuple(out.shape) == (2, 5) and out.device.type == "meta"


def test_interpreter_matches_onnxruntime(head, tmp_path):
    profile = load_profile(str(_profile(tmp_path)))
    with OnnxRuntimeRunner(head, profile) as ort_runner, TorchRunner(head, profile) as torch_runner:
        feeds = ort_runner.random_inputs(seed=3)
        expected = next(iter(ort_runner.infer(feeds).values()))
        got = torch_runner.infer(feeds)["output"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_cpu_runner_records_its_settings_and_refuses_cuda_graphs(head, tmp_path):
    with TorchRunner(head, load_profile(str(_profile(tmp_path))), batch=4) as runner:
        assert runner.measure_once()["latency_ms"] > 0
        info = runner.describe()
    assert info["cuda_graph"] is False and info["device"] == "cpu" and info["batch"] == 4
    graph_profile = load_profile(str(_profile(tmp_path, cuda_graph=True)))
    assert graph_profile.torch.cuda_graph and graph_profile.torch.cudnn_benchmark
    if not CUDA:
        with pytest.raises(HarnessError, match="cuda_graph: true needs a CUDA GPU"):
            TorchRunner(head, graph_profile).activate()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason=NO_GPU)
@pytest.mark.parametrize("batch", [1, 128])  # latency and LayerMerge's throughput setting
def test_cuda_graph_replay_matches_eager_and_is_timed(head, tmp_path, batch):
    profile = load_profile(
        str(_profile(tmp_path, kind="gpu", cuda_graph=True, cudnn_benchmark=True))
    )
    with TorchRunner(head, profile, batch=batch) as graphed, TorchRunner(
        head, profile, batch=batch, cuda_graph=False
    ) as eager:
        assert graphed.graph is not None and graphed.describe()["cuda_graph"] is True
        feeds = eager.random_inputs(seed=1)
        np.testing.assert_allclose(
            graphed.infer(feeds)["output"], eager.infer(feeds)["output"], rtol=1e-3, atol=1e-4
        )
        # a new input goes through the static buffer, not a stale one
        other = eager.random_inputs(seed=2)
        np.testing.assert_allclose(
            graphed.infer(other)["output"], eager.infer(other)["output"], rtol=1e-3, atol=1e-4
        )
        assert all(graphed.measure_once()["latency_ms"] > 0 for _ in range(5))
        assert graphed.describe()["cudnn_benchmark"] is True


def test_bench_runs_any_profile_on_the_torch_backend(tmp_path, fast_profile, capsys):
    """Issue 13: `harness bench --device X --backend torch`.

    A GPU profile without CUDA is refused, not faked.
    """
    import json

    from harness.cli import main

    out = tmp_path / "out"
    assert (
        main(
            [
                "bench",
                "--device",
                str(fast_profile),
                "--backend",
                "torch",
                "--models",
                "lenet5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert {r["backend"]["backend"] for r in runs} == {"torch"} and all(
        r["backend"]["device"] == "cpu" for r in runs
    )
    assert "[run on the torch backend: --backend torch]" in (out / "report.md").read_text()
    capsys.readouterr()
    h100 = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "h100.yaml").read_text()
    )
    h100["timing"] = yaml.safe_load(fast_profile.read_text())["timing"]
    (tmp_path / "h100.yaml").write_text(yaml.safe_dump(h100))
    code = main(
        [
            "bench",
            "--device",
            str(tmp_path / "h100.yaml"),
            "--backend",
            "torch",
            "--models",
            "lenet5",
            "--out",
            str(tmp_path / "gpu"),
        ]
    )
    if CUDA:
        assert code == 0
    else:
        assert code == 2 and "sees no CUDA device" in capsys.readouterr().err
    assert (
        main(["bench", "--device", str(fast_profile), "--backend", "tflite", "--models", "lenet5"])
        == 2
    )


def _one_node(op: str, x_shape, inputs=(), inits=None, **attrs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from harness.onnx_io import make_model

    graph = helper.make_graph(
        [helper.make_node(op, ["x", *inputs], ["y"], **attrs)],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    model = make_model(graph)
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize(
    "op,inputs,inits,attrs",
    [
        ("MaxPool", (), None, {"kernel_shape": [3, 3], "pads": [0, 0, 1, 1], "strides": [2, 2]}),
        ("MaxPool", (), None, {"kernel_shape": [2, 2], "dilations": [2, 2]}),
        ("Reshape", ("s",), {"s": np.array([0, -1], np.int64)}, {}),
    ],
)
def test_interpreter_honours_what_it_runs_as_onnx_runtime_does(op, inputs, inits, attrs):
    import onnxruntime as ort

    model = _one_node(op, (1, 3, 16, 16), inputs, inits, **attrs)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    got = OnnxModule(model).eval()(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_interpreter_refuses_what_it_would_drop():
    weight = {"w": np.ones((8, 3, 3, 3), np.float32)}
    same = _one_node("Conv", (1, 3, 16, 16), ("w",), weight, auto_pad="SAME_UPPER")
    with pytest.raises(HarnessError, match="does not honour Conv auto_pad='SAME_UPPER'"):
        OnnxModule(same)
    conv1d = _one_node("Conv", (1, 3, 16), ("w",), {"w": np.ones((8, 3, 3), np.float32)})
    with pytest.raises(HarnessError, match="runs 2-D Conv only"):
        OnnxModule(conv1d)
