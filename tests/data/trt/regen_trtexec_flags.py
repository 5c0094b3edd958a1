"""Regenerate trtexec_flags.json: every option each trtexec version parses, read from NVIDIA's
sources.

Usage: python regen_trtexec_flags.py /path/to/NVIDIA/TensorRT.git > trtexec_flags.json

Every option trtexec accepts is parsed in samples/common/sampleOptions.cpp by a call that names it
as a string literal (``getAndDelOption(arguments, "--fp16", ...)``, ``getShapesBuild(arguments,
shapes, "--minShapes", ...)``); help text writes options as "  --name=..." and is not matched.
Options left over after parsing make trtexec print "Unknown option: <name> <value>" and fail
(samples/trtexec/trtexec.cpp).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

# version -> (release branch, the banner number trtexec prints as "[TensorRT v<number>]")
RELEASES = {
    "8.5": ("release/8.5", "8502"),
    "10.13": ("release/10.13", "101300"),
    "10.16": ("release/10.16", "101600"),
    "11.0": ("release/11.0", "110000"),
    "11.1": ("release/11.1", "110100"),
}
OPTION = re.compile(r'"(--[A-Za-z][A-Za-z0-9]*|-h)"')


def read(repo: str, branch: str, path: str) -> str:
    """One file of one branch of a git repository."""
    return subprocess.run(
        ["git", "-C", repo, "show", f"{branch}:{path}"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout


def main(repo: str) -> None:
    """Print the JSON of every version's accepted options."""
    versions = {}
    for version, (branch, banner) in RELEASES.items():
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", branch], check=True, stdout=subprocess.PIPE, text=True
        ).stdout.strip()
        options = sorted(
            set(OPTION.findall(read(repo, branch, "samples/common/sampleOptions.cpp")))
        )
        versions[version] = {
            "branch": branch,
            "commit": commit,
            "banner": banner,
            "options": options,
        }
    document = {
        "source": (
            "NVIDIA/TensorRT samples/common/sampleOptions.cpp, string literals of parsed options"
        ),
        "generator": "tests/data/trt/regen_trtexec_flags.py",
        "versions": versions,
    }
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
