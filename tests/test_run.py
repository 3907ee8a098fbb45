"""Real runs: worker processes, crash isolation, pairing, determinism, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import toy_spec
from fairtrial.backends import InlineBackend, LocalBackend
from fairtrial.ledger import Ledger
from fairtrial.runner import RunSummary, run_experiment
from fairtrial.spec import Spec, load_spec

ARMS = """
[arms.noisy]
noise = 0.3
"""


def first_metrics(ledger: Ledger, trial_id: str) -> dict[str, float]:
    return {name: v for _, step, _, name, v in ledger.metrics(trial_id) if step == 0}


def test_local_run_stores_every_trial_paired_by_seed(
    write_spec: Callable[..., Path], ledger: Ledger
) -> None:
    spec = load_spec(write_spec(toy_spec(arms=ARMS, seeds=3)))
    summary = run_experiment(spec, ledger, LocalBackend(workers=2), show_progress=False)
    assert (summary.ran, summary.finished, summary.failed) == (6, 6, 0)
    trials = ledger.trials(spec.experiment_id)
    assert len(trials) == 6 and all(t.status == "finished" for t in trials)
    assert all(t.attempt == 1 and t.task_checksum == spec.task_checksum for t in trials)
    by = {(t.arm, t.seed): t for t in trials}
    for seed in range(3):
        base = first_metrics(ledger, by["baseline", seed].id)
        noisy = first_metrics(ledger, by["noisy", seed].id)
        # common random numbers: same data order, same init draw, same global draws per seed
        assert base == noisy
        assert 0.5 < by["baseline", seed].result <= 1.0  # type: ignore[operator]
    orders = {first_metrics(ledger, by["baseline", s].id)["first_index"] for s in range(3)}
    assert len(orders) == 3, "different seeds give different data orders"
    # the noisy arm really differs, so the pairing above is not trivially true
    assert [by["noisy", s].result for s in range(3)] != [by["baseline", s].result for s in range(3)]
    # a second run has nothing to do
    again = run_experiment(spec, ledger, LocalBackend(workers=2), show_progress=False)
    assert again.ran == 0 and again.already_done == 6
    # every finished trial wrote exactly one test evaluation, with its predictions
    evals = ledger.test_evaluations(spec.experiment_id)
    assert len(evals) == 6 and all(len(e["predictions"]) == 360 for e in evals)
    prov = ledger.provenance(trials[0].provenance_id or "")
    assert prov["python"] and prov["packages"]["numpy"] and prov["cpu_count"]
    assert prov["run"]["backend"] == "local"


def test_same_trial_twice_gives_identical_metrics(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = load_spec(write_spec(toy_spec(arms=ARMS, seeds=2)))
    results = []
    for i, backend in enumerate(
        [LocalBackend(workers=2), InlineBackend(), LocalBackend(workers=1)]
    ):
        led = Ledger(tmp_path / f"l{i}.db")
        run_experiment(spec, led, backend, show_progress=False)
        results.append(
            [
                (t.id, t.result, [(m[1], m[3], m[4]) for m in led.metrics(t.id)])
                for t in led.trials(spec.experiment_id)
            ]
        )
    assert results[0] == results[1] == results[2]


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Any:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


def test_failures_are_isolated_and_recorded(
    write_spec: Callable[..., Path], sqlite_ledger: Ledger
) -> None:
    """Every way a trial can end, on SQLite (the ledger's statements are the same on
    PostgreSQL, where the other run tests write them)."""
    ledger = sqlite_ledger
    arms = """
    [arms.raises]
    mode = "raise"
    [arms.segfaults]
    mode = "segfault"
    [arms.killed]
    mode = "kill"
    [arms.hangs]
    mode = "hang"
    [arms.diverges]
    mode = "nan"
    [arms.silent]
    mode = "no_test"
    """
    # 10 s: a fresh worker loads the task inside the limit, seconds on a busy 2-core machine
    spec = load_spec(write_spec(toy_spec(seeds=2, arms=arms, extra="time_limit = 10")))
    assert spec.max_retries == 2  # the default
    summary = run_experiment(spec, ledger, LocalBackend(workers=2), show_progress=False)
    assert summary.ran == 14
    # killed and segfaulting workers lose their trial: each is retried twice, then failed
    assert summary.retried == 2 * 2 * 2
    by = {(t.arm, t.seed): t for t in ledger.trials(spec.experiment_id)}
    for seed in range(2):
        assert by["baseline", seed].status == "finished"
        assert by["raises", seed].status == "failed"
        assert by["raises", seed].attempt == 1, "a recipe that raised is not retried"
        assert by["raises", seed].error == "ValueError: boom from the recipe"
        assert "Traceback" in (by["raises", seed].error_detail or "")
        assert by["segfaults", seed].status == "failed"
        assert by["segfaults", seed].error == "worker killed by SIGSEGV (gave up after 3 attempts)"
        assert by["killed", seed].error == "worker killed by SIGKILL (gave up after 3 attempts)"
        assert by["killed", seed].attempt == by["segfaults", seed].attempt == 3
        assert by["hangs", seed].error == "time limit of 10 s exceeded"
        assert by["hangs", seed].attempt == 1, "a trial past its time limit is not retried"
        assert by["diverges", seed].status == "diverged"
        assert "metric 'loss' became nan" in (by["diverges", seed].error or "")
        assert "never called ctx.evaluate_test" in (by["silent", seed].error or "")
    # points flushed before the worker was killed survive it, each attempt's under its number
    kept = [m for m in ledger.metrics(by["killed", 0].id) if m[3] == "before_kill"]
    assert [(m[0], m[4]) for m in kept] == [(a, float(i)) for a in (1, 2, 3) for i in range(5)]
    # failures are results: a second run does not retry them...
    assert run_experiment(spec, ledger, InlineBackend(), show_progress=False).ran == 0
    # ...unless asked to, and then as a new attempt
    spec2 = load_spec(write_spec(toy_spec(seeds=2, arms='[arms.raises]\nmode = "raise"')))
    run_experiment(spec2, ledger, InlineBackend(), show_progress=False)
    s = run_experiment(spec2, ledger, InlineBackend(), retry_failed=True, show_progress=False)
    assert s.ran == 2
    assert {t.attempt for t in ledger.trials(spec2.experiment_id) if t.arm == "raises"} == {2}


def _count(db: Path, experiment_id: str) -> int:
    led = Ledger(db)
    try:
        return sum(t.status == "finished" for t in led.trials(experiment_id))
    finally:
        led.close()


def _start_run(
    path: Path, db: Path, cwd: Path, until_finished: int
) -> tuple[list[str], subprocess.Popen[str]]:
    """Start `fairtrial run` in its own process group; return once some trials finished."""
    cmd = [sys.executable, "-m", "fairtrial.cli", "run", str(path), "--store", str(db),
           "--workers", "2", "--no-report"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    experiment_id = load_spec(path).experiment_id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db.exists() and _count(db, experiment_id) >= until_finished:
            break
        time.sleep(0.05)
    return cmd, proc


@pytest.mark.slow
def test_resume_after_sigkill_of_the_whole_run(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec(toy_spec(seeds=5, arms=ARMS).replace("sleep = 0.0", "sleep = 0.4"))
    spec = load_spec(path)
    db = tmp_path / "killed.db"
    cmd, proc = _start_run(path, db, tmp_path, until_finished=3)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-trial
    proc.wait()
    led = Ledger(db)
    before = {t.id: t for t in led.trials(spec.experiment_id)}
    done_before = {i for i, t in before.items() if t.status == "finished"}
    running = {i for i, t in before.items() if t.status == "running"}
    assert 3 <= len(done_before) < 10 and running, "killed mid-run with trials in flight"
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = {t.id: t for t in led.trials(spec.experiment_id)}
    assert len(after) == 10 and all(t.status == "finished" for t in after.values())
    for i in done_before:  # finished trials were kept, not re-run
        assert after[i].attempt == 1 and after[i].result == before[i].result
    for i in running:  # interrupted ones re-ran as a new attempt; the old points stay apart
        assert after[i].attempt == 2
        attempts = {m[0] for m in led.metrics(i)}
        assert 2 in attempts
        assert len([m for m in led.metrics(i, attempt=2) if m[1] == 0]) == 4
    assert len(led.test_evaluations(spec.experiment_id)) >= 10
    # the resumed ledger holds the same results as an uninterrupted run
    clean = Ledger(tmp_path / "clean.db")
    run_experiment(spec, clean, InlineBackend(), show_progress=False)
    assert {i: t.result for i, t in after.items()} == {
        t.id: t.result for t in clean.trials(spec.experiment_id)
    }


def test_command_recipe_in_a_subprocess(write_spec: Callable[..., Path], ledger: Ledger) -> None:
    body = """
    [experiment]
    name = "cmd"
    task = "breast_cancer"
    command = "{python} cmd_train.py --shrink {shrink} --seed {seed}"
    seeds = 2

    [baseline]
    shrink = 1.0

    [arms.shrunk]
    shrink = 0.9

    [arms.broken]
    shrink = 0.8
    """
    spec = load_spec(write_spec(body))
    summary = run_experiment(spec, ledger, LocalBackend(workers=2), show_progress=False)
    assert summary.ran == 6
    by = {(t.arm, t.seed): t for t in ledger.trials(spec.experiment_id)}
    for seed in range(2):
        t = by["baseline", seed]
        assert t.status == "finished" and 0.7 < (t.result or 0) <= 1.0
        assert [(m[1], m[3]) for m in ledger.metrics(t.id)] == [(1, "val_accuracy")]
        assert by["shrunk", seed].status == "finished"
        assert by["broken", seed].status == "failed"
        assert "command exited with status 3" in (by["broken", seed].error or "")
    # the seed reaches the command: different seeds subsample differently
    assert by["baseline", 0].result != by["baseline", 1].result or (
        ledger.metrics(by["baseline", 0].id) != ledger.metrics(by["baseline", 1].id)
    )


def _run_killing_victims(
    spec: Spec, led: Ledger, tmp_path: Path, backend: Any = None, **kw: Any
) -> RunSummary:
    """Run ``spec``, SIGKILLing the worker of each trial of arm "victim" on its first attempt."""
    workroot = tmp_path / ".fairtrial" / "trials" / spec.experiment_id / "victim"

    def killer() -> None:  # kill each victim's worker as soon as it reports its pid
        killed: set[Path] = set()
        deadline = time.monotonic() + 60
        while len(killed) < spec.seeds and time.monotonic() < deadline:
            for pidfile in workroot.glob("*/pid"):
                text = pidfile.read_text() if pidfile not in killed else ""
                if text.strip().isdigit():  # not while the worker is still writing it
                    os.kill(int(text), signal.SIGKILL)
                    killed.add(pidfile)
            time.sleep(0.02)

    th = threading.Thread(target=killer)
    th.start()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        backend = backend or LocalBackend(workers=2)
        return run_experiment(spec, led, backend, show_progress=False, **kw)
    finally:
        os.chdir(cwd)
        th.join()


def test_a_worker_killed_from_outside_is_retried_as_the_next_attempt(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = load_spec(write_spec(toy_spec(seeds=3, arms='[arms.victim]\nmode = "pidfile"\n')))
    led = Ledger(tmp_path / "w.db")
    summary = _run_killing_victims(spec, led, tmp_path)
    assert (summary.finished, summary.failed, summary.retried) == (6, 0, 3)
    by = {(t.arm, t.seed): t for t in led.trials(spec.experiment_id)}
    for seed in range(3):
        victim = by["victim", seed]
        assert (victim.status, victim.attempt) == ("finished", 2)
        # the killed attempt's points are kept under attempt 1, apart from the retry's
        assert {m[0] for m in led.metrics(victim.id) if m[3] == "before_kill"} == {1}
        assert {m[0] for m in led.metrics(victim.id)} == {1, 2}
        assert victim.result == by["baseline", seed].result  # same config apart from mode
    # one test evaluation per finished trial: no trial is counted twice
    evals = led.test_evaluations(spec.experiment_id)
    assert sorted(e["trial_id"] for e in evals) == sorted(t.id for t in by.values())


def test_with_no_retries_a_killed_worker_fails_its_trial_and_the_run_goes_on(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    arms = '[arms.victim]\nmode = "pidfile"\n'
    spec = load_spec(write_spec(toy_spec(seeds=3, arms=arms, extra="max_retries = 0")))
    led = Ledger(tmp_path / "w.db")
    summary = _run_killing_victims(spec, led, tmp_path)
    by = {(t.arm, t.seed): t for t in led.trials(spec.experiment_id)}
    assert (summary.finished, summary.failed, summary.retried) == (3, 3, 0)
    for seed in range(3):
        assert by["baseline", seed].status == "finished"
        assert by["victim", seed].error == "worker killed by SIGKILL"
        assert [m[3] for m in led.metrics(by["victim", seed].id)][-1] == "before_kill"
    # resume the killed trials: they run again as attempt 2, the attempt-1 points kept apart
    again = run_experiment(
        spec, led, LocalBackend(workers=2), retry_failed=True, show_progress=False
    )
    assert (again.ran, again.finished) == (3, 3)
    for seed in range(3):
        victim = led.trial(by["victim", seed].id)
        assert (victim.status, victim.attempt) == ("finished", 2)
        assert {m[0] for m in led.metrics(victim.id) if m[3] == "before_kill"} == {1}
        assert victim.result == by["baseline", seed].result


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec(toy_spec(seeds=4, arms=ARMS).replace("sleep = 0.0", "sleep = 0.5"))
    spec = load_spec(path)
    db = tmp_path / "int.db"
    cmd, proc = _start_run(path, db, tmp_path, until_finished=1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err and "Traceback" not in err
    led = Ledger(db)
    statuses = [t.status for t in led.trials(spec.experiment_id)]
    assert "interrupted" in statuses and "running" not in statuses
    assert subprocess.run(cmd, cwd=tmp_path, timeout=120).returncode == 0
    assert all(t.status == "finished" for t in led.trials(spec.experiment_id))
