"""The TensorRT runner's real code path against strict doubles of TensorRT 8.5, 10.13 and 11.4.

Build -> serialize -> cache -> deserialize -> bind by name -> execute_async_v3 -> read back, with
the API surface of each version (tests/fake_tensorrt.py): a call to anything that version lacks
fails the test. What the doubles cannot check: TensorRT's behaviour (tactics, parser coverage, real
numerics) and CUDA itself.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.backends.base import open_runners
from harness.backends.trt.cache import EngineCache
from harness.errors import HarnessError
from harness.profiles import load_profile
from tests import fake_tensorrt


@pytest.fixture(params=sorted(fake_tensorrt.VERSIONS))
def trt_runner(request, monkeypatch):
    """(version, the runner module) imported against that version's doubles."""
    fake_tensorrt.install(monkeypatch, request.param)
    module = importlib.import_module("harness.backends.trt.runner")
    fake_tensorrt.CALLS.clear()
    yield request.param, module
    for name in fake_tensorrt.TRT_MODULES:
        sys.modules.pop(name, None)


def _model(path, batch=1):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(
        rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w"
    )
    bias = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8, 16, 16])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def _profile(precision):
    profile = load_profile("xavier")
    profile.precisions = [precision]
    return profile


def _reference(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_fp32_build_run_and_read_back_on_each_version(trt_runner, tmp_path):
    version, module = trt_runner
    model = _model(tmp_path / "m.onnx")
    runner = module.TensorRTRunner(
        model, _profile("fp32"), "fp32", 1, cache=EngineCache(tmp_path / "e")
    )
    with runner:
        feeds = runner.random_inputs(1)
        np.testing.assert_allclose(
            runner.infer(feeds)["y"], _reference(model, feeds), rtol=1e-5, atol=1e-5
        )
        sample = runner.measure_once()
        assert sample["latency_ms"] == pytest.approx(
            sample["h2d_ms"] + sample["gpu_compute_ms"] + sample["d2h_ms"]
        )
        info = runner.describe()
        addresses = [int(device) for _, _, device in runner.inputs + runner.outputs]
    assert addresses and not any(
        a in fake_tensorrt.MEMORY for a in addresses
    )  # freed on deactivate
    assert info["tf32"] is False and info["execution_api"] == "v3"
    assert "IBuilderConfig.clear_flag" in fake_tensorrt.CALLS  # fp32 means FP32: TF32 cleared
    assert "IExecutionContext.execute_async_v3" in fake_tensorrt.CALLS
    assert not runner.is_active


def test_fp16_uses_builder_flags_before_11_and_an_fp16_graph_on_11(trt_runner, tmp_path):
    version, module = trt_runner
    model = _model(tmp_path / "m.onnx")
    runner = module.TensorRTRunner(
        model, _profile("fp16"), "fp16", 1, cache=EngineCache(tmp_path / "e")
    )
    with runner:
        feeds = runner.random_inputs(2)
        dtype = runner.input_specs()["x"][1]
        out = runner.infer({k: v.astype(dtype) for k, v in feeds.items()})["y"]
        plan = runner.describe()["plan"]
        built = json.loads(runner.engine_path.read_bytes())  # the double's record of the build
    expected = _reference(model, {k: v.astype(np.float32) for k, v in feeds.items()})
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2e-2, atol=2e-2)
    if version.startswith("11"):
        assert plan["strongly_typed"] and plan["flags"] == [] and dtype == np.float16
        assert built["strongly_typed"] and built["flags"] == ["TF32"]
    else:
        assert plan["flags"] == ["FP16"] and dtype == np.float32
        assert built["flags"] == ["FP16", "TF32"] and not built["strongly_typed"]


