"""What the registry stores: a bundle (verified, re-scored and analysed by the ingest, stored
whole in one transaction, or refused with one line naming what is wrong; the same bundle, or
the same content in other bytes, is stored once), a replication record against its bundle,
and a task's reference baseline. Every write changes the store's generation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    insert,
    select,
    update,
)
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
)

from fairtrial.bundle import Limits
from fairtrial.errors import BundleError, RegistryError
from fairtrial.server import schema as s
from fairtrial.server.ingest import ingest
from fairtrial.server.rows import Rows, _public

OUTCOMES = ("replicated", "not replicated", "inconclusive")
#: what a bundle that breaks the ingest's assumptions raises, past the checks that name fields:
#: refused as malformed (422), never a server error
_MALFORMED = (
    KeyError,
    TypeError,
    ValueError,
    AttributeError,
    IndexError,
    RecursionError,
    ArithmeticError,
)
log = logging.getLogger("fairtrial.server")


class Uploads(Rows):
    """Storing bundles, replication records and reference baselines."""

    limits: Limits

    def add_bundle(
        self, path: str | Path, token_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Verify, analyse and store the bundle at ``path``: (its summary, whether it is new).

        Raises :class:`BundleError` (the bundle is refused; nothing is stored)."""
        content = Path(path).read_bytes()
        sha = hashlib.sha256(content).hexdigest()
        if self._exists(sha):
            return self.summary(sha), False
        try:
            got = ingest(path, content, limits=self.limits, now=time.time())
            _check_storable(got.experiment, got.entries, got.trials)
            got.experiment["page_json"] = self._page(got.experiment)
        except BundleError:
            raise
        except _MALFORMED as exc:
            # past the named checks: refused as malformed, and logged to find the check missing
            log.warning("bundle refused as malformed", exc_info=exc)
            raise BundleError(
                f"a member holds data of an unexpected shape ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]})"
            ) from None
        same = self._by_content(got.content_key)
        if same is not None:  # the same experiment and results, other bytes
            return self.summary(same), False
        got.experiment["token_id"] = token_id
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(s.bundles).values(
                        sha256=got.sha256,
                        size=len(got.content),
                        content=got.content,
                        uploaded_at=got.experiment["uploaded_at"],
                    )
                )
                c.execute(insert(s.experiments).values(**got.experiment))
                if got.entries:
                    c.execute(insert(s.entries), got.entries)
                if got.trials:
                    c.execute(insert(s.trials), got.trials)
                self._bump(c)
        except IntegrityError:
            if self._exists(sha):  # the same bundle uploaded twice at once
                return self.summary(sha), False
            same = self._by_content(got.content_key)
            if same is not None:  # the same content uploaded twice at once
                return self.summary(same), False
            raise
        except DataError as exc:  # a value the database's column types refuse
            why = " ".join(str(exc.orig).split())[:200]
            raise BundleError(f"a value does not fit the registry's columns ({why})") from None
        self._wrote()
        return self.summary(sha), True

    def _by_content(self, key: str) -> str | None:
        """The id of the stored experiment with this content key, if any."""
        with self.engine.connect() as c:
            row = c.execute(
                select(s.experiments.c.id).where(s.experiments.c.content_key == key)
            ).first()
        return None if row is None else str(row[0])

    def _page(self, row: dict[str, Any]) -> str | None:
        """The experiment page's parts that change with no upload, rendered now, once (the page
        reads them). An analysis the page cannot show is refused here rather than failing every
        later visit."""
        try:
            from fairtrial.server.pages import render_experiment, render_parts
        except ImportError:  # the web UI's extra is not installed: nothing to render
            return None
        e = _public(row)
        e["analysis"] = json.loads(row["doc_json"])
        e["figures"] = json.loads(row["figures_json"])
        e["predictions"] = None
        e["replications"] = []
        e["reference"] = False
        from jinja2 import TemplateError

        try:
            parts = render_parts(e)
            render_experiment(e, parts)
        except (*_MALFORMED, TemplateError) as exc:
            raise BundleError(
                "results/analysis.json: the registry cannot show this analysis "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None
        return json.dumps(parts)

    def add_replication(
        self, record: Any, token_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store a replication record (``fairtrial replicate``'s JSON) against its bundle."""
        rec = _check_record(record)
        sha = rec["bundle"]["sha256"]
        exp = self._row(sha)
        if exp is None:
            raise RegistryError(
                f"replication record: bundle {sha[:12]} is not in this registry; push the bundle "
                "first (fairtrial push BUNDLE --to URL)",
                404,
            )
        if rec["original"]["experiment_id"] != exp["experiment_id"]:
            raise RegistryError(
                f"replication record: original.experiment_id {rec['original']['experiment_id']!r} "
                f"is not bundle {sha[:12]}'s experiment ({exp['experiment_id'][:12]})",
                422,
            )
        blob = json.dumps(rec, sort_keys=True, separators=(",", ":"))
        rid = hashlib.sha256(blob.encode()).hexdigest()
        column = {"replicated": "replicated", "not replicated": "failed"}.get(
            rec["outcome"], "inconclusive"
        )
        rep = rec.get("replication") or {}
        acm = rec.get("acm")
        if not isinstance(acm, dict):
            acm = {}
        try:
            with self.engine.begin() as c:
                c.execute(
                    insert(s.replications).values(
                        id=rid,
                        experiment=sha,
                        outcome=rec["outcome"],
                        seeds=str(rep.get("seeds") or "")[:16],
                        host=str(rep.get("host") or "")[:200],
                        badge=(str(acm.get("badge") or "")[:64] or None),
                        created_at=str(rec.get("created_at") or "")[:32],
                        uploaded_at=time.time(),
                        token_id=token_id,
                        record_json=blob,
                    )
                )
                col = s.experiments.c[column]
                c.execute(
                    update(s.experiments).where(s.experiments.c.id == sha).values({col: col + 1})
                )
                self._bump(c)
        except IntegrityError:
            return {"id": rid, "experiment": sha, "outcome": rec["outcome"]}, False
        self._wrote()
        return {"id": rid, "experiment": sha, "outcome": rec["outcome"]}, True

    def set_reference(self, task: str, experiment: str) -> str:
        """Make ``experiment``'s baseline the task's reference baseline; returns its key."""
        row = self.experiment_row(experiment)
        if row["task"] != task:
            raise RegistryError(
                f"experiment {row['id'][:12]} is on task '{row['task']}', not '{task}'", 422
            )
        with self.engine.begin() as c:
            c.execute(s.meta.delete().where(s.meta.c.key == f"reference:{task}"))
            c.execute(insert(s.meta).values(key=f"reference:{task}", value=row["baseline_key"]))
            self._bump(c)
        self._wrote()
        return str(row["baseline_key"])


def _check_storable(*rows: Any) -> None:
    """Refuse text the database cannot store (PostgreSQL text holds no NUL character), naming
    the column."""
    for group in rows:
        for row in group if isinstance(group, list) else [group]:
            for column, value in row.items():
                if isinstance(value, str) and "\x00" in value:
                    raise BundleError(
                        f"{column} {value[:40]!r}... holds a NUL character, which the registry "
                        "does not store"
                    )


def _check_record(record: Any) -> dict[str, Any]:
    """A replication record's structure, checked field by field (one message per problem)."""
    if not isinstance(record, dict):
        raise RegistryError("replication record: expected a JSON object", 422)
    if record.get("format") != "fairtrial-replication":
        raise RegistryError(
            "replication record: 'format' must be 'fairtrial-replication' (fairtrial replicate "
            "writes it)",
            422,
        )
    if record.get("outcome") not in OUTCOMES:
        raise RegistryError(
            f"replication record: 'outcome' {str(record.get('outcome'))[:40]!r}: valid: "
            + ", ".join(OUTCOMES),
            422,
        )
    bundle = record.get("bundle")
    sha = bundle.get("sha256") if isinstance(bundle, dict) else None
    if not (
        isinstance(sha, str) and len(sha) == 64 and all(ch in "0123456789abcdef" for ch in sha)
    ):
        raise RegistryError("replication record: 'bundle.sha256' must be the bundle's sha256", 422)
    orig = record.get("original")
    if not (isinstance(orig, dict) and isinstance(orig.get("experiment_id"), str)):
        raise RegistryError("replication record: 'original.experiment_id' is missing", 422)
    for key in ("arms", "claims", "failures"):
        if not isinstance(record.get(key, []), list):
            raise RegistryError(f"replication record: '{key}' must be a list", 422)
    if record.get("replication") is not None and not isinstance(record["replication"], dict):
        raise RegistryError("replication record: 'replication' must be an object", 422)
    return record
