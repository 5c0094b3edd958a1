"""Energy per timing block, from the best counter a device has, with the source recorded.

One interface for every source (``EnergyMeter``: ``start`` before a block, ``stop`` after it ->
``BlockEnergy`` in mJ, per rail and summed): cumulative counters read at block boundaries (NVML's
``nvmlDeviceGetTotalEnergyConsumption``, Intel RAPL's ``energy_uj`` with its wrap-around) and power
sampled in a background thread and integrated (NVML power where the counter is missing, the
Jetson INA3221 rails). ``open_meter`` picks one for the device kind, or says why there is none
("no readable power counter": energy not measured, never a zero). Rail tables and file formats are
in docs/energy.md with their sources.

Runs on the device: Python 3.8 compatible, no torch.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harness.estimators import MIN_ROUNDS, median_ci, rounds_ratio_ci
from harness.results import RatioCI, RunEnergy

Clock = Callable[[], float]
Reading = Callable[[], Dict[str, float]]
SAMPLE_INTERVAL_S = 0.01  # power sampling period of the background thread
NVML_POWER_WINDOW_S = 1.0  # NVML power on Ampere and later (not GA100) is a 1 s average


@dataclasses.dataclass
class BlockEnergy:
    """Energy of one timing block: the total (the meter's summed rails) and every rail read."""

    total_mj: float
    rails_mj: Dict[str, float]
    duration_s: float
    samples: int = 0  # power samples integrated (0: a counter read at both ends)
    short_window: bool = False  # shorter than the source resolves (NVML's 1 s power average)


def integrate_mj(
    times_s: Sequence[float], power_mw: Sequence[float], start: float, end: float
) -> float:
    """Energy in mJ of a power trace (samples in time order) over ``[start, end]``: trapezoids
    between samples, the trace interpolated linearly at both ends (held constant beyond its first
    and last sample)."""
    if end <= start or not len(times_s):
        return 0.0
    t, p = np.asarray(times_s, dtype=float), np.asarray(power_mw, dtype=float)
    xs = np.concatenate([[start], t[(t > start) & (t < end)], [end]])
    ys = np.interp(xs, t, p)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


class EnergyMeter:
    """Brackets timing blocks: ``start()`` before one, ``stop()`` after it gives its energy.

    ``source`` names the counter, ``rails`` those summed into ``BlockEnergy.total_mj``,
    ``interval_ms`` the sampling period (None for a counter read at block boundaries),
    ``min_window_s`` the shortest block the source resolves.
    """

    source = ""
    rails: Tuple[str, ...] = ()
    interval_ms: Optional[float] = None
    min_window_s = 0.0

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> BlockEnergy:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (a sampling thread, NVML)."""

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CounterMeter(EnergyMeter):
    """Cumulative energy counters (mJ per rail) read at both ends of a block.

    ``ranges``: a counter's wrap-around value in mJ (RAPL's ``max_energy_range_uj``); a reading
    below the previous one has wrapped once.
    """

    def __init__(
        self,
        source: str,
        read_mj: Reading,
        rails: Sequence[str],
        ranges: Optional[Dict[str, float]] = None,
        clock: Clock = time.perf_counter,
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        self.source, self.rails = source, tuple(rails)
        self.read_mj, self.ranges, self.clock = read_mj, dict(ranges or {}), clock
        self.on_close = on_close
        self._started: Optional[Tuple[float, Dict[str, float]]] = None

    def start(self) -> None:
        self._started = (self.clock(), self.read_mj())

    def stop(self) -> BlockEnergy:
        if self._started is None:
            raise RuntimeError("stop() without start()")
        (began, first), now, last = self._started, self.clock(), self.read_mj()
        rails = {}
        for name, value in last.items():
            delta = value - first.get(name, value)
            if delta < 0 and name in self.ranges:
                delta += self.ranges[name]
            rails[name] = delta
        self._started = None
        total = sum(rails.get(name, 0.0) for name in self.rails)
        return BlockEnergy(total, rails, now - began)

    def close(self) -> None:
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


class SampledMeter(EnergyMeter):
    """Power (mW per rail) sampled every ``interval_s`` and integrated over each block.

    With ``background`` a daemon thread calls ``poll`` from the first ``start`` to ``close``;
    ``start`` and ``stop`` poll too, so a block's ends are sampled wherever the thread is.
    """

    def __init__(
        self,
        source: str,
        read_mw: Reading,
        rails: Sequence[str],
        interval_s: float = SAMPLE_INTERVAL_S,
        min_window_s: float = 0.0,
        clock: Clock = time.perf_counter,
        background: bool = True,
        on_close: Optional[Callable[[], None]] = None,
    ) -> None:
        self.source, self.rails, self.read_mw, self.clock = source, tuple(rails), read_mw, clock
        self.interval_s, self.interval_ms = interval_s, interval_s * 1000.0
        self.min_window_s, self.background, self.on_close = min_window_s, background, on_close
        self._samples: List[Tuple[float, Dict[str, float]]] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._began: Optional[float] = None
        self.missed = 0

    def poll(self) -> float:
        """Take one power sample now; its time."""
        now, power = self.clock(), self.read_mw()
        with self._lock:
            self._samples.append((now, power))
        return now

    def _poll_or_skip(self) -> float:
        """``poll``; a reading that fails is skipped (the trace is interpolated over it): now."""
        try:
            return self.poll()
        except (OSError, ValueError):
            self.missed += 1
            return self.clock()

    def _loop(self) -> None:
        while not self._halt.wait(self.interval_s):
            self._poll_or_skip()

    def start(self) -> None:
        if self.background and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="energy-sampler", daemon=True)
            self._thread.start()
        with self._lock:  # keep the last sample before this block, for interpolation
            self._samples = self._samples[-1:]
        self._began = self._poll_or_skip()

    def stop(self) -> BlockEnergy:
        if self._began is None:
            raise RuntimeError("stop() without start()")
        began, ended = self._began, self._poll_or_skip()
        with self._lock:
            samples = [(t, p) for t, p in self._samples if t <= ended]
        self._began = None
        times = [t for t, _ in samples]
        names = sorted({name for _, power in samples for name in power})
        rails = {
            name: integrate_mj(times, [p.get(name, 0.0) for _, p in samples], began, ended)
            for name in names
        }
        inside = sum(1 for t in times if began <= t <= ended)
        total = sum(rails.get(name, 0.0) for name in self.rails)
        duration = ended - began
        return BlockEnergy(total, rails, duration, inside, duration < self.min_window_s)

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


def _read_number(path: Path) -> float:
    """The leading number of a sysfs file (``"0 ms"`` -> 0); ValueError when there is none."""
    words = path.read_text().split()
    if not words:
        raise ValueError(f"{path} is empty")
    return float(words[0])


# ---- NVML -------------------------------------------------------------------------------------


def nvml_power_is_averaged(nvml: Any, handle: Any) -> bool:
    """Whether NVML's power reading on this GPU is a 1 s average: Ampere and later except GA100
    (A100, A800, A30), per NVML's ``nvmlDeviceGetPowerUsage`` documentation."""
    try:
        arch = nvml.nvmlDeviceGetArchitecture(handle)
        name = nvml.nvmlDeviceGetName(handle)
    except nvml.NVMLError:
        return True  # unknown: assume the coarser reading
    name = name.decode() if isinstance(name, bytes) else str(name)
    ga100 = re.search(r"\bA(100|800|30)\b", name) is not None  # not "RTX A3000" (GA104)
    return arch >= nvml.NVML_DEVICE_ARCH_AMPERE and not ga100


