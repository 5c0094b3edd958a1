"""``harness bench``: the whole pipeline on a suite of models for one device profile."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.commands import add_command

DESCRIPTION = """Export each model and its compressed variants to ONNX, fold the layers left linear, time every
graph on the device profile's backend (interleaved, with confidence intervals), and write results.json (raw
samples, environment), report.md and report.csv.

Models are zoo names (see --list), ONNX files, or package.module:factory callables returning an nn.Module
(give --input-shape). By default each zoo model runs its baseline and its first compressed variant."""


def register(subparsers) -> None:
    parser = add_command(subparsers, "bench", "export, fold, time and report a suite of models", DESCRIPTION,
                         "harness bench --device host --models resnet56,lenet5 --out results/host")
    parser.add_argument("--device", default="host", help="device profile name or YAML path (default: host)")
    parser.add_argument("--models", default=None,
                        help="comma-separated zoo names, .onnx paths or module:factory (default: the whole zoo)")
    parser.add_argument("--variants", default="first",
                        help="'first' (baseline + first variant, default), 'all', or comma-separated variant names")
    parser.add_argument("--input-shape", default=None, help="input shape without batch for factories, e.g. 3x32x32")
    parser.add_argument("--backend", default=None,
                        help="run on this backend instead of the profile's (onnxruntime, tensorrt, trtexec, torch)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's first)")
    parser.add_argument("--merge", choices=("auto", "all", "none"), default="auto",
                        help="which linear conv chains to merge: cost-model choice (auto), every exact one, none")
    parser.add_argument("--no-verify", action="store_true", help="skip the numerical check of folded graphs")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: results/<device>)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to run when the device state differs from the profile (power mode, clocks)")
    parser.add_argument("--list", action="store_true", help="list the zoo models and their variants, then exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.errors import HarnessError
    from harness.profiles import load_profile, with_backend

    if args.list:
        from harness.zoo import ZOO, list_variants

        for name, entry in ZOO.items():
            print(f"{name:<12} {'x'.join(map(str, entry.input_shape)):<10} {entry.description:<28} "
                  f"variants: {', '.join(list_variants(name))}")
        return 0
    profile = with_backend(load_profile(args.device), args.backend)
    if args.strict:
        from harness.envinfo import capture_environment, enforce_expectations

        enforce_expectations(capture_environment(profile), profile, strict=True)
    batch = args.batch if args.batch is not None else profile.batch_sizes[0]
    if batch < 1:
        raise HarnessError("--batch must be a positive integer")
    from harness.bench import DEFAULT_MODELS, BenchOptions, print_summary, resolve_suite, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else list(DEFAULT_MODELS)
    if not models:
        raise HarnessError("--models is empty")
    suite = resolve_suite(models, args.variants, args.input_shape, batch)
    out_dir = args.out or Path("results") / profile.name
    options = BenchOptions(suite, profile, out_dir, merge=args.merge, verify=not args.no_verify, batch=batch,
                           precision=profile.precisions[0])
    results = run_bench(options, ["harness"] + sys.argv[1:])
    print_summary(results, out_dir)
    return 0
