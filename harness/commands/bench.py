"""``harness bench``: the whole pipeline on a suite of models for one device profile."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import (
    FOLDER,
    add_backend,
    add_batch,
    add_command,
    add_device,
    add_input_shapes,
    add_output,
)

DESCRIPTION = """Export each model and its compressed variants to ONNX, fold the layers left
linear, time every graph on the device profile's backend (interleaved, with confidence intervals),
and write results.json (raw samples, environment), report.md and report.csv.

Models are zoo names (see --list), zoo:variant, ONNX files, or package.module:factory (or
path/to/file.py:factory) callables returning an nn.Module (give --input-shape). By default each
zoo model runs its baseline and its first compressed variant. Your own models: --suite suite.yaml
(each model a baseline and its variants from any of those sources, paths relative to the file;
see harness/suites.py) or, for one model, --baseline A --variants B,C. Each variant is timed
interleaved with its own baseline, so its speed-up is paired.

Devices: --device a,b,c benches several profiles at once. A profile with a `remote:` section is a
device reached over SSH: export and fold run here, the ONNX files are shipped, the device builds
and times them with its own profile under a device lock (one benchmark at a time; engines stay
cached there), and its results.json comes back into OUT/<device>/. Remote devices run in parallel;
a device that fails is reported (exit 2) without losing the others' results; OUT/fleet-report/
merges the devices that finished (OUT defaults to results/)."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "bench",
        "export, fold, time and report a suite of models",
        DESCRIPTION,
        "harness bench --device host --models resnet56,lenet5 --out results/host",
    )
    add_device(parser, several=True)
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated zoo names, .onnx paths or module:factory "
        "(default: the default suite, marked in --list)",
    )
    parser.add_argument(
        "--variants",
        default=None,
        help="'first' (baseline + first variant, default), 'all', or comma-separated variant "
        "names; with --baseline: the variants' sources (or zoo variant names)",
    )
    parser.add_argument(
        "--suite", type=Path, default=None, help="a suite file of your models (YAML, see --help)"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        help="one model's baseline (any model source); its variants come from --variants",
    )
    add_input_shapes(parser, "the export shape of factories; binds the dynamic dims of ONNX files")
    add_backend(parser)
    add_batch(parser)
    parser.add_argument(
        "--merge",
        choices=("auto", "all", "none"),
        default="auto",
        help="which linear conv chains to merge: cost-model choice (auto), every exact one, none",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the numerical check of folded graphs"
    )
    add_output(
        parser,
        kind=FOLDER,
        dest="out",
        default=None,
        help="output folder (default: results/<device>; several devices: OUT/<device>/ "
        "and OUT/fleet-report/ under results/)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse to run when the device state differs from the profile (power mode, clocks)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the zoo models and their variants, then exit"
    )
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also profile every graph per layer with the backend's profiler (profiled runs "
        "interleaved with the timed ones) and lint it: layers.md, findings.csv in the report",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=3600.0,
        help="seconds to wait for a busy remote device's lock (default: 3600)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="(run on the device by a remote bench, under its lock) time the "
        "suite a workstation prepared",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.errors import HarnessError
    from harness.profiles import load_profile, with_backend

    if args.list:
        from harness.bench import DEFAULT_MODELS
        from harness.zoo import ZOO, list_variants

        for name, entry in ZOO.items():
            print(
                f"{name:<12} {'x'.join(map(str, entry.input_shape)):<10} {entry.description:<28} "
                f"variants: {', '.join(list_variants(name))}"
                + ("  (default suite)" if name in DEFAULT_MODELS else "")
            )
        return 0
    if not 0 <= args.lock_timeout < float("inf"):
        raise HarnessError(
            f"--lock-timeout must be a finite number of seconds >= 0, not {args.lock_timeout:g}"
        )
    names = [d.strip() for d in args.device.split(",") if d.strip()]
    if not names or len(set(names)) != len(names):
        raise HarnessError("--device names no device, or one twice")
    profiles = [with_backend(load_profile(name), args.backend) for name in names]
    if len({p.name for p in profiles}) != len(profiles):
        raise HarnessError("two --device profiles have the same name; their results would collide")
    if args.manifest:
        return _run_manifest(args, profiles)
    if len(profiles) > 1 or profiles[0].remote.host:
        return _run_fleet(args, profiles)
    profile = profiles[0]
    options = _options(args, profile, args.out or Path("results") / profile.name)
    _check_local(args, profile)
    from harness.bench import lock_out_dir, print_summary, run_bench

    with lock_out_dir(options.out_dir):
        results = run_bench(options, ["harness"] + sys.argv[1:])
    print_summary(results, options.out_dir)
    return 0


def _check_local(args, profile) -> None:
    """What a bench on this machine needs, checked before export and fold: trtexec for the trtexec
    backend, the device state under --strict."""
    if profile.backend == "trtexec":
        from harness.backends.trt.trtexec import find_trtexec

        find_trtexec()
    if args.strict:
        from harness.envinfo import capture_environment, enforce_expectations

        enforce_expectations(capture_environment(profile), profile, strict=True)


