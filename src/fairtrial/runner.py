"""Run an experiment: plan its trials, skip what the ledger already has, run the rest.

Resuming is the normal case, not a special one: every run asks the ledger which trials are
done (finished, failed, diverged: failures are results) and runs the others. A trial left
``running`` by a run that was killed is re-run as its next attempt; the metrics of the killed
attempt stay in the ledger under their own attempt number and are never mixed with the new ones.
"""

from __future__ import annotations

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
from fairtrial.backends.base import Backend, TrialJob, stop_on_signals
from fairtrial.ledger import DONE, Ledger, TrialRow
from fairtrial.ledger.lease import Heartbeat, describe, lease_seconds, owner_id, provably_dead
from fairtrial.plan import plan_seeds, plan_trials, seed_floor_warning, spec_code_snapshot
from fairtrial.record import LOST
from fairtrial.recorder import StopRun, _LedgerSink
from fairtrial.spec import PILOT_SEEDS, Spec


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
    #: who holds them, for the message: "host pid N (lease renewed 3 s ago)"
    elsewhere_owners: list[str] = field(default_factory=list)
    #: attempts of this run that ended after another run took their trial over (their
    #: lease expired): kept in the ledger as superseded attempts, not as the trial's result
    superseded: int = 0
    #: why the run stopped before running every trial (fail fast), or None
    stopped: str | None = None
    #: the experiment after the run: slots by status (finished, failed, diverged, pending...)
    statuses: dict[str, int] = field(default_factory=dict)
    #: failed or diverged trials kept from earlier runs (``--retry-failed`` re-runs them)
    kept_failures: int = 0

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


@stop_on_signals()  # SIGTERM, SIGHUP: stop like Ctrl-C, recording what was running
def run_experiment(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    *,
    retry_failed: bool = False,
    console: Console | None = None,
    show_progress: bool | None = None,
    max_retries: int | None = None,
    keep_going: bool = False,
) -> RunSummary:
    """Run every trial of ``spec`` that the ledger does not have yet; resumable at any point.

    Each trial is identified by what it runs (:func:`fairtrial.plan.trial_identity`): one
    whose identity already has a result in the ledger, from this experiment or another, is
    reused; an edit of the recipe's code gives new trials, and the experiment's verdict then
    uses only those (the old ones stay in the ledger).

    A trial whose process dies under it (status ``lost``: killed, crashed) runs again as its
    next attempt, up to ``max_retries`` times in this run (default: the spec's
    ``max_retries``), and is then recorded ``failed`` with the reason and the attempt count.
    A trial whose recipe raised is not retried: the same code would raise again. When the
    first trial of every arm fails with the same error the run stops there (``stopped`` says
    why) unless ``keep_going``.

    With ``seeds = "auto"`` the run has two stages: the pilot seeds, then as many seeds as the
    power analysis of the pilot asks for (:func:`fairtrial.plan.plan_seeds`), up to
    ``max_seeds``. The plan is a function of the pilot's results, so a resumed run makes the
    same plan.

    Ctrl-C, SIGTERM and SIGHUP (where their handlers are Python's defaults, in the main
    thread) stop the run: its workers are stopped, the trials they were running are stored
    ``interrupted`` (the next run resumes them), and the KeyboardInterrupt is raised again
    (for SIGTERM and SIGHUP, :class:`~fairtrial.backends.base.RunInterrupted`, whose
    ``signum`` says which).
    """
    console = console or Console(stderr=True)
    opts = (retry_failed, console, show_progress, max_retries, keep_going)
    if not spec.auto_seeds and not spec.deterministic:
        warning = seed_floor_warning(spec.seeds, spec.arm_table(), spec.hypothesis.alpha)
        if warning:
            console.print(f"[bold yellow]warning[/]: {escape(warning)}", highlight=False)
    if not spec.auto_seeds:
        summary = _run(spec, ledger, backend, *opts)
        _warn_unread_config(spec, ledger, console)
        return summary
    pilot = _run(replace(spec, seeds=PILOT_SEEDS), ledger, backend, *opts, pilot=True)
    if pilot.stopped:
        return pilot
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
    rest = _run(replace(spec, seeds=n), ledger, backend, *opts)
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
    keep_going: bool,
    pilot: bool = False,
) -> RunSummary:
    """One stage of a run: the experiment's trials for ``spec.seeds`` seeds (``pilot``: the
    first seeds of a ``seeds = "auto"`` plan, whose later seeds stay as they are)."""
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
    snapshot = spec_code_snapshot(spec)
    code_hash = provenance.code_hash(snapshot)
    before = {(r.arm, r.seed): r for r in ledger.trials(eid)}
    plans = plan_trials(spec, code_hash)
    ledger.add_trials(plans)
    if not pilot:
        # seeds an earlier plan had and this one has not (seeds = "auto" asks for fewer now)
        ledger.trim_slots(eid, spec.seeds)
    rows = {r.id: r for r in ledger.trials(eid)}
    replaced = [
        b for p in plans if (b := before.get((p.arm, p.seed))) is not None and b.id != p.trial_id
    ]
    if replaced:
        _say_replaced(console, spec, replaced, code_hash)
    redo = ("pending", "running", "interrupted") + (LOST if retry_failed else ())
    planned = [rows[trial_id] for trial_id in dict.fromkeys(p.trial_id for p in plans)]
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
    summary = RunSummary(
        eid,
        total=len(plans),
        already_done=sum(r.status in DONE and r.status not in redo for r in planned),
        reused=sum(r.reused and r.status == "finished" for r in planned),
        replaced=len(replaced),
        elsewhere=len(held),
        elsewhere_owners=list(owners.values()),
    )
    if todo:
        _run_todo(spec, ledger, backend, snapshot, todo, summary, console, show_progress,
                  max_retries, keep_going)  # fmt: skip
        now = provenance.code_hash(spec_code_snapshot(spec))
        if now != code_hash:
            # a trial that started after the edit may have run the new code under the old
            # identity; the next run computes the new identity and re-runs every trial
            summary.stopped = summary.stopped or (
                f"the recipe's code changed while the run went on (code {code_hash[:12]} at "
                f"the start, {now[:12]} now): run again to re-run every trial on one version"
            )
    final = ledger.trials(eid)
    for r in final:
        summary.statuses[r.status] = summary.statuses.get(r.status, 0) + 1
    # trials still held by other runs now (some may have ended while this run went on)
    summary.elsewhere = sum(r.status == "running" and r.owner != me for r in final)
    if not retry_failed:
        summary.kept_failures = sum(rows[r.id].status in LOST for r in final if r.id in rows)
    return summary