def open_nvml_meter(index: int = 0, nvml: Any = None) -> Tuple[Optional[EnergyMeter], str]:
    """NVML's energy counter of GPU ``index`` (Volta and later), else its power integrated; the
    meter, or None and why not."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML is not available ({exc})"
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        nvml.nvmlShutdown()
        return None, f"no GPU {index} in NVML ({exc})"
    rail = f"gpu{index}"
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)

        def energy() -> Dict[str, float]:
            return {rail: float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))}

        return CounterMeter("nvml-energy-counter", energy, [rail], on_close=nvml.nvmlShutdown), ""
    except nvml.NVMLError:
        pass
    try:
        nvml.nvmlDeviceGetPowerUsage(handle)
    except nvml.NVMLError as exc:
        nvml.nvmlShutdown()
        return None, f"NVML reads neither energy nor power on GPU {index} ({exc})"

    def power() -> Dict[str, float]:
        return {rail: float(nvml.nvmlDeviceGetPowerUsage(handle))}

    window = NVML_POWER_WINDOW_S if nvml_power_is_averaged(nvml, handle) else 0.0
    meter = SampledMeter(
        "nvml-power-integrated", power, [rail], min_window_s=window, on_close=nvml.nvmlShutdown
    )
    return meter, ""


# ---- Jetson INA3221 -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its label and the files that give its power in mW."""

    name: str
    files: Tuple[Path, ...]  # (mW) or (mV, mA)
    interval_ms: Optional[float] = None  # the monitor's own update interval

    def read_mw(self) -> float:
        """Power now in mW: ``in_power`` (JetPack 4) or mV x mA / 1000 (JetPack 5/6)."""
        if len(self.files) == 1:
            return _read_number(self.files[0])
        return _read_number(self.files[0]) * _read_number(self.files[1]) / 1000.0


