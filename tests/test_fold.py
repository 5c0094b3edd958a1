"""Folding: exact merges checked numerically on real exported models, every refusal reason,
idempotence."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from harness.errors import FoldVerificationError, HarnessError
from harness.export import export_module
from harness.fold import FoldAction, RooflineCostModel, fold_model, verify_fold
from harness.geometry import merged_kernel
from harness.graph_stats import op_histogram
from harness.onnx_io import make_model
from tests.conftest import zoo_case


def _export(module: nn.Module, shape, tmp_path: Path, name: str = "m.onnx") -> onnx.ModelProto:
    return export_module(module.eval(), shape, tmp_path / name)


def _convs(model: onnx.ModelProto) -> int:
    return op_histogram(model).get("Conv", 0)


class LinearChain(nn.Module):
    """Convs (each optionally with BatchNorm) with nothing nonlinear between, optionally inside a
    residual."""

    def __init__(self, channels, kernels, strides, groups, bias, bn, residual):
        super().__init__()
        merged = merged_kernel(kernels, strides)
        layers = []
        for i, (k, s, g) in enumerate(zip(kernels, strides, groups)):
            layers.append(
                nn.Conv2d(
                    channels[i],
                    channels[i + 1],
                    k,
                    s,
                    (merged - 1) // 2 if i == 0 else 0,
                    groups=g,
                    bias=bias,
                )
            )
            if bn:
                layers.append(nn.BatchNorm2d(channels[i + 1]))
        self.body = nn.Sequential(*layers)
        self.residual = residual

    def forward(self, x):
        y = self.body(x)
        return torch.relu(x + y) if self.residual else torch.relu(y)


@st.composite
def chains(draw):
    depth = draw(st.integers(2, 3))
    residual = draw(st.booleans())
    depthwise = draw(st.booleans())
    width = draw(st.sampled_from([4, 6, 8]))
    kernels = [draw(st.sampled_from([1, 3, 5, 7])) for _ in range(depth)]
    strides = [1] * depth if residual else [draw(st.sampled_from([1, 2])) for _ in range(depth)]
    if depthwise:
        channels, groups = [width] * (depth + 1), [width] * depth
    else:
        channels = [width] + [draw(st.sampled_from([4, 8, 12])) for _ in range(depth - 1)]
        channels.append(width if residual else draw(st.sampled_from([4, 8])))
        groups = [
            draw(
                st.sampled_from(
                    [g for g in (1, 2, 4) if channels[i] % g == 0 and channels[i + 1] % g == 0]
                )
            )
            for i in range(depth)
        ]
    return dict(
        channels=channels,
        kernels=kernels,
        strides=strides,
        groups=groups,
        bias=draw(st.booleans()),
        bn=draw(st.booleans()),
        residual=residual,
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=chains())
def test_random_linear_chains_fold_exactly_into_one_conv(spec, tmp_path):
    torch.manual_seed(0)
    module = LinearChain(**spec)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    model = _export(module, (spec["channels"][0], 23, 23), tmp_path)
    result = fold_model(model, merge="all")
    assert _convs(result.model) == 1
    assert op_histogram(result.model).get("Add", 0) == 0
    if spec["groups"] == [spec["channels"][0]] * len(
        spec["groups"]
    ):  # depthwise o depthwise stays depthwise
        assert result.model.graph.node[0].attribute and any(
            a.name == "group" and a.i == spec["channels"][0]
            for a in result.model.graph.node[0].attribute
        )
    verification = verify_fold(
        model, result.model, batch_sizes=(1, 2)
    )  # batch 2 as well: small graphs
    assert verification.max_rel_error < 1e-4 and verification.batch_sizes == [1, 2]


def test_padded_inner_conv_is_refused_with_its_reason(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1))
    model = _export(module, (3, 16, 16), tmp_path)
    result = fold_model(model, merge="all")
    assert _convs(result.model) == 2
    refusals = [r for r in result.report.records if r.action is FoldAction.REFUSED]
    assert len(refusals) == 1 and "pads its input" in refusals[0].detail
    assert "refused" in result.report.to_text()


def _two_branch_graph(pads_b, kernel_b=3, out_b=8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["x", "wb"], ["b"], pads=pads_b),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "wa"),
            numpy_helper.from_array(
                rng.standard_normal((4, 4, kernel_b, kernel_b)).astype(np.float32), "wb"
            ),
        ],
    )
    del out_b
    return onnx.shape_inference.infer_shapes(make_model(g, 17))


def test_parallel_branches_fold_only_when_their_windows_align():
    aligned = _two_branch_graph([1, 1, 1, 1])
    result = fold_model(aligned, merge="all")
    assert op_histogram(result.model) == {"Conv": 1}
    verify_fold(aligned, result.model)
    shifted = _two_branch_graph(
        [2, 0, 0, 2]
    )  # b looks at a shifted window: one 4x4 window covers both
    result = fold_model(shifted, merge="all")
    assert op_histogram(result.model) == {"Conv": 1}
    assert [a.ints for a in result.model.graph.node[0].attribute if a.name == "kernel_shape"] == [
        [4, 4]
    ]
    verify_fold(shifted, result.model)
    broadcast = _two_branch_graph([0, 0, 0, 0], kernel_b=8)  # 8x8 + 1x1 outputs: a broadcasting Add
    result = fold_model(broadcast, merge="all")
    assert op_histogram(result.model) == {"Add": 1, "Conv": 2}
    refusals = [r for r in result.report.records if r.action is FoldAction.REFUSED]
    assert refusals and "differ in shape" in refusals[0].detail


def test_repvgg_block_folds_into_one_conv(tmp_path):
    class RepVGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.k3 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.k1 = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
            self.identity = nn.BatchNorm2d(8)

        def forward(self, x):
            return torch.relu(self.k3(x) + self.k1(x) + self.identity(x))

    torch.manual_seed(1)
    module = RepVGG()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model = _export(module, (8, 12, 12), tmp_path)
    assert (
        op_histogram(model).get("BatchNormalization") == 1
    )  # the identity branch's BN survives export
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 1, "Relu": 1}
    assert verify_fold(model, result.model).max_rel_error < 1e-4


class MobileOneBlock(nn.Module):
    """MobileOne's training-time block (Vasu et al., 2023): ``branches`` parallel BN(k x k conv), a
    BN(1x1 conv) scale branch when k > 1 and a BN identity when shapes allow, summed, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()

        def conv_bn(k: int) -> nn.Module:
            conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout))

        self.convs = nn.ModuleList([conv_bn(kernel) for _ in range(4)])
        self.scale = conv_bn(1) if kernel > 1 else None
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None

    def forward(self, x):
        y = sum(branch(x) for branch in self.convs)
        y = y + self.scale(x) if self.scale is not None else y
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


