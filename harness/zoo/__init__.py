"""Built-in model zoo: baselines and depth-compressed variants, random weights from a fixed seed.

Variants are data (``harness.zoo.specs``): which activations are removed and which kernels shrink.
The layers left linear are what ``harness.fold`` merges; padding is arranged so that those merges
are exact.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from harness.errors import HarnessError, shown
from harness.zoo import models
from harness.zoo.layers import Variant, VariantSpec, randomize_batchnorm
from harness.zoo.specs import VARIANTS

SEED = 0


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """A zoo architecture: how to build it and the input it takes (batch excluded)."""

    name: str
    build: Callable[[Variant], nn.Module]
    input_shape: Tuple[int, ...]
    description: str


ZOO: Dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("lenet5", models.lenet5, (1, 28, 28), "LeNet-5, MNIST 1x28x28"),
        ZooEntry(
            "resnet20", lambda v: models.resnet_cifar(20, v), (3, 32, 32), "ResNet-20, CIFAR-10"
        ),
        ZooEntry(
            "resnet56", lambda v: models.resnet_cifar(56, v), (3, 32, 32), "ResNet-56, CIFAR-10"
        ),
        ZooEntry(
            "vgg16",
            lambda v: models.vgg_cifar(models.VGG16_STAGES, v),
            (3, 32, 32),
            "VGG-16-BN, CIFAR-10",
        ),
        ZooEntry(
            "vgg19",
            lambda v: models.vgg_cifar(models.VGG19_STAGES, v),
            (3, 32, 32),
            "VGG-19-BN, CIFAR-10",
        ),
        ZooEntry("mobilenetv2", models.mobilenet_v2, (3, 224, 224), "MobileNetV2-1.0, ImageNet"),
        ZooEntry(
            "resnet34",
            lambda v: models.resnet_imagenet(34, v),
            (3, 224, 224),
            "ResNet-34, ImageNet",
        ),
        ZooEntry(
            "resnet50",
            lambda v: models.resnet_imagenet(50, v),
            (3, 224, 224),
            "ResNet-50, ImageNet",
        ),
    )
}


def list_models() -> List[str]:
    """Names of the zoo architectures."""
    return list(ZOO)


def list_variants(model: str) -> List[str]:
    """Variant names of a zoo model, ``baseline`` first."""
    return ["baseline"] + list(VARIANTS.get(model, {}))


def variant_spec(model: str, variant: str) -> VariantSpec:
    """The spec of one variant (``baseline`` removes nothing)."""
    if model not in ZOO:
        raise HarnessError(
            f"unknown model {shown(model)}; zoo models: {', '.join(ZOO)} "
            f"(or pass an .onnx file or package.module:factory)"
        )
    if variant == "baseline":
        return VariantSpec("baseline: every activation kept")
    if variant not in VARIANTS.get(model, {}):
        raise HarnessError(
            f"unknown variant {shown(variant)} of {model}; variants: "
            f"{', '.join(list_variants(model))}"
        )
    return VARIANTS[model][variant]


def build_model(
    model: str, variant: str = "baseline", seed: int = SEED
) -> Tuple[nn.Module, Tuple[int, ...]]:
    """An eval-mode module with seeded random weights, and its input shape without the batch dim."""
    spec = variant_spec(model, variant)
    entry = ZOO[model]
    applied = Variant(spec)
    torch.manual_seed(seed)
    module = entry.build(applied)
    unknown = applied.unknown_names()
    if unknown:
        raise HarnessError(
            f"variant {shown(variant)} of {model} names layers the model does not have: "
            f"{unknown[:3]}"
        )
    randomize_batchnorm(module, torch.Generator().manual_seed(seed + 1))
    return module.eval(), entry.input_shape