@dataclasses.dataclass(frozen=True)
class RailLayout:
    """A Jetson family's rails: those whose sum is the module's power, and those inside them."""

    device: str
    summed: Tuple[str, ...]
    parts: Tuple[str, ...] = ()  # already inside a summed rail: reported, never added


# From energymon's jetson/JetsonPowerRails.md (NVIDIA's L4T developer guides and device trees)
# and jetson-stats' jtop/core/power.py (VDD_IN / POM_5V_IN is the module total,
# rbonghi/jetson_stats#51).
LAYOUTS = (
    RailLayout("Jetson AGX Xavier", ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")),
    RailLayout(
        "Jetson AGX Orin", ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), ("VDDQ_VDD2_1V8AO",)
    ),
    RailLayout("Jetson Nano", ("POM_5V_IN",), ("POM_5V_GPU", "POM_5V_CPU")),
    RailLayout(
        "Jetson Xavier NX / Orin NX / Orin Nano", ("VDD_IN",), ("VDD_CPU_GPU_CV", "VDD_SOC")
    ),
    RailLayout("Jetson TX2 NX", ("VDD_IN",), ("VDD_CPU_GPU", "VDD_SOC")),
    RailLayout(
        "Jetson TX2",
        ("VDD_IN",),
        ("VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_SYS_CPU", "VDD_SYS_DDR"),
    ),
    RailLayout("Jetson TX1", ("VDD_IN",), ("VDD_GPU", "VDD_CPU")),
)


def find_ina3221_rails(sys_root: Path = Path("/sys")) -> List[Rail]:
    """Every connected INA3221 channel: the mainline ``ina3221`` hwmon driver (JetPack 5/6,
    channels 1-3: ``in<N>_label``, ``in<N>_input`` mV, ``curr<N>_input`` mA) and L4T's
    ``ina3221x`` IIO driver (JetPack 4, channels 0-2: ``rail_name_<N>``, ``in_power<N>_input``
    mW). ``NC`` (no connection) channels are skipped."""
    drivers = sys_root / "bus" / "i2c" / "drivers"
    rails = []
    for hwmon in sorted(drivers.glob("ina3221/*-*/hwmon/hwmon*")):
        interval = hwmon / "update_interval"
        interval_ms = _read_number(interval) if interval.is_file() else None
        for channel in (1, 2, 3):
            label = hwmon / f"in{channel}_label"
            if not label.is_file() or label.read_text().strip() == "NC":
                continue
            files = (hwmon / f"in{channel}_input", hwmon / f"curr{channel}_input")
            rails.append(Rail(label.read_text().strip(), files, interval_ms))
    for device in sorted(drivers.glob("ina3221x/*-*/iio:device*")):
        for channel in (0, 1, 2):
            label = device / f"rail_name_{channel}"
            if not label.is_file() or label.read_text().strip() == "NC":
                continue
            delay = device / f"polling_delay_{channel}"
            delay_ms = _read_number(delay) if delay.is_file() else None
            power = (device / f"in_power{channel}_input",)
            rails.append(Rail(label.read_text().strip(), power, delay_ms or None))
    return rails


def match_layout(names: Sequence[str]) -> Optional[RailLayout]:
    """The documented layout whose summed rails are all present, the first in ``LAYOUTS``."""
    present = set(names)
    return next((lay for lay in LAYOUTS if set(lay.summed) <= present), None)


