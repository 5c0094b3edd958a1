"""What a compared tensor may differ by, and how it differs: tolerances that fit the numbers.

A tensor of the candidate may differ from the original's by atol + rtol x max |a| (a: the
original's): rtol at the precision the graph computes in (float16 graphs are not held to
float32's), atol never finer than the rounding of the op that wrote it (a sigmoid saturated near 0
is computed to ~3e-8 absolute, not relative), both settable overall or per output
(``Tolerance``). ``harness.fold.verify`` also lets through, as rounding, a tensor that differs by no
more than ONNX Runtime's own optimisations of the original change it (``TensorError.rounding``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from harness.errors import HarnessError

FLOAT_KINDS = "fc"
LOCAL_CHECK = " (local check of "  # a local check's tensors: "<tensor> (local check of <node>)"
DEFAULT_RTOL = 1e-4  # of a float32 graph; float16/bfloat16 graphs: HALF_ULPS of their epsilon
HALF_ULPS = 16
# Ops whose result lies in a fixed range -> its width. ONNX Runtime computes them to a few ulps
# of that range (a sigmoid at 6e-5 to ~3e-8 absolute, 5e-4 relative): their tensors may differ by
# RANGE_ULPS ulps of it, whatever their magnitude.
BOUNDED_OPS = {"Sigmoid": 1.0, "HardSigmoid": 1.0, "Softmax": 1.0, "Tanh": 2.0, "Softsign": 2.0}
RANGE_ULPS = 8
# ops whose outputs hold values of their first input (or of all inputs): the range carries over
RANGE_KEEPING = {
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Gather",
    "Expand", "Tile", "Split", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Concat",
}  # fmt: skip
# A tensor that differs by up to this many times what ONNX Runtime's optimisations of the original
# change it by is rounding, not a wrong rewrite (where no local check differs).
ROUNDING_FACTOR = 4


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """What a compared tensor may differ by: max |a - b| <= atol + rtol x max |a| (a of the
    original). ``rtol`` None: from the graph's precision (``precision_rtol``); ``output_rtol`` and
    ``output_atol`` set them for named graph outputs."""

    rtol: Optional[float] = None
    atol: float = 0.0
    output_rtol: Dict[str, float] = dataclasses.field(default_factory=dict)
    output_atol: Dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, rtols: Sequence[str] = (), atols: Sequence[str] = ()) -> Tolerance:
        """From ``--rtol`` / ``--atol`` values: ``1e-3`` for every tensor, ``NAME=1e-3`` for the
        output NAME (each option may be repeated)."""
        found: Dict[str, Tuple[Optional[float], Dict[str, float]]] = {}
        for option, values in (("--rtol", rtols), ("--atol", atols)):
            overall: Optional[float] = None
            named: Dict[str, float] = {}
            for text in values:
                name, _, number = text.rpartition("=")
                value = _tolerance_value(option, text, number)
                if name:
                    named[name] = value
                else:
                    overall = value
            found[option] = (overall, named)
        (rtol, output_rtol), (atol, output_atol) = found["--rtol"], found["--atol"]
        return cls(rtol, atol or 0.0, output_rtol, output_atol)

    def check_outputs(self, model: onnx.ModelProto) -> None:
        """Refuse per-output tolerances that name no output of ``model``."""
        outputs = [o.name for o in model.graph.output]
        for option, named in (("--rtol", self.output_rtol), ("--atol", self.output_atol)):
            for name in named:
                if name not in outputs:
                    raise HarnessError(
                        f"{option} {name}=...: the model has no output {name!r} (its outputs: "
                        f"{', '.join(outputs)})"
                    )

    def limits(self, tensor: str, default_rtol: float) -> Tuple[float, float]:
        """(rtol, atol) given for ``tensor``: its own where named, else the overall ones."""
        rtol = self.rtol if self.rtol is not None else default_rtol
        return self.output_rtol.get(tensor, rtol), self.output_atol.get(tensor, self.atol)


def _tolerance_value(option: str, text: str, number: str) -> float:
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise HarnessError(
            f"{option} takes a non-negative number, or OUTPUT=number for one output, not {text!r}"
        )
    return value


def precision_rtol(model: onnx.ModelProto) -> float:
    """The default rtol of a graph: ``DEFAULT_RTOL``, or ``HALF_ULPS`` of the epsilon of the
    narrowest float type it computes in (float16, bfloat16: a float16 graph with float32 inputs
    and outputs included)."""
    graph = model.graph
    types = {t.data_type for t in graph.initializer}
    types.update(
        v.type.tensor_type.elem_type
        for v in list(graph.input) + list(graph.output) + list(graph.value_info)
    )
    for node in graph.node:
        types.update(a.i for a in node.attribute if node.op_type == "Cast" and a.name == "to")
    eps = [_HALF_EPS[t] for t in types if t in _HALF_EPS]
    return max([DEFAULT_RTOL] + [HALF_ULPS * e for e in eps])


_HALF_EPS = {onnx.TensorProto.FLOAT16: 2.0**-10, onnx.TensorProto.BFLOAT16: 2.0**-7}


def value_ranges(model: onnx.ModelProto) -> Dict[str, float]:
    """Tensors written by a bounded op (``BOUNDED_OPS``), or holding values of one
    (``RANGE_KEEPING``) -> the width of the range their values lie in."""
    ranges: Dict[str, float] = {}
    for node in model.graph.node:
        width = BOUNDED_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if width is None and node.op_type in RANGE_KEEPING and node.input:
            sources = node.input if node.op_type == "Concat" else node.input[:1]
            widths = [ranges.get(name) for name in sources]
            width = max(widths) if widths and None not in widths else None  # type: ignore[type-var]
        if width is not None:
            ranges.update((name, width) for name in node.output if name)
    return ranges


@dataclasses.dataclass
class TensorError:
    """How one compared tensor differs: max |a - b| (``error``) against the original's max |a|
    (``magnitude``), what its tolerance allows (``allowed`` = atol + rtol x magnitude) and, where
    it was measured, how much ONNX Runtime's optimisations of the original change it (relative).
    ``mismatch`` says why it could not be compared element by element (error inf)."""

    name: str
    error: float
    magnitude: float
    rtol: float = 0.0
    atol: float = 0.0
    mismatch: str = ""
    optimiser_change: Optional[float] = None

    @property
    def relative(self) -> float:
        return self.error / (self.magnitude if self.magnitude > 0 else 1.0)

    @property
    def allowed(self) -> float:
        return self.atol + self.rtol * (self.magnitude if self.magnitude > 0 else 1.0)

    @property
    def excess(self) -> float:
        """The error over what is allowed (above 1: the tensor differs)."""
        if self.error <= self.allowed:
            return self.error / self.allowed if self.allowed > 0 else 0.0
        return self.error / self.allowed if self.allowed > 0 else math.inf

    @property
    def rounding(self) -> bool:
        """Whether the error is within what ONNX Runtime's own optimisations make (rounding)."""
        change = self.optimiser_change
        return change is not None and self.relative <= ROUNDING_FACTOR * change

    @property
    def differs(self) -> bool:
        return bool(self.mismatch) or (self.excess > 1 and not self.rounding)

    def text(self) -> str:
        """What differs, against what magnitude and what was allowed."""
        if self.mismatch:
            return f"tensor {self.name!r} has {self.mismatch}"
        line = (
            f"max relative error {self.relative:.3g} at tensor {self.name!r}: max |a - b| = "
            f"{self.error:.3g} against max |a| = {self.magnitude:.3g} in the original, "
            f"{self.allowed:.3g} allowed (rtol {self.rtol:g} x max |a|"
            + (f" + atol {self.atol:.3g}" if self.atol else "")
            + ")"
        )
        if self.optimiser_change is not None:
            line += (
                f"; ONNX Runtime's own optimisations of the original change it by "
                f"{self.optimiser_change:.3g} (relative)"
            )
        return line


