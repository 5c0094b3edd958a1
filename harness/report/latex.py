"""LaTeX people paste into papers: booktabs tables as includable fragments, and a document that
compiles as-is.

A fragment is one float (``table`` or ``table*``) and needs ``\\usepackage{booktabs}`` and
``\\usepackage{graphicx}`` (to scale a table down where it would overrun) in the paper's preamble:
``\\input{report.tex}``. The standalone document holds the same floats. Intervals print as
``[low, high]``, never as a +- half-width: bootstrap intervals of a ratio are asymmetric.
"""

from __future__ import annotations

import unicodedata
from typing import List, Optional, Sequence

from harness.report.cross_device import FLOPS_ONLY, Cell, CrossDeviceTable, Row
from harness.report.formats import partial_warnings, percent
from harness.results import RatioCI, interval_decimals, significant_decimals

LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
FIXED = 6  # model, variant, GFLOPs, FLOPs reduction, params, params reduction
PER_DEVICE = 3  # latency, speed-up, efficiency


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX cell or caption: specials escaped, non-ASCII folded to ASCII
    (pdflatex-safe)."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in ascii_text)


def latex_percent(value: Optional[float]) -> str:
    """A reduction as ``52.7\\%``: ``--`` where there is none, a true minus sign, never ``-0.0``."""
    if value is None:
        return "--"
    text = percent(value).replace("%", "\\%")
    return f"$-${text[1:]}" if text.startswith("-") else text


def latex_amount(value: Optional[float], scale: float) -> str:
    """A cost in GFLOPs or millions, three decimals, or two significant digits below 0.01."""
    if value is None:
        return "--"
    scaled = value / scale
    return f"{scaled:.3f}" if scaled >= 0.01 or scaled == 0 else f"{scaled:.2g}"


def stacked(top: str, bottom: str) -> str:
    """Two lines in one cell (value over its interval), with no package beyond LaTeX itself."""
    return f"\\begin{{tabular}}{{@{{}}r@{{}}}}{top}\\\\ {{\\scriptsize {bottom}}}\\end{{tabular}}"


def latency_cell(median: float, low: float, high: float, decimals: int = 3) -> str:
    """A median over its 95% CI ``[low, high]``, with enough decimals that the two ends differ."""
    d = interval_decimals(low, high, significant_decimals(median, decimals))
    return stacked(f"{median:.{d}f}", f"[{low:.{d}f}, {high:.{d}f}]")


def ratio_cell(ci: Optional[RatioCI]) -> str:
    """A speed-up over its interval, ``--`` where there is none."""
    return "--" if ci is None else stacked(*ci.parts(latex=True))


def fit_to_width(tabular: List[str]) -> List[str]:
    """Scale a tabular down to the line width only where it is wider (needs ``graphicx``), never
    up."""
    return [
        r"\sbox0{%",
        *tabular,
        "}%",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}%",
        r"\else\usebox0\fi",
    ]


def float_fragment(
    tabular: List[str],
    caption: str,
    label: str,
    comments: Sequence[str],
    name: str,
    wide: bool,
    note: str = "",
) -> str:
    """One booktabs float, ready for ``\\input``: a wide one is a ``table*`` (both columns of a
    two-column paper), a narrow one a ``table`` (one column); either is scaled down only where it
    would overrun its width (long device labels, many devices). The caption sits above with a skip
    before the top rule (article's ``\\belowcaptionskip`` is 0); ``note`` goes below, small."""
    env = "table*" if wide else "table"
    needs = (
        r"% Needs \usepackage{booktabs} and \usepackage{graphicx} in the preamble; include "
        f"with \\input{{{name}}}."
    )
    below = [r"\par\smallskip", f"\\parbox{{\\linewidth}}{{\\footnotesize {note}}}"] if note else []
    lines = [
        *comments,
        needs,
        f"\\begin{{{env}}}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        f"\\caption{{{caption}}}",
        f"\\label{{{label}}}",
        r"\medskip",
        *fit_to_width(tabular),
        *below,
        f"\\end{{{env}}}",
    ]
    return "\n".join(lines) + "\n"


def standalone(fragments: Sequence[str], landscape: bool = True) -> str:
    """A document holding ``fragments`` that compiles as-is with pdflatex."""
    geometry = "margin=1.5cm,landscape" if landscape else "margin=2cm"
    lines = [
        r"\documentclass{article}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        f"\\usepackage[{geometry}]{{geometry}}",
        r"\begin{document}",
        *fragments,
        r"\end{document}",
    ]
    return "\n".join(lines) + "\n"


DRIFT = "$^\\ddagger$"  # a cell whose samples drifted


def _latency(cell: Cell) -> str:
    stats = cell.stats
    mark = DRIFT if cell.drifted else ""
    return latency_cell(stats.median, stats.median_ci_low, stats.median_ci_high) + mark


def _speedup(cell: Cell) -> str:
    return ratio_cell(cell.speedup) + (DRIFT if cell.speedup_drifted else "")


def _efficiency(cell: Cell) -> str:
    if cell.efficiency is None:
        return "--"
    mark = "$^\\dagger$" if cell.floor_basis == FLOPS_ONLY else ""
    return f"{cell.efficiency * 100:.1f}\\%{mark}"


