"""Energy and memory through the whole pipeline: ``harness bench`` on a host whose RAPL counter is
a recorded powercap tree (this machine has none), the report's section and columns, and
``harness compare --metric energy``.

The tree is laid out as Linux's powercap documentation shows it (``intel-rapl:0`` = package-0,
``energy_uj`` in µJ, ``max_energy_range_uj``); its counter reads as a package drawing a constant
15 W would. No figure here is a measurement of this machine's energy.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from harness import energy
from tests.test_cli import run_cli
from tests.test_compare import GRAPHS, _results

WATTS = 15.0


@pytest.fixture
def rapl_host(tmp_path, monkeypatch):
    """A RAPL package counter at 15 W, and bench's meter opened on it (idle measured 0.2 s).

    sysfs computes ``energy_uj`` when it is read; so does this double: the tree holds the files,
    a read of its ``energy_uj`` returns what a 15 W package has used since the fixture began."""
    zone = tmp_path / "sys" / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    began, read = time.perf_counter(), energy._read_number

    def read_now(path: Path) -> float:
        if path == zone / "energy_uj":
            return float(int((time.perf_counter() - began) * WATTS * 1e6))
        return read(path)

    monkeypatch.setattr(energy, "_read_number", read_now)
    original = energy.open_for_run
    monkeypatch.setattr(
        energy,
        "open_for_run",
        lambda kind: original(kind, idle_s=0.2, sys_root=tmp_path / "sys"),
    )


def test_bench_with_rapl_writes_energy_with_intervals(tmp_path, fast_profile, capsys, rapl_host):
    out_dir = tmp_path / "out"
    code, _, _ = run_cli(
        capsys, "bench", "--device", fast_profile, "--models", "lenet5", "--out", out_dir
    )
    assert code == 0
    results = json.loads((out_dir / "results.json").read_text())
    note = results["device"]["energy"]
    assert note["source"] == "rapl" and note["rails"] == ["package-0"]
    assert note["idle_w"] == pytest.approx(WATTS, rel=0.1)
    for run in results["runs"]:
        spent = run["energy"]
        assert len(spent["per_block_mj"]) == len(run["block_ends"])
        assert all(v > 0 for v in spent["per_block_mj"])
        assert spent["ci_low_mj"] <= spent["median_mj"] <= spent["ci_high_mj"]
        # 15 W over a block lasting at least its inferences' latencies: W x ms = mJ
        assert spent["median_mj"] >= WATTS * run["stats"]["min"]
        # the package drew its idle power throughout: nothing above idle (the median block: a
        # thread preempted between reading the clock and the counter skews a few on a busy host)
        above = sorted(spent["above_idle_per_block_mj"])
        assert len(above) == len(spent["per_block_mj"])
        assert abs(above[len(above) // 2]) < 0.05 * spent["median_mj"]
        assert run["memory"]["weights"]["bytes"] == 4 * run["params"]  # float32 lenet5
        assert run["memory"]["graph_rss"]["bytes"] > 0
    for comparison in results["comparisons"]:
        assert comparison["energy_ci_low"] <= comparison["energy_ratio"]
        assert comparison["energy_ratio"] <= comparison["energy_ci_high"]
    report = (out_dir / "report.md").read_text()
    assert "## Energy and memory" in report and "`rapl`" in report
    assert "energy mJ/inference [95% CI]" in report
    rows = {r["variant"]: r for r in csv.DictReader((out_dir / "report.csv").open())}
    baseline = next(r for r in results["runs"] if r["id"] == "lenet5/baseline")
    assert float(rows["baseline"]["energy_mj"]) == pytest.approx(baseline["energy"]["median_mj"])
    assert int(rows["baseline"]["weights_bytes"]) == baseline["memory"]["weights"]["bytes"]


def _with_energy(results: dict, scale: float) -> dict:
    """``results`` with every run's energy per block scaled (a graph that costs ``scale`` x)."""
    data = json.loads(json.dumps(results))
    for run in data["runs"]:
        for key in ("per_block_mj",):
            run["energy"][key] = [v * scale for v in run["energy"][key]]
        for key in ("median_mj", "ci_low_mj", "ci_high_mj"):
            run["energy"][key] *= scale
    return data


def test_compare_gates_on_energy(tmp_path, capsys):
    base = json.loads(_results(tmp_path / "latency.json", dict.fromkeys(GRAPHS, 1.0)).read_text())
    for run, level in zip(base["runs"], (2.0, 1.0)):
        run["energy"] = energy.run_energy(
            energy.CounterMeter("rapl", dict, ["package-0"]),
            [energy.BlockEnergy(level * 10 * (1 + 0.01 * (i % 3)), {}, 0.1) for i in range(8)],
            [10] * 8,
        ).to_dict()
    paths = {}
    for name, data in (("base", base), ("same", base), ("costly", _with_energy(base, 1.5))):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    code, out, _ = run_cli(capsys, "compare", paths["base"], paths["same"], "--metric", "energy")
    assert code == 0 and "No energy regression" in out and "base mJ" in out
    code, out, _ = run_cli(capsys, "compare", paths["base"], paths["costly"], "--metric", "energy")
    assert code == 1 and "Energy regression" in out and "+50.0%" in out
    code, out, _ = run_cli(capsys, "compare", paths["base"], paths["costly"])
    assert code == 0  # latency did not change
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({**base, "runs": [dict(r, energy=None) for r in base["runs"]]}))
    code, _, err = run_cli(capsys, "compare", bare, paths["base"], "--metric", "energy")
    assert code == 2 and "energy was not measured in base" in err


