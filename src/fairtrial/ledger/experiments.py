"""The experiments of a ledger: recording one (its spec, arms and task), its planned seeds,
and finding one by id, id prefix or name, with a listing that tells apart experiments that
share a name. :class:`ExperimentRow` is a stored experiment as the rest of fairtrial reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    func,
    select,
    update,
)

from fairtrial.errors import ExperimentNotFound
from fairtrial.ledger import schema as s
from fairtrial.ledger.engine import LedgerBase, _dumps
from fairtrial.ledger.idempotent import upsert
from fairtrial.ledger.trials import DONE


@dataclass(frozen=True)
class ExperimentRow:
    id: str
    name: str
    spec_hash: str
    spec: dict[str, Any]
    arms: dict[str, Any]  # {"arms": [...], "ablations": [...]} as Spec.arm_table()
    spec_path: str | None
    task: str
    task_checksum: str
    metric: str
    direction: str
    seeds: int
    root_seed: int
    created_at: float
    updated_at: float


class Experiments(LedgerBase):
    """Recording and finding experiments."""

    # -- experiments ----------------------------------------------------------------------------
    def upsert_experiment(
        self,
        *,
        experiment_id: str,
        name: str,
        spec_hash: str,
        spec: dict[str, Any],
        arms: dict[str, Any],
        spec_path: str | None,
        task: str,
        task_checksum: str,
        metric: str,
        direction: str,
        seeds: int,
        root_seed: int,
    ) -> None:
        now = time.time()
        with self.engine.begin() as c:
            upsert(
                c,
                s.experiments,
                {
                    "id": experiment_id,
                    "name": name,
                    "spec_hash": spec_hash,
                    "spec_json": _dumps(spec),
                    "arms_json": json.dumps(arms),
                    "spec_path": spec_path,
                    "task": task,
                    "task_checksum": task_checksum,
                    "metric": metric,
                    "direction": direction,
                    "seeds": seeds,
                    "root_seed": root_seed,
                    "created_at": now,
                    "updated_at": now,
                },
                # the data the experiment's trials now run on (trials of older data are not
                # in its slots any more)
                changed=("updated_at", "spec_path", "task_checksum"),
            )

    def set_seeds(self, experiment_id: str, seeds: int) -> None:
        """Record the planned number of seeds (``seeds = "auto"`` decides it after the pilot)."""
        with self.engine.begin() as c:
            c.execute(
                update(s.experiments)
                .where(s.experiments.c.id == experiment_id)
                .values(seeds=seeds, updated_at=time.time())
            )

    def experiments(self) -> list[ExperimentRow]:
        with self.engine.connect() as c:
            rows = c.execute(select(s.experiments).order_by(s.experiments.c.updated_at)).all()
        return [_experiment(r) for r in rows]

    def experiment(self, experiment_id: str) -> ExperimentRow:
        with self.engine.connect() as c:
            row = c.execute(
                select(s.experiments).where(s.experiments.c.id == experiment_id)
            ).first()
        if row is None:
            raise ExperimentNotFound(f"no experiment with id '{experiment_id}' in {self.url}")
        return _experiment(row)

    def find_experiment(self, ref: str) -> ExperimentRow:
        """By id, id prefix (4+ characters), or name; a prefix or a name that several
        experiments share raises :class:`ExperimentNotFound` listing them, to pick by id."""
        exps = self.experiments()
        for match in (
            [e for e in exps if e.id == ref or e.spec_hash == ref],
            [e for e in exps if len(ref) >= 4 and e.id.startswith(ref)],
            [e for e in exps if e.name == ref],
        ):
            if len({e.id for e in match}) == 1:
                return match[-1]
            if match:
                raise ExperimentNotFound(
                    f"'{ref}' matches {len(match)} experiments in {self._where()}; give the id "
                    f"(or the spec file) of the one you mean: {self._listing(match)}"
                )
        names = sorted({e.name for e in exps})
        known = f"; known: {', '.join(names)}" if names else "; the store is empty"
        raise ExperimentNotFound(f"no experiment '{ref}' in {self._where()}{known}")

    def _listing(self, exps: Sequence[ExperimentRow]) -> str:
        """``ID (name, last run WHEN, N seeds, D/T trials done)`` per experiment, newest first."""
        t = s.trials
        ids = [e.id for e in exps]
        with self.engine.connect() as c:
            rows = c.execute(
                select(t.c.experiment_id, t.c.status, func.count())
                .where(t.c.experiment_id.in_(ids))
                .group_by(t.c.experiment_id, t.c.status)
            ).all()
        done: dict[str, int] = {}
        total: dict[str, int] = {}
        for eid, status, n in rows:
            total[eid] = total.get(eid, 0) + n
            if status in DONE:
                done[eid] = done.get(eid, 0) + n
        out = []
        for e in sorted(exps, key=lambda e: e.updated_at, reverse=True):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.updated_at))
            out.append(
                f"{e.id} ({e.name}, last run {when}, {e.seeds} seeds, "
                f"{done.get(e.id, 0)}/{total.get(e.id, 0)} trials done)"
            )
        return ", ".join(out)


def _experiment(r: Any) -> ExperimentRow:
    return ExperimentRow(
        id=r.id,
        name=r.name,
        spec_hash=r.spec_hash,
        spec=json.loads(r.spec_json),
        arms=json.loads(r.arms_json),
        spec_path=r.spec_path,
        task=r.task,
        task_checksum=r.task_checksum,
        metric=r.metric,
        direction=r.direction,
        seeds=r.seeds,
        root_seed=r.root_seed,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )
