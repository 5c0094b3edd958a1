"""A ResNet-18-like CIFAR network of one's own, and two compressed variants of it.

``baseline``: four stages of two basic blocks (3x3 conv, BN, ReLU, 3x3 conv, BN, skip, ReLU).
``noact_1x1``: the first ReLU of every block removed, and its second conv a 1x1, as depth
compression leaves it (the block's two convs become one linear chain, which ``harness fold``
merges). ``pruned``: half the channels of every block's inner conv (structured pruning).
Weights are random: the suite times architectures, it does not train them.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (16, 32, 64, 128)  # a narrow ResNet-18: quick to export and time on a CPU


class Block(nn.Module):
    """A basic residual block; ``act`` False drops its inner ReLU, ``kernel`` is its second
    conv's size, ``inner`` its inner width."""

    def __init__(self, cin: int, cout: int, stride: int, act=True, kernel=3, inner=None) -> None:
        super().__init__()
        inner = inner or cout
        self.conv1 = nn.Conv2d(cin, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.act = nn.ReLU() if act else nn.Identity()
        self.conv2 = nn.Conv2d(inner, cout, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.skip(x))


class RN18C(nn.Module):
    """Stem, four stages of two blocks, global pooling, a classifier over 10 classes."""

    def __init__(self, act=True, kernel=3, keep=1.0) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0])]
        layers.append(nn.ReLU())
        cin = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            for j in range(2):
                stride = 2 if i > 0 and j == 0 else 1
                inner = max(1, int(width * keep))
                layers.append(Block(cin, width, stride, act, kernel, inner))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def baseline() -> nn.Module:
    """The network as trained."""
    torch.manual_seed(0)
    return RN18C()


def noact_1x1() -> nn.Module:
    """Inner ReLUs removed and second convs 1x1: each block's convs fold into one."""
    torch.manual_seed(0)
    return RN18C(act=False, kernel=1)


def pruned() -> nn.Module:
    """Half the inner channels of every block."""
    torch.manual_seed(0)
    return RN18C(keep=0.5)
