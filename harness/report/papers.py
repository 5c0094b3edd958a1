"""The compression papers' comparisons, rebuilt from the zoo: claimed (from the papers) against
measured (ours).

The claims and accuracies are the papers' (see shared/FACTS.md); FLOPs, parameters and latencies are
measured here on the chosen device, on the deployable graphs (folded where folding changed them).
The baselines are the standard architectures; no paper publishes its compressed network layer by
layer, so each compressed network is the closest faithful zoo variant (a spec in
``harness.zoo.specs``), and the table says how it was chosen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple, Union

from harness.report.formats import (
    DRIFT_NOTE,
    SPEEDUP_NOTE,
    comparison_drifted,
    csv_text,
    drifted_runs,
    markdown_table,
    marked,
    partial_warnings,
    percent,
)
from harness.report.latex import DRIFT, float_fragment, latex_escape, latex_percent, ratio_cell
from harness.results import RatioCI, Results, as_results, format_latency, format_ratio

ELC = "ELC: layer compression without pruning (TIP 2023)"
CIE = "CIE: cross-layer importance pruning (Neural Networks 2024)"
PSM = "Pruning + stream merging (LeNet-5, MNIST)"
LM = "LayerMerge (ICML 2024)"
LM_WHERE = "RTX 2080 Ti, TensorRT FP32, batch 128"
LM_SETTING = ("RTX 2080 Ti", "fp32", 128)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One comparison a paper makes, and the zoo variant that stands for its compressed network."""

    paper: str
    model: str
    variant: str
    architecture: str  # how faithful the compressed network is, and why
    claimed_flops_reduction: Optional[float]
    claimed_params_reduction: Optional[float]
    claimed_speedup: Optional[float]
    speedup_claim: str  # the claim as published: figure(s) and where they were measured
    accuracy: str  # as published (we do not train)
    device: Optional[str] = None  # where the speed-up was measured (None: not stated)
    precision: Optional[str] = None  # its precision and batch, where stated
    batch: Optional[int] = None


CLAIMS: List[Claim] = [
    Claim(
        ELC,
        "vgg16",
        "elc-74",
        "closest faithful: 3x3 convs shrunk to 1x1 and merged into their neighbour (pairs with a "
        "1x1 side, as the public code merges), chosen to match the published FLOPs reduction",
        0.741,
        None,
        2.0,
        "2x (Jetson AGX Xavier)",
        "CIFAR-10, as published",
        "Jetson AGX Xavier",
    ),
    Claim(
        ELC,
        "resnet56",
        "dc-1x1",
        "closest faithful: every block's 2nd conv -> 1x1, each block merged into one "
        "3x3 with its shortcut",
        0.546,
        None,
        2.0,
        "2x (Jetson AGX Xavier)",
        "CIFAR-10, as published",
        "Jetson AGX Xavier",
    ),
    Claim(
        CIE,
        "resnet50",
        "cie-50",
        "closest faithful: half of every bottleneck's inner channels kept, uniformly "
        "(per-layer widths not published)",
        0.50,
        None,
        None,
        "(throughput not stated for ResNet-50)",
        "ImageNet top-1 -0.93%",
    ),
    Claim(
        CIE,
        "vgg19",
        "cie-graded",
        "closest faithful: widths graded by stage (full, full, 1/4, 1/8, 1/8) for the "
        "published 27.23x fewer parameters",
        None,
        1 - 1 / 27.23,
        2.46,
        "2.46x throughput (device not stated)",
        "CIFAR, -0.24%",
    ),
    Claim(
        CIE,
        "vgg19",
        "cie-27x",
        "sensitivity check: the same parameter count from uniform widths (19% of every "
        "conv): FLOPs fall far more than CIE's",
        None,
        1 - 1 / 27.23,
        2.46,
        "2.46x throughput (device not stated)",
        "CIFAR, -0.24%",
    ),
    Claim(
        PSM,
        "lenet5",
        "psm-20x",
        "closest faithful: conv2 keeps 7 of 16 channels and the FC layers merge "
        "(1/20.8 of the parameters); the paper prunes weights, which dense kernels cannot skip",
        None,
        0.95,
        8.0,
        "8x (device not stated)",
        "MNIST, no loss, as published",
    ),
    Claim(
        LM,
        "resnet34",
        "dc-1x1",
        "closest faithful: identity blocks' 2nd conv -> 1x1 and merged (LayerMerge chooses convs "
        "and activations to drop by DP over a latency table; its choices are not published)",
        None,
        None,
        1.50,
        f"1.25x / 1.50x / 1.72x at LM-71/60/50% ({LM_WHERE})",
        "LM-60%, as published",
        *LM_SETTING,
    ),
    Claim(
        LM,
        "mobilenetv2",
        "dc-ds",
        "closest faithful: both ReLU6 removed in identity blocks (DepthShrinker-"
        "style), each merged into one dense 3x3",
        None,
        None,
        1.42,
        f"1.42x / 1.65x / 1.84x / 2.05x at LM-55/46/38/33% ({LM_WHERE})",
        "LM-55%, as published",
        *LM_SETTING,
    ),
]

