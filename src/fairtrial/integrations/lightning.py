"""PyTorch Lightning inside a fairtrial recipe: seeds in, metrics, phases and FLOPs out.

::

    from fairtrial.integrations import lightning as ftl

    def train(config, ctx):
        ftl.seed_everything(ctx)                  # before the model is built
        model = MyLightningModule(config)
        trainer = L.Trainer(
            max_epochs=config["epochs"], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, default_root_dir=ctx.workdir,
            callbacks=[ftl.FairtrialCallback(ctx)],
        )
        trainer.fit(model, train_loader, val_loader)
        with ctx.phase("eval"):
            ctx.evaluate_test(predict)            # the sealed test split, scored by fairtrial

:class:`FairtrialCallback` does, with no other change to the training code:

* **metrics** - what the module logs with ``self.log`` reaches ``ctx.log`` at the points
  Lightning hands its loggers (every ``log_every_n_steps`` steps for step metrics, at epoch
  ends for epoch metrics), at Lightning's logging step; scalars only;
* **phases** - ``train`` from the start of fitting to its end, less the validation runs inside
  it, which are ``eval`` (as are ``trainer.validate``, ``test`` and ``predict``);
* **FLOPs** - the matmul/conv FLOPs of the first training batch, counted with
  ``torch.utils.flop_counter``, times the training batches (exact when the batches have equal
  shapes: ``drop_last=True``);
* **seeds** - when fitting starts it checks that Lightning's global seed (``PL_GLOBAL_SEED``,
  set by ``seed_everything``) is one of the trial's seeds, and fails the trial with one line if
  not: a recipe that seeds Lightning with a constant would train the same model on every seed.

Importing this module imports Lightning: ``lightning.pytorch``, or ``pytorch_lightning`` where
only that is installed (or where it was imported first and ``lightning.pytorch`` was not: the
callback must be of the package the ``Trainer`` is from).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from fairtrial.errors import MissingDependency, RecipeError
from fairtrial.integrations._common import (
    Phases,
    StepFlops,
    framework_seed,
    scalars,
    trial_seeds,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fairtrial.context import TrialContext

__all__ = ["FairtrialCallback", "seed_everything"]


def _import_lightning() -> Any:
    """``lightning.pytorch``, else ``pytorch_lightning`` (first if only it is imported yet)."""
    names = ["lightning.pytorch", "pytorch_lightning"]
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        names.reverse()
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.partition(".")[0]):
                raise  # installed, but something it imports is missing: say that, not this
    raise MissingDependency("lightning", "lightning", "fairtrial.integrations.lightning")


pl: Any = _import_lightning()
#: the package the callback is of: "lightning.pytorch" or "pytorch_lightning"
PACKAGE: str = pl.__name__


def seed_everything(ctx: TrialContext, stream: str = "init") -> int:
    """Seed Lightning (Python's, numpy's and torch's generators, and its dataloader workers)
    from the trial's ``stream``; returns the seed. Call it before building the model.

    ``seed_everything(ctx.seed_for("init"))`` would fail: a trial's seeds have 63 bits and
    Lightning accepts 32.
    """
    seed = framework_seed(ctx, stream)
    pl.seed_everything(seed, workers=True, verbose=False)
    return seed


class _Forward(pl.loggers.Logger):  # type: ignore[misc]
    """The logger that hands Lightning's logged metrics to ``ctx.log``.

    It changes no path: a checkpoint or log folder Lightning derives from its first logger
    (``save_dir/name/version``) is ``default_root_dir``, as without a logger.
    """

    def __init__(self, ctx: TrialContext, root: str) -> None:
        super().__init__()
        self._ctx = ctx
        self._root = root

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._root

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        values = scalars(metrics)
        if values:
            self._ctx.log(step, **values)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None  # the arm's config is in the ledger already


class FairtrialCallback(pl.Callback):  # type: ignore[misc]
    """Lightning's metrics, phases and training FLOPs to the trial; its seed checked.

    Args:
        ctx: the trial's context.
        count_flops: count the FLOPs of the training batches (``False``: the compute record
            says they were not counted, and why).
    """

    def __init__(self, ctx: TrialContext, *, count_flops: bool = True) -> None:
        super().__init__()
        self.ctx = ctx
        self.count_flops = count_flops
        self._phases = Phases(ctx)
        self._flops = StepFlops(ctx, "train_step")
        self._logger: _Forward | None = None

    # -- setup: the seed check and the logger ---------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self.check_seed()
            if not self.count_flops and self.ctx.meter is not None:
                self.ctx.meter.flops_not_counted(
                    "the recipe turned counting off (FairtrialCallback(count_flops=False))"
                )
        if self._logger is None or self._logger not in trainer.loggers:
            # last, so that a logger of the recipe's stays Lightning's first (its paths)
            self._logger = _Forward(self.ctx, str(trainer.default_root_dir))
            trainer.loggers = [*trainer.loggers, self._logger]

    def check_seed(self) -> None:
        """Raise RecipeError unless Lightning's global seed is one of the trial's seeds."""
        raw = os.environ.get("PL_GLOBAL_SEED")
        try:
            if raw is not None and int(raw) in trial_seeds(self.ctx):
                return
        except ValueError:
            pass
        got = "was never set" if raw is None else f"is {raw}"
        raise RecipeError(
            f"FairtrialCallback: Lightning's global seed (PL_GLOBAL_SEED) {got}, not this "
            f"trial's ({framework_seed(self.ctx)}, its 'init' stream): call "
            "fairtrial.integrations.lightning.seed_everything(ctx) before building the model, "
            "or every seed may train the same model"
        )

    # -- phases ---------------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._phases.enter("train")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flops.abandon()
        self._phases.leave("train")

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._phases.enter("eval")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._phases.leave("eval")

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._phases.enter("eval")

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self._phases.leave("eval")

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._phases.enter("eval")

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._phases.leave("eval")

    # -- FLOPs: one training batch is forward, backward and the optimizer's step --------------
    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.count_flops:
            self._flops.begin()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._flops.end()

    # -- the end, however it comes ------------------------------------------------------------
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._flops.abandon()
        self._phases.close()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._flops.abandon()
        self._phases.close()