def test_int8_by_calibrator_before_11_and_from_a_qdq_graph_on_11(trt_runner, tmp_path):
    version, module = trt_runner
    profile = _profile("int8")
    profile.tensorrt.int8_calibration_batches = 3
    model = _model(tmp_path / "m.onnx")
    with pytest.warns(UserWarning, match="random"):
        with module.TensorRTRunner(
            model, profile, "int8", 1, cache=EngineCache(tmp_path / "e")
        ) as r:
            feeds = r.random_inputs(3)
            out = r.infer(feeds)["y"]
            info = r.describe()
            built = json.loads(r.engine_path.read_bytes())
    if not version.startswith("11"):  # builder flags and our calibrator, its table kept
        assert built["flags"] == ["FP16", "INT8", "TF32"] and built["calibration_batches"] == 3
        assert "IBuilderConfig.set_calibration_profile" in fake_tensorrt.CALLS
        assert list((tmp_path / "e").glob("calibration-*.cache"))
        return
    qdq = onnx.load(built["onnx"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in qdq.graph.node}
    assert built["strongly_typed"] and built["flags"] == ["TF32"]  # no INT8 flag, no calibrator
    assert built["calibration_batches"] is None
    assert info["prepared_graph"]["calibration"].startswith("random:")
    np.testing.assert_array_equal(out, _reference(built["onnx"], feeds))  # the Q/DQ graph ran
    expected = _reference(model, feeds)
    relative_rms = np.sqrt(np.mean((out - expected) ** 2) / np.mean(expected**2))
    assert 0 < relative_rms < 0.05  # int8 numerics, close to fp32


def test_two_runners_share_the_primary_context_and_a_failed_enqueue_is_an_error(
    trt_runner, tmp_path, monkeypatch
):
    _version, module = trt_runner
    cache = EngineCache(tmp_path / "e")
    runners = {
        name: module.TensorRTRunner(
            _model(tmp_path / f"{name}.onnx"), _profile("fp32"), "fp32", 1, cache=cache
        )
        for name in ("a", "b")
    }
    with open_runners(runners):
        runners["a"].measure_once()
        runners["b"].measure_once()
        assert sys.modules["pycuda.driver"].contexts_made == [
            "primary"
        ]  # one context, no make_context
        monkeypatch.setitem(
            sys.modules["tensorrt"].IExecutionContext._behaviour,
            "execute_async_v3",
            lambda self, handle: False,
        )
        with pytest.raises(HarnessError, match="execute_async_v3 failed"):
            runners["a"].measure_once()


def test_an_engine_of_another_version_is_rebuilt_not_run(trt_runner, tmp_path):
    version, module = trt_runner
    model, cache = _model(tmp_path / "m.onnx"), EngineCache(tmp_path / "e")
    with module.TensorRTRunner(model, _profile("fp32"), "fp32", 1, cache=cache) as runner:
        first = runner.describe()
    assert first["rebuilt"]
    with module.TensorRTRunner(model, _profile("fp32"), "fp32", 1, cache=cache) as again:
        assert not again.describe()["rebuilt"]


def test_dynamic_batch_is_bound_by_name(trt_runner, tmp_path):
    _version, module = trt_runner
    model = _model(tmp_path / "dyn.onnx", batch="N")
    with module.TensorRTRunner(
        model, _profile("fp32"), "fp32", 4, cache=EngineCache(tmp_path / "e")
    ) as r:
        assert r.input_specs()["x"][0] == (4, 3, 16, 16)
        feeds = r.random_inputs(0)
        np.testing.assert_allclose(
            r.infer(feeds)["y"], _reference(model, feeds), rtol=1e-5, atol=1e-5
        )
    assert "IOptimizationProfile.set_shape" in fake_tensorrt.CALLS
    assert "IExecutionContext.set_input_shape" in fake_tensorrt.CALLS


def test_a_parse_failure_is_one_line_with_the_parsers_errors(trt_runner, tmp_path):
    _version, module = trt_runner
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    runner = module.TensorRTRunner(
        broken, _profile("fp32"), "fp32", 1, cache=EngineCache(tmp_path / "e")
    )
    with pytest.raises(HarnessError) as caught:
        runner.activate()
    message = str(caught.value)
    assert "cannot parse" in message and "In node -1: Failed to parse ONNX model" in message
    assert "\n" not in message and not runner.is_active
    assert not list((tmp_path / "e").glob("*.engine"))


def test_fp32_clears_tf32_and_the_timing_cache_is_kept_across_builds(trt_runner, tmp_path):
    _version, module = trt_runner
    profile = _profile("fp32")
    profile.tensorrt.timing_cache = True
    cache = EngineCache(tmp_path / "e")
    with module.TensorRTRunner(_model(tmp_path / "a.onnx"), profile, "fp32", 1, cache=cache) as r:
        assert json.loads(r.engine_path.read_bytes())["flags"] == []  # TF32 cleared
        timing = r.timing_cache
    first = timing.read_bytes()
    with module.TensorRTRunner(
        _model(tmp_path / "b.onnx", batch=2), profile, "fp32", 2, cache=cache
    ):
        pass
    assert (
        timing.read_bytes().startswith(first) and timing.read_bytes() != first
    )  # loaded, extended


def test_dla_core_is_set_on_the_config_and_the_runtime(trt_runner, tmp_path, monkeypatch):
    version, module = trt_runner
    if not version.startswith("8.5"):
        pytest.skip("DLA: TensorRT 8.5 here (10.8 to 11.4.0 have none)")
    monkeypatch.setattr(sys.modules["tensorrt"].Builder, "num_DLA_cores", 2)  # AGX Xavier: 2
    profile = _profile("fp16")
    profile.tensorrt.dla_core = 1
    with module.TensorRTRunner(
        _model(tmp_path / "m.onnx"), profile, "fp16", 1, cache=EngineCache(tmp_path / "e")
    ) as runner:
        built = json.loads(runner.engine_path.read_bytes())
        assert runner.engine._values["_dla_core"] == 1  # the runtime's core when it loaded
    assert built["device"] == "DLA" and built["dla_core"] == 1 and "GPU_FALLBACK" in built["flags"]
    profile.tensorrt.dla_core = 2
    with pytest.raises(HarnessError, match="DLA core 2 requested, this device has 2"):
        module.TensorRTRunner(
            _model(tmp_path / "m.onnx"), profile, "fp16", 1, cache=EngineCache(tmp_path / "f")
        ).activate()


def test_the_doubles_are_as_strict_as_the_recorded_surfaces():
    eleven, ten, old = (fake_tensorrt.make_tensorrt(v) for v in ("11.4", "10.13", "8.5"))
    with pytest.raises(AttributeError):
        eleven.BuilderFlag.FP16  # noqa: B018 - TensorRT 11 is strongly typed
    assert not hasattr(eleven, "IInt8EntropyCalibrator2") and hasattr(
        old, "IInt8EntropyCalibrator2"
    )
    with pytest.raises(AttributeError):
        ten.IExecutionContext().execute_async_v2  # noqa: B018 - bindings are gone from 10
    assert int(old.BuilderFlag.TF32) == 7 and int(ten.BuilderFlag.TF32) == 6  # values from the data
    with pytest.raises(TypeError):
        ten.IExecutionContext().set_tensor_address(
            "x"
        )  # the recorded signature takes a name and an address


# --- per-layer profile: IProfiler + IEngineInspector through the runner ---------------------------
# The doubles replay NVIDIA's recorded ResNet-18 layer times and layer information
# (tests/trt_recordings.py) in each version's layout: the figures are a recording's, never a
# measurement of the model run here.
def _head(tmp_path):
    from tests.trt_recordings import resnet_head

    path = tmp_path / "head.onnx"
    onnx.save(resnet_head(), str(path))
    return path


def _profiled(module, path, profile, precision, runs, cache):
    """The layer profile of a profiling runner after ``runs`` runs."""
    runner = module.TensorRTRunner(path, profile, precision, 1, cache=cache, profiling=True)
    with runner:
        for _ in range(runs):
            runner.measure_once()
        return runner.layer_profile()


def test_the_runners_layer_profile_is_parsed_and_tied_to_onnx_nodes(trt_runner, tmp_path):
    version, module = trt_runner
    from tests.trt_recordings import PROFILE_85

    cache = EngineCache(tmp_path / "e")
    with module.TensorRTRunner(_head(tmp_path), _profile("fp32"), "fp32", 1, cache=cache) as r:
        sample = r.measure_once()
        assert r.context._values.get("profiler") is None  # a timed runner never profiles
        built = json.loads(r.engine_path.read_bytes())
        identity = r.identity
        with pytest.raises(HarnessError, match="not made with profiling=True"):
            r.layer_profile()
    layers = _profiled(module, _head(tmp_path), _profile("fp32"), "fp32", 3, cache)
    assert built["profiling_verbosity"] == "DETAILED" == identity["profiling_verbosity"]
    assert layers.backend == "tensorrt" and layers.runs == 3 and "IProfiler" in layers.source
    assert layers.run_ms is not None and sample["latency_ms"] > 0
    recorded = {r["name"]: r["averageMs"] for r in PROFILE_85[1:]}
    assert [layer.name for layer in layers.layers] == list(recorded)
    by_name = {layer.name: layer for layer in layers.layers}
    fused = by_name["Conv_5 + Add_6 + Relu_7"]
    assert fused.nodes == ["Conv_5", "Add_6", "Relu_7"] and fused.device == "GPU"
    # the recording is of an FP16 engine: its datatypes and times, replayed, not this build's
    assert fused.kind == "CaskConvolution" and fused.precision == "FP16" and fused.tactic
    assert fused.time_ms == pytest.approx(recorded[fused.name])  # replayed, per run
    assert by_name["Conv_0 + Relu_1"].nodes == ["Conv_0", "Relu_1"]
    calls = fake_tensorrt.CALLS
    assert "IBuilderConfig.profiling_verbosity=" in calls
    assert "EngineInspector.execution_context=" in calls  # concrete shapes for dynamic inputs
    assert "IExecutionContext.enqueue_emits_profile=" in calls
    assert calls.count("IExecutionContext.report_to_profiler") == 3


def test_layers_whose_names_say_nothing_are_tied_by_metadata_from_10(
    trt_runner, tmp_path, monkeypatch
):
    """A Myelin-style layer name (``__myl_...``) lists no node: 10.x and 11.x layer information
    carries ``[ONNX Layer: name]`` records (derived layouts: tests/trt_recordings.py)."""
    version, module = trt_runner
    if version.startswith("8.5"):
        pytest.skip("Metadata: TensorRT 8.6 and later")
    from tests import trt_recordings

    recorded = trt_recordings.recording

    def renamed(key, dla=False):
        info, records = recorded(key, dla)
        assert info["Layers"][1]["Name"] == records[2]["name"] == "Conv_0 + Relu_1"
        info["Layers"][1]["Name"] = records[2]["name"] = "__myl_ConvRelu_0"
        return info, records

    monkeypatch.setattr(trt_recordings, "recording", renamed)
    profiled = _profiled(
        module, _head(tmp_path), _profile("fp32"), "fp32", 1, EngineCache(tmp_path)
    )
    layer = {x.name: x for x in profiled.layers}["__myl_ConvRelu_0"]
    assert layer.nodes == ["Conv_0", "Relu_1"] and layer.precision == "FP16"


def test_the_runners_dla_profile_finds_gpu_fallback(trt_runner, tmp_path, monkeypatch):
    version, module = trt_runner
    if not version.startswith("8.5"):
        pytest.skip("DLA: TensorRT 8.5 here (10.8 to 11.4.0 have none)")
    from harness.explain import lint
    from tests.trt_recordings import resnet_head

    monkeypatch.setattr(sys.modules["tensorrt"].Builder, "num_DLA_cores", 2)
    profile = _profile("fp16")
    profile.tensorrt.dla_core = 0
    layers = _profiled(module, _head(tmp_path), profile, "fp16", 2, EngineCache(tmp_path / "e"))
    by_name = {layer.name: layer for layer in layers.layers}
    foreign = by_name["{ForeignNode[Conv_0...Relu_4]}"]
    assert foreign.device == "DLA" and foreign.nodes[0] == "Conv_0"
    assert by_name["input.1 to nvm"].device == "DLA" and by_name["input.1 to nvm"].nodes == []
    fallback = [f for f in lint(resnet_head(), layers, profile, "fp16") if f.rule == "gpu-fallback"]
    assert [f.layer for f in fallback] == ["Conv_5 + Add_6 + Relu_7"]
    assert fallback[0].nodes == ["Conv_5", "Add_6", "Relu_7"]


def test_an_engine_without_detailed_verbosity_is_refused_with_the_setting(
    trt_runner, tmp_path, monkeypatch
):
    _version, module = trt_runner
    monkeypatch.setattr(sys.modules["harness.backends.trt.build"], "PROFILING_VERBOSITY", "NONE")
    with pytest.raises(HarnessError, match="no layer information.*DETAILED"):
        _profiled(module, _head(tmp_path), _profile("fp32"), "fp32", 1, EngineCache(tmp_path / "e"))
    monkeypatch.setattr(
        sys.modules["harness.backends.trt.build"], "PROFILING_VERBOSITY", "LAYER_NAMES_ONLY"
    )
    with pytest.raises(HarnessError, match="ProfilingVerbosity.DETAILED"):
        _profiled(module, _head(tmp_path), _profile("fp32"), "fp32", 1, EngineCache(tmp_path / "f"))


def test_profile_layers_takes_the_runner_route_for_the_tensorrt_backend(
    trt_runner, tmp_path, monkeypatch
):
    _version, module = trt_runner
    from harness.measure import profile_layers

    monkeypatch.setattr(module, "EngineCache", lambda: EngineCache(tmp_path / "e"))
    profile = _profile("fp32")
    assert profile.backend == "tensorrt"
    layers = profile_layers(_head(tmp_path), profile, "fp32", 1, runs=2)
    assert "tensorrt runner" in layers.source and layers.runs == 2
    assert "IExecutionContext.report_to_profiler" in fake_tensorrt.CALLS


def test_the_profiler_double_keeps_to_the_recorded_api(monkeypatch):
    for version in sorted(fake_tensorrt.VERSIONS):
        trt = fake_tensorrt.make_tensorrt(version)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        assert int(trt.ProfilingVerbosity.DETAILED) == 2  # all three surfaces
        assert int(trt.LayerInformationFormat.JSON) == 1
        assert not hasattr(trt, "IEngineInspector")  # Python exposes it as EngineInspector
        context = trt.IExecutionContext()
        assert context.report_to_profiler() is False  # no profiler set
        with pytest.raises(TypeError):
            context.profiler = object()

        class NoBaseInit(trt.IProfiler):
            def __init__(self):
                pass

        with pytest.raises(TypeError, match="base __init__"):
            context.profiler = NoBaseInit()
