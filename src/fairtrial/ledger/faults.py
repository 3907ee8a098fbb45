"""Ledger faults: the transient ones are retried, the rest end in one clear line.

Each public :class:`~fairtrial.ledger.store.Ledger` method is one short transaction, so a
method that meets a transient fault (PostgreSQL restarting, a connection reset or refused,
SQLite busy) is run again whole, with exponential back-off, for at most
``FAIRTRIAL_LEDGER_RETRY_SECONDS`` (30 by default). The writes are safe to run again: inserts
of keyed rows skip or replace a row that is already there, updates are conditional, and the
appends that have no key (metric points, test evaluations, log entries) look for themselves
first when :func:`repeated` says the earlier try may have committed after all (PostgreSQL can
commit a transaction whose COMMIT lost its answer).

A fault that persists past the window, or that no retry cures (a corrupt or read-only SQLite
file), becomes a :class:`LedgerUnavailable` whose message is the one line the CLI prints.
SQLite files are also checked when opened (:func:`check_sqlite_file`, :func:`quick_check`),
so that a damaged file is named as such by every command, not only by those that happen to
read the damaged page.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from fairtrial.errors import LedgerError

ENV_WINDOW = "FAIRTRIAL_LEDGER_RETRY_SECONDS"
DEFAULT_WINDOW = 30.0
FIRST_DELAY = 0.1
MAX_DELAY = 4.0
#: SQLite files up to this size are checked page by page (PRAGMA quick_check) on every open;
#: bigger ones when they were not closed cleanly (a -wal file is left). About 1 s per 100 MB.
QUICK_CHECK_BYTES = 64 << 20

TRANSIENT = "transient"
UNREACHABLE = "unreachable"
CORRUPT = "corrupt"
READ_ONLY = "read-only"
FULL = "full"

#: PostgreSQL SQLSTATEs worth another try: the server shutting down or starting up, and
#: transactions rolled back by a serialization failure or a deadlock (class 08, connection
#: exceptions, is matched by its prefix)
_PG_TRANSIENT = {"57P01", "57P02", "57P03", "40001", "40P01"}
#: SQLite primary result codes
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_SQLITE_TEXT = {
    "database or disk is full": _SQLITE_FULL,
    "database is locked": _SQLITE_BUSY,
    "database table is locked": _SQLITE_LOCKED,
    "readonly database": _SQLITE_READONLY,
    "disk i/o error": _SQLITE_IOERR,
    "malformed": _SQLITE_CORRUPT,
    "unable to open database": _SQLITE_CANTOPEN,
    "not a database": _SQLITE_NOTADB,
}

log = logging.getLogger("fairtrial.ledger")
C = TypeVar("C", bound=type)
_state = threading.local()


class LedgerUnavailable(LedgerError):
    """The ledger cannot be used right now: unreachable, corrupt or read-only (``kind``)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def window() -> float:
    """Seconds a method keeps retrying a transient fault (``FAIRTRIAL_LEDGER_RETRY_SECONDS``)."""
    text = os.environ.get(ENV_WINDOW, "").strip()
    if not text:
        return DEFAULT_WINDOW
    try:
        value = float(text)
    except ValueError:
        raise LedgerError(
            f"{ENV_WINDOW}='{text}' is not a number of seconds (e.g. {DEFAULT_WINDOW:g}; "
            "0 turns retries off)"
        ) from None
    if not value >= 0:
        raise LedgerError(f"{ENV_WINDOW}={text} must be 0 or more seconds")
    return value


