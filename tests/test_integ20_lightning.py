"""fairtrial.integrations.lightning: the Lightning example trained for real through the runner
(2 arms x 2 seeds, 2 epochs), its metrics, phases, FLOPs and seeds in the ledger; the seed
check; the fallback to pytorch_lightning and the install hint when Lightning is missing."""

from __future__ import annotations

import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from fairtrial import integrations  # noqa: E402
from fairtrial.context import TrialContext  # noqa: E402
from fairtrial.errors import MissingDependency, RecipeError  # noqa: E402
from fairtrial.integrations import lightning as ftl  # noqa: E402
from fairtrial.tasks import get_task  # noqa: E402
from integ20_kit import Run, bad_recipe_spec, example, rerun  # noqa: E402

pytestmark = pytest.mark.torch

ARMS = ("baseline", "dropout")
EPOCHS, BATCHES = 2, 16  # digits: 1078 training rows in batches of 64, the last one dropped

#: a recipe that seeds Lightning with a constant of its own, as many scripts do
FIXED_SEED = """
import lightning as L
from types import SimpleNamespace

import lit_recipe


def train(config, ctx):
    real = lit_recipe.ftl
    lit_recipe.ftl = SimpleNamespace(
        seed_everything=lambda ctx: L.seed_everything(42, verbose=False),
        FairtrialCallback=real.FairtrialCallback,
    )
    try:
        lit_recipe.train(config, ctx)
    finally:
        lit_recipe.ftl = real
"""


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Iterator[dict[str, Any]]:
    """The example (2 arms x 2 seeds), the recipe with a constant seed, and seed 0 of the
    baseline trained again outside the runner."""
    tmp = tmp_path_factory.mktemp("lightning")
    spec = example("lightning", tmp, seeds=2, epochs=EPOCHS)
    (tmp / "fixed_seed.py").write_text(FIXED_SEED)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # seed_everything sets them
            mp.delenv(name, raising=False)
        run = Run(spec, tmp / "ledger.db")
        fixed = Run(bad_recipe_spec(spec, "fixed_seed:train"), tmp / "fixed.db")
        sys.path.insert(0, str(tmp))
        try:
            again = rerun(
                run, importlib.import_module("lit_recipe").train, "baseline", 0, tmp / "w"
            )
        finally:
            sys.path.remove(str(tmp))
    yield {"run": run, "fixed": fixed, "again": again, "folder": tmp}


def test_the_example_trains_and_its_metrics_reach_the_ledger(runs: dict[str, Any]) -> None:
    run: Run = runs["run"]
    assert run.summary.finished == 4
    for key, trial in run.trials.items():
        assert trial.status == "finished", (key, trial.error)
        assert trial.result is not None and trial.result > 0.6  # 10 classes: chance is 0.1
        curves = run.series[key]
        # validation metrics at each epoch end, at Lightning's logging step
        assert [s for s, _ in curves["val_accuracy"]] == [s for s, _ in curves["val_loss"]]
        assert len(curves["val_accuracy"]) == EPOCHS
        assert curves["val_accuracy"][-1][1] > 0.6
        # a training step metric every log_every_n_steps (5) of the 32 steps
        assert [s for s, _ in curves["train_loss"]] == [4, 9, 14, 19, 24, 29]
    # nothing on stdout, no Lightning folders outside the trials' work folders
    assert run.stdout == ""
    assert not {"lightning_logs", "checkpoints"} & {p.name for p in runs["folder"].iterdir()}


def test_train_and_validation_are_timed_apart_and_training_flops_counted(
    runs: dict[str, Any],
) -> None:
    for compute in runs["run"].compute.values():
        phases = compute["phases"]
        assert phases["train"] > 0 and phases["eval"] > 0
        assert compute["train_time"] == phases["train"]
        assert compute["flops_method"] == "matmul/conv FLOPs, counted on one step"
        (step,) = compute["flops_detail"].values()
        assert step["runs"] == EPOCHS * BATCHES
        # forward and backward of Linear(64, 128) and Linear(128, 10) on 64 rows: 3 x 2 x MACs
        assert step["per_run"] == 3 * 2 * 64 * (64 * 128 + 128 * 10) - 2 * 64 * 64 * 128
        assert compute["flops"] == step["per_run"] * step["runs"]


