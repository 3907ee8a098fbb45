"""Append-only hash chains inside the ledger (the preregistration log and the sealed test log).

Each entry stores ``prev_hash`` (the hash of the entry before it; 64 zeros for the first) and
``entry_hash = sha256(prev_hash || canonical JSON of the entry's fields)``. This is the linked
timestamping construction of Haber & Stornetta (1991), "How to time-stamp a digital document",
J. Cryptology 3(2): changing, deleting, inserting or reordering any entry changes the hash of
every later entry, so :func:`check` finds the first entry that no longer fits.

What a chain cannot show by itself is the removal of its *newest* entries (the shortened chain
is still consistent); the head hash is therefore printed in reports and written into bundles,
where a later copy can be compared with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The hash of one entry: sha256 over the previous hash and the canonical JSON of fields."""
    blob = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(f"{prev_hash}\n{blob}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    """The result of checking a chain: ``ok``, the entries seen, the head hash, the problems."""

    ok: bool
    entries: int
    head: str
    problems: tuple[str, ...] = field(default_factory=tuple)


def check(rows: Iterable[Mapping[str, Any]], fields: tuple[str, ...], what: str) -> ChainCheck:
    """Recompute a chain from its rows (ordered by ``seq``) and report every entry that breaks it.

    ``fields`` are the columns each entry hash covers (``seq`` included).
    """
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    n = 0
    for row in rows:
        n += 1
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(
                f"{what}: entry {expected_seq} is missing (next entry is {seq}): "
                "entries were deleted"
            )
            expected_seq = seq
        if row["prev_hash"] != prev:
            problems.append(
                f"{what}: entry {seq} does not follow the entry before it (prev_hash "
                f"{row['prev_hash'][:12]}, expected {prev[:12]}): an entry was edited, "
                "deleted or inserted"
            )
        recomputed = entry_hash(row["prev_hash"], {k: row[k] for k in fields})
        if recomputed != row["entry_hash"]:
            problems.append(
                f"{what}: entry {seq} was modified after it was written (its hash "
                f"{row['entry_hash'][:12]} does not match its content {recomputed[:12]})"
            )
        prev = row["entry_hash"]
        expected_seq += 1
    return ChainCheck(ok=not problems, entries=n, head=prev, problems=tuple(problems))
