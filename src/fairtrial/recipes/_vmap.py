"""Many seeds of one arm trained as one batched model: the vectorized backend's training loop.

N copies of one architecture have their weights stacked along a new first dimension
(``torch.func.stack_module_state``) and one forward pass evaluates all of them
(``torch.func.vmap`` over ``torch.func.functional_call``), following the model-ensembling
recipe of the torch.func documentation ("Model ensembling", PyTorch tutorials), itself after
JAX's ``vmap`` (Bradbury et al. 2018, github.com/google/jax). Each seed keeps everything that
makes it the seed it is, so seed ``i`` trains exactly as it would alone:

* its initial weights come from its own "init" stream
  (:func:`fairtrial.recipes.torchkit.init_model` per seed, then stacked);
* its batches come from its own "data" stream (one :func:`~fairtrial.recipes.torchkit.batches`
  iterator per seed; the rows of each seed are gathered separately);
* its gradient is its own: the summed loss is a sum over disjoint parameter sets, so
  d(sum)/d(weights of seed i) is the gradient of seed i's loss alone;
* the optimizers the recipes use (SGD, Adam, AdamW) update every element independently, so one
  optimizer over the stacked tensors makes the same update per seed as N optimizers would.

Seed ``i``'s result therefore does not depend on how many seeds run beside it, nor on which.
The arithmetic is not bit-for-bit that of a lone run (a batched matrix product may add in a
different order), so weights agree to rounding (the tests hold them within 1e-5 and test
predictions exactly equal on the built-in tasks).

Not vectorized (the recipe raises :class:`~fairtrial.recipes.NotVectorizable` and the backend
runs those seeds one after another): dropout, whose masks would be drawn from one shared
generator instead of each seed's "dropout" stream, and batch normalization, whose running
statistics are module state that ``vmap`` cannot update per seed.

Per-seed bookkeeping: a seed whose ``ctx.log`` or ``ctx.evaluate_test`` raises (a NaN metric,
say) is marked on its context (``ctx.error``) and leaves the group; the others go on. Phase
times are shared by the seeds training together, so each seed is charged its share.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fairtrial.recipes.torchkit import batches


def alive(ctxs: Sequence[Any]) -> list[int]:
    """Indices of the seeds still running (no error recorded on their context)."""
    return [i for i, c in enumerate(ctxs) if getattr(c, "error", None) is None]


def each(ctxs: Sequence[Any], call: Callable[[int, Any], object]) -> None:
    """``call(i, ctx)`` for every running seed; an exception ends that seed only."""
    for i in alive(ctxs):
        try:
            call(i, ctxs[i])
        except Exception as exc:
            ctxs[i].error = exc


@contextmanager
def phase(ctxs: Sequence[Any], name: str) -> Iterator[None]:
    """Time a phase once for the group; each running seed is charged its share."""
    running = alive(ctxs)
    t = time.perf_counter()
    try:
        yield
    finally:
        share = (time.perf_counter() - t) / max(1, len(running))
        for i in running:
            ctxs[i].phases[name] = ctxs[i].phases.get(name, 0.0) + share
        each(ctxs, lambda _i, c: c.flush())


class _StackedLinear(torch.autograd.Function):
    """``x @ w^T + b`` for N stacked linear layers, differentiated as a lone layer is.

    Shapes: x (N, batch, in), w (N, out, in), b (N, out) or None. The backward computes
    each product in the same orientation as autograd does for one ``nn.Linear`` (weight
    gradient as grad^T @ x, input gradient as grad @ w, bias gradient as a sum over the
    batch), so every seed's gradient is bit for bit a lone run's.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        wt = w.transpose(1, 2)
        return torch.bmm(x, wt) if b is None else torch.baddbmm(b.unsqueeze(1), x, wt)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, w = ctx.saved_tensors
        gx = torch.bmm(grad, w) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = grad.sum(dim=1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


#: layers without weights that act on each number alone: the same on (N, batch, ...) input
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Identity)


