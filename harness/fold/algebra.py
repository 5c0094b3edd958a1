"""Exact kernel algebra in float64: BatchNorm folding, conv composition, kernel padding, identity
kernels.

Weights follow ONNX's layout: (out_channels, in_channels / groups, kh, kw).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def bn_scale_shift(
    gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> Tuple[np.ndarray, np.ndarray]:
    """BatchNorm as ``y = scale * x + shift`` per channel."""
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return scale, beta.astype(np.float64) - mean.astype(np.float64) * scale


def dilate_kernel(weight: np.ndarray, dilation: Tuple[int, int]) -> np.ndarray:
    """A dilated kernel as an undilated one with zeros inserted between taps (same result,
    dilation 1)."""
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return weight
    o, i, kh, kw = weight.shape
    dense = np.zeros((o, i, (kh - 1) * dh + 1, (kw - 1) * dw + 1), weight.dtype)
    dense[:, :, ::dh, ::dw] = weight
    return dense


def recover_dilation(weight: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The smallest dilated kernel equal to ``weight`` (taps only on a grid of step d): (kernel,
    dilations).

    The inverse of ``dilate_kernel``: a dilated conv merged with another dilated conv (or with an
    identity) is composed densely, then written back dilated, so that it does not pay for the zeros
    between taps.
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
        dense[g * o_per : (g + 1) * o_per, g * i_per : (g + 1) * i_per] = weight[
            g * o_per : (g + 1) * o_per
        ]
    return dense


def largest_groups(dense: np.ndarray) -> int:
    """The largest group count whose block-diagonal structure holds every non-zero of a dense
    kernel."""
    o, i = dense.shape[:2]
    nonzero = np.any(dense != 0, axis=(2, 3))
    if (
        nonzero[0, i - 1] or nonzero[o - 1, 0]
    ):  # a corner block is off-diagonal for every group count > 1
        return 1
    for g in sorted(
        (g for g in range(1, min(o, i) + 1) if o % g == 0 and i % g == 0), reverse=True
    ):
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
    return np.concatenate(
        [dense[g * o_per : (g + 1) * o_per, g * i_per : (g + 1) * i_per] for g in range(groups)]
    )


def _compose_batched(w1: np.ndarray, w2: np.ndarray, stride1: Tuple[int, int]) -> np.ndarray:
    """Per batch g: ``W[g, o, x, a*s + u, b*s + v] += sum_m W2[g, o, m, a, b] * W1[g, m, x, u, v]``.

    w1: (G, M, X, k1h, k1w), w2: (G, O, M, k2h, k2w) -> (G, O, X, K1h + (k2h - 1) * sh, ...), in
    float64.
    """
    (sh, sw), (g, m, x, k1h, k1w), (_, o, _, k2h, k2w) = stride1, w1.shape, w2.shape
    flat = w1.reshape(g, m, x * k1h * k1w)
    merged = np.zeros((g, o, x, k1h + (k2h - 1) * sh, k1w + (k2w - 1) * sw))
    for a in range(k2h):
        for b in range(k2w):
            part = np.matmul(np.ascontiguousarray(w2[..., a, b]), flat).reshape(g, o, x, k1h, k1w)
            merged[:, :, :, a * sh : a * sh + k1h, b * sw : b * sw + k1w] += part
    return merged


def _composed_bias(
    w2: np.ndarray, groups2: int, b1: Optional[np.ndarray], b2: Optional[np.ndarray]
) -> np.ndarray:
    """``b2 + sum_{m,a,b} W2[o, m, a, b] * b1[m]`` with conv2 grouped (m ranges over o's group)."""
    o, m_per = w2.shape[:2]
    bias = np.zeros(o) if b2 is None else b2.astype(np.float64).copy()
    if b1 is not None:
        sums = w2.astype(np.float64).sum(axis=(2, 3)).reshape(groups2, o // groups2, m_per)
        bias += np.matmul(sums, b1.astype(np.float64).reshape(groups2, m_per, 1)).reshape(o)
    return bias


def compose(
    w1: np.ndarray,
    b1: Optional[np.ndarray],
    stride1: Tuple[int, int],
    w2: np.ndarray,
    b2: Optional[np.ndarray],
    groups1: int = 1,
    groups2: int = 1,
) -> Tuple[np.ndarray, np.ndarray]:
    """The dense kernel and bias of conv2(conv1(x)) as one conv, conv2 unpadded (dilations already
    expanded).

    ``K = k1 + (k2 - 1) * s1``;
    ``W[o, i, a*s1 + u, b*s1 + v] += sum_m W2[o, m, a, b] * W1[m, i, u, v]``;
    ``bias = b2 + sum_{m,a,b} W2[o, m, a, b] * b1[m]``. Weights in their grouped layouts
    (``groups1``, ``groups2``): the sum runs over the non-zero blocks only, so that a depthwise conv
    next to a wide dense one costs what it computes, not what its dense form would.
    """
    w1 = w1.astype(np.float64)
    w2 = w2.astype(np.float64)
    m, i_per1, k1h, k1w = w1.shape
    o, m_per2, k2h, k2w = w2.shape
    bias = _composed_bias(w2, groups2, b1, b2)
    if groups2 > 1:  # batch over conv2's groups, conv1 dense
        dense1 = to_dense(w1, groups1).reshape(groups2, m // groups2, i_per1 * groups1, k1h, k1w)
        merged = _compose_batched(
            dense1, w2.reshape(groups2, o // groups2, m_per2, k2h, k2w), stride1
        )
        return merged.reshape(o, i_per1 * groups1, *merged.shape[3:]), bias
    # batch over conv1's groups (one batch when dense): each input block gets its own slice of conv2
    m_per1 = m // groups1
    w2g = w2.reshape(o, groups1, m_per1, k2h, k2w).transpose(1, 0, 2, 3, 4)
    merged = _compose_batched(w1.reshape(groups1, m_per1, i_per1, k1h, k1w), w2g, stride1)
    merged = merged.transpose(1, 0, 2, 3, 4)
    return merged.reshape(o, i_per1 * groups1, *merged.shape[3:]), bias


def compose_grouped(
    w1: np.ndarray,
    b1: Optional[np.ndarray],
    stride1: Tuple[int, int],
    w2: np.ndarray,
    b2: Optional[np.ndarray],
    groups: int,
) -> Tuple[np.ndarray, np.ndarray]:
    """Like ``compose`` for two convs with the same group count: composed group by group, result
    grouped."""
    w1 = w1.astype(np.float64)
    w2 = w2.astype(np.float64)
    (m, i_per, k1h, k1w), (o, m_per, k2h, k2w) = w1.shape, w2.shape
    merged = _compose_batched(
        w1.reshape(groups, m // groups, i_per, k1h, k1w),
        w2.reshape(groups, o // groups, m_per, k2h, k2w),
        stride1,
    )
    return merged.reshape(o, i_per, *merged.shape[3:]), _composed_bias(w2, groups, b1, b2)


def place_kernel(weight: np.ndarray, size: Tuple[int, int], offset: Tuple[int, int]) -> np.ndarray:
    """A kernel zero-padded to ``size``, its taps starting at ``offset``."""
    o, i, kh, kw = weight.shape
    placed = np.zeros((o, i, size[0], size[1]), np.float64)
    placed[:, :, offset[0] : offset[0] + kh, offset[1] : offset[1] + kw] = weight
    return placed


def identity_kernel(channels: int, groups: int) -> np.ndarray:
    """A 1x1 kernel that copies its input (in the grouped layout for ``groups``)."""
    per = channels // groups
    weight = np.zeros((channels, per, 1, 1))
    weight[np.arange(channels), np.arange(channels) % per, 0, 0] = 1.0
    return weight
