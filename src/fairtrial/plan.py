"""From a validated spec to the list of trials: every arm on every seed, with derived seeds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.seeding import trial_seeds
from fairtrial.spec import PILOT_SEEDS, Spec


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


# -- seeds = "auto" -------------------------------------------------------------------------------
def paired_values(
    scores: Mapping[str, Mapping[int, float]], arm: str, against: str
) -> tuple[list[int], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Seeds both arms have, and their scores (against, arm) in seed order."""
    a, b = scores.get(against, {}), scores.get(arm, {})
    seeds = sorted(set(a) & set(b))
    return (
        seeds,
        np.array([a[s] for s in seeds], dtype=float),
        np.array([b[s] for s in seeds], dtype=float),
    )


def seeds_needed(sd_diff: float, smallest_effect: float, alpha: float, power: float) -> int:
    """Paired seeds a paired t-test needs to detect ``smallest_effect`` with ``power``."""
    from fairtrial import stats

    if sd_diff <= 0:
        return 2
    return int(stats.required_seeds(sd_diff, smallest_effect, alpha=alpha, power=power))


def plan_seeds(
    scores: Mapping[str, Mapping[int, float]],
    arm_table: Mapping[str, Any],
    direction: str,
    *,
    smallest_effect: float,
    alpha: float,
    power: float,
    max_seeds: int,
    pilot: int = PILOT_SEEDS,
) -> dict[str, Any]:
    """How many seeds an experiment needs, from its pilot seeds (``seeds = "auto"``).

    The sd of the paired differences of every arm against the baseline is estimated on the
    pilot's seeds (``scores``: per arm ``{seed: test score}``); the plan is the largest number
    of seeds a paired t-test needs to detect ``smallest_effect`` at ``power``, at
    alpha / number of arms (Holm's first step), at least the pilot and at most ``max_seeds``.
    An arm whose pilot has fewer than 2 paired seeds cannot be planned: it asks for the cap.
    """
    sign = 1.0 if direction == "max" else -1.0
    signed = {a: {s: sign * v for s, v in m.items() if s < pilot} for a, m in scores.items()}
    arms = [a["name"] for a in arm_table["arms"] if a["kind"] == "arm"]
    level = alpha / max(len(arms), 1)
    per_arm: dict[str, Any] = {}
    for arm in arms:
        _, a, b = paired_values(signed, arm, "baseline")
        if len(a) < 2:
            per_arm[arm] = {"n_pairs": len(a), "sd_diff": None, "seeds_needed": max_seeds}
            continue
        sd = float(np.std(b - a, ddof=1))
        per_arm[arm] = {
            "n_pairs": len(a),
            "sd_diff": round(sd, 6),
            "seeds_needed": seeds_needed(sd, smallest_effect, level, power),
        }
    needed = max((v["seeds_needed"] for v in per_arm.values()), default=pilot)
    return {
        "pilot": pilot,
        "max_seeds": max_seeds,
        "needed": needed,
        "seeds": min(max(needed, pilot), max_seeds),
        "capped": needed > max_seeds,
        "arms": per_arm,
        "rule": f"exact paired t-test power {power} to detect {smallest_effect:g} at alpha "
        f"{alpha}/{max(len(arms), 1)}, with the sd of the paired differences of the pilot seeds",
    }
