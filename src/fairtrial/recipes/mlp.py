"""A multilayer perceptron for classification from flat features (digits, breast_cancer, mnist1d).

The model is ``depth`` blocks of Linear -> norm -> activation -> dropout followed by a linear
classifier (``depth = 0`` is multinomial logistic regression). Norms: layer normalization
(Ba, Kiros & Hinton 2016, arXiv:1607.06450) or batch normalization (Ioffe & Szegedy 2015,
arXiv:1502.03167); dropout: Srivastava et al. (2014, JMLR 15). Optimizer, schedule and the
training loop live in ``_torch.py``, shared with the other torch recipes.

Copy this file to start your own recipe: the config is a frozen dataclass whose fields are
the options a spec may set, and ``train(config, ctx)`` is the whole contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from fairtrial.recipes import NotVectorizable, recipe, vectorized
from fairtrial.recipes._torch import (
    ACTIVATIONS,
    MAX_LAYERS,
    MAX_WIDTH,
    PROBABILITY,
    TrainConfig,
    fit_epochs,
    init_model,
    predictor,
    to_device,
)


@dataclass(frozen=True)
class Config(TrainConfig):
    """Options of the MLP recipe (model options below, training options from TrainConfig)."""

    hidden: int = field(default=128, metadata={"help": "width of every hidden layer", **MAX_WIDTH})
    depth: int = field(
        default=2, metadata={"help": "number of hidden layers (0 = linear model)", **MAX_LAYERS}
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
        metadata={"help": "dropout probability after each hidden layer", **PROBABILITY},
    )
    standardize: bool = field(
        default=True,
        metadata={"help": "scale each feature to mean 0, sd 1 with TRAIN statistics only"},
    )


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
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def _inputs(
    cfg: Config, d: Any
) -> tuple[Callable[[NDArray[Any]], torch.Tensor], tuple[torch.Tensor, ...]]:
    """``to_tensor`` and the train/val tensors (shared by ``train`` and ``train_many``)."""
    x_train = np.asarray(d.x_train, dtype=np.float32).reshape(len(d.x_train), -1)
    # Statistics of the training split only: the val and test rows must not shape the inputs.
    mean = x_train.mean(axis=0) if cfg.standardize else np.float32(0.0)
    sd = x_train.std(axis=0) if cfg.standardize else np.float32(1.0)
    sd = np.where(sd > 1e-6, sd, 1.0)  # constant features (blank pixels) stay 0, not NaN

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        (t,) = to_device(cfg.device, (flat - mean) / sd, dtype=torch.float32)
        return t

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr, y_va = to_device(cfg.device, d.y_train, d.y_val, dtype=torch.long)
    return to_tensor, (x_tr, y_tr, x_va, y_va)


@recipe(Config)
def train(cfg: Config, ctx: Any) -> None:
    d = ctx.data
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, d)
    model = init_model(ctx, lambda: MLP(x_tr.shape[1], d.n_classes, cfg), cfg.device)
    fit_epochs(ctx, model, cfg, (x_tr, y_tr), (x_va, y_va))
    with ctx.phase("eval"), ctx.count_flops("test"):
        ctx.evaluate_test(predictor(model, to_tensor))


@vectorized(train)
def train_many(cfg: Config, ctxs: Sequence[Any]) -> None:
    """Every seed of one arm as one batched model (``fairtrial run --backend vectorized``)."""
    if cfg.dropout > 0:
        raise NotVectorizable("dropout > 0 draws its masks from each seed's own generator")
    if cfg.norm == "batch":
        raise NotVectorizable("batch norm keeps running statistics per model")
    from fairtrial.recipes._vmap import each, fit_epochs_vectorized, phase

    d = ctxs[0].data
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, d)
    models = [
        init_model(ctx, lambda: MLP(x_tr.shape[1], d.n_classes, cfg), cfg.device) for ctx in ctxs
    ]
    trained = fit_epochs_vectorized(ctxs, models, cfg, (x_tr, y_tr), (x_va, y_va), body="net")
    with phase(ctxs, "eval"):
        # each seed's own model predicts, exactly as a lone run's would
        each(ctxs, lambda i, ctx: ctx.evaluate_test(predictor(trained[i], to_tensor)))
