"""Layers of N stacked models that compute each member exactly as the lone layer does.

:class:`~fairtrial.recipes._vmap.SeedStack` runs N seeds of one architecture as one model, its
weights stacked along a new first dimension and its inputs shaped (N, batch, ...). ``vmap`` of
a layer with weights rewrites it as a different kernel (a convolution becomes a grouped one,
a layer norm a plain normalization followed by a multiplication) that may round differently
from the lone layer, and Adam amplifies such last-bit differences step after step. The forms
here keep every member's arithmetic that of a lone run, so each seed's weights are bit for bit
those of its sequential run on one thread (on more, a kernel that splits a member's sums over
threads, such as a layer norm's gradient, may add in another order than the lone run did):

* linear layers: one batched matrix product (``_StackedLinear``, in the same orientation as a
  lone ``nn.Linear``, forward and backward), the leading dimensions flattened as
  ``F.linear`` flattens them;
* convolutions, layer norms, embeddings: the lone kernel once per member (on this CPU a
  loop over 10 members' convolutions took 0.7x the time of the equivalent grouped
  convolution, which was exact too, and it leaves no doubt about the kernel);
* weightless layers that treat each example alone (pooling, flattening) and attention: the
  lone kernel once, on the members' examples side by side as one larger batch.

Each member's gradient then reaches its slice of the stacked weights through ``unbind``,
whose backward only copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


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


__all__ = [
    "attention",
    "embedding",
    "layer_norm",
    "linear",
    "per_example",
    "stacked_layer",
]


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``nn.Linear`` of every member: x (N, ..., in), w (N, out, in), b (N, out) or None.

    A lone ``F.linear`` on a contiguous input of more than two dimensions multiplies it
    flattened to (rows, in); so does this, one batched product for all members.
    """
    n, width = x.shape[0], x.shape[-1]
    flat = x.reshape(n, -1, width)
    apply: Callable[..., torch.Tensor] = _StackedLinear.apply
    return apply(flat, w, b).view(*x.shape[:-1], w.shape[1])


def layer_norm(
    x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, eps: float
) -> torch.Tensor:
    """``nn.LayerNorm`` over the last dimension of every member: x (N, ..., d), w, b (N, d)."""
    shape = (x.shape[-1],)
    ws = w.unbind(0) if w is not None else [None] * len(x)
    bs = b.unbind(0) if b is not None else [None] * len(x)
    return torch.stack(
        [
            F.layer_norm(xi, shape, wi, bi, eps)
            for xi, wi, bi in zip(x.unbind(0), ws, bs, strict=True)
        ]
    )


def embedding(idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``nn.Embedding`` (no padding index, no max norm) of every member: idx (N, ...)."""
    return torch.stack(
        [F.embedding(i, wi) for i, wi in zip(idx.unbind(0), w.unbind(0), strict=True)]
    )


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, is_causal: bool
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` of every member: q, k, v (N, batch, heads, T, d).

    Attention mixes the positions of one example and head, never two examples, so the
    members' examples go through the lone kernel as one batch of N * batch.
    """
    n = q.shape[0]
    out = F.scaled_dot_product_attention(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), is_causal=is_causal
    )
    return out.view(n, -1, *out.shape[1:])


def per_example(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A weightless layer that treats each example alone, on (N, batch, ...) input."""
    out: torch.Tensor = layer(x.flatten(0, 1))
    return out.view(*x.shape[:2], *out.shape[1:])


def _conv(layer: nn.Module, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w, b = p["weight"], p.get("bias")
    bs = b.unbind(0) if b is not None else [None] * len(x)
    conv: Callable[..., torch.Tensor] = layer._conv_forward  # type: ignore[assignment]
    return torch.stack(
        [conv(xi, wi, bi) for xi, wi, bi in zip(x.unbind(0), w.unbind(0), bs, strict=True)]
    )


def _layer_norm(layer: nn.Module, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    assert isinstance(layer, nn.LayerNorm)
    if len(layer.normalized_shape) != 1:
        return _vmapped(layer, p, x)
    return layer_norm(x, p.get("weight"), p.get("bias"), layer.eps)


def _embedding(layer: nn.Module, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    assert isinstance(layer, nn.Embedding)
    if layer.padding_idx is not None or layer.max_norm is not None or layer.sparse:
        return _vmapped(layer, p, x)
    return embedding(x, p["weight"])


def _per_example(layer: nn.Module, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Flatten) and layer.start_dim == 0:
        return _vmapped(layer, p, x)  # would merge the examples of one member
    return per_example(layer, x)


def _vmapped(layer: nn.Module, p: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call, vmap

    out: torch.Tensor = vmap(lambda p, xs: functional_call(layer, p, (xs,)))(dict(p), x)
    return out


_PER_EXAMPLE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.Flatten,
)

StackedLayer = Callable[[nn.Module, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def stacked_layer(layer: nn.Module) -> StackedLayer | None:
    """How :class:`~fairtrial.recipes._vmap.SeedStack` runs ``layer`` exactly, or None.

    The callable takes the layer (its architecture only), the members' stacked weights of
    that layer by local name (``{"weight": (N, ...), "bias": (N, ...)}``) and the
    (N, batch, ...) input. None: ``vmap`` it.
    """
    if isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        return _conv
    if isinstance(layer, nn.LayerNorm):
        return _layer_norm
    if isinstance(layer, nn.Embedding):
        return _embedding
    if isinstance(layer, _PER_EXAMPLE):
        return _per_example
    return None
