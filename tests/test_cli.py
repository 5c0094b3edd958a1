"""The CLI end to end on tiny real models, and every kind of bad input: one line on stderr, exit 2,
no files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper

from harness.cli import COMMANDS, main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "Example" in capsys.readouterr().out


def test_export_then_time(tmp_path, fast_profile, capsys):
    onnx_path = tmp_path / "lenet.onnx"
    code, out, _ = run_cli(capsys, "export", "lenet5", "-o", onnx_path)
    assert code == 0 and onnx_path.is_file()
    # LeNet-5 MACs: conv1 6x28x28x25, conv2 16x10x10x150, fc 400x120 + 120x84 + 84x10
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert f"{2 * macs / 1e6:.2f} MFLOPs" in out
    code, out, _ = run_cli(
        capsys, "export", "lenet5", "--variant", "dc-fc", "-o", tmp_path / "dc.onnx"
    )
    assert code == 0
    timings = tmp_path / "t.json"
    code, out, _ = run_cli(
        capsys, "time", onnx_path, tmp_path / "dc.onnx", "--device", fast_profile, "--json", timings
    )
    assert code == 0 and "speed-up" in out
    data = {run["id"]: run for run in json.loads(timings.read_text())["runs"]}
    assert set(data) == {str(onnx_path), str(tmp_path / "dc.onnx")}
    first = data[str(onnx_path)]
    assert first["stats"]["n"] == len(first["series_ms"]["latency_ms"]) >= 10
    # time writes the results schema: every reader of bench's results takes it
    code, out, err = run_cli(capsys, "report", timings, "-o", tmp_path / "r")
    assert code == 0, err
    assert "| lenet | dc |" in (tmp_path / "r" / "report.md").read_text()
    assert run_cli(capsys, "compare", timings, timings)[0] == 0
    store = tmp_path / "h.sqlite"
    assert run_cli(capsys, "history", "add", timings, "--history", store)[0] == 0


def test_bench_end_to_end(tmp_path, fast_profile, capsys):
    out_dir = tmp_path / "out"
    code, out, _ = run_cli(
        capsys, "bench", "--device", fast_profile, "--models", "lenet5,resnet20", "--out", out_dir
    )
    assert code == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert results["schema"] == 2 and results["complete"] is True
    assert results["device"]["environment_before"]["cpu"]["available_cores"] >= 1
    assert results["device"]["environment_before"]["libraries"]["onnxruntime"]
    runs = {r["id"]: r for r in results["runs"]}
    base, variant = runs["resnet20/baseline"], runs["resnet20/dc-1x1"]
    assert base["backend"]["intra_op_threads"] == 1
    assert base["stats"]["n"] == len(base["series_ms"]["latency_ms"]) >= 10
    assert base["flops"] > 0 and base["params"] > 0
    assert {r["graph_precision"] for r in results["runs"]} == {"fp32"}
    folded = runs[variant["folded_run"]]
    assert folded["nodes"]["Conv"] < variant["nodes"]["Conv"]
    assert folded["verification"]["max_rel_error"] < 1e-4
    kinds = {(c["model"], c["kind"]) for c in results["comparisons"]}
    assert {("resnet20", "fold"), ("resnet20", "vs_baseline"), ("lenet5", "vs_baseline")} <= kinds
    for c in results["comparisons"]:
        assert c["ci_low"] <= c["speedup"] <= c["ci_high"]
    rows = list(csv.DictReader((out_dir / "report.csv").open()))
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("lenet5", "baseline"),
        ("lenet5", "dc-fc"),
        ("resnet20", "baseline"),
        ("resnet20", "dc-1x1"),
    ]
    assert float(rows[3]["median_ms"]) == pytest.approx(variant["stats"]["median"])
    report = (out_dir / "report.md").read_text()
    assert "| resnet20 | dc-1x1 |" in report and "## Provenance" in report
    assert f"wrote {out_dir / 'report.md'}" in out


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path: Path, monkeypatch):
    """Files and modules for every kind of bad input."""
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    (tmp_path / "notes.onnx").write_text("hello")
    # a model whose weights live 'outside' its folder
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    weights = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])],
        [weights],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.external_data_helper.set_external_data(model.graph.initializer[0], "../secret.bin")
    model.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    model.graph.initializer[0].ClearField("raw_data")
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    onnx.save(model, str(model_dir / "escape.onnx"))
    (tmp_path / "user_models.py").write_text(
        textwrap.dedent("""
        import torch
        def broken():
            raise RuntimeError("weights file missing")
        def tiny():
            return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5))
        def not_a_module():
            return 42
        def warns():
            import warnings
            warnings.warn("this factory's weights are random\\nsecond line", UserWarning)
            return tiny()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


