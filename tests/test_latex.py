"""LaTeX for papers: fragments that \\input into a two-column article and compile, a layout narrow
enough for a column, the papers' table, partial runs flagged. Built from a recorded results file
(see tests/test_results.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.report.latex import latency_cell, latex_percent
from harness.report.papers import CLAIMS, claims_latex
from harness.report.pipeline import write_papers, write_report
from harness.results import parse_results, read_results

RECORDED = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"
PAPER = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
Text before the tables.
%s
Text after the tables.
\end{document}
"""


def _two_devices(tmp_path: Path) -> list:
    """The recorded run, and the same numbers as a second device (its samples 1.5 times slower)."""
    first = read_results(RECORDED)
    data = first.to_dict()
    data["device"]["profile"]["name"] = "slower-host"
    for run in data["runs"]:
        run["stats"] = {
            k: v * 1.5 if k.startswith(("median", "p9", "mean", "min", "max")) else v
            for k, v in run["stats"].items()
        }
    return [first, parse_results(data, str(tmp_path / "slower.json"))]


def _pdflatex(folder: Path, name: str) -> str:
    """Compile ``name`` in ``folder``; returns the log (fails the test on an error)."""
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (folder / name.replace(".tex", ".pdf")).stat().st_size > 1000
    return (folder / name.replace(".tex", ".log")).read_text(errors="replace")


def test_numbers_print_as_intervals_without_negative_zero():
    assert latex_percent(-0.00001) == "0.0\\%" and latex_percent(-0.167) == "$-$16.7\\%"
    assert latex_percent(None) == "--"
    cell = latency_cell(0.02889, 0.028861, 0.028923)  # ends alike at 3 decimals: more are printed
    assert "0.02889" in cell and "[0.02886, 0.02892]" in cell


def test_report_fragments_and_document(tmp_path):
    out = tmp_path / "report"
    write_report(_two_devices(tmp_path), out, ["test"], plots=False)
    full, narrow = (out / "report.tex").read_text(), (out / "report-narrow.tex").read_text()
    for fragment in (full, narrow):
        assert r"\documentclass" not in fragment and r"\pm" not in fragment
        assert "-0.0" not in fragment
    assert r"\begin{table*}" in full and r"\begin{table}" in narrow
    baseline = next(line for line in full.splitlines() if line.startswith("lenet5 & baseline"))
    cells = baseline.split(" & ")
    assert cells[3] == "--" and cells[5] == "--"  # a baseline has no reduction against itself
    results = read_results(RECORDED)
    ci = results.comparison("lenet5", "dc-fc").speedup
    assert f"[{ci.low:.2f}, {ci.high:.2f}]" in full  # the interval itself, asymmetric as it is
    if not shutil.which("pdflatex"):
        pytest.skip(
            "pdflatex not installed (Debian: texlive-latex-recommended); structure checked only"
        )
    (out / "paper.tex").write_text(PAPER % "\\input{report.tex}\n\\input{report-narrow.tex}")
    log = _pdflatex(out, "paper.tex")
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert "Overfull \\hbox" not in _pdflatex(out, "report-standalone.tex")


def _natural_width(out: Path, fragment: str) -> tuple:
    """The width of a fragment's tabular as typeset, and the column width of a two-column article
    (pt)."""
    end = r"\end{tabular}"
    tabular = fragment[fragment.index(r"\begin{tabular}") : fragment.rindex(end) + len(end)]
    measure = (
        "\\small\\setlength{\\tabcolsep}{4pt}\\sbox0{%s}"
        "\\typeout{WIDTH=\\the\\wd0;COLUMN=\\the\\columnwidth;}"
    )
    (out / "measure.tex").write_text(PAPER % (measure % tabular))
    found = re.search(r"WIDTH=([0-9.]+)pt;COLUMN=([0-9.]+)pt;", _pdflatex(out, "measure.tex"))
    return float(found.group(1)), float(found.group(2))


def test_narrow_layout_fits_a_portrait_column(tmp_path):
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex not installed (Debian: texlive-latex-recommended)")
    out = tmp_path / "report"
    write_report(_two_devices(tmp_path), out, ["test"], plots=False)
    narrow, column = _natural_width(out, (out / "report-narrow.tex").read_text())
    assert narrow <= column  # unscaled, in one column of a two-column paper
    full, _ = _natural_width(out, (out / "report.tex").read_text())
    assert full > column  # why the full one is a table* (both columns), scaled if too wide


def test_papers_table_compiles(tmp_path):
    out = tmp_path / "papers"
    written = write_papers(read_results(RECORDED), out)
    names = {"papers.md", "papers.csv", "papers.tex", "papers-standalone.tex"}
    assert {p.name for p in written} == names
    tex = (out / "papers.tex").read_text()
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == len(CLAIMS) and r"\toprule" in tex and r"\documentclass" not in tex
    psm = next(line for line in body if line.startswith("PSM & lenet5 & psm-20x"))
    assert "95.0\\%" in psm and "95.2\\%" in psm  # claimed 1/20 of the parameters, ours measured
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex not installed (Debian: texlive-latex-recommended)")
    assert "Overfull \\hbox" not in _pdflatex(out, "papers-standalone.tex")
    (out / "paper.tex").write_text(PAPER % "\\input{papers.tex}")
    assert "Overfull \\hbox" not in _pdflatex(out, "paper.tex")


def test_partial_results_carry_a_visible_warning(tmp_path, capsys):
    data = json.loads(RECORDED.read_text())
    data["complete"] = False
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "report"
    assert main(["report", str(path), "-o", str(out), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "did not complete" in captured.err and "Warning: partial results" in captured.out
    assert "Warning: partial results" in (out / "report.md").read_text()
    assert "Partial results" in (out / "report.tex").read_text()
    assert "Partial results" in claims_latex(read_results(path))


def test_long_labels_and_three_columns_still_fit(tmp_path):
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex not installed (Debian: texlive-latex-recommended)")
    documents = _two_devices(tmp_path)
    data = documents[0].to_dict()  # the same device again at FP16, batch 8: a longer column label
    for run in data["runs"]:
        run["precision"], run["batch"] = "fp16", 8
        run["input_shape"] = [8] + run["input_shape"][1:]
    documents.append(parse_results(data, str(tmp_path / "fp16.json")))
    out = tmp_path / "report"
    write_report(documents, out, ["test"], plots=False)
    assert "recorded-host fp16 b8" in (out / "report-narrow.tex").read_text()
    (out / "paper.tex").write_text(PAPER % "\\input{report.tex}\n\\input{report-narrow.tex}")
    log = _pdflatex(out, "paper.tex")
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
