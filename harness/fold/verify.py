"""Numerical check of a fold: original and folded graphs in ONNX Runtime on seeded random inputs."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from harness.errors import FoldVerificationError


@dataclasses.dataclass
class VerifyResult:
    """Largest relative error seen (max |a - b| / max |a| per output), over every seed and batch size."""

    max_rel_error: float
    tolerance: float
    seeds: List[int]
    batch_sizes: List[int]
    note: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def with_batch(model: onnx.ModelProto, batch: int) -> Optional[onnx.ModelProto]:
    """A copy of the model with batch ``batch`` on every input and output, or None if shapes cannot follow."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    for value in list(copy.graph.input) + list(copy.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims:
            return None
        dims[0].ClearField("dim_param")
        dims[0].dim_value = batch
    try:
        return onnx.shape_inference.infer_shapes(copy, strict_mode=True)
    except Exception:  # noqa: BLE001 - a Reshape with a hard-coded batch cannot be re-batched
        return None


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _inputs(session: ort.InferenceSession, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        dtype = np.float32 if arg.type == "tensor(float)" else np.dtype(arg.type[7:-1])
        feeds[arg.name] = rng.standard_normal(arg.shape).astype(dtype)
    return feeds


def verify_fold(original: onnx.ModelProto, folded: onnx.ModelProto, seeds: Sequence[int] = (0, 1, 2),
                batch_sizes: Sequence[int] = (1, 2), rtol: float = 1e-4) -> VerifyResult:
    """Run both graphs on the same inputs; raise ``FoldVerificationError`` above ``rtol``."""
    worst, used, notes = 0.0, [], []
    for batch in batch_sizes:
        pair = (original, folded) if batch == _batch_of(original) else (with_batch(original, batch),
                                                                        with_batch(folded, batch))
        if pair[0] is None or pair[1] is None:
            notes.append(f"batch {batch} not checked: the graph has a fixed batch inside")
            continue
        used.append(batch)
        reference, candidate = _session(pair[0]), _session(pair[1])
        names = [o.name for o in reference.get_outputs()]
        for seed in seeds:
            feeds = _inputs(reference, seed)
            for a, b in zip(reference.run(names, feeds), candidate.run(names, feeds)):
                scale = float(np.max(np.abs(a))) or 1.0
                error = float(np.max(np.abs(a.astype(np.float64) - b))) / scale
                if not np.isfinite(error):
                    error = float("inf")
                worst = max(worst, error)
    result = VerifyResult(worst, rtol, list(seeds), used, "; ".join(notes))
    if worst > rtol:
        raise FoldVerificationError(f"folded graph differs from the original: max relative error {worst:.3g} "
                                    f"> {rtol:g}; the fold is wrong, do not use it (please report this model)")
    return result


def _batch_of(model: onnx.ModelProto) -> int:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims else 1
