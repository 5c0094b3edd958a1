"""Convolution geometry shared by the zoo, the folder and the latency tables (no torch, Python 3.8)."""

from __future__ import annotations

from typing import Sequence


def merged_kernel(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Kernel size of a chain of convolutions merged into one: k1 + sum_j (k_j - 1) * (stride product before j)."""
    size, jump = kernels[0], strides[0]
    for k, s in zip(kernels[1:], strides[1:]):
        size += (k - 1) * jump
        jump *= s
    return size


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (``pad_total`` = both sides)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1
