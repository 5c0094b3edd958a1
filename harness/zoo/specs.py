"""Compressed variants as data.

Per zoo model, variant name -> which activations go and which kernels shrink.

Activation names: ``<chain>.act<i>`` is the activation after conv ``i`` of a conv chain (a ResNet
block's main branch ``layer<s>.<b>``, a MobileNetV2 block ``features.<i>``, a VGG stage
``stage<s>``); LeNet-5 has ``conv1.act``, ``conv2.act``, ``fc1.act`` and ``fc2.act``. Kernel
overrides name ``<chain>.conv<i>``.
"""

from __future__ import annotations

from typing import Dict, List

from harness.zoo.layers import VariantSpec


def _blocks(stages: Dict[int, int], first: int = 0) -> List[str]:
    """Block prefixes ``layer<s>.<b>`` for ``b >= first`` in stages {stage: block count}."""
    return [f"layer{s}.{b}" for s, count in stages.items() for b in range(first, count)]


CIFAR_RESNET = {20: {1: 3, 2: 3, 3: 3}, 56: {1: 9, 2: 9, 3: 9}}
IMAGENET_RESNET = {1: 3, 2: 4, 3: 6, 4: 3}
# MobileNetV2 blocks with an identity shortcut (stride 1, same width), torchvision numbering.
MOBILENETV2_RESIDUAL_BLOCKS = (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)