BAD_CASES = {
    "unknown model": (["bench", "--models", "resnet9000"], "unknown model 'resnet9000'"),
    "unknown variant": (
        ["bench", "--models", "resnet20", "--variants", "dc-nope"],
        "unknown variant",
    ),
    "unknown device": (
        ["bench", "--device", "jetson-tx1", "--models", "lenet5"],
        "unknown device 'jetson-tx1'",
    ),
    "missing profile file": (["bench", "--device", "{tmp}/nope.yaml"], "does not exist"),
    "missing file": (["bench", "--models", "{tmp}/missing.onnx"], "does not exist"),
    "a folder as the model": (["explain", "{tmp}/model"], "is a directory"),
    "corrupt file": (
        ["export", "{tmp}/garbage.onnx", "-o", "{tmp}/out/x.onnx"],
        "not a valid ONNX file",
    ),
    "not onnx": (["time", "{tmp}/notes.onnx"], "ONNX"),
    "path traversal": (
        ["export", "{tmp}/model/escape.onnx", "-o", "{tmp}/out/x.onnx"],
        "outside the model's",
    ),
    "factory raises": (
        ["bench", "--models", "user_models:broken", "--input-shape", "3x32x32"],
        "raised RuntimeError: weights file missing",
    ),
    "factory returns junk": (
        ["export", "user_models:not_a_module", "--input-shape", "3x8x8", "-o", "{tmp}/out/x.onnx"],
        "expected a torch.nn.Module",
    ),
    "factory without shape": (["bench", "--models", "user_models:tiny"], "--input-shape"),
    "impossible shape": (
        ["bench", "--models", "user_models:tiny", "--input-shape", "3x2x2"],
        "cannot run on input shape",
    ),
    "input shape without a factory": (
        ["bench", "--models", "lenet5", "--input-shape", "1x32x32"],
        "--input-shape applies to factories",
    ),
    "variants without a zoo model": (
        ["bench", "--models", "user_models:tiny", "--input-shape", "3x8x8", "--variants", "dc-x"],
        "--variants applies to zoo models",
    ),
    "batch of an ONNX file": (
        ["export", "{tmp}/garbage.onnx", "--batch", "4", "-o", "{tmp}/out/x.onnx"],
        "an ONNX file keeps its own batch",
    ),
    "empty suite models": (["suite", "papers", "--models", ""], "--models is empty"),
    "suite model twice": (
        ["suite", "papers", "--models", "lenet5,lenet5"],
        "a model is named twice in --models",
    ),
    "profiles list with a name": (["profiles", "list", "xavier"], "profiles list takes no name"),
    "doctor precision the profile lacks": (
        ["doctor", "--device", "host", "--precision", "int8"],
        "device 'host' lists precisions ['fp32'], not 'int8'",
    ),
    "lock timeout nan": (
        ["bench", "--models", "lenet5", "--lock-timeout", "nan"],
        "--lock-timeout must be a finite number of seconds >= 0, not nan",
    ),
    "trtexec on another backend": (
        ["time", "{tmp}/model/escape.onnx", "--trtexec", "--backend", "torch"],
        "--backend torch contradicts it",
    ),
    "empty variants": (["bench", "--models", "lenet5", "--variants", ""], "--variants is empty"),
    "shape with an empty dimension": (
        ["export", "user_models:tiny", "--input-shape", "3x16x16x", "-o", "{tmp}/out/x.onnx"],
        "invalid input shape",
    ),
    "malformed shape": (
        ["export", "user_models:tiny", "--input-shape", "3xbig", "-o", "{tmp}/out/x.onnx"],
        "invalid input shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_one_line_exit_2_nothing_written(case, bad_inputs, capsys):
    argv, expected = BAD_CASES[case]
    argv = [a.format(tmp=bad_inputs) for a in argv]
    if argv[0] == "bench":
        argv += ["--out", str(bad_inputs / "out")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err
    assert not (bad_inputs / "out" / "results.json").exists()
    assert not (bad_inputs / "out" / "x.onnx").exists()


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", "--device", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown device 'nope'") and "Traceback" not in proc.stderr


# --- precision of the graph itself ----------------------------------------------------------------


def _conv_model(weight_type: int, input_type: int, quantized: bool = False) -> onnx.ModelProto:
    """A one-conv graph whose weights and input have the given ONNX element types."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(weight_type)
    weights = numpy_helper.from_array(np.ones((4, 3, 3, 3), dtype), "w")
    conv_input = "xc" if input_type != weight_type else "x"
    nodes = [onnx.helper.make_node("Conv", [conv_input, "w"], ["y"])]
    if input_type != weight_type:
        nodes.insert(0, onnx.helper.make_node("Cast", ["x"], ["xc"], to=weight_type))
    if quantized:
        scale = numpy_helper.from_array(np.array(0.1, dtype), "s")
        zero = numpy_helper.from_array(np.array(0, np.int8), "z")
        nodes = [
            onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
            onnx.helper.make_node("Conv", ["dq", "w"], ["y"]),
        ]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [onnx.helper.make_tensor_value_info("x", input_type, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("y", weight_type, [1, 4, 6, 6])],
        [weights] + ([scale, zero] if quantized else []),
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_graph_precision_comes_from_the_graph():
    from harness.precision import graph_precision

    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert graph_precision(_conv_model(float32, float32)) == "fp32"
    assert graph_precision(_conv_model(float16, float16)) == "fp16"
    # fp32 inputs, fp16 weights (a float16 conversion with keep_io_types)
    assert graph_precision(_conv_model(float16, float32)) == "fp16"
    assert graph_precision(_conv_model(float32, float32, quantized=True)) == "int8"


def test_an_fp16_graph_is_not_timed_as_fp32(tmp_path, fast_profile, capsys):
    model = tmp_path / "half.onnx"
    onnx.save(_conv_model(onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT16), str(model))
    for argv in (
        ["time", model, "--device", fast_profile, "--json", tmp_path / "t.json"],
        ["bench", "--models", model, "--device", fast_profile, "--out", tmp_path / "out"],
    ):
        code, _, err = run_cli(capsys, *argv)
        last = err.strip().splitlines()[-1]  # after bench's progress bar
        assert code == 2 and last.startswith(f"error: {model} computes in fp16"), err
        assert "profile runs and records fp32" in last and "Traceback" not in err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "out" / "results.json").exists()


# --- the shared arguments -------------------------------------------------------------------------


def _parsers():
    """(name, parser) of every command and sub-action, as registered."""
    import argparse

    from harness.cli import build_parser

    found, todo = [], [("", build_parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}".strip(), p) for sub, p in action.choices.items()]
    return found


def test_shared_arguments_parse_and_read_the_same_in_every_command():
    from harness.commands import OUTPUT_FLAGS, batch_size

    seen = set()
    for name, parser in _parsers():
        checked = {dest for dest, *_ in parser.get_default("output_checks") or []}
        for action in parser._actions:
            if action.dest == "batch":
                assert action.type is batch_size, name
            if action.dest == "device" and name != "history show":  # a name in the history store
                assert action.help.startswith("device profile name or YAML path"), name
            if set(action.option_strings) & set(OUTPUT_FLAGS):
                assert tuple(action.option_strings) == OUTPUT_FLAGS and action.dest in checked, name
            if action.dest in ("json", "markdown", "report", "junit") and action.type is Path:
                assert action.dest in checked, (name, action.dest)
            seen.add(action.dest)
    assert {"batch", "device", "precision", "out", "output"} <= seen


def test_batch_zero_is_refused_while_parsing(capsys):
    code, out, err = run_cli(capsys, "time", "missing.onnx", "--batch", "0")
    assert code == 2 and not out
    assert (
        err == "error: harness time: argument --batch: expected a positive integer of at most "
        "4096, got 0 (see harness time --help)\n"
    )


def test_list_marks_the_default_suite_and_empty_models_is_an_error(tmp_path, capsys):
    from harness.bench import DEFAULT_MODELS
    from harness.zoo import ZOO

    code, out, _ = run_cli(capsys, "bench", "--list")
    marked = {line.split()[0] for line in out.splitlines() if line.endswith("(default suite)")}
    assert code == 0 and marked == set(DEFAULT_MODELS) and set(ZOO) - marked  # not the whole zoo
    code, _, err = run_cli(capsys, "bench", "--models", "", "--out", tmp_path / "o")
    assert code == 2 and err == "error: --models is empty\n" and not (tmp_path / "o").exists()


def test_systemexit_and_unexpected_errors_in_user_code_end_in_one_line(bad_inputs, capsys):
    (bad_inputs / "exiting.py").write_text("import sys\n\ndef model():\n    sys.exit(3)\n")
    code, out, err = run_cli(
        capsys, "export", "exiting:model", "--input-shape", "3x8x8", "-o", bad_inputs / "x.onnx"
    )
    assert (
        code == 2
        and err == "error: stopped by SystemExit(3) from the code it ran (a model factory?)\n"
    )
    assert not (bad_inputs / "x.onnx").exists()


def test_build_on_a_profile_without_tensorrt_says_so_not_that_tensorrt_is_missing(tmp_path, capsys):
    model = tmp_path / "lenet.onnx"
    assert main(["export", "lenet5", "-o", str(model)]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "build", model, "--device", "host")
    assert code == 2
    assert err.startswith("error: profile host runs on onnxruntime, which builds no engine")
    assert "install" not in err


def test_python_warnings_print_as_one_line_each(bad_inputs, capsys):
    out_path = bad_inputs / "out" / "w.onnx"
    code, out, err = run_cli(
        capsys, "export", "user_models:warns", "--input-shape", "3x8x8", "-o", out_path
    )
    assert code == 0 and out_path.is_file(), err
    assert err.splitlines() == ["warning: this factory's weights are random"]


@pytest.mark.parametrize(
    "argv",
    [
        ["suite", "papers", "--models", "lenet5"],
        ["lut", "lenet5", "-o", "{tmp}/out/t.csv"],
        ["calibrate", "-o", "{tmp}/out/c.json"],
        ["fold", "{tmp}/m.onnx", "-o", "{tmp}/out/f.onnx", "--arbitrate"],
    ],
)
def test_commands_that_measure_here_refuse_a_remote_profile(argv, tmp_path, capsys):
    profile = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "device_profiles" / "host.yaml").read_text()
    )
    profile["remote"] = {"host": "device.invalid"}
    (tmp_path / "far.yaml").write_text(yaml.safe_dump(profile))
    assert main(["export", "lenet5", "-o", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--device", str(tmp_path / "far.yaml")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "names the remote device device.invalid" in err and "--local" in err
    assert not (tmp_path / "out").exists()


def test_an_option_the_command_lacks_is_named_before_a_missing_required_one(capsys):
    """A newcomer's ``harness export --model x`` is told about --model, not about -o."""
    assert main(["export", "--model", "rn18c:baseline"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --model" in err and "harness export --help" in err
    assert main(["export", "resnet20"]) == 2  # nothing unknown: the missing -o is the mistake
    assert "required: -o/--out/--output" in capsys.readouterr().err