class SeedStack:
    """N models of one architecture as one: weights stacked along a new first dimension.

    ``body`` names a submodule (an ``nn.Sequential``) that the model's forward is equivalent
    to, such as ``"net"`` for ``x -> self.net(x)``. Its linear layers then run as batched
    matrix products (:class:`_StackedLinear`) whose backward multiplies in the same
    orientation as a lone ``nn.Linear``'s, so gradients agree bit for bit; ``vmap`` of a
    linear layer computes the weight gradient as the transposed product, which rounds
    differently, and Adam amplifies such last-bit differences over thousands of steps.
    Convolutions, layer norms, embeddings and per-example layers such as pooling run as
    :func:`fairtrial.recipes._stacked.stacked_layer` says, each member exactly as alone.
    A model without a ``body`` that has ``forward_stacked(params, x)`` (stacked weights by
    name, (N, batch, ...) input) is run by it; other layers and models go through ``vmap``.
    """

    def __init__(self, models: Sequence[nn.Module], body: str | None = None) -> None:
        from torch.func import stack_module_state

        if not models:
            raise ValueError("SeedStack needs at least one model")
        self.models = list(models)
        params, buffers = stack_module_state(self.models)  # type: ignore[arg-type]
        # Parameters (not plain tensors) so that any torch.optim optimizer takes them.
        self.params = {k: nn.Parameter(v.detach()) for k, v in params.items()}
        self.buffers = buffers
        self.holder = nn.ParameterList(self.params.values())
        # A weightless copy of the architecture to call with each seed's weights.
        self.base = copy.deepcopy(self.models[0]).to("meta")
        self.body: nn.Sequential | None = None
        self.prefix = ""
        if body is not None:
            seq = self.base.get_submodule(body)
            if not isinstance(seq, nn.Sequential):
                raise TypeError(f"body '{body}' must be an nn.Sequential")
            self.body, self.prefix = seq, f"{body}."

    def __len__(self) -> int:
        return len(self.models)

    def __call__(self, x: torch.Tensor, *, shared: bool = False) -> torch.Tensor:
        """Outputs of every seed: ``x`` is (N, batch, ...) per seed, or (batch, ...) if shared."""
        from torch.func import functional_call, vmap

        if self.body is not None:
            if shared:
                x = x.expand(len(self), *x.shape)
            return self._layers(self.body, self.prefix, x)
        forward_stacked = getattr(self.base, "forward_stacked", None)
        if forward_stacked is not None:  # the model's own batched forward (transformer.py)
            if shared:
                x = x.expand(len(self), *x.shape)
            stacked: torch.Tensor = forward_stacked(dict(self.params), x)
            return stacked

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xs: torch.Tensor) -> Any:
            return functional_call(self.base, (p, b), (xs,))

        params: dict[str, torch.Tensor] = dict(self.params)
        out: torch.Tensor = vmap(one, in_dims=(0, 0, None if shared else 0))(
            params, self.buffers, x
        )
        return out

    def _layers(self, seq: nn.Sequential, prefix: str, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        from fairtrial.recipes._stacked import stacked_layer

        for name, layer in seq.named_children():
            at = f"{prefix}{name}."
            if isinstance(layer, nn.Linear):
                apply: Callable[..., torch.Tensor] = _StackedLinear.apply
                x = apply(x, self.params[at + "weight"], self.params.get(at + "bias"))
            elif isinstance(layer, _ELEMENTWISE):
                x = layer(x)
            elif isinstance(layer, nn.Sequential):
                x = self._layers(layer, at, x)
            else:
                p = {k[len(at) :]: v for k, v in self.params.items() if k.startswith(at)}
                b = {k[len(at) :]: v for k, v in self.buffers.items() if k.startswith(at)}
                exact = stacked_layer(layer) if not b else None  # each member as a lone layer
                if exact is not None:
                    x = exact(layer, p, x)
                    continue
                x = vmap(lambda p, b, xs, layer=layer: functional_call(layer, (p, b), (xs,)))(
                    p, b, x
                )
        return x

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Every seed's outputs on the shared ``x`` in eval mode: (N, len(x), ...)."""
        self.base.eval()
        return torch.cat([self(part, shared=True) for part in torch.split(x, chunk)], dim=1)

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Seed ``i``'s weights and buffers (copies)."""
        out = {k: v[i].detach().clone() for k, v in self.params.items()}
        out.update({k: v[i].detach().clone() for k, v in self.buffers.items()})
        return out

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        """The N models, each holding its seed's trained weights."""
        for i, model in enumerate(self.models):
            model.load_state_dict(self.state(i))
        return self.models


def fit_vectorized(
    ctxs: Sequence[Any],
    models: Sequence[nn.Module],
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    lr_at: Callable[[int], float],
    eval_every: int,
    step_unit: int = 1,
    label_smoothing: float = 0.0,
    select: str = "last",
    body: str | None = None,
) -> list[nn.Module]:
    """A recipe's training loop for ``len(ctxs)`` seeds at once; returns the trained models.

    The loop of the built-in recipes (``fit`` in ``mlp.py``), batched: ``steps`` optimizer
    steps on batches of ``batch_size`` rows drawn by :func:`~fairtrial.recipes.torchkit.batches`
    from each seed's "data" stream, the learning rate of step ``s`` (0-based) set to
    ``lr_at(s)``, cross-entropy with ``label_smoothing``. Every ``eval_every`` steps, and once
    before the first, each seed's context gets the point a lone run logs: train_loss and
    train_accuracy (averaged since the last point; the first on the whole training split),
    val_loss, val_accuracy and lr, at ``step = steps done // step_unit``. With
    ``select="best_val"`` each seed keeps the weights of its best evaluation (the first on
    ties).

    ``models[i]`` is seed ``i``'s freshly initialised model (from its own "init" stream);
    ``optimizer(params)`` builds the recipe's optimizer over a list of parameters; ``body``
    is :class:`SeedStack`'s.
    """
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    if len(ctxs) != len(models):
        raise ValueError(f"{len(ctxs)} contexts but {len(models)} models")
    n = len(ctxs)
    stack = SeedStack(models, body)
    opt = optimizer(list(stack.holder.parameters()))
    x, y = train
    x_val, y_val = val
    orders = [batches(c.torch_generator("data"), len(y), batch_size) for c in ctxs]
    best_acc = [-1.0] * n
    best_state: list[dict[str, torch.Tensor] | None] = [None] * n

    def evaluate(step: int, train_loss: list[float], train_acc: list[float], cur: float) -> None:
        logits = stack.logits(x_val)
        accs = (logits.argmax(dim=2) == y_val).float().mean(dim=1).tolist()
        losses = [F.cross_entropy(logits[i], y_val).item() for i in range(n)]

        def log(i: int, ctx: Any) -> None:
            ctx.log(
                step=step // step_unit,
                train_loss=train_loss[i],
                train_accuracy=train_acc[i],
                val_loss=losses[i],
                val_accuracy=accs[i],
                lr=cur,
            )
            if select == "best_val" and accs[i] > best_acc[i]:
                best_acc[i] = accs[i]
                best_state[i] = stack.state(i)

        each(ctxs, log)

    with phase(ctxs, "eval"):
        logits = stack.logits(x)
        first = [
            F.cross_entropy(logits[i], y, label_smoothing=label_smoothing).item() for i in range(n)
        ]
        accs = (logits.argmax(dim=2) == y).float().mean(dim=1).tolist()
        evaluate(0, first, accs, lr_at(0))
    step = 0
    current_lr = lr_at(0)
    while step < steps:
        with phase(ctxs, "train"):
            stack.train()
            loss_sum = torch.zeros(n, device=y.device)
            correct = torch.zeros(n, device=y.device)
            seen = n_steps = 0
            for _ in range(min(eval_every, steps - step)):
                current_lr = lr_at(step)
                for group in opt.param_groups:
                    group["lr"] = current_lr
                idx = [next(o) for o in orders]
                if idx[0] is None:  # full batch: every seed sees the whole split
                    logits = stack(x, shared=True)
                    yb = y.expand(n, -1)
                else:
                    rows = torch.stack(idx)  # type: ignore[arg-type]
                    logits = stack(x[rows])
                    yb = y[rows]
                per_seed = F.cross_entropy(
                    logits.flatten(0, 1),
                    yb.flatten(),
                    reduction="none",
                    label_smoothing=label_smoothing,
                ).view(n, -1)
                loss = per_seed.mean(dim=1)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(dim=2) == yb).sum(dim=1)
                seen += yb.shape[1]
                n_steps += 1
                step += 1
        with phase(ctxs, "eval"):
            evaluate(step, (loss_sum / n_steps).tolist(), (correct / seen).tolist(), current_lr)
    models_out = stack.unstack()
    with torch.no_grad():
        for i, state in enumerate(best_state):
            if state is not None:
                models_out[i].load_state_dict(state)
    return models_out
