"""An experiment's stages besides its compared trials: the tuning trials of every arm (with
the configuration the sampler asked for) and the arms' trials at their spec values. Their
trials are ordinary trials (identity, claims, leases, attempts, metrics): only their slots
are kept apart, so that nothing that reads an experiment's verdict trials sees them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fairtrial.ledger import schema as s
from fairtrial.ledger.engine import LedgerBase, _dumps
from fairtrial.ledger.trials import TrialRow, _trial, insert_pending

TUNING = "tuning"
UNTUNED = "untuned"
#: baseline trials run a second time: the timing noise between repeated identical trials
REPEAT = "repeat"


class Stages(LedgerBase):
    """Slots of the ``tuning`` and ``untuned`` stages."""

    def add_stage_trials(
        self,
        experiment_id: str,
        stage: str,
        plans: Sequence[Any],
        params: Mapping[tuple[str, int], Mapping[str, Any]] | None = None,
    ) -> int:
        """Point each (arm, seed) slot of ``stage`` at its planned trial (inserting the trials
        the ledger lacks); ``params``: (arm, seed) -> what the sampler asked for. Returns how
        many trials were new."""
        if not plans:
            return 0
        for attempt in range(4):
            try:
                return self._add_stage(experiment_id, stage, plans, params or {})
            except IntegrityError:  # another run inserted one first: look again
                time.sleep(0.05 * (attempt + 1))
        return self._add_stage(experiment_id, stage, plans, params or {})

    def _add_stage(
        self,
        eid: str,
        stage: str,
        plans: Sequence[Any],
        params: Mapping[tuple[str, int], Mapping[str, Any]],
    ) -> int:
        st = s.stage_trials
        with self.engine.begin() as c:
            new = insert_pending(c, plans)
            where = (st.c.experiment_id == eid, st.c.stage == stage)
            current = {(r.arm, r.seed): r.trial_id for r in c.execute(select(st).where(*where))}
            fresh = []
            for p in plans:
                key = (p.arm, p.seed)
                blob = _dumps(dict(params[key])) if key in params else None
                was = current.get(key)
                if was is None:
                    fresh.append(
                        {"experiment_id": eid, "stage": stage, "arm": p.arm, "seed": p.seed,
                         "trial_id": p.trial_id, "params_json": blob}
                    )  # fmt: skip
                elif was != p.trial_id:
                    c.execute(
                        update(st)
                        .where(*where, st.c.arm == p.arm, st.c.seed == p.seed)
                        .values(trial_id=p.trial_id, params_json=blob)
                    )
            if fresh:
                c.execute(insert(st), fresh)
        return new

    def stage_trials(self, experiment_id: str, stage: str) -> list[tuple[TrialRow, dict[str, Any]]]:
        """The trials of ``stage``'s slots with their params, by arm then seed."""
        t, st = s.trials, s.stage_trials
        query = (
            select(
                t,
                st.c.arm.label("slot_arm"),
                st.c.seed.label("slot_seed"),
                st.c.params_json.label("slot_params"),
            )
            .select_from(st.join(t, t.c.id == st.c.trial_id))
            .where(st.c.experiment_id == experiment_id, st.c.stage == stage)
            .order_by(st.c.arm, st.c.seed)
        )
        with self.engine.connect() as c:
            rows = c.execute(query).all()
        return [
            (_trial(r, experiment_id), json.loads(r.slot_params) if r.slot_params else {})
            for r in rows
        ]

    def clear_stage(self, experiment_id: str, stage: str) -> int:
        """Drop ``stage``'s slots (their trials stay in the ledger); returns how many."""
        st = s.stage_trials
        with self.engine.begin() as c:
            res = c.execute(
                delete(st).where(st.c.experiment_id == experiment_id, st.c.stage == stage)
            )
        return int(res.rowcount or 0)

    def stage_compute(self, experiment_id: str, stage: str) -> dict[str, dict[str, Any]]:
        """{trial_id: compute record} of the latest attempt of each trial of ``stage``."""
        tc, t, st = s.trial_compute, s.trials, s.stage_trials
        q = (
            select(tc.c.trial_id, tc.c.compute_json)
            .select_from(
                tc.join(t, and_(t.c.id == tc.c.trial_id, t.c.attempt == tc.c.attempt)).join(
                    st, st.c.trial_id == t.c.id
                )
            )
            .where(st.c.experiment_id == experiment_id, st.c.stage == stage)
        )
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return {trial_id: json.loads(blob) for trial_id, blob in rows}
