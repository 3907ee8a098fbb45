"""A worker's start-up (interpreter, imports, task and recipe loading) is its own record,
outside every trial's time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fairtrial import report
from fairtrial.analysis.document import analyze
from fairtrial.backends import LocalBackend
from fairtrial.backends.local import STARTUP_METHOD
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

TASK = """
import time

import numpy as np

from fairtrial import Task

BUILT = []  # when this process built the task (time.perf_counter)


def make():
    BUILT.append(time.perf_counter())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    return Task.from_arrays("startup", x, (x[:, 0] > 0).astype(np.int64))
"""

# Each trial logs how long ago its process imported the recipe and built the task. A point's
# `t` counts from the end of the trial's setup phase, so its clock (wall time, compute record)
# started `t + setup` before the point: age > t + setup means it happened before the trial.
RECIPE = """
import time

import numpy as np

IMPORTED = time.perf_counter()


def train(config, ctx):
    import startup_task

    now = time.perf_counter()
    ctx.log(step=0, recipe_age=now - IMPORTED, task_age=now - startup_task.BUILT[-1])
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int) + config["shift"])
"""

SPEC = """
[experiment]
name = "startup"
task = "startup_task:make"
recipe = "startup_recipe:train"
seeds = 2

[baseline]
shift = 0

[arms.one]
shift = 1
"""


def test_the_first_trial_of_a_worker_does_not_carry_its_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "startup_task.py").write_text(textwrap.dedent(TASK))
    (tmp_path / "startup_recipe.py").write_text(textwrap.dedent(RECIPE))
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, LocalBackend(workers=2), show_progress=False)
    assert summary.finished == 4
    trials = led.trials(spec.experiment_id)
    for t in trials:  # the first trial of each worker too: nothing was loaded on its clock
        [(_, _, at, _, recipe_age), (_, _, _, _, task_age)] = sorted(
            led.metrics(t.id), key=lambda m: m[3]
        )
        started = at + t.phases["setup"]
        assert recipe_age > started and task_age > started, (t.arm, t.seed)
    records = led.compute(spec.experiment_id)
    assert all("setup" in r["phases"] for r in records.values())
    startups = [r["worker_startup"] for r in records.values() if "worker_startup" in r]
    assert len(startups) == 2  # one per worker, on its first trial's record
    for s in startups:
        assert s["method"] == STARTUP_METHOD
        assert s["interpreter_and_imports"] > 0 and s["task_and_recipe"] > 0
        assert s["seconds"] == pytest.approx(s["interpreter_and_imports"] + s["task_and_recipe"])

    analysis = analyze(led, led.experiment(spec.experiment_id))
    start = analysis.to_dict()["compute"]["worker_startup"]
    assert start["workers"] == 2 and start["method"] == STARTUP_METHOD
    assert start["total"] == pytest.approx(sum(s["seconds"] for s in startups))
    md = report.render_md(analysis)
    assert "- worker start-up: 2 worker(s), " in md
    assert "in no trial's time and no cost ratio" in md
    led.close()
