"""What ``FairtrialCallback`` costs a Lightning or Hugging Face training loop, per step.

The suite's ``integ`` section (``python bench/suite.py --only integ``), or
alone: ``python bench/integrations.py [--quick]``. The examples' own models on ``digits``
(``examples/lightning``: an MLP; ``examples/hf``: a small ViT), trained on one thread with
the same seeds, data and arguments, without and with the callback; each run's training loop
is timed from the framework's train-start hook to its train-end hook (validation included,
the Trainer's set-up left out) and divided by its optimizer steps. Without the callback the
metrics the module logs go nowhere (Lightning has no logger, the Trainer no printer); with
it they reach a ``TrialContext`` with its meter (the first step counted by
``torch.utils.flop_counter``, the phases timed). Interleaved, best of 5. Then the callback's
own per-step hooks alone, called in a loop: what it adds to a step that logs nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import Row

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: runs of each kind, interleaved; the best is kept
REPEATS = 5


def _context(workdir: Path) -> Any:
    from fairtrial.context import TrialContext
    from fairtrial.meter import Meter
    from fairtrial.tasks import get_task

    meter = Meter()
    meter.start()
    return TrialContext(
        config={}, seed=0, root_seed=0, task=get_task("digits"), emit=lambda k, p: None,
        workdir=workdir, meter=meter,
    )  # fmt: skip


def _lightning(epochs: int, with_callback: bool, workdir: Path) -> float:
    """Seconds per step of the Lightning example's loop."""
    import lightning as L
    import lit_recipe
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fairtrial.integrations import lightning as ftl

    class Clock(L.Callback):  # type: ignore[misc]
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.seconds = time.perf_counter() - self.t0

    ctx = _context(workdir)
    ftl.seed_everything(ctx)
    d = ctx.data
    model = lit_recipe.DigitsMLP(128, 0.0, 0.002)
    train = DataLoader(
        TensorDataset(*lit_recipe.tensors(d.x_train, d.y_train)), batch_size=64, shuffle=True,
        drop_last=True, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    val = DataLoader(TensorDataset(*lit_recipe.tensors(d.x_val, d.y_val)), batch_size=512)
    clock = Clock()
    callbacks = [clock, ftl.FairtrialCallback(ctx)] if with_callback else [clock]
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=5, default_root_dir=workdir,
    )  # fmt: skip
    trainer.fit(model, train, val)
    return float(clock.seconds / trainer.global_step)


def _hf(epochs: int, with_callback: bool, workdir: Path) -> float:
    """Seconds per step of the Hugging Face example's loop."""
    import hf_recipe
    from transformers import (
        PrinterCallback,
        Trainer,
        TrainerCallback,
        ViTConfig,
        ViTForImageClassification,
        set_seed,
    )

    from fairtrial.integrations import hf

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.seconds = time.perf_counter() - self.t0

    ctx = _context(workdir)
    args = hf.training_args(
        ctx, num_train_epochs=epochs, learning_rate=0.002, warmup_steps=10,
        per_device_train_batch_size=32, per_device_eval_batch_size=512, eval_strategy="epoch",
        logging_steps=10, use_cpu=True,
    )  # fmt: skip
    set_seed(args.seed)
    model = ViTForImageClassification(
        ViTConfig(
            image_size=8, patch_size=4, num_channels=1, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, num_labels=10,
        )
    )  # fmt: skip
    d = ctx.data
    clock = Clock()
    callbacks = [clock, hf.FairtrialCallback(ctx)] if with_callback else [clock]
    trainer = Trainer(
        model=model, args=args, train_dataset=hf_recipe.Digits(d.x_train, d.y_train),
        eval_dataset=hf_recipe.Digits(d.x_val, d.y_val), compute_metrics=hf_recipe.accuracy,
        callbacks=callbacks,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return float(clock.seconds / trainer.state.global_step)


def _hooks_per_step(framework: str, workdir: Path, n: int = 100_000) -> float:
    """Seconds the callback's own per-step hooks take, after the first (counted) step: its
    whole cost on a step that logs nothing."""
    ctx = _context(workdir)
    if framework == "lightning":
        from fairtrial.integrations import lightning as ftl

        lit = ftl.FairtrialCallback(ctx)

        def step() -> None:
            lit.on_train_batch_start(None, None, None, 0)
            lit.on_train_batch_end(None, None, None, None, 0)
    else:
        from types import SimpleNamespace

        from fairtrial.integrations import hf

        state, control = SimpleNamespace(global_step=1), SimpleNamespace(should_evaluate=False)
        trainer = hf.FairtrialCallback(ctx)

        def step() -> None:
            trainer.on_step_begin(None, state, control)
            trainer.on_step_end(None, state, control)

    import torch

    with torch.no_grad():
        step()  # the first step is the one FlopCounterMode counts
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def bench_integrations(quick: bool, tmp: Path) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    for name in ("lightning", "hf"):
        sys.path.insert(0, str(EXAMPLES / name))
    rows: list[Row] = []
    for label, framework, fn, epochs, steps in (
        ("Lightning, the example's MLP", "lightning", _lightning, 3 if quick else 10, 16),
        ("HF Trainer, the example's ViT", "hf", _hf, 1 if quick else 3, 34),
    ):
        fn(1, True, tmp / "warm")  # imports and first-use costs out of the measured runs
        without: list[float] = []
        with_: list[float] = []
        for i in range(REPEATS):
            # alternating which goes first, so that neither always follows the other
            for on in (False, True) if i % 2 == 0 else (True, False):
                (with_ if on else without).append(fn(epochs, on, tmp / f"{on}{i}"))
        note = f"{epochs * steps} steps, validation each epoch, 1 thread, best of {REPEATS}"
        base = min(without)
        rows.append(Row("integ", f"{label}: per step, no callback", base * 1e6, "µs", 1.0, note))
        rows.append(Row("integ", f"{label}: per step, FairtrialCallback", min(with_) * 1e6,
                        "µs", min(with_) / base, "metrics, phases, FLOPs, seed check"))  # fmt: skip
        hooks = _hooks_per_step(framework, tmp / "hooks")
        name = f"{label}: the callback's step hooks alone"
        note = "after the counted first step; best of 3 x 100,000 calls"
        rows.append(Row("integ", name, hooks * 1e9, "ns", hooks / base, note))
    return rows


if __name__ == "__main__":
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer epochs")
    quick = p.parse_args().quick
    with tempfile.TemporaryDirectory(prefix="fairtrial-bench-integrations-") as d:
        for row in bench_integrations(quick, Path(d)):
            ratio = "" if row.ratio is None else f"{row.ratio:.3f}x"
            print(f"{row.name:<52} {row.seconds:9,.0f} {row.unit}  {ratio:>7}  {row.note}")