@pytest.mark.parametrize("stride", [1, 2])
def test_mobileone_blocks_fold_into_their_deploy_form(tmp_path, stride):
    # a depthwise block then a pointwise one (8 -> 16 channels), as in every MobileOne stage
    torch.manual_seed(2)
    module = nn.Sequential(MobileOneBlock(8, 8, 3, stride, 8), MobileOneBlock(8, 16, 1, 1, 1))
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model = _export(module, (8, 12, 12), tmp_path)
    assert _convs(model) == 4 + 1 + 4
    result = fold_model(model, merge="all")
    assert op_histogram(result.model) == {"Conv": 2, "Relu": 2}
    depthwise, pointwise = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert {a.name: a.i for a in depthwise.attribute}.get("group") == 8
    assert [a.ints for a in depthwise.attribute if a.name == "strides"] == [[stride, stride]]
    weights = {t.name: t.dims for t in result.model.graph.initializer}
    assert weights[depthwise.input[1]] == [8, 1, 3, 3]
    assert weights[pointwise.input[1]] == [16, 8, 1, 1]
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        expected = module.eval()(x).numpy()
    session = ort.InferenceSession(
        result.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _bn_graph(with_identities: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.standard_normal((4, 3, 3, 3)),
        "scale": rng.uniform(0.5, 1.5, 4),
        "bias": rng.standard_normal(4),
        "mean": rng.standard_normal(4),
        "var": rng.uniform(0.5, 2, 4),
        "one": np.ones(1),
        "zero": np.zeros(1),
        "shape": np.array([1, 4, 8, 8]),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], epsilon=1e-3
        ),
    ]
    last = "b"
    if with_identities:
        nodes += [
            helper.make_node("Identity", ["b"], ["i1"]),
            helper.make_node("Dropout", ["i1"], ["i2"]),
            helper.make_node("Mul", ["i2", "one"], ["i3"]),
            helper.make_node("Add", ["zero", "i3"], ["i4"]),
            helper.make_node("Reshape", ["i4", "shape"], ["i5"]),
            helper.make_node("Transpose", ["i5"], ["t1"], perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 3, 1, 2]),
        ]
        last = "t2"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [
            numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k)
            for k, v in inits.items()
        ],
    )
    return onnx.shape_inference.infer_shapes(make_model(g, 17))


