"""What the built-in torch recipes share: training options, seeded init, the training loop.

The recipe files (``mlp.py``, ``cnn1d.py``, ``transformer.py``) hold the model and say how the
task's arrays become tensors; everything else is here, written once:

* :class:`TrainConfig` - the optimizer / schedule / loop options of the epoch-based recipes;
* :func:`init_model` - builds a model under the "init" seed and then seeds dropout;
* :func:`batches` - the data order, drawn from the "data" stream only;
* :func:`fit` - the loop: seeded batches, warmup + schedule, logging, phases, model selection,
  FLOPs (``ctx.count_flops`` around each training step and each evaluation pass).

Pairing (common random numbers): for a given seed, the initial weights depend only on the
"init" stream and the batch order only on the "data" stream, so two arms that differ in, say,
the learning rate start from the same weights and see the same batches. The differences
between arms then measure the change, not the luck of the draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def check_device(value: str) -> None:
    """Raise ValueError unless ``value`` names a torch device (whether it exists is the
    worker's to find out: the spec may be checked on a machine without it)."""
    try:
        torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError("must be a torch device, e.g. 'cpu', 'cuda' or 'cuda:1'") from None


#: Bounds of the options that size a model or a loop (field metadata, checked with the spec):
#: far above what these recipes are for, low enough that a typo fails the spec, not every trial.
MAX_WIDTH = {"ge": 1, "le": 65_536}
MAX_LAYERS = {"ge": 0, "le": 1_000}
MAX_BATCH = {"ge": 0, "le": 1_048_576}
MAX_STEPS = {"ge": 0, "le": 10_000_000}
PROBABILITY = {"ge": 0, "lt": 1}


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer, schedule and loop options shared by the epoch-based torch recipes."""

    optimizer: Literal["sgd", "adam", "adamw"] = field(
        default="adam",
        metadata={"help": "sgd (with momentum), adam, or adamw (Adam with decoupled weight decay)"},
    )
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate", "gt": 0})
    momentum: float = field(
        default=0.9,
        metadata={"help": "SGD momentum (ignored by adam/adamw)", "ge": 0, "lt": 1},
    )
    weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "weight decay on every parameter (L2 for sgd/adam, decoupled for adamw)",
            "ge": 0,
        },
    )
    batch_size: int = field(
        default=64,
        metadata={
            "help": "examples per step; each epoch drops the last incomplete batch "
            "(0 = full batch)",
            **MAX_BATCH,
        },
    )
    epochs: int = field(
        default=20, metadata={"help": "passes over the training split", "ge": 1, "le": 100_000}
    )
    warmup_steps: int = field(
        default=0,
        metadata={
            "help": "steps of linear learning-rate warmup from lr/warmup_steps (0 = off)",
            **MAX_STEPS,
        },
    )
    schedule: Literal["constant", "cosine"] = field(
        default="constant",
        metadata={"help": "learning rate after warmup: constant, or cosine decay to 0 at the end"},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "label smoothing of the training loss (val_loss is never smoothed)",
            "ge": 0,
            "le": 1,
        },
    )
    select: Literal["last", "best_val"] = field(
        default="last",
        metadata={"help": "weights scored on test: the last ones, or those of the best val epoch"},
    )
    device: str = field(
        default="cpu",
        metadata={
            "help": "torch device; 'cuda' runs on a GPU (bit-identical reruns only on cpu)",
            "check": check_device,
        },
    )


def init_model(ctx: Any, make: Callable[[], nn.Module], device: str = "cpu") -> nn.Module:
    """Build ``make()`` with weights drawn from the "init" stream only, then seed dropout.

    ``fork_rng`` leaves the global generator as it was, so the weights do not depend on what
    ran before in this process; dropout (and anything else that draws from the global
    generator during training) then gets the "dropout" stream. Weights are drawn on the CPU
    so that they are the same whatever the device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed_for("init"))
        model = make()
    torch.manual_seed(ctx.seed_for("dropout"))
    return model.to(device)


def make_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'; valid: adam, adamw, sgd")


def lr_at(step: int, total: int, lr: float, warmup_steps: int, schedule: str) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``: linear warmup, then schedule."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total - warmup_steps)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