def open_jetson_meter(
    sys_root: Path = Path("/sys"),
    interval_s: float = SAMPLE_INTERVAL_S,
    background: bool = True,
    clock: Clock = time.perf_counter,
) -> Tuple[Optional[EnergyMeter], str]:
    """The INA3221 rails sampled every ``interval_s`` (module total as NVIDIA names it for the
    family found); None and why where there are none, or their layout is not a documented one."""
    rails = find_ina3221_rails(sys_root)
    if not rails:
        return None, "no INA3221 power monitor in sysfs"
    names = [r.name for r in rails]
    if len(set(names)) != len(names):
        return None, f"INA3221 rail names repeat ({', '.join(names)}): cannot tell them apart"
    layout = match_layout(names)
    if layout is None:
        return None, f"INA3221 rails {', '.join(names)} match no documented Jetson layout"
    by_name = {r.name: r for r in rails}

    def power() -> Dict[str, float]:
        return {name: rail.read_mw() for name, rail in by_name.items()}

    meter = SampledMeter(
        f"jetson-ina3221 ({layout.device})",
        power,
        layout.summed,
        interval_s,
        clock=clock,
        background=background,
    )
    return meter, ""


# ---- RAPL -------------------------------------------------------------------------------------


def find_rapl_zones(sys_root: Path = Path("/sys")) -> Tuple[Dict[str, Path], List[str]]:
    """RAPL zones under ``class/powercap`` by name (``package-0``, ``package-0/dram``, ...) and the
    zones summed: packages and DRAM (core/uncore lie inside a package; psys, where present,
    covers the whole SoC and is used alone)."""
    zones: Dict[str, Path] = {}
    for zone in sorted((sys_root / "class" / "powercap").glob("intel-rapl:*")):
        name_file = zone / "name"
        if not name_file.is_file():
            continue
        parent = zone.name.rsplit(":", 1)[0] if zone.name.count(":") == 2 else None
        label = name_file.read_text().strip()
        if parent is not None:
            parent_name = (zone.parent / parent / "name").read_text().strip()
            label = f"{parent_name}/{label}"
        zones[label] = zone
    if "psys" in zones:
        return zones, ["psys"]
    summed = [
        n for n in zones if n.startswith("package-") and ("/" not in n or n.endswith("/dram"))
    ]
    return zones, summed


def open_rapl_meter(sys_root: Path = Path("/sys")) -> Tuple[Optional[EnergyMeter], str]:
    """RAPL's energy counters (µJ, wrapping at ``max_energy_range_uj``); None and why where there
    are none or they are unreadable (root only since Linux 5.10, CVE-2020-8694)."""
    zones, summed = find_rapl_zones(sys_root)
    if not summed:
        return None, "no RAPL powercap zones (/sys/class/powercap/intel-rapl:*)"
    try:
        ranges = {n: _read_number(zones[n] / "max_energy_range_uj") / 1000.0 for n in summed}
        for name in summed:
            _read_number(zones[name] / "energy_uj")
    except PermissionError:
        return None, "RAPL energy_uj is readable by root only here (CVE-2020-8694)"
    except (OSError, ValueError) as exc:
        return None, f"RAPL counters unreadable ({exc})"

    def energy() -> Dict[str, float]:
        return {n: _read_number(zones[n] / "energy_uj") / 1000.0 for n in summed}

    return CounterMeter("rapl", energy, summed, ranges), ""


# ---- choosing a source, idle power, results ----------------------------------------------------


def open_meter(kind: str, sys_root: Path = Path("/sys")) -> Tuple[Optional[EnergyMeter], str]:
    """The best energy source for a device kind (``gpu``, ``jetson``, ``cpu``); or None and a
    line saying why energy is not measured."""
    openers: List[Callable[[], Tuple[Optional[EnergyMeter], str]]]
    if kind == "jetson":
        openers = [lambda: open_jetson_meter(sys_root)]
    elif kind == "cpu":
        openers = [lambda: open_rapl_meter(sys_root)]
    else:
        openers = [open_nvml_meter]
    reasons = []
    for opener in openers:
        meter, reason = opener()
        if meter is not None:
            return meter, ""
        reasons.append(reason)
    return None, "no readable power counter: energy not measured (" + "; ".join(reasons) + ")"


