"""What the framework callbacks share: seeds in a framework's range, scalars, hook-driven phases."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from fairtrial.seeding import STREAMS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fairtrial.context import TrialContext

#: numpy's global seed must be below this; Lightning's seed_everything and transformers'
#: set_seed seed numpy too, so a trial's 63-bit stream seeds are reduced modulo it
SEED_RANGE = 2**32


def framework_seed(ctx: TrialContext, stream: str = "init") -> int:
    """The seed of the trial's stream ``stream``, in the range every framework accepts."""
    return ctx.seed_for(stream) % SEED_RANGE


def trial_seeds(ctx: TrialContext) -> set[int]:
    """The framework seeds of the trial's named streams (what a framework may be seeded with)."""
    return {framework_seed(ctx, stream) for stream in (*STREAMS, "global")}


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics``: floats, ints and one-element tensors or arrays.

    Strings, booleans and anything with more than one element are left out; a key ``step``
    too (the step is the framework's own, passed apart).
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, str | bytes | bool) or key == "step":
            continue
        try:
            out[str(key)] = float(value)  # torch tensors and numpy arrays of one element too
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


class Phases:
    """``ctx.phase`` entered and left from a framework's hooks.

    Phases nest as the framework's loops do (validation inside a training epoch): only the
    innermost one is timed, and the one it interrupted resumes when it ends, so that train
    time excludes the evaluations run during training.
    """

    def __init__(self, ctx: TrialContext) -> None:
        self._ctx = ctx
        self._names: list[str] = []
        self._open: AbstractContextManager[None] | None = None

    def enter(self, name: str) -> None:
        self._stop()
        self._names.append(name)
        self._start()

    def leave(self, name: str) -> None:
        """End the innermost ``name`` (and any phase left open inside it); resume the outer."""
        if name not in self._names:
            return
        self._stop()
        while self._names.pop() != name:
            pass
        self._start()

    def close(self) -> None:
        """End every phase (the framework stopped, or failed)."""
        self._names.clear()
        self._stop()

    def _start(self) -> None:
        if self._names:
            cm = self._ctx.phase(self._names[-1])
            cm.__enter__()
            self._open = cm

    def _stop(self) -> None:
        cm, self._open = self._open, None
        if cm is not None:
            cm.__exit__(None, None, None)  # records the time, then flushes the logged points


class StepFlops:
    """``ctx.count_flops(key)`` entered and left from a framework's step hooks.

    The first step is counted by ``torch.utils.flop_counter``; each later one adds one run. A
    step that never reached its end hook (skipped, or failed) is not counted.
    """

    def __init__(self, ctx: TrialContext, key: str) -> None:
        self._ctx = ctx
        self._key = key
        self._block: Any = None

    def begin(self) -> None:
        self.abandon()
        block = self._ctx.count_flops(self._key)
        block.__enter__()
        self._block = block

    def end(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            block.__exit__(None, None, None)

    def abandon(self) -> None:
        block, self._block = self._block, None
        if block is not None:
            stop = _StepAbandoned()
            block.__exit__(_StepAbandoned, stop, None)


class _StepAbandoned(Exception):
    """Passed to a FLOP block whose step did not end: it is then not counted."""