def test_the_trial_seeds_reach_lightning(runs: dict[str, Any]) -> None:
    run: Run = runs["run"]
    losses = {k: [v for _, v in c["val_loss"]] for k, c in run.series.items()}
    # seeds differ; on one seed both arms start from the same weights, see the same batches
    assert losses[("baseline", 0)] != losses[("baseline", 1)]
    assert losses[("dropout", 0)] != losses[("dropout", 1)]
    # the same seed again, outside the runner: the same run, value for value
    assert runs["again"]["val_loss"] == losses[("baseline", 0)]
    assert runs["again"]["train_loss"] == [v for _, v in run.series[("baseline", 0)]["train_loss"]]


def test_a_constant_seed_fails_the_trial_with_one_line(runs: dict[str, Any]) -> None:
    fixed: Run = runs["fixed"]
    assert fixed.summary.failed >= 1 and fixed.summary.finished == 0
    for trial in fixed.trials.values():
        if trial.status == "pending":  # the run stops once a seed's trials all failed
            continue
        assert trial.status == "failed"
        assert trial.error is not None and "\n" not in trial.error
        assert trial.error.startswith(
            "RecipeError: FairtrialCallback: Lightning's global seed (PL_GLOBAL_SEED) is 42, "
            "not this trial's ("
        )
        assert "call fairtrial.integrations.lightning.seed_everything(ctx)" in trial.error


def bare_context(tmp_path: Path, seed: int = 0) -> TrialContext:
    return TrialContext(
        config={}, seed=seed, root_seed=7, task=get_task("digits"), emit=lambda k, p: None,
        workdir=tmp_path,
    )  # fmt: skip


def test_seed_everything_seeds_lightning_with_the_trial_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.delenv("PL_SEED_WORKERS", raising=False)
    ctx = bare_context(tmp_path)
    callback = ftl.FairtrialCallback(ctx)
    with pytest.raises(RecipeError, match=r"global seed \(PL_GLOBAL_SEED\) was never set"):
        callback.check_seed()
    seed = ftl.seed_everything(ctx)
    assert seed == ctx.seed_for("init") % 2**32
    assert os.environ["PL_GLOBAL_SEED"] == str(seed)
    assert os.environ["PL_SEED_WORKERS"] == "1"
    callback.check_seed()
    # another seed index's seed is not this trial's
    ftl.seed_everything(bare_context(tmp_path, seed=1))
    with pytest.raises(RecipeError, match=rf"is {ftl.framework_seed(bare_context(tmp_path, 1))}"):
        callback.check_seed()


def reimport(monkeypatch: pytest.MonkeyPatch, hidden: tuple[str, ...]) -> types.ModuleType:
    """fairtrial.integrations.lightning imported afresh with the modules ``hidden`` missing;
    the original module is back after the test."""
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fairtrial.integrations.lightning")
    monkeypatch.setattr(integrations, "lightning", ftl, raising=False)
    return importlib.import_module("fairtrial.integrations.lightning")


def test_without_lightning_pytorch_lightning_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    module = reimport(monkeypatch, ("lightning", "lightning.pytorch"))
    assert module.PACKAGE == "pytorch_lightning" and module is not ftl
    assert issubclass(module.FairtrialCallback, pl.Callback)
    # a real fit with pytorch_lightning's Trainer: metrics, phases and FLOPs reach the context
    points: list[tuple[Any, ...]] = []
    ctx = TrialContext(
        config={}, seed=0, root_seed=0, task=get_task("digits"), workdir=tmp_path,
        emit=lambda kind, rows: points.extend(rows) if kind == "metrics" else None,
    )  # fmt: skip
    module.seed_everything(ctx)

    class Tiny(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, default_root_dir=tmp_path,
        callbacks=[module.FairtrialCallback(ctx)],
    )  # fmt: skip
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    ctx.flush()
    assert [(step, name) for step, _, name, _ in points if name == "train_loss"] == [
        (0, "train_loss"),
        (1, "train_loss"),
    ]
    assert ctx.phases["train"] > 0


def test_without_lightning_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MissingDependency) as caught:
        reimport(monkeypatch, ("lightning", "lightning.pytorch", "pytorch_lightning"))
    message = str(caught.value)
    assert message.startswith("fairtrial.integrations.lightning needs the 'lightning' package: ")
    assert "install" in message and "[lightning]" in message
