"""Inserts that two runs may make at the same moment, or one run twice (a retried write).

``INSERT ... ON CONFLICT`` on SQLite (3.24+) and PostgreSQL: a row whose key is already there
is skipped (:func:`insert_ignore`) or updated (:func:`upsert`) in the same statement, so a
concurrent insert of the same key never fails the loser. Other databases get the same effect,
without the atomicity, from a read before the write.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, and_, insert, select, update


def _dialect_insert(c: Connection) -> Any:
    name = c.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24):
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    return None


def _key(table: Table, row: Mapping[str, Any]) -> Any:
    return and_(*(col == row[col.name] for col in table.primary_key.columns))


@functools.cache
def _ignore_statement(dialect_insert: Any, table: Table) -> Any:
    return dialect_insert(table).on_conflict_do_nothing()


def insert_ignore(c: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows``, skipping each whose primary key the table already holds."""
    if not rows:
        return
    dialect_insert = _dialect_insert(c)
    if dialect_insert is not None:
        c.execute(_ignore_statement(dialect_insert, table), list(rows))
        return
    for row in rows:
        if c.execute(select(*table.primary_key.columns).where(_key(table, row))).first() is None:
            c.execute(insert(table).values(**row))


@functools.cache
def _upsert_statement(dialect_insert: Any, table: Table, changed: tuple[str, ...]) -> Any:
    """One statement per table and dialect, its values bound at execution: a statement built
    with its values would be built and compiled-cache-keyed again on every call."""
    stmt = dialect_insert(table)
    keys = [col.name for col in table.primary_key.columns]
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in changed}
    )


def upsert(c: Connection, table: Table, row: Mapping[str, Any], changed: Sequence[str]) -> None:
    """Insert ``row``; where its primary key is already there, set the ``changed`` columns."""
    dialect_insert = _dialect_insert(c)
    if dialect_insert is not None:
        c.execute(_upsert_statement(dialect_insert, table, tuple(changed)), dict(row))
        return
    where = _key(table, row)
    if c.execute(select(*table.primary_key.columns).where(where)).first() is None:
        c.execute(insert(table).values(**row))
    else:
        c.execute(update(table).where(where).values({name: row[name] for name in changed}))
