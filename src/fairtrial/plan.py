"""From a validated spec to the list of trials: every arm on every seed, with derived seeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairtrial.seeding import trial_seeds
from fairtrial.spec import Spec


@dataclass(frozen=True)
class TrialPlan:
    """One trial to run: arm ``arm`` on seed index ``seed``."""

    trial_id: str
    experiment_id: str
    arm: str
    seed: int
    config: dict[str, Any]
    seeds: dict[str, int]  # the derived stream seeds, recorded with the trial


def plan_trials(spec: Spec) -> list[TrialPlan]:
    """Trials ordered seed-major (seed 0 of every arm first), so a run stopped early has
    complete pairs to compare instead of all seeds of one arm and none of another."""
    eid = spec.experiment_id
    return [
        TrialPlan(
            trial_id=f"{eid}/{arm.name}/{seed}",
            experiment_id=eid,
            arm=arm.name,
            seed=seed,
            config=arm.config,
            seeds=trial_seeds(spec.root_seed, seed),
        )
        for seed in range(spec.seeds)
        for arm in spec.arms.values()
    ]
