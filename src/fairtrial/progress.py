"""Progress of the experiments in a ledger: what ``fairtrial status`` shows, as data.

:func:`experiments_progress` counts the trials of every experiment by state;
:func:`experiment_detail` lists the trials of one, with who holds the running ones
(:func:`lease_text`), the code versions they ran (:func:`code_versions`), the superseded
attempts and one traceback tail per distinct failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairtrial.record import LOST

if TYPE_CHECKING:
    from fairtrial.ledger import ExperimentRow, Ledger, TrialRow

_FAILING = LOST


@dataclass(frozen=True)
class ExperimentProgress:
    """One experiment's trials counted by state."""

    id: str
    name: str
    task: str
    #: the code version(s) its trials ran, as :func:`code_versions` gives them
    code: str
    total: int
    finished: int
    failed: int
    diverged: int
    running: int
    #: pending or interrupted: the next run starts them
    pending: int
    #: run by another experiment with the same trial identity
    reused: int

    @property
    def failing(self) -> int:
        """Failed and diverged trials."""
        return self.failed + self.diverged


@dataclass(frozen=True)
class TrialProgress:
    """One trial of an experiment."""

    arm: str
    seed: int
    status: str
    attempt: int
    result: float | None
    wall_time: float | None
    #: the trial id's first 12 characters
    trial: str
    #: the experiment that ran it, when it was reused from another one (else None)
    reused_from: str | None
    #: the error of a failed trial; who holds a running one (:func:`lease_text`); else ""
    reason: str


@dataclass(frozen=True)
class Failure:
    """The first failed or diverged trial with a given error, and its traceback's tail."""

    arm: str
    seed: int
    error: str
    tail: str


@dataclass(frozen=True)
class ExperimentDetail:
    """The trials of one experiment, as ``fairtrial status EXPERIMENT`` shows them."""

    id: str
    name: str
    code: str
    trials: list[TrialProgress]
    #: attempts that ended after their lease expired while another run took the trial over
    superseded: int
    #: one per distinct error among the failed and diverged trials with a traceback
    failures: list[Failure]
    #: ``[tuning]``: the tuning trials by status (failed and diverged ones are results of
    #: tuning, not failures of the run); None without tuning
    tuning: dict[str, int] | None = None

    @property
    def failing(self) -> bool:
        """True when any trial failed or diverged."""
        return any(t.status in _FAILING for t in self.trials)


def code_versions(rows: Iterable[TrialRow]) -> str:
    """The code version(s) an experiment's trials ran (first 12 hex of the code hash)."""
    codes = sorted({r.code_hash[:12] if r.code_hash else "unrecorded" for r in rows})
    return ", ".join(codes) or "—"


def lease_text(row: TrialRow, clock: float) -> str:
    """Who holds a running trial and whether its lease is current at ``clock`` (the
    ledger's clock)."""
    from fairtrial.ledger.lease import describe, lease_seconds

    if row.heartbeat_at is None:
        return f"held by {describe(row.owner)}, no lease: the next run takes it over"
    ago = max(0.0, clock - row.heartbeat_at)
    state = "expired" if ago > lease_seconds() else "current"
    return f"held by {describe(row.owner)}, lease renewed {ago:.0f} s ago ({state})"


def experiments_progress(ledger: Ledger) -> list[ExperimentProgress]:
    """Every experiment in ``ledger`` with its trials counted by state."""
    out: list[ExperimentProgress] = []
    for e in ledger.experiments():
        rows = ledger.trials(e.id)
        for child in (e.spec.get("children") or {}).values():  # over several tasks: theirs
            rows += ledger.trials(child)

        def count(*st: str, rows: list[TrialRow] = rows) -> int:
            return sum(r.status in st for r in rows)

        out.append(
            ExperimentProgress(
                id=e.id,
                name=e.name,
                task=e.task,
                code=code_versions(rows),
                total=len(rows),
                finished=count("finished"),
                failed=count("failed"),
                diverged=count("diverged"),
                running=count("running"),
                pending=count("pending", "interrupted"),
                reused=sum(r.reused for r in rows),
            )
        )
    return out


def experiment_detail(ledger: Ledger, exp: ExperimentRow) -> ExperimentDetail:
    """The trials of ``exp`` in ``ledger``, their leases, superseded attempts and failures."""
    from fairtrial.recorder import traceback_tail

    rows = ledger.trials(exp.id)
    # the ledger's clock only when a lease is shown: one query fewer otherwise
    clock = ledger.now() if any(r.status == "running" for r in rows) else 0.0
    trials = [
        TrialProgress(
            arm=r.arm,
            seed=r.seed,
            status=r.status,
            attempt=r.attempt,
            result=r.result,
            wall_time=r.wall_time,
            trial=r.id[:12],
            reused_from=r.origin if r.reused else None,
            reason=lease_text(r, clock) if r.status == "running" else r.error or "",
        )
        for r in rows
    ]
    late = [a for a in ledger.attempts([r.id for r in rows]) if a["superseded"]]
    failures: list[Failure] = []
    shown: set[str] = set()
    for r in rows:
        if r.status in _FAILING and r.error_detail:
            key = r.error or ""
            if key in shown:
                continue
            shown.add(key)
            failures.append(Failure(r.arm, r.seed, r.error or "", traceback_tail(r.error_detail)))
    tuning: dict[str, int] | None = None
    if exp.spec.get("tuning"):
        from fairtrial.ledger.stages import TUNING

        tuning = {}
        for r, _ in ledger.stage_trials(exp.id, TUNING):
            tuning[r.status] = tuning.get(r.status, 0) + 1
    return ExperimentDetail(
        id=exp.id,
        name=exp.name,
        code=code_versions(rows),
        trials=trials,
        superseded=len(late),
        failures=failures,
        tuning=tuning,
    )
