"""Fault injection: every command, run in-process through ``harness.cli.main``, against output
paths that cannot be written (/sys and /proc, which refuse new files even to root; paths under a
file; a folder where a file goes and the reverse) and against malformed input (garbage ONNX,
truncated and empty JSON, empty files, broken profiles, impossible arguments). Each must end with
exit 2 (130 for Ctrl-C) and one ``error:`` line, never a traceback, never an internal error, and
write nothing where it was refused.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import textwrap
from pathlib import Path
from typing import Dict, List

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from harness.cli import COMMANDS, main

DATA = Path(__file__).resolve().parent / "data"
PROFILES = Path(__file__).resolve().parent.parent / "device_profiles"
# commands that draw a progress bar on stderr before the error; the others write only the error line
PROGRESS_COMMANDS = {"bench", "suite", "lut", "calibrate"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Dict[str, Path]:
    """Good and broken inputs, made once: a real LeNet-5 ONNX, a recorded results file, and broken
    copies."""
    tmp = tmp_path_factory.mktemp("faults")
    assert main(["export", "lenet5", "-o", str(tmp / "lenet.onnx")]) == 0
    profile = yaml.safe_load((PROFILES / "host.yaml").read_text())
    profile["timing"] = {
        "warmup_s": 0.01,
        "min_iterations": 5,
        "min_duration_s": 0.02,
        "max_duration_s": 0.2,
        "target_ci": 0.5,
        "block_iterations": 5,
        "block_s": 0.01,
    }
    (tmp / "fast.yaml").write_text(yaml.safe_dump(profile))
    (tmp / "badlevel.yaml").write_text(
        yaml.safe_dump({**profile, "onnxruntime": {"graph_optimization_level": "disabled"}})
    )
    (tmp / "twice.yaml").write_text(yaml.safe_dump(profile) + "timing:\n  warmup_s: 0.1\n")
    results = json.loads((DATA / "results_schema1_lenet5.json").read_text())
    shutil.copy(DATA / "results_schema1_lenet5.json", tmp / "results.json")
    text = (tmp / "results.json").read_text()
    (tmp / "truncated.json").write_text(text[: len(text) // 2])
    no_series = json.loads(json.dumps(results))
    del no_series["runs"][0]["series_ms"]
    (tmp / "no_series.json").write_text(json.dumps(no_series))
    bad_stats = json.loads(json.dumps(results))
    bad_stats["runs"][0]["stats"] = "fast"
    (tmp / "bad_stats.json").write_text(json.dumps(bad_stats))
    (tmp / "garbage.onnx").write_bytes(b"\x08\x07 not a protobuf \xff\xfe" * 20)
    model = onnx.load(str(tmp / "lenet.onnx"))
    model.graph.node[0].name = "\u00e9-named"  # then its UTF-8 bytes made invalid, length kept
    data = model.SerializeToString().replace("\u00e9".encode(), b"\x80\x80")
    (tmp / "notutf8.onnx").write_bytes(data)
    sequence = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    count = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])], "g", [sequence], [count]
    )
    onnx.save(helper.make_model(graph), str(tmp / "sequence.onnx"))
    relu = helper.make_node("Relu", ["x"], ["y"])  # its input is an initializer too: a constant
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in "xy")
    weight = helper.make_tensor("x", TensorProto.FLOAT, [1, 3], [1.0, -1.0, 2.0])
    graph = helper.make_graph([relu], "constant", [x], [y], [weight])
    onnx.save(helper.make_model(graph), str(tmp / "constant.onnx"))
    for name in ("empty.onnx", "empty.json", "empty.yaml", "empty.csv"):
        (tmp / name).write_bytes(b"")
    (tmp / "table.csv").write_text("id,st,end,time,stdev\n0,0,0,0.1,0.0\n")
    (tmp / "full.csv").write_text("id,st,end,time,stdev\n0,0,0,0.1,0.0\n1,1,1,1e300,0.0\n")
    (tmp / "badlong.csv").write_text("id,st,end,ker,str,is_dw,time,stdev\n0,0,0,x,1,0,0.1,0\n")
    (tmp / "rows.csv").write_text("st,end,importance\n0,zero,1\n")
    (tmp / "importance.csv").write_text("st,end,importance\n0,0,1.0\n")
    (tmp / "notadb.sqlite").write_bytes(b"this is not a SQLite file" * 40)
    (tmp / "afile.txt").write_text("occupied")
    (tmp / "adir").mkdir()
    (tmp / "link.onnx").symlink_to(tmp / "lenet.onnx")
    shutil.copy(tmp / "lenet.onnx", tmp / "two\nlines.onnx")
    (tmp / "user_faults.py").write_text(
        textwrap.dedent("""
        import sys
        def exits():
            sys.exit(3)
        def interrupted():
            raise KeyboardInterrupt
        def raises_oserror():
            open("/nonexistent-harness-dir/weights.pt")
        class Stop(BaseException):
            pass
        def raises_base_exception():
            raise Stop("a BaseException of its own")
        def no_onnx_export():
            import torch
            class Svd(torch.nn.Module):
                def forward(self, x):
                    return torch.linalg.svd(x)[1]
            return Svd()
    """)
    )
    return {
        "tmp": tmp,
        "onnx": tmp / "lenet.onnx",
        "fast": tmp / "fast.yaml",
        "results": tmp / "results.json",
    }


def _argv(line: str, files: Dict[str, Path]) -> List[str]:
    return [word.format(**files) for word in shlex.split(line)]


def _run(capsys, argv: List[str]):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_error_line(command: str, code: int, err: str, expected_code: int = 2) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == expected_code, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "internal error" not in errors[0], err
    if command not in PROGRESS_COMMANDS:
        assert len(lines) == 1, err
    return errors[0]


# --- outputs that cannot be written ---------------------------------------------------------------

FILE_FAULTS = {
    "sys": "/sys/harness-fault/{name}",
    "proc": "/proc/harness-fault/{name}",
    "under a file": "{tmp}/afile.txt/{name}",
    "a folder": "{tmp}/adir",
}
FOLDER_FAULTS = {
    "sys": "/sys/harness-fault",
    "proc": "/proc/harness-fault/out",
    "under a file": "{tmp}/afile.txt/out",
    "a file": "{tmp}/afile.txt",
}

# command -> (arguments before the output flag, the output flag, file or folder, the file name used)
OUTPUTS = {
    "bench": ("bench --device {fast} --models lenet5", "--out", "folder", ""),
    "export": ("export lenet5", "-o", "file", "x.onnx"),
    "fold": ("fold {onnx}", "-o", "file", "f.onnx"),
    "fold --report": ("fold {onnx} -o {tmp}/fold-out/f.onnx", "--report", "file", "r.json"),
    "time": ("time {onnx} --device {fast}", "--json", "file", "t.json"),
    "compare": ("compare {results} {results}", "--markdown", "file", "c.md"),
    "report": ("report {results}", "-o", "folder", ""),
    "suite": ("suite papers --device {fast} --models lenet5", "-o", "folder", ""),
    "lut": ("lut lenet5 --device {fast} --max-span 1", "-o", "file", "t.csv"),
    "plan": (
        "plan lenet5 --table {tmp}/table.csv --importance {tmp}/importance.csv --budget-ms 9",
        "-o",
        "file",
        "p.json",
    ),
    "calibrate": ("calibrate --device {fast} --quick", "-o", "file", "c.json"),
    "history": (
        "history show --device fast --history {tmp}/h.sqlite",
        "--markdown",
        "file",
        "h.md",
    ),
    "verify": ("verify {onnx} {onnx}", "--json", "file", "v.json"),
    "compare --junit": ("compare {results} {results}", "--junit", "file", "j.xml"),
    "doctor": ("doctor --device {fast}", "--json", "file", "d.json"),
    "explain": ("explain {onnx} --device {fast} --merge none", "--json", "file", "e.json"),
    "explain --csv": ("explain {onnx} --device {fast} --merge none", "--csv", "file", "e.csv"),
    "history --plot": (
        "history show --device fast --history {tmp}/h.sqlite",
        "--plot",
        "file",
        "h.png",
    ),
    "dashboard": ("dashboard --results {results}", "-o", "folder", ""),
    "dashboard --github-benchmark": (
        "dashboard --results {results} -o {tmp}/site",
        "--github-benchmark",
        "file",
        "b.json",
    ),
}
OUTPUT_CASES = [
    (name, fault)
    for name, (_, _, kind, _) in OUTPUTS.items()
    for fault in (FILE_FAULTS if kind == "file" else FOLDER_FAULTS)
]


@pytest.mark.parametrize("name,fault", OUTPUT_CASES, ids=[f"{n}-{f}" for n, f in OUTPUT_CASES])
def test_unwritable_output_is_refused_before_any_work(name, fault, files, capsys):
    line, flag, kind, filename = OUTPUTS[name]
    faults = FILE_FAULTS if kind == "file" else FOLDER_FAULTS
    target = faults[fault].format(tmp=files["tmp"], name=filename)
    argv = _argv(line, files)
    before = sorted(p.name for p in files["tmp"].iterdir())
    code, out, err = _run(capsys, argv + [flag, target])
    error = _assert_one_error_line(argv[0], code, err)
    assert target in error and flag in error, error
    assert not out, "the command did work before refusing its output"
    assert sorted(p.name for p in files["tmp"].iterdir()) == before  # nothing new beside the inputs
    if fault in ("a folder", "a file"):
        assert Path(target).is_dir() == (fault == "a folder")  # left as it was


# --- malformed input ------------------------------------------------------------------------------

BAD_INPUT = {  # case -> command line ({tmp}, {onnx}, {fast}, {results} filled in)
    "bench garbage onnx": "bench --device {fast} --models {tmp}/garbage.onnx --out {tmp}/o",
    "bench empty onnx": "bench --device {fast} --models {tmp}/empty.onnx --out {tmp}/o",
    "bench empty models": "bench --device {fast} --models '' --out {tmp}/o",
    "bench a file name of two lines": (
        "bench --device {fast} --models '{tmp}/two\nlines.onnx' --out {tmp}/o"
    ),
    "history show a device name of 3000 characters": (
        "history show --device " + "d" * 3000 + " --history {tmp}/o/h.sqlite"
    ),
    "bench empty profile": "bench --device {tmp}/empty.yaml --models lenet5 --out {tmp}/o",
    "bench batch 0": "bench --device {fast} --models lenet5 --batch 0",
    "export garbage": "export {tmp}/garbage.onnx -o {tmp}/o/x.onnx",
    "export empty": "export {tmp}/empty.onnx -o {tmp}/o/x.onnx",
    "export batch 0": "export lenet5 --batch 0 -o {tmp}/o/x.onnx",
    "export factory exits": "export user_faults:exits --input-shape 3x8x8 -o {tmp}/o/x.onnx",
    "export factory oserror": (
        "export user_faults:raises_oserror --input-shape 3x8x8 -o {tmp}/o/x.onnx"
    ),
    "export factory BaseException": (
        "export user_faults:raises_base_exception --input-shape 3x8x8 -o {tmp}/o/x.onnx"
    ),
    "export op without ONNX export": (
        "export user_faults:no_onnx_export --input-shape 3x8x8 -o {tmp}/o/x.onnx"
    ),
    "time a shape past int32": "time {onnx} --device {fast} --input-shape 1x99999999999999999999",
    "time a batch past the bound": "time {onnx} --device {fast} --batch 99999999999999999999",
    "explain a graph that folds to a constant": "explain {tmp}/constant.onnx --device {fast}",
    "explain garbage": "explain {tmp}/garbage.onnx --device {fast}",
    "explain empty trtexec exports": (
        "explain {onnx} --trt-profile {tmp}/empty.json --trt-layers {tmp}/empty.json"
    ),
    "explain truncated trtexec exports": (
        "explain {onnx} --trt-profile {tmp}/truncated.json --trt-layers {tmp}/truncated.json"
    ),
    "calibrate --check garbage": "calibrate --device {fast} --check {tmp}/garbage.onnx",
    "fold garbage": "fold {tmp}/garbage.onnx -o {tmp}/o/f.onnx",
    "fold empty": "fold {tmp}/empty.onnx -o {tmp}/o/f.onnx",
    "fold names not UTF-8": "fold {tmp}/notutf8.onnx -o {tmp}/o/f.onnx",
    "time names not UTF-8": "time {tmp}/notutf8.onnx --device {fast}",
    "fold empty cost table": "fold {onnx} -o {tmp}/o/f.onnx --cost {tmp}/empty.csv",
    "fold bad kernel in a long table": "fold {onnx} -o {tmp}/o/f.onnx --cost {tmp}/badlong.csv",
    "fold twice-keyed profile": "fold {onnx} -o {tmp}/o/f.onnx --device {tmp}/twice.yaml",
    "time garbage": "time {tmp}/garbage.onnx --device {fast}",
    "time empty": "time {tmp}/empty.onnx --device {fast}",
    "time bad level": "time {onnx} --device {tmp}/badlevel.yaml",
    "time batch 0": "time {onnx} --device {fast} --batch 0",
    "build garbage": "build {tmp}/garbage.onnx --explain",
    "build empty profile": "build {onnx} --device {tmp}/empty.yaml --explain",
    "build batch 0": "build {onnx} --batch 0 --explain",
    "build precision": "build {onnx} --precision fp8 --explain",
    "compare truncated": "compare {tmp}/truncated.json {results}",
    "compare empty": "compare {results} {tmp}/empty.json",
    "compare no series": "compare {results} {tmp}/no_series.json",
    "compare stats not an object": "compare {tmp}/bad_stats.json {results}",
    "compare onnx as results": "compare {results} {tmp}/garbage.onnx",
    "compare bad threshold": "compare {results} {results} --threshold lots",
    "report truncated": "report {tmp}/truncated.json -o {tmp}/o",
    "report empty": "report {tmp}/empty.json -o {tmp}/o",
    "report no series": "report {tmp}/no_series.json -o {tmp}/o",
    "report stats not an object": "report {tmp}/bad_stats.json -o {tmp}/o",
    "suite empty profile": "suite papers --device {tmp}/empty.yaml -o {tmp}/o",
    "suite unknown model": "suite papers --device {fast} --models nope -o {tmp}/o",
    "lut garbage": "lut {tmp}/garbage.onnx --device {fast} -o {tmp}/o/t.csv",
    "lut batch 0": "lut lenet5 --device {fast} --batch 0 -o {tmp}/o/t.csv",
    "lut bad level": "lut lenet5 --device {tmp}/badlevel.yaml -o {tmp}/o/t.csv",
    "plan empty table": (
        "plan lenet5 --table {tmp}/empty.csv --importance {tmp}/rows.csv --budget-ms 1"
    ),
    "plan malformed importance": (
        "plan lenet5 --table {tmp}/table.csv --importance {tmp}/rows.csv --budget-ms 1"
    ),
    "plan a budget too small to plan in": (
        "plan lenet5 --table {tmp}/full.csv --importance {tmp}/importance.csv --budget-ms 5e-324"
    ),
    "plan a budget a table time overflows": (
        "plan lenet5 --table {tmp}/full.csv --importance {tmp}/importance.csv --budget-ms 1e-320"
    ),
    "plan garbage model": (
        "plan {tmp}/garbage.onnx --table {tmp}/table.csv --importance {tmp}/importance.csv"
        " --budget-ms 1"
    ),
    "time a folder": "time {tmp}/adir --device {fast}",
    "fold a folder": "fold {tmp}/adir -o {tmp}/o/f.onnx",
    "compare a folder": "compare {tmp}/adir {results}",
    "report a folder": "report {tmp}/adir -o {tmp}/o",
    "history add a folder": "history add {tmp}/adir --history {tmp}/o/h.sqlite",
    "bench profile is a folder": "bench --device {tmp}/adir/ --models lenet5 --out {tmp}/o",
    "profiles show empty": "profiles show {tmp}/empty.yaml",
    "profiles show twice-keyed": "profiles show {tmp}/twice.yaml",
    "profiles show bad level": "profiles show {tmp}/badlevel.yaml",
    "profiles unknown action": "profiles delete",
    "env empty profile": "env --device {tmp}/empty.yaml",
    "env twice-keyed profile": "env --device {tmp}/twice.yaml",
    "calibrate empty profile": "calibrate --device {tmp}/empty.yaml -o {tmp}/o/c.json",
    "calibrate batch 0": "calibrate --device {fast} --batch 0 -o {tmp}/o/c.json",
    "history add truncated": "history add {tmp}/truncated.json --history {tmp}/o/h.sqlite",
    "history add empty": "history add {tmp}/empty.json --history {tmp}/o/h.sqlite",
    "dashboard truncated results": "dashboard --results {tmp}/truncated.json -o {tmp}/o/site",
    "dashboard not a database": "dashboard --history {tmp}/notadb.sqlite -o {tmp}/o/site",
    "dashboard no history": "dashboard --history {tmp}/none.sqlite -o {tmp}/o/site",
    "history show not a database": (
        "history show --device host --history {tmp}/notadb.sqlite --plot {tmp}/o/h.png"
    ),
    "verify garbage": "verify {onnx} {tmp}/garbage.onnx",
    "verify empty": "verify {tmp}/empty.onnx {onnx}",
    "verify a folder": "verify {onnx} {tmp}/adir",
    "verify a sequence input": "verify {tmp}/sequence.onnx {tmp}/sequence.onnx",
    "verify batch 0": "verify {onnx} {onnx} --batch 0",
    "verify bad shape": "verify {onnx} {onnx} --input-shape 3xbig",
    "verify infinite rtol": "verify {onnx} {onnx} --rtol inf",
    "time one file twice": "time {onnx} {tmp}/link.onnx --device {fast}",
    "doctor empty profile": "doctor --device {tmp}/empty.yaml",
    "doctor twice-keyed profile": "doctor --device {tmp}/twice.yaml",
    "doctor precision": "doctor --precision fp8",
    "unknown command": "frobnicate",
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_malformed_input_ends_in_one_error_line(case, files, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(files["tmp"]))
    argv = _argv(BAD_INPUT[case], files)
    code, _, err = _run(capsys, argv)
    _assert_one_error_line(argv[0], code, err)
    written = [p for p in (files["tmp"] / "o").rglob("*") if not p.is_dir()]
    shutil.rmtree(files["tmp"] / "o", ignore_errors=True)
    assert not written, f"a refused command left output behind: {written}"


def test_ctrl_c_in_user_code_exits_130(files, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(files["tmp"]))
    argv = _argv("export user_faults:interrupted --input-shape 3x8x8 -o {tmp}/o/x.onnx", files)
    code, _, err = _run(capsys, argv)
    assert code == 130 and err.strip() == "interrupted" and "Traceback" not in err


def test_every_registered_command_is_injected():
    lines = [line for line, *_ in OUTPUTS.values()] + list(BAD_INPUT.values())
    covered = {shlex.split(line)[0] for line in lines}
    assert set(COMMANDS) <= covered, f"add fault cases for {sorted(set(COMMANDS) - covered)}"


# --- measured data survives an output that fails after measuring ----------------------------------


def test_time_keeps_its_measurements_when_the_json_path_breaks_mid_run(
    files, capsys, monkeypatch, tmp_path
):
    """The --json folder passes the check, then turns into a file while timing: samples kept."""
    from harness import timing

    out_dir = tmp_path / "timings"
    out_dir.mkdir()
    measure = timing.measure_interleaved

    def measure_then_break_the_folder(*args, **kwargs):
        measured = measure(*args, **kwargs)
        out_dir.rmdir()
        out_dir.write_text("something else took this path")
        return measured

    monkeypatch.setattr(timing, "measure_interleaved", measure_then_break_the_folder)
    code, _, err = _run(
        capsys, ["time", files["onnx"], "--device", files["fast"], "--json", out_dir / "t.json"]
    )
    line = _assert_one_error_line("time", code, err)
    assert f"cannot write {out_dir / 't.json'}" in line and "saved to " in line
    kept = Path(line.split("saved to ")[1])
    try:
        runs = {run["id"]: run for run in json.loads(kept.read_text())["runs"]}
        series = runs[str(files["onnx"])]["series_ms"]["latency_ms"]
        assert len(series) == runs[str(files["onnx"])]["stats"]["n"] >= 5
    finally:
        kept.unlink()


def test_write_measured_falls_back_to_a_temporary_file():
    from harness.errors import HarnessError
    from harness.outputs import write_measured

    with pytest.raises(HarnessError) as info:
        write_measured("/sys/harness-fault/calibration.json", '{"points": [1, 2]}\n')
    message = str(info.value)
    assert message.startswith("cannot write /sys/harness-fault/calibration.json (")
    kept = Path(message.split("saved to ")[1])
    try:
        assert kept.name.startswith("harness-calibration-") and kept.suffix == ".json"
        assert json.loads(kept.read_text()) == {"points": [1, 2]}
    finally:
        kept.unlink()


def test_bench_keeps_its_measurements_when_the_out_folder_breaks_mid_run(
    files, capsys, monkeypatch, tmp_path
):
    """The --out folder is moved away and a file takes its place while timing: samples kept."""
    from harness import timing

    out_dir = tmp_path / "bench"
    measure = timing.measure_interleaved

    def measure_then_break_the_folder(*args, **kwargs):
        measured = measure(*args, **kwargs)
        out_dir.rename(tmp_path / "moved")
        out_dir.write_text("something else took this path")
        return measured

    monkeypatch.setattr(timing, "measure_interleaved", measure_then_break_the_folder)
    code, _, err = _run(
        capsys, ["bench", "--device", files["fast"], "--models", "lenet5", "--out", out_dir]
    )
    line = _assert_one_error_line("bench", code, err)
    assert f"cannot write {out_dir / 'results.json'}" in line and "saved to " in line
    kept = Path(line.split("saved to ")[1])
    try:
        runs = json.loads(kept.read_text())["runs"]
        assert {run["id"] for run in runs} >= {"lenet5/baseline", "lenet5/dc-fc"}
        assert all(len(run["series_ms"]["latency_ms"]) == run["stats"]["n"] >= 5 for run in runs)
    finally:
        kept.unlink()


OVERWRITES_AN_INPUT = {
    "compare": "compare {results} {tmp}/copy.json --markdown {tmp}/copy.json",
    "time": "time {tmp}/copy.onnx --device {fast} --json {tmp}/copy.onnx",
    "export": "export {tmp}/copy.onnx -o {tmp}/copy.onnx",
    "fold": "fold {onnx} -o {tmp}/f.onnx --report {onnx}",
    "verify": "verify {onnx} {tmp}/copy.onnx --json {tmp}/copy.onnx",
    "plan": "plan lenet5 --table {tmp}/table.csv --importance {tmp}/importance.csv --budget-ms 9"
    " -o {tmp}/table.csv",
}


@pytest.mark.parametrize("case", list(OVERWRITES_AN_INPUT))
def test_an_output_that_is_an_input_is_refused(case, files, capsys):
    shutil.copy(files["results"], files["tmp"] / "copy.json")
    shutil.copy(files["onnx"], files["tmp"] / "copy.onnx")
    argv = _argv(OVERWRITES_AN_INPUT[case], files)
    target = Path(argv[-1])
    before = target.read_bytes()
    code, out, err = _run(capsys, argv)
    line = _assert_one_error_line(argv[0], code, err)
    assert line.endswith(f"{target} is also an input: writing it would destroy it") and not out
    assert target.read_bytes() == before


TWO_OUTPUTS_ONE_FILE = {  # (command line, the two outputs the error names)
    "fold": (
        "fold {onnx} -o {tmp}/clash/f.onnx --report {tmp}/clash/f.onnx",
        "-o/--out/--output",
        "--report",
    ),
    "compare": (
        "compare {results} {results} --markdown {tmp}/clash/m.md --junit {tmp}/clash/m.md",
        "--markdown",
        "--junit",
    ),
    "lut": (
        "lut {onnx} --device {fast} -o {tmp}/clash/t.json",
        "-o/--out/--output",
        "its JSON sidecar",
    ),
}


@pytest.mark.parametrize("case", list(TWO_OUTPUTS_ONE_FILE))
def test_two_outputs_naming_one_file_are_refused_before_any_work(case, files, capsys):
    line, first, second = TWO_OUTPUTS_ONE_FILE[case]
    argv = _argv(line, files)
    code, out, err = _run(capsys, argv)
    message = _assert_one_error_line(argv[0], code, err)
    assert message.startswith(f"error: {first} ") and f" and {second} " in message
    assert message.endswith("are the same file: give each output its own path") and not out
    assert not (files["tmp"] / "clash").exists()  # nothing written


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes into read-only folders: /sys and /proc cases above cover it",
)
@pytest.mark.parametrize(
    "line",
    [
        "export lenet5 -o {tmp}/readonly/x.onnx",
        "time {onnx} --device {fast} --json {tmp}/readonly/new/t.json",
        "report {results} -o {tmp}/readonly/report",
    ],
)
def test_a_read_only_folder_is_refused_before_any_work(line, files, capsys):
    readonly = files["tmp"] / "readonly"
    readonly.mkdir(exist_ok=True)
    readonly.chmod(0o500)
    try:
        argv = _argv(line, files)
        code, out, err = _run(capsys, argv)
        error = _assert_one_error_line(argv[0], code, err)
        assert "does not take new files (Permission denied)" in error and not out
        assert not any(readonly.iterdir())
    finally:
        readonly.chmod(0o700)


# --- failures inside a command --------------------------------------------------------------------


def test_a_disk_that_fills_up_while_writing_ends_in_one_line(files, capsys, monkeypatch, tmp_path):
    """ENOSPC from the third file a report writes: one line naming the file, exit 2."""
    import errno

    from harness.report import pipeline

    written, write = [], pipeline.write_text_atomic

    def write_until_full(path, text):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return write(path, text)

    monkeypatch.setattr(pipeline, "write_text_atomic", write_until_full)
    code, _, err = _run(capsys, ["report", files["results"], "-o", tmp_path / "r", "--no-plots"])
    line = _assert_one_error_line("report", code, err)
    full = tmp_path / "r" / "report.tex"
    assert line == f"error: cannot read or write {full}: No space left on device"


def test_an_unexpected_exception_is_one_line_unless_the_traceback_is_asked_for(
    files, capsys, monkeypatch
):
    """A bug (here a ZeroDivisionError injected into the results reader) is named, not hidden."""
    from harness import results

    def broken_reader(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(results, "read_results", broken_reader)
    argv = ["report", files["results"], "-o", files["tmp"] / "o"]
    code, _, err = _run(capsys, argv)
    assert code == 2 and err == (
        "error: internal error, please report it: ZeroDivisionError: "
        "division by zero (HARNESS_TRACEBACK=1 shows the traceback)\n"
    )
    monkeypatch.setenv("HARNESS_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        main([str(a) for a in argv])
