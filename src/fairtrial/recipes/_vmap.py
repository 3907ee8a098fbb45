"""Many trials trained as one batched model: the vectorized backend's training loop.

N copies of one architecture have their weights stacked along a new first dimension
(``torch.func.stack_module_state``), after the model-ensembling recipe of the torch.func
documentation and JAX's ``vmap`` (Bradbury et al. 2018). Each member keeps everything that
makes it the trial it is, so member ``i`` trains exactly as it would alone:

* its initial weights come from its own "init" stream (:func:`~.torchkit.init_model`);
* its batches come from its own "data" stream (one :func:`~.torchkit.batches` per member);
* its dropout masks come from its own "dropout" stream, at its own rate;
* its gradient is its own: the summed loss is a sum over disjoint parameter sets;
* its update is its own: each run of equal members (:class:`Member`: learning rate,
  schedule, optimizer hyperparameters, steps, label smoothing, choice of weights) is one
  parameter group of the recipe's own optimizer, whose update is elementwise; a member whose
  steps are done leaves the batch.

Its layers compute as a lone run's do (linear layers as batched products differentiated in
a lone layer's orientation, :class:`_StackedLinear`; the others as
:mod:`fairtrial.recipes._stacked` says), so a member's result does not depend on the members
beside it; the tests hold weights within 1e-5 of a lone run's and predictions equal. Not
vectorized (the recipe raises :class:`~fairtrial.recipes.NotVectorizable`): batch
normalization, whose running statistics are module state per member.

A member whose ``ctx.log`` or ``ctx.evaluate_test`` raises (a NaN metric, say) is marked on
its context (``ctx.error``) and leaves the group; the others go on. Phase times are shared by
the members training together, each charged its share; FLOPs are counted once on the batched
model and shared (:class:`Flops`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fairtrial.recipes._stacked import _StackedLinear, stacked_layer
from fairtrial.recipes.torchkit import batches


def alive(ctxs: Sequence[Any]) -> list[int]:
    """Indices of the seeds still running (no error recorded on their context)."""
    return [i for i, c in enumerate(ctxs) if getattr(c, "error", None) is None]


def evaluate_tests(ctxs: Sequence[Any], predictors: Sequence[Callable[[Any], Any]]) -> None:
    """``ctxs[i].evaluate_test(predictors[i])`` for every running member, its FLOPs counted
    as a lone run counts them (the "test" block)."""
    flops = Flops(ctxs)

    def test(i: int, ctx: Any) -> None:
        with flops.count("test", [i]):
            ctx.evaluate_test(predictors[i])

    each(ctxs, test)


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


class Flops:
    """The matmul/conv FLOPs of each member, counted on the batched model.

    Members of one batched model have equal shapes, so the batched model's FLOPs for a
    block of work (one training step, one evaluation pass) are its members' FLOPs summed;
    each member is charged its share, which is exactly what its lone run counts with
    ``ctx.count_flops(key)``. A block is counted once with ``FlopCounterMode`` and only
    tallied after that; each member's ``batched_flops`` (when its context has one) gets
    ``{key: [per_run, runs]}``.
    """

    def __init__(self, ctxs: Sequence[Any]) -> None:
        self.on = all(hasattr(c, "batched_flops") for c in ctxs)
        self.ctxs = ctxs
        self.per_run: dict[str, int] = {}

    @contextmanager
    def count(self, key: str, members: Sequence[int], share: int | None = None) -> Iterator[None]:
        """Count the block's FLOPs (first time only; ``share`` members did the work, default
        ``members``) and tally one run for each of ``members``."""
        if not self.on or key in self.per_run or not members:
            yield
        else:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as mode:
                yield
            self.per_run[key] = int(mode.get_total_flops()) // (share or len(members))
        if self.on and key in self.per_run:
            for i in members:
                block = self.ctxs[i].batched_flops.setdefault(key, [self.per_run[key], 0])
                block[1] += 1


#: layers without weights that act on each number alone: the same on (N, batch, ...) input
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.Identity)


class SeedStack:
    """N models of one architecture as one: weights stacked along a new first dimension.

    ``runs`` cuts the N members into consecutive runs that each get their own optimizer
    parameter group (per-run learning rate, weight decay, momentum, ...): each run's weights
    are their own stacked ``nn.Parameter`` and a forward pass concatenates the runs still
    active (one run: no copy at all). A run that has finished (:meth:`finish`) drops out of
    the forward pass and keeps its weights.

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

    def __init__(
        self,
        models: Sequence[nn.Module],
        body: str | None = None,
        runs: Sequence[int] | None = None,
    ) -> None:
        from torch.func import stack_module_state

        if not models:
            raise ValueError("SeedStack needs at least one model")
        sizes = list(runs) if runs is not None else [len(models)]
        if sum(sizes) != len(models) or min(sizes) < 1:
            raise ValueError(f"runs {sizes} do not cut {len(models)} members")
        self.models = list(models)
        stacked, self._all_buffers = stack_module_state(self.models)  # type: ignore[arg-type]
        #: member ranges of the runs: run r holds members bounds[r] to bounds[r + 1] - 1
        self.bounds = [0]
        for size in sizes:
            self.bounds.append(self.bounds[-1] + size)
        # Parameters (not plain tensors) so that any torch.optim optimizer takes them.
        self.runs: list[dict[str, nn.Parameter]] = [
            {k: nn.Parameter(v[a:b].detach().clone()) for k, v in stacked.items()}
            for a, b in zip(self.bounds, self.bounds[1:], strict=False)
        ]
        self.active: list[int] = list(range(len(self.runs)))
        #: each member's dropout rate and mask generator (for models with dropout layers)
        self.dropout: list[tuple[float, torch.Generator]] | None = None
        self._select()
        # A weightless copy of the architecture to call with each seed's weights.
        self.base = copy.deepcopy(self.models[0]).to("meta")
        self.body: nn.Sequential | None = None
        self.prefix = ""
        if body is not None:
            seq = self.base.get_submodule(body)
            if not isinstance(seq, nn.Sequential):
                raise TypeError(f"body '{body}' must be an nn.Sequential")
            self.body, self.prefix = seq, f"{body}."

    def _select(self) -> None:
        """The members and buffers of the active runs, in order."""
        self.members = [i for r in self.active for i in range(self.bounds[r], self.bounds[r + 1])]
        index = torch.tensor(self.members, dtype=torch.long)
        self.buffers = {
            k: v.index_select(0, index.to(v.device)) for k, v in self._all_buffers.items()
        }

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The stacked weights of the active members (a concatenation when several runs are)."""
        if len(self.active) == 1:
            return dict(self.runs[self.active[0]])
        return {
            k: torch.cat([self.runs[r][k] for r in self.active]) for k in self.runs[self.active[0]]
        }

    def run_parameters(self, r: int) -> list[nn.Parameter]:
        """Run ``r``'s stacked weights, for its optimizer parameter group."""
        return list(self.runs[r].values())

    def finish(self, r: int) -> None:
        """Run ``r`` is done: it leaves the forward pass; its weights stay as they are."""
        self.active.remove(r)
        if self.active:
            self._select()

    def __len__(self) -> int:
        return len(self.members)

    def __call__(self, x: torch.Tensor, *, shared: bool = False) -> torch.Tensor:
        """Outputs of every active member: ``x`` is (N, batch, ...) per member, or (batch, ...)
        if shared."""
        from torch.func import functional_call, vmap

        params = self.params
        if self.body is not None:
            if shared:
                x = x.expand(len(self), *x.shape)
            return self._layers(params, self.body, self.prefix, x)
        forward_stacked = getattr(self.base, "forward_stacked", None)
        if forward_stacked is not None:  # the model's own batched forward (transformer.py)
            if shared:
                x = x.expand(len(self), *x.shape)
            stacked: torch.Tensor = forward_stacked(params, x)
            return stacked

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xs: torch.Tensor) -> Any:
            return functional_call(self.base, (p, b), (xs,))

        out: torch.Tensor = vmap(one, in_dims=(0, 0, None if shared else 0))(
            params, self.buffers, x
        )
        return out

    def _layers(
        self, params: dict[str, torch.Tensor], seq: nn.Sequential, prefix: str, x: torch.Tensor
    ) -> torch.Tensor:
        from torch.func import functional_call, vmap

        for name, layer in seq.named_children():
            at = f"{prefix}{name}."
            if isinstance(layer, nn.Linear):
                apply: Callable[..., torch.Tensor] = _StackedLinear.apply
                x = apply(x, params[at + "weight"], params.get(at + "bias"))
            elif isinstance(layer, _ELEMENTWISE):
                x = layer(x)
            elif isinstance(layer, nn.Dropout):
                x = self._dropout(x) if self.base.training else x
            elif isinstance(layer, nn.Sequential):
                x = self._layers(params, layer, at, x)
            else:
                p = {k[len(at) :]: v for k, v in params.items() if k.startswith(at)}
                b = {k[len(at) :]: v for k, v in self.buffers.items() if k.startswith(at)}
                exact = stacked_layer(layer) if not b else None  # each member as a lone layer
                if exact is not None:
                    x = exact(layer, p, x)
                    continue
                x = vmap(lambda p, b, xs, layer=layer: functional_call(layer, (p, b), (xs,)))(
                    p, b, x
                )
        return x

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Each active member's dropout, with its own rate and its own "dropout" stream.

        A lone ``nn.Dropout`` multiplies by ``bernoulli(1 - p) / (1 - p)`` drawn from the
        global generator, which :func:`~fairtrial.recipes.torchkit.init_model` seeded from
        the "dropout" stream; each member draws the same mask from a generator seeded alike.
        """
        if self.dropout is None:
            raise ValueError("a model with dropout layers needs each member's dropout rate")
        masks = []
        for i in self.members:
            keep = 1 - self.dropout[i][0]
            mask = torch.empty(x.shape[1:], dtype=x.dtype)
            masks.append(mask.bernoulli_(keep, generator=self.dropout[i][1]).div_(keep))
        return x * torch.stack(masks).to(x.device)

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Every active member's outputs on the shared ``x`` in eval mode: (N, len(x), ...)."""
        self.base.eval()
        return torch.cat([self(part, shared=True) for part in torch.split(x, chunk)], dim=1)

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weights and buffers (copies)."""
        r = next(r for r in range(len(self.runs)) if i < self.bounds[r + 1])
        at = i - self.bounds[r]
        out = {k: v[at].detach().clone() for k, v in self.runs[r].items()}
        out.update({k: v[i].detach().clone() for k, v in self._all_buffers.items()})
        return out

    @torch.no_grad()
    def unstack(self) -> list[nn.Module]:
        """The N models, each holding its member's trained weights."""
        for i, model in enumerate(self.models):
            model.load_state_dict(self.state(i))
        return self.models


