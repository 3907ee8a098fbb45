"""Run an experiment: plan its trials, skip what the ledger already has, run the rest.

Resuming is the normal case, not a special one: every run asks the ledger which trials are
done (finished, failed, diverged: failures are results) and runs the others. A trial left
``running`` by a run that was killed is re-run as its next attempt; the metrics of the killed
attempt stay in the ledger under their own attempt number and are never mixed with the new ones.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fairtrial import provenance
from fairtrial.backends.base import Backend, TrialJob, TrialOutcome
from fairtrial.errors import FairtrialError
from fairtrial.ledger import DONE, Ledger, TrialRow
from fairtrial.plan import plan_seeds, plan_trials
from fairtrial.spec import PILOT_SEEDS, Spec


@dataclass
class RunSummary:
    experiment_id: str
    total: int
    already_done: int
    ran: int = 0
    finished: int = 0
    failed: int = 0
    diverged: int = 0
    interrupted: int = 0
    #: lost attempts re-run as a next attempt (a worker killed or crashed under its trial)
    retried: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seed_plan: dict[str, Any] | None = None


def _owner() -> str:
    return f"{platform.node()}:{os.getpid()}"


def _alive_elsewhere(owner: str | None) -> bool:
    """True when ``owner`` is another live run on this host (a concurrent ``fairtrial run``)."""
    if not owner or owner == _owner():
        return False
    host, _, pid = owner.rpartition(":")
    if host != platform.node() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def _lost(self, job: TrialJob, outcome: TrialOutcome) -> TrialOutcome | None:
        """Queue a lost trial for its next attempt; None when queued, else the final outcome.

        The lost attempt is stored ``interrupted`` (a run killed right now resumes it) with
        its reason; its metrics stay under its own attempt number.
        """
        done = self.retries.get(job.trial_id, 0)
        reason = outcome.error or "worker lost"
        if done < self.max_retries:
            self.retries[job.trial_id] = done + 1
            self.ledger.finish(
                job.trial_id,
                job.attempt,
                status="interrupted",
                error=f"{reason}; retried as attempt {job.attempt + 1}",
                wall_time=outcome.wall_time,
                phases=outcome.phases,
                task_checksum=self.task_checksum,
                provenance_id=self.provenance_id,
            )
            self.requeue.append(job)
            self.summary.retried += 1
            self.console.print(
                f"[yellow]lost[/] {escape(job.arm)} seed {job.seed} attempt {job.attempt}: "
                f"{escape(reason)}; retrying ({done + 1} of {self.max_retries})",
                highlight=False,
                markup=True,
            )
            return None
        tries = f" (gave up after {done + 1} attempts)" if done else ""
        return dataclasses.replace(outcome, status="failed", error=reason + tries)

    def started(self, job: TrialJob) -> None:
        pass

    def event(self, job: TrialJob, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self.ledger.add_metrics(job.trial_id, job.attempt, payload)
        elif kind == "test":
            self.ledger.add_test_evaluation(job.trial_id, job.attempt, job.experiment_id, payload)

    def finished(self, job: TrialJob, outcome: TrialOutcome) -> None:
        if outcome.config_read is not None:
            self.ledger.add_config_reads(job.trial_id, job.attempt, outcome.config_read)
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
            final = self._lost(job, outcome)
            if final is None:  # retried: this attempt's record stays "lost"
                self.ledger.add_compute(job.trial_id, job.attempt, compute)
                return
            outcome = final
            compute = {**compute, "status": final.status}
        self.ledger.add_compute(job.trial_id, job.attempt, compute)
        self.ledger.finish(
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
        )
        s = self.summary
        if outcome.status == "interrupted":
            s.interrupted += 1
            return
        s.ran += 1
        if outcome.status == "finished":
            s.finished += 1
        else:
            if outcome.status == "diverged":
                s.diverged += 1
            else:
                s.failed += 1
            s.failures.append((job.trial_id, outcome.error or outcome.status))
            self.console.print(
                f"[yellow]{outcome.status}[/] {escape(job.arm)} seed {job.seed}: "
                f"{escape(outcome.error or '')}",
                highlight=False,
                markup=True,
            )
        if self.progress is not None:
            self.progress.update(
                self.task_id,
                advance=1,
                failures=s.failed + s.diverged,
            )


def run_experiment(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    *,
    retry_failed: bool = False,
    console: Console | None = None,
    show_progress: bool | None = None,
    max_retries: int | None = None,
) -> RunSummary:
    """Run every trial of ``spec`` that the ledger does not have yet; resumable at any point.

    A trial whose process dies under it (status ``lost``: killed, crashed) runs again as its
    next attempt, up to ``max_retries`` times in this run (default: the spec's
    ``max_retries``), and is then recorded ``failed`` with the reason and the attempt count.
    A trial whose recipe raised is not retried: the same code would raise again.

    With ``seeds = "auto"`` the run has two stages: the pilot seeds, then as many seeds as the
    power analysis of the pilot asks for (:func:`fairtrial.plan.plan_seeds`), up to
    ``max_seeds``. The plan is a function of the pilot's results, so a resumed run makes the
    same plan.
    """
    console = console or Console(stderr=True)
    if not spec.auto_seeds:
        summary = _run(spec, ledger, backend, retry_failed, console, show_progress, max_retries)
        _warn_unread_config(spec, ledger, console)
        return summary
    pilot = _run(
        replace(spec, seeds=PILOT_SEEDS),
        ledger,
        backend,
        retry_failed,
        console,
        show_progress,
        max_retries,
    )
    scores: dict[str, dict[int, float]] = {}
    for t in ledger.trials(spec.experiment_id):
        if t.status == "finished" and t.result is not None and t.seed < PILOT_SEEDS:
            scores.setdefault(t.arm, {})[t.seed] = float(t.result)
    assert spec.hypothesis.smallest_effect is not None and spec.max_seeds is not None
    seed_plan = plan_seeds(
        scores,
        spec.arm_table(),
        spec.direction,
        smallest_effect=spec.hypothesis.smallest_effect,
        alpha=spec.hypothesis.alpha,
        power=spec.hypothesis.power,
        max_seeds=spec.max_seeds,
    )
    n = seed_plan["seeds"]
    ledger.set_seeds(spec.experiment_id, n)
    console.print(
        f'seeds = "auto": the pilot\'s {PILOT_SEEDS} seeds ask for {seed_plan["needed"]} '
        f"({seed_plan['rule']})"
        + (f"; capped at max_seeds = {spec.max_seeds}" if seed_plan["capped"] else "")
        + f": running {n} seeds",
        highlight=False,
    )
    rest = _run(
        replace(spec, seeds=n), ledger, backend, retry_failed, console, show_progress, max_retries
    )
    rest.already_done -= pilot.ran
    for name in ("ran", "finished", "failed", "diverged", "interrupted", "retried", "seconds"):
        setattr(rest, name, getattr(rest, name) + getattr(pilot, name))
    rest.failures[:0] = pilot.failures
    rest.seed_plan = seed_plan
    _warn_unread_config(spec, ledger, console)
    return rest


def _warn_unread_config(spec: Spec, ledger: Ledger, console: Console) -> None:
    """One yellow line about config keys no trial read (they had no effect)."""
    from fairtrial.configreads import experiment_unread, unread_text

    found = experiment_unread(ledger, spec.experiment_id)
    if found is not None:
        text = unread_text(found, command=spec.command is not None)
        console.print(f"[yellow]warning: {escape(text)}[/]", highlight=False)


def _run(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    retry_failed: bool,
    console: Console,
    show_progress: bool | None,
    max_retries: int | None,
) -> RunSummary:
    eid = spec.experiment_id
    ledger.upsert_experiment(
        experiment_id=eid,
        name=spec.name,
        spec_hash=spec.spec_hash,
        spec=spec.normalized(),
        arms=spec.arm_table(),
        spec_path=str(spec.path.resolve()) if spec.path else None,
        task=spec.task,
        task_checksum=spec.task_checksum,
        metric=spec.metric,
        direction=spec.direction,
        seeds=spec.seeds,
        root_seed=spec.root_seed,
    )
    ledger.set_compute_settings(eid, dict(spec.compute))
    plans = plan_trials(spec)
    ledger.add_trials(plans)
    rows = {r.id: r for r in ledger.trials(eid)}
    changed = {r.task_checksum for r in rows.values() if r.status in DONE and r.task_checksum} - {
        spec.task_checksum
    }
    if changed:
        raise FairtrialError(
            f"task '{spec.task}' data changed since this experiment's trials ran (checksum "
            f"{sorted(changed)[0][:12]} then, {spec.task_checksum[:12]} now); "
            "rename the experiment to run it on the new data"
        )
    redo = ("pending", "running", "interrupted") + (("failed", "diverged") if retry_failed else ())
    todo: list[TrialRow] = [
        rows[p.trial_id]
        for p in plans
        if rows[p.trial_id].status in redo and not _alive_elsewhere(rows[p.trial_id].owner)
    ]
    summary = RunSummary(eid, total=len(plans), already_done=len(plans) - len(todo))
    if not todo:
        return summary

    prov = provenance.collect(spec.base_dir)
    prov["code"] = ledger.put_code_snapshot(
        provenance.code_snapshot(spec.recipe, spec.command, spec.base_dir)
    )
    prov["run"] = {"backend": backend.name, "workers": backend.workers, "threads": backend.threads}
    provenance_id = ledger.put_provenance(prov)
    workroot = Path(".fairtrial") / "trials" / eid
    owner = _owner()
    target_metric, target_direction = spec.target_metric()

    def jobs(batch: list[tuple[TrialRow, int]]) -> Iterator[TrialJob]:
        for row, seen in batch:
            attempt = ledger.claim(row.id, seen, owner)
            if attempt is None:  # another run took it
                continue
            yield TrialJob(
                trial_id=row.id,
                experiment_id=eid,
                arm=row.arm,
                seed=row.seed,
                attempt=attempt,
                config=row.config,
                root_seed=spec.root_seed,
                task=spec.task,
                task_checksum=spec.task_checksum,
                metric=spec.metric,
                recipe=spec.recipe,
                command=spec.command,
                base_dir=str(spec.base_dir.resolve()) if spec.base_dir else None,
                workdir=str((workroot / row.arm / str(row.seed)).resolve()),
                time_limit=spec.time_limit,
                threads=backend.threads,
                target=spec.target,
                target_metric=target_metric,
                direction=target_direction,
                resources=dict(spec.resources),
            )

    if show_progress is None:
        show_progress = console.is_terminal
    t0 = time.perf_counter()
    progress = (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failures: {task.fields[failures]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        if show_progress
        else None
    )
    if progress is not None:
        progress.start()
        task_id = progress.add_task(
            spec.name, total=len(plans), completed=summary.already_done, failures=0
        )
    else:
        task_id = None
    sink = _LedgerSink(
        ledger, summary, provenance_id, spec.task_checksum, progress, task_id, console
    )
    sink.max_retries = spec.max_retries if max_retries is None else max_retries
    batch = [(row, row.attempt) for row in todo]
    try:
        # Rounds: the planned trials, then the lost ones again (each as its next attempt)
        # until none is lost or none has retries left.
        while batch:
            backend.run(jobs(batch), sink, total=len(batch))
            retry, sink.requeue = sink.requeue, []
            batch = [(rows[job.trial_id], job.attempt) for job in retry]
    finally:
        if progress is not None:
            progress.stop()
        summary.seconds = time.perf_counter() - t0
        sys.stderr.flush()
    return summary
