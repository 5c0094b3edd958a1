"""ONNX graphs prepared for a strongly typed TensorRT (11+), where the graph's own types are the
precision: an FP16 copy and an INT8 Q/DQ copy, each checked against the FP32 graph in ONNX Runtime.

TensorRT 11 has neither the FP16/INT8 builder flags nor calibrators. FP16: onnxconverter-common's
``float16`` converter (weights and I/O in FP16), refused over ``FP16_TOLERANCE``. INT8: explicit
quantization, made by ONNX Runtime's ``quantize_static`` in QDQ format (int8 weights per channel,
int8 activations per tensor, all symmetric: zero points 0, as TensorRT requires) from the same
calibration data as the 8.5/10 calibrator (``calibration_batches``); its error is recorded and
warned about over ``INT8_MAX_RELATIVE_ERROR`` / under ``INT8_MIN_TOP1_AGREEMENT``, never refused
(int8 error depends on the model and its data). Runs on the device: Python 3.8, no torch, no
TensorRT.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.backends.trt.cache import calibration_identity, file_sha256
from harness.backends.trt.versions import RANDOM_CALIBRATION_WARNING
from harness.errors import HarnessError, first_line
from harness.onnx_io import (
    check_allocation,
    input_dtypes,
    input_shapes,
    load_model,
    save_model,
    write_text_atomic,
)
from harness.profiles import Profile

FP16_TOLERANCE = 2e-2  # max |fp16 - fp32| relative to the FP32 output's largest magnitude
# INT8 warnings (not refusals), measured on the calibration batches: ||int8 - fp32|| / ||fp32||
# over all outputs, and the share of samples whose first output keeps its argmax. Measured here
# (random calibration data, seeded zoo weights): lenet5 1.2%, resnet20 0.65%, top-1 100%.
INT8_MAX_RELATIVE_ERROR = 0.05
INT8_MIN_TOP1_AGREEMENT = 0.95
QDQ_FORMAT = 1  # bump when the Q/DQ recipe below changes: every cached Q/DQ copy is then remade
# quantize_static's options for TensorRT (all present in onnxruntime 1.15, the declared floor):
# symmetric int8 activations and weights (zero point 0; TensorRT refuses others), bias left in
# float (TensorRT has no int32 DequantizeLinear; it fuses the float bias into the int8 conv).
QDQ_EXTRA_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}


def fp16_onnx(onnx_path: Path, out_path: Path, tolerance: float = FP16_TOLERANCE) -> Path:
    """Write an FP16 copy of ``onnx_path`` to ``out_path`` (reused when already there) and verify
    it."""
    if out_path.is_file():
        return out_path
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise HarnessError(
            "FP16 on a strongly typed TensorRT needs an FP16 ONNX graph: pip install "
            "onnxconverter-common, or export the model in FP16 and run it as fp32"
        ) from None

    model = load_model(onnx_path)
    converted = float16.convert_float_to_float16(model, keep_io_types=False)
    save_model(converted, out_path)
    try:
        error = fp16_error(onnx_path, out_path)
    except Exception as exc:  # ONNX Runtime may lack an FP16 kernel on the CPU: say so
        raise HarnessError(
            f"the FP16 copy of {onnx_path} could not be verified in ONNX Runtime "
            f"({first_line(exc)})"
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


def calibration_batches(
    shape: Sequence[int], data_dir: Optional[str], count: int
) -> List[np.ndarray]:
    """INT8 calibration inputs: every ``.npy`` in ``data_dir`` (each one batch of ``shape``), or,
    with a warning, ``count`` batches of seeded standard-normal data. The one source of calibration
    data: TensorRT 8.5/10's calibrator (build.py) and the Q/DQ graph for 11 both read it."""
    if data_dir:
        files = sorted(Path(data_dir).expanduser().glob("*.npy"))
        if not files:
            raise HarnessError(f"no .npy calibration inputs in {data_dir}")
        batches = []
        for path in files:
            array = np.load(str(path))
            if array.size != int(np.prod(shape)):
                raise HarnessError(
                    f"calibration input {path} has shape {array.shape}, expected {tuple(shape)}"
                )
            batches.append(np.ascontiguousarray(array.reshape(shape), dtype=np.float32))
        return batches
    check_allocation(
        {f"calibration batch {i}": (tuple(shape), np.float32) for i in range(count)},
        f"tensorrt.int8_calibration_batches: {count} random batches",
    )
    warnings.warn(RANDOM_CALIBRATION_WARNING, stacklevel=2)
    rng = np.random.default_rng(0)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count)]