@dataclass(frozen=True)
class Member:
    """How one member of a batched model trains, when members may differ.

    ``steps`` optimizer steps at learning rate ``lr_at(step)`` (0-based), the optimizer
    ``optimizer(params)`` builds over a list of parameters, cross-entropy with
    ``label_smoothing``, and the weights scored: the last ones, or with
    ``select="best_val"`` those of the best evaluation (the first on ties). Consecutive
    members with equal ``key`` (the recipe's config, say) share one optimizer parameter group.
    """

    steps: int
    lr_at: Callable[[int], float]
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    label_smoothing: float = 0.0
    select: str = "last"
    key: Hashable = None
    #: the rate of the model's ``nn.Dropout`` layers for this member (a model with dropout
    #: layers: every member's is above 0)
    dropout: float = 0.0


def runs_of(keys: Sequence[Hashable]) -> list[int]:
    """Sizes of the runs of equal consecutive ``keys``."""
    sizes: list[int] = []
    for i, key in enumerate(keys):
        if i and key == keys[i - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def fit_members(
    ctxs: Sequence[Any],
    models: Sequence[nn.Module],
    members: Sequence[Member],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    eval_every: int,
    step_unit: int = 1,
    body: str | None = None,
) -> list[nn.Module]:
    """A recipe's training loop for ``len(ctxs)`` members at once; returns the trained models.

    The loop of the built-in recipes (``fit`` in ``mlp.py``), batched: member ``i`` takes
    ``members[i].steps`` optimizer steps on batches of ``batch_size`` rows drawn by
    :func:`~fairtrial.recipes.torchkit.batches` from its own "data" stream, at learning rate
    ``members[i].lr_at(s)`` for step ``s`` (0-based), with its own optimizer hyperparameters
    and label smoothing. Every ``eval_every`` steps, after its last step, and once before the
    first, each member's context gets the point a lone run logs: train_loss and
    train_accuracy (averaged since the last point; the first on the whole training split),
    val_loss, val_accuracy and lr, at ``step = steps done // step_unit``. A member whose steps
    are done leaves the batch (it costs nothing more) and keeps its weights.

    ``models[i]`` is member ``i``'s freshly initialised model (from its own "init" stream);
    ``body`` is :class:`SeedStack`'s. Members that differ only in what :class:`Member` holds
    train together; each run of equal keys is one optimizer parameter group, so its update is
    the one a lone optimizer makes, element for element.
    """
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1, got {eval_every}")
    if not len(ctxs) == len(models) == len(members):
        raise ValueError(f"{len(ctxs)} contexts, {len(models)} models, {len(members)} members")
    n = len(ctxs)
    sizes = runs_of([m.key for m in members])
    stack = SeedStack(models, body, sizes)
    if any(m.dropout > 0 for m in members):
        # the masks of a lone run come from the global generator seeded from its "dropout"
        # stream (init_model), on the CPU
        stack.dropout = [
            (m.dropout, torch.Generator().manual_seed(c.seed_for("dropout")))
            for m, c in zip(members, ctxs, strict=True)
        ]
    heads = stack.bounds[:-1]  # the first member of each run speaks for the run
    opt = members[0].optimizer(stack.run_parameters(0))
    group_of = {0: opt.param_groups[0]}
    for r in range(1, len(sizes)):
        other = members[heads[r]].optimizer(stack.run_parameters(r))
        if type(other) is not type(opt):
            raise ValueError(
                f"members of one batched model use one optimizer class, not "
                f"{type(opt).__name__} and {type(other).__name__}"
            )
        opt.add_param_group(dict(other.param_groups[0]))
        group_of[r] = opt.param_groups[-1]
    for group in opt.param_groups:
        # One call per operation over all of a run's weights instead of one per tensor: the
        # same kernels, element for element, as the single-tensor update of a lone run.
        if group.get("foreach") is None and not group.get("fused"):
            group["foreach"] = True
    x, y = train
    x_val, y_val = val
    orders = [batches(c.torch_generator("data"), len(y), batch_size) for c in ctxs]
    best_acc = [-1.0] * n
    best_state: list[dict[str, torch.Tensor] | None] = [None] * n
    loss_sum = torch.zeros(n, device=y.device)
    correct = torch.zeros(n, device=y.device)
    seen, n_steps = [0] * n, [0] * n
    lr_now = [m.lr_at(0) for m in members]

    flops = Flops(ctxs)

    def evaluate(step: int, due: list[int], loss: list[float], acc: list[float]) -> None:
        with flops.count("eval_val", due, share=len(stack)):
            logits = stack.logits(x_val)
        row = {i: k for k, i in enumerate(stack.members)}
        accs = (logits.argmax(dim=2) == y_val).float().mean(dim=1).tolist()
        losses = {i: F.cross_entropy(logits[row[i]], y_val).item() for i in due}

        def log(i: int, ctx: Any) -> None:
            if i not in losses:
                return
            k = row[i]
            ctx.log(
                step=step // step_unit,
                train_loss=loss[k],
                train_accuracy=acc[k],
                val_loss=losses[i],
                val_accuracy=accs[k],
                lr=lr_now[i],
            )
            if members[i].select == "best_val" and accs[k] > best_acc[i]:
                best_acc[i] = accs[k]
                best_state[i] = stack.state(i)

        each(ctxs, log)

    with phase(ctxs, "eval"):
        with flops.count("eval_train", range(n)):
            logits = stack.logits(x)
        first = [
            F.cross_entropy(logits[i], y, label_smoothing=members[i].label_smoothing).item()
            for i in range(n)
        ]
        accs = (logits.argmax(dim=2) == y).float().mean(dim=1).tolist()
        evaluate(0, list(range(n)), first, accs)
    for r in [r for r in stack.active if members[heads[r]].steps <= 0]:
        stack.finish(r)
        opt.param_groups[:] = [g for g in opt.param_groups if g is not group_of[r]]
    step = 0
    while stack.active:
        ends = [members[heads[r]].steps for r in stack.active]
        until = min([step - step % eval_every + eval_every, *ends])
        with phase([ctxs[i] for i in stack.members], "train"):
            stack.train()
            index = torch.tensor(stack.members, dtype=torch.long, device=y.device)
            spans = _spans(stack)
            while step < until:
                for r in stack.active:
                    lr = members[heads[r]].lr_at(step)
                    group_of[r]["lr"] = lr
                    for i in range(stack.bounds[r], stack.bounds[r + 1]):
                        lr_now[i] = lr
                idx = [next(orders[i]) for i in stack.members]
                # as a lone run counts: forward, loss and backward; not the optimizer's update
                with flops.count("train_step", stack.members):
                    if idx[0] is None:  # full batch: every member sees the whole split
                        logits = stack(x, shared=True)
                        yb = y.expand(len(stack), -1)
                    else:
                        rows = torch.stack(idx)  # type: ignore[arg-type]
                        logits = stack(x[rows])
                        yb = y[rows]
                    loss = torch.cat(
                        [
                            F.cross_entropy(
                                logits[a:b].flatten(0, 1),
                                yb[a:b].flatten(),
                                reduction="none",
                                label_smoothing=members[heads[r]].label_smoothing,
                            )
                            .view(b - a, -1)
                            .mean(dim=1)
                            for a, b, r in spans
                        ]
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.sum().backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss_sum.index_add_(0, index, loss.detach())
                correct.index_add_(
                    0, index, (logits.detach().argmax(dim=2) == yb).sum(dim=1).to(correct.dtype)
                )
                for i in stack.members:
                    seen[i] += yb.shape[1]
                    n_steps[i] += 1
                step += 1
        with phase([ctxs[i] for i in stack.members], "eval"):
            due = [
                i
                for r in stack.active
                for i in range(stack.bounds[r], stack.bounds[r + 1])
                if step % eval_every == 0 or step == members[i].steps
            ]
            # as a lone run averages: the float32 sum, divided in Python
            sums, hits = loss_sum.tolist(), correct.tolist()
            evaluate(
                step,
                due,
                [sums[i] / max(1, n_steps[i]) for i in stack.members],
                [hits[i] / max(1, seen[i]) for i in stack.members],
            )
            for i in due:
                loss_sum[i] = 0.0
                correct[i] = 0.0
                seen[i] = n_steps[i] = 0
        for r in [r for r in stack.active if members[heads[r]].steps <= step]:
            stack.finish(r)
            opt.param_groups[:] = [g for g in opt.param_groups if g is not group_of[r]]
    models_out = stack.unstack()
    with torch.no_grad():
        for i, state in enumerate(best_state):
            if state is not None:
                models_out[i].load_state_dict(state)
    return models_out


def _spans(stack: SeedStack) -> list[tuple[int, int, int]]:
    """(start, end, run) of each active run, as rows of the active members' outputs."""
    out, at = [], 0
    for r in stack.active:
        size = stack.bounds[r + 1] - stack.bounds[r]
        out.append((at, at + size, r))
        at += size
    return out