def test_batchnorm_and_identity_like_nodes_are_folded_away():
    model = _bn_graph(with_identities=True)
    result = fold_model(model, merge="none")
    assert op_histogram(result.model) == {"Conv": 1, "Relu": 1}
    reasons = {r.detail for r in result.report.records if r.action is FoldAction.REMOVED}
    assert {
        "Identity",
        "Dropout (inference)",
        "Mul by 1",
        "Add of 0",
        "Reshape to the same shape",
        "Transpose pair that cancels",
    } <= reasons
    assert verify_fold(model, result.model).max_rel_error < 1e-5


def test_folding_is_idempotent(tmp_path):
    from harness.zoo import build_model

    module, shape = build_model("resnet20", "dc-1x1")
    model = _export(module, shape, tmp_path)
    once = fold_model(model, merge="all")
    twice = fold_model(once.model, merge="all")
    assert not twice.report.changed
    assert op_histogram(twice.model) == op_histogram(once.model)


def test_auto_declines_a_merge_that_does_not_pay(tmp_path):
    # 3x3 then 3x3 on 64 channels: merging gives a 5x5 (25 vs 18 multiply-adds per pixel and channel
    # pair)
    module = nn.Sequential(nn.Conv2d(64, 64, 3, padding=2), nn.Conv2d(64, 64, 3), nn.ReLU())
    model = _export(module, (64, 28, 28), tmp_path)
    compute_bound = RooflineCostModel(peak_flops=1e11, bandwidth=1e12, overhead_s=1e-7)
    auto = fold_model(model, merge="auto", cost_model=compute_bound)
    assert _convs(auto.model) == 2 and not auto.report.changed
    planned = [r for r in auto.report.records if r.action is FoldAction.PLANNED]
    assert planned and "segments [[0, 0], [1, 1]]" in planned[0].detail
    launch_bound = RooflineCostModel(peak_flops=1e15, bandwidth=1e13, overhead_s=1e-3)
    assert _convs(fold_model(model, merge="auto", cost_model=launch_bound).model) == 1
    assert _convs(fold_model(model, merge="all", cost_model=compute_bound).model) == 1


@pytest.mark.parametrize(
    "model_name,variant,expected_convs",
    [
        ("resnet20", "dc-1x1", 10),  # stem + one conv per block (9)
        ("resnet56", "dc-1x1", 28),  # stem + 27
        zoo_case("vgg16", "dc-1x1", 8),  # 13 convs, 5 pairs merged
        # 52 - 2 x 10 collapsed blocks - 7 linear bottleneck -> expand merges
        zoo_case("mobilenetv2", "dc-ds", 25),
        zoo_case("resnet34", "dc-1x1", 24),  # 36 - 12 identity blocks each losing one conv
    ],
)
def test_zoo_variants_fold_to_the_conv_count_their_spec_implies(
    model_name, variant, expected_convs, tmp_path
):
    from harness.zoo import build_model

    module, shape = build_model(model_name, variant)
    model = _export(module, shape, tmp_path)
    result = fold_model(model, merge="all")
    assert _convs(result.model) == expected_convs
    assert verify_fold(model, result.model, seeds=(0,), batch_sizes=(1,)).max_rel_error < 1e-4


def test_an_unknown_merge_mode_is_refused_clearly(tmp_path):
    model = _export(nn.Sequential(nn.Conv2d(3, 4, 3)), (3, 8, 8), tmp_path)
    with pytest.raises(HarnessError, match="--merge"):
        fold_model(model, merge="some")


def test_verification_catches_a_wrong_graph(tmp_path):
    model = _export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (3, 8, 8), tmp_path)
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    weight = broken.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values[0, 0, 0, 0] += 1.0
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    with pytest.raises(FoldVerificationError, match="max relative error"):
        verify_fold(model, broken)


def test_unknown_ops_and_other_opsets_pass_through(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2), nn.Conv2d(4, 4, 3), nn.GELU())
    for opset in (11, 13, 21):
        path = tmp_path / f"o{opset}.onnx"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (torch.randn(1, 3, 8, 8),),
                str(path),
                opset_version=opset,
                dynamo=False,
            )
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        result = fold_model(model, merge="all")
        assert _convs(result.model) == 1
        assert result.model.opset_import[0].version == opset
        verify_fold(model, result.model)


