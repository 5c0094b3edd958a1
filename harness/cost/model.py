"""Cost models that decide which conv chains are worth merging on a device.

A cost model prices one convolution (seconds); the folder's dynamic program minimises the sum over a
chain's segments. ``RooflineCostModel`` uses the profile's peaks; ``TableCostModel`` uses a latency
table measured on the device by ``harness lut`` and falls back to the roofline for spans the table
lacks.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from harness.cost.lut import read_geometry, read_table
from harness.errors import shown
from harness.geometry import ConvGeometry
from harness.profiles import Profile


class CostModel(abc.ABC):
    """Prices layers in seconds on one device."""

    name = "cost model"

    @abc.abstractmethod
    def conv_cost(self, geometry: ConvGeometry) -> float:
        """Seconds for one convolution (with its activation, where the model measures one)."""

    @abc.abstractmethod
    def elementwise_cost(self, nbytes: int) -> float:
        """Seconds for an element-wise layer moving ``nbytes`` (a residual Add, for instance)."""

    def decision_margin(self) -> Tuple[float, str]:
        """The error the model reports on its own predictions, as a fraction, and its source:
        ``--merge auto`` takes a merge only when the predicted saving exceeds this fraction of the
        merged conv's predicted cost."""
        return 0.0, "the model reports no error"


# The roofline reports no error of its own: a merge must be predicted to save more than this
# fraction of the merged conv's cost. Calibrated models on this project's CPU erred by ~17% at p90;
# of 5, 10, 15 and 20%, 20% is the least at which the roofline declines every merge that made auto
# slower than none there (docs/merge_choices.md).
ROOFLINE_MARGIN = 0.2


@dataclasses.dataclass
class RooflineCostModel(CostModel):
    """``max(FLOPs / peak, bytes / bandwidth) + per-layer overhead``, from a device profile's
    peaks."""

    peak_flops: float
    bandwidth: float
    overhead_s: float
    name: str = "roofline"
    margin: float = ROOFLINE_MARGIN

    def decision_margin(self) -> Tuple[float, str]:
        """``margin`` (default ``ROOFLINE_MARGIN``): the roofline measures nothing it could err
        by."""
        return self.margin, "the roofline's default margin (it is fitted to nothing)"

    @classmethod
    def from_profile(cls, profile: Profile, precision: str = "fp32") -> RooflineCostModel:
        peaks = profile.peaks
        return cls(
            peaks.tflops(precision) * 1e12,
            peaks.dram_gbps * 1e9,
            peaks.layer_overhead_us * 1e-6,
            f"roofline of {profile.name} ({precision})",
        )

    def conv_cost(self, geometry: ConvGeometry) -> float:
        return (
            max(geometry.flops / self.peak_flops, geometry.bytes_moved() / self.bandwidth)
            + self.overhead_s
        )

    def elementwise_cost(self, nbytes: int) -> float:
        return nbytes / self.bandwidth + self.overhead_s


@dataclasses.dataclass
class TableCostModel(CostModel):
    """Latencies measured on the device (``harness lut`` tables), keyed by the span of original conv
    indices.

    With the long layout each span's kernel and stride are checked too: a table measured on another
    variant of the architecture is not silently applied (such spans, and spans the table lacks, fall
    back to ``fallback``).
    """

    table: Dict[Tuple[int, int], float]  # (st, end) -> ms
    fallback: CostModel
    name: str = "measured table"
    geometry: Dict[Tuple[int, int], Tuple[int, int]] = dataclasses.field(
        default_factory=dict
    )  # -> (ker, str)
    missing: Set[Tuple[int, int]] = dataclasses.field(
        default_factory=set
    )  # spans priced by the fallback
    mismatched: Set[Tuple[int, int]] = dataclasses.field(
        default_factory=set
    )  # ... because geometry differed

    @property
    def mismatches(self) -> int:
        """How many distinct spans the table had, but for another kernel or stride."""
        return len(self.mismatched)

    @classmethod
    def from_csv(cls, path: Path, fallback: CostModel) -> TableCostModel:

        return cls(
            read_table(path), fallback, f"measured table {Path(path).name}", read_geometry(path)
        )

    def covers(self, geometry: ConvGeometry) -> bool:
        """Whether the table has this span, measured with this kernel and stride (when the table
        says)."""
        if geometry.span not in self.table:
            return False
        expected = self.geometry.get(geometry.span)
        return expected is None or expected == (geometry.kernel[0], geometry.stride)

    def conv_cost(self, geometry: ConvGeometry) -> float:
        if self.covers(geometry):
            return self.table[geometry.span] / 1000.0  # type: ignore[index]
        if geometry.span in self.table:
            self.mismatched.add(geometry.span)  # type: ignore[arg-type]
        elif geometry.span is not None:
            self.missing.add(geometry.span)
        return self.fallback.conv_cost(geometry)

    def elementwise_cost(self, nbytes: int) -> float:
        return self.fallback.elementwise_cost(nbytes)

    def decision_margin(self) -> Tuple[float, str]:
        """The fallback's: it prices the spans the table lacks, merged convs among them."""
        margin, source = self.fallback.decision_margin()
        return margin, f"{source}, which prices the spans the table lacks"


def conv_class(depthwise: bool, kernel: int, stride: int) -> str:
    """The calibration class of a conv: kernels of one size, stride and kind share one FLOP rate."""
    return f"{'dw' if depthwise else 'dense'}-k{kernel}-s{min(stride, 2)}"


def _rate(value: Any, what: str) -> float:
    """A calibration file's coefficient as a float: finite and >= 0, else ValueError naming it."""
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"fit.{what} {shown(value)} is not a finite number >= 0")
    return number


