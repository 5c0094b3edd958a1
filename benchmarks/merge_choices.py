"""Is ``fold --merge auto`` ever slower than the better of ``none`` and ``all``? Measured on
linearised networks.

For each architecture (built in code, random weights): fold with ``none``, ``all``, ``auto`` under
the device's calibration (``harness calibrate``) and ``auto`` under the profile's roofline; time the
distinct graphs interleaved with the harness protocol (stop on the paired speed-up CI, or the time
cap); report speed-ups against ``none`` with 95% intervals and whether auto is slower than the
better of none/all beyond its interval.

    .venv/bin/python benchmarks/merge_choices.py --device host -o docs/merge_choices.md

Architectures: ResNet-50 with every bottleneck's 3x3 -> 1x1 left linear; MobileNetV2 with every
depthwise conv left linear (its ReLU6 removed); a RepVGG-A0-like network in its training form (3x3 +
1x1 + identity branches, BN) with every second block's ReLU removed; MobileOne-S0 in its training
form (4 conv branches, a 1x1 scale branch, a BN identity) with every depthwise block linear; the
zoo's compressed variants.
ImageNet-sized networks run at --size (default 128) to keep the run to minutes on a small CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import onnx
import torch
from torch import nn

from harness import timing
from harness.cli import main as harness_main
from harness.cost.arbitrate import arbitrate
from harness.cost.calibrate import load_calibration
from harness.export import export_module
from harness.fold import RooflineCostModel, fold_model
from harness.graph_stats import count_flops
from harness.measure import measure_graphs
from harness.onnx_io import save_model, write_text_atomic
from harness.profiles import calibration_path, load_profile
from harness.zoo import ZOO, build_model
from harness.zoo.layers import Variant, VariantSpec, randomize_batchnorm
from harness.zoo.specs import IMAGENET_RESNET


def _zoo_custom(model: str, spec: VariantSpec) -> nn.Module:
    """A zoo architecture with a variant given as data here (not one of the zoo's named
    variants)."""
    applied = Variant(spec)
    torch.manual_seed(0)
    module = ZOO[model].build(applied)
    assert not applied.unknown_names(), applied.unknown_names()
    randomize_batchnorm(module, torch.Generator().manual_seed(1))
    return module.eval()


def resnet50_linear_tails() -> nn.Module:
    blocks = [f"layer{s}.{b}" for s, n in IMAGENET_RESNET.items() for b in range(n)]
    return _zoo_custom(
        "resnet50",
        VariantSpec.make(
            "3x3 -> 1x1 linear in every bottleneck", remove=[f"{b}.act2" for b in blocks]
        ),
    )


def mobilenetv2_linear_dw() -> nn.Module:
    removed = ["features.1.act1"] + [f"features.{i}.act2" for i in range(2, 18)]
    return _zoo_custom(
        "mobilenetv2", VariantSpec.make("every depthwise conv linear", remove=removed)
    )


class RepBlock(nn.Module):
    """A re-parameterisable block in its training form (RepVGG, MobileOne): ``branches`` parallel
    BN(k x k conv), BN(1x1 conv) when k > 1, BN(identity) when shapes allow; summed, then ReLU
    unless linear."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        relu: bool,
        kernel: int = 3,
        groups: int = 1,
        branches: int = 1,
    ) -> None:
        super().__init__()

        def conv_bn(k: int) -> nn.Module:
            conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(cout))

        self.convs = nn.ModuleList(
            [conv_bn(kernel) for _ in range(branches)] + ([conv_bn(1)] if kernel > 1 else [])
        )
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.act = nn.ReLU() if relu else nn.Identity()

    def forward(self, x):
        y = sum(branch(x) for branch in self.convs)
        return self.act(y + self.identity(x) if self.identity is not None else y)


def _rep_network(layers: List[nn.Module], width: int) -> nn.Module:
    module = nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1000)
    ).eval()
    randomize_batchnorm(module, torch.Generator().manual_seed(1))
    return module


def repvgg_a0_linear_pairs() -> nn.Module:
    """RepVGG-A0 widths and depths (48, 48x2, 96x4, 192x14, 1280x1); every second block of a stage
    is linear."""
    torch.manual_seed(0)
    layers: List[nn.Module] = [RepBlock(3, 48, 2, True)]
    cin = 48
    for width, depth in ((48, 2), (96, 4), (192, 14), (1280, 1)):
        for i in range(depth):
            layers.append(
                RepBlock(cin, width, 2 if i == 0 else 1, relu=(i % 2 == 1) or i == depth - 1)
            )
            cin = width
    return _rep_network(layers, cin)


def mobileone_s0_linear_dw() -> nn.Module:
    """MobileOne-S0 (Vasu et al., 2023: widths 48, 48x2, 128x8, 256x10, 1024x1; 4 branches per
    block) in its training form, every depthwise block linear (its ReLU removed)."""
    torch.manual_seed(0)
    layers: List[nn.Module] = [RepBlock(3, 48, 2, True)]
    cin = 48
    for width, depth in ((48, 2), (128, 8), (256, 10), (1024, 1)):
        for i in range(depth):
            stride = 2 if i == 0 else 1
            layers.append(RepBlock(cin, cin, stride, False, 3, groups=cin, branches=4))
            layers.append(RepBlock(cin, width, 1, True, 1, branches=4))
            cin = width
    return _rep_network(layers, cin)


