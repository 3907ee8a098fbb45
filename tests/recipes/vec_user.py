"""A user's own torch recipe that opts in to vectorized seeds (the documented interface)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairtrial.recipes import vectorized
from fairtrial.recipes._vmap import each, fit_vectorized, phase
from fairtrial.recipes.torchkit import batches, init_model, logits_of, predictor

STEPS, BATCH, EVAL_EVERY = 60, 32, 20


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(64, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.b(torch.tanh(self.a(x)))
        return out


def _tensors(ctx: Any) -> tuple[Any, ...]:
    d = ctx.data
    x = torch.tensor(np.asarray(d.x_train, dtype=np.float32) / 16)
    xv = torch.tensor(np.asarray(d.x_val, dtype=np.float32) / 16)
    y, yv = torch.tensor(d.y_train), torch.tensor(d.y_val)
    return (x, y), (xv, yv)


def to_tensor(x: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float32) / 16)


def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(list(params), lr=lr, momentum=0.9)


def train(config: dict[str, Any], ctx: Any) -> None:
    (x, y), (xv, yv) = _tensors(ctx)
    lr = float(config["lr"])
    model = init_model(ctx, Net)
    opt = sgd(model.parameters(), lr)
    order = batches(ctx.torch_generator("data"), len(y), BATCH)

    def evaluate(step: int, train_loss: float, train_acc: float) -> None:
        logits = logits_of(model, xv)
        ctx.log(
            step=step,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=F.cross_entropy(logits, yv).item(),
            val_accuracy=(logits.argmax(dim=1) == yv).float().mean().item(),
            lr=lr,
        )

    logits = logits_of(model, x)
    evaluate(
        0, F.cross_entropy(logits, y).item(), (logits.argmax(dim=1) == y).float().mean().item()
    )
    losses, correct = [], 0
    for step in range(1, STEPS + 1):
        model.train()
        idx = next(order)
        assert idx is not None
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        correct += int((logits.argmax(dim=1) == y[idx]).sum())
        if step % EVAL_EVERY == 0:
            evaluate(step, sum(losses) / len(losses), correct / (len(losses) * BATCH))
            losses, correct = [], 0
    ctx.evaluate_test(predictor(model, to_tensor))


@vectorized(train)
def train_many(configs: Sequence[dict[str, Any]], ctxs: Sequence[Any]) -> None:
    tr, va = _tensors(ctxs[0])
    lr = float(configs[0]["lr"])
    models = fit_vectorized(
        ctxs,
        [init_model(ctx, Net) for ctx in ctxs],
        lambda params: sgd(params, lr),
        tr,
        va,
        steps=STEPS,
        batch_size=BATCH,
        lr_at=lambda step: lr,
        eval_every=EVAL_EVERY,
    )
    with phase(ctxs, "eval"):
        each(ctxs, lambda i, ctx: ctx.evaluate_test(predictor(models[i], to_tensor)))