PAPER_KEYS = {ELC: "ELC", CIE: "CIE", PSM: "PSM", LM: "LM"}
# our speed-up beside a claim measured elsewhere, or where the paper does not say
OTHER_SETTING, UNSTATED = "†", "?"
LATEX_MARKS = {OTHER_SETTING: "$^\\dagger$", UNSTATED: "$^{?}$"}
MARK_NOTES = {
    OTHER_SETTING: "measured on another device, precision or batch than the claim: compares the "
    "direction only",
    UNSTATED: "the paper does not state the claim's device: compares the direction only",
}
NOTE = (
    "Claims and accuracies are the papers' own (we do not train: weights are random, so only "
    "cost and speed are compared). FLOPs (2 x MACs), parameters and latencies (medians) are of "
    "the deployable graphs (folded where folding changed them), measured here. "
    + SPEEDUP_NOTE.replace("variant", "compressed")
    + " Baselines are the standard architectures; every compressed network is a closest-faithful "
    "stand-in (see the architecture column and the zoo specs)."
)
ResultsLike = Union[Results, Dict[str, Any]]
CSV_FIELDS = [
    "paper",
    "model",
    "variant",
    "architecture",
    "claimed_flops_reduction",
    "flops_reduction",
    "claimed_params_reduction",
    "params_reduction",
    "claimed_speedup",
    "speedup_claim",
    "baseline_ms",
    "compressed_ms",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "accuracy",
    "device",
    "claim_device",
    "same_setting",
    "drifted",
]


def suite_models() -> Dict[str, List[str]]:
    """Zoo models and variants the suite needs (baseline first)."""
    needed: Dict[str, List[str]] = {}
    for claim in CLAIMS:
        needed.setdefault(claim.model, ["baseline"])
        if claim.variant not in needed[claim.model]:
            needed[claim.model].append(claim.variant)
    return needed


def same_setting(claim: Claim, results: Results) -> Optional[bool]:
    """Whether our run is on the claim's device (named in the profile's description) at its
    precision and batch where the paper states them; None where it states no device."""
    if claim.device is None:
        return None
    precision, batch = _settings(results)
    description = str(results.profile.get("description", "")).lower()
    return (
        claim.device.lower() in description
        and claim.precision in (None, precision)
        and claim.batch in (None, int(batch) if batch.isdigit() else None)
    )


def setting_mark(record: Dict[str, Any]) -> str:
    """``OTHER_SETTING`` or ``UNSTATED`` for a measured speed-up set beside a claim from elsewhere,
    else ''."""
    if record["speedup"] is None or record["claimed_speedup"] is None:
        return ""
    return {False: OTHER_SETTING, None: UNSTATED}.get(record["same_setting"], "")


def claim_records(results: ResultsLike) -> List[Dict[str, Any]]:
    """Each claim next to what a results file measured (None where the suite did not run it); raw
    numbers."""
    results = as_results(results)
    runs = {(r.model, r.variant, r.folded): r for r in results.runs}
    drifted = drifted_runs(results)
    records = []
    for c in CLAIMS:
        base = runs.get((c.model, "baseline", True)) or runs.get((c.model, "baseline", False))
        comp = runs.get((c.model, c.variant, True)) or runs.get((c.model, c.variant, False))
        found = results.comparison(c.model, c.variant)
        speed = found.speedup if found else None
        both = base is not None and comp is not None
        flops = both and bool(base.flops) and comp.flops is not None
        params = both and bool(base.params) and comp.params is not None
        records.append(
            {
                "paper": c.paper,
                "model": c.model,
                "variant": c.variant,
                "architecture": c.architecture,
                "claimed_flops_reduction": c.claimed_flops_reduction,
                "flops_reduction": 1 - comp.flops / base.flops if flops else None,
                "claimed_params_reduction": c.claimed_params_reduction,
                "params_reduction": 1 - comp.params / base.params if params else None,
                "claimed_speedup": c.claimed_speedup,
                "speedup_claim": c.speedup_claim,
                "baseline_ms": base.stats.median if base else None,
                "compressed_ms": comp.stats.median if comp else None,
                "speedup": speed.ratio if speed else None,
                "speedup_ci_low": speed.low if speed else None,
                "speedup_ci_high": speed.high if speed else None,
                "accuracy": c.accuracy,
                "device": results.device_name,
                "claim_device": c.device,
                "same_setting": same_setting(c, results),
                "drifted": comparison_drifted(found, drifted),
            }
        )
    return records


def _ratio(record: Dict[str, Any]) -> Optional[RatioCI]:
    if record["speedup"] is None:
        return None
    return RatioCI(record["speedup"], record["speedup_ci_low"], record["speedup_ci_high"])


def _settings(results: Results) -> Tuple[str, str]:
    precision = next((r.precision for r in results.runs), "?")
    batch = next((str(r.batch) for r in results.runs), "?")
    return precision, batch


