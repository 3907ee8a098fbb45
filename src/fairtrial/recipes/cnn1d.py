"""A small 1-D convolutional network for sequences of numbers (mnist1d).

``depth`` blocks of Conv1d -> activation -> 2x pooling, then a linear classifier on the
flattened feature map, as in the CNN baseline of MNIST-1D (Greydanus 2020, "Scaling down deep
learning", arXiv:2011.14439), which reaches about 94% there where an MLP gets about 70%:
the convolution's weight sharing is the inductive bias that a translated signal needs.

The whole recipe is in this file, top to bottom: ``Config`` (the options a spec may set), the
model ``CNN1d``, the optimizer and learning-rate schedule, ``fit`` (the epoch loop, its
evaluation on the validation split and its log points), ``train(config, ctx)``, ending with
the test predictions, and ``train_many``, all seeds of an arm as one batched model for
``--backend vectorized`` (each seed's weights bit for bit its lone run's on one CPU thread: the
convolutions run as :mod:`fairtrial.recipes._stacked` writes them). The loop is the MLP
recipe's (``mlp.py``); what every torch recipe must do the same way (seeded initial weights,
seeded batch order, chunked evaluation) comes from :mod:`fairtrial.recipes.torchkit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from fairtrial.recipes import recipe, vectorized
from fairtrial.recipes.torchkit import (
    batches,
    check_device,
    init_model,
    logits_of,
    predictor,
    steps_per_epoch,
)

if TYPE_CHECKING:
    from fairtrial.context import TrialContext
    from fairtrial.tasks import TaskData

# -------------------------------------------------------------------------------------------
# Options. A spec sets them in [baseline] and [arms.NAME]; every field's metadata holds its
# help and its range (ge/gt/le/lt). Ranges are far above what this recipe is for and low
# enough that a typo fails the spec at once instead of every trial.


@dataclass(frozen=True)
class Config:
    """Options of the 1-D CNN recipe: training first (as the MLP's), then the model."""

    # Adam by default: the usual first choice for a small network; sgd and adamw are arms.
    optimizer: Literal["sgd", "adam", "adamw"] = field(
        default="adam",
        metadata={"help": "sgd (with momentum), adam, or adamw (Adam with decoupled weight decay)"},
    )
    # 10x the MLP's: this network trains stably at 1e-2, and with the cosine decay below it
    # reaches about 94% on mnist1d instead of 83% at 1e-3.
    lr: float = field(default=1e-2, metadata={"help": "peak learning rate", "gt": 0})
    # Only SGD reads it; Adam's moving averages play its part.
    momentum: float = field(
        default=0.9,
        metadata={"help": "SGD momentum (ignored by adam/adamw)", "ge": 0, "lt": 1},
    )
    # Off by default: a regularizer is a change an arm makes, not part of the baseline.
    weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "weight decay on every parameter (L2 for sgd/adam, decoupled for adamw)",
            "ge": 0,
        },
    )
    # Equal batches (the last, incomplete one is dropped) keep every step the same shape.
    batch_size: int = field(
        default=64,
        metadata={
            "help": "examples per step; each epoch drops the last incomplete batch "
            "(0 = full batch)",
            "ge": 0,
            "le": 1_048_576,
        },
    )
    # One evaluation and one log point per epoch.
    epochs: int = field(
        default=20, metadata={"help": "passes over the training split", "ge": 1, "le": 100_000}
    )
    # Off by default; see learning_rate() for why an arm may want it.
    warmup_steps: int = field(
        default=0,
        metadata={
            "help": "steps of linear learning-rate warmup from lr/warmup_steps (0 = off)",
            "ge": 0,
            "le": 10_000_000,
        },
    )
    # Cosine by default (the MLP's is constant): the decay settles the large lr above.
    schedule: Literal["constant", "cosine"] = field(
        default="cosine",
        metadata={"help": "learning rate after warmup: constant, or cosine decay to 0 at the end"},
    )
    # Smooths the training loss only: see fit() for why val_loss is never smoothed.
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "label smoothing of the training loss (val_loss is never smoothed)",
            "ge": 0,
            "le": 1,
        },
    )
    # Model selection on the validation split; the test split is scored once, at the end.
    select: Literal["last", "best_val"] = field(
        default="last",
        metadata={"help": "weights scored on test: the last ones, or those of the best val epoch"},
    )
    # CPU by default: only there are reruns bit-identical (GPU kernels may add in any order).
    device: str = field(
        default="cpu",
        metadata={
            "help": "torch device; 'cuda' runs on a GPU (bit-identical reruns only on cpu)",
            "check": check_device,
        },
    )
    # The model.
    channels: int = field(
        default=32, metadata={"help": "feature maps of every conv layer", "ge": 1, "le": 65_536}
    )
    kernel_size: int = field(
        default=5,
        metadata={
            "help": "width of each convolution (padding keeps the length)",
            "ge": 1,
            "le": 65_536,
        },
    )
    depth: int = field(default=3, metadata={"help": "number of conv blocks", "ge": 0, "le": 1_000})
    pooling: Literal["max", "avg", "none"] = field(
        default="max",
        metadata={"help": "2x downsampling after each conv block: max, avg, or none"},
    )
    activation: Literal["relu", "gelu", "tanh"] = field(
        default="relu", metadata={"help": "nonlinearity after each convolution"}
    )


