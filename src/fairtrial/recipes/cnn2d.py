"""A small 2-D convolutional network for images (mnist5k, digits).

``depth`` blocks of Conv2d -> activation -> 2x2 pooling, then a linear classifier on the
flattened feature map: the LeNet layout (LeCun et al. 1998, "Gradient-based learning applied
to document recognition") at a size that trains on a CPU in seconds. Images come from the
task's ``meta["image_shape"]`` (height, width), or, without it, from a square number of
features (each row is one grey image, row-major).

The whole recipe is in this file, top to bottom, as ``cnn1d.py`` is: ``Config`` (the options
a spec may set), the model ``CNN2d``, the optimizer and learning-rate schedule, ``fit`` (the
epoch loop, its evaluation on the validation split and its log points) and
``train(config, ctx)``, ending with the test predictions. It has no batched form
(``train_many``): ``fairtrial run --backend vectorized`` runs its trials one at a time, with
the same results. What every torch recipe must do the same way (seeded initial weights,
seeded batch order, chunked evaluation) comes from :mod:`fairtrial.recipes.torchkit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from fairtrial.recipes import recipe
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
    """Options of the 2-D CNN recipe: training first (as the 1-D CNN's), then the model."""

    # Adam by default: the usual first choice for a small network; sgd and adamw are arms.
    optimizer: Literal["sgd", "adam", "adamw"] = field(
        default="adam",
        metadata={"help": "sgd (with momentum), adam, or adamw (Adam with decoupled weight decay)"},
    )
    # The 1-D CNN's 1e-2: with the cosine decay below, the defaults reach about 96% on
    # mnist5k in 10 epochs (seed 0), where Adam's usual 1e-3 reaches 92%.
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
        default=10, metadata={"help": "passes over the training split", "ge": 1, "le": 100_000}
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
    # Cosine by default, as the 1-D CNN's: the decay settles the last epochs.
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
        default=16, metadata={"help": "feature maps of every conv layer", "ge": 1, "le": 65_536}
    )
    kernel_size: int = field(
        default=3,
        metadata={
            "help": "height and width of each convolution (padding keeps the image size)",
            "ge": 1,
            "le": 1_024,
        },
    )
    depth: int = field(default=2, metadata={"help": "number of conv blocks", "ge": 0, "le": 1_000})
    pooling: Literal["max", "avg", "none"] = field(
        default="max",
        metadata={"help": "2x2 downsampling after each conv block: max, avg, or none"},
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


class CNN2d(nn.Module):
    def __init__(self, shape: tuple[int, int], n_out: int, cfg: Config) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        height, width = shape
        c_in = 1
        for _ in range(cfg.depth):
            layers.append(nn.Conv2d(c_in, cfg.channels, cfg.kernel_size, padding="same"))
            layers.append(ACTIVATIONS[cfg.activation]())
            # An image already down to one row or column is not pooled any further.
            if cfg.pooling != "none" and min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2) if cfg.pooling == "max" else nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            c_in = cfg.channels
        # Flattening (not global pooling) keeps where a feature occurred: in a centred digit
        # the position of a stroke is part of what it is.
        layers += [nn.Flatten(), nn.Linear(c_in * height * width, n_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)  # x: (batch, 1, height, width)
        return out


# -------------------------------------------------------------------------------------------
# Optimizer, schedule, training loop (the 1-D CNN recipe's).


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


def image_shape(d: TaskData) -> tuple[int, int]:
    """(height, width) of the task's images: ``meta["image_shape"]``, else a square."""
    n_features = int(np.prod(np.asarray(d.x_train).shape[1:]))
    shape = d.meta.get("image_shape")
    if shape is not None:
        height, width = (int(v) for v in shape)
    else:
        height = width = math.isqrt(n_features)
    if height * width != n_features:
        raise ValueError(
            "the cnn2d recipe needs grey images: a task with meta['image_shape'] = (height, "
            f"width) or a square number of features; this task has {n_features} features"
        )
    return height, width


def _inputs(
    cfg: Config, d: TaskData, shape: tuple[int, int]
) -> tuple[Callable[[NDArray[Any]], torch.Tensor], tuple[torch.Tensor, ...]]:
    """``to_tensor`` (raw rows -> model inputs) and the train/val tensors."""

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        # (examples, 1, height, width); torch.tensor copies the read-only rows
        images = np.asarray(x).reshape(len(x), 1, *shape)
        return torch.tensor(images, dtype=torch.float32, device=cfg.device)

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr = torch.tensor(d.y_train, dtype=torch.long, device=cfg.device)
    y_va = torch.tensor(d.y_val, dtype=torch.long, device=cfg.device)
    return to_tensor, (x_tr, y_tr, x_va, y_va)


@recipe(Config)
def train(cfg: Config, ctx: TrialContext) -> None:
    d = ctx.data
    n_classes = d.n_classes
    if n_classes is None:
        raise ValueError("the cnn2d recipe classifies: this task is a regression task (no classes)")
    shape = image_shape(d)
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, d, shape)
    # Weights from the seed's "init" stream alone: every arm starts seed i from the same
    # weights, so differences between arms are the change, not the luck of the init.
    model = init_model(ctx, lambda: CNN2d(shape, n_classes, cfg), cfg.device)
    fit(cfg, ctx, model, (x_tr, y_tr), (x_va, y_va))
    # The test split is scored once, by fairtrial, from the predicted labels.
    with ctx.phase("eval"), ctx.count_flops("test"):
        ctx.evaluate_test(predictor(model, to_tensor))
