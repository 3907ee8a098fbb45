"""Environment tasks end to end: real CartPole episodes, evaluation owned by fairtrial, the
verdict paired by seed, and every way a policy can go wrong reported in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

from fairtrial.analysis.document import analyze
from fairtrial.backends import InlineBackend
from fairtrial.errors import SpecError
from fairtrial.ledger import Ledger
from fairtrial.runner import run_experiment
from fairtrial.spec import load_spec
from fairtrial.tasks import get_task

SPEC = """
[experiment]
name = "{name}"
task = "{task}"
{how}
seeds = {seeds}
{extra}

[baseline]
{baseline}

{arms}
"""


def spec(name: str, baseline: str, arms: str = "", seeds: int = 6, how: str = "",
         extra: str = "", task: str = "rl19:short_cartpole") -> str:  # fmt: skip
    return SPEC.format(
        task=task,
        name=name,
        baseline=baseline,
        arms=arms,
        seeds=seeds,
        how=how or 'recipe = "rl19:cartpole"',
        extra=extra,
    )


def test_a_balancing_policy_beats_a_random_one_on_the_same_episodes(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    path = write_spec(
        spec("hand", 'mode = "random"\neps = 0.1', '[arms.balance]\nmode = "balance"')
    )
    s = load_spec(path)
    led = Ledger(tmp_path / "l.db")
    summary = run_experiment(s, led, InlineBackend(), show_progress=False)
    assert summary.finished == 12
    doc = analyze(led, led.experiment(s.experiment_id))
    c = doc.comparison("balance")
    # 6 seeds, every one won: the exact sign-flip test's floor, 2/2^6
    assert c.verdict == "better" and c.p == pytest.approx(2 / 2**6)
    assert doc.arms["balance"].mean is not None and doc.arms["balance"].mean > 400
    assert doc.arms["baseline"].mean is not None and doc.arms["baseline"].mean < 60
    # every trial was evaluated on the task's 100 episodes, the same for both arms
    task = get_task("rl19:short_cartpole", path.parent)
    evaluations = led.test_evaluations(s.experiment_id)
    assert len(evaluations) == 12
    assert {e["task_checksum"] for e in evaluations} == {task.checksum}
    assert all(len(e["predictions"]) == 10 for e in evaluations)
    # the recipe's own environments are seeded from its env stream, never an evaluation seed
    firsts = {p[4] for t in led.trials(s.experiment_id) for p in led.metrics(t.id)}
    assert len(firsts) == 6, "one first observation per seed, the same for both arms"
    assert not set(task.eval_seeds) & {s.root_seed}
    # a bundle verifies: every result is re-scored from its recorded episodes
    from fairtrial.bundle import verify_bundle, write_bundle

    write_bundle(led, led.experiment(s.experiment_id), tmp_path / "hand.tar.gz")
    checked = verify_bundle(tmp_path / "hand.tar.gz")
    assert checked["ok"] and checked["finished"] == 12, checked["results"]
    led.close()


def test_a_policy_that_goes_wrong_fails_its_trial_in_one_line(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    arms = '[arms.bad]\nmode = "bad"\n[arms.raises]\nmode = "raise"'
    s = load_spec(write_spec(spec("wrong", 'mode = "random"', arms, seeds=2)))
    led = Ledger(tmp_path / "l.db")
    run_experiment(s, led, InlineBackend(), show_progress=False, keep_going=True)
    errors = {t.arm: t.error for t in led.trials(s.experiment_id)}
    assert errors["baseline"] is None
    assert errors["bad"] == (
        "RecipeError: the policy returned action 7 at step 0 of evaluation episode 0, outside "
        "the action space Discrete(2) (0..1)"
    )
    assert errors["raises"] == (
        "RecipeError: the policy raised ValueError('no policy here') at step 0 of evaluation "
        "episode 0"
    )
    led.close()


def test_a_command_serves_its_policy_over_stdin_and_stdout(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    how = 'command = "{python} rl19_cmd.py {mode}"'
    arms = '[arms.silent]\nmode = "silent"'
    s = load_spec(write_spec(spec("cmd", 'mode = "balance"', arms, seeds=2, how=how)))
    monkeypatch.setenv("FAIRTRIAL_ANSWER_SECONDS", "1")
    led = Ledger(tmp_path / "l.db")
    run_experiment(s, led, InlineBackend(), show_progress=False, keep_going=True)
    by = {(t.arm, t.seed): t for t in led.trials(s.experiment_id)}
    # through the protocol, the same result as the same policy run in this process
    episodes = get_task("rl19:short_cartpole", s.base_dir).evaluate(lambda o: int(o[2] > 0))
    expected = sum(r for r, _ in episodes) / len(episodes)
    assert by["baseline", 0].status == "finished" and by["baseline", 0].result == expected
    assert expected > 30, "better than a random policy's ~22"
    assert by["silent", 0].status == "failed"
    assert by["silent", 0].error == (
        "RecipeError: the command gave no action within 1 s (step 0 of evaluation episode 0): "
        'answer each observation with one line {"action": ...}'
    )
    led.close()


def test_environment_spec_errors(write_spec: Callable[..., Path]) -> None:
    body = spec("x", 'mode = "random"', task="gym:NoSuchEnv-v9")
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(body))
    msg = str(info.value)
    assert "\n" not in msg and "unknown Gymnasium environment 'NoSuchEnv-v9'" in msg
    body = spec("x", 'mode = "random"', task="gym:")
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(body))
    assert "name a Gymnasium environment, e.g. gym:CartPole-v1" in str(info.value)


def test_curves_of_seeds_that_log_at_their_own_steps_meet_on_a_grid() -> None:
    from types import SimpleNamespace

    from fairtrial.analysis import curves_from_points

    # two seeds log train_return at the environment steps where their episodes ended
    points = [("a", 0, st, "train_return", float(st)) for st in (10, 35, 80, 120, 200)]
    points += [("a", 1, st, "train_return", float(st) + 5) for st in (12, 50, 90, 190, 260)]
    exp = SimpleNamespace(metric="return", arms={"arms": [{"name": "a"}]})
    out = curves_from_points(points, exp)  # type: ignore[arg-type]
    assert out["metric"] == "train_return"
    curve = out["arms"]["a"]
    assert curve["steps"][0] == 12 and curve["steps"][-1] == 200 and curve["seeds"] == 2
    # at step 100: seed 0's last value is 80, seed 1's is 95 (logged at 90)
    i = min(range(len(curve["steps"])), key=lambda j: abs(curve["steps"][j] - 100))
    held = {0: max(s for s in (10, 35, 80, 120, 200) if s <= curve["steps"][i]),
            1: max(s for s in (12, 50, 90, 190, 260) if s <= curve["steps"][i]) + 5}  # fmt: skip
    assert curve["mean"][i] == (held[0] + held[1]) / 2


def test_an_environment_tasks_checksum_covers_its_gymnasium_version() -> None:
    import gymnasium

    from fairtrial.tasks.env import BUILTIN_ENVS, EnvTask

    task = get_task("cartpole")
    assert set(BUILTIN_ENVS) == {"cartpole", "acrobot", "mountaincar", "pendulum"}
    assert task.meta["gymnasium"] == gymnasium.__version__
    assert task.checksum == get_task("cartpole").checksum  # the same every time it is built
    # another version (here: another evaluation protocol) is another task
    assert EnvTask.make("cartpole", "CartPole-v1", episodes=99).checksum != task.checksum
    assert task.sizes == {"train": 0, "val": 0, "test": 100}
