"""The trials of a ledger: planning them into an experiment's slots (a trial another
experiment already ran is reused), reading them, and running their attempts: a claim is a
conditional update, so two runs never start the same attempt, held by a lease renewed on the
ledger's own clock; every attempt's ending is kept, a superseded one too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
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
from fairtrial.record import ENDED

#: statuses a run treats as done (failures are results: they are kept, not re-run)
DONE = ENDED


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
        t, slots = s.trials, s.experiment_trials
        ids = sorted({p.trial_id for p in plans})
        with self.engine.begin() as c:
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
        return len(rows)

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
        if self.dialect == "postgresql":
            return func.extract("epoch", func.clock_timestamp())
        return (func.julianday("now") - 2440587.5) * 86400.0

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
        now = self._db_now()
        free = (t.c.status != "running") | t.c.heartbeat_at.is_(None)
        free = free | (t.c.heartbeat_at < now - lease)
        if dead_owner is not None:
            free = free | (t.c.owner == dead_owner)
        with self.engine.begin() as c:
            res = c.execute(
                update(t)
                .where(t.c.id == trial_id, t.c.attempt == seen_attempt, free)
                .values(
                    status="running",
                    attempt=seen_attempt + 1,
                    owner=owner,
                    heartbeat_at=now,
                    started_at=time.time(),
                    finished_at=None,
                    result=None,
                    error=None,
                    error_detail=None,
                    wall_time=None,
                )
            )
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
    ) -> bool:
        """Record how an attempt ended. False when the trial is no longer at this attempt
        (its lease expired and another run took it over): the ending is still kept, as a
        superseded attempt in ``trial_attempts``, and the trial keeps its newer attempt."""
        t, attempts = s.trials, s.trial_attempts
        finished_at = time.time()
        with self.engine.begin() as c:
            res = c.execute(
                update(t)
                .where(t.c.id == trial_id, t.c.attempt == attempt)
                .values(
                    status=status,
                    result=result,
                    error=error,
                    error_detail=error_detail,
                    finished_at=finished_at,
                    wall_time=wall_time,
                    phases_json=_dumps(phases or {}),
                    task_checksum=task_checksum,
                    provenance_id=provenance_id,
                    owner=None,
                    heartbeat_at=None,
                )
            )
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
        return current

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
