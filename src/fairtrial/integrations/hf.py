"""The Hugging Face ``Trainer`` inside a fairtrial recipe: seeds in, metrics, phases and FLOPs out.

::

    from transformers import PrinterCallback, Trainer, set_seed
    from fairtrial.integrations import hf

    def train(config, ctx):
        args = hf.training_args(ctx, num_train_epochs=3, learning_rate=config["lr"])
        set_seed(args.seed)                       # the trial's seed, before the model is built
        model = MyModel(config)
        trainer = Trainer(
            model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
            callbacks=[hf.FairtrialCallback(ctx)],
        )
        trainer.remove_callback(PrinterCallback)  # the Trainer prints its logs on stdout
        trainer.train()
        with ctx.phase("eval"):
            ctx.evaluate_test(predict)            # the sealed test split, scored by fairtrial

:func:`training_args` builds the ``TrainingArguments`` with the trial's seeds (``seed`` from
its "init" stream, ``data_seed`` from its "data" stream: the same batches for every arm of a
seed), the Trainer's files in the trial's work folder, no checkpoints unless asked for, no
reporting to a tracking service and no progress bars.

:class:`FairtrialCallback` does, with no other change to the training code:

* **metrics** - every log event of the Trainer (``on_log``: each ``logging_steps``, each
  evaluation, the end of training) is one ``ctx.log`` point at ``state.global_step``, scalars
  only;
* **phases** - ``train`` from the start of training to its end, less the evaluations run
  during it, which are ``eval``;
* **FLOPs** - the matmul/conv FLOPs of the first optimizer step (its forward and backward
  passes, accumulated micro-batches included), counted with ``torch.utils.flop_counter``, times
  the optimizer steps; with ``count_flops=False``, the Trainer's own estimate
  (``total_flos``: 6 x parameters x tokens, attention left out) instead;
* **seeds** - when training begins it checks that the Trainer's ``seed`` and ``data_seed``
  are the trial's, and fails the trial with one line if not: a recipe that gives the Trainer
  a constant seed (its default is 42) would train the same model on every seed.

Importing this module imports ``transformers`` (the ``hf`` extra, with ``accelerate``).
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
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
    from fairtrial.context import TrialContext

__all__ = ["FairtrialCallback", "training_args"]

try:
    transformers: Any = importlib.import_module("transformers")
except ModuleNotFoundError as exc:
    if exc.name != "transformers":
        raise  # installed, but something it imports is missing: say that, not this
    raise MissingDependency("transformers", "hf", "fairtrial.integrations.hf") from None

#: the Trainer's estimate, reported when counting is off
ESTIMATE_METHOD = (
    "the Hugging Face Trainer's estimate (total_flos: 6 x parameters x tokens, attention left out)"
)
#: what training_args sets unless the recipe says otherwise
DEFAULTS: dict[str, Any] = {
    "report_to": "none",  # the ledger is where the metrics go
    "disable_tqdm": True,
    "save_strategy": "no",  # checkpoints only when asked for (they go to the work folder)
}


def work_folder(ctx: TrialContext) -> Path:
    """The trial's folder for the Trainer's files (a temporary one for a bare context)."""
    if ctx.workdir is not None:
        return Path(ctx.workdir) / "hf_trainer"
    return Path(tempfile.mkdtemp(prefix="fairtrial-hf-"))


def training_args(ctx: TrialContext, **kwargs: Any) -> Any:
    """``transformers.TrainingArguments(**kwargs)`` seeded from the trial.

    ``seed`` is the trial's "init" stream (the Trainer seeds Python, numpy and torch with it
    when it is built), ``data_seed`` its "data" stream (the order of the training batches);
    ``output_dir`` defaults to ``hf_trainer`` in the trial's work folder, ``report_to`` to
    ``"none"``, ``save_strategy`` to ``"no"`` and ``disable_tqdm`` to True. Any other
    argument is the recipe's; passing ``seed`` or ``data_seed`` is an error.
    """
    for key, stream in (("seed", "init"), ("data_seed", "data")):
        if key in kwargs:
            raise RecipeError(
                f"training_args: '{key}' is the trial's (its '{stream}' stream), the same "
                f"for every arm of a seed; drop {key}={kwargs[key]!r}"
            )
    settings = {**DEFAULTS, "output_dir": str(work_folder(ctx)), **kwargs}
    return transformers.TrainingArguments(
        seed=framework_seed(ctx, "init"), data_seed=framework_seed(ctx, "data"), **settings
    )


class FairtrialCallback(transformers.TrainerCallback):  # type: ignore[misc]
    """The Trainer's logs, phases and training FLOPs to the trial; its seeds checked.

    Args:
        ctx: the trial's context.
        count_flops: count the FLOPs of the optimizer steps with torch's counter (``False``:
            report the Trainer's ``total_flos`` estimate instead).
    """

    def __init__(self, ctx: TrialContext, *, count_flops: bool = True) -> None:
        self.ctx = ctx
        self.count_flops = count_flops
        self._phases = Phases(ctx)
        self._flops = StepFlops(ctx, "train_step")

    def check_seeds(self, args: Any) -> None:
        """Raise RecipeError unless the Trainer's seed and data seed are the trial's."""
        allowed = trial_seeds(self.ctx)
        for key, value, stream in (
            ("seed", args.seed, "init"),
            ("data_seed", args.data_seed, "data"),
        ):
            if value is None or value in allowed:  # no data_seed: the Trainer uses its seed
                continue
            raise RecipeError(
                f"FairtrialCallback: the Trainer's {key} is {value}, not this trial's "
                f"({framework_seed(self.ctx, stream)}, its '{stream}' stream): build the "
                "TrainingArguments with fairtrial.integrations.hf.training_args(ctx, ...), or "
                "every seed trains the same model"
            )

    # -- the training run -----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.check_seeds(args)
        self._phases.enter("train")
        if args.eval_on_start:
            self._phases.enter("eval")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flops.abandon()
        self._phases.close()
        meter = self.ctx.meter
        if self.count_flops or meter is None:
            return
        if state.total_flos:
            meter.report_flops(float(state.total_flos), ESTIMATE_METHOD)
        else:
            meter.flops_not_counted(
                "counting was off (FairtrialCallback(count_flops=False)) and the model gives "
                "the Trainer no estimate (floating_point_ops)"
            )

    # -- FLOPs: an optimizer step is its micro-batches' forward and backward, and the update --
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.count_flops:
            self._flops.begin()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._flops.end()
        if control.should_evaluate:  # the Trainer evaluates next, then calls on_evaluate
            self._phases.enter("eval")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_evaluate:
            self._phases.enter("eval")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._phases.leave("eval")

    # -- metrics --------------------------------------------------------------------------------
    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        values = scalars(logs or {})
        if values:
            self.ctx.log(state.global_step, **values)