# -------------------------------------------------------------------------------------------
# The model.

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


class CNN1d(nn.Module):
    def __init__(self, length: int, n_out: int, cfg: Config) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(cfg.depth):
            layers.append(nn.Conv1d(c_in, cfg.channels, cfg.kernel_size, padding="same"))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.pooling != "none" and length >= 2:
                layers.append(nn.MaxPool1d(2) if cfg.pooling == "max" else nn.AvgPool1d(2))
                length //= 2
            c_in = cfg.channels
        # Flattening (not global pooling) keeps where a feature occurred: the classifier may
        # use the layout of the signal, as the MNIST-1D baseline does.
        layers += [nn.Flatten(), nn.Linear(c_in * length, n_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x.unsqueeze(1))  # (batch, length) -> (batch, 1, length)
        return out


# -------------------------------------------------------------------------------------------
# Optimizer, schedule, training loop (the MLP recipe's).


def make_optimizer(cfg: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` over ``params``, at the peak learning rate."""
    # Weight decay on every parameter, biases included: the plain textbook version, so that
    # an arm's weight_decay means one thing.
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def learning_rate(cfg: Config, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``: linear warmup, then schedule."""
    if step < cfg.warmup_steps:
        # Warmup: the first updates come from random weights and, for Adam, from moment
        # estimates averaged over a few batches only; small steps until both settle keep a
        # large peak lr from throwing the weights far off at the start (Goyal et al. 2017,
        # arXiv:1706.02677; Liu et al. 2020, arXiv:1908.03265).
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        # Cosine decay to 0 at the end (Loshchilov & Hutter 2017, arXiv:1608.03983,
        # without restarts): large steps early, small ones to settle at the end.
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def fit(
    cfg: Config,
    ctx: TrialContext,
    model: nn.Module,
    train_split: tuple[torch.Tensor, torch.Tensor],
    val_split: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Train ``model`` for ``cfg.epochs`` epochs, logging one point before and one per epoch.

    Each point has train_loss and train_accuracy (averaged over the epoch's batches),
    val_loss, val_accuracy and the lr of the epoch's last step. With ``select = "best_val"``
    the weights of the best epoch on val (the first one on ties) are restored at the end.
    """
    x, y = train_split
    x_val, y_val = val_split
    optimizer = make_optimizer(cfg, model.parameters())
    per_epoch = steps_per_epoch(len(y), cfg.batch_size)
    total = cfg.epochs * per_epoch
    # The batch order comes from the seed's "data" stream alone: every arm sees the same
    # batches for the same seed, whatever else it changes.
    order = batches(ctx.torch_generator("data"), len(y), cfg.batch_size)
    best_acc, best_state = -1.0, None

    def evaluate(epoch: int, train_loss: float, train_acc: float, lr: float) -> None:
        """Score the validation split, log the epoch's point, keep the best weights."""
        nonlocal best_acc, best_state
        # The validation split is what the recipe may look at to choose (select = best_val)
        # and what the curves show; the test split stays sealed until ctx.evaluate_test.
        with ctx.count_flops("eval_val"):
            logits = logits_of(model, x_val)
        val_acc = (logits.argmax(dim=1) == y_val).float().mean().item()
        ctx.log(
            step=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            # Never smoothed: val_loss is then the same measure in every arm, whatever its
            # label_smoothing (a smoothed loss has a floor above 0 that moves with it).
            val_loss=F.cross_entropy(logits, y_val).item(),
            val_accuracy=val_acc,
            lr=lr,
        )
        if cfg.select == "best_val" and val_acc > best_acc:
            best_acc = val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # Epoch 0: the initial weights, before any update, on the whole training split. Arms that
    # share a seed share these weights, so they share this point: a visible check of pairing.
    with ctx.phase("eval"):
        with ctx.count_flops("eval_train"):
            logits = logits_of(model, x)
        evaluate(
            0,
            # the training objective (smoothed, as in the steps below)
            F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing).item(),
            (logits.argmax(dim=1) == y).float().mean().item(),
            learning_rate(cfg, 0, total),
        )
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        with ctx.phase("train"):
            model.train()
            # Sums stay tensors so the loop never waits for a number until the evaluation
            # (on a GPU, .item() each step would stall it).
            loss_sum, correct = torch.zeros((), device=y.device), torch.zeros((), device=y.device)
            seen = 0
            for _ in range(per_epoch):
                lr = learning_rate(cfg, step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                idx = next(order)
                xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                # Every step has the same shapes (equal batches), so counting one is exact.
                # The optimizer's update has no matmul/conv FLOPs: it stays outside the block.
                with ctx.count_flops("train_step"):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                seen += len(yb)
                step += 1
        with ctx.phase("eval"):
            evaluate(epoch, loss_sum.item() / per_epoch, correct.item() / seen, lr)
    if best_state is not None:
        model.load_state_dict(best_state)


# -------------------------------------------------------------------------------------------
# The recipe: what fairtrial calls once per trial.


def _inputs(
    cfg: Config, d: TaskData
) -> tuple[Callable[[NDArray[Any]], torch.Tensor], tuple[torch.Tensor, ...]]:
    """``to_tensor`` (raw rows -> model inputs) and the train/val tensors."""

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        # (examples, length): the model adds the channel; torch.tensor copies the read-only rows
        rows = np.asarray(x).reshape(len(x), -1)
        return torch.tensor(rows, dtype=torch.float32, device=cfg.device)

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr = torch.tensor(d.y_train, dtype=torch.long, device=cfg.device)
    y_va = torch.tensor(d.y_val, dtype=torch.long, device=cfg.device)
    return to_tensor, (x_tr, y_tr, x_va, y_va)


def _factory(cfg: Config, d: TaskData) -> Callable[[], CNN1d]:
    """What builds one model for the task (the weights come from the caller's stream)."""
    n_classes = d.n_classes
    if n_classes is None:
        raise ValueError("the cnn1d recipe classifies: this task is a regression task (no classes)")
    length = np.asarray(d.x_train).reshape(len(d.x_train), -1).shape[1]
    return lambda: CNN1d(length, n_classes, cfg)


@recipe(Config)
def train(cfg: Config, ctx: TrialContext) -> None:
    make = _factory(cfg, ctx.data)
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, ctx.data)
    # Weights from the seed's "init" stream alone: every arm starts seed i from the same
    # weights, so differences between arms are the change, not the luck of the init.
    model = init_model(ctx, make, cfg.device)
    fit(cfg, ctx, model, (x_tr, y_tr), (x_va, y_va))
    # The test split is scored once, by fairtrial, from the predicted labels.
    with ctx.phase("eval"), ctx.count_flops("test"):
        ctx.evaluate_test(predictor(model, to_tensor))


# -------------------------------------------------------------------------------------------
# Optional: every seed of one arm as one batched model (fairtrial run --backend vectorized).


def fit_many(
    cfgs: Sequence[Config],
    ctxs: Sequence[TrialContext],
    models: Sequence[nn.Module],
    train_split: tuple[torch.Tensor, torch.Tensor],
    val_split: tuple[torch.Tensor, torch.Tensor],
) -> list[nn.Module]:
    """:func:`fit` for ``len(ctxs)`` members at once (``cfgs[i]`` is member ``i``'s config);
    returns the trained models.

    The same optimizer, schedule and log points, and each seed's own batches, in the
    vectorized backend's batched loop (:func:`fairtrial.recipes._vmap.fit_members`); members
    may differ in the options of :data:`VARIES`. The inputs get their channel here
    (``CNN1d.forward`` adds it to a lone batch), so the batched loop runs ``net`` layer by
    layer; its convolutions compute each seed as a lone one does
    (:mod:`fairtrial.recipes._stacked`).
    """
    from fairtrial.recipes._vmap import Member, fit_members

    (x, y), (x_val, y_val) = train_split, val_split
    per_epoch = steps_per_epoch(len(y), cfgs[0].batch_size)

    def member(cfg: Config) -> Member:
        total = cfg.epochs * per_epoch
        return Member(
            steps=total,
            lr_at=lambda step: learning_rate(cfg, step, total),
            optimizer=lambda params: make_optimizer(cfg, params),
            label_smoothing=cfg.label_smoothing,
            select=cfg.select,
            key=cfg,
        )

    return fit_members(
        ctxs,
        models,
        [member(cfg) for cfg in cfgs],
        (x.unsqueeze(1), y),
        (x_val.unsqueeze(1), y_val),
        batch_size=cfgs[0].batch_size,
        eval_every=per_epoch,
        step_unit=per_epoch,
        body="net",
    )


#: options that members of one batched model may differ in: they change neither a tensor's
#: shape nor the code that runs (they become per-member optimizer groups and schedules)
VARIES = (
    "lr",
    "momentum",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "epochs",
    "label_smoothing",
    "select",
)


@vectorized(train, varies=VARIES)
def train_many(cfgs: Sequence[Config], ctxs: Sequence[TrialContext]) -> None:
    """Every trial of the arms that differ only in :data:`VARIES`, as one batched model
    (``fairtrial run --backend vectorized``)."""
    from fairtrial.recipes._vmap import evaluate_tests, phase

    cfg = cfgs[0]
    make = _factory(cfg, ctxs[0].data)
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, ctxs[0].data)
    models = [init_model(ctx, make, cfg.device) for ctx in ctxs]
    trained = fit_many(cfgs, ctxs, models, (x_tr, y_tr), (x_va, y_va))
    with phase(ctxs, "eval"):
        # each seed's own model predicts, exactly as a lone run's would
        evaluate_tests(ctxs, [predictor(model, to_tensor) for model in trained])
