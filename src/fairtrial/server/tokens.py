"""The registry's write tokens: a new token is shown once (only its sha256 is stored), a
token is checked on every upload, and one can be listed and revoked without being known.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from sqlalchemy import (
    insert,
    select,
    update,
)

from fairtrial.server import schema as s
from fairtrial.server.cache import Cache


class Tokens(Cache):
    """Creating, checking, listing and revoking write tokens."""

    def create_token(self, name: str) -> str:
        """A new write token; only its sha256 is stored, so this is the one time it is seen."""
        token = "ft_" + secrets.token_urlsafe(32)
        with self.engine.begin() as c:
            c.execute(
                insert(s.tokens).values(
                    id=secrets.token_hex(8),
                    name=name[:200],
                    token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                    created_at=time.time(),
                )
            )
        return token

    def check_token(self, token: str | None) -> str | None:
        """The id of the live token ``token`` is, or None."""
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self.engine.connect() as c:
            row = c.execute(
                select(s.tokens.c.id).where(
                    s.tokens.c.token_sha256 == digest, s.tokens.c.revoked_at.is_(None)
                )
            ).first()
        return None if row is None else str(row[0])

    def tokens(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(
                    s.tokens.c.id, s.tokens.c.name, s.tokens.c.created_at, s.tokens.c.revoked_at
                ).order_by(s.tokens.c.created_at)
            ).mappings()
            return [dict(r) for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        with self.engine.begin() as c:
            done = c.execute(
                update(s.tokens)
                .where(s.tokens.c.id == token_id, s.tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        return bool(done)
