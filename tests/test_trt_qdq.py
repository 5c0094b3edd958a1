"""INT8 for a strongly typed TensorRT (11+): the Q/DQ copy of an ONNX graph made by
``prepare.int8_qdq_onnx`` (ONNX Runtime's quantize_static, QDQ format).

Checked on zoo models exported by harness itself: every Conv is fed by DequantizeLinear on its input
and on int8 per-channel weights that dequantize back to the FP32 weights, every zero point is an
int8 0 (symmetric, as TensorRT requires), the graph runs in ONNX Runtime and agrees with the FP32
graph within the documented tolerance (figures recomputed here, not read back), the copy is reused
while the source and calibration data are unchanged, and the calibration source is recorded. What
this cannot check: TensorRT parsing and running the graph (the first device run does).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.backends.trt import prepare
from harness.backends.trt.versions import RANDOM_CALIBRATION_WARNING
from harness.cli import main
from harness.errors import HarnessError
from harness.profiles import load_profile

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """lenet5 and resnet20 exported to ONNX by harness's own export command."""
    folder = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name in ("lenet5", "resnet20"):
        paths[name] = folder / f"{name}.onnx"
        assert main(["export", name, "-o", str(paths[name])]) == 0
    return paths


def _profile(calibration_dir=None, batches=16):
    profile = load_profile("xavier")
    profile.tensorrt.int8_calibration_dir = calibration_dir
    profile.tensorrt.int8_calibration_batches = batches
    return profile


