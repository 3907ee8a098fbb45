"""The per-trial meter on real trials: FLOPs, peak memory, energy counters, time-to-target."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fairtrial.backends import InlineBackend, LocalBackend, TrialJob, execute_trial
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.meter import FLOPS_METHOD, Meter, summarize_arm
from fairtrial.meter.energy import RaplReader
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec, parse_spec
from fairtrial.tasks import get_task


def run(spec_path: Path, tmp_path: Path, backend: Any = None) -> tuple[Any, Ledger]:
    spec = load_spec(spec_path)
    led = Ledger(tmp_path / "meter.db")
    run_experiment(spec, led, backend or InlineBackend(), show_progress=False)
    return spec, led


def by_arm(spec: Any, led: Ledger) -> dict[tuple[str, int], dict[str, Any]]:
    records = led.compute(spec.experiment_id)
    return {(t.arm, t.seed): records[t.id] for t in led.trials(spec.experiment_id)}


def toy(body: str, baseline: str, arms: str = "", seeds: int = 2, extra: str = "") -> str:
    return f"""
[experiment]
name = "meter"
task = "digits"
recipe = "toy:probe"
seeds = {seeds}
{extra}

[baseline]
{baseline}

{arms}
{body}
"""


# -- FLOPs ----------------------------------------------------------------------------------------
@pytest.mark.torch
def test_mlp_flops_equal_the_analytic_count(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    hidden, batch, epochs = 24, 32, 2
    path = write_spec(f"""
    [experiment]
    name = "flops"
    task = "digits"
    recipe = "mlp"
    seeds = 2

    [baseline]
    hidden = {hidden}
    depth = 2
    batch_size = {batch}
    epochs = {epochs}
    """)
    spec, led = run(path, tmp_path)
    d = get_task("digits").data()
    n_in, n_out = d.x_train.shape[1], d.n_classes
    n_train, n_val, n_test = len(d.y_train), len(d.y_val), len(d.x_test)
    layers = [(n_in, hidden), (hidden, hidden), (hidden, n_out)]
    # FlopCounterMode counts a matmul of (m x k) by (k x n) as 2*m*k*n: 2 x multiply-adds.
    macs = sum(a * b for a, b in layers)  # multiply-adds per example, forward
    forward = 2 * macs
    # backward: the weight gradient of every layer (same size as its forward matmul) and the
    # input gradient of every layer but the first (the data needs no gradient)
    backward = 2 * macs + 2 * sum(a * b for a, b in layers[1:])
    steps = epochs * (n_train // batch)
    expected = {
        "train_step": ((forward + backward) * batch, steps),
        "eval_train": (forward * n_train, 1),
        "eval_val": (forward * n_val, epochs + 1),
        "test": (forward * n_test, 1),
    }
    for record in by_arm(spec, led).values():
        assert record["flops_method"] == FLOPS_METHOD == "matmul/conv FLOPs, counted on one step"
        got = {k: (v["per_run"], v["runs"]) for k, v in record["flops_detail"].items()}
        assert got == expected
        assert record["flops"] == sum(f * n for f, n in expected.values())
        # a full step with all three matmuls of each layer is 3x the forward, less one input grad
        assert expected["train_step"][0] == 3 * forward * batch - 2 * n_in * hidden * batch


@pytest.mark.torch
def test_flop_block_counts_one_run_and_multiplies_by_runs() -> None:
    import torch

    m = Meter()
    a, b = torch.ones(4, 5), torch.ones(5, 6)
    for _ in range(3):
        with m.count_flops("mm"):
            a @ b
    with pytest.raises(RuntimeError), m.count_flops("bad"):
        raise RuntimeError("first run failed")
    with m.count_flops("bad"):
        a @ b
    blocks = {k: (v.per_run, v.runs) for k, v in m.blocks.items()}
    assert blocks == {"mm": (2 * 4 * 5 * 6, 3), "bad": (2 * 4 * 5 * 6, 1)}


@pytest.mark.torch
def test_metering_does_not_change_what_a_trial_computes(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = """
    [experiment]
    name = "same"
    task = "digits"
    recipe = "mlp"
    seeds = 2

    [baseline]
    epochs = 2
    """
    curves = []
    for i, switch in enumerate(("1", "0")):
        monkeypatch.setenv("FAIRTRIAL_METER", switch)
        spec = load_spec(write_spec(body))
        led = Ledger(tmp_path / f"same{i}.db")
        run_experiment(spec, led, InlineBackend(), show_progress=False)
        curves.append(
            [
                (t.result, [(m[1], m[3], m[4]) for m in led.metrics(t.id)])
                for t in led.trials(spec.experiment_id)
            ]
        )
    assert curves[0] == curves[1]


def test_sklearn_and_toy_recipes_say_not_counted(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec("""
    [experiment]
    name = "sk"
    task = "digits"
    recipe = "logistic"
    seeds = 2

    [baseline]
    C = 1.0
    """)
    spec, led = run(path, tmp_path)
    for record in by_arm(spec, led).values():
        assert record["flops"] is None
        assert record["flops_method"] == "not counted: scikit-learn estimators have no FLOP counter"
        assert record["gpu_memory_method"].startswith("not measured")


# -- memory ---------------------------------------------------------------------------------------
def test_peak_rss_is_the_trials_own_also_after_a_bigger_trial_in_the_same_worker(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    # seed-major order in one worker: warm-up (imports, task), 200 MB, then 80 MB, twice
    path = write_spec(
        toy(
            "",
            'mode = "alloc"\nalloc_mb = 0.0',
            "[arms.big]\nalloc_mb = 200.0\n[arms.small]\nalloc_mb = 80.0",
        )
    )
    spec, led = run(path, tmp_path, LocalBackend(workers=1))
    recs = by_arm(spec, led)
    for seed in (0, 1):
        big, small = recs["big", seed], recs["small", seed]
        assert big["status"] == small["status"] == "finished"
        assert "this trial alone" in big["peak_rss_method"]
        # The increase over the RSS at trial start is what the trial allocated; the absolute
        # peak also holds the interpreter, numpy and the task's data (~100 MB here).
        assert abs(big["peak_rss_increase"] - 200e6) <= 20e6, big["peak_rss_increase"]
        assert abs(small["peak_rss_increase"] - 80e6) <= 8e6, small["peak_rss_increase"]
        # without resetting the high-water mark the small trial would report the big one's
        assert small["peak_rss"] < big["peak_rss"] - 100e6


def test_sampling_fallback_thread_stops_even_when_the_trial_raises() -> None:
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux /proc")
    import numpy as np

    meter = Meter(rss="sample")
    meter.start()
    assert meter.sampling
    try:
        block = np.ones(int(60e6) // 8)
        threading.Event().wait(0.1)  # a few samples while the block is resident
        del block
        raise ValueError("the trial crashed")
    except ValueError:
        record = meter.record(status="failed", phases={})
    finally:
        meter.close()
    assert not meter.sampling
    assert "sampled every" in record["peak_rss_method"]
    assert record["peak_rss_increase"] >= 50e6


# -- energy ---------------------------------------------------------------------------------------
def fake_powercap(root: Path, package: int, dram: int, max_range: int = 1000) -> Path:
    """A powercap tree: one package with core and dram sub-zones, and a psys zone."""
    zones = {
        "intel-rapl:0": ("package-0", package),
        "intel-rapl:0:0": ("core", 5),
        "intel-rapl:0:1": ("dram", dram),
        "intel-rapl:1": ("psys", 7),
    }
    for name, (label, value) in zones.items():
        z = root / name
        z.mkdir(parents=True)
        (z / "name").write_text(label + "\n")
        (z / "energy_uj").write_text(f"{value}\n")
        (z / "max_energy_range_uj").write_text(f"{max_range}\n")
    return root


def test_rapl_sums_packages_and_dram_across_a_wrap(tmp_path: Path) -> None:
    root = fake_powercap(tmp_path / "powercap", package=900, dram=100, max_range=1000)
    reader = RaplReader(root)
    assert reader.start()
    (root / "intel-rapl:0" / "energy_uj").write_text("950")
    reader.poll()
    (root / "intel-rapl:0" / "energy_uj").write_text("150")  # wrapped past 1000
    (root / "intel-rapl:0:1" / "energy_uj").write_text("400")
    (root / "intel-rapl:0:0" / "energy_uj").write_text("999")  # core: inside the package
    reader.poll()
    assert reader.joules() == {"package-0": 250 / 1e6, "package-0/dram": 300 / 1e6}


def test_unreadable_counters_say_not_measured(tmp_path: Path) -> None:
    missing = RaplReader(tmp_path / "nowhere")
    assert not missing.start() and "does not exist" in (missing.error or "")
    root = fake_powercap(tmp_path / "pc", package=1, dram=1)
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable as a file, even for root
    broken = RaplReader(root)
    assert not broken.start() and "cannot read" in (broken.error or "")
    if os.geteuid() != 0:  # root reads a file whatever its mode
        root2 = fake_powercap(tmp_path / "pc2", package=1, dram=1)
        (root2 / "intel-rapl:0" / "energy_uj").chmod(0)
        denied = RaplReader(root2)
        assert not denied.start() and (denied.error or "").startswith("permission denied")


def test_trial_energy_from_a_fake_powercap_tree_with_wrap(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_powercap(tmp_path / "powercap", package=999_000, dram=0, max_range=1_000_000)
    monkeypatch.setenv("FAIRTRIAL_POWERCAP_ROOT", str(root))
    # each trial moves the package counter on by 2001 uJ across the wrap, and dram by 500 uJ:
    # the next trial starts from there, so every trial sees the same advance
    writes = [["intel-rapl:0/energy_uj", 1_000], ["intel-rapl:0:1/energy_uj", 500]]
    path = write_spec(
        toy("", f'mode = "energy"\ncounter_writes = {writes!r}'.replace("'", '"'), seeds=2)
    )
    spec, led = run(path, tmp_path)
    recs = list(by_arm(spec, led).values())
    first = recs[0]
    assert first["energy_cpu"] == pytest.approx((1_000_000 - 999_000 + 1_000 + 500) / 1e6)
    assert first["energy_cpu_domains"] == pytest.approx({"package-0": 2e-3, "package-0/dram": 5e-4})
    assert "includes other processes" in first["energy_cpu_method"]
    assert recs[1]["energy_cpu"] == 0.0  # the counters did not move during the second trial
    fig = summarize_arm(recs)["figures"]["co2e"]
    assert fig["total"] == pytest.approx(2.5e-3 / 3.6e6 * 436.0)


def test_crashed_trial_keeps_its_figures_and_stops_the_sampler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_powercap(tmp_path / "powercap", package=10, dram=0, max_range=1_000_000)
    monkeypatch.setenv("FAIRTRIAL_POWERCAP_ROOT", str(root))
    task = get_task("digits")
    job = TrialJob(
        trial_id="x/baseline/0",
        experiment_id="x",
        arm="baseline",
        seed=0,
        attempt=1,
        config={"mode": "energy_raise", "counter_writes": [["intel-rapl:0/energy_uj", 4010]]},
        root_seed=0,
        task="digits",
        task_checksum=task.checksum,
        metric="accuracy",
        recipe="toy:probe",
        base_dir=str(Path(__file__).parent / "recipes"),
    )
    out = execute_trial(job, lambda kind, payload: None)
    assert out.status == "failed" and "crash after using energy" in (out.error or "")
    assert out.compute["status"] == "failed"
    assert out.compute["energy_cpu"] == pytest.approx(4000 / 1e6)
    assert out.compute["wall_time"] > 0 and out.compute["peak_rss"] > 0
    assert not [t for t in threading.enumerate() if t.name == "fairtrial-meter"]


# -- time-to-target -------------------------------------------------------------------------------
def test_time_to_target_on_a_known_curve(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    curve = [0.5, 0.8, 0.93, 0.96, 0.97]
    path = write_spec(
        toy(
            "",
            f'mode = "curve"\ncurve = {curve}\nstep_sleep = 0.02',
            "[arms.slow]\ncurve = [0.5, 0.6, 0.7, 0.8, 0.85]",
            extra="target = 0.9",
        )
    )
    spec, led = run(path, tmp_path)
    recs = by_arm(spec, led)
    for seed in (0, 1):
        fast, slow = recs["baseline", seed], recs["slow", seed]
        assert fast["target_reached"] is True and fast["target_metric"] == "val_accuracy"
        assert fast["time_to_target_method"] == "train-phase time at the first val_accuracy >= 0.9"
        # reached at the third point: three of the five train phases (each sleeps 20 ms)
        assert 3 * 0.02 <= fast["time_to_target"] < fast["train_time"]
        phases_before = fast["train_time"] * 3 / 5
        assert fast["time_to_target"] == pytest.approx(phases_before, rel=0.5)
        assert slow["target_reached"] is False and slow["time_to_target"] is None
        assert slow["time_to_target_method"].startswith("not reached")
    ttt = summarize_arm([recs["slow", 0], recs["slow", 1], recs["baseline", 0]])
    assert not ttt["time_to_target"]["valid"]


def test_time_to_target_of_a_min_metric_set_in_compute(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec(
        toy(
            '[compute]\ntarget_metric = "val_loss"',
            'mode = "curve"\ncurve = [0.5, 0.8, 0.9, 0.95]',
            extra="target = 0.15",
        )
    )
    spec, led = run(path, tmp_path)
    # val_loss = 1 - curve: 0.5, 0.2, 0.1, so it first reaches <= 0.15 at the third point;
    # the task's metric is accuracy (max): the direction comes from the metric watched
    rec = by_arm(spec, led)["baseline", 0]
    assert rec["target_metric"] == "val_loss" and rec["target_reached"] is True
    assert rec["time_to_target_method"] == "train-phase time at the first val_loss <= 0.15"
    assert rec["time_to_target"] < rec["train_time"]


# -- command recipes, switches, spec, ledger ------------------------------------------------------
def test_command_recipe_reports_its_flops_and_its_own_cpu_and_memory(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec("""
    [experiment]
    name = "cmd"
    task = "digits"
    command = "{python} cmd_train.py --shrink {shrink} --seed {seed} --flops 12345"
    seeds = 2

    [baseline]
    shrink = 1.0
    """)
    spec, led = run(path, tmp_path)
    for rec in by_arm(spec, led).values():
        assert rec["status"] == "finished"
        assert rec["flops"] == 12345.0
        assert rec["flops_method"] == "2 x multiply-adds, counted by hand"
        assert rec["peak_rss_method"].startswith("peak RSS of the command process")
        assert 1e6 < rec["peak_rss"] < 2e9
        assert "wait4" in rec["cpu_time_method"] and rec["cpu_time"] > 0
    metrics = {m[3] for t in led.trials(spec.experiment_id) for m in led.metrics(t.id)}
    assert metrics == {"val_accuracy"}  # the compute line is not a metric


def test_metering_off_leaves_a_minimal_record(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIRTRIAL_METER", "0")
    spec, led = run(write_spec(toy("", 'mode = "ok"')), tmp_path)
    for rec in by_arm(spec, led).values():
        assert rec["partial"] == "metering was off" and rec["wall_time"] > 0
        assert "flops" not in rec


def test_lost_worker_still_gets_a_record(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec, led = run(write_spec(toy("", 'mode = "kill"')), tmp_path, LocalBackend(workers=1))
    for rec in by_arm(spec, led).values():
        assert rec["status"] == "failed" and "worker was lost" in rec["partial"]


def test_compute_table_is_validated_with_one_line_errors(write_spec: Callable[..., Path]) -> None:
    cases = {
        "pue = 0.9": "[compute] pue = 0.9: must be a number >= 1",
        "grid_intensity = -1": "[compute] grid_intensity = -1: must be a number >= 0",
        "estimate_energy = true": "[compute] estimate_energy = true: needs the watts to assume",
        "cpu_watts = 30": "[compute] cpu_watts: is only used by estimate_energy = true",
        "grid_intensty = 3": "grid_intensty: unknown key (did you mean 'grid_intensity'?)",
        "currency = 3": "[compute] currency = 3: must be a string",
    }
    for line, message in cases.items():
        text = toy(f"[compute]\n{line}", 'mode = "ok"')
        with pytest.raises(SpecError) as err:
            parse_spec(text)
        assert message in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    spec = parse_spec(toy("[compute]\npue = 1.2\ngrid_intensity = 50", 'mode = "ok"'))
    assert spec.compute == {"pue": 1.2, "grid_intensity": 50.0}
    # accounting settings do not change what the experiment is
    assert spec.experiment_id == parse_spec(toy("", 'mode = "ok"')).experiment_id


def test_ledger_keeps_the_latest_attempts_record_and_the_settings(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    spec = parse_spec(toy("[compute]\nprice_per_hour = 2", 'mode = "ok"'))
    run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert led.compute_settings(spec.experiment_id) == {"price_per_hour": 2.0}
    trial = led.trials(spec.experiment_id)[0]
    led.add_compute(trial.id, trial.attempt, {"wall_time": float("nan"), "old": 1})
    led.add_compute(trial.id, trial.attempt, {"wall_time": 1.5})  # replaces, never duplicates
    led.add_compute(trial.id, trial.attempt - 1 or 99, {"wall_time": 9.0})  # another attempt
    assert led.compute(spec.experiment_id)[trial.id] == {"wall_time": 1.5}
    assert len(led.compute(spec.experiment_id)) == 2


@pytest.mark.torch
def test_gpu_memory_and_flops_on_cuda(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path = write_spec("""
    [experiment]
    name = "gpu"
    task = "digits"
    recipe = "mlp"
    seeds = 2

    [baseline]
    epochs = 2
    device = "cuda"
    """)
    spec, led = run(path, tmp_path)
    for rec in by_arm(spec, led).values():
        assert rec["gpu_peak_allocated"] > 0
        assert rec["gpu_peak_reserved"] >= rec["gpu_peak_allocated"]
        assert rec["flops_method"] == FLOPS_METHOD and rec["flops"] > 0
