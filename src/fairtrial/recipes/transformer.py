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

The whole recipe is in this file, top to bottom: ``Config`` (the options a spec may set), the
model (``Block``, ``Transformer``), the AdamW optimizer and learning-rate schedule, ``fit``
(the step loop, its evaluation on the validation split every ``eval_every`` steps and its log
points), ``train(config, ctx)``, ending with the test predictions, and ``train_many``, all
seeds of an arm as one batched model for ``--backend vectorized`` (``forward_stacked``: each
seed's weights bit for bit its lone run's on the CPU; dropout > 0 runs seed by seed). What
every torch recipe must do the same way (seeded initial weights, seeded batch order, chunked
evaluation) comes from :mod:`fairtrial.recipes.torchkit`.
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

from fairtrial.recipes import NotVectorizable, recipe, vectorized
from fairtrial.recipes import _stacked as S
from fairtrial.recipes.torchkit import (
    batches,
    check_device,
    init_model,
    logits_of,
    predictor,
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
    """Options of the transformer recipe (trained with AdamW on cross-entropy at "=")."""

    # The model: small enough to train in seconds on a CPU, large enough to learn the task.
    d_model: int = field(
        default=64, metadata={"help": "width of the residual stream", "ge": 1, "le": 65_536}
    )
    n_heads: int = field(
        default=4,
        metadata={"help": "attention heads (must divide d_model)", "ge": 1, "le": 65_536},
    )
    # One block is enough for modular addition (Nanda et al. reverse-engineer a one-layer one).
    n_layers: int = field(default=1, metadata={"help": "transformer blocks", "ge": 0, "le": 1_000})
    d_mlp: int = field(
        default=256,
        metadata={"help": "hidden width of each block's MLP", "ge": 1, "le": 65_536},
    )
    # Off by default: weight decay is this recipe's regularizer (see weight_decay).
    dropout: float = field(
        default=0.0,
        metadata={
            "help": "dropout on attention weights and residual branches",
            "ge": 0,
            "lt": 1,
        },
    )
    # Training. Large for a transformer: with the weight decay below it makes the model
    # generalize soon after it memorizes, instead of thousands of steps later.
    lr: float = field(default=5e-3, metadata={"help": "AdamW peak learning rate", "gt": 0})
    # Decoupled (AdamW) weight decay drives generalization on this task: of the interventions
    # Power et al. tried, it shortened the wait for grokking the most.
    weight_decay: float = field(
        default=2.0,
        metadata={
            "help": "AdamW decoupled weight decay; large values (1-2) drive generalization",
            "ge": 0,
        },
    )
    # beta2 = 0.98, not 0.999: the second-moment average then follows the quickly changing
    # gradients of a small transformer (as in Vaswani et al. 2017 and the grokking papers).
    betas: tuple[float, float] = field(
        default=(0.9, 0.98), metadata={"help": "AdamW (beta1, beta2)", "ge": 0, "lt": 1}
    )
    # Steps, not epochs: grokking is described in optimizer steps.
    steps: int = field(
        default=1000,
        metadata={
            "help": "optimizer steps; grokking studies run 10-100x more (e.g. 40000)",
            "ge": 1,
            "le": 10_000_000,
        },
    )
    batch_size: int = field(
        default=512,
        metadata={"help": "examples per step (0 = full batch)", "ge": 0, "le": 1_048_576},
    )
    # A few steps of warmup: the large peak lr from random weights would otherwise throw the
    # first updates far off (see learning_rate()).
    warmup_steps: int = field(
        default=10,
        metadata={
            "help": "steps of linear learning-rate warmup (0 = off)",
            "ge": 0,
            "le": 10_000_000,
        },
    )
    schedule: Literal["constant", "cosine"] = field(
        default="cosine",
        metadata={"help": "learning rate after warmup: constant, or cosine decay to 0 at the end"},
    )
    # Each evaluation is a pass over the validation split: not worth paying every step.
    eval_every: int = field(
        default=100,
        metadata={
            "help": "steps between evaluations and log points",
            "ge": 1,
            "le": 10_000_000,
        },
    )
    # CPU by default: only there are reruns bit-identical (GPU kernels may add in any order).
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


# -------------------------------------------------------------------------------------------
# The model.


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

    def forward_stacked(
        self, p: dict[str, torch.Tensor], at: str, x: torch.Tensor, last_only: bool
    ) -> torch.Tensor:
        """:meth:`forward` of N members at once (no dropout): ``p`` holds their stacked
        weights by full name, ``at`` is this block's prefix, ``x`` is (N, batch, T, c)."""
        n, b, t, c = x.shape
        h = S.layer_norm(x, p[at + "ln1.weight"], p[at + "ln1.bias"], self.ln1.eps)
        q, k, v = torch.split(S.linear(h, p[at + "qkv.weight"], p[at + "qkv.bias"]), c, dim=3)
        if last_only:
            q, x, t = q[:, :, -1:], x[:, :, -1:], 1
        q, k, v = (
            z.view(n, b, -1, self.n_heads, c // self.n_heads).transpose(2, 3) for z in (q, k, v)
        )
        att = S.attention(q, k, v, is_causal=not last_only)
        att = att.transpose(2, 3).reshape(n, b, t, c)
        x = x + S.linear(att, p[at + "proj.weight"], p[at + "proj.bias"])
        h = S.layer_norm(x, p[at + "ln2.weight"], p[at + "ln2.bias"], self.ln2.eps)
        h = torch.relu(S.linear(h, p[at + "mlp.0.weight"], p[at + "mlp.0.bias"]))
        out: torch.Tensor = x + S.linear(h, p[at + "mlp.2.weight"], p[at + "mlp.2.bias"])
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

    def forward_stacked(self, p: dict[str, torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` of N members at once, for the vectorized backend: ``p`` holds
        their weights stacked along a new first dimension, ``tokens`` is (N, batch, 2).

        Each member computes what it computes alone, bit for bit: the layers run as
        :mod:`fairtrial.recipes._stacked` writes them (no dropout: ``train_many`` refuses it).
        """
        eq = torch.full_like(tokens[:, :, :1], self.eq)
        emb = S.embedding(torch.cat([tokens, eq], dim=2), p["embed.weight"])
        # one member at a time: the position gradient then sums the batch as a lone run does
        x = torch.stack([e + pos for e, pos in zip(emb.unbind(0), p["pos"].unbind(0), strict=True)])
        for i, block in enumerate(self.blocks):
            assert isinstance(block, Block)
            x = block.forward_stacked(p, f"blocks.{i}.", x, last_only=i == len(self.blocks) - 1)
        h = S.layer_norm(x[:, :, -1], p["ln.weight"], p["ln.bias"], self.ln.eps)
        return S.linear(h, p["head.weight"], p["head.bias"])


# -------------------------------------------------------------------------------------------
# Optimizer, schedule, training loop.


def make_optimizer(cfg: Config, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW over ``params`` at the peak learning rate."""
    # Weight decay on every parameter, embeddings and norm gains included: the setting of the
    # grokking experiments this recipe follows.
    return torch.optim.AdamW(
        list(params), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )


def learning_rate(cfg: Config, step: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warmup, then the schedule."""
    if step < cfg.warmup_steps:
        # Warmup: the first updates come from random weights and from Adam moment estimates
        # averaged over a few batches only; small steps until both settle keep the large peak
        # lr from throwing the weights far off at the start (Liu et al. 2020,
        # arXiv:1908.03265).
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        # Cosine decay to 0 at the end (Loshchilov & Hutter 2017, arXiv:1608.03983,
        # without restarts): large steps early, small ones to settle at the end.
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def fit(
    cfg: Config,
    ctx: TrialContext,
    model: nn.Module,
    train_split: tuple[torch.Tensor, torch.Tensor],
    val_split: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Train ``model`` for ``cfg.steps`` steps, logging one point before and one every
    ``cfg.eval_every`` steps (and after the last).

    Each point has train_loss and train_accuracy (averaged over the steps since the last
    point), val_loss, val_accuracy and the lr of the last step, at ``step`` = steps done.
    The last weights are the ones scored on test.
    """
    x, y = train_split
    x_val, y_val = val_split
    optimizer = make_optimizer(cfg, model.parameters())
    # The batch order comes from the seed's "data" stream alone: every arm sees the same
    # batches for the same seed, whatever else it changes.
    order = batches(ctx.torch_generator("data"), len(y), cfg.batch_size)

    def evaluate(step: int, train_loss: float, train_acc: float, lr: float) -> None:
        """Score the validation split and log the point."""
        # The validation split is what the curves show (grokking is val_accuracy rising long
        # after train_accuracy); the test split stays sealed until ctx.evaluate_test.
        with ctx.count_flops("eval_val"):
            logits = logits_of(model, x_val)
        ctx.log(
            step=step,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=F.cross_entropy(logits, y_val).item(),
            val_accuracy=(logits.argmax(dim=1) == y_val).float().mean().item(),
            lr=lr,
        )

    # Step 0: the initial weights, before any update, on the whole training split. Arms that
    # share a seed share these weights, so they share this point: a visible check of pairing.
    with ctx.phase("eval"):
        with ctx.count_flops("eval_train"):
            logits = logits_of(model, x)
        evaluate(
            0,
            F.cross_entropy(logits, y).item(),
            (logits.argmax(dim=1) == y).float().mean().item(),
            learning_rate(cfg, 0),
        )
    step = 0
    while step < cfg.steps:
        with ctx.phase("train"):
            model.train()
            # Sums stay tensors so the loop never waits for a number until the evaluation
            # (on a GPU, .item() each step would stall it).
            loss_sum, correct = torch.zeros((), device=y.device), torch.zeros((), device=y.device)
            seen = n_steps = 0
            for _ in range(min(cfg.eval_every, cfg.steps - step)):
                lr = learning_rate(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                idx = next(order)
                xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                # Every step has the same shapes (equal batches), so counting one is exact.
                # The optimizer's update has no matmul/conv FLOPs: it stays outside the block.
                with ctx.count_flops("train_step"):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(dim=1) == yb).sum()
                seen += len(yb)
                n_steps += 1
                step += 1
        with ctx.phase("eval"):
            evaluate(step, loss_sum.item() / n_steps, correct.item() / seen, lr)


# -------------------------------------------------------------------------------------------
# The recipe: what fairtrial calls once per trial.


def _inputs(
    cfg: Config, d: TaskData
) -> tuple[Callable[[NDArray[Any]], torch.Tensor], tuple[torch.Tensor, ...]]:
    """``to_tensor`` (raw rows -> token ids) and the train/val tensors."""

    def to_tensor(x: NDArray[Any]) -> torch.Tensor:
        # torch.tensor copies: the task's arrays are read-only
        return torch.tensor(x, dtype=torch.long, device=cfg.device)

    x_tr, x_va = to_tensor(d.x_train), to_tensor(d.x_val)
    y_tr = torch.tensor(d.y_train, dtype=torch.long, device=cfg.device)
    y_va = torch.tensor(d.y_val, dtype=torch.long, device=cfg.device)
    return to_tensor, (x_tr, y_tr, x_va, y_va)


def _factory(cfg: Config, d: TaskData) -> Callable[[], Transformer]:
    """What builds one model for the task (the weights come from the caller's stream)."""
    n_classes = d.n_classes
    if n_classes is None:
        raise ValueError(
            "the transformer recipe classifies: this task is a regression task (no classes)"
        )
    # token ids 0..n_tokens-1; the task says how many there are (the training rows may
    # miss the largest)
    n_tokens = int(d.meta.get("n_tokens", int(np.max(d.x_train)) + 1))
    seq_len = np.asarray(d.x_train).shape[1]
    return lambda: Transformer(n_tokens, n_classes, seq_len, cfg)


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

    The same optimizer, schedule and log points (every ``eval_every`` steps and after the
    last, the first one's train_loss unsmoothed as there is no smoothing), and each seed's own
    batches, in the vectorized backend's batched loop
    (:func:`fairtrial.recipes._vmap.fit_members`), which runs
    :meth:`Transformer.forward_stacked`; members may differ in the options of :data:`VARIES`.
    """
    from fairtrial.recipes._vmap import Member, fit_members

    def member(cfg: Config) -> Member:
        return Member(
            steps=cfg.steps,
            lr_at=lambda step: learning_rate(cfg, step),
            optimizer=lambda params: make_optimizer(cfg, params),
            key=cfg,
        )

    return fit_members(
        ctxs,
        models,
        [member(cfg) for cfg in cfgs],
        train_split,
        val_split,
        batch_size=cfgs[0].batch_size,
        eval_every=cfgs[0].eval_every,
    )


#: options that members of one batched model may differ in: they change neither a tensor's
#: shape nor the code that runs (they become per-member optimizer groups and schedules)
VARIES = ("lr", "weight_decay", "betas", "steps", "warmup_steps", "schedule")


@vectorized(train, varies=VARIES)
def train_many(cfgs: Sequence[Config], ctxs: Sequence[TrialContext]) -> None:
    """Every trial of the arms that differ only in :data:`VARIES`, as one batched model
    (``fairtrial run --backend vectorized``)."""
    if any(cfg.dropout > 0 for cfg in cfgs):
        raise NotVectorizable("dropout > 0 draws its masks from each seed's own generator")
    from fairtrial.recipes._vmap import evaluate_tests, phase

    cfg = cfgs[0]
    make = _factory(cfg, ctxs[0].data)
    to_tensor, (x_tr, y_tr, x_va, y_va) = _inputs(cfg, ctxs[0].data)
    models = [init_model(ctx, make, cfg.device) for ctx in ctxs]
    trained = fit_many(cfgs, ctxs, models, (x_tr, y_tr), (x_va, y_va))
    with phase(ctxs, "eval"):
        # each seed's own model predicts, exactly as a lone run's would
        evaluate_tests(ctxs, [predictor(model, to_tensor) for model in trained])
