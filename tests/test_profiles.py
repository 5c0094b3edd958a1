"""Device profiles: every shipped one loads and cites its peaks; broken ones fail naming the file
and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.profiles import PROFILE_DIR, available_profiles, load_profile

SHIPPED = (
    "xavier",
    "xavier-nx",
    "orin",
    "orin-nano",
    "rtx2080ti",
    "rtx3090",
    "rtx4090",
    "a100",
    "h100",
    "host",
)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_and_cites_its_peaks(name):
    assert name in available_profiles()
    profile = load_profile(name)
    assert profile.name == name and profile.description and profile.peaks.fp32_tflops > 0
    assert profile.peaks.dram_gbps > 0 and profile.precisions and profile.batch_sizes
    peaks_block = (PROFILE_DIR / f"{name}.yaml").read_text().split("\npeaks:", 1)[1]
    assert "#" in peaks_block, f"{name}.yaml: peak figures need a source comment"
    if profile.kind != "cpu":
        assert re.fullmatch(r"\d\.\d", profile.expect.compute_capability or "")


def test_xavier_is_jetpack_51_maxn_with_locked_clocks():
    xavier = load_profile("xavier")
    assert (xavier.kind, xavier.backend, xavier.expect.nvpmodel, xavier.expect.jetson_clocks) == (
        "jetson",
        "tensorrt",
        "MAXN",
        True,
    )
    expect = xavier.expect
    assert (expect.compute_capability, expect.l4t, expect.tensorrt) == ("7.2", "R35", "8.5")
    assert xavier.expect.gpu_clock_mhz == 1377 and xavier.peaks.dram_gbps == 136.5


def _broken(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((PROFILE_DIR / "xavier.yaml").read_text())
    edit(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["tensorrt"].update(workspace="1G"), "tensorrt: unknown key 'workspace'"),
        (
            lambda d: d["timing"].update(min_iterations="many"),
            "timing.min_iterations: expected an integer",
        ),
        (lambda d: d["peaks"].update(fp32_tflops="fast"), "peaks.fp32_tflops"),
        (
            lambda d: d["tensorrt"].update(gpu_fallback="yes"),
            "tensorrt.gpu_fallback: expected true or false",
        ),
        (
            lambda d: d["tensorrt"].update(trtexec_flags="--useSpinWait"),
            "tensorrt.trtexec_flags: expected a list",
        ),
        (lambda d: d.pop("peaks"), "missing required key 'peaks'"),
        (lambda d: d["peaks"].pop("dram_gbps"), "peaks: missing required key 'dram_gbps'"),
        (lambda d: d.update(backend="tflite"), "backend: 'tflite' is not one of"),
        (lambda d: d.update(precisions=["fp8"]), "precisions: 'fp8' is not one of"),
        (lambda d: d["tensorrt"].update(dla_core=-1), "tensorrt.dla_core"),
        (
            lambda d: d["tensorrt"].update(max_batch=1) or d.update(batch_sizes=[1, 8]),
            "tensorrt.max_batch",
        ),
        (
            lambda d: d["tensorrt"].update(builder_optimization_level=9),
            "builder_optimization_level",
        ),
        (
            lambda d: d.setdefault("onnxruntime", {}).update(graph_optimization_level="disabled"),
            "onnxruntime.graph_optimization_level: 'disabled' is not one of disable, basic, "
            "extended, all",
        ),
        (
            lambda d: d.setdefault("onnxruntime", {}).update(intra_op_threads=-2),
            "onnxruntime.intra_op_threads: -2 is out of range (expected >= 0 and <= 1024)",
        ),
        (
            lambda d: d["peaks"].update(fp32_tflops=0),
            "peaks.fp32_tflops: 0.0 is out of range (expected > 0 and <= 100000)",
        ),
        (
            lambda d: d["peaks"].update(dram_gbps=float("nan")),
            "peaks.dram_gbps: nan is out of range",
        ),
        (lambda d: d["peaks"].update(layer_overhead_us=-1), "peaks.layer_overhead_us"),
        (lambda d: d["timing"].update(block_iterations=0), "timing.block_iterations: 0 is out"),
        (lambda d: d["timing"].update(warmup_s=float("inf")), "timing.warmup_s: inf is out"),
        (
            lambda d: d["timing"].update(min_iterations=10**9),
            "timing.min_iterations: 1000000000 is out of range (expected >= 1 and <= 100000)",
        ),
        (lambda d: d["timing"].update(block_warmup=10**12), "timing.block_warmup"),
        (  # an int past float's range: refused, not an OverflowError
            lambda d: d["tensorrt"].update(builder_optimization_level=10**300),
            "tensorrt.builder_optimization_level: 1000000000000000000000000000000000000000",
        ),
        (lambda d: d["timing"].update(min_duration_s=10**400), "timing.min_duration_s: expected"),
        (
            lambda d: d.setdefault("onnxruntime", {}).update(inter_op_threads=10**6),
            "onnxruntime.inter_op_threads",
        ),
        (
            lambda d: d["tensorrt"].update(int8_calibration_batches=10**8),
            "int8_calibration_batches",
        ),
        (lambda d: d.update(batch_sizes=[1, 10**6]), "batch_sizes: 1000000 is out of range"),
        (lambda d: d.update(name="../../x"), "name: '../../x' is not allowed"),
        (lambda d: d.update(name=".hidden"), "name: '.hidden' is not allowed"),
        (
            lambda d: d.setdefault("remote", {}).update(host="-oProxyCommand=touch /tmp/pwned"),
            "remote.host: '-oProxyCommand=touch /tmp/pwned' is not allowed",
        ),
        (lambda d: d.setdefault("remote", {}).update(host="a b"), "remote.host"),
        (
            lambda d: d.setdefault("remote", {}).update(host="dev", user="-lroot"),
            "remote.user: '-lroot' is not allowed",
        ),
        (
            lambda d: d.setdefault("remote", {}).update(host="dev", profile="../x"),
            "remote.profile: '../x' is not allowed",
        ),
        (lambda d: d.update(description="x" * 10_000, kind=7), "kind: expected a string"),
        (lambda d: d.update({1: "x"}), "unknown key 1"),
        (
            lambda d: d["tensorrt"].update(trtexec_flags=["--fp16\x00"]),
            "tensorrt.trtexec_flags[0]: '--fp16\\x00' holds a NUL byte",
        ),
        (
            lambda d: d.setdefault("remote", {}).update(port=70000),
            "remote.port: 70000 is out of range (expected >= 1 and <= 65535)",
        ),
    ],
)
def test_profile_errors_name_the_file_and_the_key(tmp_path, edit, message):
    path = _broken(tmp_path, edit)
    with pytest.raises(HarnessError) as info:
        load_profile(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_dropped_in_profile_and_its_new_fields(tmp_path):
    data = yaml.safe_load((PROFILE_DIR / "xavier.yaml").read_text())
    data["tensorrt"].update(
        dla_core=0, int8_calibration_dir="calib", max_batch=8, trtexec_flags=["--useSpinWait"]
    )
    data["precisions"] = ["fp16", "int8"]
    (tmp_path / "xavier-dla.yaml").write_text(yaml.safe_dump(data))
    assert "xavier-dla" in available_profiles(tmp_path)
    profile = load_profile("xavier-dla", tmp_path)
    trt = profile.tensorrt
    assert (profile.name, trt.dla_core, trt.max_batch) == ("xavier-dla", 0, 8)
    assert trt.trtexec_flags == ["--useSpinWait"] and trt.timing_cache_file is None


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(HarnessError, match="known devices: .*xavier"):
        load_profile("tx2")
    with pytest.raises(HarnessError, match="does not exist"):
        load_profile("nowhere/profile.yaml")


def test_the_profile_levels_are_the_ones_the_onnxruntime_backend_maps():
    from harness.backends.onnxruntime import _OPT_LEVELS
    from harness.profiles import ORT_OPTIMIZATION_LEVELS

    assert tuple(_OPT_LEVELS) == ORT_OPTIMIZATION_LEVELS


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    text = (PROFILE_DIR / "host.yaml").read_text()
    path = tmp_path / "twice.yaml"
    path.write_text(text + "\ntiming:\n  warmup_s: 0.1\n")
    lines = text.splitlines()
    first = 1 + next(i for i, line in enumerate(lines) if line.startswith("timing:"))
    with pytest.raises(HarnessError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert str(path) in message and f"key 'timing' appears twice (lines {first} and " in message
    nested = tmp_path / "nested.yaml"
    twice = ["  warmup_s: 1.0", "  warmup_s: 2.0"]
    nested.write_text("\n".join(lines[:first] + twice + lines[first:]))
    with pytest.raises(HarnessError, match="key 'warmup_s' appears twice"):
        load_profile(str(nested))


def test_profiles_show_refuses_a_bad_level_naming_the_file_and_key(tmp_path, capsys):
    from harness.cli import main

    path = _broken(
        tmp_path,
        lambda d: d.setdefault("onnxruntime", {}).update(graph_optimization_level="disabled"),
    )
    assert main(["profiles", "show", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    key = f"error: {path}.onnxruntime.graph_optimization_level"
    assert len(err) == 1 and err[0].startswith(key)


ALIAS_BOMB = "\n".join(
    ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)


@pytest.mark.parametrize(
    "raw,message",
    [
        (ALIAS_BOMB.encode(), "alias *a is not allowed in a profile"),
        (
            "description: caf\u00e9\n".encode("latin-1"),
            "not UTF-8 text (byte b'\\xe9' at offset 16)",
        ),
        (b"name: x\x00y\n", "not valid YAML"),
        (b"kind: cpu\nbatch_sizes: [" + b"9" * 5000 + b"]\n", "a value yaml cannot read"),
        (b"kind: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply"),
        (
            (PROFILE_DIR / "xavier.yaml")
            .read_bytes()
            .replace(b"kind: jetson", b"kind: " + b"[" * 9 + b"'" + b"x" * 9000 + b"'" + b"]" * 9),
            "kind: expected a string, got [[[[[[[[['xxxx",
        ),
    ],
)
def test_hostile_profile_files_are_one_short_line(tmp_path, raw, message):
    """An alias bomb is refused before it expands, bytes that are not UTF-8 or YAML are named,
    and no message embeds a huge value."""
    path = tmp_path / "hostile.yaml"
    path.write_bytes(raw)
    with pytest.raises(HarnessError) as info:
        load_profile(str(path))
    text = str(info.value)
    assert str(path) in text and message in text, text
    assert "\n" not in text and len(text) < 400 + len(str(path))


def _numeric_settings(cls, prefix=""):
    """Dotted names of every int or float field of the profile's dataclasses."""
    import dataclasses
    import typing

    for field in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[field.name]
        args = [a for a in getattr(hint, "__args__", [hint]) if a is not type(None)]
        if dataclasses.is_dataclass(args[0]):
            yield from _numeric_settings(args[0], f"{prefix}{field.name}.")
        elif args[0] in (int, float) and field.name != "source":
            yield f"{prefix}{field.name}"


def test_every_numeric_setting_has_bounds_and_the_docs_list_them():
    from harness.profiles import BOUNDS, Profile

    numeric = set(_numeric_settings(Profile))
    assert numeric == set(BOUNDS)
    docs = (Path(__file__).resolve().parent.parent / "docs" / "profiles.md").read_text()
    for key, bound in BOUNDS.items():
        assert f"| `{key}` | {bound} |" in docs, key
