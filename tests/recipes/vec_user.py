"""A user's own torch recipe that opts in to vectorized seeds (the documented interface)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fairtrial.recipes import vectorized
from fairtrial.recipes._torch import init_model, make_optimizer, predictor
from fairtrial.recipes._vmap import each, fit_vectorized, phase


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


def train(config: dict[str, Any], ctx: Any) -> None:
    from fairtrial.recipes._torch import fit

    tr, va = _tensors(ctx)
    model = init_model(ctx, Net)
    opt = make_optimizer(model, "sgd", lr=float(config["lr"]), weight_decay=0.0)
    fit(ctx, model, opt, tr, va, steps=60, batch_size=32, lr=float(config["lr"]), eval_every=20)
    ctx.evaluate_test(predictor(model, to_tensor))


@vectorized(train)
def train_many(config: dict[str, Any], ctxs: Sequence[Any]) -> None:
    tr, va = _tensors(ctxs[0])
    lr = float(config["lr"])
    models = fit_vectorized(
        ctxs,
        [init_model(ctx, Net) for ctx in ctxs],
        lambda m: make_optimizer(m, "sgd", lr=lr, weight_decay=0.0),
        tr,
        va,
        steps=60,
        batch_size=32,
        lr=lr,
        eval_every=20,
    )
    with phase(ctxs, "eval"):
        each(ctxs, lambda i, ctx: ctx.evaluate_test(predictor(models[i], to_tensor)))