def describe_counter(kind: str, sys_root: Path = Path("/sys")) -> str:
    """Which energy counter a device of ``kind`` offers here (source and rails summed), or why
    there is none; for ``harness env`` and ``doctor``."""
    meter, reason = open_meter(kind, sys_root)
    if meter is None:
        return reason
    with meter:
        return describe_meter(meter)


def describe_meter(meter: EnergyMeter) -> str:
    """``rapl: package-0 (a counter)``: the source, the rails summed, how it is read."""
    every = f"sampled every {meter.interval_ms:g} ms" if meter.interval_ms else "a counter"
    return f"{meter.source}: {', '.join(meter.rails)} ({every})"


def open_for_run(
    kind: str, idle_s: float = 2.0, sys_root: Path = Path("/sys")
) -> Tuple[Optional[EnergyMeter], Optional[float], Dict[str, Any]]:
    """The meter for a run on a device of ``kind``, its idle power measured over ``idle_s``, and
    what results record about it: ``{source, rails, interval_ms, idle_w}`` or ``{source: null,
    reason}``."""
    meter, reason = open_meter(kind, sys_root)
    if meter is None:
        return None, None, {"source": None, "reason": reason}
    idle_w = measure_idle_w(meter, idle_s)
    note = {
        "source": meter.source,
        "rails": list(meter.rails),
        "interval_ms": meter.interval_ms,
        "idle_w": idle_w,
    }
    return meter, idle_w, note


def measure_idle_w(
    meter: EnergyMeter, seconds: float = 2.0, sleep: Callable[[float], None] = time.sleep
) -> Optional[float]:
    """Mean power in W over ``seconds`` of doing nothing (before the run), None if the source
    reads no time."""
    meter.start()
    sleep(seconds)
    block = meter.stop()
    return block.total_mj / block.duration_s / 1000.0 if block.duration_s > 0 else None


def run_energy(
    meter: EnergyMeter,
    blocks: Sequence[BlockEnergy],
    inferences: Sequence[int],
    idle_w: Optional[float] = None,
) -> RunEnergy:
    """The results entry of one configuration: mJ per inference in each block (total, per rail,
    above idle) and the median's distribution-free 95% interval over blocks."""
    per_block = [b.total_mj / n for b, n in zip(blocks, inferences) if n]
    rails = sorted({name for b in blocks for name in b.rails_mj})
    per_rail = {
        name: [b.rails_mj.get(name, 0.0) / n for b, n in zip(blocks, inferences) if n]
        for name in rails
    }
    above = (
        [(b.total_mj - idle_w * b.duration_s * 1000.0) / n for b, n in zip(blocks, inferences) if n]
        if idle_w is not None
        else []
    )
    warnings = []
    short = sum(1 for b in blocks if b.short_window)
    if short:
        warnings.append(
            f"{short} of {len(blocks)} blocks are shorter than the {meter.min_window_s:g} s over "
            f"which {meter.source} averages power: their energies are not precise"
        )
    if any(b.total_mj <= 0 for b in blocks):
        warnings.append(f"{meter.source} did not advance during some blocks (too coarse)")
    low, high = median_ci(per_block) if per_block else (0.0, 0.0)
    return RunEnergy(
        source=meter.source,
        rails=list(meter.rails),
        interval_ms=meter.interval_ms,
        per_block_mj=per_block,
        median_mj=float(np.median(per_block)) if per_block else 0.0,
        ci_low_mj=low,
        ci_high_mj=high,
        rails_per_block_mj=per_rail,
        idle_w=idle_w,
        above_idle_per_block_mj=above,
        warnings=warnings,
    )


def energy_ratio(subject: RunEnergy, reference: RunEnergy) -> Optional[RatioCI]:
    """Subject's energy per inference over the reference's (0.52x: half the energy), paired over
    the interleaved rounds both ran in, with a 95% bootstrap interval; None with fewer than
    ``MIN_ROUNDS`` rounds or a zero reference block."""
    rounds = min(len(subject.per_block_mj), len(reference.per_block_mj))
    if rounds < MIN_ROUNDS or min(reference.per_block_mj[:rounds]) <= 0:
        return None
    return RatioCI(*rounds_ratio_ci(subject.per_block_mj, reference.per_block_mj))
