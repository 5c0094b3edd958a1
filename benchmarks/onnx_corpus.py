"""Counts of `harness fold` on the onnx wheel's model corpus (onnx/backend/test/data/): how many
ONNX Runtime loads, how many fold or pass through unchanged, how verification ended, how many keep
their reference outputs, and how many raise. The same checks as tests/test_onnx_corpus.py, tallied
instead of asserted.

    python benchmarks/onnx_corpus.py -o docs/onnx_corpus.md
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx  # noqa: E402

from harness.errors import HarnessError  # noqa: E402
from harness.fold import fold_model, verify_fold  # noqa: E402
from harness.fold.verify import _session, relative_error  # noqa: E402
from harness.onnx_io import load_model, ort_problem  # noqa: E402
from tests.onnx_corpus import corpus  # noqa: E402

RTOL = 1e-3


def survey(entry) -> dict:
    """The outcome of one corpus model."""
    row = {"model": entry.id}
    try:
        model = load_model(entry.path)
    except HarnessError as exc:
        return {
            **row,
            "outcome": "refused at load (ONNX Runtime refuses it too)",
            "detail": str(exc)[:90],
        }
    problem = ort_problem(model)
    if problem:
        return {**row, "outcome": "ONNX Runtime cannot load it", "detail": problem[:90]}
    try:
        result = fold_model(model, merge="all")
        verification = verify_fold(model, result.model) if entry.group != "light" else None
    except Exception as exc:  # noqa: BLE001 - tallied: the test fails on these
        return {**row, "outcome": "raised", "detail": f"{type(exc).__name__}: {exc}"[:90]}
    row["outcome"] = "folded" if result.report.changed else "unchanged (nothing to fold)"
    row["verification"] = verification.status if verification else "reference input only"
    if verification and not verification.verified:
        row["why"] = verification.note[:110]
    feeds = entry.feeds(model)
    try:
        original = _session(model).run(None, feeds)
    except Exception:  # noqa: BLE001
        row["reference"] = "ONNX Runtime cannot run its stored input"
        return row
    session = _session(result.model)
    folded = session.run(None, dict(zip([i.name for i in session.get_inputs()], feeds.values())))
    references = entry.references()
    matches_ort = bool(references) and all(
        relative_error(r, o) <= RTOL for r, o in zip(references, original)
    )
    expected = references if matches_ort else original
    same = all(relative_error(e, f) <= RTOL for e, f in zip(expected, folded))
    row["reference"] = (
        ("same as the stored reference" if matches_ort else "same as ONNX Runtime's original")
        if same
        else "DIFFERENT"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [survey(entry) for entry in corpus()]
    elapsed = time.perf_counter() - started
    lines = [
        f"# harness fold on the onnx wheel's model corpus (onnx {onnx.__version__})",
        "",
        f"{len(rows)} models under onnx/backend/test/data/ (light, pytorch-converted, "
        f"pytorch-operator, simple); `python benchmarks/onnx_corpus.py` in {elapsed:.0f} s. "
        "Merge mode `all`.",
        "",
    ]
    for key in ("outcome", "verification", "reference"):
        counts = collections.Counter(r[key] for r in rows if key in r)
        lines += (
            [f"| {key} | models |", "|---|---|"]
            + [f"| {k} | {n} |" for k, n in counts.most_common()]
            + [""]
        )
    lines += [
        "Not verified, and why (folding left these graphs unchanged "
        "or verification could not run):",
        "",
    ]
    lines += [f"- {r['model']} ({r['outcome']}): {r['why']}" for r in rows if "why" in r] + [""]
    lines += ["Models ONNX Runtime cannot load (skipped, with its reason):", ""]
    lines += [f"- {r['model']}: {r['detail']}" for r in rows if "detail" in r]
    text = "\n".join(lines) + "\n"
    if args.output:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