def _qdq(source, out, profile, batch=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-data warning; tested on its own below
        return prepare.int8_qdq_onnx(source, out, profile, batch)


def _producers(model):
    return {output: node for node in model.graph.node for output in node.output}


def _dequantized_weight(node, initializers):
    """The FP32 weight a DequantizeLinear of an int8 initializer stands for, with its parts."""
    quantized, scale = (numpy_helper.to_array(initializers[n]) for n in node.input[:2])
    zero = numpy_helper.to_array(initializers[node.input[2]])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * quantized.ndim
    shape[axis] = -1
    restored = (quantized.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
    return quantized, scale, zero, axis, restored


def _warned(call):
    """(result of ``call()``, the messages of the UserWarnings it gave: not the libraries'
    DeprecationWarnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if w.category is UserWarning]


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_every_conv_gets_int8_symmetric_per_channel_qdq(zoo, tmp_path, name):
    out, info = _qdq(zoo[name], tmp_path / f"{name}-int8.onnx", _profile())
    model = onnx.load(str(out))
    source = onnx.load(str(zoo[name]))
    initializers = {t.name: t for t in model.graph.initializer}
    source_weights = {t.name: t for t in source.graph.initializer}
    fp32_weights = {  # by node name: the quantizer keeps names, not the order of the nodes
        n.name: numpy_helper.to_array(source_weights[n.input[1]])
        for n in source.graph.node
        if n.op_type == "Conv"
    }
    producers = _producers(model)
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert sorted(n.name for n in convs) == sorted(fp32_weights) and len(convs) > 0
    for conv in convs:
        fp32 = fp32_weights[conv.name]
        activation, weight = producers[conv.input[0]], producers[conv.input[1]]
        assert activation.op_type == "DequantizeLinear"
        assert producers[activation.input[0]].op_type == "QuantizeLinear"  # activations: Q -> DQ
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in initializers
        quantized, scale, zero, axis, restored = _dequantized_weight(weight, initializers)
        assert quantized.dtype == np.int8 and quantized.shape == fp32.shape
        assert axis == 0 and scale.shape == (fp32.shape[0],)  # one scale per output channel
        assert zero.dtype == np.int8 and not zero.any()
        assert len(np.unique(scale)) > 1  # really per channel, not one scale repeated
        assert np.all(np.abs(restored - fp32) <= scale.reshape(-1, 1, 1, 1) * 0.5001)  # rounding
        if len(conv.input) > 2:  # bias stays float: TensorRT has no int32 DequantizeLinear
            assert initializers[conv.input[2]].data_type == TensorProto.FLOAT
    counts = {op: sum(n.op_type == op for n in model.graph.node) for op in QDQ}
    assert info["nodes"] == counts and counts["QuantizeLinear"] > 0
    for node in model.graph.node:  # every zero point in the graph: int8, 0; scales positive
        if node.op_type in QDQ:
            zero = numpy_helper.to_array(initializers[node.input[2]])
            assert zero.dtype == np.int8 and not zero.any(), node.name
            assert np.all(numpy_helper.to_array(initializers[node.input[1]]) > 0), node.name
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}  # no ORT contrib ops
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert info["per_channel"] and info["quant_format"] == "QDQ"
    assert info["options"]["ActivationSymmetric"] and not info["options"]["QuantizeBias"]


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_qdq_graph_runs_and_agrees_with_fp32(zoo, tmp_path, name):
    out, info = _qdq(zoo[name], tmp_path / f"{name}-int8.onnx", _profile())
    reference = ort.InferenceSession(str(zoo[name]), providers=["CPUExecutionProvider"])
    quantized = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = reference.get_inputs()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = prepare.calibration_batches(feed.shape, None, 16)  # the same seeded data
    expected = np.concatenate([reference.run(None, {feed.name: b})[0] for b in batches])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    plain = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    got = np.concatenate([plain.run(None, {feed.name: b})[0] for b in batches])
    relative = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
    assert relative == pytest.approx(info["error"]["relative_error"], rel=1e-4)
    assert agreement == info["error"]["top1_agreement"] and info["error"]["samples"] == 16
    assert 0 < relative <= prepare.INT8_MAX_RELATIVE_ERROR  # int8: close, not identical
    assert agreement >= prepare.INT8_MIN_TOP1_AGREEMENT
    assert quantized.run(None, {feed.name: batches[0]})[0].shape == expected[:1].shape
    assert info["warnings"] == [RANDOM_CALIBRATION_WARNING]


def test_cache_hit_then_remade_when_calibration_data_changes(zoo, tmp_path):
    out = tmp_path / "cache" / "lenet5-int8.onnx"
    first_path, first = _qdq(zoo["lenet5"], out, _profile())
    stamp, content = out.stat().st_mtime_ns, out.read_bytes()
    second_path, second = _qdq(zoo["lenet5"], out, _profile())
    assert second_path == first_path and second["reused"] and not first["reused"]
    assert out.stat().st_mtime_ns == stamp and out.read_bytes() == content
    assert {k: v for k, v in second.items() if k != "reused"} == {
        k: v for k, v in first.items() if k != "reused"
    }
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["calibration"] == "random:16" and sidecar["metadata"]["samples"] == 16

    rng = np.random.default_rng(1)
    data = tmp_path / "calib"
    data.mkdir()
    for i in range(4):
        np.save(data / f"{i}.npy", rng.uniform(0, 1, (1, 1, 28, 28)).astype(np.float32))
    (_, real), said = _warned(
        lambda: prepare.int8_qdq_onnx(zoo["lenet5"], out, _profile(str(data)))
    )
    assert RANDOM_CALIBRATION_WARNING not in said  # real calibration data
    assert not real["reused"] and real["calibration"].startswith("npy:")
    assert real["calibration_dir"] == str(data) and real["samples"] == real["calibration_batches"]
    assert real["samples"] == 4 and real["error"]["samples"] == 4 and real["warnings"] == []
    assert out.read_bytes() != content  # other ranges, other scales

    out.write_bytes(out.read_bytes()[:-10])  # a damaged copy is remade, never used
    _, again = _qdq(zoo["lenet5"], out, _profile(str(data)))
    assert not again["reused"] and onnx.load(str(out)).graph.node


def test_random_calibration_and_error_over_tolerance_are_warned(zoo, tmp_path, monkeypatch):
    (_, info), said = _warned(
        lambda: prepare.int8_qdq_onnx(zoo["lenet5"], tmp_path / "a.onnx", _profile(batches=3))
    )
    assert said == [RANDOM_CALIBRATION_WARNING] == info["warnings"]
    assert info["calibration"] == "random:3" and info["samples"] == 3
    monkeypatch.setattr(prepare, "INT8_MAX_RELATIVE_ERROR", info["error"]["relative_error"] / 2)
    (_, strict), said = _warned(
        lambda: prepare.int8_qdq_onnx(zoo["lenet5"], tmp_path / "b.onnx", _profile(batches=3))
    )
    assert said == strict["warnings"] and len(said) == 2
    assert "differs from the FP32 one" in said[1] and "relative L2 error" in said[1]
    (_, reused), again = _warned(  # said again when the copy is reused
        lambda: prepare.int8_qdq_onnx(zoo["lenet5"], tmp_path / "b.onnx", _profile(batches=3))
    )
    assert reused["reused"] and again == said


def _conv_model(path, inputs=1):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    values = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if inputs == 2:
        nodes.append(helper.make_node("Add", ["y", "z"], ["s"]))
        values.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 8, 8]))
    output = "s" if inputs == 2 else "y"
    graph = helper.make_graph(
        nodes,
        "g",
        values,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 4, 8, 8])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_dynamic_batch_calibrates_at_the_batch_size_and_bad_inputs_are_refused(tmp_path):
    model = _conv_model(tmp_path / "dyn.onnx")
    out, info = _qdq(model, tmp_path / "dyn-int8.onnx", _profile(batches=2), batch=3)
    assert info["samples"] == 6 and info["calibration_batches"] == 2
    assert ort.InferenceSession(str(out)).run(None, {"x": np.ones((5, 3, 8, 8), np.float32)})
    _, other = _qdq(model, tmp_path / "dyn-int8.onnx", _profile(batches=2), batch=1)
    assert not other["reused"] and other["samples"] == 2  # the batch is part of the identity
    with pytest.raises(HarnessError, match="feeds one input"):
        _qdq(_conv_model(tmp_path / "two.onnx", 2), tmp_path / "two-int8.onnx", _profile())
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HarnessError, match="cannot write"):
        _qdq(model, blocker / "sub" / "x.onnx", _profile())


def test_qdq_graph_through_the_runner_on_the_tensorrt_11_double(zoo, tmp_path, monkeypatch):
    """A Q/DQ graph given as it is (precision fp32: its own types carry the int8), on the strict
    TensorRT 11.4 and pycuda doubles: parsed into a strongly typed network, built without
    precision flags, bound and run; what it reads back is ONNX Runtime's run of that same graph
    (the double's engine), so this checks harness's calls, not TensorRT. The int8 precision route
    (runner -> ``strongly_typed_onnx`` -> this module) is tested in test_tensorrt_contract.py."""
    import importlib
    import sys

    from harness.backends.trt.cache import EngineCache
    from tests import fake_tensorrt

    out, _ = _qdq(zoo["lenet5"], tmp_path / "lenet5-int8.onnx", _profile())
    fake_tensorrt.install(monkeypatch, "11.4")
    try:
        module = importlib.import_module("harness.backends.trt.runner")
        profile = _profile()
        profile.precisions = ["fp32"]
        runner = module.TensorRTRunner(out, profile, "fp32", 1, cache=EngineCache(tmp_path / "e"))
        with runner:
            feeds = runner.random_inputs(3)
            got = runner.infer(feeds)
            plan = runner.describe()["plan"]
            built = json.loads(runner.engine_path.read_bytes())  # the double's record
    finally:
        for name in fake_tensorrt.TRT_MODULES:
            sys.modules.pop(name, None)
    expected = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(list(got.values())[0], expected[0], rtol=1e-5, atol=1e-6)
    assert plan["strongly_typed"] and plan["flags"] == []
    assert built["onnx"] == str(out) and built["strongly_typed"] and built["flags"] == []
