"""What the registry computed from its store, kept until the store's next write. Every write
changes the store's *generation* (a row of ``registry_meta``) inside its transaction;
:meth:`Cache.version` pairs it with the count of writes made through this object, so a write
here is seen at once and one by another process within :data:`GENERATION_CHECK_S` seconds,
and :meth:`Cache._cached` keeps a computed value while the version stays the same.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Engine,
    select,
    update,
)

from fairtrial.server import schema as s

#: how often (seconds) a registry re-reads the store's generation, to see other processes' writes
GENERATION_CHECK_S = 0.5


class Cache:
    """The generation of the store and the values computed from it."""

    engine: Engine
    _lock: threading.Lock
    _writes: int
    _generation: tuple[float, str | None]
    _cache: dict[tuple[str, str], tuple[Any, Any]]

    def fresh_version(self) -> tuple[int, str | None] | None:
        """:meth:`version` when it needs no read of the store, else None (an event loop asks
        this first, and reads the store in a worker thread only when it must)."""
        read_at, value = self._generation
        if value is None or time.monotonic() - read_at >= GENERATION_CHECK_S:
            return None
        return self._writes, value

    def version(self) -> tuple[int, str | None]:
        """Changes with every write to the store: at once for writes through this object, within
        :data:`GENERATION_CHECK_S` seconds for other processes' writes."""
        now = time.monotonic()
        read_at, value = self._generation
        if now - read_at >= GENERATION_CHECK_S or value is None:
            with self.engine.connect() as c:
                value = c.execute(
                    select(s.meta.c.value).where(s.meta.c.key == "generation")
                ).scalar_one_or_none()
            self._generation = (now, value)
        return self._writes, value

    def _wrote(self) -> None:
        with self._lock:
            self._writes += 1
            self._cache.clear()

    def _cached(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, kept (per ``kind`` and ``key``) until the store's next write."""
        version = self.version()
        hit = self._cache.get((kind, key))
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[(kind, key)] = (version, value)
        return value

    @staticmethod
    def _bump(c: Any) -> None:
        """Within a write's transaction: a new generation, so other processes drop what they
        computed from the store."""
        c.execute(
            update(s.meta).where(s.meta.c.key == "generation").values(value=secrets.token_hex(8))
        )
