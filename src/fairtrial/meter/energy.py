"""Energy counters: Intel/AMD RAPL through Linux powercap, and NVIDIA NVML.

Both are cumulative hardware counters read at the start and the end of a trial; the energy of
the trial is the difference. Nothing here estimates: a counter that cannot be read gives
``None`` and the reason, and the report says "not measured".

RAPL (Running Average Power Limit; Intel 64 and IA-32 Architectures Software Developer's
Manual, vol. 3B, section 15.10 "Platform specific power management support"; Linux
Documentation/power/powercap/powercap.rst) is exposed as zones
``/sys/class/powercap/intel-rapl:N`` (one per CPU package, ``name`` = ``package-N``; AMD
Zen CPUs show up under the same names) with sub-zones ``intel-rapl:N:M`` (``core``,
``uncore``, ``dram``). ``core`` and ``uncore`` are parts of the package figure, ``dram`` is
not, and a top-level ``psys`` zone covers the whole platform (package included). To count each
joule once we sum the packages and their ``dram`` sub-zones and ignore the rest. A counter
(``energy_uj``, micro-joules) wraps to 0 after ``max_energy_range_uj``; a wrap is detected
when a reading is below the previous one, so the meter polls the counters often enough that
at most one wrap can happen between two readings. RAPL measures the whole package, whatever
runs on it: the figure includes other processes. Since Linux 5.10 ``energy_uj`` is readable
by root only (CVE-2020-8694); elsewhere it reads "not measured: permission denied".

NVML's ``nvmlDeviceGetTotalEnergyConsumption`` (NVIDIA Management Library reference, Volta
and newer) gives milli-joules since the driver was loaded, per device, without wrap; it
also counts whatever else runs on the device. It needs the ``nvidia-ml-py`` package (the
``gpu`` extra), imported only here and only when a meter starts.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable naming another powercap root (tests build a fake tree there).
POWERCAP_ROOT_ENV = "FAIRTRIAL_POWERCAP_ROOT"
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
_TOP = re.compile(r"^intel-rapl:(\d+)$")
_SUB = re.compile(r"^intel-rapl:(\d+):(\d+)$")


@dataclass
class _Counter:
    label: str  # e.g. "package-0", "package-0/dram"
    path: Path  # energy_uj
    max_range: int  # max_energy_range_uj (the counter wraps to 0 after it)
    last: int = 0
    total: int = 0  # micro-joules accumulated since start


@dataclass
class RaplReader:
    """Cumulative RAPL energy of every CPU package (+ its DRAM zone) under a powercap root.

    ``start()`` takes the first reading (or records why it cannot); ``poll()`` folds in a new
    reading, detecting a wrap; ``joules()`` returns per-zone and total energy since start.
    """

    root: Path
    counters: list[_Counter] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def from_env(cls) -> RaplReader:
        return cls(Path(os.environ.get(POWERCAP_ROOT_ENV) or DEFAULT_POWERCAP_ROOT))

    def start(self) -> bool:
        self.counters, self.error = [], None
        try:
            zones = sorted(p for p in self.root.iterdir() if p.name.startswith("intel-rapl:"))
        except OSError:
            self.error = f"no RAPL counters: {self.root} does not exist"
            return False
        for zone in zones:
            top, sub = _TOP.match(zone.name), _SUB.match(zone.name)
            name = _read_text(zone / "name")
            if top and name and name.startswith("package"):
                label = name
            elif sub and name == "dram":
                parent = _read_text(self.root / f"intel-rapl:{sub.group(1)}" / "name")
                label = f"{parent or 'package-' + sub.group(1)}/dram"
            else:
                continue  # core/uncore are inside the package figure; psys contains it
            path = zone / "energy_uj"
            try:
                value = int(path.read_text().strip())
                max_range = int((zone / "max_energy_range_uj").read_text().strip())
            except PermissionError:
                self.error = f"permission denied reading {path}"
                self.counters = []
                return False
            except (OSError, ValueError) as exc:
                self.error = f"cannot read {path}: {exc}"
                self.counters = []
                return False
            self.counters.append(_Counter(label, path, max_range, last=value))
        if not self.counters:
            self.error = f"no RAPL package zones under {self.root}"
            return False
        return True

    def poll(self) -> None:
        """Fold in a new reading of every counter (a reading below the last one is a wrap)."""
        for c in self.counters:
            try:
                value = int(c.path.read_text().strip())
            except (OSError, ValueError):
                continue  # a missed reading is made up by the next one
            c.total += value - c.last if value >= c.last else c.max_range - c.last + value
            c.last = value

    def joules(self) -> dict[str, float]:
        return {c.label: c.total / 1e6 for c in self.counters}


@dataclass
class NvmlReader:
    """Energy of the visible NVIDIA GPUs from NVML's total-energy counters (milli-joules)."""

    handles: list[tuple[str, Any]] = field(default_factory=list)
    start_mj: list[int] = field(default_factory=list)
    error: str | None = None
    _nvml: Any = None

    def start(self) -> bool:
        self.handles, self.start_mj, self.error = [], [], None
        pynvml = sys.modules.get("pynvml") or _import_pynvml()
        if pynvml is None:
            self.error = "no NVML (nvidia-ml-py, fairtrial's 'gpu' extra, is not installed)"
            return False
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            for i in _visible_indices(count, lambda i: _uuid(pynvml, i)):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                self.handles.append((f"gpu{i} {name}", handle))
            self.start_mj = [
                int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for _, h in self.handles
            ]
        except Exception as exc:  # NVMLError_* (no driver, not supported on this GPU, ...)
            self.error = f"NVML energy counter unreadable: {exc}"
            self.handles = []
            return False
        if not self.handles:
            self.error = "no NVIDIA GPU visible to NVML"
            return False
        self._nvml = pynvml
        return True

    def joules(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (label, handle), begin in zip(self.handles, self.start_mj, strict=True):
            try:
                end = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            except Exception:
                continue
            out[label] = (end - begin) / 1e3
        return out


@functools.cache
def _import_pynvml() -> Any:
    """The pynvml module, or None; a failed import is tried once per process (it searches
    the whole path, for every trial otherwise)."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _uuid(pynvml: Any, i: int) -> str:
    value = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
    return value.decode() if isinstance(value, bytes) else str(value)


def _visible_indices(count: int, uuid_of: Callable[[int], str]) -> list[int]:
    """NVML indices of the devices CUDA_VISIBLE_DEVICES leaves visible (NVML ignores it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(count))
    out: list[int] = []
    for item in (v.strip() for v in visible.split(",") if v.strip()):
        if item.isdigit():
            if int(item) < count:
                out.append(int(item))
            continue
        match = [i for i in range(count) if uuid_of(i).startswith(item)]
        out.extend(match[:1])
    return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
