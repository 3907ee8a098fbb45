"""The registry's boards: its tasks with their counts, a task's leaderboard (one entry per
arm of each experiment, filtered by metric, kind, hardware and compute budget, verified
entries first, then best first by the chosen sort) and the search of experiments. An external
task's board (``external:NAME``) holds only entries its recipes evaluated themselves, marked
so; they are never verified, so no board ranks one above a sealed, re-scored entry. Counts
and a task's metrics are kept until the next write; the page of entries is read each time.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    select,
    true,
)

from fairtrial.errors import RegistryError
from fairtrial.server import schema as s
from fairtrial.server.rows import _DOCUMENTS, Rows, _public, badge
from fairtrial.tasks.external import is_external

#: leaderboard sort keys: column and the order that puts the best first
SORTS: dict[str, tuple[str, str]] = {
    "score": ("score", "desc"),
    "mean": ("mean", "best"),
    "effect": ("effect", "desc"),
    "seeds": ("n", "desc"),
    "time": ("wall_time_mean_s", "asc"),
    "flops": ("flops_mean", "asc"),
    "energy": ("energy_mean_j", "asc"),
    "replicated": ("replicated", "desc"),
    "uploaded": ("uploaded_at", "desc"),
}
MAX_PAGE = 200


@dataclass(frozen=True)
class Filters:
    """What a leaderboard shows: which metric, arms, hardware and compute budget."""

    metric: str | None = None
    kind: str = "all"  # all | arm | baseline
    device: str | None = None  # cpu | gpu
    hardware: str | None = None  # substring of the hardware description
    max_time: float | None = None  # seconds of wall time per trial
    max_flops: float | None = None  # FLOPs per trial
    verdict: str | None = None
    q: str | None = None  # substring of the experiment's name, claim, recipe or arms


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally (``\\`` escapes)."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Boards(Rows):
    """Tasks, leaderboards and search."""

    def tasks(self) -> list[dict[str, Any]]:
        """Every task with its experiment and replication counts (kept until the next write)."""
        got: list[dict[str, Any]] = self._cached("tasks", "", self._tasks)
        return [dict(t) for t in got]

    def _tasks(self) -> list[dict[str, Any]]:
        e = s.experiments
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    select(
                        e.c.task,
                        func.count().label("experiments"),
                        func.sum(e.c.replicated).label("replicated"),
                        func.sum(e.c.failed).label("failed"),
                        func.max(e.c.uploaded_at).label("last_upload"),
                        func.min(e.c.metric).label("metric"),
                    )
                    .group_by(e.c.task)
                    .order_by(func.count().desc(), e.c.task)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def leaderboard(
        self,
        task: str,
        *,
        sort: str = "score",
        order: str | None = None,
        filters: Filters = Filters(),
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """A task's entries (one per arm of each experiment), best first by ``sort``."""
        if sort not in SORTS:
            raise RegistryError(f"sort '{sort[:40]}': valid: {', '.join(SORTS)}", 422)
        if order not in (None, "asc", "desc"):
            raise RegistryError(f"order '{str(order)[:40]}': valid: asc, desc", 422)
        if filters.kind not in ("all", "arm", "baseline"):
            raise RegistryError(f"kind '{filters.kind[:40]}': valid: all, arm, baseline", 422)
        if filters.device not in (None, "cpu", "gpu"):
            raise RegistryError(f"device '{str(filters.device)[:40]}': valid: cpu, gpu", 422)
        if not (1 <= limit <= MAX_PAGE) or offset < 0:
            raise RegistryError(f"limit must be 1..{MAX_PAGE} and offset >= 0", 422)
        en, ex = s.entries, s.experiments
        # an external task's entries were evaluated by their own recipes: never sealed, never
        # re-scored (so never verified, and listed after any verified entry), and on a board
        # of their own, since the board is the task's and no sealed task is named external:
        recipe = is_external(task)
        with self.engine.connect() as c:
            # which metrics a task has, and the entries matching a filter, change only with a
            # write: kept until the next one (the page of ids is read every time)
            metrics = self._cached(
                "metrics",
                task,
                lambda: c.execute(
                    select(en.c.metric, func.count(), func.min(en.c.direction))
                    .where(en.c.task == task)
                    .group_by(en.c.metric)
                    .order_by(func.count().desc(), en.c.metric)
                ).all(),
            )
            if not metrics:
                raise RegistryError(f"task '{task[:80]}': no experiments in this registry", 404)
            metric = filters.metric or str(metrics[0][0])
            if metric not in {m[0] for m in metrics}:
                # 404 like an unknown task: which metrics exist depends on what was uploaded
                raise RegistryError(
                    f"metric '{metric[:40]}': task '{task}' has {', '.join(m[0] for m in metrics)}",
                    404,
                )
            direction = next(str(m[2]) for m in metrics if m[0] == metric)
            where: list[ColumnElement[bool]] = [en.c.task == task, en.c.metric == metric]
            if filters.kind != "all":
                where.append(en.c.kind == filters.kind)
            if filters.device:
                where.append(en.c.device == filters.device)
            if filters.hardware:
                where.append(func.lower(en.c.hardware).like(_like(filters.hardware), escape="\\"))
            if filters.max_time is not None:
                where.append(en.c.wall_time_mean_s <= filters.max_time)
            if filters.max_flops is not None:
                where.append(en.c.flops_mean <= filters.max_flops)
            if filters.verdict:
                where.append(en.c.verdict == filters.verdict)
            need_join = sort == "replicated" or bool(filters.q)
            if filters.q:
                where.append(ex.c.search.like(_like(filters.q), escape="\\"))
            base = en.join(ex, ex.c.id == en.c.experiment) if need_join else en
            total = self._cached(
                "count",
                json.dumps([task, metric, dataclasses.asdict(filters)]),
                lambda: c.execute(
                    select(func.count()).select_from(base).where(and_(*where))
                ).scalar_one(),
            )
            col_name, best = SORTS[sort]
            col = ex.c.replicated if sort == "replicated" else en.c[col_name]
            if best == "best":
                best = "desc" if direction == "max" else "asc"
            how = order or best
            key = col.desc() if how == "desc" else col.asc()
            # Verified entries first, whatever the sort: an unverifiable result (one the
            # registry could not re-score against the task's test labels) never ranks above one
            # it checked. NULLS LAST (rather than ordering by "col IS NULL" first) lets the
            # database walk an index in order: the default sort reads 50 entries of the board
            # index, not all
            if self.engine.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 30):
                ordering = [en.c.verified.desc(), key.nulls_last(), en.c.id]
            else:  # SQLite before 3.30 has no NULLS LAST
                ordering = [en.c.verified.desc(), col.is_(None), key, en.c.id]
            ids = (
                c.execute(
                    select(en.c.id)
                    .select_from(base)
                    .where(and_(*where))
                    .order_by(*ordering)
                    .limit(limit)
                    .offset(offset)
                )
                .scalars()
                .all()
            )
            rows = []
            if ids:
                got = (
                    c.execute(
                        select(
                            en,
                            ex.c.replicated,
                            ex.c.failed.label("replication_failed"),
                            ex.c.inconclusive,
                            ex.c.preregistered,
                            ex.c.seeds,
                            ex.c.unverifiable,
                        )
                        .select_from(en.join(ex, ex.c.id == en.c.experiment))
                        .where(en.c.id.in_(ids))
                    )
                    .mappings()
                    .all()
                )
                by_id = {r["id"]: dict(r) for r in got}
                rows = [by_id[i] for i in ids]
        reference = self.reference(task)
        for r in rows:
            r["reference"] = r["baseline_key"] == reference
            r["badge"] = badge(r["replicated"], r["replication_failed"])
            r["verified"] = bool(r["verified"])
            if recipe:
                r["evaluation"] = "recipe"
        return {
            "task": task,
            **({"evaluation": "recipe"} if recipe else {}),
            "metric": metric,
            "metrics": [m[0] for m in metrics],
            "direction": direction,
            "sort": sort,
            "order": how,
            "total": total,
            "limit": limit,
            "offset": offset,
            "reference_baseline": reference,
            "rows": rows,
        }

    def search(
        self,
        q: str | None = None,
        *,
        task: str | None = None,
        device: str | None = None,
        verdict: str | None = None,
        replicated: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Experiments matching every filter given, newest first."""
        if not (1 <= limit <= MAX_PAGE) or offset < 0:
            raise RegistryError(f"limit must be 1..{MAX_PAGE} and offset >= 0", 422)
        e = s.experiments
        where: list[ColumnElement[bool]] = []
        if q:
            where.append(e.c.search.like(_like(q), escape="\\"))
        if task:
            where.append(e.c.task == task)
        if device:
            where.append(e.c.device == device)
        if verdict:
            where.append(e.c.verdicts.like(_like(": " + verdict), escape="\\"))
        if replicated is True:
            where.append(e.c.replicated > 0)
        if replicated is False:
            where.append(e.c.replicated == 0)
        cols = [c for c in e.c if c.name not in _DOCUMENTS]
        cond = and_(true(), *where)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(e).where(cond)).scalar_one()
            rows = (
                c.execute(
                    select(*cols)
                    .where(cond)
                    .order_by(e.c.uploaded_at.desc(), e.c.id)
                    .limit(limit)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
        return {
            "total": total,
            "limit": limit,
            "offset": offset,
            "experiments": [_public(dict(r)) for r in rows],
        }