def _sqlite_code(orig: BaseException) -> int | None:
    code = getattr(orig, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF
    text = str(orig).lower()
    return next((c for words, c in _SQLITE_TEXT.items() if words in text), None)


def classify(exc: BaseException) -> str | None:
    """What kind of fault a database error is: :data:`TRANSIENT` (worth another try),
    :data:`UNREACHABLE`, :data:`CORRUPT`, :data:`READ_ONLY`, :data:`FULL`, or None (not a
    fault of the database but of the statement: a bug or a constraint, left to the caller)."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return TRANSIENT
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = _sqlite_code(orig)
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return TRANSIENT
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return CORRUPT
        if code == _SQLITE_READONLY:
            return READ_ONLY
        if code == _SQLITE_FULL:
            return FULL
        if code in (_SQLITE_IOERR, _SQLITE_CANTOPEN):
            return UNREACHABLE
        return None
    # psycopg (sqlstate) or psycopg2 (pgcode)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state == "25006":  # a read-only transaction: a standby, or default_transaction_read_only
        return READ_ONLY
    if state == "53100":
        return FULL
    # no state: failed on the client's side, e.g. connection refused, or the server closed
    # the connection
    if isinstance(exc, OperationalError) and (
        state is None or str(state).startswith("08") or state in _PG_TRANSIENT
    ):
        return TRANSIENT
    return None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The driver's message of a database error on one line."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fault_error(kind: str, where: str, reason: str, path: Path | None = None) -> LedgerUnavailable:
    """The one line for a fault of the ledger at ``where`` (a URL with its password hidden)."""
    if kind == CORRUPT:
        salvage = (
            f", or salvage what is readable: sqlite3 '{path}' .recover | sqlite3 "
            f"'{path.with_name(path.stem + '-recovered.db')}'"
            if path is not None
            else ""
        )
        return LedgerUnavailable(
            f"the ledger at {where} is corrupt ({reason}): restore it from a backup{salvage}, "
            "then run again",
            kind,
        )
    if kind == FULL:
        return LedgerUnavailable(
            f"the ledger at {where} cannot grow ({reason}): free some space; finished trials "
            "are safe; run again to resume",
            kind,
        )
    if kind == READ_ONLY:
        return LedgerUnavailable(
            f"the ledger at {where} is read-only ({reason}): status, report and bundle can "
            "read it, but this command writes to it; give it (and its folder) write "
            "permission, or copy it somewhere writable and pass --store",
            kind,
        )
    return LedgerUnavailable(
        f"the ledger at {where} is unreachable ({reason}): finished trials are safe; "
        "run again to resume",
        UNREACHABLE,
    )


def repeated() -> bool:
    """True inside a ledger method that is being run again after a transient fault: a write
    without a unique key checks first whether the earlier try did commit."""
    return bool(getattr(_state, "tries", 0))


class Retrier:
    """Runs ledger methods, retrying transient faults for :func:`window` seconds.

    After a method gave up, the next ones try once each until one succeeds: a run that stops
    on an unreachable ledger (and records its trials as interrupted on the way out) does not
    wait the window again for every record.
    """

    def __init__(self, where: str, path: Path | None = None, read_only: str | None = None) -> None:
        self.where = where
        self.path = path
        #: why the ledger was opened read-only (what a write's fault then says)
        self.read_only = read_only
        #: how long the last method retried before it gave up ("" without retries; None: the
        #: last one succeeded)
        self.gave_up: str | None = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(_state, "depth", 0):
            # a method called by another one: the outer call retries the whole
            return fn(*args, **kwargs)
        # an iterator argument would be used up by the first try
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        kwargs = {k: list(v) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
        _state.depth, _state.tries = 1, 0
        start = time.monotonic()
        delay = FIRST_DELAY
        try:
            while True:
                try:
                    result = fn(*args, **kwargs)
                except DBAPIError as exc:
                    kind = classify(exc)
                    if kind is None:
                        raise
                    reason = one_line(exc)
                    if kind == READ_ONLY and self.read_only:
                        reason = self.read_only
                    if kind == TRANSIENT:
                        waited = time.monotonic() - start
                        left = 0.0 if self.gave_up is not None else window() - waited
                        if left > 0:
                            if _state.tries == 0:
                                log.warning(
                                    "the ledger at %s did not answer (%s); retrying for up to "
                                    "%.0f s",
                                    self.where,
                                    reason,
                                    left,
                                )
                            time.sleep(min(delay, left))
                            delay = min(delay * 2, MAX_DELAY)
                            _state.tries += 1
                            continue
                        if self.gave_up is None:
                            tries = _state.tries + 1
                            self.gave_up = (
                                f"still after {tries} tries in {waited:.0f} s" if tries > 1 else ""
                            )
                        if self.gave_up:
                            reason += f"; {self.gave_up}"
                    raise fault_error(kind, self.where, reason, self.path) from None
                if _state.tries:
                    log.warning("the ledger at %s answers again", self.where)
                self.gave_up = None
                return result
        finally:
            _state.depth, _state.tries = 0, 0


def retried(cls: C) -> C:
    """Class decorator: every public method of ``cls``, its own or inherited from the classes
    it is composed of, runs through the instance's ``_retrier`` (a :class:`Retrier`; methods
    called before it is set run as they are)."""
    for name in dir(cls):
        value = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.isfunction(value):
            setattr(cls, name, _through_retrier(value))
    return cls


def _through_retrier(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        retrier: Retrier | None = self.__dict__.get("_retrier")
        if retrier is None:
            return fn(self, *args, **kwargs)
        return retrier.call(fn, self, *args, **kwargs)

    return method


# -- SQLite files -------------------------------------------------------------------------------
def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None: not SQLite, or in memory)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    if u.database.startswith("file:"):
        return None  # a URI: its own options decide
    return Path(u.database)


def check_sqlite_file(path: Path, where: str) -> None:
    """Raise the corrupt line for a file that is no SQLite database, or one cut short.

    Reads only the 100-byte header: the magic string, the page size, and the database size
    the header records (trusted only when its version stamp is current, as SQLite does). The
    size is compared only when no -wal file is there: a writer's checkpoint may be extending
    the file right now.
    """
    size = path.stat().st_size
    if size == 0:
        return  # SQLite makes an empty file a new database
    with path.open("rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise fault_error(CORRUPT, where, "not a SQLite database: no SQLite header", path)
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        raise fault_error(CORRUPT, where, f"its header is damaged (page size {page})", path)
    if wal_left(path):
        return
    pages = int.from_bytes(head[28:32], "big")
    if size % page or (pages and head[24:28] == head[92:96] and size < pages * page):
        expected = f"{pages * page} bytes" if pages else f"a whole number of {page}-byte pages"
        reason = f"cut short: {size} bytes where its header needs {expected}"
        raise fault_error(CORRUPT, where, reason, path)


def wal_left(path: Path) -> bool:
    """A -wal file beside the database: it was not closed cleanly, or is open right now."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


