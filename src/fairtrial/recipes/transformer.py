"""A tiny decoder-only transformer for algorithmic tasks (modular_addition).

Each example ``[a, b]`` becomes the sequence ``a b =`` (the "=" token has id ``n_tokens``) and
the model predicts the answer from its output at the last position, as in the grokking
experiments of Power et al. (2022, "Grokking: Generalization beyond overfitting on small
algorithmic datasets", arXiv:2201.02177) and Nanda et al. (2023, "Progress measures for
grokking via mechanistic interpretability", arXiv:2301.05217). Blocks are pre-norm GPT-style
(Radford et al. 2019) with causal self-attention (Vaswani et al. 2017) and learned positions.

The defaults are tuned for a quick, reliable result on a CPU: with the task's 50% training
fraction they reach 100% validation and test accuracy within 1000 steps (about 8 s on one
thread; 10 of 10 seeds measured). A large learning rate and weight decay make the model
generalize soon after it memorizes. Grokking studies run far longer and slower, e.g. Nanda et
al.: 30% of the pairs, ``batch_size = 0`` (full batch), ``lr = 1e-3``, ``weight_decay = 1``,
``schedule = "constant"``, tens of thousands of steps, and watch val_accuracy jump long after
train_accuracy reached 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from fairtrial.recipes import recipe
from fairtrial.recipes._torch import (
    MAX_BATCH,
    MAX_LAYERS,
    MAX_STEPS,
    MAX_WIDTH,
    PROBABILITY,
    check_device,
    fit,
    init_model,
    make_optimizer,
    predictor,
    to_device,
)


@dataclass(frozen=True)
class Config:
    """Options of the transformer recipe (trained with AdamW on cross-entropy at "=")."""

    d_model: int = field(default=64, metadata={"help": "width of the residual stream", **MAX_WIDTH})
    n_heads: int = field(
        default=4, metadata={"help": "attention heads (must divide d_model)", **MAX_WIDTH}
    )
    n_layers: int = field(default=1, metadata={"help": "transformer blocks", **MAX_LAYERS})
    d_mlp: int = field(
        default=256, metadata={"help": "hidden width of each block's MLP", **MAX_WIDTH}
    )
    dropout: float = field(
        default=0.0,
        metadata={"help": "dropout on attention weights and residual branches", **PROBABILITY},
    )
    lr: float = field(default=5e-3, metadata={"help": "AdamW peak learning rate", "gt": 0})
    weight_decay: float = field(
        default=2.0,
        metadata={
            "help": "AdamW decoupled weight decay; large values (1-2) drive generalization",
            "ge": 0,
        },
    )
    betas: tuple[float, float] = field(
        default=(0.9, 0.98), metadata={"help": "AdamW (beta1, beta2)", **PROBABILITY}
    )
    steps: int = field(
        default=1000,
        metadata={
            "help": "optimizer steps; grokking studies run 10-100x more (e.g. 40000)",
            **MAX_STEPS,
            "ge": 1,
        },
    )
    batch_size: int = field(
        default=512, metadata={"help": "examples per step (0 = full batch)", **MAX_BATCH}
    )
    warmup_steps: int = field(
        default=10,
        metadata={"help": "steps of linear learning-rate warmup (0 = off)", **MAX_STEPS},
    )
    schedule: Literal["constant", "cosine"] = field(
        default="cosine",
        metadata={"help": "learning rate after warmup: constant, or cosine decay to 0 at the end"},
    )
    eval_every: int = field(
        default=100,
        metadata={"help": "steps between evaluations and log points", **MAX_STEPS, "ge": 1},
    )
    device: str = field(
        default="cpu",
        metadata={
            "help": "torch device; 'cuda' runs on a GPU (bit-identical reruns only on cpu)",
            "check": check_device,
        },
    )

    def __post_init__(self) -> None:
        # checked with the spec (build_config), not when the first trial builds the model
        if self.d_model % self.n_heads:
            raise ValueError(f"'n_heads' ({self.n_heads}) must divide 'd_model' ({self.d_model})")


class Block(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_mlp), nn.ReLU(), nn.Linear(cfg.d_mlp, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        if last_only:
            # Only the answer position is read out after the last block: keys and values still
            # come from every position, but attention output and MLP are computed for one.
            q, x, t = q[:, -1:], x[:, -1:], 1
        q, k, v = (
            z.view(b, -1, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v)
        )
        att = F.scaled_dot_product_attention(
            q, k, v, is_causal=not last_only, dropout_p=self.dropout if self.training else 0.0
        )  # the last position sees every position, so it needs no mask
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, c)))
        out: torch.Tensor = x + self.drop(self.mlp(self.ln2(x)))
        return out


class Transformer(nn.Module):
    def __init__(self, n_tokens: int, n_classes: int, seq_len: int, cfg: Config) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens + 1, cfg.d_model)  # +1: the "=" token
        self.pos = nn.Parameter(torch.randn(seq_len + 1, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, n_classes)
        self.eq = n_tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        eq = torch.full_like(tokens[:, :1], self.eq)
        x = self.embed(torch.cat([tokens, eq], dim=1)) + self.pos
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=i == len(self.blocks) - 1)
        out: torch.Tensor = self.head(self.ln(x[:, -1]))  # the answer is read at "="
        return out


@recipe(Config)
def train(cfg: Config, ctx: Any) -> None:
    d = ctx.data
    n_tokens = int(d.meta.get("n_tokens", int(np.max(d.x_train)) + 1))

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        (t,) = to_device(cfg.device, x, dtype=torch.long)
        return t

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr, y_va = to_device(cfg.device, d.y_train, d.y_val, dtype=torch.long)

    model = init_model(
        ctx, lambda: Transformer(n_tokens, d.n_classes, x_tr.shape[1], cfg), cfg.device
    )
    opt = make_optimizer(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    fit(
        ctx, model, opt, (x_tr, y_tr), (x_va, y_va),
        steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, eval_every=cfg.eval_every,
        warmup_steps=cfg.warmup_steps, schedule=cfg.schedule,
    )  # fmt: skip
    with ctx.phase("eval"), ctx.count_flops("test"):
        ctx.evaluate_test(predictor(model, to_tensor))
