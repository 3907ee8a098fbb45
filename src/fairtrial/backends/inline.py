"""Trials one after another in this process (``--backend inline``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fairtrial.backends.base import Backend, Sink, TrialClock, TrialJob
from fairtrial.execute import execute_trial

#: whether a trial has run in this process yet (the first pays one-time costs: lazy imports,
#: kernel and allocator caches)
_warm = False


class InlineBackend(Backend):
    """Runs trials one after another in this process: no isolation, no time limit.

    For tests and debugging (breakpoints work); a crash of the trial is a crash of the run.
    """

    name = "inline"

    def run(self, jobs: Iterator[TrialJob], sink: Sink, total: int) -> None:
        global _warm
        for job in jobs:
            sink.started(job)

            def emit(kind: str, payload: Any, job: TrialJob = job) -> None:
                sink.event(job, kind, payload)

            clock = TrialClock()
            try:
                outcome = execute_trial(job, emit)
            except BaseException:  # Ctrl-C, a stop signal: the trial resumes next run
                sink.finished(job, clock.interrupted())
                raise
            if not _warm:  # it paid this process's one-time costs: no time comparison uses it
                _warm = True
                outcome = replace(outcome, compute={**outcome.compute, "first_in_process": True})
            sink.finished(job, outcome)
