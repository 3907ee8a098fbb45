"""Compute accounting: what each trial cost, and per-arm figures set against the gain.

:class:`Meter` measures one trial (driven by ``execute_trial`` and the trial context; no work
for the user); :mod:`fairtrial.meter.summary` holds the pure functions from the stored records
to per-arm figures, CO2e, money and cost ratios; :mod:`fairtrial.meter.energy` reads the
RAPL and NVML energy counters.
"""

from __future__ import annotations

from fairtrial.meter.summary import (
    DEFAULT_GRID_INTENSITY,
    DEFAULT_GRID_INTENSITY_SOURCE,
    DEFAULT_PUE,
    ComputeSettings,
    OlympicMean,
    co2e_grams,
    cost,
    cost_ratios,
    fill_record,
    format_cost_ratios,
    hardware_summary,
    olympic_mean,
    summarize_arm,
    worker_startup,
)
from fairtrial.meter.trial import (
    FLOPS_METHOD,
    METER_ENV,
    NO_FLOPS,
    NOT_COUNTED,
    FlopBlock,
    Meter,
    metering_enabled,
)

__all__ = [
    "DEFAULT_GRID_INTENSITY",
    "DEFAULT_GRID_INTENSITY_SOURCE",
    "DEFAULT_PUE",
    "FLOPS_METHOD",
    "METER_ENV",
    "NOT_COUNTED",
    "NO_FLOPS",
    "ComputeSettings",
    "FlopBlock",
    "Meter",
    "OlympicMean",
    "co2e_grams",
    "cost",
    "cost_ratios",
    "fill_record",
    "format_cost_ratios",
    "hardware_summary",
    "metering_enabled",
    "olympic_mean",
    "summarize_arm",
    "worker_startup",
]
