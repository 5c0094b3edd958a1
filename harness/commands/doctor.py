"""``harness doctor``: validate the TensorRT path on a new device before trusting its numbers."""

from __future__ import annotations

from harness.commands import add_command, add_device, add_output, add_precision

DESCRIPTION = """Run this first on a new Jetson or GPU. Checks the TensorRT Python module,
Polygraphy (>= 0.53, which builds the engines), pycuda, trtexec (and that it is the same TensorRT),
the driver, JetPack and the device state the profile expects; then builds a tiny engine, times it
with harness's runner and the same engine with trtexec, and says whether their GPU compute medians
agree within 2%, or why not.
Exit 0: every check passed (warnings allowed); 1: a check failed; 2: bad input."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "doctor",
        "check that the TensorRT path works on this device",
        DESCRIPTION,
        "harness doctor --device xavier --json doctor.json",
    )
    add_device(parser, default="xavier", purpose="its expectations are checked")
    add_precision(parser)
    add_output(parser, "--json", help="also write the report as JSON here")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.doctor import FAIL, doctor_report, run_doctor
    from harness.envinfo import capture_environment
    from harness.onnx_io import write_text_atomic
    from harness.profiles import checked_precision, load_profile

    profile = load_profile(args.device)
    precision = checked_precision(profile, args.precision)
    environment = capture_environment(profile)
    checks = run_doctor(profile, precision, environment, progress=print)
    report = doctor_report(profile, precision, checks, environment)
    failed = [c.name for c in checks if c.status == FAIL]
    print(f"verdict: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}")
    if args.json:
        print(f"wrote {write_text_atomic(args.json, json.dumps(report, indent=1) + chr(10))}")
    return 1 if failed else 0
