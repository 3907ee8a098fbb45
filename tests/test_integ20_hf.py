"""fairtrial.integrations.hf: the Hugging Face example (a small ViT built from its config)
trained for real with transformers.Trainer through the runner (2 arms x 2 seeds, one epoch of
17 steps); its logs, phases, FLOPs and seeds in the ledger; the seed check; the install hint."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from fairtrial import integrations  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.errors import MissingDependency, RecipeError  # noqa: E402
from fairtrial.integrations import hf  # noqa: E402
from fairtrial.meter import Meter  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402
from integ20_kit import Run, bad_recipe_spec, example, rerun  # noqa: E402

pytestmark = pytest.mark.torch

#: digits: 1078 training rows in batches of 64 (the last one has 54)
STEPS = 17

#: a recipe that gives the Trainer TrainingArguments of its own: the Trainer's default seed
FIXED_SEED = """
from types import SimpleNamespace

from transformers import TrainingArguments

import hf_recipe


def train(config, ctx):
    real = hf_recipe.hf

    def own_args(ctx, **kwargs):
        return TrainingArguments(
            output_dir=str(ctx.workdir), report_to="none", disable_tqdm=True, **kwargs
        )

    hf_recipe.hf = SimpleNamespace(
        training_args=own_args, FairtrialCallback=real.FairtrialCallback
    )
    try:
        hf_recipe.train(config, ctx)
    finally:
        hf_recipe.hf = real
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The example (2 arms x 2 seeds, one epoch), the recipe with its own TrainingArguments,
    and seed 0 of the baseline trained again outside the runner."""
    tmp = tmp_path_factory.mktemp("hf")
    spec = example("hf", tmp, seeds=2, epochs=1, batch_size=64)
    (tmp / "fixed_seed.py").write_text(FIXED_SEED)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        try:
            run = Run(spec, tmp / "ledger.db")
            fixed = Run(bad_recipe_spec(spec, "fixed_seed:train"), tmp / "fixed.db")
            sys.path.insert(0, str(tmp))
            recipe = importlib.import_module("hf_recipe")
            again = rerun(run, recipe.train, "baseline", 0, tmp / "again")
        finally:
            if str(tmp) in sys.path:
                sys.path.remove(str(tmp))
            torch.set_num_threads(before)
    yield {"run": run, "fixed": fixed, "again": again, "folder": tmp}


def test_the_example_learns_and_every_log_reaches_the_ledger(runs: dict[str, Any]) -> None:
    run: Run = runs["run"]
    assert run.summary.finished == 4
    for key, trial in run.trials.items():
        assert trial.status == "finished", (key, trial.error)
        # one epoch of a transformer built from scratch: far above chance (0.1)
        assert trial.result is not None and trial.result > 0.4
        curves = run.series[key]
        # the Trainer's logs at its global step: every logging_steps (10), the evaluation at
        # the epoch's end, the summary at the end of training
        assert [s for s, _ in curves["loss"]] == [10]
        assert [s for s, _ in curves["grad_norm"]] == [10]
        assert [s for s, _ in curves["eval_accuracy"]] == [STEPS]
        assert curves["eval_accuracy"][0][1] > 0.4
        assert [s for s, _ in curves["train_loss"]] == [STEPS]
    # no progress bars nor printed logs on stdout; the Trainer's files in the work folders
    assert run.stdout == ""
    assert sorted(p.name for p in runs["folder"].iterdir() if p.is_dir()) == [".fairtrial", "again"]
    assert list(runs["folder"].glob(".fairtrial/trials/*/baseline/0/hf_trainer"))


def test_train_and_evaluation_are_timed_apart_and_optimizer_steps_counted(
    runs: dict[str, Any],
) -> None:
    for compute in runs["run"].compute.values():
        phases = compute["phases"]
        assert phases["train"] > 0 and phases["eval"] > 0
        assert compute["train_time"] == phases["train"]
        assert compute["flops_method"] == "matmul/conv FLOPs, counted on one step"
        (step,) = compute["flops_detail"].values()
        assert step["runs"] == STEPS and step["per_run"] > 0
        assert compute["flops"] == step["per_run"] * STEPS


def test_the_trial_seeds_reach_the_trainer(runs: dict[str, Any]) -> None:
    run: Run = runs["run"]
    losses = {k: [v for _, v in c["eval_loss"]] for k, c in run.series.items()}
    assert losses[("baseline", 0)] != losses[("baseline", 1)]
    assert losses[("smoothed", 0)] != losses[("smoothed", 1)]
    # the same seed again, outside the runner: the same training, value for value
    assert runs["again"]["eval_loss"] == losses[("baseline", 0)]
    assert runs["again"]["loss"] == [v for _, v in run.series[("baseline", 0)]["loss"]]


def test_the_trainers_default_seed_fails_the_trial_with_one_line(runs: dict[str, Any]) -> None:
    fixed: Run = runs["fixed"]
    assert fixed.summary.failed >= 1 and fixed.summary.finished == 0
    for trial in fixed.trials.values():
        if trial.status == "pending":  # the run stops once a seed's trials all failed
            continue
        assert trial.status == "failed" and trial.error is not None
        assert "\n" not in trial.error
        assert trial.error.startswith(
            "RecipeError: FairtrialCallback: the Trainer's seed is 42, not this trial's ("
        )
        assert "fairtrial.integrations.hf.training_args(ctx, ...)" in trial.error


def bare_context(tmp_path: Path, meter: Meter | None = None) -> TrialContext:
    return TrialContext(
        config={}, seed=3, root_seed=0, task=get_task("digits"), emit=lambda k, p: None,
        workdir=tmp_path, meter=meter,
    )  # fmt: skip


def test_training_args_carry_the_trial_seeds_and_refuse_others(tmp_path: Path) -> None:
    ctx = bare_context(tmp_path)
    args = hf.training_args(ctx, learning_rate=0.1)
    assert args.seed == ctx.seed_for("init") % 2**32
    assert args.data_seed == ctx.seed_for("data") % 2**32
    assert args.learning_rate == 0.1 and args.report_to == []  # "none": no tracking service
    assert Path(args.output_dir) == tmp_path / "hf_trainer"
    assert args.disable_tqdm and args.save_strategy == "no"
    hf.FairtrialCallback(ctx).check_seeds(args)
    with pytest.raises(RecipeError, match=r"^training_args: 'seed' is the trial's"):
        hf.training_args(ctx, seed=42)
    with pytest.raises(RecipeError, match=r"the Trainer's data_seed is 7, not this trial's"):
        own = hf.transformers.TrainingArguments(tmp_path / "own", seed=args.seed, data_seed=7)
        hf.FairtrialCallback(ctx).check_seeds(own)


def test_the_trainers_estimate_when_counting_is_off(tmp_path: Path) -> None:
    meter = Meter()
    ctx = bare_context(tmp_path, meter)
    args = hf.training_args(ctx)
    state = hf.transformers.TrainerState()
    callback = hf.FairtrialCallback(ctx, count_flops=False)
    callback.on_train_begin(args, state, hf.transformers.TrainerControl())
    state.total_flos = 1.5e9
    callback.on_train_end(args, state, hf.transformers.TrainerControl())
    assert meter.reported_flops == (1.5e9, hf.ESTIMATE_METHOD)
    assert "train" in ctx.phases
    state.total_flos = 0
    callback.on_train_end(args, state, hf.transformers.TrainerControl())
    assert meter.flops_note is not None and "no estimate" in meter.flops_note


def test_without_transformers_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "fairtrial.integrations.hf")
    monkeypatch.setattr(integrations, "hf", hf, raising=False)
    with pytest.raises(MissingDependency) as caught:
        importlib.import_module("fairtrial.integrations.hf")
    message = str(caught.value)
    assert message.startswith("fairtrial.integrations.hf needs the 'transformers' package: ")
    assert "install" in message and "[hf]" in message
