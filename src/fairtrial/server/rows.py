"""The lookups every part of the registry shares: whether an experiment is stored, its row
(without the documents it holds) by bundle sha256 or unique prefix, its public part with the
replication badge and links (:func:`badge`, :func:`_public`), and a task's reference
baseline, kept until the next write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    func,
    select,
)

from fairtrial.errors import RegistryError
from fairtrial.server import schema as s
from fairtrial.server.cache import Cache
from fairtrial.tasks.external import is_external

#: the experiment columns that hold documents, not fields of its row
_DOCUMENTS = ("doc_json", "figures_json", "predictions_json", "search", "capture_json", "page_json")


class Rows(Cache):
    """Experiment rows by id or prefix, and the reference baseline of a task."""

    def _exists(self, sha: str) -> bool:
        with self.engine.connect() as c:
            return (
                c.execute(select(s.experiments.c.id).where(s.experiments.c.id == sha)).first()
                is not None
            )

    def _row(self, sha: str) -> dict[str, Any] | None:
        cols = [c for c in s.experiments.c if c.name not in _DOCUMENTS]
        with self.engine.connect() as c:
            row = c.execute(select(*cols).where(s.experiments.c.id == sha)).mappings().first()
        return None if row is None else dict(row)

    def resolve(self, ref: str) -> str:
        """The full id of the experiment ``ref`` names: a bundle sha256 or a unique prefix
        of at least 8 hex digits."""
        ref = ref.strip().lower()
        if not (8 <= len(ref) <= 64) or any(ch not in "0123456789abcdef" for ch in ref):
            raise RegistryError(
                f"experiment '{ref[:80]}': give the bundle's sha256 (or at least its first 8 hex "
                "digits)",
                404,
            )
        if len(ref) == 64:
            if not self._exists(ref):
                raise RegistryError(f"experiment {ref[:12]}: not in this registry", 404)
            return ref
        with self.engine.connect() as c:
            rows = c.execute(
                select(s.experiments.c.id).where(s.experiments.c.id.like(ref + "%")).limit(2)
            ).all()
        if not rows:
            raise RegistryError(f"experiment {ref}: not in this registry", 404)
        if len(rows) > 1:
            raise RegistryError(f"experiment {ref}: more than one matches; give more digits", 404)
        return str(rows[0][0])

    def experiment_row(self, ref: str) -> dict[str, Any]:
        row = self._row(self.resolve(ref))
        assert row is not None
        return row

    def summary(self, ref: str) -> dict[str, Any]:
        """The experiment's registry row (no analysis) with links."""
        row = self.experiment_row(ref)
        return _public(row)

    def reference(self, task: str) -> str | None:
        """The task's reference baseline: set explicitly, else the baseline most experiments of
        the task share (ties: the one uploaded first). Kept until the next write."""
        got: str | None = self._cached("reference", task, lambda: self._reference(task))
        return got

    def _reference(self, task: str) -> str | None:
        with self.engine.connect() as c:
            set_ = c.execute(
                select(s.meta.c.value).where(s.meta.c.key == f"reference:{task}")
            ).first()
            if set_ is not None:
                return str(set_[0])
            e = s.experiments
            row = c.execute(
                select(e.c.baseline_key)
                .where(e.c.task == task)
                .group_by(e.c.baseline_key)
                .order_by(func.count().desc(), func.min(e.c.uploaded_at))
                .limit(1)
            ).first()
        return None if row is None else str(row[0])


def badge(replicated: int, failed: int) -> str:
    """The replication badge: ``not yet replicated``, ``replicated ×N`` and/or
    ``failed to replicate ×M``."""
    parts = []
    if replicated:
        parts.append(f"replicated ×{replicated}")
    if failed:
        parts.append(f"failed to replicate ×{failed}")
    return ", ".join(parts) or "not yet replicated"


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        k: v
        for k, v in row.items()
        if k
        not in (
            "doc_json",
            "figures_json",
            "predictions_json",
            "search",
            "capture_json",
            "token_id",
            "content_key",
            "page_json",
        )
    }
    out["badge"] = badge(int(row.get("replicated") or 0), int(row.get("failed") or 0))
    out["verified"] = bool(row.get("verified"))
    if is_external(row.get("task")):  # the recipe evaluated itself: not sealed, not re-scored
        out["evaluation"] = "recipe"
    out["links"] = {
        "page": f"/experiments/{row['id']}",
        "analysis": f"/api/experiments/{row['id']}",
        "bundle": f"/api/experiments/{row['id']}/bundle",
        "replications": f"/api/experiments/{row['id']}/replications",
    }
    return out
