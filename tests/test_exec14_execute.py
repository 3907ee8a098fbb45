"""Trial execution apart from the backends: forgetting edited user code, one trial clock."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fairtrial
import fairtrial.backends
import fairtrial.backends.base
import fairtrial.execute
import fairtrial.trial
from fairtrial.backends.base import SETUP_ALLOWANCE, TrialClock, until_first
from fairtrial.execute import execute_trial, resolve_recipe
from fairtrial.tasks import get_task
from fairtrial.trial import INTERRUPTED, TrialJob
from fairtrial.usercode import forget_modules

SRC = Path(fairtrial.__file__).parent

USER_CODE = """
import numpy as np
from fairtrial import Task

VERSION = {version}


def task():
    x = np.arange({rows} * 2, dtype=float).reshape({rows}, 2)
    return Task.from_arrays("tiny", x, (np.arange({rows}) % 3 == 0).astype(int))


def train(config, ctx):
    ctx.log(step=0, version=VERSION)
    ctx.evaluate_test(np.zeros(len(ctx.data.x_test), dtype=int))
"""


def write_module(folder: Path, name: str, version: int, rows: int = 60) -> None:
    # the size changes with every edit: a same-second edit cannot reuse a stale .pyc
    (folder / f"{name}.py").write_text(USER_CODE.format(version=version, rows=rows))


def run_trial(folder: Path, name: str) -> tuple[str, list[float]]:
    """Run one trial of ``name:train`` on ``name:task``; its status and the versions it logged."""
    task = get_task(f"{name}:task", folder)
    job = TrialJob(
        trial_id="t",
        experiment_id="x",
        arm="baseline",
        seed=0,
        attempt=1,
        config={},
        root_seed=0,
        task=f"{name}:task",
        task_checksum=task.checksum,
        metric="accuracy",
        recipe=f"{name}:train",
        base_dir=str(folder),
        meter=False,
    )
    events: list[tuple[str, Any]] = []
    outcome = execute_trial(job, lambda kind, payload: events.append((kind, payload)))
    versions = [
        v for kind, rows in events if kind == "metrics" for _, _, m, v in rows if m == "version"
    ]
    return outcome.status, versions


@pytest.fixture
def module_name() -> Iterator[str]:
    name = f"edited_{uuid.uuid4().hex[:10]}"
    yield name
    forget_modules(name)


def test_forget_modules_makes_an_edited_recipe_take_effect(
    tmp_path: Path, module_name: str
) -> None:
    write_module(tmp_path, module_name, 1)
    assert run_trial(tmp_path, module_name) == ("finished", [1.0])
    write_module(tmp_path, module_name, 22)
    # this process goes on with the code as first imported ...
    assert run_trial(tmp_path, module_name) == ("finished", [1.0])
    # ... until it forgets it
    assert forget_modules(module_name) == [module_name]
    assert module_name not in sys.modules
    assert run_trial(tmp_path, module_name) == ("finished", [22.0])


def test_forget_modules_takes_a_module_or_a_folder_and_forgets_tasks_too(
    tmp_path: Path, module_name: str
) -> None:
    write_module(tmp_path, module_name, 1, rows=60)
    first = get_task(f"{module_name}:task", tmp_path)
    fn = resolve_recipe(f"{module_name}:train", str(tmp_path))
    assert forget_modules(sys.modules[module_name]) == [module_name]
    assert resolve_recipe(f"{module_name}:train", str(tmp_path)) is not fn
    write_module(tmp_path, module_name, 1, rows=90)
    assert forget_modules(tmp_path) == [module_name]
    again = get_task(f"{module_name}:task", tmp_path)
    assert again.checksum != first.checksum and again.sizes != first.sizes
    assert forget_modules(tmp_path) == [module_name]
    assert forget_modules(tmp_path) == []  # nothing from there is left to forget


def test_forget_modules_never_forgets_fairtrial_itself() -> None:
    import fairtrial.recipes.sklearn

    for target in ("fairtrial.recipes.sklearn", "fairtrial", SRC, SRC.parent):
        assert forget_modules(target) == []
    assert "fairtrial.recipes.sklearn" in sys.modules
    assert sys.modules["fairtrial.execute"] is fairtrial.execute


def test_the_old_import_paths_name_the_same_objects() -> None:
    assert fairtrial.backends.execute_trial is fairtrial.execute.execute_trial
    assert fairtrial.backends.base.TrialJob is fairtrial.trial.TrialJob is fairtrial.TrialJob
    assert fairtrial.backends.TrialOutcome is fairtrial.trial.TrialOutcome
    from fairtrial.recipes.command import build_argv

    assert build_argv("python train.py --lr {lr}", {"lr": 0.1}) == [
        "python",
        "train.py",
        "--lr",
        "0.1",
    ]


def job_with(time_limit: float | None) -> TrialJob:
    return TrialJob("t", "x", "a", 0, 1, {}, 0, "digits", "c", "accuracy", time_limit=time_limit)


def test_a_time_limit_counts_from_the_end_of_the_setup() -> None:
    clock = TrialClock.of(job_with(None), default=5.0)
    assert clock.limit == 5.0 and clock.deadline is None and not clock.expired()
    assert TrialClock.of(job_with(2.0), default=5.0).limit == 2.0
    clock.start()
    assert clock.deadline == pytest.approx(clock.started + 5.0 + SETUP_ALLOWANCE)
    before = time.monotonic()
    clock.setup_done()
    assert clock.deadline is not None
    assert before + 5.0 <= clock.deadline <= time.monotonic() + 5.0
    assert not clock.expired()
    clock.deadline = time.monotonic() - 1.0
    assert clock.expired()
    assert until_first([clock, TrialClock()]) == 0.0
    out = clock.exceeded()
    assert (out.status, out.error) == ("failed", "time limit of 5 s exceeded")
    assert out.wall_time >= 0.0


def test_without_a_time_limit_a_trial_never_expires() -> None:
    clock = TrialClock()
    clock.start()
    clock.setup_done()
    assert clock.deadline is None and not clock.expired()
    assert until_first([clock]) is None and until_first([]) is None
    out = clock.interrupted()
    assert (out.status, out.error) == ("interrupted", INTERRUPTED)


def test_backends_keep_no_timeout_logic_of_their_own() -> None:
    """Limits, wall clocks and the interrupted outcome come from one place (backends/base.py)."""
    for path in sorted((SRC / "backends").glob("*.py")):
        if path.name == "base.py":
            continue
        text = path.read_text()
        for duplicate in ("SETUP_ALLOWANCE", "time limit of", INTERRUPTED, "time_limit or"):
            assert duplicate not in text, f"{path.name} has its own {duplicate!r}"
