"""From a validated spec to the list of trials: every arm on every seed, with derived seeds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairtrial.record import sign
from fairtrial.seeding import trial_seeds
from fairtrial.spec import PILOT_SEEDS, Spec


@dataclass(frozen=True)
class TrialPlan:
    """One trial to run: arm ``arm`` on seed index ``seed``; ``trial_id`` is its identity."""

    trial_id: str
    experiment_id: str
    arm: str
    seed: int
    config: dict[str, Any]
    seeds: dict[str, int]  # the derived stream seeds, recorded with the trial
    code_hash: str = ""


def trial_identity(
    *,
    task: str,
    task_checksum: str,
    metric: str,
    code_hash: str,
    config: Mapping[str, Any],
    seeds: Mapping[str, int],
    objective: str | None = None,
    repeat: int = 0,
) -> str:
    """What makes two trials the same trial: the data (task and its checksum), the metric
    that scores it, the code (:func:`fairtrial.provenance.code_hash`: the recipe and every
    file it imports), the arm's config and the seed streams. A finished trial with the same
    identity is reused by any experiment, never re-run; a change in any of these is a new
    trial. How a trial is run (backend, time limit, retries) is not part of it.

    ``objective``: a tuning trial's, whose result is that logged metric's best value (the
    test split unscored), never a compared trial's result. ``repeat``: a trial run again to
    measure the timing noise (the same computation as repeat 0, a trial of its own)."""
    content: dict[str, Any] = {
        "task": task,
        "task_checksum": task_checksum,
        "metric": metric,
        "code": code_hash,
        "config": config,
        "seeds": dict(seeds),
    }
    if objective is not None:
        content["tuning_objective"] = objective
    if repeat:
        content["repeat"] = repeat
    blob = json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_trials(spec: Spec, code_hash: str | None = None) -> list[TrialPlan]:
    """Trials ordered seed-major (seed 0 of every arm first), so a run stopped early has
    complete pairs to compare instead of all seeds of one arm and none of another.

    ``code_hash``: the hash of the code the trials run (default: :func:`spec_code_hash`, the
    code as it is on disk now)."""
    if code_hash is None:
        code_hash = spec_code_hash(spec)
    return [
        _plan(spec, arm, seed, code_hash)
        for seed in range(spec.seeds)
        for arm in spec.arms.values()
    ]


def repeat_trials(spec: Spec, code_hash: str) -> list[TrialPlan]:
    """The baseline's seeds 1..``spec.timing_repeats`` once more (seed 0 is left out: it is
    often a process's first trial, which pays one-time costs): each the same computation as
    its compared trial, so their times differ by the timing noise alone."""
    last = min(spec.timing_repeats, spec.seeds - 1)
    return [_plan(spec, spec.arms["baseline"], s, code_hash, 1) for s in range(1, 1 + last)]


def _plan(spec: Spec, arm: Any, seed: int, code_hash: str, repeat: int = 0) -> TrialPlan:
    """The trial of ``arm`` on ``seed`` (``repeat``: the same computation run once more)."""
    streams = trial_seeds(spec.root_seed, seed)
    identity = trial_identity(
        task=spec.task,
        task_checksum=spec.task_checksum,
        metric=spec.metric,
        code_hash=code_hash,
        config=arm.config,
        seeds=streams,
        repeat=repeat,
    )
    return TrialPlan(
        trial_id=identity,
        experiment_id=spec.experiment_id,
        arm=arm.name,
        seed=seed,
        config=arm.config,
        seeds=streams,
        code_hash=code_hash,
    )


def spec_code_snapshot(spec: Spec) -> dict[str, Any]:
    """The code ``spec``'s trials run, as it is on disk now (:func:`provenance.code_snapshot`)."""
    from fairtrial import provenance

    return provenance.code_snapshot(spec.recipe, spec.command, spec.base_dir, spec.task)


def spec_code_hash(spec: Spec) -> str:
    """The code hash of ``spec``'s trials as the code is now."""
    from fairtrial import provenance

    return provenance.code_hash(spec_code_snapshot(spec))


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


