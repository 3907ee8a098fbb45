"""The built-in RL recipes, trained for real on environment tasks: REINFORCE in plain torch,
Stable-Baselines3's PPO and DQN. Real experiments through the runner, a SQLite ledger and the
inline backend, with small budgets and one torch thread."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

from fairtrial.backends import InlineBackend, LocalBackend, choose_backend  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.errors import MissingDependency, RecipeError, SpecError  # noqa: E402
from fairtrial.ledger import Ledger  # noqa: E402
from fairtrial.runner import run_experiment  # noqa: E402
from fairtrial.spec import load_spec  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402

pytestmark = pytest.mark.torch

SPEC = """
[experiment]
name = "{name}"
task = "{task}"
recipe = "{recipe}"
seeds = {seeds}

[baseline]
{baseline}
"""
#: a budget on which REINFORCE's greedy policy already keeps the pole up well beyond chance
REINFORCE = "total_steps = 2000"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Run:
    """A finished experiment: per seed, its trial row, logged points, episodes and compute."""

    def __init__(self, spec_path: Path, store: Path) -> None:
        self.spec = load_spec(spec_path)
        ledger = Ledger(store)
        try:
            self.summary = run_experiment(self.spec, ledger, InlineBackend(), show_progress=False)
            eid = self.spec.experiment_id
            self.trials = {t.seed: t for t in ledger.trials(eid)}
            self.points = {
                t.seed: [(m[1], m[3], m[4]) for m in ledger.metrics(t.id)]
                for t in self.trials.values()
            }
            by_id = {t.id: t.seed for t in self.trials.values()}
            self.episodes = {by_id[e["trial_id"]]: e for e in ledger.test_evaluations(eid)}
            self.compute = {by_id[k]: v for k, v in ledger.compute(eid).items()}
        finally:
            ledger.close()

    def curve(self, seed: int) -> list[tuple[int, float]]:
        return [(step, v) for step, name, v in self.points[seed] if name == "train_return"]


def experiment(
    write_spec: Callable[..., Path],
    tmp_path: Path,
    name: str,
    recipe: str,
    baseline: str,
    *,
    task: str = "cartpole",
    seeds: int = 2,
) -> Run:
    body = SPEC.format(name=name, task=task, recipe=recipe, seeds=seeds, baseline=baseline)
    return Run(write_spec(body, f"{name}.toml"), tmp_path / f"{name}.db")


@pytest.fixture(scope="module")
def reinforce_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """REINFORCE on cartpole (2 seeds) and the hand-written random policy of
    tests/recipes/rl19.py (2 seeds)."""
    tmp = tmp_path_factory.mktemp("reinforce")
    for src in (Path(__file__).parent / "recipes").glob("*.py"):
        (tmp / src.name).write_text(src.read_text())
    out = {}
    for name, recipe, baseline in (
        ("learned", "reinforce", REINFORCE),
        ("random", "rl19:cartpole", 'mode = "random"'),
    ):
        path = tmp / f"{name}.toml"
        path.write_text(
            SPEC.format(name=name, task="cartpole", recipe=recipe, seeds=2, baseline=baseline)
        )
        out[name] = Run(path, tmp / f"{name}.db")
    return out


def test_reinforce_learns_to_keep_the_pole_up_longer_than_a_random_policy(
    reinforce_runs: dict[str, Run],
) -> None:
    learned, random = reinforce_runs["learned"], reinforce_runs["random"]
    assert learned.summary.finished == 2 and random.summary.finished == 2
    random_mean = float(np.mean([t.result for t in random.trials.values()]))
    assert 15 < random_mean < 30  # CartPole's random policy: about 22 steps
    for seed, trial in learned.trials.items():
        assert trial.status == "finished" and trial.result is not None
        assert trial.result > 1.5 * random_mean, (seed, trial.result, random_mean)
        # the result is the mean return of the task's 100 evaluation episodes
        episodes = learned.episodes[seed]["predictions"]
        assert len(episodes) == 100
        assert trial.result == pytest.approx(np.mean([r for r, _ in episodes]))
        curve = learned.curve(seed)
        steps = [s for s, _ in curve]
        assert len(curve) >= 3 and steps == sorted(steps) and steps[-1] <= 2000
        assert trial.phases["train"] > 0 and trial.phases["eval"] > 0
        # FLOPs: one policy forward per environment step, the update in equal chunks
        detail = learned.compute[seed]["flops_detail"]
        assert detail["act"]["runs"] == 2000 and detail["act"]["per_run"] > 0
        assert detail["update"]["runs"] >= len(curve)
    # the seeds are used: two seeds, two curves
    assert learned.curve(0) != learned.curve(1)


def test_reinforce_same_seed_gives_the_same_result_and_curve(
    reinforce_runs: dict[str, Run],
) -> None:
    """Seed 0 again, on its own (a fresh context, after other trials ran in this process):
    the same result, curve and evaluation episodes, bit for bit."""
    from fairtrial.recipes.reinforce import train

    learned = reinforce_runs["learned"]
    events: list[tuple[str, Any]] = []
    ctx = TrialContext(
        config={"total_steps": 2000},
        seed=0,
        root_seed=learned.spec.root_seed,
        task=get_task("cartpole"),
        emit=lambda kind, payload: events.append((kind, payload)),
    )
    torch.manual_seed(12345)  # whatever the global generators hold: the recipe uses its own
    np.random.seed(12345)
    train({"total_steps": 2000}, ctx)
    curve = [(s, v) for kind, p in events if kind == "metrics" for s, _, m, v in p
             if m == "train_return"]  # fmt: skip
    (test,) = [p for kind, p in events if kind == "test"]
    assert ctx.test_score == learned.trials[0].result
    assert curve == learned.curve(0)
    assert test["predictions"] == learned.episodes[0]["predictions"]


def test_reinforce_refuses_continuous_actions_in_one_line() -> None:
    ctx = TrialContext(
        config={}, seed=0, root_seed=0, task=get_task("pendulum"), emit=lambda *_: None
    )
    from fairtrial.recipes.reinforce import train

    with pytest.raises(RecipeError) as info:
        train({"total_steps": 10}, ctx)
    message = str(info.value)
    assert "\n" not in message
    assert "discrete action space" in message and "'pendulum'" in message and "Box" in message


def test_sb3_ppo_trains_two_seeds_and_is_scored_on_the_evaluation_episodes(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("stable_baselines3")
    scratch = tmp_path / "system-tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where SB3 would make its folders
    # A large learning rate: after two updates the greedy policy pushes one way and drops the
    # pole within a dozen steps, so the 100 evaluation episodes are quick (this test checks the
    # plumbing, not how well PPO learns).
    baseline = "total_timesteps = 256\nn_steps = 128\nbatch_size = 64\nn_epochs = 2\n"
    baseline += "learning_rate = 0.2"
    run = experiment(write_spec, tmp_path, "ppo", "sb3_ppo", baseline)
    assert run.summary.finished == 2
    for seed, trial in run.trials.items():
        assert trial.status == "finished"
        episodes = run.episodes[seed]["predictions"]
        assert len(episodes) == 100
        assert trial.result == pytest.approx(np.mean([r for r, _ in episodes]))
        curve = run.curve(seed)
        assert curve and all(0 < step <= 256 for step, _ in curve)
        # Monitor's returns: CartPole pays 1 a step, so a return is an episode's length
        assert all(r >= 1 and r == int(r) for _, r in curve)
        assert run.compute[seed]["flops"] is None  # SB3's own loop: not counted, and said so
        assert "Stable-Baselines3" in run.compute[seed]["flops_method"]
    assert run.curve(0) != run.curve(1)
    assert not list(scratch.glob("SB3-*"))  # no SB3-<time> folder per model


def test_sb3_dqn_runs_and_refuses_continuous_actions_in_one_line(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("stable_baselines3")
    baseline = "total_timesteps = 300\nlearning_starts = 100\nbuffer_size = 1000"
    run = experiment(write_spec, tmp_path, "dqn", "sb3_dqn", baseline)
    assert run.summary.finished == 2
    for seed, trial in run.trials.items():
        assert trial.status == "finished" and trial.result is not None
        assert len(run.episodes[seed]["predictions"]) == 100
        assert run.curve(seed)
    # pendulum's actions are continuous: the trial fails with the reason, in one line (and the
    # run stops there: every other trial would fail alike)
    box = experiment(write_spec, tmp_path, "dqn_box", "sb3_dqn", "", task="pendulum")
    failed = [t for t in box.trials.values() if t.status == "failed"]
    assert failed and not box.summary.complete
    for trial in failed:
        assert trial.error is not None and "\n" not in trial.error
        assert "sb3_dqn recipe needs a discrete action space" in trial.error
        assert "'pendulum'" in trial.error and "sb3_ppo" in trial.error


def test_missing_stable_baselines3_names_the_rl_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fairtrial.recipes.sb3 import dqn, ppo

    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # as if not installed
    for fn, name in ((ppo, "sb3_ppo"), (dqn, "sb3_dqn")):
        ctx = TrialContext(
            config={}, seed=0, root_seed=0, task=get_task("cartpole"), emit=lambda *_: None
        )
        with pytest.raises(MissingDependency, match=rf"the '{name}' recipe.*install .*\[rl\]"):
            fn({}, ctx)


def test_rl_recipes_are_listed_checked_and_run_one_trial_at_a_time(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from fairtrial.cli import main

    main(["recipes", "--format", "md"])
    listed = capsys.readouterr().out
    for option in ("`batch_episodes`", "`entropy_coef`", "`n_steps`", "`target_update_interval`",
                   "`exploration_fraction`", "`total_timesteps`"):  # fmt: skip
        assert option in listed
    for name in ("reinforce", "sb3_ppo", "sb3_dqn"):
        assert f"#### `{name}`" in listed
    # options are checked when the spec is loaded, before any trial runs
    for recipe, bad, option in (
        ("reinforce", "gamma = 1.5", "gamma"),
        ("sb3_ppo", "n_steps = 1", "n_steps"),
        ("sb3_dqn", 'policy = "LstmPolicy"', "policy"),
    ):
        body = SPEC.format(name="bad", task="cartpole", recipe=recipe, seeds=2, baseline=bad)
        with pytest.raises(SpecError, match=option):
            load_spec(write_spec(body, f"bad_{recipe}.toml"))
    # no batched form: --backend auto runs them in worker processes
    for recipe in ("reinforce", "sb3_ppo", "sb3_dqn"):
        body = SPEC.format(name=recipe, task="cartpole", recipe=recipe, seeds=2, baseline="")
        backend, why = choose_backend(load_spec(write_spec(body, f"{recipe}.toml")))
        assert isinstance(backend, LocalBackend) and "no batched form" in why
