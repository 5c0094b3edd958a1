"""The fleet workflow in docs/ against GitHub's workflow schema (check-jsonschema's vendored copy,
offline), and every harness command line in it against harness's own argument parser."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import yaml

from harness.cli import build_parser
from harness.profiles import available_profiles

WORKFLOW = Path(__file__).resolve().parent.parent / "docs" / "github-actions-fleet.yml"
pytest.importorskip("check_jsonschema", reason="needs check-jsonschema (the dev extra)")


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_fleet_workflow_passes_githubs_workflow_schema():
    result = _check(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", ["step with uses and run", "no runs-on", "bad timeout"])
def test_the_schema_check_catches_a_broken_workflow(tmp_path, breakage):
    text = WORKFLOW.read_text()
    if breakage == "step with uses and run":
        text = text.replace(
            "      - uses: actions/checkout@v4\n",
            "      - uses: actions/checkout@v4\n        run: echo both\n",
            1,
        )
    elif breakage == "no runs-on":
        text = re.sub(r"\n    runs-on: .*\n", "\n", text, count=1)
    else:
        text = text.replace("timeout-minutes: 90", "timeout-minutes: [90]", 1)
    assert text != WORKFLOW.read_text()
    broken = tmp_path / "latency.yml"
    broken.write_text(text)
    assert _check(broken).returncode == 1


def test_one_job_per_device_label_with_gate_summary_and_artifacts():
    job = _workflow()["jobs"]["bench"]
    devices = [entry["device"] for entry in job["strategy"]["matrix"]["include"]]
    assert devices and set(devices) <= set(available_profiles())  # labels are profile names
    assert job["runs-on"] == ["self-hosted", "${{ matrix.device }}"]
    assert job["strategy"]["fail-fast"] is False
    steps = {step.get("name") or step.get("uses"): step for step in job["steps"]}
    assert 'make bench DEVICE="$DEVICE"' in steps["Bench"]["run"]
    download = steps["Baseline results of the default branch"]["with"]
    upload = steps["actions/upload-artifact@v4"]["with"]
    assert download["name"] == upload["name"] == "results-${{ matrix.device }}"
    assert "default_branch" in download["branch"]
    summary = steps["Job summary (table + trend chart)"]["run"]
    assert summary.count("$GITHUB_STEP_SUMMARY") == 2
    assert (
        steps["Fail on regression (exit 1) or bad input (exit 2)"]["if"]
        == "steps.compare.outputs.status != '0'"
    )


def _harness_commands(workflow: Path = WORKFLOW) -> List[List[str]]:
    text = workflow.read_text().replace("\\\n", " ")
    values = {
        "$DEVICE": "xavier",
        "$HISTORY": "h.sqlite",
        "$GITHUB_SHA": "abc",
        "$COMMIT": "abc",
        '"${files[@]}"': "r.json",
        '"${given[@]}"': "--results r.json",
    }
    commands = []
    for line in text.splitlines():
        if ".venv/bin/harness " not in line:
            continue
        command = line.split(".venv/bin/harness ", 1)[1].split(" && ")[0]
        for name, value in values.items():
            command = command.replace(name, value)
        commands.append(shlex.split(command))
    return commands


def test_every_harness_command_in_the_workflow_parses():
    commands = _harness_commands()
    assert {argv[0] for argv in commands} >= {"env", "compare", "history"}
    assert any("--against-history" in argv for argv in commands)
    for argv in commands:
        args = build_parser().parse_args(argv)  # unknown flags raise HarnessError
        assert args.func is not None


DASHBOARD = WORKFLOW.parent / "github-actions-dashboard.yml"


def test_the_dashboard_workflow_passes_githubs_workflow_schema():
    result = _check(DASHBOARD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_workflow_builds_the_site_and_deploys_it_to_pages():
    workflow = yaml.safe_load(DASHBOARD.read_text())
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    uses = [step.get("uses", "") for step in build["steps"]]
    assert "actions/upload-pages-artifact@v3" in uses
    pages = next(s for s in build["steps"] if s.get("uses") == "actions/upload-pages-artifact@v3")
    site = pages["with"]["path"]
    benchmark = next(s for s in build["steps"] if "github-action-benchmark" in s.get("uses", ""))
    assert benchmark["with"]["tool"] == "customSmallerIsBetter"
    (argv,) = [a for a in _harness_commands(DASHBOARD) if a[0] == "dashboard"]
    args = build_parser().parse_args(argv)
    assert (
        str(args.out) == site
        and str(args.github_benchmark) == benchmark["with"]["output-file-path"]
    )
    # the cache is saved after github-action-benchmark wrote its data beside the history
    assert uses.index("actions/cache/save@v4") > uses.index(benchmark["uses"])
    assert deploy["needs"] == "build" and deploy["steps"][0]["uses"] == "actions/deploy-pages@v4"