def _say_replaced(console: Console, spec: Spec, replaced: list[TrialRow], code_hash: str) -> None:
    """Say why trials this experiment had are not in its verdict any more."""
    old_code = sorted({r.code_hash or "unrecorded" for r in replaced if r.code_hash != code_hash})
    old_data = sorted({r.task_checksum for r in replaced if r.task_checksum} - {spec.task_checksum})
    why = []
    if old_code:
        why.append(
            f"the recipe's code changed (code {', '.join(c[:12] for c in old_code)} then, "
            f"{code_hash[:12]} now)"
        )
    if old_data:
        why.append(
            f"task '{spec.task}' data changed (checksum {old_data[0][:12]} then, "
            f"{spec.task_checksum[:12]} now)"
        )
    console.print(
        f"[bold yellow]note[/]: {'; '.join(why) or 'what the trials run changed'} since this "
        f"experiment last ran: {len(replaced)} trials run again on it; the old ones stay in the "
        "ledger, out of this verdict",
        highlight=False,
        markup=True,
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
) -> None:
    eid = spec.experiment_id
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

    def jobs(batch: list[tuple[TrialRow, int]]) -> Iterator[TrialJob]:
        for row, seen in batch:
            dead = row.owner if row.status == "running" and provably_dead(row.owner) else None
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
                root_seed=spec.root_seed,
                task=spec.task,
                task_checksum=spec.task_checksum,
                metric=spec.metric,
                recipe=spec.recipe,
                command=spec.command,
                base_dir=base_dir,
                workdir=str(workroot / row.arm / str(row.seed)),
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
    sink.deterministic = spec.deterministic
    sink.arms = {row.arm for row in todo}
    sink.owner = owner
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
