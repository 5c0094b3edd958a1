"""Zoo architectures, built from a variant spec.

No weight downloads: the registry seeds the weights.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from harness.zoo.layers import ConvChain, ConvSpec, Variant, conv_bn


class Residual(nn.Module):
    """``act(main(x) + shortcut(x))``: a ResNet or MobileNetV2 block."""

    def __init__(self, main: nn.Module, shortcut: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.main, self.shortcut, self.act = main, shortcut, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.main(x) + self.shortcut(x))


def _head(in_ch: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, classes))


def lenet5(variant: Variant) -> nn.Module:
    """LeNet-5 for 1x28x28 (conv 5x5 x2 with pooling, then three fully connected layers).

    Width pruning may name ``conv1``, ``conv2``, ``fc1`` and ``fc2`` (outputs kept); the classifier
    keeps 10.
    """

    def act(name: str) -> nn.Module:
        return nn.Identity() if variant.removed(name) else nn.ReLU()

    c1, c2 = variant.width("conv1", 6), variant.width("conv2", 16)
    f1, f2 = variant.width("fc1", 120), variant.width("fc2", 84)
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2),
        act("conv1.act"),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        act("conv2.act"),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, f1),
        act("fc1.act"),
        nn.Linear(f1, f2),
        act("fc2.act"),
        nn.Linear(f2, 10),
    )


def _basic_block(prefix: str, in_ch: int, out_ch: int, stride: int, variant: Variant) -> nn.Module:
    main = ConvChain(
        prefix,
        [ConvSpec(in_ch, out_ch, 3, stride), ConvSpec(out_ch, out_ch, 3)],
        variant,
        nn.ReLU,
        last_act=False,
    )
    shortcut = (
        nn.Identity() if stride == 1 and in_ch == out_ch else conv_bn(in_ch, out_ch, 1, stride)
    )
    return Residual(main, shortcut, nn.ReLU())


def _bottleneck(prefix: str, in_ch: int, width: int, stride: int, variant: Variant) -> nn.Module:
    out_ch = width * 4
    main = ConvChain(
        prefix,
        [ConvSpec(in_ch, width, 1), ConvSpec(width, width, 3, stride), ConvSpec(width, out_ch, 1)],
        variant,
        nn.ReLU,
        last_act=False,
    )
    shortcut = (
        nn.Identity() if stride == 1 and in_ch == out_ch else conv_bn(in_ch, out_ch, 1, stride)
    )
    return Residual(main, shortcut, nn.ReLU())


def resnet_cifar(depth: int, variant: Variant) -> nn.Module:
    """ResNet-20/32/56/110 for CIFAR (3x32x32).

    3 stages of (depth-2)/6 basic blocks, 1x1 conv shortcuts.
    """
    blocks_per_stage = (depth - 2) // 6
    layers: List[nn.Module] = [conv_bn(3, 16, 3), nn.ReLU()]
    in_ch = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            layers.append(_basic_block(f"layer{stage + 1}.{b}", in_ch, width, stride, variant))
            in_ch = width
    return nn.Sequential(*layers, _head(64, 10))


VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG19_STAGES = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


def vgg_cifar(stages: Sequence[Sequence[int]], variant: Variant) -> nn.Module:
    """VGG with BatchNorm for CIFAR (3x32x32).

    Conv stages separated by 2x2 max-pooling, one linear classifier.
    """
    layers: List[nn.Module] = []
    in_ch = 3
    for s, widths in enumerate(stages):
        specs = [ConvSpec(a, b, 3) for a, b in zip((widths[0],) + tuple(widths[:-1]), widths)]
        chain = ConvChain(
            f"stage{s + 1}",
            specs,
            variant,
            nn.ReLU,
            last_act=True,
            in_channels=in_ch,
            prunable_output=True,
        )
        layers += [chain, nn.MaxPool2d(2)]
        in_ch = chain.out_channels
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(in_ch, 10))


def resnet_imagenet(depth: int, variant: Variant) -> nn.Module:
    """ResNet-18/34 (basic blocks) or ResNet-50 (bottlenecks, stride on the 3x3) for 3x224x224."""
    counts = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}[depth]
    layers: List[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    in_ch = 64
    for stage, (count, width) in enumerate(zip(counts, (64, 128, 256, 512))):
        for b in range(count):
            stride = 2 if stage > 0 and b == 0 else 1
            prefix = f"layer{stage + 1}.{b}"
            if depth >= 50:
                layers.append(_bottleneck(prefix, in_ch, width, stride, variant))
                in_ch = width * 4
            else:
                layers.append(_basic_block(prefix, in_ch, width, stride, variant))
                in_ch = width
    return nn.Sequential(*layers, _head(in_ch, 1000))


MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2(variant: Variant) -> nn.Module:
    """MobileNetV2 (width 1.0) for 3x224x224; block i is ``features.i``, torchvision's numbering."""
    layers: List[nn.Module] = [
        nn.Conv2d(3, 32, 3, 2, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU6(),
    ]
    in_ch, index = 32, 1
    for expand, out_ch, count, first_stride in MOBILENETV2_SETTINGS:
        for b in range(count):
            stride = first_stride if b == 0 else 1
            hidden = in_ch * expand
            specs = [ConvSpec(in_ch, hidden, 1)] if expand != 1 else []
            specs += [
                ConvSpec(hidden, hidden, 3, stride, groups=hidden),
                ConvSpec(hidden, out_ch, 1),
            ]
            main = ConvChain(f"features.{index}", specs, variant, nn.ReLU6, last_act=False)
            residual = stride == 1 and in_ch == out_ch
            layers.append(Residual(main, nn.Identity(), nn.Identity()) if residual else main)
            in_ch, index = out_ch, index + 1
    layers += [nn.Conv2d(in_ch, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
    return nn.Sequential(*layers, _head(1280, 1000))