def _caption(table: CrossDeviceTable, narrow: bool = False) -> str:
    settings = "; ".join(
        latex_escape(
            f"{d.label}: {d.backend} {d.backend_version}, {d.precision.upper()}, batch {d.batch}"
        )
        for d in table.devices
    )
    text = (
        "Latency (median ms, 95\\% CI below) of the deployable graph and speed-up against the "
        "baseline (baseline median / variant median, 95\\% paired bootstrap interval over rounds "
        "below)"
    )
    if not narrow:
        text += (
            ", roofline efficiency (floor / measured); FLOPs and parameters of the deployed "
            "graph, reductions against the baseline"
        )
    text += f". {settings}."
    if not narrow and any(c.floor_basis == FLOPS_ONLY for c in table.cells.values()):
        text += " $^\\dagger$ONNX file gone: floor from FLOPs over peak only."
    if any(c.drifted or c.speedup_drifted for c in table.cells.values()):
        text += f" {DRIFT}Samples drifted during the run."
    if any(d.results.complete is False for d in table.devices):
        text += " \\textbf{Partial results}: a run did not complete."
    return text


def _comments(table: CrossDeviceTable) -> List[str]:
    """Provenance as TeX comments: invisible in the PDF, kept with the table."""
    lines = ["% Generated by harness report. Provenance per device column:"]
    for d in table.devices:
        env = d.results.environment_before
        lines.append(
            f"% {d.label}: {d.source}; {d.backend} {d.backend_version}; host "
            f"{env.get('hostname')}; git {env.get('git_sha')}; created "
            f"{d.results.created}; "
            f"command: {' '.join(d.results.command)}".replace("\n", " ")
        )
    lines += [f"% WARNING: {w}" for w in partial_warnings([d.results for d in table.devices])]
    return lines


def _cost_cells(table: CrossDeviceTable, row: Row) -> List[str]:
    flops, params = table.cost(row, "flops"), table.cost(row, "params")
    baseline = row[1] == "baseline"
    return [
        latex_amount(flops, 1e9),
        "--" if baseline else latex_percent(table.reduction(row, "flops")),
        latex_amount(params, 1e6),
        "--" if baseline else latex_percent(table.reduction(row, "params")),
    ]


def _metered(table: CrossDeviceTable) -> List[str]:
    """Labels of the device columns with energy measured for any graph."""
    return [
        d.label
        for d in table.devices
        if any(c.energy for (_, label), c in table.cells.items() if label == d.label)
    ]


def to_latex(table: CrossDeviceTable, name: str = "report.tex") -> str:
    """The full table (every device side by side) as an includable ``table*`` fragment; devices
    that measured energy get two more columns (mJ per inference, energy ratio)."""
    metered = _metered(table)
    widths = [PER_DEVICE + (2 if d.label in metered else 0) for d in table.devices]
    head = ["Model", "Variant", "GFLOPs", "$\\Delta$FLOPs", "Params (M)", "$\\Delta$Params"]
    head += [
        f"\\multicolumn{{{w}}}{{c}}{{{latex_escape(d.label)}}}"
        for d, w in zip(table.devices, widths)
    ]
    starts = [FIXED + 1 + sum(widths[:i]) for i in range(len(widths))]
    rules = " ".join(f"\\cmidrule(lr){{{a}-{a + w - 1}}}" for a, w in zip(starts, widths))
    sub = [""] * FIXED
    for d in table.devices:
        sub += ["ms", "speed-up", "eff."] + (["mJ", "energy"] if d.label in metered else [])
    body = []
    for row in table.rows:
        cells = [latex_escape(row[0]), latex_escape(row[1]), *_cost_cells(table, row)]
        for d, width in zip(table.devices, widths):
            cell = table.cells.get((row, d.label))
            if cell is None:
                cells += ["--"] * width
                continue
            cells += [_latency(cell), _speedup(cell), _efficiency(cell)]
            if d.label in metered:
                spent = cell.energy
                cells += [
                    latency_cell(spent.median_mj, spent.ci_low_mj, spent.ci_high_mj)
                    if spent
                    else "--",
                    ratio_cell(cell.energy_ratio),
                ]
        body.append(" & ".join(cells) + r" \\")
    tabular = [
        f"\\begin{{tabular}}{{ll{'r' * (4 + sum(widths))}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        rules,
        " & ".join(sub) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    caption = _caption(table)
    if metered:
        caption += (
            " Energy: median mJ per inference over timing blocks (95\\% CI below) and the ratio "
            "to the baseline's, paired over rounds."
        )
    return float_fragment(tabular, caption, "tab:harness", _comments(table), name, wide=True)


def to_latex_narrow(table: CrossDeviceTable, name: str = "report-narrow.tex") -> str:
    """A one-column ``table`` fragment for a portrait column: a line per variant and device."""
    body = []
    for model in dict.fromkeys(m for m, _ in table.rows):
        body += [f"\\multicolumn{{4}}{{@{{}}l}}{{\\emph{{{latex_escape(model)}}}}} \\\\"]
        for row in (r for r in table.rows if r[0] == model):
            for i, d in enumerate(table.devices):
                cell = table.cells.get((row, d.label))
                variant = latex_escape(row[1]) if i == 0 else ""
                if cell is None:
                    body.append(f"{variant} & {latex_escape(d.label)} & -- & -- \\\\")
                    continue
                body.append(
                    f"{variant} & {latex_escape(d.label)} & {_latency(cell)} & "
                    f"{_speedup(cell)} \\\\"
                )
    tabular = [
        r"\begin{tabular}{@{}llrr@{}}",
        r"\toprule",
        r"Variant & Device & ms & Speed-up \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return float_fragment(
        tabular,
        _caption(table, narrow=True),
        "tab:harness-narrow",
        _comments(table),
        name,
        wide=False,
    )
