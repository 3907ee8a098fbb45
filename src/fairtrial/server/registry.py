"""The registry's store: bundles, replications, tokens and leaderboards over SQLAlchemy Core.

``Registry(store)`` opens (and creates) the registry's tables in an SQLite file (default
``./.fairtrial/registry.db``) or a PostgreSQL URL, with the ledger's URL handling. Every write is
one transaction: a bundle with its experiment, entries and trials lands whole or not at all, and
a replication record lands together with its experiment's updated counts.

Every write also changes the store's *generation* (a row of ``registry_meta``), so that what was
computed from the store can be kept until the next write: :meth:`Registry.version` is the key
the web app's response cache and :meth:`Registry.reference` check. A write through this
``Registry`` is seen at once; one by another process within :data:`GENERATION_CHECK_S` seconds.

``Registry`` opens the store and upgrades one made by an earlier version; its methods come in
groups, one module each: uploads (:mod:`~fairtrial.server.uploads`), experiment pages
(:mod:`~fairtrial.server.experiments`), leaderboards and search (:mod:`~fairtrial.server.boards`),
tokens (:mod:`~fairtrial.server.tokens`), built on the shared lookups
(:mod:`~fairtrial.server.rows`) and the cache (:mod:`~fairtrial.server.cache`).
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Table,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import (
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from fairtrial.bundle import Limits
from fairtrial.errors import RegistryError
from fairtrial.ledger.engine import _safe, _sqlite_pragmas, store_url
from fairtrial.server import schema as s
from fairtrial.server.boards import MAX_PAGE, SORTS, Boards, Filters
from fairtrial.server.cache import GENERATION_CHECK_S
from fairtrial.server.experiments import Experiments
from fairtrial.server.rows import badge
from fairtrial.server.tokens import Tokens
from fairtrial.server.uploads import OUTCOMES, Uploads

__all__ = [
    "DEFAULT_REGISTRY",
    "GENERATION_CHECK_S",
    "LEGACY_UNVERIFIED",
    "MAX_PAGE",
    "OUTCOMES",
    "SORTS",
    "Filters",
    "Registry",
    "badge",
]


DEFAULT_REGISTRY = ".fairtrial/registry.db"
#: what an entry stored before the registry re-scored uploads is marked with
LEGACY_UNVERIFIED = (
    "stored by an earlier version of the registry, which did not re-score results against the "
    "task's test labels"
)
#: columns added to tables that existed before them: (table, column, SQL type and default)
_ADDED: list[tuple[Table, str, str]] = [
    (s.experiments, "unverifiable", "TEXT"),
    (s.experiments, "verified", "INTEGER NOT NULL DEFAULT 0"),
    (s.experiments, "content_key", "VARCHAR(64)"),
    (s.entries, "verified", "INTEGER NOT NULL DEFAULT 0"),
    (s.experiments, "page_json", "TEXT"),
]


class Registry(Uploads, Experiments, Boards, Tokens):
    """Open with ``Registry(store)``: a URL, a file path, or None for the default file."""

    def __init__(self, store: str | Path | None = None, *, limits: Limits | None = None) -> None:
        self.url = store_url(store if store is not None else DEFAULT_REGISTRY)
        self.limits = limits or Limits()
        try:
            self.engine: Engine = create_engine(self.url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise RegistryError(f"cannot open registry store '{_safe(store)}': {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        for attempt in range(5):
            try:
                s.metadata.create_all(self.engine)
                self._upgrade()
                break
            except (OperationalError, IntegrityError, ProgrammingError) as exc:
                words = str(exc.orig).lower()
                if attempt == 4 or not any(
                    w in words for w in ("exist", "duplicate", "unique", "no such")
                ):
                    raise RegistryError(
                        f"cannot open registry store '{_safe(store)}': "
                        f"{' '.join(str(exc.orig).split())}"
                    ) from None
                time.sleep(0.05 * (attempt + 1))
        self._lock = threading.Lock()
        self._writes = 0  # writes through this object: seen at once
        self._generation: tuple[float, str | None] = (0.0, None)  # (read at, value)
        self._cache: dict[tuple[str, str], tuple[Any, Any]] = {}

    def _upgrade(self) -> None:
        """Bring a store made by an earlier version up to this schema: added columns (entries
        stored before results were re-scored are marked unverifiable), new or changed indexes,
        and the generation row."""
        have = {
            t.name: {c["name"] for c in inspect(self.engine).get_columns(t.name)}
            for t in (s.experiments, s.entries)
        }
        for table, column, ddl in _ADDED:
            if column in have[table.name]:
                continue
            with self.engine.begin() as c:
                c.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column} {ddl}"))
                if table is s.experiments and column == "verified":
                    c.execute(update(s.experiments).values(unverifiable=LEGACY_UNVERIFIED))
        # create_all adds no index to a table that exists: registries made before an index was
        # declared get it here, and one whose columns changed is made again
        found = inspect(self.engine)
        for table in (s.entries, s.experiments):
            columns = {i["name"]: i["column_names"] for i in found.get_indexes(table.name)}
            for index in table.indexes:
                if index.name in columns and columns[index.name] != [c.name for c in index.columns]:
                    index.drop(self.engine)
                index.create(self.engine, checkfirst=True)
        with self.engine.begin() as c:
            row = c.execute(select(s.meta.c.key).where(s.meta.c.key == "generation")).first()
            if row is None:
                c.execute(insert(s.meta).values(key="generation", value=secrets.token_hex(8)))

    def close(self) -> None:
        self.engine.dispose()
