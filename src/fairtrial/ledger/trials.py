"""The trials of a ledger: planning them into an experiment's slots (a trial another
experiment already ran is reused), reading them, and running their attempts: a claim is a
conditional update, so two runs never start the same attempt, held by a lease renewed on the
ledger's own clock; every attempt's ending is kept, a superseded one too.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import (
    IntegrityError,
)

from fairtrial.errors import LedgerError
from fairtrial.ledger import faults
from fairtrial.ledger import schema as s
from fairtrial.ledger.engine import LedgerBase, _dumps
from fairtrial.ledger.idempotent import insert_ignore
from fairtrial.ledger.logs import chained_write, insert_test_evaluation
from fairtrial.ledger.records import insert_metrics, upsert_compute, upsert_config_reads
from fairtrial.record import ENDED

#: statuses a run treats as done (failures are results: they are kept, not re-run)
DONE = ENDED


class TrialEvent(NamedTuple):
    """Something a running attempt reported: ``metrics`` (a list of (step, t, name, value)
    rows) or ``test`` (a test evaluation, see :meth:`Logs.add_test_evaluation`)."""

    trial_id: str
    attempt: int
    experiment_id: str
    kind: str
    payload: Any


def write_events(c: Connection, events: Sequence[TrialEvent]) -> None:
    """Store ``events`` in the open transaction ``c``, in the order they came."""
    for e in events:
        if e.kind == "metrics":
            insert_metrics(c, e.trial_id, e.attempt, e.payload)
        elif e.kind == "test":
            insert_test_evaluation(c, e.trial_id, e.attempt, e.experiment_id, e.payload)


@dataclass(frozen=True)
class TrialRow:
    id: str
    experiment_id: str
    arm: str
    seed: int
    status: str
    attempt: int
    config: dict[str, Any]
    seeds: dict[str, int]
    result: float | None
    error: str | None
    error_detail: str | None
    owner: str | None
    started_at: float | None
    finished_at: float | None
    wall_time: float | None
    phases: dict[str, float]
    task_checksum: str | None
    provenance_id: str | None
    #: provenance.code_hash of the code the trial ran (None: ran before identities)
    code_hash: str | None = None
    #: the experiment whose run first ran this trial (another one's: the trial was reused)
    origin: str | None = None
    #: when the run holding a running trial last renewed its lease (the ledger's clock)
    heartbeat_at: float | None = None

    @property
    def reused(self) -> bool:
        """True when this trial was run by another experiment and reused by this one."""
        return self.origin is not None and self.origin != self.experiment_id


def insert_pending(c: Connection, plans: Sequence[Any]) -> int:
    """Insert a pending trial for every plan whose identity the ledger does not hold yet;
    returns how many were new."""
    t = s.trials
    ids = sorted({p.trial_id for p in plans})
    have: set[str] = set()
    for k in range(0, len(ids), 500):
        have.update(c.execute(select(t.c.id).where(t.c.id.in_(ids[k : k + 500]))).scalars())
    rows: dict[str, dict[str, Any]] = {}
    for p in plans:
        if p.trial_id not in have and p.trial_id not in rows:
            rows[p.trial_id] = {
                "id": p.trial_id,
                "experiment_id": p.experiment_id,
                "arm": p.arm,
                "seed": p.seed,
                "code_hash": p.code_hash,
                "status": "pending",
                "attempt": 0,
                "config_json": _dumps(p.config),
                "seeds_json": _dumps(p.seeds),
            }
    if rows:
        c.execute(insert(t), list(rows.values()))
    return len(rows)


class Trials(LedgerBase):
    """Planning, reading, claiming and finishing trials."""

    # -- trials ---------------------------------------------------------------------------------
    def add_trials(self, plans: Iterable[Any]) -> int:
        """Point each planned slot (experiment, arm, seed) at its trial, inserting a pending
        trial for every identity the ledger does not hold yet; returns how many were new.

        A plan (:class:`fairtrial.plan.TrialPlan`) whose identity the ledger already holds,
        from this experiment or any other, reuses that trial: a finished one is not run again.
        """
        plans = list(plans)
        if not plans:
            return 0
        for attempt in range(4):
            try:
                return self._add_trials(plans)
            except IntegrityError:
                # another run inserted one of these trials or slots first: look again
                time.sleep(0.05 * (attempt + 1))
        return self._add_trials(plans)

    def _add_trials(self, plans: list[Any]) -> int:
        slots = s.experiment_trials
        with self.engine.begin() as c:
            new = insert_pending(c, plans)
            eid = plans[0].experiment_id
            current = {
                (r.arm, r.seed): r.trial_id
                for r in c.execute(select(slots).where(slots.c.experiment_id == eid))
            }
            fresh = []
            for p in plans:
                was = current.get((p.arm, p.seed))
                if was is None:
                    fresh.append(
                        {"experiment_id": eid, "arm": p.arm, "seed": p.seed, "trial_id": p.trial_id}
                    )
                elif was != p.trial_id:
                    c.execute(
                        update(slots)
                        .where(
                            slots.c.experiment_id == eid,
                            slots.c.arm == p.arm,
                            slots.c.seed == p.seed,
                        )
                        .values(trial_id=p.trial_id)
                    )
            if fresh:
                c.execute(insert(slots), fresh)
        return new

    def trim_slots(self, experiment_id: str, seeds: int) -> int:
        """Drop the experiment's slots of seed ``seeds`` and above (a ``seeds = "auto"`` plan
        that now asks for fewer seeds: their trials ran other code and stay out of the
        verdict); returns how many were dropped."""
        slots = s.experiment_trials
        with self.engine.begin() as c:
            res = c.execute(
                delete(slots).where(slots.c.experiment_id == experiment_id, slots.c.seed >= seeds)
            )
        return int(res.rowcount or 0)

    def _slot_query(self, experiment_id: str) -> Any:
        t, slots = s.trials, s.experiment_trials
        return (
            select(t, slots.c.arm.label("slot_arm"), slots.c.seed.label("slot_seed"))
            .select_from(slots.join(t, t.c.id == slots.c.trial_id))
            .where(slots.c.experiment_id == experiment_id)
        )

    def trials(self, experiment_id: str) -> list[TrialRow]:
        """The trials filling the experiment's slots, seed-major (arm and seed are the
        slot's: a trial reused from another experiment may have run there under another arm
        name)."""
        slots = s.experiment_trials
        with self.engine.connect() as c:
            rows = c.execute(
                self._slot_query(experiment_id).order_by(slots.c.seed, slots.c.arm)
            ).all()
        return [_trial(r, experiment_id) for r in rows]

    def trial_at(self, experiment_id: str, arm: str, seed: int) -> TrialRow:
        """The trial in slot (arm, seed) of an experiment."""
        slots = s.experiment_trials
        with self.engine.connect() as c:
            row = c.execute(
                self._slot_query(experiment_id).where(slots.c.arm == arm, slots.c.seed == seed)
            ).first()
        if row is None:
            raise LedgerError(f"experiment {experiment_id} has no trial of arm '{arm}' seed {seed}")
        return _trial(row, experiment_id)

    def trials_of_identity(self, trial_ids: Sequence[str]) -> list[TrialRow]:
        """Trials by id (their own arm, seed and experiment)."""
        out: list[TrialRow] = []
        ids = list(trial_ids)
        with self.engine.connect() as c:
            for k in range(0, len(ids), 500):
                rows = c.execute(select(s.trials).where(s.trials.c.id.in_(ids[k : k + 500])))
                out.extend(_trial(r) for r in rows)
        return out

    def trial(self, trial_id: str) -> TrialRow:
        with self.engine.connect() as c:
            row = c.execute(select(s.trials).where(s.trials.c.id == trial_id)).first()
        if row is None:
            raise LedgerError(f"no trial '{trial_id}'")
        return _trial(row)

    def now(self) -> float:
        """The ledger's clock (seconds since the epoch): leases are timed on it, so runs on
        hosts whose clocks disagree still agree on when a lease expired."""
        with self.engine.connect() as c:
            return float(c.execute(select(self._db_now())).scalar_one())

    def _db_now(self) -> Any:
        return _db_now(self.dialect)

    def claim(
        self,
        trial_id: str,
        seen_attempt: int,
        owner: str,
        *,
        lease: float,
        dead_owner: str | None = None,
    ) -> int | None:
        """Start the next attempt of a trial; None if another run holds it.

        A conditional update, so two runs never start the same attempt: the trial must still
        be at ``seen_attempt`` and, if ``running``, its lease must have expired (no heartbeat
        for ``lease`` seconds on the ledger's clock) or its owner be ``dead_owner`` (a run
        this process proved dead, see :func:`fairtrial.ledger.lease.provably_dead`).
        """
        t = s.trials
        params = {
            "b_id": trial_id,
            "b_seen": seen_attempt,
            "b_next": seen_attempt + 1,
            "b_owner": owner,
            "b_lease": lease,
            "b_started": time.time(),
        }
        if dead_owner is not None:
            params["b_dead"] = dead_owner
        with self.engine.begin() as c:
            res = c.execute(_claim_statement(self.dialect, dead_owner is not None), params)
            if res.rowcount != 1 and faults.repeated():
                # the try that failed may have committed this very claim
                row = c.execute(select(t.c.attempt, t.c.owner).where(t.c.id == trial_id)).first()
                if row is not None and tuple(row) == (seen_attempt + 1, owner):
                    return seen_attempt + 1
        return seen_attempt + 1 if res.rowcount == 1 else None

    def renew(self, owner: str) -> int:
        """Renew the lease of every trial ``owner`` holds; returns how many it holds."""
        t = s.trials
        with self.engine.begin() as c:
            res = c.execute(
                update(t)
                .where(t.c.owner == owner, t.c.status == "running")
                .values(heartbeat_at=self._db_now())
            )
        return int(res.rowcount or 0)

    def finish(
        self,
        trial_id: str,
        attempt: int,
        *,
        status: str,
        result: float | None = None,
        error: str | None = None,
        error_detail: str | None = None,
        wall_time: float | None = None,
        phases: dict[str, float] | None = None,
        task_checksum: str | None = None,
        provenance_id: str | None = None,
        owner: str | None = None,
        compute: dict[str, Any] | None = None,
        config_read: Sequence[str] | None = None,
        events: Sequence[TrialEvent] = (),
    ) -> bool:
        """Record how an attempt ended. False when the trial is no longer at this attempt
        (its lease expired and another run took it over): the ending is still kept, as a
        superseded attempt in ``trial_attempts``, and the trial keeps its newer attempt.

        ``events`` (held back by the run, of this trial or others), the attempt's
        ``config_read`` and its ``compute`` record are written first, in the same
        transaction: a trial's ending is one commit.
        """
        attempts = s.trial_attempts
        current = False

        def write(c: Connection) -> None:
            nonlocal current
            write_events(c, events)
            if config_read is not None:
                upsert_config_reads(c, trial_id, attempt, config_read)
            if compute is not None:
                upsert_compute(c, trial_id, attempt, compute)
            finished_at = time.time()
            params = {
                "b_id": trial_id,
                "b_attempt": attempt,
                "b_status": status,
                "b_result": result,
                "b_error": error,
                "b_error_detail": error_detail,
                "b_finished_at": finished_at,
                "b_wall_time": wall_time,
                "b_phases_json": _dumps(phases or {}),
                "b_task_checksum": task_checksum,
                "b_provenance_id": provenance_id,
            }
            res = c.execute(_finish_statement(), params)
            current = res.rowcount == 1
            row = {
                "trial_id": trial_id,
                "attempt": attempt,
                "owner": owner,
                "status": status,
                "result": result,
                "error": error,
                "wall_time": wall_time,
                "finished_at": finished_at,
                "superseded": 0 if current else 1,
            }
            insert_ignore(c, attempts, [row])  # a repeated finish keeps the first record

        chained_write(self.engine, write, own=False)
        return current

    def add_events(self, events: Sequence[TrialEvent]) -> None:
        """Store what running trials reported (metric points, test evaluations), in one
        transaction."""
        if events:
            chained_write(self.engine, lambda c: write_events(c, events), own=False)

    def attempts(self, trial_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every recorded ending of the given trials' attempts, oldest first."""
        a = s.trial_attempts
        ids = list(trial_ids)
        out: list[dict[str, Any]] = []
        with self.engine.connect() as c:
            for k in range(0, len(ids), 500):
                rows = c.execute(
                    select(a).where(a.c.trial_id.in_(ids[k : k + 500])).order_by(a.c.attempt)
                )
                out.extend(dict(r._mapping) for r in rows)
        return out


