"""What a ledger records about each trial besides its result: the metric series it logged,
the code it ran (file contents stored once by sha256), its provenance, its compute record
and the config keys it read, per attempt (read back for each trial's latest attempt); and
per experiment, its ``[compute]`` settings and the replication records of its bundle.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    and_,
    insert,
    select,
)

from fairtrial.errors import LedgerError
from fairtrial.ledger import faults
from fairtrial.ledger import schema as s
from fairtrial.ledger.engine import LedgerBase, _dumps, _stored
from fairtrial.ledger.idempotent import insert_ignore, upsert


class Records(LedgerBase):
    """Metric series, code snapshots, replications, compute and provenance records."""

    def add_metrics(self, trial_id: str, attempt: int, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.engine.begin() as c:
            insert_metrics(c, trial_id, attempt, rows)

    def metrics(self, trial_id: str, attempt: int | None = None) -> list[tuple[Any, ...]]:
        """(attempt, step, t, name, value) rows, in logging order."""
        q = select(
            s.metrics.c.attempt,
            s.metrics.c.step,
            s.metrics.c.t,
            s.metrics.c.name,
            s.metrics.c.value,
        ).where(s.metrics.c.trial_id == trial_id)
        if attempt is not None:
            q = q.where(s.metrics.c.attempt == attempt)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(s.metrics.c.attempt, s.metrics.c.t)).all()
        return [(a, st, t, n, math.nan if v is None else v) for a, st, t, n, v in rows]

    # -- code snapshots and replications ------------------------------------------------------
    def put_code_files(self, contents: Iterable[bytes]) -> list[str]:
        """Store file contents by sha256 (once each); returns their hashes."""
        out = []
        with self.engine.begin() as c:
            for content in contents:
                digest = hashlib.sha256(content).hexdigest()
                out.append(digest)
                t = s.code_files
                if c.execute(select(t.c.sha256).where(t.c.sha256 == digest)).first() is None:
                    row = {"sha256": digest, "size": len(content), "content": content}
                    insert_ignore(c, t, [row])
        return out

    def put_code_snapshot(self, snapshot: dict[str, Any]) -> dict[str, Any]:
        """Store the contents of a :func:`fairtrial.provenance.code_snapshot`; returns it with
        each file's content replaced by ``{"sha256", "size"}`` (what provenance records)."""
        out = dict(snapshot)
        for where in ("files", "external"):
            contents: dict[str, bytes] = snapshot.get(where, {})
            hashes = self.put_code_files(contents.values())
            out[where] = {
                key: {"sha256": h, "size": len(content)}
                for (key, content), h in zip(contents.items(), hashes, strict=True)
            }
        return out

    def code_file(self, sha256: str) -> bytes:
        t = s.code_files
        with self.engine.connect() as c:
            row = c.execute(select(t.c.content).where(t.c.sha256 == sha256)).first()
        if row is None:
            raise LedgerError(f"no code file with sha256 {sha256[:12]} in {self._where()}")
        return bytes(row[0])

    def add_replication(self, record: dict[str, Any]) -> str:
        """Store a replication record (its id is the sha256 of its JSON); returns the id."""
        blob = _dumps(record)
        rid = hashlib.sha256(blob.encode()).hexdigest()
        original = record["original"]
        with self.engine.begin() as c:
            t = s.replications
            if c.execute(select(t.c.id).where(t.c.id == rid)).first() is None:
                row = {
                    "id": rid,
                    "experiment_id": original["experiment_id"],
                    "experiment_name": original["name"],
                    "bundle_sha256": record["bundle"]["sha256"],
                    "outcome": record["outcome"],
                    "created_at": time.time(),
                    "record_json": blob,
                }
                insert_ignore(c, t, [row])
        return rid

    def replications(self, experiment_id: str | None = None) -> list[dict[str, Any]]:
        """Stored replication records, oldest first (all, or those of one original experiment)."""
        t = s.replications
        q = select(t).order_by(t.c.created_at)
        if experiment_id is not None:
            q = q.where(t.c.experiment_id == experiment_id)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
        return [{**json.loads(r["record_json"]), "id": r["id"]} for r in rows]

    # -- compute --------------------------------------------------------------------------------
    def add_compute(self, trial_id: str, attempt: int, record: dict[str, Any]) -> None:
        """Store the compute record of one attempt (replacing an earlier one of that attempt)."""
        with self.engine.begin() as c:
            upsert_compute(c, trial_id, attempt, record)

    def compute(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        """{trial_id: compute record} of each trial's latest attempt (trials without one are
        left out: pending, or running right now)."""
        return self._latest_attempts(s.trial_compute, "compute_json", experiment_id)

    def _latest_attempts(self, table: Table, column: str, experiment_id: str) -> dict[str, Any]:
        """{trial_id: JSON of ``column``} of a per-attempt ``table``, for the latest attempt of
        each trial in the experiment's slots."""
        tr, slots = s.trials, s.experiment_trials
        q = (
            select(table.c.trial_id, table.c[column])
            .select_from(
                table.join(
                    tr, and_(tr.c.id == table.c.trial_id, tr.c.attempt == table.c.attempt)
                ).join(slots, slots.c.trial_id == tr.c.id)
            )
            .where(slots.c.experiment_id == experiment_id)
            .order_by(slots.c.seed, slots.c.arm)
        )
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return {trial_id: json.loads(blob) for trial_id, blob in rows}

    # -- config keys read -----------------------------------------------------------------------
    def add_config_reads(self, trial_id: str, attempt: int, keys: Sequence[str]) -> None:
        """Store the config keys one attempt read (replacing an earlier record of it)."""
        with self.engine.begin() as c:
            upsert_config_reads(c, trial_id, attempt, keys)

    def config_reads(self, experiment_id: str) -> dict[str, list[str]]:
        """{trial_id: config keys read} of each trial's latest attempt that recorded them."""
        return self._latest_attempts(s.trial_config_reads, "keys_json", experiment_id)

    def set_compute_settings(self, experiment_id: str, settings: dict[str, Any]) -> None:
        """Store the experiment's ``[compute]`` table as given in the spec last run."""
        t = s.experiment_compute
        row = {"experiment_id": experiment_id, "settings_json": _dumps(settings)}
        with self.engine.begin() as c:
            upsert(c, t, {**row, "updated_at": time.time()}, ("settings_json", "updated_at"))

    def compute_settings(self, experiment_id: str) -> dict[str, Any]:
        """The experiment's ``[compute]`` table ({} when it had none, or ran before it existed)."""
        t = s.experiment_compute
        with self.engine.connect() as c:
            row = c.execute(
                select(t.c.settings_json).where(t.c.experiment_id == experiment_id)
            ).first()
        data: dict[str, Any] = json.loads(row[0]) if row else {}
        return data

    # -- provenance -----------------------------------------------------------------------------
    def put_provenance(self, data: dict[str, Any]) -> str:
        blob = _dumps(data)
        pid = hashlib.sha256(blob.encode()).hexdigest()
        with self.engine.begin() as c:
            if c.execute(select(s.provenance.c.id).where(s.provenance.c.id == pid)).first():
                return pid
            insert_ignore(c, s.provenance, [{"id": pid, "data_json": blob}])
        return pid

    def provenance(self, provenance_id: str) -> dict[str, Any]:
        with self.engine.connect() as c:
            row = c.execute(
                select(s.provenance.c.data_json).where(s.provenance.c.id == provenance_id)
            ).first()
        if row is None:
            raise LedgerError(f"no provenance '{provenance_id}'")
        data: dict[str, Any] = json.loads(row[0])
        return data


def insert_metrics(
    c: Connection, trial_id: str, attempt: int, rows: Sequence[Sequence[Any]]
) -> None:
    """Store metric points of one attempt in the open transaction ``c``."""
    if not rows:
        return
    values = [
        {
            "trial_id": trial_id,
            "attempt": attempt,
            "step": step,
            "t": t,
            "name": name,
            "value": None if isinstance(v, float) and math.isnan(v) else v,
        }
        for step, t, name, v in rows
    ]
    first = {k: values[0][k] for k in ("trial_id", "attempt", "step", "t", "name")}
    if faults.repeated() and _stored(c, s.metrics, first):
        return  # the try that failed did commit
    c.execute(insert(s.metrics), values)


def upsert_compute(c: Connection, trial_id: str, attempt: int, record: dict[str, Any]) -> None:
    """Store the compute record of one attempt in the open transaction ``c``."""
    blob = json.dumps(_finite(record), sort_keys=True, default=_json_default)
    row = {"trial_id": trial_id, "attempt": attempt, "compute_json": blob}
    upsert(c, s.trial_compute, {**row, "created_at": time.time()}, ("compute_json", "created_at"))


def upsert_config_reads(c: Connection, trial_id: str, attempt: int, keys: Sequence[str]) -> None:
    """Store the config keys one attempt read in the open transaction ``c``."""
    row = {"trial_id": trial_id, "attempt": attempt, "keys_json": _dumps(list(keys))}
    upsert(c, s.trial_config_reads, row, ("keys_json",))


def _finite(obj: Any) -> Any:
    """NaN and infinities (not JSON) become None, at any depth."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    """numpy scalars and the like in a compute record become plain numbers."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