def _zoo(model: str, variant: str) -> Callable[[], nn.Module]:
    return lambda: build_model(model, variant)[0]


IMAGENET = ("resnet50", "mobilenetv2", "resnet34")
# name -> (builder, input shape without batch; None = the zoo's, ImageNet ones at --size)
ARCHITECTURES: Dict[str, Tuple[Callable[[], nn.Module], str]] = {
    "resnet50 linear bottleneck tails": (resnet50_linear_tails, "imagenet"),
    "mobilenetv2 linear depthwise": (mobilenetv2_linear_dw, "imagenet"),
    "repvgg-a0 training form, linear pairs": (repvgg_a0_linear_pairs, "imagenet"),
    "mobileone-s0 training form, linear depthwise": (mobileone_s0_linear_dw, "imagenet"),
    "resnet20 dc-all": (_zoo("resnet20", "dc-all"), "cifar"),
    "resnet56 dc-1x1": (_zoo("resnet56", "dc-1x1"), "cifar"),
    "resnet56 dc-half": (_zoo("resnet56", "dc-half"), "cifar"),
    "vgg16 dc-1x1": (_zoo("vgg16", "dc-1x1"), "cifar"),
    "mobilenetv2 dc-ds": (_zoo("mobilenetv2", "dc-ds"), "imagenet"),
    "resnet34 dc-lm": (_zoo("resnet34", "dc-lm"), "imagenet"),
    "resnet50 dc-act2": (_zoo("resnet50", "dc-act2"), "imagenet"),
}
MERGES = ("none", "all", "auto", "auto (roofline)")
ARBITRATED = "auto --arbitrate"


