"""What a planned experiment costs and what it can detect, before (or while) it runs.

:func:`time_estimate` times the plan on the trials of the same task already in the store;
:func:`power_rows` gives, per arm, the smallest effect the planned seeds detect from the sd of
the paired differences seen so far; :func:`plan_estimate` gathers both for ``fairtrial plan``.
Each returns data: the command line formats it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairtrial.errors import ExperimentNotFound
from fairtrial.record import ENDED, sign

if TYPE_CHECKING:
    from fairtrial.ledger import Ledger, TrialRow
    from fairtrial.spec import Spec

#: trial states that count as done for ``in the store: N/M trials done``
_DONE = ENDED


@dataclass(frozen=True)
class TimeEstimate:
    """The wall time of ``trials`` trials on ``workers`` workers, from earlier trials."""

    task: str
    trials: int
    workers: int
    #: finished trials on the same task in the store the estimate is based on (0: none)
    earlier: int
    #: their mean wall time in seconds (None: no earlier trial)
    mean_trial_seconds: float | None

    @property
    def seconds(self) -> float | None:
        """The estimate: mean trial time x trials / workers; None without earlier trials."""
        if self.mean_trial_seconds is None:
            return None
        return self.mean_trial_seconds * self.trials / self.workers


@dataclass(frozen=True)
class PowerRow:
    """One arm against the baseline: what the planned seeds detect, from the paired sd."""

    arm: str
    #: seeds both the arm and the baseline finished so far
    n_pairs: int
    #: sample sd of the paired differences (arm - baseline, in the improving direction)
    sd_diff: float
    #: the planned seeds
    seeds: int
    #: smallest effect ``seeds`` paired seeds detect with ``power`` at ``alpha`` (0 when sd is 0)
    mde: float
    alpha: float
    power: float
    #: the hypothesis' smallest effect of interest (None: not set)
    smallest_effect: float | None
    #: seeds needed to detect ``smallest_effect`` (None when it is not set)
    seeds_needed: int | None


@dataclass(frozen=True)
class PlanEstimate:
    """What ``fairtrial plan`` reports after the arms: time, progress and power."""

    time: TimeEstimate
    #: trials of the experiment done in the store (None: the experiment has not run there)
    done: int | None
    #: per arm against the baseline; empty until two paired seeds have finished
    power: list[PowerRow]


def time_estimate(
    ledger: Ledger, task: str, trials: int, workers: int | None = None
) -> TimeEstimate:
    """Time ``trials`` trials on ``task`` from the finished trials on it in ``ledger``.

    ``workers`` defaults to what the local backend starts on this machine (one per core).
    """
    if workers is None:
        from fairtrial.backends.local import split_cores

        workers, _ = split_cores(None, None)
    walls = [
        r.wall_time
        for e in ledger.experiments()
        if e.task == task
        for r in ledger.trials(e.id)
        if r.status == "finished" and r.wall_time
    ]
    return TimeEstimate(
        task=task,
        trials=trials,
        workers=workers,
        earlier=len(walls),
        mean_trial_seconds=sum(walls) / len(walls) if walls else None,
    )


def power_rows(spec: Spec, rows: Iterable[TrialRow]) -> list[PowerRow]:
    """Per arm of ``spec`` (not ablations) with two or more seeds paired with the baseline
    among the finished ``rows``: the minimum detectable effect at the planned seeds and the
    seeds the hypothesis' smallest effect needs."""
    from fairtrial import stats
    from fairtrial.plan import paired_values, seeds_needed

    k = sign(spec.direction)
    scores: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.status == "finished" and r.result is not None:
            scores.setdefault(r.arm, {})[r.seed] = k * float(r.result)
    hyp = spec.hypothesis
    out: list[PowerRow] = []
    for arm in (a.name for a in spec.arms.values() if a.kind == "arm"):
        _, a, b = paired_values(scores, arm, "baseline")
        if len(a) < 2:
            continue
        sd = float((b - a).std(ddof=1))
        mde = (
            0.0
            if sd == 0
            else stats.minimum_detectable_effect(sd, spec.seeds, alpha=hyp.alpha, power=hyp.power)
        )
        need = None
        if hyp.smallest_effect is not None:
            need = seeds_needed(sd, hyp.smallest_effect, hyp.alpha, hyp.power)
        out.append(
            PowerRow(
                arm=arm,
                n_pairs=len(a),
                sd_diff=sd,
                seeds=spec.seeds,
                mde=float(mde),
                alpha=hyp.alpha,
                power=hyp.power,
                smallest_effect=hyp.smallest_effect,
                seeds_needed=need,
            )
        )
    return out


def plan_estimate(
    ledger: Ledger, spec: Spec, trials: int, workers: int | None = None
) -> PlanEstimate:
    """Time estimate, progress and power of ``spec`` (``trials`` planned) in ``ledger``."""
    time = time_estimate(ledger, spec.task, trials, workers)
    try:
        exp = ledger.experiment(spec.experiment_id)
    except ExperimentNotFound:
        return PlanEstimate(time=time, done=None, power=[])
    rows = ledger.trials(exp.id)
    done = sum(r.status in _DONE for r in rows)
    if spec.tuning is not None:
        from fairtrial.ledger.stages import TUNING

        done += sum(r.status in _DONE for r, _ in ledger.stage_trials(exp.id, TUNING))
    return PlanEstimate(time=time, done=done, power=power_rows(spec, rows))