def batches(generator: torch.Generator, n: int, batch_size: int) -> Iterator[torch.Tensor | None]:
    """Row indices of each step, epoch after epoch, shuffled by ``generator`` alone.

    Each epoch is one permutation cut into ``n // batch_size`` batches (the remainder is
    dropped, a different one each epoch, so every batch has the same size: BatchNorm never
    sees a batch of one). ``batch_size`` 0 or at least ``n`` means full batch: ``None``.
    """
    if batch_size <= 0 or batch_size >= n:
        while True:
            yield None
    per_epoch = n // batch_size
    while True:
        perm = torch.randperm(n, generator=generator)
        yield from perm[: per_epoch * batch_size].view(per_epoch, batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return 1 if batch_size <= 0 or batch_size >= n else n // batch_size


def to_device(device: str, *arrays: NDArray[Any], dtype: torch.dtype) -> list[torch.Tensor]:
    """numpy arrays as tensors of ``dtype`` on ``device`` (copied: task arrays are read-only)."""
    return [torch.tensor(np.asarray(a), dtype=dtype, device=device) for a in arrays]


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The model's outputs on ``x`` in eval mode (in chunks, to bound memory)."""
    model.eval()
    return torch.cat([model(part) for part in torch.split(x, chunk)])


def predictor(
    model: nn.Module, to_tensor: Callable[[NDArray[Any]], torch.Tensor]
) -> Callable[[NDArray[Any]], NDArray[Any]]:
    """``predict(x) -> class labels`` for ``ctx.evaluate_test``."""

    def predict(x: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = logits_of(model, to_tensor(x)).argmax(dim=1).cpu().numpy()
        return out

    return predict


def fit(
    ctx: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    eval_every: int,
    step_unit: int = 1,
    warmup_steps: int = 0,
    schedule: str = "constant",
    label_smoothing: float = 0.0,
    select: str = "last",
) -> None:
    """Train ``model`` for ``steps`` optimizer steps, evaluating every ``eval_every`` steps.

    Logs train_loss and train_accuracy (averaged over the batches since the last evaluation),
    val_loss, val_accuracy and lr at ``step = steps done // step_unit`` (epochs when
    ``step_unit`` is the number of steps per epoch), and once at step 0 before any update, on
    the whole training split: arms that share a seed share that first point, since they
    share their initial weights. With ``select="best_val"`` the weights of the best
    evaluation (first one on ties) are restored at the end.
    """
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    x, y = train
    x_val, y_val = val
    order = batches(ctx.torch_generator("data"), len(y), batch_size)
    best_acc, best_state = -1.0, None

    def evaluate(step: int, train_loss: float, train_acc: float, current_lr: float) -> None:
        nonlocal best_acc, best_state
        with ctx.count_flops("eval_val"):
            logits = logits_of(model, x_val)
        val_acc = (logits.argmax(dim=1) == y_val).float().mean().item()
        ctx.log(
            step=step // step_unit,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=F.cross_entropy(logits, y_val).item(),
            val_accuracy=val_acc,
            lr=current_lr,
        )
        if select == "best_val" and val_acc > best_acc:
            best_acc = val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    with ctx.phase("eval"):
        with ctx.count_flops("eval_train"):
            logits = logits_of(model, x)
        evaluate(
            0,
            F.cross_entropy(logits, y, label_smoothing=label_smoothing).item(),
            (logits.argmax(dim=1) == y).float().mean().item(),
            lr_at(0, steps, lr, warmup_steps, schedule),
        )
    step = 0
    while step < steps:
        with ctx.phase("train"):
            model.train()
            # Sums stay tensors so the loop never waits for a number until the evaluation.
            loss_sum, correct = torch.zeros((), device=y.device), torch.zeros((), device=y.device)
            seen = n_steps = 0
            for _ in range(min(eval_every, steps - step)):
                current_lr = lr_at(step, steps, lr, warmup_steps, schedule)
                for group in optimizer.param_groups:
                    group["lr"] = current_lr
                idx = next(order)
                xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                # Every step has the same shapes (equal batches), so counting one is exact.
                # The optimizer's update has no matmul/conv FLOPs: it stays outside the block.
                with ctx.count_flops("train_step"):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                seen += len(yb)
                n_steps += 1
                step += 1
        with ctx.phase("eval"):
            evaluate(step, loss_sum.item() / n_steps, correct.item() / seen, current_lr)
    if best_state is not None:
        model.load_state_dict(best_state)


def fit_epochs(
    ctx: Any,
    model: nn.Module,
    cfg: TrainConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """:func:`fit` driven by a :class:`TrainConfig`: one evaluation and log point per epoch."""
    opt = make_optimizer(
        model, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum
    )
    per_epoch = steps_per_epoch(len(train[1]), cfg.batch_size)
    fit(
        ctx,
        model,
        opt,
        train,
        val,
        steps=cfg.epochs * per_epoch,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        eval_every=per_epoch,
        step_unit=per_epoch,
        warmup_steps=cfg.warmup_steps,
        schedule=cfg.schedule,
        label_smoothing=cfg.label_smoothing,
        select=cfg.select,
    )
