"""Observers of a run: who else hears of each trial as the driver records it.

The run's sink writes what backends report to the ledger; observers hear the same three
things (a trial started, it reported an event, it ended) as the sink records them, in the
driver. A live mirror to a tracker (:class:`fairtrial.exports.mirror.MlflowMirror`) is one.
An observer is called on the driver's own path, so it must return at once and never raise:
one that talks to a server hands its work to a thread (or a process) of its own.

Observers hear the trials the experiment compares (every arm on every seed), not the tuning,
untuned or repeated timing trials. Whoever runs an experiment adds them for the run's length::

    with observing(mirror):
        run_experiment(spec, ledger, backend)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fairtrial.trial import TrialJob, TrialOutcome


class Observer(Protocol):
    """What an observer hears, in the driver: quick, and never raising."""

    def started(self, job: TrialJob) -> None: ...

    def event(self, job: TrialJob, kind: str, payload: Any) -> None: ...

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None: ...


_OBSERVERS: ContextVar[tuple[Observer, ...]] = ContextVar("fairtrial_observers", default=())


@contextlib.contextmanager
def observing(*observers: Observer) -> Iterator[None]:
    """While the block runs, every run started in it tells ``observers`` of its trials."""
    token = _OBSERVERS.set(_OBSERVERS.get() + observers)
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def active() -> tuple[Observer, ...]:
    """The observers of runs started now."""
    return _OBSERVERS.get()
