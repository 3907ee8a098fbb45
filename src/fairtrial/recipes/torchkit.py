"""What every torch recipe must do the same way: seeded weights, seeded batches, evaluation.

The built-in torch recipes (``mlp.py``, ``cnn1d.py``, ``transformer.py``) each hold their
own model, optimizer, schedule and training loop; copy one to start your own. They share
only what must not differ between recipes, nor between a recipe and the vectorized
backend's batched loop, because the pairing of arms rests on it:

* :func:`init_model` - build a model with weights from the seed's "init" stream alone, then
  seed dropout from its "dropout" stream;
* :func:`batches` and :func:`steps_per_epoch` - the order of the training rows, drawn from
  the "data" stream alone, in equal-size batches;
* :func:`logits_of` and :func:`predictor` - a model's outputs in eval mode, in chunks, and
  the ``predict(x)`` that ``ctx.evaluate_test`` calls;
* :func:`check_device` - the check of a ``device`` option, for the spec.

Pairing (common random numbers): for a given seed, the initial weights depend only on the
"init" stream and the batch order only on the "data" stream, so two arms that differ in, say,
the learning rate start from the same weights and see the same batches. The differences
between arms then measure the change, not the luck of the draw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from numpy.typing import NDArray
from torch import nn

if TYPE_CHECKING:
    from fairtrial.context import TrialContext

__all__ = ["batches", "check_device", "init_model", "logits_of", "predictor", "steps_per_epoch"]


def check_device(value: str) -> None:
    """Raise ValueError unless ``value`` names a torch device.

    For a ``device`` option's field metadata (``"check": check_device``): the spec is checked
    when it is loaded. Whether the device exists is the worker's to find out: the spec may be
    checked on a machine without it.
    """
    try:
        torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError("must be a torch device, e.g. 'cpu', 'cuda' or 'cuda:1'") from None


def init_model(ctx: TrialContext, make: Callable[[], nn.Module], device: str = "cpu") -> nn.Module:
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


def batches(generator: torch.Generator, n: int, batch_size: int) -> Iterator[torch.Tensor | None]:
    """Row indices of each step, epoch after epoch, shuffled by ``generator`` alone.

    Pass ``ctx.torch_generator("data")``. Each epoch is one permutation cut into
    ``n // batch_size`` batches (the remainder is dropped, a different one each epoch, so
    every batch has the same size: BatchNorm never sees a batch of one, and FLOPs counted on
    one step are exact). ``batch_size`` 0 or at least ``n`` means full batch: ``None``.
    """
    if batch_size <= 0 or batch_size >= n:
        while True:
            yield None
    per_epoch = n // batch_size
    while True:
        perm = torch.randperm(n, generator=generator)
        yield from perm[: per_epoch * batch_size].view(per_epoch, batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """How many batches :func:`batches` cuts each epoch of ``n`` rows into."""
    return 1 if batch_size <= 0 or batch_size >= n else n // batch_size


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The model's outputs on ``x`` in eval mode, without gradients, ``chunk`` rows at a time.

    Chunks bound the memory of an evaluation on a large split. Leaves the model in eval mode.
    """
    model.eval()
    return torch.cat([model(part) for part in torch.split(x, chunk)])


def predictor(
    model: nn.Module, to_tensor: Callable[[NDArray[Any]], torch.Tensor]
) -> Callable[[NDArray[Any]], NDArray[Any]]:
    """``predict(x) -> class labels`` (the argmax of :func:`logits_of`) for
    ``ctx.evaluate_test``; ``to_tensor`` turns the raw test inputs into the model's input, as
    the training inputs were."""

    def predict(x: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = logits_of(model, to_tensor(x)).argmax(dim=1).cpu().numpy()
        return out

    return predict
