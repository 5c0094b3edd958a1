"""A hostile environment, not bad input: closed or ASCII-only output streams, SIGTERM, outputs that
are device nodes or FIFOs, a second bench into the same folder, a killed write's temporary file, a
numpy that the installed ONNX Runtime cannot run with. Device nodes are made in a scratch folder,
never the system's."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from harness import cli
from harness.cli import main
from harness.errors import HarnessError
from harness.onnx_io import save_model, write_text_atomic
from harness.outputs import check_output
from tests.conftest import FAST_TIMING

ROOT = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).resolve().parent / "data" / "results_schema1_lenet5.json"


def _tiny_model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_model(), str(path))
    return path


def _profile(tmp_path: Path, **timing) -> Path:
    data = yaml.safe_load((ROOT / "device_profiles" / "host.yaml").read_text())
    data["timing"] = {**FAST_TIMING, **timing}
    data["onnxruntime"]["intra_op_threads"] = 1
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _harness(args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *map(str, args)], cwd=ROOT, **kwargs
    )


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is gone (``| true`` after ``true`` exited)."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_a_closed_stdout_keeps_the_measurements_and_exits_quietly(tmp_path, tiny):
    out = tmp_path / "t.json"
    stdout = _closed_pipe()
    proc = _harness(
        ["time", tiny, "--device", _profile(tmp_path), "--json", out],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(stdout)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err and "Exception ignored" not in err
    (run,) = json.loads(out.read_text())["runs"]  # the results schema
    assert run["onnx"] == str(tiny) and run["series_ms"]["latency_ms"]


def test_bench_with_both_streams_closed_writes_every_file(tmp_path, tiny):
    out = tmp_path / "R"
    stdout, stderr = _closed_pipe(), _closed_pipe()
    proc = _harness(
        ["bench", "--device", _profile(tmp_path), "--models", tiny, "--out", out],
        stdout=stdout,
        stderr=stderr,
    )
    os.close(stdout)
    os.close(stderr)
    assert proc.wait(timeout=300) == 0
    assert {"results.json", "report.md", "report.csv"} <= {p.name for p in out.iterdir()}


def test_an_ascii_terminal_gets_the_verdict_without_its_emoji(tmp_path):
    slower = json.loads(RECORDED.read_text())
    for run in slower["runs"]:
        run["series_ms"]["latency_ms"] = [2 * v for v in run["series_ms"]["latency_ms"]]
    new = tmp_path / "new.json"
    new.write_text(json.dumps(slower))
    proc = _harness(
        ["compare", RECORDED, new],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"},
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # a regression, not a crash (2)
    assert b"? slower" in out and b"Traceback" not in err


def test_sigterm_during_time_saves_the_blocks_measured(tmp_path, tiny):
    out = tmp_path / "t.json"
    profile = _profile(tmp_path, min_duration_s=600, max_duration_s=600, target_ci=0.000001)
    tiny.with_name("again.onnx").write_bytes(tiny.read_bytes())
    proc = _harness(
        ["time", tiny, tiny.with_name("again.onnx"), "--device", profile, "--json", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)  # imports, warm-up, a few rounds
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err, err
    data = json.loads(out.read_text())
    assert data["complete"] is False
    assert len(data["runs"]) == 2
    for entry in data["runs"]:
        assert entry["stop_reason"].startswith("interrupted (Ctrl-C or SIGTERM) after")
        assert entry["block_ends"][-1] == len(entry["series_ms"]["latency_ms"]) > 0


def _special(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"node-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("making a character device needs root")
    return path


def test_a_character_device_output_is_written_in_place_never_replaced(tmp_path, tiny, capsys):
    node = _special(tmp_path, "chr")
    assert main(["fold", str(tiny), "-o", str(node), "--merge", "none"]) == 0
    assert main(["time", str(tiny), "--device", str(_profile(tmp_path)), "--json", str(node)]) == 0
    assert stat.S_ISCHR(os.stat(node).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_fifo_output_is_written_to_its_reader_or_refused_without_one(tmp_path):
    fifo = _special(tmp_path, "fifo")
    with pytest.raises(HarnessError, match="a FIFO that nothing reads"):
        write_text_atomic(fifo, "no reader\n")
    received = []
    reader = threading.Thread(target=lambda: received.append(Path(fifo).read_text()))
    reader.start()
    for _ in range(200):  # the reader opens its end
        try:
            write_text_atomic(fifo, "to the reader\n")
            break
        except HarnessError:
            time.sleep(0.01)
    reader.join(5)
    assert received == ["to the reader\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    check_output(fifo)  # a FIFO this user may write is a valid output


def test_a_block_device_or_socket_output_is_refused(tmp_path):
    import socket

    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(HarnessError, match="is a block device or socket"):
            check_output(path)
    finally:
        server.close()


def test_a_killed_writes_temporary_file_is_removed_by_the_next_write_there(tmp_path):
    target = tmp_path / "m.onnx"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    pid = int(dead.stdout)  # a process that has ended
    host = __import__("socket").gethostname()
    stale = tmp_path / f".m.onnx.{host}-{pid}.abc123.partial"
    alive = tmp_path / f".m.onnx.{host}-{os.getpid()}.def456.partial"  # a write still running
    other = tmp_path / f".other.onnx.{host}-{pid}.abc123.partial"  # another file's, killed too
    elsewhere = tmp_path / f".m.onnx.otherhost-{pid}.abc123.partial"  # not this host's to judge
    for path in (stale, alive, other, elsewhere):
        path.write_bytes(b"\0" * 1024)
    save_model(_tiny_model(), target)
    assert not stale.exists() and not other.exists() and alive.exists() and elsewhere.exists()
    assert onnx.load(str(target)).graph.node[0].op_type == "Conv"


def test_a_second_bench_into_the_same_folder_is_refused(tmp_path, tiny, capsys):
    from harness.bench import lock_out_dir

    out = tmp_path / "R"
    with lock_out_dir(out):
        code = main(
            ["bench", "--device", str(_profile(tmp_path)), "--models", str(tiny), "--out", str(out)]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "in use by another bench" in err
    assert "\n" not in err and not (out / "results.json").exists()


def test_trtexec_is_looked_for_before_export_and_fold(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec anywhere
    monkeypatch.setattr("harness.backends.trt.trtexec.JETSON_TRTEXEC", str(tmp_path / "none"))
    out = tmp_path / "R"
    code = main(
        [
            "bench",
            "--device",
            str(_profile(tmp_path)),
            "--backend",
            "trtexec",
            "--models",
            str(tiny),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and "trtexec not found" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "versions,problem",
    [
        (
            {"onnxruntime": "1.18.1", "numpy": "2.0.0"},
            "onnxruntime 1.18.1 crashes on import with numpy 2.0.0",
        ),
        ({"onnxruntime": "1.19.0", "numpy": "2.1.3"}, ""),
        ({"onnxruntime": "1.15.1", "numpy": "1.26.4"}, ""),
    ],
)
def test_onnxruntime_that_cannot_import_under_numpy_2_is_named(monkeypatch, versions, problem):
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: versions[name])
    found = cli.onnxruntime_numpy_problem()
    assert found.startswith(problem) and bool(found) == bool(problem)
    if problem:
        assert "pip install 'onnxruntime>=1.19' (or 'numpy<2')" in found


def test_graphsurgeon_warnings_do_not_reach_the_terminal(capfd):
    from onnx_graphsurgeon.logger import G_LOGGER

    import harness.fold  # noqa: F401 - configures graphsurgeon's logger

    G_LOGGER.warning("a graphsurgeon warning")
    out, err = capfd.readouterr()
    assert "graphsurgeon warning" not in out + err and "colored" not in out + err


def _unrunnable(path: Path, node: onnx.NodeProto, weight: np.ndarray) -> Path:
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "node,weight,message",
    [  # a Conv whose group (4) does not divide its 6 input channels: refused on load
        (
            helper.make_node("Conv", ["x", "w"], ["y"], group=4),
            np.ones((4, 2, 3, 3), np.float32),
            ": Conv 'y': 6 input channels, but its weight takes 2 per group x group 4 = 8",
        ),
        (  # a Reshape to a size the input does not have: ONNX Runtime loads it, running fails
            helper.make_node("Reshape", ["x", "w"], ["y"]),
            np.array([5, 5], np.int64),
            "error: ONNX Runtime cannot run ",
        ),
    ],
)
def test_a_graph_the_runtime_cannot_run_is_one_line_without_its_log(
    tmp_path, node, weight, message
):
    model = _unrunnable(tmp_path / "bad.onnx", node, weight)
    for command in (
        ["time", model, "--device", _profile(tmp_path)],
        ["fold", model, "-o", tmp_path / "f.onnx"],
    ):
        proc = _harness(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=120)
        if command[0] == "fold" and "cannot run" in message:
            continue  # fold folds what loads: nothing to run here
        assert proc.returncode == 2 and err.count("\n") == 1 and message in err, err
        assert "[E:onnxruntime" not in err and "[W:onnxruntime" not in err  # its own log


@pytest.mark.parametrize(
    "dtype,shape,message",
    [
        (TensorProto.STRING, [1, 4], "is tensor(string): harness times models with numeric inputs"),
        (TensorProto.FLOAT, [1, 3, 200000, 200000], "GiB of memory available"),
    ],
)
def test_inputs_harness_cannot_feed_are_refused_before_allocating(
    tmp_path, capsys, dtype, shape, message
):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", dtype, shape)],
        [helper.make_tensor_value_info("y", dtype, shape)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        str(path),
    )
    assert main(["time", str(path), "--device", str(_profile(tmp_path))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_random_calibration_batches_that_do_not_fit_memory_are_refused_before_drawing():
    from harness.backends.trt.prepare import calibration_batches

    with pytest.raises(HarnessError, match="tensorrt.int8_calibration_batches: 10000 random"):
        calibration_batches((64, 3, 512, 512), None, 10_000)  # 600 GiB
    assert len(calibration_batches((1, 3, 8, 8), None, 3)) == 3


def test_measurements_for_a_fifo_nobody_reads_are_kept_elsewhere(tmp_path):
    from harness.outputs import write_measured

    fifo = _special(tmp_path, "fifo")
    with pytest.raises(HarnessError, match="the measured data were saved to") as info:
        write_measured(fifo, '{"runs": 1}\n')
    kept = Path(str(info.value).rsplit(" ", 1)[-1])
    assert kept.read_text() == '{"runs": 1}\n'
    kept.unlink()