@dataclasses.dataclass
class CalibratedCostModel(CostModel):
    """A cost model fitted to micro-benchmarks on the device (``harness calibrate``).

    ``fixed_s[class] + seconds_per_flop[class] * FLOPs + seconds_per_byte * bytes``: a fixed cost
    and a FLOP rate per kind of conv (dense or depthwise, kernel size, stride), so that depthwise
    convs, large kernels and each kernel's dispatch cost are priced as measured. A class not
    calibrated uses the nearest kernel size of the same kind and stride. ``corrections`` keep what
    the fit missed at each calibrated shape (measured / fitted, per class, input and output channels
    and spatial size): a conv within a factor of two of one in each of those is scaled by the
    nearest one's ratio, so a shape that was measured is priced as measured.
    """

    fixed_s: Dict[str, float]
    seconds_per_flop: Dict[str, float]
    seconds_per_byte: float
    elementwise_overhead_s: float
    elementwise_seconds_per_byte: float
    name: str = "calibrated"
    corrections: List[Tuple[str, int, int, int, float]] = dataclasses.field(default_factory=list)
    fit_error: Optional[float] = None  # p90 relative error of the formula on its micro-benchmarks

    def decision_margin(self) -> Tuple[float, str]:
        """The fit's p90 relative error; the roofline's default for a file that records none."""
        if self.fit_error is None:
            return (
                ROOFLINE_MARGIN,
                "the roofline's default margin (the calibration records no error)",
            )
        return self.fit_error, "the p90 relative error of the calibration's fit"

    @classmethod
    def from_dict(cls, fit: Dict[str, Any], name: str) -> CalibratedCostModel:
        """The model from the ``fit`` block of a calibration file (``fit_error`` is set apart);
        ValueError names a value that is not a finite number >= 0."""
        return cls(
            {str(k): _rate(v, f"fixed_s.{k}") for k, v in dict(fit["fixed_s"]).items()},
            {
                str(k): _rate(v, f"seconds_per_flop.{k}")
                for k, v in dict(fit["seconds_per_flop"]).items()
            },
            _rate(fit["seconds_per_byte"], "seconds_per_byte"),
            _rate(fit["elementwise_overhead_s"], "elementwise_overhead_s"),
            _rate(fit["elementwise_seconds_per_byte"], "elementwise_seconds_per_byte"),
            name,
            [
                (str(c), int(i), int(o), int(h), _rate(r, "corrections"))
                for c, i, o, h, r in fit.get("corrections", [])
            ],
        )

    def to_dict(self) -> Dict[str, Any]:
        """The ``fit`` block of a calibration file."""
        return {
            "fixed_s": dict(self.fixed_s),
            "seconds_per_flop": dict(self.seconds_per_flop),
            "seconds_per_byte": self.seconds_per_byte,
            "elementwise_overhead_s": self.elementwise_overhead_s,
            "elementwise_seconds_per_byte": self.elementwise_seconds_per_byte,
            "corrections": [list(c) for c in self.corrections],
        }

    def nearest_class(self, depthwise: bool, kernel: int, stride: int) -> str:
        """The class itself when calibrated, else the nearest kernel size of the same kind and
        stride."""
        exact = conv_class(depthwise, kernel, stride)
        if exact in self.seconds_per_flop:
            return exact
        kind = "dw" if depthwise else "dense"
        candidates = [k for k in self.seconds_per_flop if k.startswith(kind + "-")] or list(
            self.seconds_per_flop
        )
        same_stride = [k for k in candidates if k.endswith(f"-s{min(stride, 2)}")] or candidates
        return min(
            same_stride,
            key=lambda k: (abs(int(k.split("-")[1][1:]) - kernel), -int(k.split("-")[1][1:])),
        )

    def fitted_cost(self, geometry: ConvGeometry) -> float:
        """The fitted formula alone, without the correction of the nearest calibrated shape."""
        name = self._class_of(geometry)
        return (
            self.fixed_s[name]
            + self.seconds_per_flop[name] * geometry.flops
            + self.seconds_per_byte * geometry.bytes_moved()
        )

    def _class_of(self, geometry: ConvGeometry) -> str:
        return self.nearest_class(geometry.depthwise, max(geometry.taps), geometry.stride)

    def correction(self, geometry: ConvGeometry) -> float:
        """measured / fitted at the nearest calibrated shape of the class (within a factor 2 per
        axis), else 1."""
        import math

        name = self._class_of(geometry)
        here = (geometry.in_shape[1], geometry.out_shape[1], geometry.in_shape[2])
        best, ratio = 3.0, 1.0
        for cls_name, c_in, c_out, size, r in self.corrections:
            if cls_name != name:
                continue
            steps = [abs(math.log2(a / b)) for a, b in zip(here, (c_in, c_out, size))]
            if max(steps) <= 1.0 and sum(steps) < best:
                best, ratio = sum(steps), r
        return ratio

    def conv_cost(self, geometry: ConvGeometry) -> float:
        return self.fitted_cost(geometry) * self.correction(geometry)

    def elementwise_cost(self, nbytes: int) -> float:
        return self.elementwise_overhead_s + self.elementwise_seconds_per_byte * nbytes


@dataclasses.dataclass
class FlopCountModel(CostModel):
    """No device behind it: FLOPs and bytes at nominal rates (1 TFLOP/s, 100 GB/s). Only prices
    the records of ``merge all`` and ``none``, which decide nothing by cost; ``auto`` needs a
    device's model."""

    name: str = "no device cost model (nominal FLOP count)"

    def conv_cost(self, geometry: ConvGeometry) -> float:
        return geometry.flops / 1e12 + geometry.bytes_moved() / 1e11

    def elementwise_cost(self, nbytes: int) -> float:
        return nbytes / 1e11
