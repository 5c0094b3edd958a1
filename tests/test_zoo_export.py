"""Every zoo model and variant exports to ONNX and computes what the torch module computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from harness.errors import HarnessError
from harness.export import export_module
from harness.geometry import merged_kernel
from harness.zoo import build_model, list_models, list_variants, variant_spec
from tests.conftest import zoo_case

CASES = [zoo_case(m, v, id=f"{m}-{v}") for m in list_models() for v in list_variants(m)]


@pytest.mark.parametrize("model,variant", CASES)
def test_export_round_trip(model: str, variant: str, tmp_path: Path):
    module, shape = build_model(model, variant)
    path = tmp_path / "m.onnx"
    exported = export_module(module, shape, path)
    assert exported.opset_import[0].version >= 17
    assert all(
        d.dim_value > 0 for d in exported.graph.input[0].type.tensor_type.shape.dim
    )  # static shapes
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x.numpy()})
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("model", [zoo_case(m, id=m) for m in list_models()])
def test_variants_remove_activations_and_keep_shapes(model: str):
    base, shape = build_model(model)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        reference_shape = base(x).shape
    acts = sum(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in base.modules())
    for variant in list_variants(model)[1:]:
        compressed, _ = build_model(model, variant)
        spec = variant_spec(model, variant)
        left = sum(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6)) for m in compressed.modules())
        assert acts - left == len(spec.remove)
        with torch.no_grad():
            assert compressed(x).shape == reference_shape


def test_padding_moves_to_the_first_conv_of_a_linear_run():
    module, _ = build_model("resnet20", "dc-all")
    # stem conv, ReLU, 3 blocks, then stage 2's first block: 3x3 stride 2, 3x3 -> merged 7x7,
    # centred pad 3
    strided = module[2 + 3]
    convs = [m for m in strided.main.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(3, 3), (0, 0)]
    assert merged_kernel([3, 3], [2, 1]) == 7
    assert merged_kernel([1, 3, 1], [1, 2, 1]) == 3


def test_width_pruning_reaches_the_published_parameter_reduction():
    counts = {}
    for variant in ("baseline", "cie-27x"):
        module, shape = build_model("vgg19", variant)
        counts[variant] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert (
        26 < counts["baseline"] / counts["cie-27x"] < 29
    )  # CIE: 27.23x fewer parameters on VGG-19


def test_unknown_names_are_refused():
    with pytest.raises(HarnessError, match="unknown model"):
        build_model("resnet9000")
    with pytest.raises(HarnessError, match="unknown variant"):
        build_model("resnet20", "nope")


def test_export_applies_or_refuses_input_shape_and_writes_ir_8(tmp_path: Path, capsys):
    from harness.cli import main

    out = tmp_path / "r20.onnx"
    assert main(["export", "resnet20", "--input-shape", "3x48x48", "-o", str(out)]) == 0
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 48, 48]
    assert (
        model.ir_version == 8
    )  # the lowest IR holding opset 17 (TensorRT 8.5, JetPack's ONNX Runtime)
    assert "3x48x48" in capsys.readouterr().out
    assert (
        main(["export", "lenet5", "--input-shape", "3x32x32", "-o", str(tmp_path / "l.onnx")]) == 2
    )
    assert "cannot run on input shape (1, 3, 32, 32)" in capsys.readouterr().err
    assert main(["export", str(out), "--input-shape", "3x8x8", "-o", str(tmp_path / "c.onnx")]) == 2


def test_a_factory_calling_sys_exit_is_one_error_line(tmp_path: Path, capsys, monkeypatch):
    from harness.cli import main

    (tmp_path / "exiting_factory.py").write_text("import sys\n\ndef build():\n    sys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(
        [
            "export",
            "exiting_factory:build",
            "--input-shape",
            "3x8x8",
            "-o",
            str(tmp_path / "x.onnx"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "SystemExit(3)" in err and "Traceback" not in err


def test_a_dynamic_batch_export_counts_flops_per_sample(tmp_path: Path, capsys):
    from harness.cli import main

    module = torch.nn.Conv2d(3, 4, 3)
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(
        module,
        (torch.randn(1, 3, 8, 8),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
    )
    assert main(["export", str(path), "-o", str(tmp_path / "copy.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"{2 * 4 * 36 * 27 / 1e6:.2f} MFLOPs (dynamic batch counted at batch 1" in out


def _export_2_4(
    model,
    args,
    f,
    export_params=True,
    verbose=False,
    training=None,
    input_names=None,
    output_names=None,
    operator_export_type=None,
    opset_version=None,
    do_constant_folding=True,
    dynamic_axes=None,
    keep_initializers_as_inputs=None,
    custom_opsets=None,
    export_modules_as_functions=False,
    autograd_inlining=True,
):
    """torch 2.4.1's ``torch.onnx.export`` signature (no ``dynamo``: it came in 2.5), run by the
    installed exporter's TorchScript path."""
    real = _export_2_4.real
    return real(
        model,
        args,
        f,
        input_names=input_names,
        output_names=output_names,
        opset_version=opset_version,
        do_constant_folding=do_constant_folding,
        dynamo=False,
    )


def test_export_runs_on_the_torch_floor_signature(tmp_path, monkeypatch):
    """The torch extra says >= 2.0 and JetPack 5.1's Python 3.8 tops out at 2.4.1, whose export
    takes no ``dynamo`` keyword: harness passes it only where the signature has it."""
    from harness.export import torchscript_exporter

    assert torchscript_exporter(torch.onnx.export) == {"dynamo": False}
    assert torchscript_exporter(_export_2_4) == {}
    _export_2_4.real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", _export_2_4)
    module, shape = build_model("lenet5", "baseline")
    model = export_module(module, shape, tmp_path / "m.onnx")
    assert [n.op_type for n in model.graph.node].count("Conv") == 2
