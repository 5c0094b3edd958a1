"""Verification can fail: a folded graph with one merged weight corrupted, a bias dropped or a pad
shifted is caught on every zoo model (the deepest rewritten conv is mutated: where the output
responds least), and by ``harness verify`` with exit 1; equivalent graphs exit 0, bad input exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from harness.cli import main
from harness.errors import FoldVerificationError
from harness.export import export_module
from harness.fold import FoldAction, fold_model, verify_fold
from harness.onnx_io import save_model
from harness.zoo import ZOO, build_model, list_variants
from tests.conftest import zoo_case

SMALL_INPUT = (3, 64, 64)  # the ImageNet models at 64x64: the same layers, a fraction of the time


def _export(name: str, variant: str, tmp_path: Path) -> onnx.ModelProto:
    module, shape = build_model(name, variant)
    return export_module(module, SMALL_INPUT if shape[1] > 64 else shape, tmp_path / f"{name}.onnx")


def _rewritten_convs(model: onnx.ModelProto, result) -> list:
    """Convs and Gemms of the folded graph that a pass wrote (merged, BatchNorm folded, residual
    folded), in graph order; then the other convs (a pad shifted anywhere must be caught too)."""
    written = {
        r.result
        for r in result.report.records
        if r.action in (FoldAction.MERGED, FoldAction.FOLDED)
    }
    nodes = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm")]
    return [n for n in nodes if n.name not in written] + [n for n in nodes if n.name in written]


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def corrupt_weight(model: onnx.ModelProto, conv: onnx.NodeProto) -> None:
    """Change one weight of the conv by a tenth of the kernel's largest magnitude."""
    tensor = _initializer(model, conv.input[1])
    values = numpy_helper.to_array(tensor).copy()
    values.reshape(-1)[values.size // 2] += 0.1 * np.abs(values).max()
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def drop_bias(model: onnx.ModelProto, conv: onnx.NodeProto) -> None:
    del conv.input[2:]


def shift_pad(model: onnx.ModelProto, conv: onnx.NodeProto) -> None:
    """Move one row of padding from the bottom to the top (the output keeps its shape, shifted by
    one row)."""
    pads = next(a for a in conv.attribute if a.name == "pads")
    top, left, bottom, right = pads.ints
    pads.CopyFrom(
        helper.make_attribute(
            "pads",
            [top + 1, left, bottom - 1, right]
            if bottom > 0
            else [top - 1, left, bottom + 1, right],
        )
    )


MUTATIONS: Dict[str, Callable[[onnx.ModelProto, onnx.NodeProto], None]] = {
    "corrupt_weight": corrupt_weight,
    "drop_bias": drop_bias,
    "shift_pad": shift_pad,
}


def _target(model: onnx.ModelProto, convs: list, mutation: str) -> onnx.NodeProto:
    """The deepest rewritten conv the mutation changes: with a non-zero bias, or with padding to
    shift."""
    for conv in reversed(convs):
        if mutation == "drop_bias":
            if (
                len(conv.input) > 2
                and np.abs(numpy_helper.to_array(_initializer(model, conv.input[2]))).max() > 0
            ):
                return conv
        elif mutation == "shift_pad":
            pads = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
            pads = pads if conv.op_type == "Conv" else [0, 0, 0, 0]
            if pads[0] or pads[2]:
                return conv
        else:
            return conv
    raise LookupError(f"no conv for {mutation}")


ZOO_CASES = [zoo_case(n, list_variants(n)[1], id=f"{n}-{list_variants(n)[1]}") for n in ZOO]


@pytest.mark.parametrize("name,variant", ZOO_CASES)
def test_every_mutation_of_a_fold_is_caught_on_every_zoo_model(name, variant, tmp_path):
    original = _export(name, variant, tmp_path)
    result = fold_model(original, merge="all")
    assert verify_fold(original, result.model).verified
    convs = _rewritten_convs(original, result)
    names = [c.name for c in convs]
    caught = []
    for mutation, mutate in MUTATIONS.items():
        mutant = onnx.ModelProto()
        mutant.CopyFrom(result.model)
        try:
            conv = _target(
                mutant,
                sorted(
                    (n for n in mutant.graph.node if n.name in names),
                    key=lambda n: names.index(n.name),
                ),
                mutation,
            )
        except LookupError:
            assert name == "lenet5" and mutation == "shift_pad"  # LeNet-5's convs do not pad
            continue
        mutate(mutant, conv)
        with pytest.raises(FoldVerificationError, match="max relative error"):
            verify_fold(original, mutant, seeds=(0, 1), batch_sizes=(1,))
        caught.append(mutation)
    assert len(caught) >= 2


def test_a_zeroed_merged_conv_deep_in_mobilenetv2_is_caught(tmp_path):
    # the case that passed before: the output of a random MobileNetV2 barely responds to its input
    original = _export("mobilenetv2", "dc-ds", tmp_path)
    result = fold_model(original, merge="all")
    conv = _rewritten_convs(original, result)[-1]
    mutant = onnx.ModelProto()
    mutant.CopyFrom(result.model)
    weight = _initializer(
        mutant, next(n for n in mutant.graph.node if n.name == conv.name).input[1]
    )
    weight.CopyFrom(
        numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(weight)), weight.name)
    )
    with pytest.raises(FoldVerificationError, match="at tensor"):
        verify_fold(original, mutant)


def test_harness_verify_exit_codes(tmp_path, capsys):
    original = _export("resnet20", "dc-1x1", tmp_path)
    result = fold_model(original, merge="all")
    paths = {name: tmp_path / f"{name}.onnx" for name in ("original", "folded", "mutant")}
    save_model(original, paths["original"])
    save_model(result.model, paths["folded"])
    mutant = onnx.ModelProto()
    mutant.CopyFrom(result.model)
    names = [n.name for n in _rewritten_convs(original, result)]
    drop_bias(
        mutant, _target(mutant, [n for n in mutant.graph.node if n.name in names], "drop_bias")
    )
    save_model(mutant, paths["mutant"])
    assert main(["verify", str(paths["original"]), str(paths["folded"])]) == 0
    assert "equivalent" in capsys.readouterr().out
    assert (
        main(
            [
                "verify",
                str(paths["original"]),
                str(paths["mutant"]),
                "--json",
                str(tmp_path / "v.json"),
            ]
        )
        == 1
    )
    assert "different" in capsys.readouterr().out and (tmp_path / "v.json").is_file()
    assert main(["verify", str(paths["original"]), str(tmp_path / "missing.onnx")]) == 2
    other = tmp_path / "other.onnx"
    save_model(_export("lenet5", "baseline", tmp_path), other)
    assert main(["verify", str(paths["original"]), str(other)]) == 2  # not comparable
    err = capsys.readouterr().err
    assert "have different shapes: 1x3x32x32 against 1x1x28x28" in err and "Traceback" not in err
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(result.model)
    dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    save_model(dynamic, paths["mutant"])
    assert main(["verify", str(paths["original"]), str(paths["mutant"])]) == 2
    assert "differ in which dims are dynamic (1x3x32x32 against ?x3x32x32)" in (
        capsys.readouterr().err
    )
    assert main(["verify", str(paths["original"]), str(paths["mutant"]), "--batch", "1"]) == 0