def test_fold_cli(tmp_path, capsys):
    from harness.cli import main

    source = tmp_path / "in.onnx"
    _export(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=2), nn.Conv2d(8, 8, 3), nn.ReLU()),
        (3, 16, 16),
        tmp_path,
        "in.onnx",
    )
    out, report = tmp_path / "out.onnx", tmp_path / "report.json"
    assert (
        main(["fold", str(source), "-o", str(out), "--merge", "all", "--report", str(report)]) == 0
    )
    text = capsys.readouterr().out
    assert "[merged]" in text and "verified: max relative error" in text and "Conv 2->1" in text
    assert _convs(onnx.load(str(out))) == 1
    import json

    data = json.loads(report.read_text())
    assert data["verification"]["max_rel_error"] < 1e-4 and data["changed"]
    assert main(["fold", str(tmp_path / "missing.onnx"), "-o", str(out)]) == 2
    assert main(["fold", str(source), "-o", str(source)]) == 2


@pytest.mark.parametrize(
    "merged_ms,merged_kernel,expected_convs,mismatches",
    [
        (0.05, 5, 1, 0),  # the table says the merged 5x5 is cheaper than the two 3x3: merge
        (5.0, 5, 2, 0),  # the table says it is dearer: keep both
        (
            0.05,
            7,
            2,
            1,
        ),  # the row was measured for another kernel: not trusted, the roofline prices it (1.6 ms)
    ],
)
def test_measured_table_drives_the_merge_choice(
    tmp_path, merged_ms, merged_kernel, expected_convs, mismatches
):
    from harness.fold import TableCostModel

    model = _export(
        nn.Sequential(nn.Conv2d(64, 64, 3, padding=2), nn.Conv2d(64, 64, 3), nn.ReLU()),
        (64, 28, 28),
        tmp_path,
    )
    table = tmp_path / "t_long.csv"
    table.write_text(
        "id,st,end,ker,str,is_dw,time,stdev\n0,0,0,3,1,0,0.1,0.01\n1,1,1,3,1,0,0.1,0.01\n"
        f"2,0,1,{merged_kernel},1,0,{merged_ms},0.01\n"
    )
    compute_bound = RooflineCostModel(peak_flops=1e11, bandwidth=1e12, overhead_s=1e-7)
    cost = TableCostModel.from_csv(table, fallback=compute_bound)
    result = fold_model(model, merge="auto", cost_model=cost)
    assert _convs(result.model) == expected_convs
    assert cost.mismatches == mismatches


def _auto_pad_chain(mode: str, size) -> onnx.ModelProto:
    """x -> 3x3 conv stride 2 (auto_pad) -> 1x1 conv (auto_pad) -> Relu: an exact chain (SAME pads
    of a 3x3 stride-2 conv are uneven on an even size)."""
    rng = np.random.default_rng(4)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((6, 4, 1, 1)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["y0"], "first", auto_pad=mode, strides=[2, 2]),
        helper.make_node("Conv", ["y0", "w1"], ["y1"], "second", auto_pad=mode),
        helper.make_node("Relu", ["y1"], ["out"], "relu"),
    ]
    half = -(-size // 2) if isinstance(size, int) else "h"
    graph = helper.make_graph(
        nodes,
        "auto_pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 6, half, half])],
        weights,
    )
    return make_model(graph)


@pytest.mark.parametrize(
    "mode,size,pads",
    [
        ("SAME_UPPER", 16, [0, 0, 1, 1]),
        ("SAME_LOWER", 16, [1, 1, 0, 0]),
        ("SAME_UPPER", 15, [1] * 4),
    ],
)
def test_auto_pad_is_written_as_explicit_pads_and_the_chain_merges(mode, size, pads):
    model = _auto_pad_chain(mode, size)
    result = fold_model(model, merge="all")
    records = result.report.to_dict()["records"]
    written = [r for r in records if r["pass"] == "explicit_pads"]
    assert [r["action"] for r in written] == ["folded", "folded"]
    assert f"auto_pad {mode} written as pads {pads}" in written[0]["detail"]
    assert _convs(result.model) == 1
    (conv,) = [n for n in result.model.graph.node if n.op_type == "Conv"]
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert "auto_pad" not in attrs and attrs["pads"] == pads
    assert verify_fold(model, result.model).max_rel_error < 1e-4


def test_valid_auto_pad_needs_no_sizes_and_merges():
    model = _auto_pad_chain("VALID", "n")  # dynamic spatial size: VALID pads are 0 whatever it is
    bound = fold_model(model, merge="all", input_shape=(3, 15, 15))
    records = bound.report.to_dict()["records"]
    assert not [r for r in records if r["pass"] == "explicit_pads"]
    assert _convs(bound.model) == 1


@pytest.mark.parametrize("rankless", [False, True])
def test_auto_pad_on_an_unknown_size_is_refused_with_the_reason(rankless):
    model = _auto_pad_chain("SAME_UPPER", "n")
    if rankless:  # an input with no shape at all: no sizes either
        model.graph.input[0].type.tensor_type.ClearField("shape")
    result = fold_model(model, merge="all")
    refused = [r for r in result.report.to_dict()["records"] if r["pass"] == "explicit_pads"]
    assert refused and all(r["action"] == "refused" for r in refused)
    assert "unknown spatial size: bind it with --input-shape" in refused[0]["detail"]
    assert _convs(result.model) == 2
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert all("pads" not in {a.name for a in conv.attribute} for conv in convs)


def test_fold_cost_prices_the_folded_convs_from_the_table_or_says_there_are_none(tmp_path, capsys):
    from harness.cli import main

    table = tmp_path / "t.csv"
    table.write_text("id,st,end,time,stdev\n0,0,0,0.125,0\n1,1,1,0.25,0\n")
    lenet = tmp_path / "l.onnx"
    assert main(["export", "lenet5", "-o", str(lenet)]) == 0
    argv = ["fold", str(lenet), "-o", str(tmp_path / "e.onnx"), "--cost", str(table)]
    assert main(argv) == 0  # nothing to fold: its two convs are priced as they are
    assert "table prediction for the folded convs: 0.375 ms\n" in capsys.readouterr().out
    resnet = tmp_path / "r.onnx"
    assert main(["export", "resnet20", "--variant", "dc-1x1", "-o", str(resnet)]) == 0
    argv = ["fold", str(resnet), "-o", str(tmp_path / "f.onnx"), "--cost", str(table)]
    assert main(argv) == 0  # the stem conv (0, 0) is in the table, merged spans are not
    out = capsys.readouterr().out
    predicted = re.search(
        r"table prediction for the folded convs: ([0-9.]+) ms \(\d+ convs not", out
    )
    assert predicted and float(predicted.group(1)) in (0.125, 0.375)
    weights = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "no_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [weights],
    )
    onnx.save(make_model(graph), str(tmp_path / "m.onnx"))
    argv = ["fold", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "g.onnx"), "--cost", str(table)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "table prediction: none" in out and "0.000 ms" not in out