def _convs(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Conv")


def compare(
    name: str, size: int, workdir: Path, profile, calibrated, roofline
) -> Dict[str, object]:
    """Fold one architecture four ways, time the distinct graphs, and compare."""
    build, kind = ARCHITECTURES[name]
    shape = (3, 32, 32) if kind == "cifar" else (3, size, size)
    stem = workdir / name.replace(" ", "_").replace(",", "")
    model = export_module(build(), shape, stem.with_suffix(".onnx"))
    graphs: Dict[str, Path] = {}
    by_bytes: Dict[bytes, str] = {}
    same_as: Dict[str, str] = {}
    info: Dict[str, Dict[str, object]] = {}
    models: Dict[str, onnx.ModelProto] = {}
    for merge in MERGES:
        cost = calibrated if merge == "auto" else roofline
        folded = models[merge] = fold_model(model, merge=merge.split()[0], cost_model=cost).model
        key = folded.SerializeToString()
        info[merge] = {"convs": _convs(folded), "gflops": count_flops(folded) / 1e9}
        if key in by_bytes:
            same_as[merge] = by_bytes[key]
            continue
        by_bytes[key] = merge
        graphs[merge] = save_model(folded, Path(f"{stem}-{merge.replace(' ', '_')}.onnx"))
    # fold --arbitrate's choice, made in its own measurement, then judged in the one below
    choice = arbitrate({m: models[m] for m in ("none", "all", "auto")}, profile)
    same_as[ARBITRATED] = same_as.get(choice.chosen, choice.chosen)
    info[ARBITRATED] = info[choice.chosen]
    measured = measure_graphs(graphs, profile, batch=1).measurements

    def of(merge: str) -> timing.Measurement:
        return measured[same_as.get(merge, merge)]

    def speedup(reference: str, subject: str) -> Tuple[float, float, float]:
        if same_as.get(subject, subject) == same_as.get(reference, reference):
            return 1.0, 1.0, 1.0
        return timing.measurement_ratio_ci(of(reference), of(subject))

    best = min(("none", "all"), key=lambda m: of(m).stats().median)
    row = {
        "name": name,
        "shape": "x".join(map(str, shape)),
        "info": info,
        "same_as": same_as,
        "best": best,
        "median_ms": {m: of(m).stats().median for m in MERGES},
        "vs_none": {m: speedup("none", m) for m in MERGES[1:]},
        "auto_vs_best": speedup(best, "auto"),
        "arbitrated": choice.chosen,
        "arbitrated_vs_best": speedup(best, ARBITRATED),
        "stop": of("none").stop_reason,
    }
    return row


def _interval(values: Tuple[float, float, float]) -> str:
    ratio, low, high = values
    return (
        f"{ratio:.3f} [{low:.3f}, {high:.3f}]"
        if (low, high) != (1.0, 1.0) or ratio != 1.0
        else "1 (same graph)"
    )


def to_markdown(
    rows: List[Dict], profile, calibration: Path, calibrated, roofline, elapsed: float
) -> str:
    """The table for docs/."""
    lines = [
        "# Merge choices: auto against none and all",
        "",
        f"Generated by `benchmarks/merge_choices.py` on device profile `{profile.name}` "
        f"({profile.backend}, "
        f"{profile.precisions[0]}, batch 1) in {elapsed / 60:.1f} min. Cost model of `auto`: "
        f"{calibrated.name} (`{calibration.name}`), decision margin "
        f"{calibrated.decision_margin()[0]:.1%} ({calibrated.decision_margin()[1]}); "
        f"`auto (roofline)`: the profile's roofline, decision margin "
        f"{roofline.decision_margin()[0]:.0%} (its documented default). Timing: the "
        f"harness protocol, graphs interleaved, stop when every paired speed-up CI is within "
        f"+/-{profile.timing.target_ci:.0%} or after {profile.timing.max_duration_s:g} s per "
        f"graph; speed-ups are ratios of medians with 95% paired bootstrap intervals over rounds. "
        'Graphs that fold identically are timed once ("same graph").',
        "",
        "| network (input) | convs none/all/auto/roofline | all vs none | auto vs none | "
        "auto (roofline) vs none | auto vs best of none/all | auto slower beyond CI? | "
        "`--arbitrate` kept | `--arbitrate` vs best of none/all | slower beyond CI? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        convs = "/".join(str(row["info"][m]["convs"]) for m in MERGES)
        verdict = "**yes**" if row["auto_vs_best"][2] < 1.0 else "no"
        arbitrated = "**yes**" if row["arbitrated_vs_best"][2] < 1.0 else "no"
        lines.append(
            f"| {row['name']} ({row['shape']}) | {convs} | {_interval(row['vs_none']['all'])} | "
            f"{_interval(row['vs_none']['auto'])} | "
            f"{_interval(row['vs_none']['auto (roofline)'])} | "
            f"{_interval(row['auto_vs_best'])} vs {row['best']} | {verdict} | "
            f"{row['arbitrated']} | {_interval(row['arbitrated_vs_best'])} | {arbitrated} |"
        )
    import json

    record = json.loads(calibration.read_text())
    quality = record["quality"]
    rates = ", ".join(
        f"{name} {calibrated.fixed_s[name] * 1e6:.0f} us + "
        + (f"{1e-9 / rate:.0f} GFLOP/s" if rate else "no FLOP term")
        for name, rate in sorted(calibrated.seconds_per_flop.items())
    )
    lines += [
        "",
        'Speed-up > 1: faster than the reference. "auto slower beyond CI": the upper end of '
        "auto's "
        'interval against the better of none and all is below 1. "`--arbitrate` kept": the '
        "graph `fold --merge auto --arbitrate` kept in a measurement of its own (before the "
        "table's), judged here in this independent one.",
        "",
        f"Calibration ({record['created']}, {len(record['points'])} micro-benchmarks, marginal "
        f"cost of one "
        f"more layer inside a graph; fit error median {quality['median_abs_rel_error']:.1%}, p90 "
        f"{quality['p90_abs_rel_error']:.1%}): {rates}; element-wise "
        f"{calibrated.elementwise_overhead_s * 1e6:.1f} us + "
        f"{calibrated.elementwise_seconds_per_byte * 1e12:.1f} ps/byte.",
        "",
        "Stop reasons: " + "; ".join(f"{r['name']}: {r['stop']}" for r in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    """Run the comparison and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="host")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration file (default: the profile's; measured first when there is none)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(ARCHITECTURES),
        metavar="NAME",
        help="one of the architectures (repeat for more; default: all of them)",
    )
    parser.add_argument("--size", type=int, default=128, help="input size of the ImageNet networks")
    parser.add_argument("--max-duration", type=float, default=None, help="time cap per graph (s)")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/merge_choices.md"))
    args = parser.parse_args(argv)
    profile = load_profile(args.device)
    if args.max_duration:
        profile = dataclasses.replace(
            profile,
            timing=dataclasses.replace(
                profile.timing, max_duration_s=max(args.max_duration, profile.timing.min_duration_s)
            ),
        )
    calibration = args.calibration or calibration_path(profile)
    if not calibration.is_file():
        print(f"no calibration at {calibration}: measuring one", file=sys.stderr)
        harness_main(["calibrate", "--device", args.device, "-o", str(calibration)])
    calibrated = load_calibration(calibration)
    roofline = RooflineCostModel.from_profile(profile, profile.precisions[0])
    names = args.only or list(ARCHITECTURES)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = compare(name, args.size, Path(tmp), profile, calibrated, roofline)
            rows.append(row)
            print(
                f"{name}: all {_interval(row['vs_none']['all'])}, "
                f"auto {_interval(row['vs_none']['auto'])}, "
                f"roofline auto {_interval(row['vs_none']['auto (roofline)'])}; "
                f"auto vs {row['best']} "
                f"{_interval(row['auto_vs_best'])}",
                flush=True,
            )
    write_text_atomic(
        args.output,
        to_markdown(
            rows, profile, calibration, calibrated, roofline, time.perf_counter() - started
        ),
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
