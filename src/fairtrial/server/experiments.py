"""What the registry shows of one experiment: its page (row, analysis, figures, predictions,
replications, whether its baseline is the task's reference, or the parts rendered when the
bundle arrived), the same as JSON written from the stored documents as they are, and each
stored document on its own: analysis, predictions, replications, the capture ``fairtrial
diff`` compares, the bundle.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    select,
)

from fairtrial.server import schema as s
from fairtrial.server.rows import Rows, _public


class Experiments(Rows):
    """One experiment's page, documents, replications and bundle."""

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
