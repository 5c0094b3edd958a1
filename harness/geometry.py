"""Convolution geometry shared by the zoo, the folder, the cost models and the latency tables.

``ConvGeometry`` is the one description of a 2-D convolution's shape: what the cost models price,
what a graphsurgeon ``ConvView`` and a latency-table span describe. No torch, no ONNX: Python 3.8,
device-side.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

Shape4 = Tuple[int, int, int, int]  # N, C, H, W


def merged_kernel(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Kernel size of a chain of convolutions merged into one.

    k1 + sum_j (k_j - 1) * (product of the strides before j).
    """
    size, jump = kernels[0], strides[0]
    for k, s in zip(kernels[1:], strides[1:]):
        size += (k - 1) * jump
        jump *= s
    return size


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (``pad_total`` = both sides)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's shapes, kernel extent, stride, groups and dilation.

    ``span`` is the (first, last) original conv index the conv stands for, when known: a conv of the
    input graph is (i, i), a merged one covers the convs it replaced (the latency
    tables' ``st, end``).
    """

    in_shape: Shape4
    out_shape: Shape4
    kernel: Tuple[int, int]  # extent once dilated: taps every ``dilation`` pixels inside it
    groups: int
    span: Optional[Tuple[int, int]] = None
    stride: int = 1
    dilation: Tuple[int, int] = (1, 1)

    @classmethod
    def centred(
        cls,
        in_shape: Shape4,
        out_channels: int,
        kernel: int,
        stride: int,
        groups: int = 1,
        span: Optional[Tuple[int, int]] = None,
    ) -> ConvGeometry:
        """A square conv with centred padding ((kernel - 1) // 2 on every side) at ``in_shape``."""
        n, _, h, w = in_shape
        pad = 2 * ((kernel - 1) // 2)
        out = (
            n,
            out_channels,
            conv_output_size(h, kernel, stride, pad),
            conv_output_size(w, kernel, stride, pad),
        )
        return cls(in_shape, out, (kernel, kernel), groups, span, stride)

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self.in_shape[1]

    @property
    def out_channels(self) -> int:
        """Output channels."""
        return self.out_shape[1]

    @property
    def depthwise(self) -> bool:
        """One group per channel, as many outputs as inputs."""
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def taps(self) -> Tuple[int, int]:
        """Kernel taps per axis (the extent ``kernel`` once its dilation is taken out)."""
        return (
            (self.kernel[0] - 1) // self.dilation[0] + 1,
            (self.kernel[1] - 1) // self.dilation[1] + 1,
        )

    @property
    def flops(self) -> int:
        """Multiply-accumulates times two."""
        n, o, ho, wo = self.out_shape
        per_output = (self.in_channels // self.groups) * self.taps[0] * self.taps[1]
        return 2 * n * o * ho * wo * per_output

    def bytes_moved(self, itemsize: int = 4) -> int:
        """Bytes of input, output and weights, each read or written once."""
        weights = (
            self.out_channels * (self.in_channels // self.groups) * self.taps[0] * self.taps[1]
        )
        return itemsize * (_product(self.in_shape) + _product(self.out_shape) + weights)

    def within(self, other: ConvGeometry) -> bool:
        """Whether this conv does no more of anything than ``other``: the same batch, spatial
        sizes, stride, dilation and groups, and no more channels in or out and no more taps."""
        return (
            (self.in_shape[0], self.in_shape[2:], self.out_shape[2:])
            == (other.in_shape[0], other.in_shape[2:], other.out_shape[2:])
            and (self.stride, self.dilation, self.groups)
            == (other.stride, other.dilation, other.groups)
            and self.in_channels <= other.in_channels
            and self.out_channels <= other.out_channels
            and all(a <= b for a, b in zip(self.taps, other.taps))
        )