def _options(args, profile, out_dir: Path):
    """BenchOptions for one device: the suite resolved (bad names fail before any work)."""
    from harness.bench import BenchOptions
    from harness.report.pipeline import check_output_dir

    check_output_dir(out_dir)
    batch = args.batch or profile.batch_sizes[0]  # --batch is a positive int when given
    suite = _suite(args, batch)
    return BenchOptions(
        suite,
        profile,
        out_dir,
        merge=args.merge,
        verify=not args.no_verify,
        batch=batch,
        precision=profile.precisions[0],
        layers=args.layers,
    )


def _suite(args, batch: int):
    """The models to run: --suite, --baseline/--variants or --models (one of them)."""
    from harness.bench import DEFAULT_MODELS, resolve_pair, resolve_suite
    from harness.errors import HarnessError

    choices = (("--suite", args.suite), ("--baseline", args.baseline), ("--models", args.models))
    given = [flag for flag, value in choices if value is not None]
    if len(given) > 1:
        raise HarnessError(f"{' and '.join(given)}: give one of them")
    if args.suite:
        from harness.suites import read_suite

        if args.variants is not None or args.input_shape or args.shapes:
            raise HarnessError("--suite: the suite file gives the variants and shapes")
        return read_suite(args.suite, batch)
    if args.baseline:
        if not args.variants:
            raise HarnessError("--baseline needs --variants B,C (their sources)")
        return resolve_pair(args.baseline, args.variants, args.input_shape, batch, args.shapes)
    models = (
        [m.strip() for m in args.models.split(",") if m.strip()]
        if args.models is not None
        else list(DEFAULT_MODELS)
    )
    if not models:
        raise HarnessError("--models is empty")
    variants = args.variants if args.variants is not None else "first"
    return resolve_suite(models, variants, args.input_shape, batch, args.shapes)


def _run_manifest(args, profiles) -> int:
    """Device side of a remote bench: time what the workstation prepared (the workstation runs
    it under the device lock, ``python -m harness.remote``)."""
    from harness.bench import lock_out_dir, run_bench
    from harness.errors import HarnessError
    from harness.remote import read_manifest

    if len(profiles) != 1 or args.models or args.suite or args.baseline:
        raise HarnessError("--manifest takes one --device and no --models, --suite or --baseline")
    fixed = {  # what the manifest decides: the workstation prepared the graphs with it
        "--variants": args.variants is not None,
        "--input-shape": args.input_shape is not None,
        "--shapes": args.shapes is not None,
        "--batch": args.batch is not None,
        "--merge": args.merge != "auto",
        "--no-verify": args.no_verify,
    }
    given = [flag for flag, differs in fixed.items() if differs]
    if given:
        raise HarnessError(
            f"{', '.join(given)}: the manifest fixes these (the suite was prepared with them)"
        )
    out_dir = args.out or Path("results") / profiles[0].name
    options = read_manifest(args.manifest, profiles[0], out_dir)
    _check_local(args, profiles[0])
    with lock_out_dir(out_dir):
        run_bench(options, ["harness"] + sys.argv[1:])
    print(f"wrote {out_dir / 'results.json'}")
    return 0


def _run_fleet(args, profiles) -> int:
    """Several devices (or one remote): parallel per device, failures reported, results merged."""
    import contextlib
    import threading

    from harness.bench import lock_out_dir, run_bench
    from harness.errors import HarnessError
    from harness.remote import fleet_summary, run_fleet
    from harness.report.pipeline import check_output_dir, report_warnings, write_report
    from harness.results import read_results

    root = args.out or Path("results")
    if len(profiles) == 1:  # one remote device: laid out as a local bench
        jobs = [_options(args, profiles[0], args.out or root / profiles[0].name)]
        report_dir = None
    else:
        jobs = [_options(args, p, root / p.name) for p in profiles]
        report_dir = root / "fleet-report"
    if report_dir:
        check_output_dir(report_dir)
    argv = ["harness"] + sys.argv[1:]

    def run_local(options) -> Path:
        _check_local(args, options.profile)
        run_bench(options, argv)
        return options.out_dir / "results.json"

    printing = threading.Lock()

    def log(line: str) -> None:  # from the devices' threads: whole lines, never interleaved
        with printing:
            print(line, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as held:
        for folder in [job.out_dir for job in jobs] + ([report_dir] if report_dir else []):
            held.enter_context(lock_out_dir(folder))
        outcomes = run_fleet(jobs, args.lock_timeout, run_local, log, args.strict)
    done, failed = fleet_summary(outcomes)
    for outcome in outcomes:
        print(
            f"{outcome.device}: "
            + (f"wrote {outcome.results}" if outcome.results else "failed (the error is below)")
        )
    if report_dir and done:
        documents = [read_results(path) for path in done]
        markdown, written, _ = write_report(documents, report_dir, argv)
        print(markdown.split("\n## Provenance")[0])
        for line in report_warnings(documents):
            print(line, file=sys.stderr)
        print(f"wrote {report_dir} ({len(written)} files, {len(done)} of {len(outcomes)} devices)")
    if failed:
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        raise HarnessError(
            f"{len(failed)} of {len(outcomes)} devices failed "
            f"({', '.join(line.split(':')[0] for line in failed)}); "
            f"the others' results are kept"
        )
    return 0