def test_env_names_the_energy_counter_or_why_there_is_none(capsys):
    code, out, _ = run_cli(capsys, "env", "--device", "host")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("energy_counter:"))
    assert "rapl" in line or "no readable power counter: energy not measured" in line


def test_latency_vs_energy_plot_draws_intervals_fronts_and_says_what_is_missing():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.cross_device import merge
    from harness.report.plots import _latency_vs_energy
    from tests.test_report import _recorded_two_devices

    first, second = _recorded_two_devices()
    meter = energy.CounterMeter("rapl", dict, ["package-0"])
    for run in first.runs:  # a trade-off: the faster a graph, the more energy it spends
        level = 100.0 / run.stats.median
        blocks = [energy.BlockEnergy(level * (10 + i), {}, 0.1) for i in range(6)]
        run.energy = energy.run_energy(meter, blocks, [10] * 6)
    table = merge([first, second])
    fig = _latency_vs_energy(plt, table)
    measured, bare = fig.axes[0], fig.axes[1]
    cells = sum((row, table.devices[0].label) in table.cells for row in table.rows)
    assert len(measured.containers) == cells  # one point with its interval per deployed graph
    fronts = [line for line in measured.get_lines() if line.get_gid() == "pareto-front"]
    assert fronts and all(len(line.get_xdata()) >= 2 for line in fronts)  # no one-point front
    assert "energy not measured" in [t.get_text() for t in bare.texts]
    assert measured.get_xscale() == "log"
    plt.close(fig)


def test_cross_device_tables_carry_energy_where_a_device_measured_it():
    from harness.report.cross_device import merge
    from harness.report.render import csv_records, to_markdown
    from tests.test_report import _recorded_two_devices

    first, second = _recorded_two_devices()
    meter = energy.CounterMeter("rapl", dict, ["package-0"])
    for run in first.runs:
        blocks = [energy.BlockEnergy(run.stats.median * (10 + i % 2), {}, 0.1) for i in range(6)]
        run.energy = energy.run_energy(meter, blocks, [10] * 6)
    table = merge([first, second])
    text = to_markdown(table)
    first_label, second_label = (d.label for d in table.devices)
    assert f"{first_label} mJ/inference [95% CI]" in text
    assert f"{second_label} mJ/inference" not in text  # no column of "not measured" alone
    records = [r for r in csv_records(table) if r["device"] == first_label]
    run = next(r for r in first.runs if (r.model, r.variant, r.folded) == ("lenet5", "baseline",
                                                                            False))  # fmt: skip
    baseline = next(r for r in records if r["variant"] == "baseline")
    assert baseline["energy_mj"] == pytest.approx(first.deployed(run).energy.median_mj)
    assert all(r["energy_mj"] is None for r in csv_records(table) if r["device"] == second_label)


def test_time_reports_energy_per_inference_and_its_ratio(tmp_path, fast_profile, capsys, rapl_host):
    from tests.test_memory import _gemm

    _gemm(tmp_path / "small.onnx", 64)
    _gemm(tmp_path / "large.onnx", 4096, outputs=256)
    out = tmp_path / "t.json"
    code, text, _ = run_cli(
        capsys, "time", tmp_path / "small.onnx", tmp_path / "large.onnx", "--device",
        fast_profile, "--json", out,
    )  # fmt: skip
    assert code == 0
    assert text.count("mJ/inference") == 2 and "energy ratio" in text
    record = json.loads(out.read_text())  # the results schema bench writes
    assert record["device"]["energy"]["source"] == "rapl"
    large = next(r for r in record["runs"] if r["onnx"] == str(tmp_path / "large.onnx"))
    (paired,) = [c for c in record["comparisons"] if c["subject"] == large["id"]]
    assert paired["energy_ci_low"] <= paired["energy_ratio"] <= paired["energy_ci_high"]
    assert len(large["energy"]["per_block_mj"]) == len(large["block_ends"])


def test_time_without_a_counter_says_energy_is_not_measured(
    tmp_path, fast_profile, capsys, monkeypatch
):
    from tests.test_memory import _gemm

    _gemm(tmp_path / "m.onnx", 64)
    original, empty = energy.open_for_run, tmp_path / "sys"  # a host with no powercap zones
    monkeypatch.setattr(energy, "open_for_run", lambda kind: original(kind, sys_root=empty))
    code, text, _ = run_cli(capsys, "time", tmp_path / "m.onnx", "--device", fast_profile)
    assert code == 0 and "energy: no readable power counter: energy not measured" in text
    assert "mJ/inference" not in text


def test_latex_table_gives_metered_devices_energy_columns():
    from harness.report.cross_device import merge
    from harness.report.latex import PER_DEVICE, to_latex
    from tests.test_report import _recorded_two_devices

    first, second = _recorded_two_devices()
    plain = to_latex(merge([first, second]))
    meter = energy.CounterMeter("rapl", dict, ["package-0"])
    for run in first.runs:
        blocks = [energy.BlockEnergy(run.stats.median * (10 + i % 2), {}, 0.1) for i in range(6)]
        run.energy = energy.run_energy(meter, blocks, [10] * 6)
    table = merge([first, second])
    text = to_latex(table)
    label = table.devices[0].label
    assert f"\\multicolumn{{{PER_DEVICE + 2}}}{{c}}{{{label}}}" in text
    assert " & mJ & energy & " in text and "Energy: median mJ per inference" in text
    columns = 6 + PER_DEVICE + 2 + PER_DEVICE
    assert f"{{ll{'r' * (columns - 2)}}}" in text
    rows = [line for line in text.splitlines() if line.startswith(("lenet5", "resnet"))]
    assert rows and all(line.count(" & ") == columns - 1 for line in rows)
    assert "mJ" not in plain  # without energy the table is as it was
