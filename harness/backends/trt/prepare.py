"""ONNX graphs prepared for a strongly typed TensorRT (11+): an FP16 copy, verified against the FP32 graph.

TensorRT 11 has no FP16 builder flag: the graph's own types are the precision. The copy is made with
onnxconverter-common's ``float16`` converter (weights and I/O in FP16) and checked in ONNX Runtime against the
FP32 graph on seeded inputs before it is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import HarnessError

FP16_TOLERANCE = 2e-2  # max |fp16 - fp32| relative to the FP32 output's largest magnitude


def fp16_onnx(onnx_path: Path, out_path: Path, tolerance: float = FP16_TOLERANCE) -> Path:
    """Write an FP16 copy of ``onnx_path`` to ``out_path`` (reused when already there) and verify it."""
    if out_path.is_file():
        return out_path
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise HarnessError(
            "FP16 on a strongly typed TensorRT needs an FP16 ONNX graph: pip install "
            "onnxconverter-common, or export the model in FP16 and run it as fp32"
        ) from None
    from harness.onnx_io import load_model, save_model

    model = load_model(onnx_path)
    converted = float16.convert_float_to_float16(model, keep_io_types=False)
    save_model(converted, out_path)
    try:
        error = fp16_error(onnx_path, out_path)
    except (
        Exception
    ) as exc:  # ONNX Runtime may lack an FP16 kernel on the CPU: say so, keep the copy
        raise HarnessError(
            f"the FP16 copy of {onnx_path} could not be verified in ONNX Runtime "
            f"({str(exc).splitlines()[0]})"
        ) from None
    if error > tolerance:
        out_path.unlink()
        raise HarnessError(
            f"the FP16 copy of {onnx_path} differs from it by {error:.2%} of the output "
            f"scale (> {tolerance:.0%}): the model does not survive FP16"
        )
    return out_path


def fp16_error(fp32_path: Path, fp16_path: Path, seed: int = 0) -> float:
    """Largest |fp16 - fp32| output difference over the FP32 output's largest magnitude."""
    import onnxruntime as ort

    reference = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    candidate = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in reference.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    expected = reference.run(None, feeds)
    half = {name: value.astype(np.float16) for name, value in feeds.items()}
    got = candidate.run(None, half)
    worst = 0.0
    for e, g in zip(expected, got):
        scale = float(np.abs(e).max()) or 1.0
        worst = max(worst, float(np.abs(g.astype(np.float32) - e).max()) / scale)
    return worst
