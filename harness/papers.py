"""The compression papers' comparisons, rebuilt from the zoo: claimed (from the papers) against measured (ours).

The claims and accuracies are the papers' (see shared/FACTS.md); FLOPs, parameters and latencies are measured
here on the chosen device. Where a paper's exact compressed architecture is not public, the closest faithful zoo
variant is used and the table says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional


@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison a paper makes, and the zoo variant that stands for its compressed network."""

    paper: str
    model: str
    variant: Optional[str]          # None: the zoo cannot build it yet
    architecture: str               # exact / closest faithful / not built, and why
    claimed_flops_reduction: Optional[float]
    claimed_params_reduction: Optional[float]
    claimed_speedup: Optional[float]
    claimed_on: str
    accuracy: str                   # as published (we do not train)


CLAIMS: List[Claim] = [
    Claim("ELC: layer compression without pruning (TIP 2023)", "vgg16", "dc-1x1",
          "closest faithful: 2nd conv of each stage -> 1x1 and merged (the public code merges pairs with a 1x1 side)",
          0.741, None, 2.0, "Jetson AGX Xavier", "CIFAR-10, as published"),
    Claim("ELC: layer compression without pruning (TIP 2023)", "resnet56", "dc-1x1",
          "closest faithful: every block's 2nd conv -> 1x1, block merged into one 3x3 with its shortcut",
          0.546, None, 2.0, "Jetson AGX Xavier", "CIFAR-10, as published"),
    Claim("CIE: cross-layer importance pruning (Neural Networks 2024)", "resnet50", "cie-50",
          "closest faithful: half of every bottleneck's inner channels kept, uniformly (CIE's per-layer widths are "
          "not published)", 0.50, None, None, "(throughput)", "ImageNet top-1 -0.93%"),
    Claim("CIE: cross-layer importance pruning (Neural Networks 2024)", "vgg19", "cie-27x",
          "closest faithful: 19% of every conv's channels kept, uniformly, for the published 27.23x fewer "
          "parameters", None, 1 - 1 / 27.23, 2.46, "(throughput)", "-0.24%"),
    Claim("Pruning + stream merging (LeNet-5, MNIST)", "lenet5", "dc-fc",
          "closest faithful: the fully connected layers merged; weight pruning (sparsity) is not modelled",
          None, 0.95, 8.0, "(not stated)", "no loss, as published"),
    Claim("LayerMerge (ICML 2024)", "resnet34", "dc-1x1",
          "closest faithful: identity blocks' 2nd conv -> 1x1 and merged (LayerMerge prunes convs and activations "
          "by DP; its exact choices are not in the zoo)", None, None, 1.50, "RTX 2080 Ti, TensorRT FP32, batch 128",
          "LM-60%, as published"),
    Claim("LayerMerge (ICML 2024)", "mobilenetv2", "dc-ds",
          "closest faithful: both ReLU6 removed in identity blocks (DepthShrinker-style), each merged into one conv",
          None, None, 1.42, "RTX 2080 Ti, TensorRT FP32, batch 128", "LM-55%, as published"),
]


def suite_models() -> Dict[str, List[str]]:
    """Zoo models and variants the suite needs (baseline first)."""
    needed: Dict[str, List[str]] = {}
    for claim in CLAIMS:
        if claim.variant:
            needed.setdefault(claim.model, ["baseline"])
            if claim.variant not in needed[claim.model]:
                needed[claim.model].append(claim.variant)
    return needed


def _pct(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.1%}"


def claims_table(results: Dict[str, Any]) -> str:
    """Markdown: each claim against what this run measured."""
    runs = {(r["model"], r["variant"], r["folded"]): r for r in results["runs"]}
    comparisons = {(c["model"], c["variant"]): c for c in results["comparisons"] if c["kind"] == "vs_baseline"}
    device = results["device"]["profile"]["name"]
    lines = [f"# The papers' comparisons, measured on `{device}`", "",
             "| paper | model | variant | architecture | FLOPs - claimed | FLOPs - ours | params - claimed | "
             f"params - ours | speed-up claimed (where) | speed-up ours on {device} [95% CI] | accuracy (paper) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in CLAIMS:
        # the deployable graphs: folded where folding changed them
        base = runs.get((c.model, "baseline", True)) or runs.get((c.model, "baseline", False))
        comp = runs.get((c.model, c.variant, True)) or runs.get((c.model, c.variant, False))
        flops = 1 - comp["flops"] / base["flops"] if base and comp else None
        params = 1 - comp["params"] / base["params"] if base and comp else None
        speed = comparisons.get((c.model, c.variant))
        ours = f"{speed['speedup']:.2f}x [{speed['ci_low']:.2f}, {speed['ci_high']:.2f}]" if speed else "n/a"
        claimed = f"{c.claimed_speedup:g}x ({c.claimed_on})" if c.claimed_speedup else ""
        lines.append(f"| {c.paper} | {c.model} | {c.variant or '-'} | {c.architecture} | "
                     f"{_pct(c.claimed_flops_reduction)} | {_pct(flops)} | {_pct(c.claimed_params_reduction)} | "
                     f"{_pct(params)} | {claimed} | {ours} | {c.accuracy} |")
    lines += ["", "Claims and accuracies are the papers' own; FLOPs (2 x MACs), parameters and speed-ups of the "
              "deployable graphs (folded where folding changed them) are measured here. A speed-up "
              "measured on another device than the claim's is not a check of the claim, only of the direction."]
    return "\n".join(lines) + "\n"
