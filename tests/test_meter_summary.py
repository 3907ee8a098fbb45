"""The pure side of compute accounting: CO2e, money, olympic mean, per-arm figures, ratios."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fairtrial.meter import (
    DEFAULT_GRID_INTENSITY,
    ComputeSettings,
    co2e_grams,
    cost,
    cost_ratios,
    format_cost_ratios,
    hardware_summary,
    olympic_mean,
    summarize_arm,
)


def record(**kw: Any) -> dict[str, Any]:
    """A compute record as the meter writes it, with the figures given and the rest missing."""
    base: dict[str, Any] = {
        "version": 1,
        "status": "finished",
        "wall_time": 10.0,
        "train_time": 8.0,
        "cpu_time": 9.0,
        "cpu_time_method": "process user+system CPU time (os.times)",
        "peak_rss": 100e6,
        "peak_rss_increase": 50e6,
        "peak_rss_method": "VmHWM",
        "gpu_peak_allocated": None,
        "gpu_peak_reserved": None,
        "gpu_memory_method": "not measured: the trial used no CUDA device",
        "flops": 1e9,
        "flops_method": "matmul/conv FLOPs, counted on one step",
        "energy_cpu": None,
        "energy_cpu_method": "not measured: permission denied reading /x/energy_uj",
        "energy_gpu": None,
        "energy_gpu_method": "not measured: no NVML",
        "target": None,
        "time_to_target": None,
    }
    base.update(kw)
    return base


def test_co2e_is_kwh_times_pue_times_intensity() -> None:
    # 3.6 MJ is 1 kWh
    assert co2e_grams(3.6e6, 436.0) == pytest.approx(436.0)
    assert co2e_grams(7.2e6, 100.0, pue=1.5) == pytest.approx(300.0)
    assert co2e_grams(0.0, 436.0) == 0.0
    assert cost(1800.0, 3.0) == pytest.approx(1.5)


def test_summarize_turns_measured_energy_into_co2e_and_cost() -> None:
    s = ComputeSettings.from_table(
        {"grid_intensity": 200.0, "pue": 1.2, "price_per_hour": 3.6, "currency": "EUR"}
    )
    recs = [record(energy_cpu=3.6e6, wall_time=1000.0), record(energy_cpu=7.2e6, wall_time=3000.0)]
    out = summarize_arm(recs, s)["figures"]
    assert out["energy"]["mean"] == pytest.approx(5.4e6)
    assert out["co2e"]["mean"] == pytest.approx((1 + 2) / 2 * 1.2 * 200.0)
    assert out["co2e"]["total"] == pytest.approx(3 * 1.2 * 200.0)
    assert "set in the spec's [compute] table" in out["co2e"]["method"]
    assert out["cost"]["total"] == pytest.approx(4000.0 / 3600.0 * 3.6)
    assert out["cost"]["unit"] == "EUR"


def test_default_intensity_names_its_source_and_flags_override_the_spec() -> None:
    s = ComputeSettings()
    assert s.grid_intensity == DEFAULT_GRID_INTENSITY
    assert "Ember" in s.grid_intensity_source and "2022" in s.grid_intensity_source
    o = ComputeSettings.from_table({"grid_intensity": 50.0, "pue": 1.1}, grid_intensity=700.0)
    assert (o.grid_intensity, o.pue) == (700.0, 1.1)
    assert o.grid_intensity_source == "set on the command line"
    named = ComputeSettings.from_table({}, grid_intensity=20.0, grid_intensity_source="hydro")
    assert named.grid_intensity_source == "hydro"
    with pytest.raises(ValueError, match="pue"):
        ComputeSettings.from_table({"pue": 0.5})
    with pytest.raises(ValueError, match="unknown"):
        ComputeSettings.from_table({"grid": 1})


def test_unmeasured_energy_says_so_and_is_never_guessed() -> None:
    out = summarize_arm([record(), record()])["figures"]
    for name in ("energy", "co2e", "energy_cpu"):
        assert out[name]["mean"] is None and out[name]["total"] is None
        assert out[name]["method"].startswith("not measured"), out[name]["method"]
    assert "permission denied" in out["energy"]["method"]
    assert out["cost"]["mean"] is None and out["cost"]["method"].startswith("not computed")


def test_energy_estimate_only_when_asked_and_labelled_with_its_assumptions() -> None:
    s = ComputeSettings.from_table({"estimate_energy": True, "cpu_watts": 50.0})
    out = summarize_arm([record(wall_time=20.0), record(wall_time=40.0)], s)["figures"]
    assert out["energy"]["mean"] == pytest.approx(50.0 * 30.0)
    assert out["energy"]["method"].startswith("estimate")
    cpu = out["energy_cpu"]["method"]
    assert cpu.startswith("estimate: 50 W x") and "permission denied" in cpu
    # a measured figure is kept as measured: the estimate fills only the gaps
    mixed = summarize_arm([record(energy_cpu=100.0, wall_time=20.0)], s)["figures"]
    assert mixed["energy"]["mean"] == 100.0 and not mixed["energy"]["method"].startswith("est")


def test_mean_over_finished_total_over_every_trial() -> None:
    recs = [record(flops=1e9), record(flops=3e9), record(status="failed", flops=5e8)]
    f = summarize_arm(recs)["figures"]["flops"]
    assert f["mean"] == pytest.approx(2e9) and f["n"] == 2
    assert f["sd"] == pytest.approx(math.sqrt(2) * 1e9)
    assert f["total"] == pytest.approx(4.5e9) and f["n_total"] == 3
    not_counted = summarize_arm([record(flops=None, flops_method="not counted")])
    assert not_counted["figures"]["flops"]["method"] == "not counted"


def test_olympic_mean_drops_fastest_and_slowest() -> None:
    om = olympic_mean([5.0, 1.0, 3.0, 4.0, 100.0])
    assert om.valid and om.value == pytest.approx((3.0 + 4.0 + 5.0) / 3)
    assert om.dropped == (1.0, 100.0) and om.kept == (3.0, 4.0, 5.0)


def test_olympic_mean_one_non_converging_run_is_the_slowest() -> None:
    om = olympic_mean([5.0, 1.0, None, 4.0, 3.0])
    assert om.valid and om.value == pytest.approx((3.0 + 4.0 + 5.0) / 3)
    assert om.dropped == (1.0, None)


def test_olympic_mean_is_invalid_with_two_non_converging_runs_or_too_few() -> None:
    om = olympic_mean([5.0, None, 4.0, None, 3.0])
    assert not om.valid and om.value is None and "2 of 5 runs" in om.reason
    few = olympic_mean([1.0, 2.0])
    assert not few.valid and "at least 3" in few.reason
    assert olympic_mean([2.0, None, 1.0]).value == pytest.approx(2.0)


def test_time_to_target_in_the_arm_summary() -> None:
    recs = [
        record(target=0.9, target_metric="val_accuracy", time_to_target=t, target_reached=True)
        for t in (1.0, 2.0, 3.0, 4.0)
    ]
    recs.append(record(target=0.9, target_metric="val_accuracy", status="failed"))
    ttt = summarize_arm(recs)["time_to_target"]
    assert ttt["valid"] and ttt["value"] == pytest.approx(3.0) and ttt["dropped"] == [1.0, None]
    assert summarize_arm([record()])["time_to_target"]["reason"].startswith("not applicable")


def test_cost_ratios_and_their_sentence() -> None:
    base = summarize_arm([record(flops=1e9, train_time=10.0)] * 2)
    arm = summarize_arm([record(flops=3.1e9, train_time=24.0)] * 2)
    r = cost_ratios(arm, base)
    assert r["flops"] == pytest.approx(3.1) and r["time"] == pytest.approx(2.4)
    assert r["energy"] is None and r["basis"]["time"] == "train_time"
    assert r["memory"] == pytest.approx(1.0) and r["basis"]["memory"] == "peak_rss"
    assert format_cost_ratios(r) == "for 3.1× the FLOPs and 2.4× the time"
    assert format_cost_ratios({"flops": None}) == ""
    halves = {"flops": 0.5, "time": 0.25, "energy": 12.3}
    assert format_cost_ratios(halves) == "for 0.5× the FLOPs, 0.25× the time and 12× the energy"


def test_hardware_summary_from_provenance() -> None:
    prov = {"cpu": "AMD EPYC 7B13", "cpu_count": 16, "gpus": [{"name": "NVIDIA H100"}] * 2}
    hw = hardware_summary([prov, prov])
    assert hw["text"] == "AMD EPYC 7B13 (16 logical cores), 2× NVIDIA H100" and not hw["mixed"]
    other = hardware_summary([prov, {"cpu": "Intel Xeon", "cpu_count": 2, "gpus": []}])
    assert other["mixed"] and len(other["machines"]) == 2
