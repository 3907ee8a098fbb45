"""Whole experiments as batched models: grouping that ignores the hand-over order, arms in
one model, and ``--backend auto`` choosing vectorized where it is safe (and saying why).

The per-seed equality of batched and lone runs is tested in tests/test_vectorized.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from fairtrial.backends import LocalBackend, choose_backend
from fairtrial.backends.vectorized import VectorizedBackend, batch_key, plan
from fairtrial.cli import cli
from fairtrial.recipes import BUILTIN_RECIPES
from fairtrial.spec import load_spec
from fairtrial.trial import TrialJob

pytestmark = pytest.mark.torch

ARMS = {
    "baseline": {"hidden": 32, "lr": 0.002},
    "fast": {"hidden": 32, "lr": 0.01, "warmup_steps": 10},  # lr, warmup: same model
    "long": {"hidden": 32, "lr": 0.002, "epochs": 40},  # epochs: same model, masked
    "wide": {"hidden": 64, "lr": 0.002},  # another shape: a model of its own
    "norm": {"hidden": 32, "lr": 0.002, "norm": "layer"},  # another code path: its own
    "default-lr": {"hidden": 32, "lr": 0.001},  # lr set to its default: same model
}


def _job(arm: str, seed: int, recipe: str = "mlp") -> TrialJob:
    return TrialJob(
        trial_id=f"{arm}/{seed}",
        experiment_id="e",
        arm=arm,
        seed=seed,
        attempt=1,
        config=dict(ARMS[arm]),
        root_seed=0,
        task="digits",
        task_checksum="x",
        metric="accuracy",
        recipe=BUILTIN_RECIPES[recipe],
    )


def _shape(groups: list[list[TrialJob]]) -> set[tuple[str, ...]]:
    return {tuple(j.trial_id for j in g) for g in groups}


def test_groups_do_not_depend_on_the_hand_over_order() -> None:
    seed_by_seed = [_job(arm, s) for s in range(5) for arm in ARMS]  # how the runner hands over
    arm_by_arm = [_job(arm, s) for arm in ARMS for s in range(5)]
    shuffled = list(seed_by_seed)
    random.Random(0).shuffle(shuffled)
    groups = plan(seed_by_seed)
    # lr, warmup, epochs and a default written out share a model; width and norm do not
    assert sorted(len(g) for g in groups) == [5, 5, 20]
    (big,) = [g for g in groups if len(g) == 20]
    # each arm is one run of seeds, in seed order, arms in the order they came
    assert [j.trial_id for j in big] == [
        f"{arm}/{s}" for arm in ("baseline", "fast", "long", "default-lr") for s in range(5)
    ]
    assert _shape(plan(arm_by_arm)) == _shape(groups)
    assert {tuple(sorted(g)) for g in _shape(plan(shuffled))} == {
        tuple(sorted(g)) for g in _shape(groups)
    }
    # --group caps a model's members
    assert sorted(len(g) for g in plan(seed_by_seed, 8)) == [4, 5, 5, 8, 8]
    # a recipe without a batched form keys by arm: one arm per group
    assert batch_key(_job("fast", 0, "logistic")) != batch_key(_job("baseline", 0, "logistic"))
    assert batch_key(_job("fast", 0)) == batch_key(_job("baseline", 0))


MLP_SPEC = """
[experiment]
name = "auto"
task = "digits"
recipe = "mlp"
seeds = 2
{extra}

[baseline]
epochs = 1
hidden = 8
lr = 0.002

[arms.fast]
lr = 0.01
"""


def test_auto_picks_vectorized_where_it_is_safe(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(MLP_SPEC.format(extra="")))
    backend, why = choose_backend(spec)
    assert isinstance(backend, VectorizedBackend)
    assert why.startswith("recipe 'fairtrial.recipes.mlp:train' has a batched form")
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (spec, {"workers": 2}, "--workers asks for worker processes"),
        (
            load_spec(write_spec(MLP_SPEC.format(extra="time_limit = 60"), name="t.toml")),
            {},
            "time_limit is enforced by stopping a worker process",
        ),
        (
            load_spec(write_spec(MLP_SPEC.format(extra="target = 0.5"), name="g.toml")),
            {},
            "target asks each trial's own time to reach it",
        ),
    ]
    for case, options, reason in cases:
        backend, why = choose_backend(case, **options)
        assert isinstance(backend, LocalBackend) and reason in why
    sk = (
        MLP_SPEC.format(extra="")
        .replace('recipe = "mlp"', 'recipe = "logistic"')
        .split("[baseline]")[0]
    )
    sk += "[baseline]\nC = 1.0\n\n[arms.weak]\nC = 0.1\n"
    backend, why = choose_backend(load_spec(write_spec(sk, name="sk.toml")))
    assert isinstance(backend, LocalBackend) and "has no batched form" in why


def test_vectorized_says_time_to_target_is_not_measured(
    write_spec: Callable[..., Path], capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fairtrial.ledger import Ledger
    from fairtrial.runner import run_experiment

    spec = load_spec(write_spec(MLP_SPEC.format(extra="target = 0.5")))
    led = Ledger(tmp_path / "t.db")
    assert run_experiment(spec, led, VectorizedBackend(threads=1), show_progress=False).finished
    led.close()
    assert "time to target is not measured for trials trained as one batched model" in (
        capfd.readouterr().err
    )


def test_run_says_which_backend_auto_chose(
    write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_spec(MLP_SPEC.format(extra=""))
    out = CliRunner().invoke(cli, ["run", str(path), "--no-report"])
    assert out.exit_code == 0, out.output
    assert "backend auto: vectorized, because recipe 'fairtrial.recipes.mlp:train'" in out.output
    # both arms (they differ in lr only) trained as one batched model
    assert "vectorized: 4 trials as 1 group(s) of 4\n" in out.output


def test_digits_loads_without_importing_sklearn_datasets() -> None:
    """Every run and every worker loads the demo's task: it reads scikit-learn's bundled CSV
    directly (seconds of scipy and pandas imports saved), and its checksum still holds."""
    import subprocess
    import sys

    code = (
        "import sys; from fairtrial.tasks import get_task; t = get_task('digits'); "
        "print(t.checksum, 'sklearn.datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from fairtrial.tasks import get_task

    assert out.stdout.split() == [get_task("digits").checksum, "False"]
