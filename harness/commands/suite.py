"""``harness suite papers``: rebuild the compression papers' comparisons, time them, and table
claimed against measured."""

from __future__ import annotations

from pathlib import Path

from harness.commands import FOLDER, add_command, add_device, add_local, add_output, refuse_remote


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "suite",
        "run the papers' suite: claimed against measured",
        "Rebuild the baseline and compressed architecture of each comparison the compression "
        "papers make (layer compression without pruning, cross-layer importance pruning, pruning + "
        "stream merging, LayerMerge) from the zoo, fold, time on the device, and write papers.md, "
        "papers.csv and papers.tex (a booktabs table* to \\input into a paper; "
        "papers-standalone.tex compiles as-is): claimed against measured. Accuracies are the "
        "papers'; FLOPs, parameters and latencies are ours. Also writes results.json and the bench "
        "tables, and in report/ what harness report writes (md, csv, booktabs tex, roofline, "
        "plots).",
        "harness suite papers --device host -o report/papers",
    )
    parser.add_argument("name", choices=("papers",), help="the suite to run")
    add_device(parser)
    add_output(
        parser,
        kind=FOLDER,
        dest="out",
        default=None,
        help="output folder (default: report/papers-<device>)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated subset of the suite's models (default: all), e.g. lenet5,resnet56",
    )
    add_local(parser, "measure the suite")
    parser.set_defaults(func=run)


def run(args) -> int:
    import dataclasses
    import sys

    from harness.bench import BenchOptions, SuiteModel, print_summary, run_bench
    from harness.errors import HarnessError
    from harness.export import resolve_source
    from harness.profiles import load_profile
    from harness.report import pipeline
    from harness.report.papers import claims_table, suite_models
    from harness.results import read_results

    profile = load_profile(args.device)
    refuse_remote(profile, args, "suite")
    needed = suite_models()
    if args.models is not None:
        chosen = [m.strip() for m in args.models.split(",") if m.strip()]
        if not chosen:
            raise HarnessError("--models is empty")
        if len(set(chosen)) != len(chosen):
            raise HarnessError("a model is named twice in --models")
        unknown = [m for m in chosen if m not in needed]
        if unknown:
            raise HarnessError(
                f"{unknown[0]!r} is not in the papers' suite; its models: {', '.join(needed)}"
            )
        needed = {m: needed[m] for m in chosen}
    suite = [
        SuiteModel(
            model, {v: dataclasses.replace(resolve_source(model), variant=v) for v in variants}
        )
        for model, variants in needed.items()
    ]
    out = args.out or Path("report") / f"papers-{profile.name}"
    pipeline.check_output_dir(out)
    argv = ["harness"] + sys.argv[1:]
    options = BenchOptions(
        suite, profile, out, batch=profile.batch_sizes[0], precision=profile.precisions[0]
    )
    print_summary(run_bench(options, argv), out)
    results = read_results(out / "results.json")
    written = pipeline.write_papers(results, out)
    written += pipeline.write_report([results], out / "report", argv)[1]
    print(claims_table(results))
    for line in pipeline.report_warnings([results]):
        print(line, file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0
