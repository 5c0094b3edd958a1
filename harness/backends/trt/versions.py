"""Where TensorRT versions differ, in one place: version parsing and the defaults each version
applies."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from harness.errors import HarnessError


def version_tuple(version: str) -> Tuple[int, ...]:
    """'8.5.2.2' -> (8, 5, 2, 2)."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def checked_version(version: str) -> str:
    """``version`` when it is a TensorRT release this harness knows (8.5 or 8.6, 10.x, 11.x, as
    its contract tests cover), else a ``HarnessError``: another version's trtexec flags differ."""
    text = str(version).strip()
    if not re.fullmatch(r"\d+(\.\d+){0,3}", text):
        raise HarnessError(f"TensorRT version {version!r} is not a version such as 8.5.2 or 10.13")
    v = version_tuple(text)
    if not ((8, 5) <= v[:2] < (8, 7) or v[0] in (10, 11)):
        raise HarnessError(
            f"TensorRT {text} is not one this harness knows (8.5-8.6, 10.x, 11.x): its trtexec "
            "flags and defaults are not checked"
        )
    return text


def trtexec_defaults(version: str) -> Dict[str, bool]:
    """trtexec's own defaults for what changes a latency figure, by TensorRT version."""
    new = version_tuple(version) >= (11,)
    return {"cuda_graph": new, "spin_wait": new, "data_transfers": not new}


def build_only_flag(version: str) -> str:
    """trtexec's "build the engine, skip inference" flag: ``--buildOnly`` up to 8.5 (8.6 renamed
    it), ``--skipInference`` from 8.6 (8.5's trtexec fails on it as an unknown option)."""
    return "--buildOnly" if version_tuple(version) < (8, 6) else "--skipInference"


RANDOM_CALIBRATION_WARNING = (
    "INT8 calibration with random data: the engine's latency is representative, "
    "its accuracy is not (set tensorrt.int8_calibration_dir to a folder of .npy "
    "inputs)"
)


def build_plan(settings: Any, version: str) -> Dict[str, Any]:
    """Which builder calls a TensorRT version gets for these settings, and what to warn about.

    8.5 and 10.x take precision as builder flags (FP16, INT8 with a calibrator). 11 has neither flag
    nor calibrator: every network is strongly typed, so FP16 means an FP16 ONNX graph
    (``onnx_precision``) and INT8 means Q/DQ nodes in the graph. TF32 is on by default in TensorRT;
    an "fp32" profile clears it so that fp32 means FP32 (recorded as ``tf32``). Tensors are bound by
    name (``execute_async_v3``) on every version: 8.5 already has ``set_tensor_address``,
    ``set_input_shape`` and ``num_io_tensors``, and 10 removed bindings.
    """
    v = version_tuple(version)
    if settings.dla_core is not None and (10, 8) <= v < (11, 4, 1):
        raise HarnessError(
            f"TensorRT {version} has no DLA support (dropped after 10.7, back in 11.4.1 for "
            f"AGX Orin): build for the GPU (tensorrt.dla_core: null) or use another TensorRT"
        )
    strongly_typed = v >= (11,)
    if strongly_typed:
        flags: List[str] = []
    else:
        flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[settings.precision]
    if settings.dla_core is not None and settings.gpu_fallback:
        flags = flags + ["GPU_FALLBACK"]
    notes = []
    if settings.precision == "int8" and (10, 1) <= v < (11,):
        notes.append(
            "INT8 calibrators are deprecated from TensorRT 10.1: prefer an ONNX with Q/DQ nodes"
        )
    if settings.precision == "int8" and (settings.calibration or "").startswith("random:"):
        notes.append(RANDOM_CALIBRATION_WARNING)
    if v < (8, 6):
        notes.append(
            f"builder_optimization_level {settings.builder_optimization_level} not applied: "
            f"TensorRT {version} predates the setting (8.6)"
        )
    if strongly_typed and settings.precision != "fp32":
        copy = {"fp16": "an FP16 copy", "int8": "an INT8 Q/DQ copy"}[settings.precision]
        notes.append(f"TensorRT {version} is strongly typed: built from {copy} of the ONNX graph")
    return {
        "explicit_batch_flag": v < (10,),
        "optimization_level": v >= (8, 6),
        "flags": flags,
        "tf32": settings.precision != "fp32",
        "strongly_typed": strongly_typed,
        "onnx_precision": settings.precision if strongly_typed else "fp32",
        "dla_core": settings.dla_core,
        "notes": notes,
    }
