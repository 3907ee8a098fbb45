"""The per-trial meter: what one trial cost, measured while it runs, with zero user work.

:func:`fairtrial.execute.execute_trial` starts a :class:`Meter` before the trial and
asks it for the trial's compute record when the trial ends, whatever the ending (finished,
failed, diverged): a crashed trial's figures are results too. The record is a plain JSON
dict; every figure comes with a ``*_method`` label saying how it was obtained, or why it is
missing ("not measured: ...", "not counted").

What it measures and how:

* wall time by phase (``ctx.phase``), CPU time of the process (``os.times``: user + system
  of all its threads; plus the command's own, for command recipes);
* time-to-target: the train-phase time elapsed when the target metric first reached the
  experiment's ``target``, found at flush time from the logged points (``ctx.log`` stays an
  append);
* peak resident memory of this trial alone: on Linux the kernel's high-water mark is reset at
  the start (writing ``5`` to ``/proc/self/clear_refs``, see proc(5)) and ``VmHWM`` read at
  the end; where that is not allowed a thread samples ``/proc/self/statm``; elsewhere
  ``ru_maxrss`` is reported and labelled as the worker's lifetime peak;
* GPU peak allocated and reserved memory from torch's caching allocator, only when torch is
  already imported and CUDA initialised (a scikit-learn trial never imports torch);
* FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` on the first run of each counted
  block (one training step, one evaluation pass), times the number of runs;
* energy from RAPL and NVML counters (:mod:`fairtrial.meter.energy`).

A sampling thread runs only when it is needed (the RSS fallback, or RAPL counters that
could wrap during a long trial); :meth:`Meter.close` stops it and ``execute_trial`` calls it
in a ``finally``, so it also stops when the trial raises.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from fairtrial.meter.energy import NvmlReader, RaplReader

#: The label of a FLOP figure obtained with :meth:`Meter.count_flops`.
FLOPS_METHOD = "matmul/conv FLOPs, counted on one step"
NOT_COUNTED = "not counted"
#: Environment variable that turns metering off (``0``/``off``/``false``): the bench's switch.
METER_ENV = "FAIRTRIAL_METER"
#: Seconds between two readings of the RAPL counters: far below the time a counter takes to
#: wrap (max_energy_range_uj is ~262 kJ: about 40 minutes at 100 W).
RAPL_POLL_SECONDS = 10.0
#: Seconds between two RSS samples when the kernel high-water mark cannot be reset.
RSS_SAMPLE_SECONDS = 0.02
RECORD_VERSION = 1

RssMode = Literal["auto", "clear_refs", "sample", "rusage"]


def metering_enabled() -> bool:
    """False when ``FAIRTRIAL_METER`` is ``0``, ``off``, ``false`` or ``no``."""
    return os.environ.get(METER_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


class FlopBlock:
    """A block of code whose FLOPs are counted on its first run and multiplied by its runs.

    Obtained from :meth:`Meter.count_flops` / ``ctx.count_flops(key)``; enter it around the
    same work every time (one training step on equal-size batches, one evaluation pass).
    """

    __slots__ = ("_mode", "key", "per_run", "runs")

    def __init__(self, key: str) -> None:
        self.key = key
        self.per_run: int | None = None
        self.runs = 0
        self._mode: Any = None

    def __enter__(self) -> FlopBlock:
        if self.per_run is None:
            from torch.utils.flop_counter import FlopCounterMode

            self._mode = FlopCounterMode(display=False)
            self._mode.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mode = self._mode
        if mode is not None:
            self._mode = None
            mode.__exit__(exc_type, exc, tb)
            if exc_type is None:
                self.per_run = int(mode.get_total_flops())
        if exc_type is None:
            self.runs += 1


class _NoFlops:
    """What ``ctx.count_flops`` gives when metering is off: does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoFlops:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


NO_FLOPS = _NoFlops()