class Judge:
    """Each compared tensor's worst difference, against its tolerance: ``Tolerance``'s, with rtol
    at least ``HALF_ULPS`` ulps for half-precision tensors and atol at least ``RANGE_ULPS`` ulps of
    the range of a bounded op's tensor."""

    def __init__(self, model: onnx.ModelProto, tolerance: Tolerance) -> None:
        self.tolerance = tolerance
        self.rtol = tolerance.rtol if tolerance.rtol is not None else precision_rtol(model)
        self.ranges = value_ranges(model)
        self.errors: Dict[str, TensorError] = {}

    def record(self, label: str, expected: Any, got: Any, tensor: str = "") -> None:
        """Compare one tensor (``tensor``: its name in the original, where ``label`` is another)."""
        found = tensor_error(label, expected, got)
        found.rtol, found.atol = self.tolerance.limits(tensor or label, self.rtol)
        floats = [a.dtype for a in arrays(expected) if a.dtype.kind == "f"]
        eps = max((float(np.finfo(dtype).eps) for dtype in floats), default=0.0)
        if eps > _HALF_EPS[onnx.TensorProto.FLOAT16] / 2:  # a half-precision tensor
            found.rtol = max(found.rtol, HALF_ULPS * eps)
        width = self.ranges.get(tensor or label)
        if width is not None:
            found.atol = max(found.atol, RANGE_ULPS * eps * width)
        known = self.errors.get(label)
        if known is None or found.mismatch or (not known.mismatch and found.excess > known.excess):
            self.errors[label] = found

    def failing_tensors(self) -> List[str]:
        """The tensors of the original graph (outputs, shared intermediates) that differ by more
        than allowed, when no local check and no shape differs (else none)."""
        failing = [e for e in self.errors.values() if e.differs]
        if any(e.mismatch or LOCAL_CHECK in e.name for e in failing):
            return []
        return [e.name for e in failing]


