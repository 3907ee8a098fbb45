"""The test evaluations of a ledger and its two hash-chained logs: every score on a test split
is stored and appended to the sealed test log in one transaction, and preregistrations are
appended to their own chain. An append takes the next sequence number and the previous
entry's hash (a concurrent append that took the same number is retried); the chains can be
recomputed to show that no entry was changed or removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import (
    IntegrityError,
    OperationalError,
)

from fairtrial.errors import LedgerError
from fairtrial.ledger import chain, faults
from fairtrial.ledger import schema as s
from fairtrial.ledger.chain import ChainCheck
from fairtrial.ledger.engine import LedgerBase, _dumps, _one_line, _stored

#: the columns each chain's entry hash covers
PREREG_FIELDS: tuple[str, ...] = (
    "seq",
    "name",
    "experiment_id",
    "spec_hash",
    "record_hash",
    "record_json",
    "created_at",
)
TEST_LOG_FIELDS: tuple[str, ...] = (
    "seq",
    "experiment_id",
    "trial_id",
    "attempt",
    "task",
    "task_checksum",
    "metric",
    "score",
    "predictions_sha256",
    "created_at",
)


class Logs(LedgerBase):
    """Test evaluations, preregistrations and the sealed test log."""

    def add_test_evaluation(
        self, trial_id: str, attempt: int, experiment_id: str, payload: dict[str, Any]
    ) -> None:
        """Store a test evaluation and append it to the sealed test log, in one transaction."""

        def write(c: Connection) -> None:
            insert_test_evaluation(c, trial_id, attempt, experiment_id, payload)

        self._chained_write(write)

    def test_evaluations(self, experiment_id: str) -> list[dict[str, Any]]:
        t, slots = s.test_evaluations, s.experiment_trials
        mine = select(slots.c.trial_id).where(slots.c.experiment_id == experiment_id)
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    select(t)
                    .where(t.c.trial_id.in_(mine) | (t.c.experiment_id == experiment_id))
                    .order_by(t.c.id)
                )
                .mappings()
                .all()
            )
        return [
            {
                **{k: v for k, v in r.items() if k != "predictions_json"},
                "predictions": json.loads(r["predictions_json"]),
            }
            for r in rows
        ]

    # -- hash-chained logs (preregistrations, sealed test log) --------------------------------
    def _chained_write(self, write: Callable[[Connection], None]) -> None:
        """Run ``write`` in a transaction, retrying when a concurrent append took the same seq."""
        chained_write(self.engine, write)

    def add_preregistration(
        self,
        *,
        name: str,
        experiment_id: str,
        spec_hash: str,
        record: dict[str, Any],
    ) -> dict[str, Any]:
        """Append a preregistration record to its chain; returns the stored entry."""
        blob = _dumps(record)
        fields = {
            "name": name,
            "experiment_id": experiment_id,
            "spec_hash": spec_hash,
            "record_hash": hashlib.sha256(blob.encode()).hexdigest(),
            "record_json": blob,
            "created_at": time.time(),
        }
        out: dict[str, Any] = {}

        def write(c: Connection) -> None:
            t = s.preregistrations
            if faults.repeated():
                # the try that failed did commit when its record heads the chain (register
                # never appends a record that is already the latest of its name)
                head = c.execute(select(t).order_by(t.c.seq.desc()).limit(1)).mappings().first()
                if head is not None and head["record_hash"] == fields["record_hash"]:
                    out.update(head)
                    return
            out.update(_append(c, t, PREREG_FIELDS, fields))

        self._chained_write(write)
        return out

    def preregistrations(self, name: str | None = None) -> list[dict[str, Any]]:
        """Preregistration entries in chain order (all, or those of experiment ``name``)."""
        t = s.preregistrations
        q = select(t).order_by(t.c.seq)
        if name is not None:
            q = q.where(t.c.name == name)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings().all()]

    def test_log(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Sealed test log entries in chain order (all, or those of one experiment)."""
        t = s.test_log
        q = select(t).order_by(t.c.seq)
        if experiment_id is not None:
            q = q.where(t.c.experiment_id == experiment_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings().all()]

    def check_chain(self, which: str) -> ChainCheck:
        """Recompute the hash chain ``"preregistrations"`` or ``"test_log"``."""
        if which == "preregistrations":
            rows, fields = self.preregistrations(), PREREG_FIELDS
        elif which == "test_log":
            rows, fields = self.test_log(), TEST_LOG_FIELDS
        else:
            raise ValueError(f"unknown chain '{which}'; valid: preregistrations, test_log")
        return chain.check(rows, fields, which.replace("_", " "))

    def test_evaluation_keys(self) -> list[tuple[str, int, str, float]]:
        """(trial_id, attempt, predictions_sha256, score) of every stored test evaluation made
        since the sealed test log existed in this ledger (see :meth:`test_log_since`)."""
        t = s.test_evaluations
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.c.trial_id, t.c.attempt, t.c.predictions_sha256, t.c.score)
                .where(t.c.id > self.test_log_since())
                .order_by(t.c.id)
            ).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def test_evaluations_before_log(self) -> set[tuple[str, int]]:
        """(trial_id, attempt) of the evaluations made before the sealed test log existed."""
        t = s.test_evaluations
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.c.trial_id, t.c.attempt).where(t.c.id <= self.test_log_since())
            ).all()
        return {(r[0], r[1]) for r in rows}

    def test_log_since(self) -> int:
        """The last test evaluation id made before this ledger had a sealed test log (0 for a
        ledger that had it from the start): older evaluations cannot be in the log."""
        with self.engine.connect() as c:
            row = c.execute(select(s.meta.c.value).where(s.meta.c.key == "test_log_since")).first()
        return int(row[0]) if row else 0