class Meter:
    """Measures one trial. ``start()``, then ``record(...)`` once, then ``close()`` (idempotent).

    Args:
        target: the experiment's target value of ``target_metric`` (None: no time-to-target).
        target_metric: the logged metric compared with ``target`` (e.g. ``val_accuracy``).
        direction: ``"max"`` (reached when value >= target) or ``"min"`` (value <= target).
        rss: how to find peak RSS: ``auto`` (clear_refs, else sampling, else ru_maxrss) or
            one of them, for tests.
    """

    def __init__(
        self,
        *,
        target: float | None = None,
        target_metric: str | None = None,
        direction: str = "max",
        rss: RssMode = "auto",
    ) -> None:
        self.target = target
        self.target_metric = target_metric
        self.maximize = direction != "min"
        self.rss_mode = rss
        #: True while flushes should be scanned for the first point that reaches the target
        self.watching = target is not None and target_metric is not None
        self.hit_t: float | None = None  # ctx time of the first point reaching the target
        self.blocks: dict[str, FlopBlock] = {}
        self.reported_flops: tuple[float, str] | None = None  # command recipes
        self.flops_note: str | None = None
        self.child_cpu = 0.0
        self.child_peak_rss: int | None = None
        self._rapl = RaplReader.from_env()
        self._nvml = NvmlReader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_method = ""
        self._rss_start: int | None = None
        self._rss_sampled = 0
        self._cuda = False
        self._lock = threading.Lock()
        self._t0 = self._cpu0 = 0.0
        self._rss_after_setup = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = time.perf_counter()
        times = os.times()
        self._cpu0 = times.user + times.system
        self._start_rss()
        self._start_gpu()
        rapl = self._rapl.start()
        self._nvml.start()
        if rapl or self._rss_method == "sample":
            thread = threading.Thread(target=self._sample, name="fairtrial-meter", daemon=True)
            self._thread = thread
            thread.start()

    def setup_done(self) -> None:
        """Reset the memory high-water mark once the trial's setup is over.

        A worker's first trial imports the recipe's libraries (torch: ~100 MB) and loads the
        task; that memory is the worker's, shared by every later trial, not this trial's. Time,
        CPU time and energy still count the setup (its phase is reported apart).
        """
        if self._rss_method == "clear_refs":
            self._start_rss()
            self._rss_after_setup = self._rss_method == "clear_refs"

    def close(self) -> None:
        """Stop the sampling thread (safe to call twice, and on a meter that never started)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    @property
    def sampling(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _sample(self) -> None:
        interval = RSS_SAMPLE_SECONDS if self._rss_method == "sample" else RAPL_POLL_SECONDS
        next_rapl = time.monotonic() + RAPL_POLL_SECONDS
        while not self._stop.wait(interval):
            if self._rss_method == "sample":
                rss = _statm_rss()
                if rss is not None and rss > self._rss_sampled:
                    self._rss_sampled = rss
            if self._rapl.counters and time.monotonic() >= next_rapl:
                with self._lock:
                    self._rapl.poll()
                next_rapl = time.monotonic() + RAPL_POLL_SECONDS

    # -- what the context drives --------------------------------------------------------------
    def count_flops(self, key: str) -> FlopBlock:
        block = self.blocks.get(key)
        if block is None:
            block = self.blocks[key] = FlopBlock(key)
        return block

    def observe(self, rows: Sequence[tuple[int | None, float, str, float]]) -> None:
        """Scan flushed metric rows for the first one reaching the target (flush time only)."""
        name, target = self.target_metric, self.target
        assert target is not None
        for _, t, metric, value in rows:
            if metric == name and (value >= target if self.maximize else value <= target):
                self.hit_t = t
                self.watching = False
                return

    def report_flops(self, flops: float, method: str | None = None) -> None:
        """FLOPs a command recipe reported itself (``{"compute": {"flops": ...}}``)."""
        self.reported_flops = (float(flops), method or "reported by the command")

    def flops_not_counted(self, reason: str) -> None:
        self.flops_note = f"{NOT_COUNTED}: {reason}"

    def add_child(self, cpu_time: float, peak_rss: int | None) -> None:
        """CPU time and peak RSS of a child process the trial ran (command recipes)."""
        self.child_cpu += cpu_time
        if peak_rss is not None:
            self.child_peak_rss = max(self.child_peak_rss or 0, peak_rss)

    # -- the record -----------------------------------------------------------------------------
    def record(
        self,
        *,
        status: str,
        phases: dict[str, float],
        intervals: Sequence[tuple[str, float, float]] = (),
    ) -> dict[str, Any]:
        """The trial's compute record (see the module docstring); stops the sampler first."""
        wall = time.perf_counter() - self._t0
        times = os.times()
        cpu = times.user + times.system - self._cpu0
        self.close()
        out: dict[str, Any] = {
            "version": RECORD_VERSION,
            "status": status,
            "wall_time": wall,
            "phases": dict(phases),
            "train_time": phases.get("train"),
            "cpu_time": cpu + self.child_cpu,
            "cpu_time_method": "process user+system CPU time (os.times)"
            + (" + the command's (wait4)" if self.child_cpu else ""),
        }
        out.update(self._time_to_target(intervals))
        out.update(self._rss_figures())
        out.update(self._gpu_figures())
        out.update(self._flop_figures())
        out.update(self._energy_figures())
        return out

    def _time_to_target(self, intervals: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
        base: dict[str, Any] = {"target": self.target, "target_metric": self.target_metric}
        if self.target is None or self.target_metric is None:
            return {
                **base,
                "target_reached": None,
                "time_to_target": None,
                "time_to_target_method": "not applicable: the experiment sets no target",
            }
        sign = ">=" if self.maximize else "<="
        what = f"{self.target_metric} {sign} {self.target:g}"
        if self.hit_t is None:
            return {
                **base,
                "target_reached": False,
                "time_to_target": None,
                "time_to_target_method": f"not reached: no logged {what}",
            }
        train = [(a, b) for name, a, b in intervals if name == "train"]
        if not train:
            return {
                **base,
                "target_reached": True,
                "time_to_target": self.hit_t,
                "time_to_target_method": f"wall time since the trial started at the first "
                f"{what} (the recipe times no train phase)",
            }
        elapsed = sum(max(0.0, min(b, self.hit_t) - a) for a, b in train)
        return {
            **base,
            "target_reached": True,
            "time_to_target": elapsed,
            "time_to_target_method": f"train-phase time at the first {what}",
        }

    # -- memory -----------------------------------------------------------------------------
    def _start_rss(self) -> None:
        self._rss_start = _status_kb("VmRSS")
        mode = self.rss_mode
        if mode in ("auto", "clear_refs"):
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self._rss_method = "clear_refs"
                return
            except OSError:
                if mode == "clear_refs":
                    raise
        if mode in ("auto", "sample") and _statm_rss() is not None:
            self._rss_method = "sample"
            self._rss_sampled = _statm_rss() or 0
            return
        self._rss_method = "rusage"

    def _rss_figures(self) -> dict[str, Any]:
        start = self._rss_start
        if self.child_peak_rss is not None:
            return {
                "peak_rss": self.child_peak_rss,
                "peak_rss_increase": None,
                "rss_start": None,
                "peak_rss_method": "peak RSS of the command process (ru_maxrss from wait4)",
            }
        if self._rss_method == "clear_refs":
            peak = _status_kb("VmHWM")
            method = (
                "VmHWM of the worker after resetting it "
                + ("when the trial's setup ended" if self._rss_after_setup else "at trial start")
                + " (this trial alone)"
            )
        elif self._rss_method == "sample":
            current = _statm_rss()
            peak = max(self._rss_sampled, current or 0) or None
            method = (
                f"largest RSS sampled every {RSS_SAMPLE_SECONDS * 1000:g} ms "
                "(/proc/self/clear_refs not writable; spikes between samples can be missed)"
            )
        else:
            ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = ru if sys.platform == "darwin" else ru * 1024
            method = "ru_maxrss: lifetime peak of the worker process (includes earlier trials)"
            start = None
        return {
            "peak_rss": peak,
            "peak_rss_increase": peak - start if peak is not None and start is not None else None,
            "rss_start": start,
            "peak_rss_method": method,
        }

    def _start_gpu(self) -> None:
        torch: Any = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            self._cuda = True
            for i in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(i)

    def _gpu_figures(self) -> dict[str, Any]:
        torch: Any = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return {
                "gpu_peak_allocated": None,
                "gpu_peak_reserved": None,
                "gpu_memory_method": "not measured: the trial used no CUDA device",
            }
        n = torch.cuda.device_count()
        allocated = [int(torch.cuda.max_memory_allocated(i)) for i in range(n)]
        reserved = [int(torch.cuda.max_memory_reserved(i)) for i in range(n)]
        fresh = "" if self._cuda else " (CUDA initialised during the trial)"
        return {
            "gpu_peak_allocated": sum(allocated),
            "gpu_peak_reserved": sum(reserved),
            "gpu_peak_allocated_per_device": allocated,
            "gpu_memory_method": "torch.cuda.max_memory_allocated / max_memory_reserved "
            f"since trial start, summed over {n} device(s){fresh}",
        }

    # -- FLOPs ------------------------------------------------------------------------------
    def _flop_figures(self) -> dict[str, Any]:
        counted = {k: b for k, b in self.blocks.items() if b.per_run is not None}
        if counted:
            detail = {k: {"per_run": b.per_run, "runs": b.runs} for k, b in counted.items()}
            total = sum((b.per_run or 0) * b.runs for b in counted.values())
            return {"flops": float(total), "flops_method": FLOPS_METHOD, "flops_detail": detail}
        if self.reported_flops is not None:
            flops, method = self.reported_flops
            return {"flops": flops, "flops_method": method, "flops_detail": {}}
        return {"flops": None, "flops_method": self.flops_note or NOT_COUNTED, "flops_detail": {}}

    # -- energy -----------------------------------------------------------------------------
    def _energy_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._rapl.counters:
            self._rapl.poll()
            domains = self._rapl.joules()
            out["energy_cpu"] = sum(domains.values())
            out["energy_cpu_method"] = (
                "RAPL counters of " + ", ".join(domains) + " (whole CPU package: includes "
                "other processes running on it)"
            )
            out["energy_cpu_domains"] = domains
        else:
            out["energy_cpu"] = None
            out["energy_cpu_method"] = f"not measured: {self._rapl.error}"
        if self._nvml.handles:
            gpus = self._nvml.joules()
            out["energy_gpu"] = sum(gpus.values())
            out["energy_gpu_method"] = (
                "NVML total energy counters of " + ", ".join(gpus) + " (whole device: includes "
                "other processes on it)"
            )
            out["energy_gpu_domains"] = gpus
        else:
            out["energy_gpu"] = None
            out["energy_gpu_method"] = f"not measured: {self._nvml.error}"
        return out


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _statm_rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
