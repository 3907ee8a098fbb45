"""The cluster jobs behind running trials, so that a driver restarted after a stop or a crash
collects the jobs its predecessor submitted instead of submitting the trials again.

A cluster backend (``--backend slurm``) records each attempt's job as soon as it is submitted
(:meth:`Jobs.record_job`). A run that stops while its jobs are still queued or running leaves
them to run and releases its claim on their trials (:meth:`Jobs.release`); a run killed outright
leaves its claims to expire like any other run's. The next run takes such a trial over *at the
same attempt* (:meth:`Jobs.adopt`) and hands the backend the job's handle to collect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from fairtrial.ledger import schema as s
from fairtrial.ledger.engine import LedgerBase, _dumps
from fairtrial.ledger.idempotent import upsert
from fairtrial.ledger.trials import _db_now


class Jobs(LedgerBase):
    """Cluster jobs of trial attempts: recorded at submission, adopted by a later run."""

    def record_job(
        self, trial_id: str, attempt: int, backend: str, job_id: str, handle: dict[str, Any]
    ) -> None:
        """Record the job ``backend`` submitted for this attempt (replacing an earlier record
        of the same attempt)."""
        row = {
            "trial_id": trial_id,
            "attempt": attempt,
            "backend": backend,
            "job_id": job_id,
            "handle_json": _dumps(handle),
            "submitted_at": time.time(),
        }
        with self.engine.begin() as c:
            upsert(c, s.trial_jobs, row, ("backend", "job_id", "handle_json", "submitted_at"))

    def jobs_of(self, trial_ids: Sequence[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """The recorded jobs of the given trials, by (trial id, attempt): each a dict with
        ``backend``, ``job_id`` and ``handle``."""
        j = s.trial_jobs
        ids = list(trial_ids)
        out: dict[tuple[str, int], dict[str, Any]] = {}
        with self.engine.connect() as c:
            for k in range(0, len(ids), 500):
                rows = c.execute(select(j).where(j.c.trial_id.in_(ids[k : k + 500])))
                for r in rows:
                    out[r.trial_id, r.attempt] = {
                        "backend": r.backend,
                        "job_id": r.job_id,
                        "handle": json.loads(r.handle_json),
                    }
        return out

    def adopt(
        self,
        trial_id: str,
        attempt: int,
        owner: str,
        *,
        lease: float,
        dead_owner: str | None = None,
    ) -> bool:
        """Take over a running trial at its current ``attempt``, whose job is still the
        cluster's to finish; False if another run holds it or it moved on.

        The same conditions as :meth:`~fairtrial.ledger.trials.Trials.claim` (no other live
        run holds it), but the attempt stays: its job goes on. The metric points the earlier
        run wrote for the attempt are deleted in the same transaction, since the new owner
        reads the job's event file again from its start.
        """
        t = s.trials
        now = _db_now(self.dialect)
        free = t.c.heartbeat_at.is_(None) | (t.c.heartbeat_at < now - bindparam("b_lease"))
        if dead_owner is not None:
            free = free | (t.c.owner == bindparam("b_dead"))
        stmt = (
            update(t)
            .where(
                t.c.id == bindparam("b_id"),
                t.c.attempt == bindparam("b_attempt"),
                t.c.status == "running",
                free,
            )
            .values(owner=bindparam("b_owner"), heartbeat_at=now)
        )
        params: dict[str, Any] = {
            "b_id": trial_id,
            "b_attempt": attempt,
            "b_owner": owner,
            "b_lease": lease,
        }
        if dead_owner is not None:
            params["b_dead"] = dead_owner
        with self.engine.begin() as c:
            res = c.execute(stmt, params)
            if res.rowcount != 1:
                return False
            _clear_points(c, trial_id, attempt)
        return True

    def release(self, trial_id: str, attempt: int, owner: str) -> bool:
        """Let go of a running trial whose job goes on without this run: it stays
        ``running``, with no owner and no lease, so the next run adopts it at once."""
        t = s.trials
        with self.engine.begin() as c:
            res = c.execute(
                update(t)
                .where(
                    t.c.id == trial_id,
                    t.c.attempt == attempt,
                    t.c.owner == owner,
                    t.c.status == "running",
                )
                .values(owner=None, heartbeat_at=None)
            )
        return res.rowcount == 1


def _clear_points(c: Connection, trial_id: str, attempt: int) -> None:
    m = s.metrics
    c.execute(delete(m).where(m.c.trial_id == trial_id, m.c.attempt == attempt))
