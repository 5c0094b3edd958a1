"""Energy sources on recorded layouts: Jetson INA3221 sysfs trees, RAPL powercap zones, NVML.

The sysfs trees are laid out as the public tables and drivers describe them:

- rail names and I2C addresses per Jetson family: energymon's ``jetson/JetsonPowerRails.md``
  (energymon/energymon, from NVIDIA's L4T developer guides 32.6.1 / 34.1 and device trees);
- JetPack 5/6, mainline ``ina3221`` hwmon driver: ``/sys/bus/i2c/drivers/ina3221/<bus>-<addr>/
  hwmon/hwmon<N>/in<k>_label``, ``in<k>_input`` (mV), ``curr<k>_input`` (mA), ``update_interval``
  (ms), channels 1-3, ``NC`` for no connection, in7 the "sum of shunt voltages"
  (energymon ``jetson/ina3221.c``; jetson-stats ``jtop/core/power.py``);
- JetPack 4, L4T ``ina3221x`` IIO driver: ``/sys/bus/i2c/drivers/ina3221x/<bus>-<addr>/
  iio:device<N>/rail_name_<k>``, ``in_power<k>_input`` (mW), ``polling_delay_<k>`` ("0 ms"),
  channels 0-2 (energymon ``jetson/ina3221x.c``);
- RAPL: ``/sys/class/powercap/intel-rapl:<N>[:<M>]/{name, energy_uj, max_energy_range_uj}``
  (Linux ``Documentation/power/powercap/powercap.rst``).

Values are written as the kernel writes them: integers in those units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from harness import energy, estimators, timing
from harness.backends.base import LATENCY
from harness.profiles import TimingSettings
from harness.results import RunEnergy

# (bus-address, channel position 0-2 as in the tables, label, volts) per family; the tree numbers
# channels as each driver does (ina3221x 0-2, ina3221 1-3)
XAVIER = [
    ("1-0040", 0, "GPU", 19.0),
    ("1-0040", 1, "CPU", 19.0),
    ("1-0040", 2, "SOC", 19.0),
    ("1-0041", 0, "CV", 19.0),
    ("1-0041", 1, "VDDRQ", 19.0),
    ("1-0041", 2, "SYS5V", 5.0),
]
XAVIER_NX = [("7-0040", 0, "VDD_IN", 5.0), ("7-0040", 1, "VDD_CPU_GPU_CV", 5.0),
             ("7-0040", 2, "VDD_SOC", 5.0)]  # fmt: skip
AGX_ORIN = [
    ("1-0040", 0, "VDD_GPU_SOC", 19.0),
    ("1-0040", 1, "VDD_CPU_CV", 19.0),
    ("1-0040", 2, "VIN_SYS_5V0", 5.0),
    ("1-0041", 0, "NC", 0.0),
    ("1-0041", 1, "VDDQ_VDD2_1V8AO", 5.0),
    ("1-0041", 2, "NC", 0.0),
]
NANO = [("6-0040", 0, "POM_5V_IN", 5.0), ("6-0040", 1, "POM_5V_GPU", 5.0),
            ("6-0040", 2, "POM_5V_CPU", 5.0)]  # fmt: skip


def trace(rail_index: int) -> Tuple[Callable[[float], float], Callable[[float], float]]:
    """A synthetic power trace in mW per rail (base + ramp + a 0.5 s oscillation) and its exact
    integral in mJ from 0 to t."""
    base, ramp, amp, period = 1500.0 + 700 * rail_index, 300.0, 400.0 + 50 * rail_index, 0.5

    def power(t: float) -> float:
        return base + ramp * t + amp * math.sin(2 * math.pi * t / period)

    def integral(t: float) -> float:
        wave = amp * period / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / period))
        return base * t + ramp * t * t / 2 + wave

    return power, integral


class SysfsTree:
    """A Jetson's INA3221 sysfs tree on disk, rewritten with each rail's power at time ``t``."""

    def __init__(self, root: Path, rails, jetpack: int) -> None:
        self.root, self.rails, self.jetpack = root, rails, jetpack
        drivers = root / "bus" / "i2c" / "drivers"
        self.dirs: Dict[str, Path] = {}
        for addr in dict.fromkeys(r[0] for r in rails):
            if jetpack >= 5:
                d = drivers / "ina3221" / addr / "hwmon" / f"hwmon{len(self.dirs) + 1}"
                d.mkdir(parents=True)
                (d / "name").write_text("ina3221\n")
                (d / "update_interval").write_text("1\n")
                (d / "in7_label").write_text("sum of shunt voltages\n")
                (d / "in7_input").write_text("0\n")
            else:
                d = drivers / "ina3221x" / addr / f"iio:device{len(self.dirs)}"
                d.mkdir(parents=True)
            self.dirs[addr] = d
        for addr, ch, label, _ in rails:
            d, ch = self.dirs[addr], ch + 1 if jetpack >= 5 else ch
            if jetpack >= 5:
                (d / f"in{ch}_label").write_text(label + "\n")
            else:
                (d / f"rail_name_{ch}").write_text(label + "\n")
                (d / f"polling_delay_{ch}").write_text("0 ms\n")
        self.set(0.0)

    def set(self, t: float) -> None:
        """Each rail's power at ``t``: JetPack 5/6 its current (the voltage stays), JetPack 4 its
        power."""
        for index, (addr, ch, label, volts) in enumerate(self.rails):
            d, ch = self.dirs[addr], ch + 1 if self.jetpack >= 5 else ch
            mw = 0.0 if label == "NC" else trace(index)[0](t)
            if self.jetpack >= 5:
                if not (d / f"in{ch}_input").exists():
                    (d / f"in{ch}_input").write_text(f"{round(volts * 1000)}\n")
                (d / f"curr{ch}_input").write_text(f"{round(mw / volts) if volts else 0}\n")
            else:
                (d / f"in_power{ch}_input").write_text(f"{round(mw)}\n")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _run_trace(tree: SysfsTree, seconds: float = 2.0, step: float = 0.04):
    """Sample the tree's rails through a meter for ``seconds`` of a fake clock: the block's
    energy, the meter, and the exact integrals per rail."""
    clock = FakeClock()
    meter, reason = energy.open_jetson_meter(tree.root, background=False, clock=clock)
    assert meter is not None, reason
    meter.start()
    for k in range(1, int(round(seconds / step)) + 1):
        clock.t = k * step
        tree.set(clock.t)
        if k < int(round(seconds / step)):
            meter.poll()
    block = meter.stop()
    exact = {}
    for index, (_, _, label, _) in enumerate(tree.rails):
        if label != "NC":
            exact[label] = trace(index)[1](seconds)
    return block, meter, exact


@pytest.mark.parametrize(
    "rails, jetpack, device, summed",
    [
        (XAVIER, 5, "AGX Xavier", ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]),
        (XAVIER, 4, "AGX Xavier", ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]),
        (XAVIER_NX, 5, "Xavier NX", ["VDD_IN"]),
        (AGX_ORIN, 6, "AGX Orin", ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]),
        (AGX_ORIN, 5, "AGX Orin", ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]),
        (NANO, 4, "Nano", ["POM_5V_IN"]),
    ],
)
def test_rails_and_total_match_the_trace_integral(tmp_path, rails, jetpack, device, summed):
    tree = SysfsTree(tmp_path, rails, jetpack)
    block, meter, exact = _run_trace(tree)
    assert device in meter.source
    assert list(meter.rails) == summed
    assert set(block.rails_mj) == set(exact)  # NC channels and the in7 sum are not rails
    for name, value in exact.items():
        assert block.rails_mj[name] == pytest.approx(value, rel=0.01), name
    # the total is the module's, each rail once: a total rail is never added to its parts
    assert block.total_mj == pytest.approx(sum(exact[n] for n in summed), rel=0.01)
    assert block.total_mj < sum(exact.values()) or len(summed) == len(exact)
    assert block.duration_s == pytest.approx(2.0)
    assert block.samples == 51


def test_a_failed_reading_is_skipped_not_fatal(tmp_path):
    tree = SysfsTree(tmp_path, XAVIER_NX, 5)
    clock = FakeClock()
    meter, _ = energy.open_jetson_meter(tree.root, background=False, clock=clock)
    meter.start()
    for k in range(1, 51):
        clock.t = k * 0.04
        tree.set(clock.t)
        if k == 25:  # a read that races the driver: an empty file
            (tree.dirs["7-0040"] / "curr1_input").write_text("")
        meter._poll_or_skip()
    block = meter.stop()
    assert meter.missed == 1  # the poll at k = 25; the trace is interpolated over it
    assert block.total_mj == pytest.approx(trace(0)[1](2.0), rel=0.01)


def test_update_interval_and_units_are_read_as_the_drivers_write_them(tmp_path):
    SysfsTree(tmp_path, XAVIER_NX, 5)
    rails = {r.name: r for r in energy.find_ina3221_rails(tmp_path)}
    assert rails["VDD_IN"].interval_ms == 1.0
    # 5000 mV x round(1500 mW / 5 V) mA / 1000 = 1500 mW
    assert rails["VDD_IN"].read_mw() == pytest.approx(trace(0)[0](0.0), rel=1e-3)
    SysfsTree(tmp_path / "jp4", NANO, 4)
    rails = {r.name: r for r in energy.find_ina3221_rails(tmp_path / "jp4")}
    assert rails["POM_5V_IN"].read_mw() == round(trace(0)[0](0.0))
    assert rails["POM_5V_IN"].interval_ms is None  # "0 ms": the driver's own default


def test_unknown_or_missing_rails_give_no_meter_and_say_why(tmp_path):
    meter, reason = energy.open_jetson_meter(tmp_path)
    assert meter is None and "no INA3221" in reason
    SysfsTree(tmp_path, [("1-0040", 0, "VDD_MYSTERY", 5.0)], 5)
    meter, reason = energy.open_jetson_meter(tmp_path)
    assert meter is None and "VDD_MYSTERY" in reason and "no documented" in reason


def test_integration_against_a_known_trace_and_its_ends():
    times = [0.0, 0.1, 0.2, 0.3]
    power = [1000.0, 2000.0, 2000.0, 0.0]
    # trapezoids: 150 + 200 + 100 mJ
    assert energy.integrate_mj(times, power, 0.0, 0.3) == pytest.approx(450.0)
    # ends interpolated inside: from 0.05 (1500 mW) to 0.25 (1000 mW)
    expected = 0.05 * (1500 + 2000) / 2 + 0.1 * 2000 + 0.05 * (2000 + 1000) / 2
    assert energy.integrate_mj(times, power, 0.05, 0.25) == pytest.approx(expected)
    assert energy.integrate_mj(times, power, 0.3, 0.3) == 0.0


def test_background_sampler_runs_and_stops(tmp_path):
    tree = SysfsTree(tmp_path, XAVIER_NX, 5)
    meter, _ = energy.open_jetson_meter(tree.root, interval_s=0.001)
    with meter:
        meter.start()
        for _ in range(30):
            tree.set(0.0)  # constant power: work the thread can sample under
        block = meter.stop()
    assert block.samples >= 2
    assert block.total_mj == pytest.approx(trace(0)[0](0.0) * block.duration_s, rel=0.01)
    assert meter._thread is None


# ---- RAPL ---------------------------------------------------------------------------------------


def _rapl_tree(root: Path, zones: Dict[str, Tuple[str, int, int]]) -> Path:
    """``/sys/class/powercap`` as the kernel lists it: every zone a flat entry."""
    base = root / "class" / "powercap"
    for zone, (name, energy_uj, max_uj) in zones.items():
        d = base / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text(f"{energy_uj}\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (base / "intel-rapl").mkdir(exist_ok=True)  # the control type itself: no zone
    return base


def test_rapl_sums_packages_and_dram_and_unwraps(tmp_path):
    max_uj = 262143328850  # a real package's max_energy_range_uj
    base = _rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", max_uj - 1_000_000, max_uj),
            "intel-rapl:0:0": ("core", 5_000_000, max_uj),
            "intel-rapl:0:1": ("dram", 7_000_000, 65712999613),
        },
    )
    zones, summed = energy.find_rapl_zones(tmp_path)
    assert summed == ["package-0", "package-0/dram"]  # core lies inside the package
    clock = FakeClock()
    meter, reason = energy.open_rapl_meter(tmp_path)
    assert meter is not None, reason
    meter.clock = clock
    meter.start()
    clock.t = 0.5
    (base / "intel-rapl:0" / "energy_uj").write_text("2000000\n")  # wrapped: +3 J
    (base / "intel-rapl:0:1" / "energy_uj").write_text("7500000\n")  # +0.5 J
    block = meter.stop()
    assert block.rails_mj["package-0"] == pytest.approx(3000.0)
    assert block.total_mj == pytest.approx(3500.0)
    assert block.duration_s == 0.5


def test_rapl_unreadable_or_absent_is_a_reason_not_a_zero(tmp_path, monkeypatch):
    meter, reason = energy.open_meter("cpu", tmp_path)
    assert meter is None and reason.startswith("no readable power counter: energy not measured")
    _rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 1, 10**9)})
    real = energy._read_number

    def root_only(path: Path) -> float:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(energy, "_read_number", root_only)
    meter, reason = energy.open_meter("cpu", tmp_path)
    assert meter is None and "root only" in reason


def test_rapl_on_this_machine_if_readable():
    meter, reason = energy.open_rapl_meter()
    if meter is None:
        pytest.skip(f"this machine: {reason}")
    import time

    meter.start()
    sum(i * i for i in range(200000))
    time.sleep(0.05)
    block = meter.stop()
    assert block.total_mj > 0


# ---- NVML ---------------------------------------------------------------------------------------


class StandInNvml:
    """pynvml's energy and power surface (names and constants checked against the real
    nvidia-ml-py below); the GPU draws ``watts`` on a fake clock."""

    NVML_DEVICE_ARCH_AMPERE = 7
    NVML_DEVICE_ARCH_VOLTA = 5

    class NVMLError(Exception):
        """pynvml.NVMLError"""

    def __init__(self, clock, watts=250.0, counter=True, arch=7, name="NVIDIA GeForce RTX 3090"):
        self.clock, self.watts, self.counter, self.arch, self.name = (
            clock, watts, counter, arch, name
        )  # fmt: skip
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise self.NVMLError("Not Supported")
        return int(1_000_000 + self.watts * self.clock() * 1000)  # mJ since the driver loaded

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.watts * 1000)  # mW

    def nvmlDeviceGetArchitecture(self, handle):
        return self.arch

    def nvmlDeviceGetName(self, handle):
        return self.name


def test_stand_in_matches_the_real_pynvml():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
    for name in dir(StandInNvml):
        if name.startswith(("nvml", "NVML_")):
            assert hasattr(pynvml, name), name
            if name.startswith("NVML_"):
                assert getattr(pynvml, name) == getattr(StandInNvml, name)
    assert issubclass(pynvml.NVMLError_NotSupported, pynvml.NVMLError)


def test_nvml_counter_read_at_block_boundaries():
    clock = FakeClock()
    nvml = StandInNvml(clock, watts=200.0)
    meter, _ = energy.open_nvml_meter(nvml=nvml)
    assert meter.source == "nvml-energy-counter" and meter.interval_ms is None
    meter.clock = clock
    clock.t = 3.0
    meter.start()
    clock.t = 3.25
    block = meter.stop()
    assert block.total_mj == pytest.approx(200.0 * 0.25 * 1000)
    assert not block.short_window
    meter.close()
    assert nvml.shutdowns == 1


@pytest.mark.parametrize(
    "arch, name, window",
    [
        (7, "NVIDIA GeForce RTX 3090", 1.0),
        (7, "NVIDIA A100-SXM4-80GB", 0.0),  # GA100: power is not averaged
        (7, "NVIDIA A30", 0.0),
        (7, "NVIDIA RTX A3000 Laptop GPU", 1.0),  # GA104, not an A30
        (9, "NVIDIA H100 80GB HBM3", 1.0),
        (6, "NVIDIA GeForce RTX 2080 Ti", 0.0),  # Turing
    ],
)
def test_nvml_power_fallback_flags_windows_under_the_average(arch, name, window):
    clock = FakeClock()
    nvml = StandInNvml(clock, watts=100.0, counter=False, arch=arch, name=name)
    meter, _ = energy.open_nvml_meter(nvml=nvml)
    assert meter.source == "nvml-power-integrated"
    assert meter.min_window_s == window
    meter.background, meter.clock = False, clock
    meter.start()
    clock.t = 0.2
    block = meter.stop()
    assert block.total_mj == pytest.approx(100.0 * 0.2 * 1000)
    assert block.short_window is (window > 0.2)
    summary = energy.run_energy(meter, [block], [10])
    assert bool(summary.warnings) is (window > 0.2)
    meter.close()


def test_nvml_absent_says_so():
    class Broken(StandInNvml):
        def nvmlInit(self):
            raise self.NVMLError("NVML Shared Library Not Found")

    meter, reason = energy.open_nvml_meter(nvml=Broken(FakeClock()))
    assert meter is None and "NVML is not available" in reason


# ---- per block in the protocol, results, ratios --------------------------------------------------


class CountingRunner:
    """A runner whose every inference costs ``mj`` on a shared energy counter."""

    def __init__(self, counter: Dict[str, float], mj: float) -> None:
        self.counter, self.mj, self.batch = counter, mj, 1

    def measure_once(self) -> Dict[str, float]:
        self.counter["board"] += self.mj
        return {LATENCY: 1.0}

    def start_block(self) -> None:  # the Runner's block hooks: no profiler here
        pass

    def end_block(self) -> None:
        pass


def test_interleaved_blocks_record_energy_per_inference_and_a_paired_ratio():
    counter = {"board": 0.0}
    runners = {"base": CountingRunner(counter, 4.0), "lean": CountingRunner(counter, 2.0)}
    meter = energy.CounterMeter("test-counter", lambda: dict(counter), ["board"])
    settings = TimingSettings(
        warmup_s=0.0, min_iterations=10, min_duration_s=0.0, max_duration_s=0.05,
        target_ci=0.5, block_iterations=10, block_s=0.001, block_warmup=2,
    )  # fmt: skip
    measured = timing.measure_interleaved(runners, settings, energy=meter)
    summaries = {}
    for name, m in measured.items():
        assert len(m.block_energy) == len(m.block_ends) >= estimators.MIN_ROUNDS
        summaries[name] = energy.run_energy(meter, m.block_energy, m.block_inferences, idle_w=0.0)
    # block warm-ups run outside the bracket: exactly the recorded inferences' energy
    assert summaries["base"].per_block_mj == pytest.approx([4.0] * len(measured["base"].block_ends))
    assert summaries["lean"].median_mj == pytest.approx(2.0)
    ratio = energy.energy_ratio(summaries["lean"], summaries["base"])
    assert (ratio.ratio, ratio.low, ratio.high) == pytest.approx((0.5, 0.5, 0.5))
    assert ratio.format() == "0.50x [0.50, 0.50]"


def test_idle_power_gives_above_idle_energy():
    clock = FakeClock()
    nvml = StandInNvml(clock, watts=50.0)
    meter, _ = energy.open_nvml_meter(nvml=nvml)
    meter.clock = clock

    def sleep(seconds: float) -> None:
        clock.t += seconds

    idle = energy.measure_idle_w(meter, 2.0, sleep)
    assert idle == pytest.approx(50.0)
    nvml.watts = 150.0
    meter.start()
    clock.t += 0.5
    block = meter.stop()
    summary = energy.run_energy(meter, [block], [100], idle_w=idle)
    assert summary.per_block_mj == pytest.approx([150.0 * 0.5 * 1000 / 100])
    assert summary.above_idle_per_block_mj == pytest.approx([100.0 * 0.5 * 1000 / 100])
    assert summary.idle_w == idle


def test_energy_round_trips_through_the_results_reader():
    from harness.results import _Reader

    entry = RunEnergy(
        "rapl", ["package-0"], None, [1.0, 1.2, 1.1], 1.1, 1.0, 1.2, {"package-0": [1.0]}, 12.5
    )
    again = RunEnergy.parse(entry.to_dict(), "runs[0].energy", _Reader("r.json"))
    assert again == entry
    assert again.format() == "1.100 [1.000, 1.200]"
