"""External data: references that do not hold are one-line refusals, and a model over protobuf's
2 GB loads, folds and times from its files (the 2 GB limit is lowered here, so that a few KB of
real weights take the path a 2.1 GB model takes; nothing else is faked)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness import onnx_io
from harness.cli import main
from tests.test_hostile_environment import _profile


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((32, 8, 3, 3)).astype(np.float32), "w")
    scale, bias = (
        numpy_helper.from_array(rng.random(32).astype(np.float32) + 0.5, n) for n in "sb"
    )
    mean, var = (numpy_helper.from_array(rng.random(32).astype(np.float32) + 0.5, n) for n in "mv")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 6, 6])],
        [weight, scale, bias, mean, var],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def external(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save_model(
        _model(), str(path), save_as_external_data=True, location="m.bin", size_threshold=0
    )
    return path


def _entries(path: Path, **changes: str) -> None:
    """Rewrite the first weight's external-data entries (``key=value``; a value of None drops)."""
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    entries = {e.key: e.value for e in tensor.external_data}
    entries.update(changes)
    del tensor.external_data[:]
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"offset": "999999"}, "reach past the end of"),
        ({"length": "999999"}, "reach past the end of"),
        ({"offset": "-5"}, "external-data offset '-5' is not a byte count"),
        ({"length": "lots"}, "external-data length 'lots' is not a byte count"),
        ({"location": "m\x00.bin"}, "keeps its data at 'm\\x00.bin': not a file name"),
        ({"location": ""}, "keeps its data at '': not a file name"),
    ],
)
def test_external_data_that_does_not_hold_is_one_line(external, capsys, changes, message):
    _entries(external, **changes)
    assert main(["time", str(external), "--device", str(_profile(external.parent))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tensor 'w'") and message in err and "\n" not in err, err


def test_a_hard_linked_data_file_is_refused(external, capsys):
    os.link(external.with_name("m.bin"), external.parent / "other-name.bin")
    assert main(["fold", str(external), "-o", str(external.with_name("f.onnx"))]) == 2
    assert "(a hard link): refusing to read it" in capsys.readouterr().err


def test_a_model_over_the_protobuf_limit_loads_folds_and_times_from_its_files(
    external, capsys, monkeypatch
):
    monkeypatch.setattr(onnx_io, "PROTOBUF_LIMIT", 8192)  # the weights are ~9.5 KB
    checked = []
    real_check = onnx.checker.check_model
    monkeypatch.setattr(
        onnx.checker, "check_model", lambda m, *a, **k: checked.append(m) or real_check(m, *a, **k)
    )
    folded = external.with_name("f.onnx")
    assert main(["fold", str(external), "-o", str(folded), "--merge", "none"]) == 0, (
        capsys.readouterr()
    )
    assert checked and all(isinstance(m, str) for m in checked[:1])  # the input checked by path
    assert folded.with_name("f.onnx.data").is_file()  # weights beside it, as it came
    assert os.path.getsize(folded) < 4096
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 8, 6, 6)).astype(np.float32)}
    want = ort.InferenceSession(str(external), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    assert [n.op_type for n in onnx.load(str(folded)).graph.node] == ["Conv"]  # BN folded
    assert main(["time", str(folded), "--device", str(_profile(external.parent))]) == 0
    assert "median" in capsys.readouterr().out


def test_saving_a_large_model_leaves_the_model_in_memory_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_io, "PROTOBUF_LIMIT", 64 << 20 | 4096)
    model = _model()
    before = model.SerializeToString()
    onnx_io.save_model(model, tmp_path / "big.onnx")
    assert model.SerializeToString() == before
    again = onnx.load(str(tmp_path / "big.onnx"))
    assert [t.raw_data for t in again.graph.initializer] == [
        t.raw_data for t in model.graph.initializer
    ]
