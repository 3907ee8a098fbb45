"""A multilayer perceptron for classification from flat features (digits, breast_cancer, mnist1d).

The model is ``depth`` blocks of Linear -> norm -> activation -> dropout followed by a linear
classifier (``depth = 0`` is multinomial logistic regression). Norms: layer normalization
(Ba, Kiros & Hinton 2016, arXiv:1607.06450) or batch normalization (Ioffe & Szegedy 2015,
arXiv:1502.03167); dropout: Srivastava et al. (2014, JMLR 15).

Copy this file to start your own recipe. It is the whole recipe, top to bottom:

1. ``Config``: the options a spec may set, each with its default, range and help; the spec
   is checked against them before any trial runs, and ``fairtrial recipes`` lists them;
2. the model, ``MLP``, and how the task's arrays become its inputs (``_inputs``);
3. the optimizer, the learning-rate schedule, and ``fit``: the epoch loop, its evaluation on
   the validation split, its log points and the choice of the weights to score;
4. ``train(config, ctx)``, what fairtrial calls once per trial, ending with the test
   predictions;
5. ``train_many``: all seeds of the arms that differ only in learning rate, schedule, weight
   decay, epochs, ... as one batched model for ``--backend vectorized`` (optional: a copy may
   delete it, ``fit_many`` and ``VARIES``).

What every torch recipe must do the same way (seeded initial weights, seeded batch order,
chunked evaluation) comes from :mod:`fairtrial.recipes.torchkit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from fairtrial.recipes import NotVectorizable, recipe, vectorized
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
    """Options of the MLP recipe: training first, then the model."""

    # Adam by default: the usual first choice for a small network; sgd and adamw are arms.
    optimizer: Literal["sgd", "adam", "adamw"] = field(
        default="adam",
        metadata={"help": "sgd (with momentum), adam, or adamw (Adam with decoupled weight decay)"},
    )
    # The peak: the schedule below starts below it (warmup) and may decay from it (cosine).
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate", "gt": 0})
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
    # Constant by default, so that the baseline is the plainest loop.
    schedule: Literal["constant", "cosine"] = field(
        default="constant",
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
    hidden: int = field(
        default=128, metadata={"help": "width of every hidden layer", "ge": 1, "le": 65_536}
    )
    depth: int = field(
        default=2,
        metadata={"help": "number of hidden layers (0 = linear model)", "ge": 0, "le": 1_000},
    )
    activation: Literal["relu", "gelu", "tanh"] = field(
        default="relu", metadata={"help": "nonlinearity after each hidden layer"}
    )
    norm: Literal["none", "layer", "batch"] = field(
        default="none",
        metadata={"help": "normalization after each hidden linear layer: none, layer or batch"},
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "dropout probability after each hidden layer", "ge": 0, "lt": 1},
    )
    # Features on very different scales slow gradient descent down; see _inputs().
    standardize: bool = field(
        default=True,
        metadata={"help": "scale each feature to mean 0, sd 1 with TRAIN statistics only"},
    )


# -------------------------------------------------------------------------------------------
# The model and its inputs.

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


class MLP(nn.Module):
    def __init__(self, n_in: int, n_out: int, cfg: Config) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(cfg.depth):
            layers.append(nn.Linear(width, cfg.hidden))
            if cfg.norm == "layer":
                layers.append(nn.LayerNorm(cfg.hidden))
            elif cfg.norm == "batch":
                layers.append(nn.BatchNorm1d(cfg.hidden))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = cfg.hidden
        layers.append(nn.Linear(width, n_out))
        # One nn.Sequential that forward() is: the batched form stacks its layers by name.
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _inputs(
    cfg: Config, d: TaskData
) -> tuple[Callable[[NDArray[Any]], torch.Tensor], tuple[torch.Tensor, ...]]:
    """``to_tensor`` (raw rows -> model inputs) and the train/val tensors."""
    x_train = np.asarray(d.x_train, dtype=np.float32).reshape(len(d.x_train), -1)
    # Statistics of the training split only: the val and test rows must not shape the inputs
    # (that would leak what the model is scored on into what it learns from).
    mean = x_train.mean(axis=0) if cfg.standardize else np.float32(0.0)
    sd = x_train.std(axis=0) if cfg.standardize else np.float32(1.0)
    sd = np.where(sd > 1e-6, sd, 1.0)  # constant features (blank pixels) stay 0, not NaN

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        # torch.tensor copies: the task's arrays are read-only
        return torch.tensor((flat - mean) / sd, dtype=torch.float32, device=cfg.device)

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr = torch.tensor(d.y_train, dtype=torch.long, device=cfg.device)
    y_va = torch.tensor(d.y_val, dtype=torch.long, device=cfg.device)
    return to_tensor, (x_tr, y_tr, x_va, y_va)


# -------------------------------------------------------------------------------------------
# Optimizer, schedule, training loop.


def make_optimizer(cfg: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.optimizer`` over ``params``, at the peak learning rate."""
    # Weight decay on every parameter, biases and norm gains included: the plain textbook
    # version, so that an arm's weight_decay means one thing.
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


@recipe(Config)
def train(cfg: Config, ctx: TrialContext) -> None:
    d = ctx.data
    n_classes = d.n_classes
    if n_classes is None:
        raise ValueError("the mlp recipe classifies: this task is a regression task (no classes)")
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, d)
    # Weights from the seed's "init" stream alone: every arm starts seed i from the same
    # weights, so differences between arms are the change, not the luck of the init.
    model = init_model(ctx, lambda: MLP(x_tr.shape[1], n_classes, cfg), cfg.device)
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
    may differ in the options of :data:`VARIES`.
    """
    from fairtrial.recipes._vmap import Member, fit_members

    per_epoch = steps_per_epoch(len(train_split[1]), cfgs[0].batch_size)

    def member(cfg: Config) -> Member:
        total = cfg.epochs * per_epoch
        return Member(
            steps=total,
            lr_at=lambda step: learning_rate(cfg, step, total),
            optimizer=lambda params: make_optimizer(cfg, params),
            label_smoothing=cfg.label_smoothing,
            select=cfg.select,
            key=cfg,
            dropout=cfg.dropout,
        )

    return fit_members(
        ctxs,
        models,
        [member(cfg) for cfg in cfgs],
        train_split,
        val_split,
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
    "dropout",
)


# A dropout rate of 0 is no dropout layer at all: members either all have them or none does.
@vectorized(train, varies=VARIES, structure=lambda cfg: cfg.dropout > 0)
def train_many(cfgs: Sequence[Config], ctxs: Sequence[TrialContext]) -> None:
    """Every trial of the arms that differ only in :data:`VARIES`, as one batched model
    (``fairtrial run --backend vectorized``)."""
    if any(cfg.norm == "batch" for cfg in cfgs):
        raise NotVectorizable("batch norm keeps running statistics per model")
    from fairtrial.recipes._vmap import evaluate_tests, phase

    cfg = cfgs[0]
    d = ctxs[0].data
    n_classes = d.n_classes
    if n_classes is None:
        raise ValueError("the mlp recipe classifies: this task is a regression task (no classes)")
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, d)
    models = [
        init_model(ctx, functools.partial(MLP, x_tr.shape[1], n_classes, c), cfg.device)
        for ctx, c in zip(ctxs, cfgs, strict=True)
    ]
    trained = fit_many(cfgs, ctxs, models, (x_tr, y_tr), (x_va, y_va))
    with phase(ctxs, "eval"):
        # each seed's own model predicts, exactly as a lone run's would
        evaluate_tests(ctxs, [predictor(model, to_tensor) for model in trained])