VARIANTS: Dict[str, Dict[str, VariantSpec]] = {
    "lenet5": {
        "dc-fc": VariantSpec.make(
            "activations between the three fully connected layers removed: they merge into one",
            remove=["fc1.act", "fc2.act"],
        ),
        "psm-20x": VariantSpec.make(
            "pruning + stream merging, structural stand-in: conv2 keeps 7 of its 16 channels and "
            "the three fully connected layers merge into one, 1/20.8 of the parameters once folded "
            "(the paper prunes individual weights, which dense kernels do not skip; its pruned "
            "layers are not published)",
            remove=["fc1.act", "fc2.act"],
            widths={"conv2": 7 / 16},
        ),
    },
    "resnet20": {
        "dc-1x1": VariantSpec.make(
            "layer-compression style: in every block the second conv shrinks to 1x1 and the ReLU "
            "between goes, so each block merges into one 3x3 conv with its shortcut folded in",
            remove=[f"{b}.act1" for b in _blocks(CIFAR_RESNET[20])],
            kernels={f"{b}.conv2": 1 for b in _blocks(CIFAR_RESNET[20])},
        ),
        "dc-all": VariantSpec.make(
            "mid-block ReLU removed in every block: each block merges into one conv (5x5, or 7x7 "
            "stride 2) with its shortcut folded in",
            remove=[f"{b}.act1" for b in _blocks(CIFAR_RESNET[20])],
        ),
    },
    "resnet56": {
        "dc-1x1": VariantSpec.make(
            "layer-compression style: in every block the second conv shrinks to 1x1 and the ReLU "
            "between goes, so each block merges into one 3x3 conv with its shortcut folded in",
            remove=[f"{b}.act1" for b in _blocks(CIFAR_RESNET[56])],
            kernels={f"{b}.conv2": 1 for b in _blocks(CIFAR_RESNET[56])},
        ),
        "dc-all": VariantSpec.make(
            "mid-block ReLU removed in every block: each block merges into one conv with its "
            "shortcut folded in",
            remove=[f"{b}.act1" for b in _blocks(CIFAR_RESNET[56])],
        ),
        "dc-half": VariantSpec.make(
            "mid-block ReLU removed in the first half of each stage's blocks",
            remove=[f"layer{s}.{b}.act1" for s in (1, 2, 3) for b in range(5)],
        ),
    },
    "vgg16": {
        "dc-1x1": VariantSpec.make(
            "layer-compression style: the second conv of every stage shrinks to 1x1 and its "
            "preceding ReLU goes, so each 3x3-then-1x1 pair merges into one 3x3 conv "
            "(13 convs -> 8)",
            remove=[f"stage{s}.act1" for s in range(1, 6)],
            kernels={f"stage{s}.conv2": 1 for s in range(1, 6)},
        ),
        "elc-74": VariantSpec.make(
            "layer compression without pruning, sized to the published -74.1% FLOPs: as dc-1x1, "
            "and stages 3 and 4 also shrink their third conv to 1x1, so those stages merge "
            "3x3+1x1+1x1 into one 3x3 (13 convs -> 6; ELC's per-layer choices are not published)",
            remove=[f"stage{s}.act1" for s in range(1, 6)] + ["stage3.act2", "stage4.act2"],
            kernels={
                **{f"stage{s}.conv2": 1 for s in range(1, 6)},
                "stage3.conv3": 1,
                "stage4.conv3": 1,
            },
        ),
    },
    "mobilenetv2": {
        "dc-ds": VariantSpec.make(
            "DepthShrinker style: both ReLU6 removed in every block with an identity shortcut; "
            "each such inverted residual merges into one dense 3x3 conv "
            "with the identity folded in",
            remove=[f"features.{i}.act{a}" for i in MOBILENETV2_RESIDUAL_BLOCKS for a in (1, 2)],
        ),
    },
    "resnet34": {
        "dc-1x1": VariantSpec.make(
            "in every identity-shortcut block the second conv shrinks to 1x1 and the ReLU between "
            "goes: 3x3 + 1x1 + identity -> one 3x3 conv",
            remove=[f"{b}.act1" for b in _blocks(IMAGENET_RESNET, first=1)],
            kernels={f"{b}.conv2": 1 for b in _blocks(IMAGENET_RESNET, first=1)},
        ),
        "dc-lm": VariantSpec.make(
            "mid-block ReLU removed in every block with an identity shortcut: "
            "3x3+3x3+identity -> one 5x5 conv",
            remove=[f"{b}.act1" for b in _blocks(IMAGENET_RESNET, first=1)],
        ),
    },
    "vgg19": {
        "cie-27x": VariantSpec.make(
            "cross-layer-importance style width pruning, uniform: every conv keeps 19% of its "
            "channels, which gives the published 27x fewer parameters (CIE chooses widths per "
            "layer; those are not published)",
            widths={
                f"stage{s}.conv{i}": 0.19
                for s, n in enumerate((2, 2, 4, 4, 4), 1)
                for i in range(1, n + 1)
            },
        ),
        "cie-graded": VariantSpec.make(
            "cross-layer-importance style width pruning, graded by stage as pruned VGGs on CIFAR "
            "are: stages 1-2 keep every channel, stage 3 a quarter (64), stages 4-5 an eighth "
            "(64): 27.1x fewer parameters (27.23x published) with the fewest FLOPs removed of the "
            "per-stage grids tried (CIE's widths are not published)",
            widths={
                f"stage{s}.conv{i}": f
                for s, f in ((3, 0.25), (4, 0.125), (5, 0.125))
                for i in range(1, 5)
            },
        ),
    },
    "resnet50": {
        "cie-50": VariantSpec.make(
            "cross-layer-importance style width pruning, uniform: each bottleneck keeps half of "
            "its inner channels (1x1 and 3x3 outputs), over 50% fewer FLOPs (CIE's per-layer "
            "widths are not published)",
            widths={f"{b}.conv{i}": 0.5 for b in _blocks(IMAGENET_RESNET) for i in (1, 2)},
        ),
        "dc-act2": VariantSpec.make(
            "ReLU after the 3x3 removed in every identity-shortcut bottleneck: 3x3 then 1x1 merge "
            "into one 3x3 (more FLOPs: whether it pays depends on the device, which fold --merge "
            "auto decides)",
            remove=[f"{b}.act2" for b in _blocks(IMAGENET_RESNET, first=1)],
        ),
    },
}
