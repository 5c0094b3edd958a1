"""Folding edge cases: asymmetric pads, dilation, shortcuts, multiple consumers, Gemm/MatMul, bad
input, speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from harness.export import export_module
from harness.fold import FoldAction, fold_model, verify_fold
from harness.graph_stats import op_histogram
from harness.onnx_io import make_model

RNG = np.random.default_rng(0)


def _export(module: nn.Module, shape, tmp_path: Path, name: str = "m.onnx") -> onnx.ModelProto:
    return export_module(module.eval(), shape, tmp_path / name)


def _attr(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _model(nodes, inputs, outputs, weights, opset: int = 17) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return onnx.shape_inference.infer_shapes(make_model(graph, opset))


def _w(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _fold_and_check(model: onnx.ModelProto, merge: str = "all"):
    result = fold_model(model, merge=merge)
    assert verify_fold(model, result.model).max_rel_error < 1e-4
    return result


def test_asymmetric_pads_on_the_first_conv_carry_over(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 11, 9])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[2, 0, 1, 3], strides=[2, 1]),
            helper.make_node("Conv", ["a", "w2", "b2"], ["y"], strides=[1, 2]),
        ],
        [x],
        [y],
        {"w1": _w(5, 3, 3, 2), "b1": _w(5), "w2": _w(4, 5, 2, 3), "b2": _w(4)},
    )
    result = _fold_and_check(model)
    (conv,) = result.model.graph.node
    assert _attr(conv, "pads") == [2, 0, 1, 3] and _attr(conv, "strides") == [2, 2]
    assert _attr(conv, "kernel_shape") == [3 + 2 - 1 + 1, 2 + 2]  # k1 + (k2 - 1) * s1 per axis


def test_dilated_chains_merge_exactly_and_stay_dilated():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], pads=[4, 4, 4, 4], dilations=[2, 2]),
            helper.make_node("Conv", ["a", "w2"], ["y"], dilations=[2, 2]),
        ],
        [x],
        [y],
        {"w1": _w(4, 4, 3, 3), "w2": _w(4, 4, 3, 3)},
    )
    result = _fold_and_check(model)
    (conv,) = result.model.graph.node
    assert _attr(conv, "dilations") == [2, 2] and _attr(conv, "kernel_shape") == [
        5,
        5,
    ]  # not a dense 9x9
    mixed = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], pads=[3, 3, 3, 3], dilations=[2, 2]),
            helper.make_node("Conv", ["a", "w2"], ["y"]),
        ],
        [x],
        [y],
        {"w1": _w(4, 4, 3, 3), "w2": _w(4, 4, 3, 3)},
    )
    result = _fold_and_check(mixed)  # 3x3 d2 then 3x3 d1: a dense 7x7, still exact
    assert op_histogram(result.model) == {"Conv": 1}


def test_strided_1x1_then_3x3_merges_into_a_dilated_kernel(tmp_path):
    module = nn.Sequential(nn.Conv2d(8, 8, 1, stride=2, padding=2), nn.Conv2d(8, 8, 3))
    model = _export(module, (8, 16, 16), tmp_path)
    result = _fold_and_check(model)
    (conv,) = result.model.graph.node
    assert _attr(conv, "kernel_shape") == [3, 3] and _attr(conv, "dilations") == [2, 2]
    merges = [r for r in result.report.records if r.action is FoldAction.MERGED]
    assert merges[0].flops_after == 2 * 8 * 8 * 64 * 9  # priced as 9 taps on the 8x8 output, not 25


def test_multiple_consumers_are_refused_with_their_reason(tmp_path):
    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (
                nn.Conv2d(3, 4, 3, padding=1),
                nn.Conv2d(4, 4, 1),
                nn.Conv2d(4, 4, 1),
            )

        def forward(self, x):
            y = self.a(x)
            return torch.relu(self.b(y)) * torch.sigmoid(self.c(y))

    model = _export(Fork(), (3, 8, 8), tmp_path)
    result = _fold_and_check(model)
    assert op_histogram(result.model)["Conv"] == 3
    refusals = [r for r in result.report.records if r.action is FoldAction.REFUSED]
    assert len(refusals) == 2 and all("multiple consumers" in r.detail for r in refusals)
    assert "multiple consumers" in result.report.to_text()
    assert not [
        r for r in fold_model(model, merge="none").report.records if r.action is FoldAction.REFUSED
    ]


def test_strided_block_with_downsample_shortcut_folds(tmp_path):
    class Down(
        nn.Module
    ):  # conv3x3 s2 pad3 -> conv3x3 pad0 (a 7x7 s2), plus a 1x1 s2 shortcut with BN
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(4, 8, 3, 2, 3, bias=False),
                nn.BatchNorm2d(8),
                nn.Conv2d(8, 8, 3, bias=False),
                nn.BatchNorm2d(8),
            )
            self.short = nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    model = _export(Down(), (4, 16, 16), tmp_path)
    result = _fold_and_check(model)
    assert op_histogram(result.model) == {"Conv": 1, "Relu": 1}
    conv = result.model.graph.node[0]
    assert _attr(conv, "kernel_shape") == [7, 7] and _attr(conv, "strides") == [2, 2]
    assert [r.pass_name for r in result.report.records if r.action is FoldAction.FOLDED].count(
        "fold_residuals"
    ) == 1


def test_depthwise_residual_stays_depthwise():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1], group=6),
            helper.make_node("Add", ["x", "a"], ["y"]),
        ],
        [x],
        [y],
        {"w": _w(6, 1, 3, 3)},
    )
    result = _fold_and_check(model)
    (conv,) = result.model.graph.node
    assert _attr(conv, "group") == 6


def test_residual_refusals_are_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    strided = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Conv", ["x", "w2"], ["b"]),  # 5x5 s1 p0 on 8x8: also 4x4
            helper.make_node("Add", ["a", "b"], ["y"]),
        ],
        [x],
        [y],
        {"w1": _w(4, 4, 3, 3), "w2": _w(4, 4, 5, 5)},
    )
    result = _fold_and_check(strided)
    assert op_histogram(result.model) == {"Conv": 2, "Add": 1}
    assert any(
        "different strides" in r.detail
        for r in result.report.records
        if r.action is FoldAction.REFUSED
    )
    channels = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["a", "x"], ["y"]),
        ],
        [x],
        [y],
        {"w1": _w(1, 4, 3, 3)},
    )  # 1 channel + 4 channels: a broadcasting Add
    result = _fold_and_check(channels)
    assert op_histogram(result.model) == {"Conv": 1, "Add": 1}
    assert any(
        "channel" in r.detail for r in result.report.records if r.action is FoldAction.REFUSED
    )


def test_gemm_chain_and_batchnorm_into_gemm_and_matmul(tmp_path):
    class Head(nn.Module):  # LeNet-like classifier left linear, with a BatchNorm1d
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(
                nn.Flatten(),
                nn.Linear(48, 32),
                nn.BatchNorm1d(32),
                nn.Linear(32, 10),
                nn.Dropout(0.5),
                nn.Linear(10, 10),
            )

        def forward(self, x):
            return self.fc(x)

    module = Head()
    bn = module.fc[2]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model = _export(module, (3, 4, 4), tmp_path)
    result = _fold_and_check(model)
    hist = op_histogram(result.model)
    assert "BatchNormalization" not in hist and "Dropout" not in hist and hist.get("Gemm", 0) == 1
    assert any(
        r.pass_name == "merge_gemm_chains" and r.action is FoldAction.MERGED
        for r in result.report.records
    )

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    matmul = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["a"]),
            helper.make_node("BatchNormalization", ["a", "g", "be", "mu", "var"], ["y"]),
        ],
        [x],
        [y],
        {
            "w": _w(6, 5),
            "b": _w(5),
            "g": _w(5),
            "be": _w(5),
            "mu": _w(5),
            "var": RNG.uniform(0.5, 2, 5).astype(np.float32),
        },
    )
    result = _fold_and_check(matmul, merge="none")
    assert op_histogram(result.model) == {"MatMul": 1, "Add": 1}


def test_training_mode_dropout_is_kept():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(
        [helper.make_node("Dropout", ["x", "r", "t"], ["y"])],
        [x],
        [y],
        {"r": np.array(0.5, np.float32), "t": np.array(True)},
    )
    result = fold_model(model, merge="none")
    assert op_histogram(result.model) == {"Dropout": 1}


def test_unknown_ops_are_left_untouched_and_a_second_fold_changes_nothing():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(
        [
            helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["a", "w2"], ["b"]),
            helper.make_node("LpNormalization", ["b"], ["c"]),
            helper.make_node("Conv", ["c", "w3"], ["y"]),
        ],
        [x],
        [y],
        {"w1": _w(4, 4, 3, 3), "w2": _w(4, 4, 1, 1), "w3": _w(4, 4, 1, 1)},
    )
    once = _fold_and_check(model)
    assert op_histogram(once.model) == {"Conv": 2, "LpNormalization": 1}
    twice = fold_model(once.model, merge="all")
    assert not twice.report.changed and not [
        r for r in twice.report.records if r.action is FoldAction.REFUSED
    ]
    assert twice.model.graph.SerializeToString() == once.model.graph.SerializeToString()


def test_report_is_json_and_explains_each_merge(tmp_path):
    import json

    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=2), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.ReLU()
    )
    result = _fold_and_check(_export(module, (3, 12, 12), tmp_path))
    data = json.loads(json.dumps(result.report.to_dict()))
    assert data["nodes_before"]["Conv"] == 2 and data["nodes_after"]["Conv"] == 1
    assert data["flops_after"] > 0 and data["changed"]
    text = result.report.to_text()
    assert "before: 3x3" in text and "after:  5x5" in text and "estimated" in text


def test_cli_rejects_non_onnx_input(tmp_path):
    from harness.cli import main

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    assert main(["fold", str(junk), "-o", str(tmp_path / "o.onnx")]) == 2
    assert not (tmp_path / "o.onnx").exists()


class LinearPairs(nn.Module):
    """``pairs`` blocks, each a 3x3 conv straight into a widening 1x1 conv (one merge), then ReLU,
    a narrowing 1x1 conv and ReLU."""

    def __init__(self, pairs: int):
        super().__init__()
        layers = []
        for _ in range(pairs):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 1), nn.ReLU()]
            layers += [nn.Conv2d(16, 8, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


def test_fold_work_does_not_grow_with_the_number_of_merges(tmp_path, monkeypatch):
    """Shape inference and ONNX Runtime sessions are what made folding slow (one per merge);
    counted, not timed: a graph with three times the merges takes as many of each. The wall time
    on ResNet-50 is a benchmark (benchmarks/fold_wall_time.py, docs/fold_wall_time.md)."""
    import onnxruntime as ort

    calls = {"shape inference": 0, "session": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        onnx.shape_inference,
        "infer_shapes",
        counted("shape inference", onnx.shape_inference.infer_shapes),
    )
    monkeypatch.setattr(ort, "InferenceSession", counted("session", ort.InferenceSession))
    work = {}
    for pairs in (2, 6):
        model = _export(LinearPairs(pairs), (8, 12, 12), tmp_path, f"pairs{pairs}.onnx")
        del model.graph.value_info[:]  # shapes fold must infer itself
        calls.update({k: 0 for k in calls})
        result = fold_model(model, merge="all")
        assert verify_fold(model, result.model).max_rel_error < 1e-4
        assert op_histogram(model)["Conv"] - op_histogram(result.model)["Conv"] == pairs
        work[pairs] = dict(calls)
    assert work[2] == work[6] and work[2]["session"] >= 1 and work[2]["shape inference"] >= 1, work


class PaddedChain(nn.Module):
    """Convs of any kernel size 1-7, stride and dilation, all padding on the first (asymmetric: a
    ZeroPad2d)."""

    def __init__(self, channels, kernels, strides, dilations, groups, pad):
        super().__init__()
        self.pad = nn.ZeroPad2d(pad)
        self.convs = nn.Sequential(
            *[
                nn.Conv2d(channels[i], channels[i + 1], k, s, dilation=d, groups=g)
                for i, (k, s, d, g) in enumerate(zip(kernels, strides, dilations, groups))
            ]
        )

    def forward(self, x):
        return torch.tanh(self.convs(self.pad(x)))


@st.composite
def padded_chains(draw):
    depth = draw(st.integers(2, 3))
    width = draw(st.sampled_from([2, 4]))
    channels = [width] + [draw(st.sampled_from([2, 4, 6])) for _ in range(depth)]
    groups = [
        draw(
            st.sampled_from(
                [g for g in (1, 2) if channels[i] % g == 0 and channels[i + 1] % g == 0]
            )
        )
        for i in range(depth)
    ]
    return dict(
        channels=channels,
        kernels=[draw(st.integers(1, 7)) for _ in range(depth)],
        strides=[draw(st.sampled_from([1, 2])) for _ in range(depth)],
        dilations=[draw(st.sampled_from([1, 1, 2])) for _ in range(depth)],
        groups=groups,
        pad=tuple(draw(st.integers(0, 3)) for _ in range(4)),
    )


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=padded_chains())
def test_random_chains_with_asymmetric_padding_merge_exactly(spec, tmp_path):
    torch.manual_seed(0)
    module = PaddedChain(**spec)
    try:
        model = _export(module, (spec["channels"][0], 29, 27), tmp_path)
    except Exception:  # the chain shrinks the image to nothing: not a valid model
        return
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 1, "Tanh": 1}
    assert verify_fold(model, result.model).max_rel_error < 1e-4
