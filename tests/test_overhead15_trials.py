"""Cheap trials on the local backend: what a trial costs the run, counted on real runs.

A trial's ending is one ledger transaction with what it reported (metric points, its test
evaluation), its config reads and its compute record, so a short trial costs the run two
commits (its claim and its ending), and a worker imports nothing more after its first trial.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import event

from fairtrial import recorder
from fairtrial.backends import InlineBackend, LocalBackend
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

TASK = """
import numpy as np

from fairtrial import Task


def make():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    return Task.from_arrays("tiny", x, (x[:, 0] > 0).astype(np.int64))
"""

RECIPE = """
import os
import sys

import numpy as np


def train(config, ctx):
    ctx.log(step=0, modules=len(sys.modules), pid=os.getpid(), lr=config["lr"])
    ctx.log(step=1, loss=0.5)
    rng = ctx.rng("init")
    ctx.evaluate_test(rng.integers(0, 2, size=len(ctx.data.x_test)))
"""


def _spec(folder: Path, seeds: int) -> Any:
    (folder / "tiny_task.py").write_text(TASK)
    (folder / "tiny_recipe.py").write_text(RECIPE)
    path = folder / "tiny.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [experiment]
            name = "tiny"
            task = "tiny_task:make"
            recipe = "tiny_recipe:train"
            seeds = {seeds}

            [baseline]
            lr = 0.1
            """
        )
    )
    return load_spec(path)


def _run(folder: Path, seeds: int, backend: Any) -> tuple[Ledger, Any, list[str]]:
    """Run the experiment into a fresh ledger; returns it, the spec and each commit's label
    (the statements of that transaction that wrote)."""
    spec = _spec(folder, seeds)
    ledger = Ledger(folder / "ledger.db")
    commits: list[str] = []
    writes: list[str] = []

    def on_execute(conn: Any, clause: Any, *args: Any) -> None:
        text = str(clause).split(None, 3)
        if text and text[0] in ("INSERT", "UPDATE", "DELETE"):
            writes.append(" ".join(text[:3]))

    def on_commit(conn: Any) -> None:
        commits.append("; ".join(writes))
        writes.clear()

    event.listen(ledger.engine, "before_execute", on_execute)
    event.listen(ledger.engine, "commit", on_commit)
    summary = run_experiment(
        spec, ledger, backend, console=Console(file=io.StringIO()), show_progress=False
    )
    assert summary.finished == seeds, summary.failures
    return ledger, spec, commits


def _contents(ledger: Ledger, eid: str) -> dict[str, Any]:
    """What a user reads of a run, without times and ids that differ from run to run."""
    trials = ledger.trials(eid)
    ids = [t.id for t in trials]
    varies = ("pid", "modules")  # the process, and what it had imported
    return {
        "trials": [(t.arm, t.seed, t.status, t.attempt, t.result, t.error) for t in trials],
        "metrics": {
            t.seed: [(a, s, n, v) for a, s, _, n, v in ledger.metrics(t.id) if n not in varies]
            for t in trials
        },
        "tests": sorted(
            (e["trial_id"], e["attempt"], e["score"], e["predictions_sha256"])
            for e in ledger.test_evaluations(eid)
        ),
        "log": ledger.check_chain("test_log").entries,
        "attempts": sorted(
            (a["trial_id"], a["attempt"], a["status"]) for a in ledger.attempts(ids)
        ),
        "compute": sorted((k, v["status"]) for k, v in ledger.compute(eid).items()),
        "reads": ledger.config_reads(eid),
    }


@pytest.fixture
def quiet_lease(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # no heartbeat during the run (its renewals are commits too), and a hold long enough that
    # a loaded machine never flushes a trial's events before its ending arrives
    monkeypatch.setenv("FAIRTRIAL_LEASE", "86400")
    monkeypatch.setattr(recorder, "HOLD_SECONDS", 600.0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("quiet_lease")
def test_a_local_trial_costs_two_commits_and_writes_what_inline_writes(tmp_path: Path) -> None:
    seeds = 6
    (tmp_path / "local").mkdir()
    (tmp_path / "inline").mkdir()
    ledger, spec, commits = _run(tmp_path / "local", seeds, LocalBackend(workers=2, threads=1))
    claims = [c for c in commits if c == "UPDATE trials SET"]
    endings = [c for c in commits if "INSERT INTO trial_attempts" in c]
    # a claim is its own commit; an ending carries its trial's config reads and compute
    # record, and the events held until then (metric points, test evaluations with their
    # test log entries): its trial's, and those of a trial on the other worker that reported
    # them but has not ended yet. Events are never a commit of their own.
    assert len(claims) == seeds and len(endings) == seeds
    for ending in endings:
        assert "INSERT INTO trial_config_reads" in ending and "INSERT INTO trial_compute" in ending
    for table in ("metrics", "test_evaluations", "test_log"):
        assert all(f"INSERT INTO {table}" not in c for c in commits if c not in endings)
    # nothing else was written per trial: the other commits are the run's set-up
    per_trial = set(claims) | set(endings)
    setup = [c for c in commits if c not in per_trial]
    assert len(setup) < 12, setup

    inline, _, _ = _run(tmp_path / "inline", seeds, InlineBackend())
    assert _contents(ledger, spec.experiment_id) == _contents(inline, spec.experiment_id)
    ledger.close()
    inline.close()


@pytest.mark.usefixtures("quiet_lease")
def test_a_worker_imports_nothing_after_its_first_trial(tmp_path: Path) -> None:
    ledger, spec, _ = _run(tmp_path, 6, LocalBackend(workers=2, threads=1))
    by_worker: dict[float, list[tuple[float, float]]] = {}
    for trial in ledger.trials(spec.experiment_id):
        points = {n: v for _, step, _, n, v in ledger.metrics(trial.id) if step == 0}
        by_worker.setdefault(points["pid"], []).append((trial.started_at or 0, points["modules"]))
    ledger.close()
    assert sum(len(v) for v in by_worker.values()) == 6
    for runs in by_worker.values():
        later = [modules for _, modules in sorted(runs)[1:]]
        assert len(set(later)) <= 1, f"modules imported per trial: {later}"


def test_held_events_are_written_when_their_time_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(recorder, "HOLD_SECONDS", 0.0)  # every event is due at once
    ledger, spec, commits = _run(tmp_path, 3, LocalBackend(workers=1, threads=1))
    # the events went in commits of their own, before their trial's ending
    assert any(c.startswith("INSERT INTO metrics") for c in commits), commits
    for trial in ledger.trials(spec.experiment_id):
        assert len(ledger.metrics(trial.id)) == 4
    assert len(ledger.test_evaluations(spec.experiment_id)) == 3
    assert ledger.check_chain("test_log").ok
    ledger.close()
