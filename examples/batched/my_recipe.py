"""A torch recipe of your own that trains many trials as one batched model.

``train(cfg, ctx)`` is the plain recipe: one trial. ``train_many(cfgs, ctxs)`` is its batched
form, declared with ``@vectorized(train, varies=("lr",))``: the vectorized backend (the
default for a recipe that has one) calls it once with every trial whose config differs only
in ``lr``, one config and one context per member. It must give each member what ``train``
would: weights from the seed's "init" stream (``init_model``), batches from its "data" stream
(``fit_members`` draws them), the same log points, and one test evaluation. Here both loops
are the same few lines: ``fit_members`` is the batched form of the loop in ``train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairtrial.recipes import recipe, vectorized
from fairtrial.recipes._vmap import Member, evaluate_tests, fit_members, phase
from fairtrial.recipes.torchkit import batches, init_model, logits_of, predictor

STEPS, BATCH, EVAL_EVERY = 300, 32, 100


@dataclass(frozen=True)
class Config:
    lr: float = field(default=0.05, metadata={"help": "SGD learning rate", "gt": 0})


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def to_tensor(x: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float32) / 16)


def splits(ctx: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    d = ctx.data
    train = (to_tensor(d.x_train), torch.tensor(d.y_train))
    val = (to_tensor(d.x_val), torch.tensor(d.y_val))
    return train, val


def sgd(cfg: Config, params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(params), lr=cfg.lr, momentum=0.9)


@recipe(Config)
def train(cfg: Config, ctx: Any) -> None:
    (x, y), (xv, yv) = splits(ctx)
    model = init_model(ctx, Net)
    opt = sgd(cfg, model.parameters())
    order = batches(ctx.torch_generator("data"), len(y), BATCH)

    def evaluate(step: int, train_loss: float, train_acc: float) -> None:
        logits = logits_of(model, xv)
        ctx.log(
            step=step,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=F.cross_entropy(logits, yv).item(),
            val_accuracy=(logits.argmax(dim=1) == yv).float().mean().item(),
            lr=cfg.lr,
        )

    logits = logits_of(model, x)
    first_acc = (logits.argmax(dim=1) == y).float().mean().item()
    evaluate(0, F.cross_entropy(logits, y).item(), first_acc)
    loss_sum, correct = torch.zeros(()), torch.zeros(())
    for step in range(1, STEPS + 1):
        model.train()
        idx = next(order)
        assert idx is not None
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(dim=1) == y[idx]).sum()
        if step % EVAL_EVERY == 0:
            evaluate(step, loss_sum.item() / EVAL_EVERY, correct.item() / (EVAL_EVERY * BATCH))
            loss_sum, correct = torch.zeros(()), torch.zeros(())
    ctx.evaluate_test(predictor(model, to_tensor))


@vectorized(train, varies=("lr",))
def train_many(cfgs: Sequence[Config], ctxs: Sequence[Any]) -> None:
    train_split, val_split = splits(ctxs[0])
    members = [
        Member(
            steps=STEPS,
            lr_at=lambda step, cfg=cfg: cfg.lr,
            optimizer=lambda params, cfg=cfg: sgd(cfg, params),
            key=cfg,  # members with equal configs share an optimizer parameter group
        )
        for cfg in cfgs
    ]
    models = fit_members(
        ctxs,
        [init_model(ctx, Net) for ctx in ctxs],
        members,
        train_split,
        val_split,
        batch_size=BATCH,
        eval_every=EVAL_EVERY,
        body="net",  # the nn.Sequential forward() is: its linear layers run as batched matmuls
    )
    with phase(ctxs, "eval"):
        evaluate_tests(ctxs, [predictor(model, to_tensor) for model in models])
