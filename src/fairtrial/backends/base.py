"""The backend seam: run trials, report what happened through a :class:`Sink`.

A backend only decides *where* a trial runs (this process, a worker process, a cluster);
:func:`fairtrial.execute.execute_trial` is what runs it, the same code everywhere, so every
backend gives the same result for the same trial. Backends exchange
:class:`~fairtrial.trial.TrialJob` and :class:`~fairtrial.trial.TrialOutcome` (importable from
here too), and time every trial with a :class:`TrialClock`, which also keeps its time limit.

A run stops the same way on Ctrl-C (SIGINT), SIGTERM and SIGHUP: :func:`stop_on_signals`
turns the last two into :class:`RunInterrupted`, a KeyboardInterrupt, and every backend
answers a KeyboardInterrupt by stopping its workers and reporting each trial it was running
``interrupted`` (a later run resumes it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from fairtrial.trial import INTERRUPTED, Status, TrialJob, TrialOutcome, interrupted

__all__ = [
    "INTERRUPTED",
    "SETUP_ALLOWANCE",
    "STOP_SIGNALS",
    "Backend",
    "RunInterrupted",
    "Sink",
    "Status",
    "TrialClock",
    "TrialJob",
    "TrialOutcome",
    "interrupted",
    "stop_on_signals",
    "until_first",
    "with_setup",
]

#: seconds a trial's setup (a worker's first imports, loading the task) may take on top of its
#: time limit; the limit itself counts from the end of the setup (the "setup" event)
SETUP_ALLOWANCE = 120.0


class Sink(Protocol):
    """Receives what backends report; the runner's sink writes it to the ledger."""

    def started(self, job: TrialJob) -> None: ...

    def event(self, job: TrialJob, kind: str, payload: Any) -> None: ...

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None: ...

    def submitted(self, job: TrialJob, job_id: str, handle: dict[str, Any]) -> None:
        """A cluster backend submitted ``job`` as the cluster's job ``job_id``; ``handle`` is
        what a later run needs to collect it (:meth:`Backend.adopts`)."""

    def detached(self, job: TrialJob) -> None:
        """The run stops, but ``job``'s cluster job goes on: its trial stays running, for the
        next run to collect."""


@dataclass
class TrialClock:
    """One trial's wall clock and, with a time limit, its deadline.

    The limit counts from the end of the trial's setup (:meth:`setup_done`, when the trial
    emits its "setup" event); until then, from :meth:`start`, the trial has the limit plus
    :data:`SETUP_ALLOWANCE`. Without a limit (``None`` or 0) the trial never expires. Time is
    ``time.monotonic()``.
    """

    limit: float | None = None
    #: when the trial's wall time counts from
    started: float = field(default_factory=time.monotonic)
    #: when the trial is past its limit; None while no limit runs
    deadline: float | None = None

    @classmethod
    def of(cls, job: TrialJob, default: float | None = None) -> TrialClock:
        """The clock of ``job``: its own time limit, else the backend's ``default``."""
        return cls(job.time_limit or default)

    def start(self) -> None:
        """The trial starts now: its wall time counts from here, and its setup may take the
        limit plus :data:`SETUP_ALLOWANCE`."""
        self.started = time.monotonic()
        self.deadline = self.started + self.limit + SETUP_ALLOWANCE if self.limit else None

    def setup_done(self) -> None:
        """The trial's setup is over: its time limit counts from now."""
        if self.limit:
            self.deadline = time.monotonic() + self.limit

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wall(self) -> float:
        """Seconds since the trial started."""
        return time.monotonic() - self.started

    def exceeded(self) -> TrialOutcome:
        """The outcome of a trial stopped at its time limit (failed: a hang would hang again)."""
        error = f"time limit of {self.limit or 0:g} s exceeded"
        return TrialOutcome("failed", error=error, wall_time=self.wall())

    def interrupted(self) -> TrialOutcome:
        """The outcome of this trial when the run stops under it."""
        return interrupted(self.wall())


def with_setup(limit: float) -> float:
    """The seconds a trial with time limit ``limit`` may take in all, its setup included
    (for a cluster's own limit on the trial's job)."""
    return limit + SETUP_ALLOWANCE


def until_first(clocks: Iterable[TrialClock]) -> float | None:
    """Seconds until the first of ``clocks`` expires (0 when one has), None when none has a
    deadline: how long a backend may wait for its trials before checking their limits."""
    deadlines = [c.deadline for c in clocks if c.deadline is not None]
    return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None


#: the signals that stop a run as Ctrl-C does (those this platform has)
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal other than SIGINT; ``signum`` says which.

    A KeyboardInterrupt, so that everything that handles Ctrl-C (stopping the workers,
    recording the trials that were running ``interrupted``) handles it the same way.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"the run was stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`RunInterrupted` (also usable
    as a decorator).

    Only in the main thread (where Python runs signal handlers), and only for a signal whose
    handler is the default one: a handler of the caller's, or an ignored signal (``nohup``
    ignores SIGHUP), stays as it is. The previous handlers are back when the block ends. A
    second signal while the run is stopping is ignored, so that the stop can record what was
    running; SIGKILL still ends it at once (the workers then notice and exit).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: int | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if received is None:
            received = signum
            raise RunInterrupted(signum)

    ours = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is signal.SIG_DFL]
    try:
        for sig in ours:
            signal.signal(sig, handler)
        yield
    except KeyboardInterrupt as exc:
        # some libraries (Ray) answer any exception from a signal handler with a plain
        # KeyboardInterrupt: it still says which signal stopped the run
        if received is not None and not isinstance(exc, RunInterrupted):
            raise RunInterrupted(received) from exc
        raise
    finally:
        for sig in ours:
            signal.signal(sig, signal.SIG_DFL)


class Backend(ABC):
    """Where trials run. ``run`` pulls jobs lazily (each pull claims a trial in the ledger)."""

    name: str = "backend"
    #: how many trials run at once; the runner records it in provenance
    workers: int = 1
    threads: int | None = None

    def adopts(self, handle: dict[str, Any]) -> bool:
        """Whether this backend can collect a job an earlier run submitted (``handle``, as
        given to :meth:`Sink.submitted`); backends that run trials themselves cannot."""
        return False

    @abstractmethod
    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        """Run every job from ``jobs``; report each through ``sink``; KeyboardInterrupt stops."""
