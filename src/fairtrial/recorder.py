"""The run's recorder: every event a backend reports about a trial, written to the ledger.

A backend only runs trials; the recorder turns what it reports (a trial began, logged a
metric, ended with an outcome) into ledger writes, keeps the run's summary and progress bar,
and stops a run early when the first trial of every arm failed the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from fairtrial.backends.base import TrialJob, TrialOutcome
from fairtrial.ledger import Ledger, TrialEvent

if TYPE_CHECKING:
    from fairtrial.observe import Observer
    from fairtrial.rounds import RunSummary


#: seconds an event a running trial reported may be held back (see :meth:`_LedgerSink.holding`)
#: to be written with others: the most a killed run can lose of what its trials reported
HOLD_SECONDS = 0.5


class StopRun(Exception):
    """Raised through a backend to stop a run early (fail fast); the message says why."""


def error_key(error: str, job: TrialJob) -> str:
    """An error with what differs from trial to trial (its folder, numbers) taken out, so
    the same failure on two seeds counts as one."""
    text = error
    if job.workdir:
        text = text.replace(job.workdir, "<workdir>")
    return re.sub(r"\d+(\.\d+)?", "N", text)


def traceback_tail(detail: str, lines: int = 8) -> str:
    """The last lines of a traceback or of a command's output: where it went wrong."""
    kept = [line for line in detail.rstrip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class _LedgerSink:
    def __init__(
        self,
        ledger: Ledger,
        summary: RunSummary,
        provenance_id: str,
        task_checksum: str,
        progress: Progress | None,
        task_id: Any,
        console: Console,
    ) -> None:
        self.ledger = ledger
        self.summary = summary
        self.provenance_id = provenance_id
        self.task_checksum = task_checksum
        self.progress = progress
        self.task_id = task_id
        self.console = console
        #: lost trials with attempts left, re-run by the next round (trial_id -> its job)
        self.requeue: list[TrialJob] = []
        self.retries: dict[str, int] = {}
        self.max_retries = 0
        #: fail fast: the first ending of each arm in this run (None: finished), and the arms
        self.first_end: dict[str, str | None] = {}
        self.fail_seeds: dict[str, set[int]] = {}
        #: the trials are tuning trials (fail fast only on an error two configurations share)
        self.tuning = False
        self.arms: set[str] = set()
        self.fail_counts: dict[str, int] = {}
        self.keep_going = False
        #: errors already shown with their traceback
        self.shown: set[str] = set()
        #: per arm, the predictions hash of each seed's test evaluation (seed-blind check)
        self.predictions: dict[str, dict[int, str]] = {}
        self.blind_warned: set[str] = set()
        #: the spec says the recipe has no randomness: seeds are expected to agree
        self.deterministic = False
        #: this run's owner id (fairtrial.ledger.lease.owner_id)
        self.owner: str | None = None
        #: events held back to be written together (see holding), and since when
        self.holding_events = False
        self.held: list[TrialEvent] = []
        self.held_since: float | None = None
        #: told of every start, event and ending the sink records (fairtrial.observe)
        self.observers: list[Observer] = []

    def _end(self, job: TrialJob, outcome: TrialOutcome, compute: dict[str, Any]) -> bool:
        """Write how ``job``'s attempt ended, with its compute record, its config reads and
        every held event, in one transaction; False when another run took the trial over."""
        events = list(self.held)
        current = self.ledger.finish(
            job.trial_id,
            job.attempt,
            status=outcome.status,
            result=outcome.result,
            error=outcome.error,
            error_detail=outcome.error_detail,
            wall_time=outcome.wall_time,
            phases=outcome.phases,
            task_checksum=self.task_checksum,
            provenance_id=self.provenance_id,
            owner=self.owner,
            compute=compute,
            config_read=outcome.config_read,
            events=events,
        )
        del self.held[: len(events)]
        self.held_since = None
        for o in self.observers:
            o.finished(job, outcome)
        return current

    def _lost(self, job: TrialJob, outcome: TrialOutcome, compute: dict[str, Any]) -> bool:
        """Queue a lost trial for its next attempt; False when it has no attempts left.

        The lost attempt is stored ``interrupted`` (a run killed right now resumes it) with
        its reason; its metrics stay under its own attempt number, its compute record says
        ``lost``.
        """
        done = self.retries.get(job.trial_id, 0)
        if done >= self.max_retries:
            return False
        reason = outcome.error or "worker lost"
        self.retries[job.trial_id] = done + 1
        error = f"{reason}; retried as attempt {job.attempt + 1}"
        ending = dataclasses.replace(outcome, status="interrupted", error=error)
        if not self._end(job, ending, compute):  # another run holds the trial now: it runs it
            self._say_superseded(job, "lost")
            return True
        self.requeue.append(job)
        self.summary.retried += 1
        self.console.print(
            f"[yellow]lost[/] {escape(job.arm)} seed {job.seed} attempt {job.attempt}: "
            f"{escape(reason)}; retrying ({done + 1} of {self.max_retries})",
            highlight=False,
            markup=True,
        )
        return True

    def started(self, job: TrialJob) -> None:
        for o in self.observers:
            o.started(job)

    def submitted(self, job: TrialJob, job_id: str, handle: dict[str, Any]) -> None:
        # written at once: a driver killed right after the submission must find the job
        self.ledger.record_job(
            job.trial_id, job.attempt, str(handle.get("backend", "")), job_id, handle
        )

    def detached(self, job: TrialJob) -> None:
        if self.owner is not None and self.ledger.release(job.trial_id, job.attempt, self.owner):
            self.summary.detached += 1

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While the block runs, events wait (at most :data:`HOLD_SECONDS`, see :meth:`due`)
        to be written with the next trial's ending, or with each other by :meth:`flush`:
        one transaction instead of one per event. A backend that holds events calls
        :meth:`flush` once :meth:`due` has passed; every event is written when the block ends.
        """
        self.holding_events = True
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the error on its way out says more
                self.flush()
            raise
        else:
            self.flush()
        finally:
            self.holding_events = False

    def due(self) -> float | None:
        """When (``time.monotonic()``) the held events must be written; None when none is held."""
        return None if self.held_since is None else self.held_since + HOLD_SECONDS

    def flush(self) -> None:
        """Write the held events now, in one transaction."""
        events = list(self.held)
        if events:
            self.ledger.add_events(events)
            del self.held[: len(events)]
        self.held_since = None

    def event(self, job: TrialJob, kind: str, payload: Any) -> None:
        if kind not in ("metrics", "test"):
            return
        event = TrialEvent(job.trial_id, job.attempt, job.experiment_id, kind, payload)
        if self.holding_events:
            if self.held_since is None:
                self.held_since = time.monotonic()
            self.held.append(event)
        else:
            self.ledger.add_events([event])
        # a recipe's own evaluation holds scores, not predictions: equal scores are no sign of
        # seeds that do not reach the recipe
        if kind == "test" and payload.get("evaluation") != "recipe":
            self.predictions.setdefault(job.arm, {})[job.seed] = payload["predictions_sha256"]
        for o in self.observers:
            o.event(job, kind, payload)

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None:
        # Every ending stores a compute record: a crashed trial's figures are results too. A
        # worker that died took its meter along; then only the wall time is known.
        compute = outcome.compute or {
            "version": 1,
            "status": outcome.status,
            "wall_time": outcome.wall_time,
            "phases": dict(outcome.phases),
            "partial": "the worker was lost (killed, crashed or timed out): only the wall "
            "time seen by the run is known",
        }
        if outcome.status == "lost":
            if self._lost(job, outcome, compute):
                return  # retried: this attempt's record stays "lost"
            done = self.retries.get(job.trial_id, 0)
            tries = f" (gave up after {done + 1} attempts)" if done else ""
            error = (outcome.error or "worker lost") + tries
            outcome = dataclasses.replace(outcome, status="failed", error=error)
            compute = {**compute, "status": outcome.status}
        current = self._end(job, outcome, compute)
        if not current:
            result = f" {outcome.result:.6g}" if outcome.result is not None else ""
            self._say_superseded(job, outcome.status + result)
            return
        s = self.summary
        if outcome.status == "interrupted":
            s.interrupted += 1
            return
        s.ran += 1
        if outcome.status == "finished":
            s.finished += 1
            self._check_seeds_reach(job)
        else:
            if outcome.status == "diverged":
                s.diverged += 1
            else:
                s.failed += 1
            s.failures.append((job.trial_id, outcome.error or outcome.status))
            self._report_failure(job, outcome)
        if self.progress is not None:
            self.progress.update(
                self.task_id,
                advance=1,
                failures=s.failed + s.diverged,
            )
        self._fail_fast(job, outcome)

    def _say_superseded(self, job: TrialJob, ending: str) -> None:
        """An attempt ended after its lease expired and another run took the trial over."""
        self.summary.superseded += 1
        self.console.print(
            f"[bold yellow]late[/] {escape(job.arm)} seed {job.seed} attempt {job.attempt} "
            f"ended ({escape(ending)}) after its lease expired and another run took the trial "
            "over: this ending is kept in the ledger as a superseded attempt, not as the "
            "trial's result",
            highlight=False,
            markup=True,
        )
        if self.progress is not None:
            self.progress.update(self.task_id, advance=1)

    def _report_failure(self, job: TrialJob, outcome: TrialOutcome) -> None:
        """One line per failed trial; the traceback's last lines once per distinct error."""
        self.console.print(
            f"[red]{outcome.status}[/] {escape(job.arm)} seed {job.seed}: "
            f"{escape(outcome.error or '')}",
            highlight=False,
            markup=True,
        )
        key = error_key(outcome.error or outcome.status, job)
        if key in self.shown or not outcome.error_detail:
            return
        self.shown.add(key)
        tail = traceback_tail(outcome.error_detail)
        self.console.print(
            "[dim]  " + escape(tail).replace("\n", "\n  ") + "[/]",
            highlight=False,
            markup=True,
        )

    def _check_seeds_reach(self, job: TrialJob) -> None:
        """Warn as soon as two seeds of an arm gave the very same test predictions."""
        seen = self.predictions.get(job.arm, {})
        if job.arm in self.blind_warned or len(seen) < 2:
            return
        if self.deterministic:
            if len(set(seen.values())) > 1:
                self.blind_warned.add(job.arm)
                self.console.print(
                    f"[bold yellow]warning[/]: deterministic = true, but seeds "
                    f"{', '.join(map(str, sorted(seen)))} of arm '{escape(job.arm)}' gave "
                    "different test predictions: the recipe has randomness",
                    highlight=False,
                    markup=True,
                )
            return
        if len(set(seen.values())) > 1:
            return
        self.blind_warned.add(job.arm)
        seeds = ", ".join(map(str, sorted(seen)))
        self.console.print(
            f"[bold yellow]warning[/]: seeds {seeds} of arm '{escape(job.arm)}' gave identical "
            "test predictions: the recipe may not use its seeds (derive every random choice "
            "from ctx.rng / ctx.seed_for, or the {seed} placeholders, and never fix a seed "
            "of its own); if it truly has no randomness, set deterministic = true in "
            "\\[experiment]",
            highlight=False,
            markup=True,
        )

    def _fail_fast(self, job: TrialJob, outcome: TrialOutcome) -> None:
        """Stop when the first trial of every arm failed with the same error: the same code
        would fail every other trial the same way."""
        key = None if outcome.status != "failed" else error_key(outcome.error or "", job)
        self.first_end.setdefault(job.arm, key)
        if key is None:
            return
        self.fail_counts[key] = self.fail_counts.get(key, 0) + 1
        self.fail_seeds.setdefault(key, set()).add(job.seed)
        if self.keep_going or set(self.first_end) != self.arms:
            return
        if self.tuning and len(self.fail_seeds[key]) < 2:
            # tuning: every arm's first configuration may be the same one, and one
            # configuration may fail where others run: wait for a second one to fail alike
            return
        # every arm's first trial failed alike, and at least twice in all (one arm: its
        # first two seeds): the error is in what all trials share, not in one seed or arm
        if set(self.first_end.values()) == {key} and self.fail_counts[key] >= 2:
            raise StopRun(
                f"the first trials of every arm failed with the same error: {outcome.error}; "
                "the other trials were not started (--keep-going runs them all)"
            )