def insert_test_evaluation(
    c: Connection, trial_id: str, attempt: int, experiment_id: str, payload: dict[str, Any]
) -> None:
    """Store a test evaluation and append it to the sealed test log, in the open transaction
    ``c`` (run it through :func:`chained_write`: a concurrent append may take its seq)."""
    now = time.time()
    key = {
        "trial_id": trial_id,
        "attempt": attempt,
        "predictions_sha256": payload["predictions_sha256"],
    }
    if faults.repeated() and _stored(c, s.test_evaluations, key):
        return  # the try that failed did commit
    c.execute(
        insert(s.test_evaluations),
        {
            "trial_id": trial_id,
            "attempt": attempt,
            "experiment_id": experiment_id,
            "task": payload["task"],
            "task_checksum": payload["task_checksum"],
            "metric": payload["metric"],
            "score": payload["score"],
            "n": payload["n"],
            "predictions_sha256": payload["predictions_sha256"],
            "predictions_json": _dumps(payload["predictions"]),
            "created_at": now,
        },
    )
    _append(
        c,
        s.test_log,
        TEST_LOG_FIELDS,
        {
            "experiment_id": experiment_id,
            "trial_id": trial_id,
            "attempt": attempt,
            "task": payload["task"],
            "task_checksum": payload["task_checksum"],
            "metric": payload["metric"],
            "score": float(payload["score"]),
            "predictions_sha256": payload["predictions_sha256"],
            "created_at": now,
        },
    )


def chained_write(engine: Engine, write: Callable[[Connection], None], own: bool = True) -> None:
    """Run ``write`` in a transaction, retrying when a concurrent append took the same seq.

    ``own``: ``write`` only appends to a log, so that its other integrity errors are said
    as a failed append; else they are raised as they are.
    """
    for attempt in range(20):
        try:
            with engine.begin() as c:
                write(c)
            return
        except (IntegrityError, OperationalError) as exc:
            if faults.classify(exc) is not None:
                raise  # busy, or a lost connection: the retrier runs the whole method again
            text = str(exc.orig).lower()
            if not any(w in text for w in ("unique", "duplicate")):
                if not own:
                    raise
                raise LedgerError(f"cannot append to a log: {_one_line(exc.orig)}") from None
            if attempt == 19:
                raise LedgerError(f"cannot append to a log: {_one_line(exc.orig)}") from None
            time.sleep(0.01 * (attempt + 1))


def _append(
    c: Connection, table: Table, fields: tuple[str, ...], values: dict[str, Any]
) -> dict[str, Any]:
    """Append one entry to a hash chain inside the open transaction ``c``."""
    head = c.execute(_head_statement(table)).first()
    seq, prev = (1, chain.GENESIS) if head is None else (head[0] + 1, head[1])
    row = {**values, "seq": seq}
    row["prev_hash"] = prev
    row["entry_hash"] = chain.entry_hash(prev, {k: row[k] for k in fields})
    c.execute(insert(table), row)
    return row


@functools.cache
def _head_statement(table: Table) -> Any:
    """The last entry of a chain (built once: it runs for every append)."""
    return select(table.c.seq, table.c.entry_hash).order_by(table.c.seq.desc()).limit(1)
