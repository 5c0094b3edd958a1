"""``harness profiles``: list the device profiles, or show one resolved."""

from __future__ import annotations

from harness.commands import add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "profiles",
        "list device profiles or show one resolved",
        "List the device profiles in device_profiles/ (name, kind, backend, description), or print "
        "one with every default filled in. Add your own by dropping a YAML file there, or pass "
        "--device path/to/profile.yaml to any command.",
        "harness profiles show xavier",
    )
    parser.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    parser.add_argument("name", nargs="?", help="profile name or YAML path (for show)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from harness.errors import HarnessError
    from harness.profiles import available_profiles, load_profile

    if args.action == "show":
        if not args.name:
            raise HarnessError("which profile? e.g. harness profiles show xavier")
        data = load_profile(args.name).to_dict()
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    if args.name:
        raise HarnessError(f"profiles list takes no name (did you mean profiles show {args.name}?)")
    for name in available_profiles():
        profile = load_profile(name)
        print(f"{name:<11} {profile.kind:<7} {profile.backend:<12} {profile.description}")
    return 0
