"""Pure functions from per-trial compute records to per-arm figures, CO2e, money and ratios.

Nothing here measures; everything is arithmetic on the records :class:`~fairtrial.meter.Meter`
wrote, so a report can be recomputed with another grid intensity or PUE at any time.

* CO2e (grams) = energy (kWh) x PUE x grid intensity (gCO2e/kWh), the location-based method of
  the GHG Protocol Scope 2 Guidance (2015) with the facility overhead of The Green Grid's PUE
  (Power Usage Effectiveness, ISO/IEC 30134-2). The default intensity is stated with its
  source; a spec or a flag replaces both.
* Time-to-target is summarised by the olympic mean of MLPerf Training (Mattson et al. 2020,
  "MLPerf Training Benchmark", MLSys; MLPerf Training rules, "Benchmark results"): drop the
  fastest and the slowest run and average the rest; one run that never reached the target may
  be the dropped slowest, two or more make the figure invalid.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: World-average carbon intensity of electricity generation, gCO2e/kWh, and where it is from.
DEFAULT_GRID_INTENSITY = 436.0
DEFAULT_GRID_INTENSITY_SOURCE = (
    "world average of electricity generation in 2022 (Ember, Global Electricity Review 2023)"
)
#: No facility overhead: right for a desktop or laptop; a data centre is typically 1.1-1.6.
DEFAULT_PUE = 1.0
DEFAULT_CURRENCY = "USD"

#: Figures :func:`summarize_arm` reports: name -> (unit, the record key of its method label).
FIGURES: dict[str, tuple[str, str | None]] = {
    "wall_time": ("s", None),
    "train_time": ("s", None),
    "cpu_time": ("s", "cpu_time_method"),
    "peak_rss": ("bytes", "peak_rss_method"),
    "peak_rss_increase": ("bytes", "peak_rss_method"),
    "gpu_peak_allocated": ("bytes", "gpu_memory_method"),
    "gpu_peak_reserved": ("bytes", "gpu_memory_method"),
    "flops": ("FLOP", "flops_method"),
    "energy_cpu": ("J", "energy_cpu_method"),
    "energy_gpu": ("J", "energy_gpu_method"),
    "energy": ("J", "energy_method"),
    "co2e": ("gCO2e", "co2e_method"),
    "cost": ("currency", "cost_method"),
}


@dataclass(frozen=True)
class ComputeSettings:
    """How energy becomes CO2e and time becomes money; from ``[compute]`` plus overrides.

    Attributes:
        grid_intensity: gCO2e per kWh of the electricity used.
        grid_intensity_source: where that figure comes from (shown in every report).
        pue: Power Usage Effectiveness of the facility (>= 1; 1 = no overhead counted).
        price_per_hour: money per hour of trial wall time (None: no cost figure).
        currency: the currency of ``price_per_hour``.
        estimate_energy: fill in energy that was not measured with watts x wall time
            (opt-in; labelled as an estimate with its assumptions).
        cpu_watts, gpu_watts: the watts assumed by that estimate.
        target_metric: the logged metric compared with the target (None: ``val_<metric>``).
    """

    grid_intensity: float = DEFAULT_GRID_INTENSITY
    grid_intensity_source: str = DEFAULT_GRID_INTENSITY_SOURCE
    pue: float = DEFAULT_PUE
    price_per_hour: float | None = None
    currency: str = DEFAULT_CURRENCY
    estimate_energy: bool = False
    cpu_watts: float | None = None
    gpu_watts: float | None = None
    target_metric: str | None = None

    @classmethod
    def from_table(
        cls,
        table: Mapping[str, Any] | None = None,
        *,
        grid_intensity: float | None = None,
        grid_intensity_source: str | None = None,
        pue: float | None = None,
        price_per_hour: float | None = None,
        currency: str | None = None,
    ) -> ComputeSettings:
        """Settings from a ``[compute]`` table (``spec.compute`` or the ledger's copy), then
        overrides (CLI flags). An intensity given without a source is labelled by where it
        was set."""
        t = dict(table or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(t) - known)
        if unknown:
            raise ValueError(f"unknown [compute] key(s): {', '.join(unknown)}")
        if "grid_intensity" in t and "grid_intensity_source" not in t:
            t["grid_intensity_source"] = "set in the spec's [compute] table"
        if grid_intensity is not None:
            t["grid_intensity"] = grid_intensity
            t["grid_intensity_source"] = grid_intensity_source or "set on the command line"
        elif grid_intensity_source is not None:
            t["grid_intensity_source"] = grid_intensity_source
        for key, value in (("pue", pue), ("price_per_hour", price_per_hour)):
            if value is not None:
                t[key] = value
        if currency is not None:
            t["currency"] = currency
        settings = cls(**t)
        _check(settings)
        return settings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(s: ComputeSettings) -> None:
    if not (s.grid_intensity >= 0 and math.isfinite(s.grid_intensity)):
        raise ValueError(f"grid_intensity must be a number >= 0 gCO2e/kWh, got {s.grid_intensity}")
    if not (s.pue >= 1 and math.isfinite(s.pue)):
        raise ValueError(f"pue must be a number >= 1, got {s.pue}")
    if s.price_per_hour is not None and not s.price_per_hour >= 0:
        raise ValueError(f"price_per_hour must be a number >= 0, got {s.price_per_hour}")


# -- arithmetic --------------------------------------------------------------------------------
def co2e_grams(energy_joules: float, grid_intensity: float, pue: float = 1.0) -> float:
    """gCO2e of ``energy_joules`` drawn by the hardware: kWh x PUE x gCO2e/kWh."""
    return energy_joules / 3.6e6 * pue * grid_intensity


def cost(wall_seconds: float, price_per_hour: float) -> float:
    """Money for ``wall_seconds`` of a machine rented at ``price_per_hour``."""
    return wall_seconds / 3600.0 * price_per_hour


@dataclass(frozen=True)
class OlympicMean:
    """MLPerf's olympic mean of time-to-target over the runs of one arm.

    ``value`` is None when the figure is invalid or not applicable; ``reason`` says why.
    ``kept`` are the times averaged, ``dropped`` the fastest and slowest (None for a run that
    never reached the target).
    """

    value: float | None
    valid: bool
    reason: str
    n: int
    reached: int
    kept: tuple[float, ...] = ()
    dropped: tuple[float | None, ...] = ()


def olympic_mean(times: Sequence[float | None]) -> OlympicMean:
    """Olympic mean of ``times`` (seconds; None = the run did not reach the target).

    Drops the fastest and the slowest run and averages the rest (MLPerf Training rules). A
    run that did not converge counts as the slowest, so at most one may be missing; the
    figure needs at least three runs.
    """
    n = len(times)
    reached = sorted(t for t in times if t is not None)
    missing = n - len(reached)
    if n < 3:
        return OlympicMean(None, False, f"needs at least 3 runs, got {n}", n, len(reached))
    if missing > 1:
        return OlympicMean(
            None,
            False,
            f"{missing} of {n} runs did not reach the target (at most one may be dropped "
            "as the slowest)",
            n,
            len(reached),
        )
    slowest: float | None = None if missing else reached[-1]
    kept = reached[1:] if missing else reached[1:-1]
    reason = (
        "mean after dropping the fastest run and the one that did not reach the target"
        if missing
        else "mean after dropping the fastest and the slowest run"
    )
    return OlympicMean(
        statistics.fmean(kept), True, reason, n, len(reached), tuple(kept), (reached[0], slowest)
    )


def fill_record(record: Mapping[str, Any], s: ComputeSettings | None = None) -> dict[str, Any]:
    """A compute record with total energy (and the opt-in estimate), CO2e and cost worked
    out under ``s`` (the defaults when None)."""
    return _fill(record, s or ComputeSettings())


def _fill(record: Mapping[str, Any], s: ComputeSettings) -> dict[str, Any]:
    """A record with total energy (and the opt-in estimate), CO2e and cost worked out."""
    r = dict(record)
    wall = r.get("wall_time")
    parts: list[str] = []
    total = 0.0
    for part, watts in (("cpu", s.cpu_watts), ("gpu", s.gpu_watts)):
        key = f"energy_{part}"
        if r.get(key) is not None:
            total += float(r[key])
            parts.append(f"{part.upper()} measured")
        elif s.estimate_energy and watts is not None and wall is not None:
            r[key] = watts * float(wall)
            r[f"{key}_method"] = (
                f"estimate: {watts:g} W x {float(wall):.3g} s wall time (assumes a constant "
                f"{watts:g} W draw; the {part.upper()} counters were not read: "
                f"{str(r.get(f'{key}_method', 'no record')).removeprefix('not measured: ')})"
            )
            total += r[key]
            parts.append(f"{part.upper()} estimated from {watts:g} W")
    if parts:
        r["energy"] = total
        estimated = any("estimated" in p for p in parts)
        r["energy_method"] = ("estimate: " if estimated else "") + "; ".join(parts)
    else:
        r["energy"] = None
        reasons = [
            str(r.get(f"energy_{p}_method") or "not measured: no record").removeprefix(
                "not measured: "
            )
            for p in ("cpu", "gpu")
        ]
        r["energy_method"] = "not measured: " + "; ".join(reasons)
    if r["energy"] is not None:
        r["co2e"] = co2e_grams(float(r["energy"]), s.grid_intensity, s.pue)
        r["co2e_method"] = (
            f"energy x PUE {s.pue:g} x {s.grid_intensity:g} gCO2e/kWh ({s.grid_intensity_source})"
        )
    else:
        r["co2e"] = None
        r["co2e_method"] = "not measured: no energy figure"
    if s.price_per_hour is not None and wall is not None:
        r["cost"] = cost(float(wall), s.price_per_hour)
        r["cost_method"] = f"wall time x {s.price_per_hour:g} {s.currency}/hour"
    else:
        r["cost"] = None
        r["cost_method"] = "not computed: no price_per_hour"
    return r


def _figure(
    values: list[float], all_n: int, unit: str, labels_with: list[str], labels_all: list[str]
) -> dict[str, Any]:
    """mean/sd/total of ``values``; ``method`` is the most common label among the records
    that have the figure, else the most common reason among those that do not."""
    with_value, every = Counter(labels_with), Counter(labels_all)
    pool = with_value or every
    method = pool.most_common(1)[0][0] if pool else "not measured"
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "total": math.fsum(values) if values else None,
        "n": len(values),
        "missing": all_n - len(values),
        "unit": unit,
        "method": method,
        "methods": sorted(every),
    }


def summarize_arm(
    records: Sequence[Mapping[str, Any]], settings: ComputeSettings | None = None
) -> dict[str, Any]:
    """Per-arm compute: mean +- sd (finished trials), total (all trials), time-to-target.

    ``records`` are the compute records of the arm's trials (latest attempt each, every
    status: failed and diverged trials cost compute too). Each figure of :data:`FIGURES`
    becomes ``{"mean", "sd", "total", "n", "missing", "unit", "method", "methods"}``: mean and
    sd over finished trials that have the figure, total over every trial that has it, and
    ``method`` the label of how it was obtained, or why it is missing ("not measured: ...",
    "not counted"). Time-to-target is the olympic mean over the finished and failed runs alike
    (a run that failed did not reach the target).
    """
    s = settings or ComputeSettings()
    filled = [_fill(r, s) for r in records]
    finished = [r for r in filled if r.get("status", "finished") == "finished"]
    figures: dict[str, Any] = {}
    for name, (unit, method_key) in FIGURES.items():
        shown_unit = s.currency if unit == "currency" else unit

        def label(r: Mapping[str, Any], key: str | None = method_key) -> str:
            return str(r.get(key) or "no record") if key else "wall clock (time.perf_counter)"

        in_finished = [float(r[name]) for r in finished if r.get(name) is not None]
        everywhere = [float(r[name]) for r in filled if r.get(name) is not None]
        fig = _figure(
            in_finished,
            len(finished),
            shown_unit,
            [label(r) for r in filled if r.get(name) is not None],
            [label(r) for r in filled],
        )
        fig["total"] = math.fsum(everywhere) if everywhere else None
        fig["n_total"] = len(everywhere)
        figures[name] = fig
    applicable = [r for r in filled if r.get("target") is not None]
    if not applicable:
        ttt: dict[str, Any] = {
            "value": None,
            "valid": False,
            "reason": "not applicable: the experiment sets no target",
            "n": 0,
            "reached": 0,
            "kept": [],
            "dropped": [],
        }
    else:
        om = olympic_mean(
            [
                float(r["time_to_target"]) if r.get("time_to_target") is not None else None
                for r in applicable
            ]
        )
        ttt = {**asdict(om), "kept": list(om.kept), "dropped": list(om.dropped)}
        ttt["target"] = applicable[0].get("target")
        ttt["target_metric"] = applicable[0].get("target_metric")
        ttt["method"] = next(
            (
                str(r.get("time_to_target_method") or "time-to-target")
                for r in applicable
                if r.get("time_to_target") is not None
            ),
            "not reached",
        )
    return {
        "n": len(filled),
        "n_finished": len(finished),
        "figures": figures,
        "time_to_target": ttt,
        "settings": s.as_dict(),
    }


def worker_startup(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The start-up of the worker processes, from the records that carry one (each worker's
    first trial): ``{"workers", "total", "mean", "interpreter_and_imports", "task_and_recipe",
    "method"}`` (the last two: means), or None when no worker start-up was recorded.

    It is the workers' cost, shared by every later trial: no trial's time (so no cost ratio)
    includes it.
    """
    found = [r["worker_startup"] for r in records if isinstance(r.get("worker_startup"), Mapping)]
    if not found:
        return None

    def mean(key: str) -> float | None:
        values = [float(x[key]) for x in found if x.get(key) is not None]
        return statistics.fmean(values) if values else None

    return {
        "workers": len(found),
        "total": math.fsum(float(x.get("seconds") or 0.0) for x in found),
        "mean": mean("seconds"),
        "interpreter_and_imports": mean("interpreter_and_imports"),
        "task_and_recipe": mean("task_and_recipe"),
        "method": Counter(str(x.get("method", "")) for x in found).most_common(1)[0][0],
    }