def permutation_floor(alpha: float) -> int:
    """The fewest paired seeds with which the exact sign-flip permutation test can reject at
    ``alpha``: its smallest two-sided p-value is 2 / 2^n (every difference the same sign), so
    n seeds can never give a p below that, whatever the effect (5 seeds: 0.0625)."""
    n = 2
    while 2.0 / 2.0**n >= alpha:
        n += 1
    return n


def family_sizes(arm_table: Mapping[str, Any]) -> list[int]:
    """Sizes of the families Holm's correction runs over: the arms against the baseline, and
    each arm's ablations."""
    arms = sum(a["kind"] == "arm" for a in arm_table["arms"])
    ablations: dict[str, int] = {}
    for ab in arm_table["ablations"]:
        ablations[ab["arm"]] = ablations.get(ab["arm"], 0) + 1
    return [n for n in (arms, *ablations.values()) if n]


def seed_floor(arm_table: Mapping[str, Any], alpha: float) -> int:
    """The fewest seeds with which every comparison of the experiment can reach a verdict:
    Holm's first step tests the smallest p at alpha / family size."""
    return max((permutation_floor(alpha / m) for m in family_sizes(arm_table)), default=2)


def seed_floor_warning(seeds: int, arm_table: Mapping[str, Any], alpha: float) -> str | None:
    """One line when ``seeds`` can never give ``better`` or ``worse``, else None."""
    floor = seed_floor(arm_table, alpha)
    if seeds >= floor:
        return None
    m = max(family_sizes(arm_table), default=1)
    return (
        f"{seeds} seeds can never give a verdict of better or worse: the exact sign-flip "
        f"permutation test's smallest p-value is 2/2^{seeds} = {2 / 2**seeds:.3g}, not below "
        f"alpha {alpha:g}" + (f" / {m} comparisons (Holm)" if m > 1 else "") + f"; use at least "
        f"{floor} seeds"
    )


def design_seed_warning(spec: Any) -> str | None:
    """One line when the spec's factorial design can never call an effect better or worse
    at its seed count (Holm over every listed term), else None."""
    info = getattr(spec, "design", None)
    if info is None or spec.auto_seeds:
        return None
    from fairtrial.stats import estimable_terms

    m = len(estimable_terms(info.build(), info.interactions))
    floor = permutation_floor(spec.hypothesis.alpha / m)
    if spec.seeds >= floor:
        return None
    return (
        f"{spec.seeds} seeds can never call a design's effect better or worse: {m} terms are "
        f"tested (Holm) and the exact sign-flip test's smallest p is 2/2^{spec.seeds}; use at "
        f"least {floor} seeds (or interactions = 1 to test main effects only)"
    )


def seeds_needed(sd_diff: float, smallest_effect: float, alpha: float, power: float) -> int:
    """Paired seeds needed to detect ``smallest_effect`` with ``power`` at ``alpha``: what a
    paired t-test needs, and never fewer than the permutation test that decides can use
    (:func:`permutation_floor`)."""
    from fairtrial import stats

    floor = permutation_floor(alpha)
    if sd_diff <= 0:
        return floor
    t_seeds = int(stats.required_seeds(sd_diff, smallest_effect, alpha=alpha, power=power))
    return max(t_seeds, floor)


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
    alpha / number of arms (Holm's first step), never fewer than the permutation test can
    reject with (:func:`seed_floor`), at least the pilot and at most ``max_seeds``.
    An arm whose pilot has fewer than 2 paired seeds cannot be planned: it asks for the cap.
    """
    k = sign(direction)
    signed = {a: {s: k * v for s, v in m.items() if s < pilot} for a, m in scores.items()}
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
    floor = seed_floor(arm_table, alpha)
    needed = max([floor, *(v["seeds_needed"] for v in per_arm.values())])
    return {
        "pilot": pilot,
        "max_seeds": max_seeds,
        "needed": needed,
        "seeds": min(max(needed, pilot), max_seeds),
        "capped": needed > max_seeds,
        "arms": per_arm,
        "floor": floor,
        "rule": f"exact paired t-test power {power} to detect {smallest_effect:g} at alpha "
        f"{alpha}/{max(len(arms), 1)}, with the sd of the paired differences of the pilot seeds, "
        f"and at least the {floor} seeds the permutation test needs to reject at all",
    }
