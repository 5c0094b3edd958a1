"""Building blocks of the zoo.

Conv chains whose removed activations leave exactly mergeable linear runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Set

import torch
from torch import nn

from harness.geometry import merged_kernel


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution of a chain (always followed by BatchNorm)."""

    in_ch: int
    out_ch: int
    kernel: int
    stride: int = 1
    groups: int = 1


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """A compressed variant as data.

    Which activations go, which kernels shrink, which convs keep fewer channels.
    """

    description: str
    remove: frozenset = frozenset()  # activation names, e.g. "layer1.0.act1"
    # conv name -> new kernel size
    kernels: Dict[str, int] = dataclasses.field(default_factory=dict)
    # conv name -> fraction of channels kept
    widths: Dict[str, float] = dataclasses.field(default_factory=dict)

    @staticmethod
    def make(
        description: str,
        remove: Sequence[str] = (),
        kernels: Optional[Dict[str, int]] = None,
        widths: Optional[Dict[str, float]] = None,
    ) -> VariantSpec:
        """Build a spec from plain lists (how the spec tables are written)."""
        return VariantSpec(description, frozenset(remove), dict(kernels or {}), dict(widths or {}))


class Variant:
    """The spec being applied to one model build.

    Records which names the model offered, to catch typos.
    """

    def __init__(self, spec: Optional[VariantSpec] = None) -> None:
        self.spec = spec or VariantSpec("baseline")
        self.activations: Set[str] = set()
        self.convs: Set[str] = set()

    def removed(self, act_name: str) -> bool:
        self.activations.add(act_name)
        return act_name in self.spec.remove

    def kernel(self, conv_name: str, default: int) -> int:
        self.convs.add(conv_name)
        return self.spec.kernels.get(conv_name, default)

    def width(self, conv_name: str, default: int) -> int:
        """Output channels of a conv after width pruning (at least one)."""
        self.convs.add(conv_name)
        return max(1, int(round(default * self.spec.widths.get(conv_name, 1.0))))

    def unknown_names(self) -> List[str]:
        """Names in the spec that the model does not have (a typo in a spec table)."""
        return sorted(
            (set(self.spec.remove) - self.activations)
            | (set(self.spec.kernels) - self.convs)
            | (set(self.spec.widths) - self.convs)
        )


class ConvChain(nn.Module):
    """Conv+BN layers, each followed by an activation unless the variant removes it.

    Convolutions joined by removed activations form a linear run; its first conv carries all the
    run's padding, ``(K - 1) / 2`` for the merged kernel K, and the others none, so that merging the
    run is exact at the borders (as depth-compression methods arrange before fine-tuning) and the
    output shape is unchanged.
    """

    def __init__(
        self,
        prefix: str,
        specs: Sequence[ConvSpec],
        variant: Variant,
        act: Callable[[], nn.Module],
        last_act: bool,
        in_channels: Optional[int] = None,
        prunable_output: bool = False,
    ) -> None:
        super().__init__()
        specs = self._pruned(prefix, specs, variant, in_channels, prunable_output)
        self.out_channels = specs[-1].out_ch
        kernels = [variant.kernel(f"{prefix}.conv{i + 1}", s.kernel) for i, s in enumerate(specs)]
        linear_after = [variant.removed(f"{prefix}.act{i + 1}") for i in range(len(specs) - 1)] + [
            not last_act
        ]
        pads = [(k - 1) // 2 for k in kernels]
        start = 0
        for i in range(len(specs)):
            if i == len(specs) - 1 or not linear_after[i]:
                if i > start:  # a linear run start..i: move its padding to the first conv
                    merged = merged_kernel(
                        kernels[start : i + 1], [s.stride for s in specs[start : i + 1]]
                    )
                    pads[start : i + 1] = [(merged - 1) // 2] + [0] * (i - start)
                start = i + 1
        layers: List[nn.Module] = []
        for i, (spec, k, pad) in enumerate(zip(specs, kernels, pads)):
            layers.append(
                nn.Conv2d(
                    spec.in_ch, spec.out_ch, k, spec.stride, pad, groups=spec.groups, bias=False
                )
            )
            layers.append(nn.BatchNorm2d(spec.out_ch))
            if not linear_after[i]:
                layers.append(act())
        self.body = nn.Sequential(*layers)

    @staticmethod
    def _pruned(
        prefix: str,
        specs: Sequence[ConvSpec],
        variant: Variant,
        in_channels: Optional[int],
        prunable_output: bool,
    ) -> List[ConvSpec]:
        """Specs after width pruning: a conv's kept outputs are the next one's inputs.

        Depthwise convs follow.
        """
        pruned: List[ConvSpec] = []
        current = specs[0].in_ch if in_channels is None else in_channels
        for i, spec in enumerate(specs):
            last = i == len(specs) - 1
            depthwise = spec.groups > 1 and spec.groups == spec.in_ch == spec.out_ch
            if depthwise:
                out = current
            elif last and not prunable_output:
                # the chain's output feeds a residual or the next block: its width stays
                out = spec.out_ch
            else:
                out = variant.width(f"{prefix}.conv{i + 1}", spec.out_ch)
            pruned.append(
                ConvSpec(
                    current, out, spec.kernel, spec.stride, current if depthwise else spec.groups
                )
            )
            current = out
        return pruned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """A 'same'-padded Conv+BN with no activation (shortcuts, stems)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    )


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial statistics so that folding them is actually tested."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
