"""Running a set of planned trials: skip what is done or held by another live run, claim the
rest, run them on a backend (the lost ones again as their next attempts) and count how they
ended. The runner runs an experiment's compared trials with it, the tuning driver its tuning
trials.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fairtrial import provenance
from fairtrial.backends.base import Backend, TrialJob
from fairtrial.ledger import DONE, Ledger, TrialRow
from fairtrial.ledger.lease import Heartbeat, describe, lease_seconds, owner_id, provably_dead
from fairtrial.observe import active
from fairtrial.plan import spec_code_snapshot
from fairtrial.record import LOST
from fairtrial.recorder import StopRun, _LedgerSink
from fairtrial.seeding import tuning_root
from fairtrial.spec import Spec

#: (retry_failed, show_progress, max_retries, keep_going)
Options = tuple[bool, "bool | None", "int | None", bool]


@dataclass
class RunSummary:
    experiment_id: str
    total: int
    #: slots whose trial had ended before this run (finished, failed or diverged), this
    #: experiment's own or reused
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
    #: finished trials of other experiments with the same identity, used instead of re-running
    reused: int = 0
    #: trials of earlier code (or data) that this run replaced with new ones
    replaced: int = 0
    #: trials another live run is running right now (not run here, not done either)
    elsewhere: int = 0
    #: trials whose cluster jobs go on after this run stopped (the next run collects them)
    detached: int = 0
    #: trials whose cluster jobs an earlier run submitted, collected by this run
    adopted: int = 0
    #: who holds them, for the message: "host pid N (lease renewed 3 s ago)"
    elsewhere_owners: list[str] = field(default_factory=list)
    #: attempts of this run that ended after another run took their trial over (their
    #: lease expired): kept in the ledger as superseded attempts, not as the trial's result
    superseded: int = 0
    #: why the run stopped before running every trial (fail fast), or None
    stopped: str | None = None
    #: baseline trials run a second time to measure the timing noise (``timing_repeats``)
    repeats: int = 0
    #: the experiment after the run: slots by status (finished, failed, diverged, pending...)
    statuses: dict[str, int] = field(default_factory=dict)
    #: failed or diverged trials kept from earlier runs (``--retry-failed`` re-runs them)
    kept_failures: int = 0
    #: ``[tuning]``: how the tuning trials ran, and the arms' trials at their spec values
    tuning: RunSummary | None = None
    untuned: RunSummary | None = None
    #: ``[tuning]``: arm -> one line on the configuration tuning chose
    tuned: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every trial of the experiment finished (none failed, diverged or left undone) and
        nothing stopped the run (such as its code changing under it)."""
        return self.stopped is None and self.statuses.get("finished", 0) == self.total


def _held_elsewhere(row: TrialRow, me: str, now: float, lease: float) -> bool:
    """True when another live run holds this running trial: its lease is current and its
    owner is not provably dead."""
    if row.status != "running" or not row.owner or row.owner == me:
        return False
    if row.heartbeat_at is None or row.heartbeat_at < now - lease:
        return False
    return not provably_dead(row.owner)


def run_rows(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    snapshot: dict[str, Any],
    code_hash: str,
    planned: list[TrialRow],
    summary: RunSummary,
    console: Console,
    options: Options,
    *,
    stage: str = "",
    check_code: bool = True,
) -> None:
    """Run the trials of ``planned`` that are not done yet (nor held by another live run),
    counting into ``summary``. ``stage``: "" for the compared trials, ``"tuning"`` for tuning
    trials (their own seed root, judged on the validation objective), ``"untuned"`` for the
    arms at their spec values; each stage's trials get work folders of their own.
    ``check_code``: afterwards, stop the run if the recipe's code changed meanwhile (a caller
    that runs many small rounds checks once, at the end: :func:`code_changed`)."""
    retry_failed, show_progress, max_retries, keep_going = options
    redo = ("pending", "running", "interrupted") + (LOST if retry_failed else ())
    todo: list[TrialRow] = []
    held: list[TrialRow] = []
    me, lease = owner_id(), lease_seconds()
    clock = ledger.now()
    for row in planned:
        if row.status not in redo:
            continue
        if _held_elsewhere(row, me, clock, lease):
            held.append(row)
        else:
            todo.append(row)
    owners: dict[str | None, str] = {}
    for row in held:
        if row.owner not in owners:
            ago = max(0.0, clock - (row.heartbeat_at or clock))
            owners[row.owner] = f"{describe(row.owner)} (lease renewed {ago:.0f} s ago)"
    summary.already_done += sum(r.status in DONE and r.status not in redo for r in planned)
    summary.reused += sum(r.reused and r.status == "finished" for r in planned)
    summary.elsewhere += len(held)
    summary.elsewhere_owners += list(owners.values())
    if not todo:
        return
    _run_todo(spec, ledger, backend, snapshot, todo, summary, console, show_progress,
              max_retries, keep_going, stage)  # fmt: skip
    if check_code:
        summary.stopped = summary.stopped or code_changed(spec, code_hash)