def needs_quick_check(path: Path) -> bool:
    try:
        return path.stat().st_size <= QUICK_CHECK_BYTES or wal_left(path)
    except OSError:
        return False


def quick_check(engine: Engine, where: str, path: Path) -> None:
    """PRAGMA quick_check (every page of every table and index); the corrupt line if it fails."""
    with engine.connect() as c:
        rows = [r[0] for r in c.exec_driver_sql("PRAGMA quick_check").all()]
    if rows != ["ok"]:
        first = " ".join(str(rows[0]).replace("*** in database main ***", "").split())
        more = f" (+{len(rows) - 1} more)" if len(rows) > 1 else ""
        raise fault_error(CORRUPT, where, f"PRAGMA quick_check: {first}{more}", path)


def read_only_reason(path: Path) -> str | None:
    """Why fairtrial cannot write the SQLite file (None: it can)."""
    if not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(path.parent, os.W_OK):
        return "its folder is not writable"
    return None


def read_only_connect(path: Path) -> Callable[[], sqlite3.Connection]:
    """A connection factory for a SQLite file fairtrial may only read.

    In WAL mode even a reader needs the -shm file: ``mode=ro`` opens or creates it where the
    folder allows; in a read-only folder without one, ``immutable=1`` reads the file as it is
    (no other process can be writing to it through this folder either).
    """
    shm = path.with_name(path.name + "-shm")
    wal = path.with_name(path.name + "-wal")
    folder_writable = os.access(path.parent, os.W_OK)
    mode = "mode=ro" if folder_writable or (shm.exists() and wal.exists()) else "immutable=1"
    uri = f"file:{quote(str(path))}?{mode}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    return connect
