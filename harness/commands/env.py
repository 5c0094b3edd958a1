"""``harness env``: what the machine is and is doing, as recorded in every results file."""

from __future__ import annotations

import sys

from harness.commands import add_command, add_device


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "env",
        "print the captured device state (versions, clocks, power mode, temperatures)",
        "Capture the machine's state as every results file records it: CPU, cores and governor; on "
        "a Jetson the power mode (nvpmodel), clock locking (jetson_clocks), GPU/EMC frequencies, "
        "temperatures and L4T release; on a desktop GPU its name, driver, clocks, temperature and "
        "throttle reasons (NVML); library versions and the harness git SHA. Differences from what "
        "the device profile expects are listed; --strict makes them an error.",
        "harness env --device xavier --json",
    )
    add_device(parser, purpose="the state is checked against it")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 when the state differs from the profile"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import json

    from harness.energy import describe_counter
    from harness.envinfo import capture_environment, enforce_expectations
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    env = capture_environment(profile)
    env["energy_counter"] = describe_counter(profile.kind)
    problems = enforce_expectations(env, profile, args.strict)
    if args.json:  # stdout holds the JSON alone; what differs from the profile is in it too
        print(json.dumps({**env, "expectation_warnings": problems}, indent=1))
    else:
        for key, value in env.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return 0