def code_changed(spec: Spec, code_hash: str) -> str | None:
    """Why the run must stop when the recipe's code is no longer ``code_hash``, else None: a
    trial that started after the edit may have run the new code under the old identity; the
    next run computes the new identity and re-runs every trial."""
    now = provenance.code_hash(spec_code_snapshot(spec))
    if now == code_hash:
        return None
    return (
        f"the recipe's code changed while the run went on (code {code_hash[:12]} at the "
        f"start, {now[:12]} now): run again to re-run every trial on one version"
    )


def _run_todo(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    snapshot: dict[str, Any],
    todo: list[TrialRow],
    summary: RunSummary,
    console: Console,
    show_progress: bool | None,
    max_retries: int | None,
    keep_going: bool,
    stage: str = "",
) -> None:
    eid = spec.experiment_id
    tuning = stage == "tuning"
    prov = provenance.collect(spec.base_dir)
    prov["code"] = ledger.put_code_snapshot(snapshot)
    prov["run"] = {"backend": backend.name, "workers": backend.workers, "threads": backend.threads}
    provenance_id = ledger.put_provenance(prov)
    workroot = (Path(".fairtrial") / "trials" / eid).resolve()
    base_dir = str(spec.base_dir.resolve()) if spec.base_dir else None
    owner = owner_id()
    lease = lease_seconds()
    target_metric, target_direction = spec.target_metric()
    by_id = {row.id: row for row in todo}
    tune = spec.tuning if tuning else None
    root = tuning_root(spec.root_seed) if tune is not None else spec.root_seed

    # the cluster jobs of trials an earlier run left running: collected, not submitted again
    # (only in the first round: a later round re-runs lost attempts as new ones)
    current = {(r.id, r.attempt) for r in todo if r.status == "running"}
    records = {
        key: rec
        for key, rec in ledger.jobs_of([r.id for r in todo if r.status == "running"]).items()
        if key in current
    }
    handles = {key: rec["handle"] for key, rec in records.items() if backend.adopts(rec["handle"])}
    if stray := sorted(rec["job_id"] for key, rec in records.items() if key not in handles):
        other = next(iter(records.values()))["backend"]
        console.print(
            f"[bold yellow]note[/]: {len(stray)} trials were submitted as {other} jobs by an "
            f"earlier run ({', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''}); "
            f"--backend {backend.name} runs them again as new attempts (--backend {other} "
            "would collect those jobs)",
            highlight=False,
            markup=True,
        )

    def jobs(batch: list[tuple[TrialRow, int]]) -> Iterator[TrialJob]:
        for row, seen in batch:
            dead = row.owner if row.status == "running" and provably_dead(row.owner) else None
            handle = handles.pop((row.id, seen), None) if row.status == "running" else None
            if handle is not None and ledger.adopt(
                row.id, seen, owner, lease=lease, dead_owner=dead
            ):
                attempt: int | None = seen
                summary.adopted += 1
            else:
                handle = None
                attempt = ledger.claim(row.id, seen, owner, lease=lease, dead_owner=dead)
            if attempt is None:  # another run took it, or renewed its lease meanwhile
                continue
            yield TrialJob(
                trial_id=row.id,
                experiment_id=eid,
                arm=row.arm,
                seed=row.seed,
                attempt=attempt,
                config=row.config,
                root_seed=root,
                task=spec.task,
                task_checksum=spec.task_checksum,
                metric=spec.metric,
                recipe=spec.recipe,
                command=spec.command,
                base_dir=base_dir,
                workdir=str(workroot / stage / row.arm / str(row.seed)),
                time_limit=spec.time_limit,
                threads=backend.threads,
                target=spec.target,
                target_metric=target_metric,
                direction=target_direction,
                resources=dict(spec.resources),
                objective=tune.objective if tune is not None else None,
                objective_direction=tune.direction if tune is not None else "max",
                handle=handle,
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
    task_id = None
    if progress is not None:
        progress.start()
        task_id = progress.add_task(
            spec.name, total=summary.total, completed=summary.total - len(todo), failures=0
        )
    sink = _LedgerSink(
        ledger, summary, provenance_id, spec.task_checksum, progress, task_id, console
    )
    sink.max_retries = spec.max_retries if max_retries is None else max_retries
    sink.keep_going = keep_going
    sink.tuning = tuning
    sink.deterministic = spec.deterministic
    sink.arms = {row.arm for row in todo}
    sink.owner = owner
    sink.observers = [] if stage else list(active())  # the compared trials only
    batch = [(row, row.attempt) for row in todo]
    try:
        # Rounds: the planned trials, then the lost ones again (each as its next attempt)
        # until none is lost or none has retries left.
        with Heartbeat(ledger, owner, lease):
            while batch:
                backend.run(jobs(batch), sink, total=len(batch))
                retry, sink.requeue = sink.requeue, []
                batch = [(by_id[job.trial_id], job.attempt) for job in retry]
    except StopRun as exc:
        summary.stopped = str(exc)
    finally:
        if progress is not None:
            progress.stop()
        summary.seconds = time.perf_counter() - t0
        sys.stderr.flush()
