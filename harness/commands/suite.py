"""``harness suite papers``: rebuild the compression papers' comparisons, time them, table claimed vs measured."""

from __future__ import annotations

from pathlib import Path

from harness.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "suite", "run the papers' suite: claimed against measured",
        "Rebuild the baseline and compressed architecture of each comparison the compression papers make (layer "
        "compression without pruning, cross-layer importance pruning, pruning + stream merging, LayerMerge) from "
        "the zoo, fold, time on the device, and write papers.md: claimed against measured. Accuracies are the "
        "papers'; FLOPs, parameters and latencies are ours. Also writes the usual results.json and reports.",
        "harness suite papers --device host --out report/papers")
    parser.add_argument("name", choices=("papers",), help="the suite to run")
    parser.add_argument("--device", default="host", help="device profile name or YAML path (default: host)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: report/papers-<device>)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import sys

    from harness.bench import BenchOptions, print_summary, run_bench
    from harness.export import resolve_source
    from harness.onnx_io import write_text_atomic
    from harness.papers import claims_table, suite_models
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    suite = [(resolve_source(model), variants) for model, variants in suite_models().items()]
    out = args.out or Path("report") / f"papers-{profile.name}"
    options = BenchOptions(suite, profile, out, batch=profile.batch_sizes[0], precision=profile.precisions[0])
    results = run_bench(options, ["harness"] + sys.argv[1:])
    print_summary(results, out)
    path = write_text_atomic(out / "papers.md", claims_table(results))
    from harness.report.cross_device import merge
    from harness.report.plots import make_plots

    plots = make_plots(merge([out / "results.json"]), out)
    print(path.read_text())
    for written in [path, *plots]:
        print(f"wrote {written}")
    return 0
