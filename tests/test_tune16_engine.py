"""Fair tuning, end to end on real runs: the trap it must catch (a gain that came from a better
learning rate), determinism and resumption of the ask/tell driver, the sealed test split and
disjoint seeds, and the spec's errors."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fairtrial.backends import InlineBackend
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.ledger.stages import TUNING, UNTUNED
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec

pytest.importorskip("optuna")

BOWL = """
[experiment]
name = "bowl"
task = "digits"
recipe = "bowl16:train"
seeds = 3

[baseline]
lr = 0.5
width = 1.0
sleep = {sleep}

[arms.wide]
width = 2.0

[tuning]
budget = {budget}
sampler = "{sampler}"
objective = "{objective}"
seeds = {tseeds}

[tuning.space]
lr = {{ low = 1e-4, high = 1.0, log = true }}
"""


def bowl(sampler: str = "random", budget: int = 6, objective: str = "val_score",
         tseeds: int = 1, sleep: float = 0.0) -> str:  # fmt: skip
    return BOWL.format(sampler=sampler, budget=budget, objective=objective, tseeds=tseeds,
                       sleep=sleep)  # fmt: skip


def _stage(led: Ledger, eid: str, stage: str = TUNING) -> list[tuple[str, int, str, object, dict]]:
    return [(r.arm, r.seed, r.status, r.result, p) for r, p in led.stage_trials(eid, stage)]


def test_same_configurations_for_every_arm_and_disjoint_seeds(
    write_spec: Callable[..., Path], store_url: str
) -> None:
    spec = load_spec(write_spec(bowl(tseeds=2)))
    led = Ledger(store_url)
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert summary.complete and summary.tuning is not None
    assert summary.tuning.ran == 2 * 6 * 2
    eid = spec.experiment_id
    rows = led.stage_trials(eid, TUNING)
    by_arm: dict[str, dict[int, dict]] = {}
    for r, p in rows:
        by_arm.setdefault(r.arm, {})[r.seed] = p
    # random sampler, same space, same root seed: the same configurations in the same order
    assert by_arm["baseline"] == by_arm["wide"] and len(by_arm["baseline"]) == 12
    assert len({json.dumps(p) for p in by_arm["baseline"].values()}) == 6
    # the tuning seeds are the same for every arm and apart from the compared seeds
    tune_streams = {(r.arm, r.seed): tuple(sorted(r.seeds.items())) for r, _ in rows}
    assert tune_streams[("baseline", 3)] == tune_streams[("wide", 3)]
    compared = led.trials(eid)
    tuned_values = {v for r, _ in rows for v in r.seeds.values()}
    assert not tuned_values & {v for t in compared for v in t.seeds.values()}
    # the test split was never scored while tuning: the sealed log holds the compared trials
    evaluated = {e["trial_id"] for e in led.test_evaluations(eid)}
    assert evaluated == {t.id for t in compared}
    assert not evaluated & {r.id for r, _ in rows}
    # each arm's compared trials ran its best configuration (ties: the earliest asked)
    from fairtrial.analysis.document import analyze

    doc = analyze(led, led.experiment(eid))
    assert doc.tuning is not None
    for arm in ("baseline", "wide"):
        part = doc.tuning.arms[arm]
        scores = [c.score for c in part.trials]
        assert part.best is not None and part.best.score == max(scores)
        assert part.best.index == scores.index(max(scores))
        assert all(t.config["lr"] == part.best.params["lr"] for t in compared if t.arm == arm)
        assert part.curve is not None and len(part.curve.k) == 6
    assert doc.tuning.untuned == [] and doc.tuning.untuned_note
    led.close()


def test_an_arms_own_space_qmc_and_importance(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """An arm tunes a hyperparameter of its own on the same budget; importance names the one
    that matters (the score depends on lr a hundred times more than on width)."""
    text = (
        bowl(sampler="qmc", budget=16)
        + "\n[arms.wide.tuning.space]\nwidth = { low = 1.0, high = 4.0 }\n"
    )
    spec = load_spec(write_spec(text))
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert summary.complete
    eid = spec.experiment_id
    params = {(r.arm, r.seed): p for r, p in led.stage_trials(eid, TUNING)}
    assert all(set(p) == {"lr"} for (arm, _), p in params.items() if arm == "baseline")
    assert all(set(p) == {"lr", "width"} for (arm, _), p in params.items() if arm == "wide")
    from fairtrial.analysis.document import analyze

    doc = analyze(led, led.experiment(eid))
    assert doc.tuning is not None
    wide = doc.tuning.arms["wide"]
    assert wide.space["width"] == {"low": 1.0, "high": 4.0}
    assert wide.starting_points == {"width": 2.0}
    assert wide.importance is not None and set(wide.importance.values) == {"lr", "width"}
    assert wide.importance.values["lr"] > 2 * wide.importance.values["width"]
    assert wide.importance.note is None  # 16 configurations: enough to tell
    compared = {t.arm: t.config for t in led.trials(eid)}
    assert wide.best is not None and compared["wide"]["width"] == wide.best.params["width"]
    led.close()


def test_untuned_trials_that_exist_are_shown(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    """The arms at their spec values ran before (the same spec without [tuning]): the tuned
    run finds them by identity and the report puts their verdict beside the tuned one."""
    text = bowl(budget=4)
    plain = load_spec(write_spec(text.split("[tuning]")[0], name="plain.toml"))
    led = Ledger(tmp_path / "ledger.db")
    assert run_experiment(plain, led, InlineBackend(), show_progress=False).complete
    tuned = load_spec(write_spec(text))
    summary = run_experiment(tuned, led, InlineBackend(), show_progress=False)
    assert summary.untuned is not None and summary.untuned.ran == 0
    from fairtrial.analysis.document import analyze

    doc = analyze(led, led.experiment(tuned.experiment_id))
    assert doc.tuning is not None and doc.tuning.untuned_note is None
    (untuned,) = doc.tuning.untuned
    old = analyze(led, led.experiment(plain.experiment_id)).comparison("wide")
    assert (untuned.effect, untuned.verdict) == (old.effect, old.verdict)
    assert {r.id for r in led.trials(plain.experiment_id)} == {
        r.id for r, _ in led.stage_trials(tuned.experiment_id, UNTUNED)
    }
    led.close()


def test_a_command_recipe_is_tuned_on_its_logged_metric(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    text = """
    [experiment]
    name = "cmd-tuned"
    task = "digits"
    command = "{python} cmd_train.py --shrink {shrink} --seed {seed}"
    seeds = 2

    [baseline]
    shrink = 1.0

    [tuning]
    budget = 2
    objective = "val_accuracy"

    [tuning.space]
    shrink = { choices = [0.5, 1.0] }
    """
    spec = load_spec(write_spec(text))
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert summary.complete
    rows = led.stage_trials(spec.experiment_id, TUNING)
    assert len(rows) == 2 and all(r.status == "finished" for r, _ in rows)
    # the result is the logged objective; the predictions it wrote were not scored
    for r, _ in rows:
        (value,) = [m[4] for m in led.metrics(r.id) if m[3] == "val_accuracy"]
        assert r.result == value
    scored = {e["trial_id"] for e in led.test_evaluations(spec.experiment_id)}
    assert scored == {t.id for t in led.trials(spec.experiment_id)}
    led.close()


def test_objective_never_logged_stops_the_run(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = load_spec(write_spec(bowl(objective="val_acc", budget=4)))
    led = Ledger(tmp_path / "ledger.db")
    summary = run_experiment(spec, led, InlineBackend(), show_progress=False)
    assert not summary.complete
    assert summary.stopped is not None
    assert "the tuning objective 'val_acc' was never logged" in summary.stopped
    assert "train_loss, val_score" in summary.stopped
    assert led.trials(spec.experiment_id) == []  # nothing was compared
    led.close()


def _cli(spec: Path, store: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fairtrial.cli", "run", str(spec), "--backend", "inline",
         "--store", str(store), "--no-report"],
        cwd=spec.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _finished_tuning(store: Path, eid: str) -> int:
    """Finished tuning trials in ``store`` so far (0 before the run made it)."""
    if not store.exists():
        return 0
    try:
        led = Ledger(store)
    except Exception:  # being created by the run right now
        return 0
    try:
        return sum(r.status == "finished" for r, _ in led.stage_trials(eid, TUNING))
    except Exception:  # its tables not there yet
        return 0
    finally:
        led.close()


def test_killed_tuning_resumes_identical(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """SIGKILL the driver twice mid-tuning (TPE: each configuration depends on the ones
    before); the resumed run ends with the same configurations and results as one that was
    never interrupted, and runs no finished configuration again."""
    spec_path = write_spec(bowl(sampler="tpe", budget=8, sleep=0.15))
    whole = tmp_path / "whole.db"
    assert _cli(spec_path, whole).wait(300) == 0
    killed = tmp_path / "killed.db"
    # kill points: once the run has finished one more tuning trial (however slow the
    # machine), then a moment drawn at random from a fixed generator
    eid = load_spec(spec_path).experiment_id
    rng = random.Random(16)
    for _ in range(2):
        before = _finished_tuning(killed, eid)
        proc = _cli(spec_path, killed)
        deadline = time.monotonic() + 120
        while _finished_tuning(killed, eid) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    partial = Ledger(killed)
    ended = [r for r, _ in partial.stage_trials(eid, TUNING) if r.status == "finished"]
    partial.close()
    assert 0 < len(ended) < 2 * 8  # the kills landed mid-tuning
    final = _cli(spec_path, killed)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-2000:]
    a, b = Ledger(whole), Ledger(killed)
    got = _stage(b, eid)
    assert [x[:2] + x[3:] for x in got] == [x[:2] + x[3:] for x in _stage(a, eid)]
    assert {x[2] for x in got} == {"finished"}
    assert [t.result for t in b.trials(eid)] == [t.result for t in a.trials(eid)]
    # every configuration ran once: attempts past the first are only the killed ones
    attempts = b.attempts([r.id for r, _ in b.stage_trials(eid, TUNING)])
    assert sum(x["status"] == "finished" for x in attempts) == 2 * 8
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("budget = 6\n", "[tuning] budget = 1: must be a whole number from 2"),
        ('sampler = "random"\n', "[tuning] sampler = \"grid\": must be one of 'random'"),
        ("lr = { low = 1e-4, high = 1.0, log = true }", "lr.low = 0: a log range needs low > 0"),
        ("lr = { low = 1e-4, high = 1.0, log = true }", "lr: empty range: low 1 must be below"),
        ("lr = { low = 1e-4, high = 1.0, log = true }", "bogus: not an option of the baseline"),
        ("lr = { low = 1e-4, high = 1.0, log = true }", "lr.lo: unknown key; valid: low, high"),
        ("[tuning.space]", "[arms.wide.tuning.space] width: is already in [tuning.space]"),
    ],
)
def test_spec_errors(write_spec: Callable[..., Path], change: str, message: str) -> None:
    text = bowl()
    replacement = {
        "budget = 1: must": "budget = 1\n",
        'sampler = "grid"': 'sampler = "grid"\n',
        "log range": "lr = { low = 0, high = 1.0, log = true }",
        "empty range": "lr = { low = 1, high = 1 }",
        "bogus": "bogus = { low = 1, high = 2 }",
        "lr.lo": "lr = { lo = 1 }",
        "already in": "[tuning.space]\nwidth = { low = 1, high = 2 }",
    }
    new = next(v for k, v in replacement.items() if k in message)
    if "already in" in message:
        text += "\n[arms.wide.tuning.space]\nwidth = { low = 1.0, high = 3.0 }\n"
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(text.replace(change, new, 1)))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
