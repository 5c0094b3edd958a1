"""The typed results model: schema 1 read and upgraded, schema 2 written, malformed files refused
with the file and the field."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.formats import percent
from harness.results import (
    SCHEMA_VERSION,
    RatioCI,
    format_interval,
    format_ratio,
    new_results,
    read_results,
    write_results,
)

# recorded with harness at be182a2 (schema 1): bench lenet5 on a host profile with short timing
RECORDED = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"


def _recorded() -> dict:
    return json.loads(RECORDED.read_text())


def _write(tmp_path: Path, data: dict, name: str = "results.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_schema_1_is_read_and_upgraded(tmp_path):
    raw = _recorded()
    assert raw["schema"] == 1
    results = read_results(RECORDED)
    assert results.complete is True and results.device_name == "recorded-host"
    assert [r.id for r in results.runs] == [r["id"] for r in raw["runs"]]
    for run, stored in zip(results.runs, raw["runs"]):
        assert run.series_ms["latency_ms"] == stored["series_ms"]["latency_ms"]
        assert run.stats.median == stored["stats"]["median"]
        assert run.stats.p90 == stored["stats"]["p90"]
        assert run.block_ends == stored["block_ends"]
    found = results.comparison("lenet5", "dc-fc")
    stored = next(c for c in raw["comparisons"] if c["kind"] == "vs_baseline")
    assert (found.speedup.ratio, found.speedup.low, found.speedup.high) == (
        stored["speedup"],
        stored["ci_low"],
        stored["ci_high"],
    )
    assert found.speedup.level == 0.95
    assert results.deployed(results.run_by_id()["lenet5/dc-fc"]).id == "lenet5/dc-fc/folded"
    # written back as schema 2; reading that again gives the same document
    written = write_results(results, tmp_path / "again.json")
    again = json.loads(written.read_text())
    assert again["schema"] == SCHEMA_VERSION == 2 and again["complete"] is True
    assert all(c["ci_level"] == 0.95 for c in again["comparisons"])
    assert read_results(written).to_dict() == again


def test_new_results_are_schema_2_and_incomplete(tmp_path):
    results = new_results(["harness", "bench"], {"name": "host"}, {})
    assert results["schema"] == 2 and results["complete"] is False
    path = write_results(results, tmp_path / "r.json")
    assert read_results(path).complete is False


def _drop_series(d):
    del d["runs"][1]["series_ms"]


def _stats_list(d):
    d["runs"][0]["stats"] = [1, 2, 3]


def _median_text(d):
    d["runs"][2]["stats"]["median"] = "fast"


def _empty_samples(d):
    d["runs"][0]["series_ms"]["latency_ms"] = []


def _nan_sample(d):
    d["runs"][1]["series_ms"]["latency_ms"][3] = float("nan")


def _negative_sample(d):
    d["runs"][2]["series_ms"]["latency_ms"][0] = -0.5


def _no_device_name(d):
    del d["device"]["profile"]["name"]


def _bad_kind(d):
    d["comparisons"][0]["kind"] = "versus"


def _twice(d):
    d["runs"][1]["id"] = d["runs"][0]["id"]


def _runs_object(d):
    d["runs"] = {"a": 1}


def _huge_block_end(d):
    d["runs"][0]["block_ends"] = [10**12]  # one "block" past every sample: the interval narrows


def _decreasing_blocks(d):
    ends = d["runs"][1]["block_ends"]
    ends[1], ends[2] = ends[2], ends[1]


def _float_block_end(d):
    d["runs"][2]["block_ends"][0] = 1.5


def _zero_latency(d):
    d["runs"][0]["series_ms"]["latency_ms"][2] = 0


def _zero_batch(d):
    d["runs"][0]["batch"] = 0


def _layer(time_ms, **more):
    return {"name": "conv", "kind": "Conv", "time_ms": time_ms, "nodes": ["conv"], **more}


def _layer_time_text(d):
    d["runs"][0]["layers"] = {"backend": "onnxruntime", "layers": [_layer(0.1), _layer("x")]}


def _layer_nodes_numbers(d):
    d["runs"][1]["layers"] = {"layers": [_layer(0.1, original_nodes=[1])]}


def _layers_list(d):
    d["runs"][0]["layers"] = [_layer(0.1)]


def _finding_rule_number(d):
    d["runs"][0]["findings"] = [{"layer": "conv", "rule": 1, "source": "s", "detail": "d"}]


def _jetson_number(d):  # found by fuzzing: a report walked into it
    d["device"]["environment_before"]["jetson"] = 1


def _clocks_text(d):
    d["device"]["environment_after"] = {"jetson": {"jetson_clocks": "locked"}}


def _huge_params(d):  # found by fuzzing: a report divided it
    d["runs"][0]["params"] = 10**400


def _huge_batch(d):  # found by a probe: SQLite refused it after history add made its file
    d["runs"][0]["batch"] = 10**30


def _long_model(d):  # found by a probe: its charts took gigabytes
    for key in ("runs", "comparisons"):
        for entry in d[key]:
            entry["model"] = "m" * 5000


def _newline_device(d):
    d["device"]["profile"]["name"] = "two\nlines"


def _peak_text(d):
    d["device"]["profile"]["peaks"]["dram_gbps"] = "fast"


@pytest.mark.parametrize(
    "change,field",
    [
        (_huge_params, "runs[0] (lenet5/baseline).params is too large (got 1000000"),
        (_long_model, "runs[0] (lenet5/baseline).model 'mmmmmmmm"),
        (_newline_device, "device.profile.name 'two\\nlines' is not a name (1 to 4096 printable"),
        (_peak_text, "device.profile.peaks.dram_gbps is 'fast', not a number > 0 and <="),
        (_jetson_number, "device.environment_before.jetson is not an object or null (got 1)"),
        (_clocks_text, "device.environment_after.jetson.jetson_clocks is not an object or null"),
        (_huge_block_end, "runs[0] (lenet5/baseline).block_ends is not a list of increasing"),
        (_decreasing_blocks, "runs[1] (lenet5/dc-fc).block_ends is not a list of increasing"),
        (_float_block_end, "block_ends is not a list of increasing sample counts from 1 to"),
        (
            _zero_latency,
            "runs[0] (lenet5/baseline).series_ms.latency_ms holds a latency that is not",
        ),
        (_zero_batch, "runs[0] (lenet5/baseline).batch is 0, not a batch size >= 1 and <= 4096"),
        (_huge_batch, "runs[0] (lenet5/baseline).batch is too large (got 1000000000000000"),
        (_layer_time_text, "runs[0] (lenet5/baseline).layers.layers[1].time_ms is not a number"),
        (_layer_nodes_numbers, "layers.layers[0].original_nodes holds a node name that is not"),
        (_layers_list, "runs[0] (lenet5/baseline).layers is not an object"),
        (_finding_rule_number, "runs[0] (lenet5/baseline).findings[0].rule is not a string"),
        (_drop_series, "runs[1] (lenet5/dc-fc).series_ms is missing"),
        (_stats_list, "runs[0] (lenet5/baseline).stats is not an object"),
        (_median_text, "runs[2] (lenet5/dc-fc/folded).stats.median is not a number"),
        (_empty_samples, "series_ms.latency_ms is not a non-empty list of finite, non-negative"),
        (_nan_sample, "runs[1] (lenet5/dc-fc).series_ms.latency_ms is not a non-empty list of"),
        (_negative_sample, "series_ms.latency_ms is not a non-empty list of finite, non-neg"),
        (_no_device_name, "device.profile.name is missing"),
        (_bad_kind, "comparisons[0].kind is 'versus'"),
        (_twice, "runs hold the id 'lenet5/baseline' twice"),
        (_runs_object, "runs is not a list"),
    ],
)
def test_malformed_files_name_the_file_and_field(tmp_path, capsys, change, field):
    data = _recorded()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(HarnessError) as caught:
        read_results(path)
    assert str(path) in str(caught.value) and field in str(caught.value)
    # report and compare refuse it with exit 2 and one line, writing nothing
    out = tmp_path / "report"
    assert main(["report", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err and "Traceback" not in err
    assert not out.exists()
    assert main(["compare", str(RECORDED), str(path)]) == 2
    assert field in capsys.readouterr().err


def test_other_files_are_refused(tmp_path):
    for data, message in [
        ({"schema": 3, "runs": []}, "results schema 3"),
        ({"hello": 1}, "not a harness results file"),
        ({"schema": 2, "kind": "merged", "runs": [], "merged_from": ["a.json"]}, "merged report"),
    ]:
        with pytest.raises(HarnessError, match=message):
            read_results(_write(tmp_path, data))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(HarnessError, match="not a JSON results file"):
        read_results(tmp_path / "broken.json")


def test_one_formatter_for_ratios_and_intervals():
    results = read_results(RECORDED)
    ci = results.comparison("lenet5", "dc-fc").speedup
    text = format_ratio(ci)
    assert text == ci.format() == f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"
    latex = format_ratio(ci, latex=True)
    assert latex.startswith("$") and "\\times" in latex
    assert format_ratio(None, missing="n/a") == "n/a"
    # an asymmetric interval keeps both ends; ends that would print alike get more decimals
    assert RatioCI(1.0, 0.95, 1.20).format() == "1.00x [0.95, 1.20]"
    assert RatioCI(1.0012, 1.0011, 1.0014).format() == "1.0012x [1.0011, 1.0014]"
    assert format_interval(0.02889, 0.028861, 0.028923) == "0.02889 [0.02886, 0.02892]"
    assert format_interval(1.5, 1.4, 1.7) == "1.500 [1.400, 1.700]"


def test_percent_never_prints_negative_zero():
    assert percent(-0.00001) == "0.0%" and percent(0.0) == "0.0%"
    assert percent(0.527) == "52.7%" and percent(-0.167) == "-16.7%" and percent(None) == ""


def test_whole_batch_flops_of_older_files_are_read_per_sample(tmp_path):
    data = _recorded()
    run = data["runs"][0]
    per_sample = run["flops"]
    run.update(batch=4, flops=4 * per_sample)  # as written before FLOPs were per sample
    older = read_results(_write(tmp_path, data, "older.json")).runs[0]
    assert older.flops == per_sample
    written = _write(tmp_path, read_results(_write(tmp_path, data)).to_dict(), "again.json")
    assert read_results(written).runs[0].flops == per_sample  # marked per sample: not divided again


def test_a_profile_without_a_peak_reports_no_floor(tmp_path, capsys):
    # found by fuzzing: a null fp32 peak was divided by
    data = _recorded()
    data["device"]["profile"]["peaks"]["fp32_tflops"] = None
    out = tmp_path / "report"
    assert main(["report", str(_write(tmp_path, data)), "-o", str(out), "--no-plots"]) == 0
    rows = [line for line in (out / "report.md").read_text().splitlines() if "| lenet5 |" in line]
    assert len(rows) == 3 and all(row.rstrip(" |").endswith("n/a") for row in rows)


def test_a_path_long_model_name_reads_and_its_charts_stay_small(tmp_path, capsys):
    # found by a probe: a 1000-character name took 1.3 GB and a 5000-character one was killed
    data = _recorded()
    for key in ("runs", "comparisons"):
        for entry in data[key]:
            entry["model"] = "/very/long/path/" * 62 + "model.py:factory"  # 1008 characters
    out = tmp_path / "report"
    assert main(["report", str(_write(tmp_path, data)), "-o", str(out)]) == 0
    for chart in ("latency", "speedup", "latency_vs_flops"):
        header = (out / f"{chart}.png").read_bytes()[:24]
        width, height = struct.unpack(">II", header[16:24])
        assert width < 2500 and height < 2500, (chart, width, height)