def claims_table(results: ResultsLike) -> str:
    """Markdown: each claim against what this run measured."""
    results = as_results(results)
    device = results.device_name
    precision, batch = _settings(results)
    head = [
        "paper",
        "model",
        "variant",
        "architecture",
        "FLOPs - claimed",
        "FLOPs - ours",
        "params - claimed",
        "params - ours",
        "speed-up claimed (where)",
        "latency ours ms: baseline -> compressed",
        f"speed-up ours on {device} [95% CI]",
        "accuracy (paper)",
    ]
    records = claim_records(results)
    rows = []
    for r in records:
        latency = (
            f"{format_latency(r['baseline_ms'])} -> {format_latency(r['compressed_ms'])}"
            if r["compressed_ms"] is not None and r["baseline_ms"] is not None
            else ""
        )
        mark = setting_mark(r)
        ours = format_ratio(_ratio(r), missing="n/a (not run)") + (f" {mark}" if mark else "")
        rows.append(
            [
                r["paper"],
                r["model"],
                r["variant"],
                r["architecture"],
                percent(r["claimed_flops_reduction"]),
                percent(r["flops_reduction"]),
                percent(r["claimed_params_reduction"]),
                percent(r["params_reduction"]),
                r["speedup_claim"],
                latency,
                marked(ours, r["drifted"]),
                r["accuracy"],
            ]
        )
    lines = [f"# The papers' comparisons, measured on `{device}` ({precision}, batch {batch})", ""]
    lines += [f"> **Warning: partial results.** {w}" for w in partial_warnings([results])]
    lines += markdown_table(head, rows)
    lines += ["", NOTE]
    used = {setting_mark(r) for r in records}
    lines += [f"{mark} {text}." for mark, text in MARK_NOTES.items() if mark in used]
    if any(r["drifted"] for r in records):
        lines.append(DRIFT_NOTE)
    return "\n".join(lines) + "\n"


def claims_latex(results: ResultsLike, name: str = "papers.tex") -> str:
    """The claims against our measurements as an includable booktabs ``table*`` fragment."""
    results = as_results(results)
    precision, batch = _settings(results)
    records = claim_records(results)
    body = []
    for r in records:
        mark = LATEX_MARKS.get(setting_mark(r), "") + (DRIFT if r["drifted"] else "")
        claimed = (
            "--" if r["claimed_speedup"] is None else f"${r['claimed_speedup']:.2f}{{\\times}}$"
        )
        body.append(
            " & ".join(
                [
                    latex_escape(PAPER_KEYS[r["paper"]]),
                    latex_escape(r["model"]),
                    latex_escape(r["variant"]),
                    latex_percent(r["claimed_flops_reduction"]),
                    latex_percent(r["flops_reduction"]),
                    latex_percent(r["claimed_params_reduction"]),
                    latex_percent(r["params_reduction"]),
                    claimed,
                    ratio_cell(_ratio(r)) + mark,
                ]
            )
            + r" \\"
        )
    tabular = [
        r"\begin{tabular}{lllrrrrrr}",
        r"\toprule",
        r" & & & \multicolumn{2}{c}{$\Delta$FLOPs} & \multicolumn{2}{c}{$\Delta$Params} & "
        r"\multicolumn{2}{c}{Speed-up} \\",
        r"\cmidrule(lr){4-5} \cmidrule(lr){6-7} \cmidrule(lr){8-9}",
        r"Paper & Model & Variant & claimed & ours & claimed & ours & claimed & ours \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    keys = "; ".join(
        f"{latex_escape(k)}: {latex_escape(paper.split(': ', 1)[-1])}"
        for paper, k in PAPER_KEYS.items()
    )
    claims = "; ".join(
        latex_escape(f"{c.model}/{c.variant} {c.speedup_claim}")
        for c in CLAIMS
        if c.claimed_speedup is not None
    )
    where = latex_escape(f"{results.device_name} ({precision.upper()}, batch {batch})")
    caption = (
        f"Compression papers' claims against our measurements on {where}. Speed-up: baseline "
        "median / compressed median, 95\\% paired bootstrap interval below."
    )
    if results.complete is False:
        caption += " \\textbf{Partial results}: the run did not complete."
    used = {setting_mark(r) for r in records}
    marks = [
        f"{LATEX_MARKS[m]}{latex_escape(text[0].upper() + text[1:])}."
        for m, text in MARK_NOTES.items()
        if m in used
    ]
    if any(r["drifted"] for r in records):
        marks.append(f"{DRIFT}Samples drifted during the run.")
    note = " ".join(
        [
            "$\\Delta$: reductions of the deployable graphs' FLOPs and parameters.",
            *marks,
            f"Claimed speed-ups as published: {claims}. {keys}.",
            "Compressed networks are closest-faithful stand-ins built from the zoo; accuracies "
            "are the papers' and not re-measured.",
        ]
    )
    comments = [
        "% Generated by harness suite papers: claimed (papers) against measured (ours).",
        f"% {results.device_name}: {results.source}; created {results.created}; "
        f"command: {' '.join(results.command)}",
    ]
    return float_fragment(tabular, caption, "tab:papers", comments, name, wide=True, note=note)


def claims_csv(results: ResultsLike) -> str:
    """The claimed-versus-measured records as CSV."""
    return csv_text(CSV_FIELDS, claim_records(results))
