"""The registry's store: bundles, replications, tokens and leaderboards over SQLAlchemy Core.

``Registry(store)`` opens (and creates) the registry's tables in an SQLite file (default
``./.fairtrial/registry.db``) or a PostgreSQL URL, with the ledger's URL handling. Every write is
one transaction: a bundle with its experiment, entries and trials lands whole or not at all, and
a replication record lands together with its experiment's updated counts.

Every write also changes the store's *generation* (a row of ``registry_meta``), so that what was
computed from the store can be kept until the next write: :meth:`Registry.version` is the key
the web app's response cache and :meth:`Registry.reference` check. A write through this
``Registry`` is seen at once; one by another process within :data:`GENERATION_CHECK_S` seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Table,
    and_,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    true,
    update,
)
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from fairtrial.bundle import Limits
from fairtrial.errors import BundleError, RegistryError
from fairtrial.ledger.engine import _safe, _sqlite_pragmas, store_url
from fairtrial.server import schema as s
from fairtrial.server.ingest import ingest

DEFAULT_REGISTRY = ".fairtrial/registry.db"
OUTCOMES = ("replicated", "not replicated", "inconclusive")
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
#: how often (seconds) a registry re-reads the store's generation, to see other processes' writes
GENERATION_CHECK_S = 0.5
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
#: the experiment columns that hold documents, not fields of its row
_DOCUMENTS = ("doc_json", "figures_json", "predictions_json", "search", "capture_json", "page_json")


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


class Registry:
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

    # -- what was computed from the store, kept until the next write -------------------------
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

    def close(self) -> None:
        self.engine.dispose()

    # -- tokens -------------------------------------------------------------------------------
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

    # -- writes -------------------------------------------------------------------------------
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

    # -- reads --------------------------------------------------------------------------------
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

    def _experiment(
        self, ref: str, predictions: bool, documents: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the stored row, its public part with replications and the reference flag)."""
        key = ref.strip().lower()
        # a full id is read at once; a prefix is resolved first
        sha = key if len(key) == 64 else self.resolve(ref)
        with self.engine.connect() as c:
            unread = {"search", "capture_json"}
            unread |= set() if predictions else {"predictions_json"}
            unread |= {"page_json"} if documents else {"doc_json", "figures_json"}
            cols = [col for col in s.experiments.c if col.name not in unread]
            row = c.execute(select(*cols).where(s.experiments.c.id == sha)).mappings().first()
            if row is None:
                self.resolve(ref)  # raises the error that says what is wrong with the ref
            replications = self._replications(c, sha)
        assert row is not None
        out = _public(dict(row))
        out["replications"] = replications
        out["reference"] = row["baseline_key"] == self.reference(row["task"])
        return dict(row), out

    def experiment(
        self, ref: str, *, predictions: bool = True, documents: bool = True
    ) -> dict[str, Any]:
        """What the experiment page shows: row, analysis, figures, replications, and (unless
        ``predictions`` is False: the page does not show it) the predictions table. With
        ``documents`` False: no analysis, figures or predictions, but the page's parts as
        rendered when the bundle arrived (``page``; None if none were)."""
        row, out = self._experiment(ref, predictions, documents)
        if not documents:
            out["page"] = json.loads(row["page_json"]) if row.get("page_json") else None
            return out
        out["analysis"] = json.loads(row["doc_json"])
        out["figures"] = json.loads(row["figures_json"])
        out["predictions"] = (
            json.loads(row["predictions_json"]) if row.get("predictions_json") else None
        )
        return out

    def experiment_json(self, ref: str) -> bytes:
        """:meth:`experiment` as JSON, with the stored documents (analysis, figures, predictions)
        written as they are stored: JSON already, not parsed to be written again."""
        row, out = self._experiment(ref, True)
        head = json.dumps(out, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        parts = [
            head[:-1],
            ',"analysis":',
            row["doc_json"],
            ',"figures":',
            row["figures_json"],
            ',"predictions":',
            row["predictions_json"] or "null",
            "}",
        ]
        return "".join(parts).encode()

    def _column(self, ref: str, column: str) -> Any:
        """One stored column of the experiment ``ref`` names."""
        sha = self.resolve(ref)
        with self.engine.connect() as c:
            return c.execute(
                select(s.experiments.c[column]).where(s.experiments.c.id == sha)
            ).scalar_one()

    def doc(self, ref: str) -> dict[str, Any]:
        """The registry's analysis of the experiment (the report's JSON)."""
        return dict(json.loads(self._column(ref, "doc_json")))

    def predictions(self, ref: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        sha = self.resolve(ref)
        with self.engine.connect() as c:
            row = (
                c.execute(
                    select(
                        s.experiments.c.task,
                        s.experiments.c.name,
                        s.experiments.c.doc_json,
                        s.experiments.c.predictions_json,
                    ).where(s.experiments.c.id == sha)
                )
                .mappings()
                .one()
            )
        doc = json.loads(row["doc_json"])
        info = {
            "id": sha,
            "task": row["task"],
            "name": row["name"],
            "why": (doc.get("registry") or {}).get("predictions"),
            "disagreements": doc.get("predictions"),
        }
        return info, (json.loads(row["predictions_json"]) if row["predictions_json"] else None)

    def replications(self, ref: str) -> list[dict[str, Any]]:
        sha = self.resolve(ref)
        with self.engine.connect() as c:
            return self._replications(c, sha)

    @staticmethod
    def _replications(c: Any, sha: str) -> list[dict[str, Any]]:
        r = s.replications
        rows = (
            c.execute(select(r).where(r.c.experiment == sha).order_by(r.c.uploaded_at))
            .mappings()
            .all()
        )
        out = []
        for row in rows:
            rec = json.loads(row["record_json"])
            out.append(
                {
                    "id": row["id"],
                    "outcome": row["outcome"],
                    "seeds": row["seeds"],
                    "host": row["host"],
                    "badge": row["badge"],
                    "created_at": row["created_at"],
                    "uploaded_at": row["uploaded_at"],
                    "claims": rec.get("claims", []),
                    "arms": rec.get("arms", []),
                    "failures": rec.get("failures", []),
                    "record": rec,
                }
            )
        return out

    def capture(self, ref: str) -> dict[str, Any]:
        """Everything ``fairtrial diff`` compares, as captured from the bundle."""
        return dict(json.loads(self._column(ref, "capture_json")))

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """Every captured difference between two experiments (``fairtrial diff``)."""
        from fairtrial.diff import diff

        return diff(self.capture(a), self.capture(b))

    def bundle(self, ref: str) -> bytes:
        sha = self.resolve(ref)
        with self.engine.connect() as c:
            return bytes(
                c.execute(select(s.bundles.c.content).where(s.bundles.c.sha256 == sha)).scalar_one()
            )

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
        return {
            "task": task,
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
    out["links"] = {
        "page": f"/experiments/{row['id']}",
        "analysis": f"/api/experiments/{row['id']}",
        "bundle": f"/api/experiments/{row['id']}/bundle",
        "replications": f"/api/experiments/{row['id']}/replications",
    }
    return out


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
