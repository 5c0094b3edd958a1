"""Exact kernel algebra in float64: BatchNorm folding, conv composition, kernel padding, identity kernels.

Weights follow ONNX's layout: (out_channels, in_channels / groups, kh, kw).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def bn_scale_shift(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   eps: float) -> Tuple[np.ndarray, np.ndarray]:
    """BatchNorm as ``y = scale * x + shift`` per channel."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def dilate_kernel(weight: np.ndarray, dilation: Tuple[int, int]) -> np.ndarray:
    """A dilated kernel as an undilated one with zeros inserted between taps (same result, dilation 1)."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return weight
    o, i, kh, kw = weight.shape
    dense = np.zeros((o, i, (kh - 1) * dh + 1, (kw - 1) * dw + 1), weight.dtype)
    dense[:, :, ::dh, ::dw] = weight
    return dense


def recover_dilation(weight: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The smallest dilated kernel equal to ``weight`` (taps only on a grid of step d): (kernel, dilations).

    The inverse of ``dilate_kernel``: a dilated conv merged with another dilated conv (or with an identity) is
    composed densely, then written back dilated, so that it does not pay for the zeros between taps.
    """
    taps = np.any(weight != 0, axis=(0, 1))
    rows, cols = np.nonzero(taps)
    dilations = []
    for axis, where in ((0, rows), (1, cols)):
        extent = weight.shape[2 + axis] - 1
        d = int(np.gcd.reduce(np.append(where, extent))) if where.size and extent else 1
        dilations.append(max(d, 1))
    dh, dw = dilations
    return weight[:, :, ::dh, ::dw], (dh, dw)


def to_dense(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped kernel written as a dense (block-diagonal) one."""
    if groups == 1:
        return weight
    o, i_per, kh, kw = weight.shape
    o_per = o // groups
    dense = np.zeros((o, i_per * groups, kh, kw), weight.dtype)
    for g in range(groups):
        dense[g * o_per:(g + 1) * o_per, g * i_per:(g + 1) * i_per] = weight[g * o_per:(g + 1) * o_per]
    return dense


def largest_groups(dense: np.ndarray) -> int:
    """The largest group count whose block-diagonal structure holds every non-zero of a dense kernel."""
    o, i = dense.shape[:2]
    nonzero = np.any(dense != 0, axis=(2, 3))
    if nonzero[0, i - 1] or nonzero[o - 1, 0]:  # a corner block is off-diagonal for every group count > 1
        return 1
    for g in sorted((g for g in range(1, min(o, i) + 1) if o % g == 0 and i % g == 0), reverse=True):
        if g == 1:
            return 1
        mask = np.kron(np.eye(g, dtype=bool), np.ones((o // g, i // g), dtype=bool))
        if not nonzero[~mask].any():
            return g
    return 1


def to_grouped(dense: np.ndarray, groups: int) -> np.ndarray:
    """The grouped layout of a block-diagonal dense kernel."""
    if groups == 1:
        return dense
    o, i = dense.shape[:2]
    o_per, i_per = o // groups, i // groups
    return np.concatenate([dense[g * o_per:(g + 1) * o_per, g * i_per:(g + 1) * i_per] for g in range(groups)])


def compose(w1: np.ndarray, b1: Optional[np.ndarray], stride1: Tuple[int, int], w2: np.ndarray,
            b2: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Dense kernels of conv2(conv1(x)) as one conv, conv2 unpadded (dilation already expanded).

    ``K = k1 + (k2 - 1) * s1``; ``W[o, i, a*s1 + u, b*s1 + v] += sum_m W2[o, m, a, b] * W1[m, i, u, v]``;
    ``bias = b2 + sum_{m,a,b} W2[o, m, a, b] * b1[m]``.
    """
    w1 = w1.astype(np.float64)
    w2 = w2.astype(np.float64)
    (sh, sw), (_, _, k1h, k1w), (o, _, k2h, k2w) = stride1, w1.shape, w2.shape
    merged = np.zeros((o, w1.shape[1], k1h + (k2h - 1) * sh, k1w + (k2w - 1) * sw))
    for a in range(k2h):
        for b in range(k2w):
            merged[:, :, a * sh:a * sh + k1h, b * sw:b * sw + k1w] += np.tensordot(w2[:, :, a, b], w1, axes=(1, 0))
    bias = np.zeros(o) if b2 is None else b2.astype(np.float64).copy()
    if b1 is not None:
        bias += w2.sum(axis=(2, 3)) @ b1.astype(np.float64)
    return merged, bias


def compose_grouped(w1: np.ndarray, b1: Optional[np.ndarray], stride1: Tuple[int, int], w2: np.ndarray,
                    b2: Optional[np.ndarray], groups: int) -> Tuple[np.ndarray, np.ndarray]:
    """Like ``compose`` for two convs with the same group count: composed group by group, result grouped."""
    m = w1.shape[0]
    o = w2.shape[0]
    m_per, o_per = m // groups, o // groups
    parts, biases = [], []
    for g in range(groups):
        sub_b1 = None if b1 is None else b1[g * m_per:(g + 1) * m_per]
        sub_b2 = None if b2 is None else b2[g * o_per:(g + 1) * o_per]
        w, b = compose(w1[g * m_per:(g + 1) * m_per], sub_b1, stride1, w2[g * o_per:(g + 1) * o_per], sub_b2)
        parts.append(w)
        biases.append(b)
    return np.concatenate(parts), np.concatenate(biases)


def place_kernel(weight: np.ndarray, size: Tuple[int, int], offset: Tuple[int, int]) -> np.ndarray:
    """A kernel zero-padded to ``size``, its taps starting at ``offset``."""
    o, i, kh, kw = weight.shape
    placed = np.zeros((o, i, size[0], size[1]), np.float64)
    placed[:, :, offset[0]:offset[0] + kh, offset[1]:offset[1] + kw] = weight
    return placed


def identity_kernel(channels: int, groups: int) -> np.ndarray:
    """A 1x1 kernel that copies its input (in the grouped layout for ``groups``)."""
    per = channels // groups
    weight = np.zeros((channels, per, 1, 1))
    weight[np.arange(channels), np.arange(channels) % per, 0, 0] = 1.0
    return weight