def arrays(value: Any) -> List[np.ndarray]:
    """An output (tensor, sequence of tensors, map) as a list of arrays."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in arrays(item)]
    if isinstance(value, dict):
        return [np.asarray(sorted(value.items(), key=repr), dtype=object)]
    return [np.asarray(value)]


def relative_error(a: Any, b: Any) -> float:
    """max |a - b| / max |a| over floats (NaN where both are NaN counts as equal); the fraction of
    differing elements otherwise; inf when shapes or lengths differ."""
    return tensor_error("", a, b).relative


def _dims(shape: Tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "a scalar shape"


def tensor_error(name: str, a: Any, b: Any) -> TensorError:
    """How ``b`` (the candidate's) differs from ``a`` (the original's): the array of the largest
    relative error, for outputs that hold several."""
    left, right = arrays(a), arrays(b)
    if len(left) != len(right):
        return TensorError(
            name, math.inf, 0.0, mismatch=f"{len(right)} values in the candidate, {len(left)} in "
            "the original"
        )  # fmt: skip
    worst = TensorError(name, 0.0, 0.0)
    for x, y in zip(left, right):
        if x.shape != y.shape:
            return TensorError(
                name,
                math.inf,
                0.0,
                mismatch=f"shape {_dims(y.shape)} in the candidate, {_dims(x.shape)} in the "
                "original",
            )
        if x.size == 0:
            continue
        if x.dtype.kind not in FLOAT_KINDS or y.dtype.kind not in FLOAT_KINDS:
            found = TensorError(name, float(np.mean(x != y)), 1.0)
        else:
            found = TensorError(name, *_float_difference(x, y))
        if found.relative > worst.relative:
            worst = found
    return worst


def _float_difference(x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    """(max |x - y|, max |x|) in float32 (float64 for double tensors): precise enough for any
    tolerance above 1e-6, and several times faster than a float64 copy of every tensor."""
    work = np.float64 if np.float64 in (x.dtype, y.dtype) else np.float32
    a, b = x.astype(work, copy=False), y.astype(work, copy=False)
    with np.errstate(all="ignore"):
        diff = np.abs(a - b)
        finite = np.isfinite(diff)
        if not finite.all():
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            if not np.all(same | finite):
                return math.inf, 0.0
            diff = np.where(same, 0, diff)
        largest = float(np.max(np.abs(a), where=np.isfinite(a), initial=0.0))
    return float(diff.max()), largest
