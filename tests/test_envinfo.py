"""Device-state parsers on sample outputs (JetPack 5.1 / L4T R35).

Also expectations, strict mode and NVML decoding.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from harness import envinfo
from harness.envinfo import (
    capture_environment,
    check_expectations,
    enforce_expectations,
    parse_devfreq,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_tegra_release,
    read_gpu_devfreq,
    read_thermal,
)
from harness.errors import HarnessError
from harness.profiles import load_profile

DATA = Path(__file__).parent / "data"


def _sample(name: str) -> str:
    return (DATA / name).read_text()


def test_nvpmodel_and_release():
    assert parse_nvpmodel(_sample("nvpmodel_q_xavier.txt")) == {"mode": "MAXN", "id": 0}
    assert parse_nvpmodel("NV Power Mode: MODE_30W_ALL\n3\n") == {"mode": "MODE_30W_ALL", "id": 3}
    assert parse_nvpmodel("") == {"mode": None, "id": None}
    assert parse_tegra_release(_sample("nv_tegra_release_r35.txt")) == "R35.2.1"
    assert parse_tegra_release("garbage") is None


def test_jetson_clocks_locked_default_and_r35_dla_lines():
    locked = parse_jetson_clocks(_sample("jetson_clocks_show_xavier_locked.txt"))
    assert (
        locked["locked"]
        and locked["clocks"]["gpu"]["current_hz"] == 1377000000
        and locked["power_mode"] == "MAXN"
    )
    default = parse_jetson_clocks(_sample("jetson_clocks_show_xavier_default.txt"))
    assert not default["locked"] and default["clocks"]["emc"]["current_hz"] == 1600000000
    assert default["power_mode"] == "MODE_30W_ALL" and default["cpu_governors"] == ["schedutil"]
    r35 = parse_jetson_clocks(_sample("jetson_clocks_show_xavier_r35.txt"))
    assert (
        r35["locked"]
        and r35["clocks"]["dla0_core"]["max_hz"] == 1395200000
        and "dla1_core" in r35["clocks"]
    )
    assert "dla0_falcon" not in r35["clocks"]


def _devfreq(root: Path, name: str, cur: int, low: int, high: int) -> None:
    node = root / name
    node.mkdir(parents=True)
    for key, value in (("cur_freq", cur), ("min_freq", low), ("max_freq", high)):
        (node / key).write_text(f"{value}\n")
    (node / "governor").write_text("nvhost_podgov\n")


def test_devfreq_and_thermal_trees(tmp_path):
    _devfreq(tmp_path / "devfreq", "15340000.vic", 1, 1, 1)
    _devfreq(tmp_path / "devfreq", "17000000.gv11b", 1377000000, 1377000000, 1377000000)
    state = read_gpu_devfreq(tmp_path / "devfreq")
    assert state == {
        "cur_mhz": 1377.0,
        "min_mhz": 1377.0,
        "max_mhz": 1377.0,
        "governor": "nvhost_podgov",
        "locked": True,
        "node": "17000000.gv11b",
    }
    assert not parse_devfreq(
        {"cur_freq": "318750000", "min_freq": "114750000", "max_freq": "1377000000"}
    )["locked"]
    assert read_gpu_devfreq(tmp_path / "nothing") is None
    for i, (kind, temp) in enumerate(
        [("CPU-therm", "38500"), ("GPU-therm", "41000"), ("PMIC-Die", "100000")]
    ):
        zone = tmp_path / "thermal" / f"thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(temp + "\n")
    assert read_thermal(tmp_path / "thermal") == {
        "CPU-therm": 38.5,
        "GPU-therm": 41.0,
        "PMIC-Die": 100.0,
    }


def _jetson_env(clocks_sample=None, devfreq=None, mode="MAXN", l4t="R35.2.1", tensorrt="8.5.2.2"):
    return {
        "cpu": {},
        "gpu": None,
        "libraries": {"tensorrt": tensorrt},
        "jetson": {
            "l4t": l4t,
            "nvpmodel": {"mode": mode, "id": 0},
            "jetson_clocks": parse_jetson_clocks(_sample(clocks_sample)) if clocks_sample else None,
            "gpu_devfreq": devfreq,
        },
    }


def test_expectations_on_a_jetson():
    xavier = load_profile("xavier")
    assert check_expectations(_jetson_env("jetson_clocks_show_xavier_locked.txt"), xavier) == []
    problems = check_expectations(
        _jetson_env(
            "jetson_clocks_show_xavier_default.txt",
            mode="MODE_30W_ALL",
            l4t="R32.7.1",
            tensorrt="8.2.1",
        ),
        xavier,
    )
    text = " | ".join(problems)
    for expected in (
        "MODE_30W_ALL",
        "not locked",
        "GPU clock is 319 MHz",
        "R32.7.1",
        "TensorRT is 8.2.1",
    ):
        assert expected in text
    as_user = _jetson_env(
        devfreq=parse_devfreq(
            {"cur_freq": "1377000000", "min_freq": "1377000000", "max_freq": "1377000000"}
        )
    )
    # without root: devfreq says the clocks are pinned
    assert check_expectations(as_user, xavier) == []
    unknown = check_expectations(_jetson_env(), xavier)
    assert any("cannot tell whether clocks are locked" in p for p in unknown)
    assert any(
        "not one" in p for p in check_expectations({"cpu": {}, "jetson": None, "gpu": None}, xavier)
    )


def test_expectations_on_a_desktop_gpu_and_strict_mode():
    rtx = load_profile("rtx3090")
    good = {
        "cpu": {},
        "jetson": None,
        "gpu": {
            "name": "NVIDIA GeForce RTX 3090",
            "compute_capability": "8.6",
            "throttle_reasons": ["gpu_idle"],
        },
    }
    assert (
        check_expectations(good, rtx) == [] and enforce_expectations(good, rtx, strict=True) == []
    )
    bad = {
        "cpu": {},
        "jetson": None,
        "gpu": {
            "name": "NVIDIA A100-SXM4-40GB",
            "compute_capability": "8.0",
            "throttle_reasons": ["sw_thermal_slowdown"],
        },
    }
    problems = enforce_expectations(bad, rtx, strict=False)
    assert len(problems) == 3 and any("throttling: sw_thermal_slowdown" in p for p in problems)
    with pytest.raises(HarnessError, match="differs from profile 'rtx3090'"):
        enforce_expectations(bad, rtx, strict=True)
    assert any(
        "NVML sees none" in p
        for p in check_expectations({"cpu": {}, "jetson": None, "gpu": None}, rtx)
    )
    assert any(
        "NVML: no driver" in p
        for p in check_expectations({"cpu": {}, "gpu": {"error": "NVML: no driver"}}, rtx)
    )


def test_nvml_fields_are_decoded(monkeypatch):
    fake = types.ModuleType("pynvml")
    fake.NVML_CLOCK_SM, fake.NVML_CLOCK_MEM, fake.NVML_TEMPERATURE_GPU = 1, 2, 0
    fake.NVMLError = RuntimeError
    calls = {
        "nvmlInit": None,
        "nvmlShutdown": None,
        "nvmlDeviceGetHandleByIndex": "h",
        "nvmlDeviceGetName": b"NVIDIA GeForce RTX 3090",
        "nvmlSystemGetDriverVersion": "550.54.14",
        "nvmlDeviceGetCudaComputeCapability": (8, 6),
        "nvmlDeviceGetTemperature": 61,
        "nvmlDeviceGetPerformanceState": 2,
        "nvmlDeviceGetCurrentClocksEventReasons": 0x20 | 0x4,
    }
    for name, value in calls.items():
        setattr(fake, name, lambda *args, _value=value: _value)
    fake.nvmlDeviceGetClockInfo = lambda handle, kind: {1: 1695, 2: 9751}[kind]
    fake.nvmlDeviceGetMaxClockInfo = lambda handle, kind: 2100
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    state = envinfo.gpu_state()
    assert state == {
        "name": "NVIDIA GeForce RTX 3090",
        "driver": "550.54.14",
        "compute_capability": "8.6",
        "sm_clock_mhz": 1695,
        "max_sm_clock_mhz": 2100,
        "mem_clock_mhz": 9751,
        "temperature_c": 61,
        "pstate": 2,
        "throttle_reasons": ["sw_power_cap", "sw_thermal_slowdown"],
    }


def test_capture_on_this_machine_is_json():
    env = capture_environment(load_profile("host"))
    assert json.loads(json.dumps(env)) == env
    assert (
        env["cpu"]["available_cores"] >= 1
        and env["profile"] == "host"
        and "tensorrt" in env["libraries"]
    )


class StandInNvml:
    """A stand-in for pynvml with its real function names and constant values (checked against
    nvidia-ml-py below when it is installed): a GPU whose SM clock ramps up from idle and which
    reports a power cap once."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class NVMLError(Exception):
        """pynvml.NVMLError"""

    def __init__(self, sm_clocks, reasons, power_supported: bool = True) -> None:
        self.sm_clocks, self.reasons, self.power_supported = (
            list(sm_clocks),
            list(reasons),
            power_supported,
        )
        self.open = 0

    def nvmlInit(self):
        self.open += 1

    def nvmlShutdown(self):
        self.open -= 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return self.sm_clocks.pop(0) if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, handle):
        if not self.power_supported:
            raise self.NVMLError("Not Supported")
        return 312_500  # milliwatts

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 48

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons.pop(0)


