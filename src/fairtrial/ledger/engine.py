"""Opening a ledger: the store URL (a file path or ``None`` becomes a SQLite file, a
``postgresql://`` URL needs psycopg), the SQLAlchemy engine with SQLite's pragmas (WAL, or
read-only for a file this user cannot write), the checks of a damaged file, the creation of
the tables and the migration of a ledger made by an older fairtrial. :class:`LedgerBase`
holds the open engine that every group of :class:`~fairtrial.ledger.Ledger` methods builds
on, with the helpers they share.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
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

from fairtrial.errors import LedgerError, MissingDependency
from fairtrial.ledger import faults
from fairtrial.ledger import schema as s
from fairtrial.ledger.idempotent import insert_ignore

DEFAULT_STORE = ".fairtrial/ledger.db"


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


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


class LedgerBase:
    """The open store: its URL, engine and retrier; the methods of each table build on it."""

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
            self._open(path if existed else None, where)
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

    def _open(self, existing: Path | None, where: str) -> None:
        """Check an existing SQLite file and create what a new ledger lacks. A SQLite file
        that stays locked past its busy timeout is busy, not unreachable (many runs starting
        at once on a loaded machine): the opening is tried again within the retry window."""
        deadline = time.monotonic() + faults.window()
        delay = faults.FIRST_DELAY
        while True:
            try:
                if existing is not None and faults.needs_quick_check(existing):
                    faults.quick_check(self.engine, where, existing)
                self._create()
                return
            except DBAPIError as exc:
                busy = self.dialect == "sqlite" and faults.classify(exc) == faults.TRANSIENT
                if not busy or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, faults.MAX_DELAY)

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

    def _where(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)


def _stored(c: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Whether ``table`` holds a row with the values of ``row``."""
    where = [table.c[k] == v for k, v in row.items()]
    return c.execute(select(func.count()).select_from(table).where(*where)).scalar() != 0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may wait for a lock
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_read_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """A ledger opened read-only: no journal mode change (a write), and no writes at all."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


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