#: What each ratio of :func:`cost_ratios` compares (figure names, first one both sides have).
RATIO_BASIS: dict[str, tuple[str, ...]] = {
    "flops": ("flops",),
    "time": ("train_time", "wall_time"),
    "wall_time": ("wall_time",),
    "energy": ("energy",),
    "co2e": ("co2e",),
    "memory": ("gpu_peak_allocated", "peak_rss"),
    "cost": ("cost",),
}


def cost_ratios(arm: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Arm / baseline ratios of mean cost per trial, from two :func:`summarize_arm` results.

    Returns ``{"flops": 3.1, "time": 2.4, "wall_time": ..., "energy": None, "co2e": None,
    "memory": 1.0, "cost": None, "basis": {"time": "train_time", "memory": "peak_rss", ...}}``:
    None where either side lacks the figure (or the baseline's is 0). ``time`` compares the
    train phase when both arms time one (the setup of a worker's first trial, e.g. importing
    torch, is not the method's cost), else wall time; ``memory`` compares GPU peak allocated
    memory when both arms have it, else peak RSS.
    """
    out: dict[str, Any] = {}
    basis: dict[str, str | None] = {}
    for name, candidates in RATIO_BASIS.items():
        out[name], basis[name] = None, None
        for fig in candidates:
            a = arm["figures"].get(fig, {}).get("mean")
            b = baseline["figures"].get(fig, {}).get("mean")
            if a is not None and b is not None:
                out[name] = a / b if b > 0 else None
                basis[name] = fig
                break
    out["basis"] = basis
    return out


_WORDS = {
    "flops": "the FLOPs",
    "time": "the time",
    "wall_time": "the wall time",
    "energy": "the energy",
    "co2e": "the CO2e",
    "memory": "the memory",
    "cost": "the cost",
}


def format_cost_ratios(
    ratios: Mapping[str, Any], which: Sequence[str] = ("flops", "time", "energy")
) -> str:
    """E.g. ``"for 3.1× the FLOPs and 2.4× the time"``; figures without a ratio are left out
    (``""`` when none is known)."""
    parts = [
        f"{_ratio_text(float(ratios[k]))} {_WORDS[k]}" for k in which if ratios.get(k) is not None
    ]
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return "for " + text


def _ratio_text(r: float) -> str:
    if r >= 10:
        return f"{r:.0f}×"
    if r >= 0.1:
        return f"{r:.2g}×" if r < 1 else f"{r:.1f}×"
    return f"{r:.2g}×"


def hardware_summary(provenances: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The hardware the figures were measured on, from provenance records.

    Returns ``{"machines": [{"cpu", "cpu_count", "gpus", "gpu_count", "text"}], "text",
    "mixed"}``; ``mixed`` is True when trials ran on different hardware (their figures are
    then not comparable one to one).
    """
    seen: dict[str, dict[str, Any]] = {}
    for p in provenances:
        gpus = [str(g.get("name", "?")) for g in p.get("gpus") or []]
        counts = Counter(gpus)
        gpu_text = ", ".join(f"{n}× {name}" for name, n in sorted(counts.items()))
        cpu = str(p.get("cpu") or "unknown CPU")
        cores = p.get("cpu_count")
        text = f"{cpu} ({cores} logical cores)" if cores else cpu
        if gpu_text:
            text += f", {gpu_text}"
        seen.setdefault(
            text,
            {"cpu": cpu, "cpu_count": cores, "gpus": gpus, "gpu_count": len(gpus), "text": text},
        )
    machines = list(seen.values())
    return {
        "machines": machines,
        "text": "; ".join(m["text"] for m in machines) if machines else "unknown hardware",
        "mixed": len(machines) > 1,
    }