@pytest.mark.parametrize(
    "layer,shape",
    [
        (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), (4, 5, 5)),
        (lambda: nn.ConvTranspose1d(4, 6, 4, stride=2, padding=1, bias=False), (4, 9)),
    ],
)
def test_batchnorm_folds_into_transposed_convs(tmp_path, layer, shape):
    torch.manual_seed(3)
    conv = layer()
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[len(shape) - 1](6)
    with torch.no_grad():
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
    model = _export(nn.Sequential(conv, norm), shape, tmp_path)
    assert "BatchNormalization" in op_histogram(model)
    result = fold_model(model, merge="none")
    assert "BatchNormalization" not in op_histogram(result.model)
    folded = [r for r in result.report.to_dict()["records"] if r["pass"] == "fold_batchnorm"]
    assert folded and folded[0]["action"] == "folded"
    assert verify_fold(model, result.model).max_rel_error < 1e-4


@pytest.mark.parametrize("spatial", [(16,), (5, 6, 6)])
def test_batchnorm_folds_into_1d_and_3d_convs(spatial):
    rng = np.random.default_rng(5)
    kernel = (3,) * len(spatial)
    inits = {
        "w": rng.standard_normal((6, 4, *kernel)),
        "s": rng.uniform(0.5, 1.5, 6),
        "b": rng.standard_normal(6),
        "m": rng.standard_normal(6),
        "v": rng.uniform(0.5, 2, 6),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * (2 * len(spatial))),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_nd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a.astype(np.float32), k) for k, a in inits.items()],
    )
    model = make_model(graph)
    result = fold_model(model, merge="none")
    assert op_histogram(result.model) == {"Conv": 1}
    assert verify_fold(model, result.model).max_rel_error < 1e-4


def test_merge_records_count_flops_per_sample_as_the_totals_do():
    rng = np.random.default_rng(6)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["y0"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["y0", "w1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "batch4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4, 16, 16])],
        weights,
    )
    result = fold_model(make_model(graph), merge="all")
    (merged,) = [r for r in result.report.to_dict()["records"] if r["action"] == "merged"]
    assert merged["flops_before"] == result.report.flops_before == 2 * 4 * 256 * (36 + 4)
    assert merged["flops_after"] == result.report.flops_after == 2 * 4 * 256 * 36