def _db_now(dialect: str) -> Any:
    """The ledger's clock in SQL (seconds since the epoch)."""
    if dialect == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - 2440587.5) * 86400.0


# The statements every trial runs are built once, their values bound at execution: one
# built with its values would be built and compiled-cache-keyed again on every call.
@functools.cache
def _claim_statement(dialect: str, dead_owner: bool) -> Any:
    t = s.trials
    now = _db_now(dialect)
    free = (t.c.status != "running") | t.c.heartbeat_at.is_(None)
    free = free | (t.c.heartbeat_at < now - bindparam("b_lease"))
    if dead_owner:
        free = free | (t.c.owner == bindparam("b_dead"))
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.attempt == bindparam("b_seen"), free)
        .values(
            status="running",
            attempt=bindparam("b_next"),
            owner=bindparam("b_owner"),
            heartbeat_at=now,
            started_at=bindparam("b_started"),
            finished_at=None,
            result=None,
            error=None,
            error_detail=None,
            wall_time=None,
        )
    )


@functools.cache
def _finish_statement() -> Any:
    t = s.trials
    names = "status result error error_detail finished_at wall_time phases_json task_checksum"
    names += " provenance_id"
    return (
        update(t)
        .where(t.c.id == bindparam("b_id"), t.c.attempt == bindparam("b_attempt"))
        .values(
            {
                **{name: bindparam(f"b_{name}", type_=t.c[name].type) for name in names.split()},
                "owner": None,
                "heartbeat_at": None,
            }
        )
    )


def _trial(r: Any, experiment_id: str | None = None) -> TrialRow:
    """A trial row; with ``experiment_id``, as the slot of that experiment sees it."""
    slot = experiment_id is not None
    return TrialRow(
        id=r.id,
        experiment_id=experiment_id if experiment_id is not None else r.experiment_id,
        arm=r.slot_arm if slot else r.arm,
        seed=r.slot_seed if slot else r.seed,
        status=r.status,
        attempt=r.attempt,
        config=json.loads(r.config_json),
        seeds=json.loads(r.seeds_json),
        result=r.result,
        error=r.error,
        error_detail=r.error_detail,
        owner=r.owner,
        started_at=r.started_at,
        finished_at=r.finished_at,
        wall_time=r.wall_time,
        phases=json.loads(r.phases_json) if r.phases_json else {},
        task_checksum=r.task_checksum,
        provenance_id=r.provenance_id,
        code_hash=r.code_hash,
        origin=r.experiment_id,
        heartbeat_at=r.heartbeat_at,
    )