def test_stand_in_matches_the_real_pynvml():
    pynvml = pytest.importorskip(
        "pynvml", reason="nvidia-ml-py not installed: names checked where it is"
    )
    for name in dir(StandInNvml):
        if name.startswith(("nvml", "NVML_")):
            assert hasattr(pynvml, name), name
            if name.startswith("NVML_"):
                assert getattr(pynvml, name) == getattr(StandInNvml, name)
    assert (
        pynvml.nvmlClocksEventReasonSwPowerCap == 0x4 and pynvml.nvmlClocksEventReasonGpuIdle == 0x1
    )


def test_gpu_monitor_samples_and_the_protocol_flags_what_moved():
    from harness import timing

    nvml = StandInNvml([345, 1980, 1980], [0x1, 0x0, 0x4])
    with envinfo.GpuMonitor.open(nvml=nvml) as monitor:
        states = [monitor.sample() for _ in range(3)]
    assert nvml.open == 0  # released
    assert states[0] == {
        "sm_clock_mhz": 345,
        "mem_clock_mhz": 2619,
        "power_w": 312.5,
        "temperature_c": 48,
        "throttle_reasons": ["gpu_idle"],
    }
    warnings = timing.state_warnings(states)
    assert any("345-1980 MHz" in w for w in warnings) and any("sw_power_cap" in w for w in warnings)
    assert timing.state_warnings(states[1:2]) == []
    quiet = envinfo.GpuMonitor.open(nvml=StandInNvml([1980], [0], power_supported=False))
    # a field this GPU cannot report is left out, not invented
    assert "power_w" not in quiet.sample()
    quiet.close()


def test_gpu_monitor_is_none_without_nvml():
    class NoDriver(StandInNvml):
        def nvmlInit(self):
            raise self.NVMLError("Driver Not Loaded")

    assert envinfo.GpuMonitor.open(nvml=NoDriver([], [])) is None
