"""The ledger: experiments, trials, metric series, provenance and test evaluations.

One class over SQLAlchemy Core. SQLite (the default, a file under ``./.fairtrial``) runs in WAL
mode so that readers (``fairtrial status``) never block the writer; PostgreSQL is any
``postgresql://`` URL. Each method is one short transaction, so a kill at any moment leaves the
ledger consistent, and claiming a trial is a conditional update, so two runs on one ledger never
run the same attempt twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from fairtrial.errors import ExperimentNotFound, LedgerError, MissingDependency
from fairtrial.ledger import chain, faults
from fairtrial.ledger import schema as s
from fairtrial.ledger.chain import ChainCheck
from fairtrial.ledger.idempotent import insert_ignore, upsert
from fairtrial.record import ENDED

DEFAULT_STORE = ".fairtrial/ledger.db"
#: statuses a run treats as done (failures are results: they are kept, not re-run)
DONE = ENDED


def store_url(store: str | Path | None) -> str:
    """A SQLAlchemy URL from a URL, a file path, or None (the default ``./.fairtrial`` file)."""
    if store is None:
        store = DEFAULT_STORE
    text = str(store)
    if "://" not in text:
        path = Path(text).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if text.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise MissingDependency("psycopg", "postgres", "a PostgreSQL ledger")
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


@dataclass(frozen=True)
class ExperimentRow:
    id: str
    name: str
    spec_hash: str
    spec: dict[str, Any]
    arms: dict[str, Any]  # {"arms": [...], "ablations": [...]} as Spec.arm_table()
    spec_path: str | None
    task: str
    task_checksum: str
    metric: str
    direction: str
    seeds: int
    root_seed: int
    created_at: float
    updated_at: float


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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@faults.retried
class Ledger:
    """The store behind every command; open with ``Ledger(store)`` (URL, path or None)."""

    def __init__(self, store: str | Path | None = None) -> None:
        self.url = store_url(store)
        where = _safe(self.url)
        path = faults.sqlite_path(self.url)
        existed = path is not None and path.exists()
        #: why this ledger can only be read (a SQLite file or folder without write permission)
        self.read_only: str | None = None
        options: dict[str, Any] = {}
        if path is not None and existed:
            try:
                faults.check_sqlite_file(path, where)
            except OSError as exc:  # a folder, or a file this user may not read
                raise LedgerError(f"cannot open store '{where}': {exc.strerror}") from None
            self.read_only = faults.read_only_reason(path)
            if self.read_only:
                options["creator"] = faults.read_only_connect(path)
        elif self.url.startswith("postgresql"):
            query = make_url(self.url).query
            if "connect_timeout" not in query and "PGCONNECT_TIMEOUT" not in os.environ:
                # a host that drops packets would hold a reconnect for minutes
                options["connect_args"] = {"connect_timeout": 10}
        try:
            self.engine: Engine = create_engine(self.url, future=True, **options)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise LedgerError(f"cannot open store '{_safe(store)}': {exc}") from None
        if self.engine.dialect.name == "sqlite":
            pragmas = _sqlite_read_pragmas if self.read_only else _sqlite_pragmas
            event.listen(self.engine, "connect", pragmas)
        try:
            if path is not None and existed and faults.needs_quick_check(path):
                faults.quick_check(self.engine, where, path)
            self._create()
        except DBAPIError as exc:
            kind = faults.classify(exc)
            if kind is None:
                raise LedgerError(f"cannot open store '{where}': {_one_line(exc.orig)}") from None
            if kind in (faults.TRANSIENT, faults.UNREACHABLE):
                # the first connection failed: a wrong URL more often than an outage
                raise faults.LedgerUnavailable(
                    f"cannot open store '{where}': the ledger is unreachable "
                    f"({faults.one_line(exc)}); check the URL and that its server is running",
                    faults.UNREACHABLE,
                ) from None
            raise faults.fault_error(kind, where, faults.one_line(exc), path) from None
        self._retrier = faults.Retrier(where, path, self.read_only)

    def _create(self) -> None:
        """Create the tables a new ledger lacks, and check or record its schema version."""
        for attempt in range(5):
            try:
                s.metadata.create_all(self.engine)
                self._check_version()
                return
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                # Two processes creating a new ledger at once: the loser sees "already
                # exists"; on the next pass create_all finds the tables and skips them.
                text = str(exc.orig).lower()
                if attempt == 4 or not any(
                    word in text for word in ("exist", "duplicate", "unique")
                ):
                    raise
                time.sleep(0.05 * (attempt + 1))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def _check_version(self) -> None:
        with self.engine.begin() as c:
            since = c.execute(
                select(s.meta.c.value).where(s.meta.c.key == "test_log_since")
            ).first()
            if since is None:
                # the sealed test log starts now; evaluations already stored predate it
                last = c.execute(select(func.max(s.test_evaluations.c.id))).scalar()
                insert_ignore(c, s.meta, [{"key": "test_log_since", "value": str(last or 0)}])
            row = c.execute(select(s.meta.c.value).where(s.meta.c.key == "schema")).first()
            if row is None:
                insert_ignore(c, s.meta, [{"key": "schema", "value": str(s.SCHEMA_VERSION)}])
            elif int(row[0]) > s.SCHEMA_VERSION:
                raise LedgerError(
                    f"store {self.url} has schema {row[0]}, newer than this fairtrial "
                    f"understands ({s.SCHEMA_VERSION}): upgrade fairtrial"
                )
            elif int(row[0]) < s.SCHEMA_VERSION:
                if int(row[0]) < 2:
                    _migrate_to_identities(c)
                _migrate_to_leases(c)
                version = str(s.SCHEMA_VERSION)
                c.execute(update(s.meta).where(s.meta.c.key == "schema").values(value=version))

    # -- experiments ----------------------------------------------------------------------------
    def upsert_experiment(
        self,
        *,
        experiment_id: str,
        name: str,
        spec_hash: str,
        spec: dict[str, Any],
        arms: dict[str, Any],
        spec_path: str | None,
        task: str,
        task_checksum: str,
        metric: str,
        direction: str,
        seeds: int,
        root_seed: int,
    ) -> None:
        now = time.time()
        with self.engine.begin() as c:
            upsert(
                c,
                s.experiments,
                {
                    "id": experiment_id,
                    "name": name,
                    "spec_hash": spec_hash,
                    "spec_json": _dumps(spec),
                    "arms_json": json.dumps(arms),
                    "spec_path": spec_path,
                    "task": task,
                    "task_checksum": task_checksum,
                    "metric": metric,
                    "direction": direction,
                    "seeds": seeds,
                    "root_seed": root_seed,
                    "created_at": now,
                    "updated_at": now,
                },
                # the data the experiment's trials now run on (trials of older data are not
                # in its slots any more)
                changed=("updated_at", "spec_path", "task_checksum"),
            )

    def set_seeds(self, experiment_id: str, seeds: int) -> None:
        """Record the planned number of seeds (``seeds = "auto"`` decides it after the pilot)."""
        with self.engine.begin() as c:
            c.execute(
                update(s.experiments)
                .where(s.experiments.c.id == experiment_id)
                .values(seeds=seeds, updated_at=time.time())
            )

    def experiments(self) -> list[ExperimentRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(s.experiments).order_by(s.experiments.c.updated_at)).all()
        return [_experiment(r) for r in rows]

    def experiment(self, experiment_id: str) -> ExperimentRow:
        with self.engine.connect() as c:
            row = c.execute(
                select(s.experiments).where(s.experiments.c.id == experiment_id)
            ).first()
        if row is None:
            raise ExperimentNotFound(f"no experiment with id '{experiment_id}' in {self.url}")
        return _experiment(row)

    def find_experiment(self, ref: str) -> ExperimentRow:
        """By id, id prefix (4+ characters), or name; a prefix or a name that several
        experiments share raises :class:`ExperimentNotFound` listing them, to pick by id."""
        exps = self.experiments()
        for match in (
            [e for e in exps if e.id == ref or e.spec_hash == ref],
            [e for e in exps if len(ref) >= 4 and e.id.startswith(ref)],
            [e for e in exps if e.name == ref],
        ):
            if len({e.id for e in match}) == 1:
                return match[-1]
            if match:
                raise ExperimentNotFound(
                    f"'{ref}' matches {len(match)} experiments in {self._where()}; give the id "
                    f"(or the spec file) of the one you mean: {self._listing(match)}"
                )
        names = sorted({e.name for e in exps})
        known = f"; known: {', '.join(names)}" if names else "; the store is empty"
        raise ExperimentNotFound(f"no experiment '{ref}' in {self._where()}{known}")

    def _listing(self, exps: Sequence[ExperimentRow]) -> str:
        """``ID (name, last run WHEN, N seeds, D/T trials done)`` per experiment, newest first."""
        t = s.trials
        ids = [e.id for e in exps]
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.c.experiment_id, t.c.status, func.count())
                .where(t.c.experiment_id.in_(ids))
                .group_by(t.c.experiment_id, t.c.status)
            ).all()
        done: dict[str, int] = {}
        total: dict[str, int] = {}
        for eid, status, n in rows:
            total[eid] = total.get(eid, 0) + n
            if status in DONE:
                done[eid] = done.get(eid, 0) + n
        out = []
        for e in sorted(exps, key=lambda e: e.updated_at, reverse=True):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.updated_at))
            out.append(
                f"{e.id} ({e.name}, last run {when}, {e.seeds} seeds, "
                f"{done.get(e.id, 0)}/{total.get(e.id, 0)} trials done)"
            )
        return ", ".join(out)

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

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

    def add_metrics(self, trial_id: str, attempt: int, rows: Sequence[Sequence[Any]]) -> None:
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
        with self.engine.begin() as c:
            first = {k: values[0][k] for k in ("trial_id", "attempt", "step", "t", "name")}
            if faults.repeated() and _stored(c, s.metrics, first):
                return  # the try that failed did commit
            c.execute(insert(s.metrics), values)

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

    def add_test_evaluation(
        self, trial_id: str, attempt: int, experiment_id: str, payload: dict[str, Any]
    ) -> None:
        """Store a test evaluation and append it to the sealed test log, in one transaction."""

        def write(c: Connection) -> None:
            now = time.time()
            key = {
                "trial_id": trial_id,
                "attempt": attempt,
                "predictions_sha256": payload["predictions_sha256"],
            }
            if faults.repeated() and _stored(c, s.test_evaluations, key):
                return  # the try that failed did commit
            c.execute(
                insert(s.test_evaluations).values(
                    trial_id=trial_id,
                    attempt=attempt,
                    experiment_id=experiment_id,
                    task=payload["task"],
                    task_checksum=payload["task_checksum"],
                    metric=payload["metric"],
                    score=payload["score"],
                    n=payload["n"],
                    predictions_sha256=payload["predictions_sha256"],
                    predictions_json=_dumps(payload["predictions"]),
                    created_at=now,
                )
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
        for attempt in range(20):
            try:
                with self.engine.begin() as c:
                    write(c)
                return
            except (IntegrityError, OperationalError) as exc:
                if faults.classify(exc) is not None:
                    raise  # busy, or a lost connection: the retrier runs the whole method again
                text = str(exc.orig).lower()
                if not any(w in text for w in ("unique", "duplicate")):
                    raise LedgerError(f"cannot append to a log: {_one_line(exc.orig)}") from None
                if attempt == 19:
                    raise LedgerError(f"cannot append to a log: {_one_line(exc.orig)}") from None
                time.sleep(0.01 * (attempt + 1))

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
        t = s.trial_compute
        blob = json.dumps(_finite(record), sort_keys=True, default=_json_default)
        row = {"trial_id": trial_id, "attempt": attempt, "compute_json": blob}
        with self.engine.begin() as c:
            upsert(c, t, {**row, "created_at": time.time()}, ("compute_json", "created_at"))

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
        t = s.trial_config_reads
        row = {"trial_id": trial_id, "attempt": attempt, "keys_json": _dumps(list(keys))}
        with self.engine.begin() as c:
            upsert(c, t, row, ("keys_json",))

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


def _append(
    c: Connection, table: Table, fields: tuple[str, ...], values: dict[str, Any]
) -> dict[str, Any]:
    """Append one entry to a hash chain inside the open transaction ``c``."""
    head = c.execute(
        select(table.c.seq, table.c.entry_hash).order_by(table.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (1, chain.GENESIS) if head is None else (head[0] + 1, head[1])
    row = {**values, "seq": seq}
    row["prev_hash"] = prev
    row["entry_hash"] = chain.entry_hash(prev, {k: row[k] for k in fields})
    c.execute(insert(table).values(**row))
    return row


def _stored(c: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Whether ``table`` holds a row with the values of ``row``."""
    where = [table.c[k] == v for k, v in row.items()]
    return c.execute(select(func.count()).select_from(table).where(*where)).scalar() != 0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_read_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """A ledger opened read-only: no journal mode change (a write), and no writes at all."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _experiment(r: Any) -> ExperimentRow:
    return ExperimentRow(
        id=r.id,
        name=r.name,
        spec_hash=r.spec_hash,
        spec=json.loads(r.spec_json),
        arms=json.loads(r.arms_json),
        spec_path=r.spec_path,
        task=r.task,
        task_checksum=r.task_checksum,
        metric=r.metric,
        direction=r.direction,
        seeds=r.seeds,
        root_seed=r.root_seed,
        created_at=r.created_at,
        updated_at=r.updated_at,
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


def _migrate_to_identities(c: Connection) -> None:
    """Schema 1 -> 2: trials get a ``code_hash`` column and every experiment's slots point at
    the trials it ran. Their ids (``experiment/arm/seed``) match no identity a plan computes,
    so their code is unknown and they are never reused: a new run re-runs them."""
    from sqlalchemy import inspect, text

    columns = {col["name"] for col in inspect(c).get_columns("trials")}
    if "code_hash" not in columns:
        c.execute(text("ALTER TABLE trials ADD COLUMN code_hash VARCHAR(64)"))
    t, slots = s.trials, s.experiment_trials
    if c.execute(select(func.count()).select_from(slots)).scalar():
        return
    rows = c.execute(select(t.c.experiment_id, t.c.arm, t.c.seed, t.c.id)).all()
    if rows:
        c.execute(
            insert(slots),
            [{"experiment_id": e, "arm": a, "seed": sd, "trial_id": i} for e, a, sd, i in rows],
        )


def _migrate_to_leases(c: Connection) -> None:
    """Schema 2 -> 3: trials get a lease (``heartbeat_at``). A trial left running by an
    older fairtrial has none, so the next run may take it over at once."""
    from sqlalchemy import inspect, text

    columns = {col["name"] for col in inspect(c).get_columns("trials")}
    if "heartbeat_at" not in columns:
        c.execute(text("ALTER TABLE trials ADD COLUMN heartbeat_at FLOAT"))


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


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())


def _safe(store: str | Path | None) -> str:
    """The store as given, with any password in a URL masked (errors end up in logs)."""
    text = str(store)
    if "://" not in text:
        return text
    try:
        return make_url(text).render_as_string(hide_password=True)
    except Exception:
        return text.split("://", 1)[0] + "://***"