def int8_qdq_onnx(
    onnx_path: Path, out_path: Path, profile: Profile, batch: int = 1
) -> Tuple[Path, Dict[str, Any]]:
    """Write an INT8 Q/DQ copy of ``onnx_path`` to ``out_path`` for a strongly typed TensorRT and
    return it with what was done (calibration source, samples, quantization, error against FP32).

    Calibrated on the profile's ``tensorrt.int8_calibration_dir`` (else seeded random data, with a
    warning). ``out_path`` is reused while its sidecar (``out_path`` with ``.json``) matches the
    source's bytes, the calibration data, the batch and the recipe; otherwise it is remade.
    """
    out_path = Path(out_path)
    sidecar = out_path.with_suffix(".json")
    identity = {
        "format": QDQ_FORMAT,
        "source_sha256": file_sha256(onnx_path),
        "calibration": calibration_identity(profile),
        "batch": batch,
    }
    cached = _reuse(out_path, sidecar, identity)
    if cached is not None:
        return out_path, cached
    _check_writable(out_path)
    quantization = _ort_quantization()
    name, shape = _calibration_input(onnx_path, batch)
    settings = profile.tensorrt
    batches = calibration_batches(
        shape, settings.int8_calibration_dir, settings.int8_calibration_batches
    )
    with tempfile.TemporaryDirectory(prefix="harness-qdq-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "qdq.onnx"
        try:  # ONNX Runtime's recommended pre-processing, shape inference only (no graph rewrite)
            quantization.quant_pre_process(str(onnx_path), str(prepared), skip_optimization=True)
            quantization.quantize_static(
                str(prepared),
                str(quantized),
                _reader(quantization, name, batches),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
                extra_options=dict(QDQ_EXTRA_OPTIONS),
            )
            error = int8_error(onnx_path, quantized, name, batches)
        except HarnessError:
            raise
        except Exception as exc:  # a model ONNX Runtime cannot quantize: name it, one line
            raise HarnessError(
                f"ONNX Runtime could not quantize {onnx_path} to INT8 Q/DQ ({first_line(exc)})"
            ) from None

        model = load_model(quantized, infer_shapes=False)
        save_model(model, out_path)
    metadata = _qdq_metadata(model, profile, identity["calibration"], batches, error)

    record = dict(identity, qdq_sha256=file_sha256(out_path), metadata=metadata)
    write_text_atomic(sidecar, json.dumps(record, indent=2) + "\n")
    for message in metadata["warnings"]:
        if message != RANDOM_CALIBRATION_WARNING:  # calibration_batches has warned about that one
            warnings.warn(message, stacklevel=2)
    return out_path, dict(metadata, reused=False)


def int8_error(
    fp32_path: Path, qdq_path: Path, input_name: str, batches: List[np.ndarray]
) -> Dict[str, Any]:
    """The Q/DQ graph against the FP32 graph on ``batches``: relative L2 error over all outputs,
    largest |int8 - fp32| over the largest |fp32| (as ``fp16_error``), top-1 agreement of the first
    output's rows.

    The Q/DQ graph runs in ONNX Runtime with graph optimisations off, so that its Q/DQ arithmetic
    is evaluated as written (what TensorRT implements). With them on, ONNX Runtime fuses Q/DQ into
    its own int8 CPU kernels, whose u8s8 arithmetic saturates on x86 without VNNI: measured on
    AVX2 here, resnet20's error went from 0.65% to 17.6% for the same graph.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    candidate = ort.InferenceSession(str(qdq_path), options, providers=["CPUExecutionProvider"])
    difference = norm = worst = scale = 0.0
    agree = rows = 0
    for batch in batches:
        expected = reference.run(None, {input_name: batch})
        got = candidate.run(None, {input_name: batch})
        for e, g in zip(expected, got):
            e, g = e.astype(np.float64), g.astype(np.float64)
            difference += float(np.sum((g - e) ** 2))
            norm += float(np.sum(e**2))
            worst = max(worst, float(np.abs(g - e).max(initial=0.0)))
            scale = max(scale, float(np.abs(e).max(initial=0.0)))
        first_e, first_g = (x.reshape(x.shape[0], -1) for x in (expected[0], got[0]))
        agree += int(np.sum(first_e.argmax(axis=1) == first_g.argmax(axis=1)))
        rows += first_e.shape[0]
    return {
        "relative_error": (difference / norm) ** 0.5 if norm else difference**0.5,
        "max_error": worst / (scale or 1.0),
        "top1_agreement": agree / rows if rows else 1.0,
        "samples": rows,
        "evaluated_on": "the calibration batches, ONNX Runtime CPU, graph optimisations off",
    }


def _qdq_metadata(
    model: Any,
    profile: Profile,
    calibration: str,
    batches: List[np.ndarray],
    error: Dict[str, Any],
) -> Dict[str, Any]:
    """What was done to make the Q/DQ graph, for the results."""
    import onnxruntime as ort

    notes = []
    if not profile.tensorrt.int8_calibration_dir:
        notes.append(RANDOM_CALIBRATION_WARNING)
    if error["relative_error"] > INT8_MAX_RELATIVE_ERROR:
        notes.append(
            f"the INT8 Q/DQ graph differs from the FP32 one by {error['relative_error']:.1%} "
            f"(relative L2 error, > {INT8_MAX_RELATIVE_ERROR:.0%}) on the calibration data"
        )
    if error["top1_agreement"] < INT8_MIN_TOP1_AGREEMENT:
        notes.append(
            f"the INT8 Q/DQ graph keeps the FP32 top-1 on {error['top1_agreement']:.1%} of "
            f"{error['samples']} calibration samples (< {INT8_MIN_TOP1_AGREEMENT:.0%})"
        )
    ops = Counter(node.op_type for node in model.graph.node)
    return {
        "tool": f"onnxruntime {ort.__version__} quantization.quantize_static",
        "quant_format": "QDQ",
        "weights": "int8, symmetric, per channel",
        "activations": "int8, symmetric, per tensor",
        "bias": "float (not quantized)",
        "per_channel": True,
        "calibrate_method": "MinMax",
        "options": dict(QDQ_EXTRA_OPTIONS),
        "calibration": calibration,
        "calibration_dir": profile.tensorrt.int8_calibration_dir,
        "calibration_batches": len(batches),
        "samples": int(sum(b.shape[0] for b in batches)),
        "nodes": {op: ops[op] for op in ("QuantizeLinear", "DequantizeLinear")},
        "error": error,
        "tolerance": {
            "relative_error": INT8_MAX_RELATIVE_ERROR,
            "top1_agreement": INT8_MIN_TOP1_AGREEMENT,
        },
        "warnings": notes,
    }


def _reuse(out_path: Path, sidecar: Path, identity: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The stored metadata when ``out_path`` is the Q/DQ copy ``identity`` asks for, else None."""
    if not (out_path.is_file() and sidecar.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in identity.items()):
        return None
    if record.get("qdq_sha256") != file_sha256(out_path) or "metadata" not in record:
        return None
    for message in record["metadata"].get("warnings", []):
        warnings.warn(message, stacklevel=3)
    return dict(record["metadata"], reused=True)


def _check_writable(out_path: Path) -> None:
    """Refuse, before any work, a Q/DQ path whose folder cannot be made or written."""
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot write {out_path} ({exc.strerror or exc})") from None
    if not os.access(str(out_path.parent), os.W_OK):
        raise HarnessError(f"cannot write {out_path} (its folder is not writable)")


def _ort_quantization() -> Any:
    """``onnxruntime.quantization``, or a one-line error saying what is missing."""
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise HarnessError(
            f"INT8 on a strongly typed TensorRT needs ONNX Runtime's quantization tools "
            f"({first_line(exc)}): pip install onnxruntime"
        ) from None
    return quantization


def _calibration_input(onnx_path: Path, batch: int) -> Tuple[str, Tuple[int, ...]]:
    """The graph's one float32 input and its calibration shape (a dynamic batch dimension takes
    ``batch``)."""
    shapes = input_shapes(onnx_path)
    if len(shapes) != 1:
        raise HarnessError(
            f"INT8 calibration feeds one input; {onnx_path} has {len(shapes)}: {sorted(shapes)}"
        )
    ((name, dims),) = shapes.items()
    if input_dtypes(onnx_path)[name] != np.float32:
        raise HarnessError(f"INT8 calibration feeds float32; input {name} of {onnx_path} is not")
    if any(not isinstance(d, int) for d in dims[1:]):
        raise HarnessError(
            f"input {name} of {onnx_path} is dynamic beyond the batch dimension: export it with "
            f"static image sizes"
        )
    first = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else batch
    return name, (first,) + tuple(int(d) for d in dims[1:])


def _reader(quantization: Any, input_name: str, batches: List[np.ndarray]) -> Any:
    """An ONNX Runtime CalibrationDataReader over ``batches``."""

    class Batches(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{input_name: batch} for batch in batches])

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            return next(self.feeds, None)

    return Batches()


def strongly_typed_onnx(
    onnx_path: Path, precision: str, profile: Profile, batch: int, folder: Path
) -> Tuple[Path, Dict[str, Any]]:
    """The graph a strongly typed TensorRT (11) builds for ``precision``, kept in ``folder`` under
    the source's hash: an FP16 copy (``fp16_onnx``) or an INT8 Q/DQ copy (``int8_qdq_onnx``)."""
    stem = file_sha256(onnx_path)[:16]
    if precision == "fp16":
        path = fp16_onnx(onnx_path, Path(folder) / f"{stem}-fp16.onnx")
        return path, {"graph": "fp16", "converter": "onnxconverter-common float16"}
    if precision == "int8":
        return int8_qdq_onnx(
            onnx_path, Path(folder) / f"{stem}-b{batch}-int8-qdq.onnx", profile, batch
        )
    raise HarnessError(f"no strongly typed graph for precision {precision!r}")
