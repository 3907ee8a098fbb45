"""The tuning part of an analysis (:class:`~fairtrial.results.Tuning`), built from the
experiment's tuning trials: per arm the configurations tried, the one chosen (by
:func:`fairtrial.tuning.select.best`, as the driver chose it), the expected-best curve,
which hyperparameters mattered and what tuning cost; beside them, the verdicts of the arms at
their spec values. Pure apart from the importance, which Optuna computes (with a fixed seed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fairtrial.record import sign
from fairtrial.results import Comparison, Tuning
from fairtrial.spec.model import Dim, metric_direction
from fairtrial.tuning import select
from fairtrial.tuning.records import ArmTuning, Importance, TuningCurve, TuningTrial

#: finished configurations below which the importance carries a warning: fANOVA's forest on
#: 8 configurations of a two-dimensional space was seen to rank a hyperparameter with a
#: hundredth of the effect first
RELIABLE_IMPORTANCE = 10

SAMPLER_NAMES = {
    "random": "Optuna's RandomSampler",
    "qmc": "Optuna's QMCSampler (scrambled Sobol)",
    "tpe": "Optuna's TPESampler",
}


def dims_of(table: Mapping[str, Any]) -> dict[str, Dim]:
    """Dimensions from their normalised form (the spec record's ``tuning.space``)."""
    out = {}
    for key, d in table.items():
        if "choices" in d:
            out[key] = Dim(choices=tuple(d["choices"]))
        else:
            out[key] = Dim(low=d["low"], high=d["high"], log=bool(d.get("log")),
                           step=d.get("step"), integer=bool(d.get("int")))  # fmt: skip
    return out


def procedure(spec_tuning: Mapping[str, Any], seeds: int, direction: str) -> str:
    """The tuning procedure in words, from the spec's ``[tuning]`` as the driver runs it."""
    from fairtrial.spec.model import TuningSpec
    from fairtrial.tuning import space

    t = spec_tuning
    tuning = TuningSpec(
        budget=t["budget"], sampler=t["sampler"], objective=t["objective"],
        direction="min" if direction == "min" else "max", seeds=t["seeds"],
        root_seed=t["root_seed"], space=dims_of(t["space"]),
    )  # fmt: skip
    rounds = space.rounds(tuning)
    how = (
        "all asked at once (the draws do not depend on results) and run as one batch"
        if len(rounds) == 1
        else f"the first {rounds[0]} at random, then one at a time, each asked after the "
        "results of all before it were told"
    )
    dims = "; ".join(f"{k}: {d.describe()}" for k, d in sorted(tuning.space.items()))
    own = ", ".join(sorted(t.get("arms") or {}))
    better = "lowest" if direction == "min" else "highest"
    return (
        f"Every arm was tuned with the same budget: {t['budget']} configurations asked of "
        f"{SAMPLER_NAMES.get(t['sampler'], t['sampler'])} (seed {t['root_seed']}) over "
        f"{dims}" + (f", plus the arms' own dimensions ({own})" if own else "") + f"; {how}. "
        f"Each configuration ran on {t['seeds']} tuning seed(s), derived apart from the "
        f"evaluation seeds and the same for every arm, and was scored by the {better} "
        f"{t['objective']} its trials logged (averaged over its tuning seeds); the test split "
        "was never scored while tuning. A configuration that failed or diverged is a result "
        "of tuning: it cannot be chosen. Each arm's best configuration (ties: the one asked "
        f"first) then ran on the experiment's {seeds} paired seeds, and only those trials "
        "are compared."
    )


def curve(configs: Sequence[TuningTrial], budget: int, direction: str) -> TuningCurve | None:
    """The expected best validation score against configurations tried (Dodge et al. 2019)."""
    from fairtrial.stats import tuning_curve

    values = [c.score for c in configs if c.status == "finished" and c.score is not None]
    failed = sum(c.status in ("failed", "diverged") for c in configs)
    if not values:
        return None
    k = sign(direction)
    rng = np.random.default_rng([budget, len(values), failed])
    got = tuning_curve([k * v for v in values], budget, rng=rng, failed=failed)
    flip = (lambda xs: [k * x for x in xs]) if k < 0 else list
    low, high = flip(got.low), flip(got.high)
    if k < 0:  # negated back: the ends swap
        low, high = high, low
    return TuningCurve(
        k=list(got.k),
        expected=flip(got.expected),
        without_replacement=flip(got.without_replacement),
        low=low,
        high=high,
        interval_method=got.interval_method,
        failed_as=got.failed_as,
    )


def importance(
    dims: Mapping[str, Dim], configs: Sequence[TuningTrial], direction: str
) -> Importance:
    """Which hyperparameters mattered: Optuna's fANOVA (with scikit-learn; seed 0) or
    PED-ANOVA over the finished configurations."""
    done = [c for c in configs if c.status == "finished" and c.score is not None]
    if len(dims) == 1:
        (key,) = dims
        return Importance(evaluator="one hyperparameter", values={key: 1.0})
    if len(done) < 3:
        return Importance(note=f"{len(done)} finished configurations: too few to tell")
    try:
        from fairtrial.tuning.space import distributions, import_optuna

        optuna = import_optuna()
    except Exception as exc:
        return Importance(note=str(exc))
    import importlib.util

    order = sorted(dims)
    dist = distributions(dict(dims), order)
    study = optuna.create_study(direction="minimize" if direction == "min" else "maximize")
    for c in done:
        study.add_trial(optuna.trial.create_trial(
            params={k: c.params[k] for k in order}, distributions=dist, value=c.score,
        ))  # fmt: skip
    if importlib.util.find_spec("sklearn") is not None:
        name, evaluator = (
            "fANOVA (Optuna, seed 0)",
            optuna.importance.FanovaImportanceEvaluator(seed=0),
        )
    else:
        name, evaluator = "PED-ANOVA (Optuna)", optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as exc:
        return Importance(evaluator=name, note=f"could not be computed: {exc}")
    clean = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
    note = None
    if len(done) < RELIABLE_IMPORTANCE:
        note = (
            f"from {len(done)} configurations: too few for a reliable importance (the "
            f"evaluator fits a model to them; at least {RELIABLE_IMPORTANCE} are advised)"
        )
    return Importance(evaluator=name, values=clean, note=note)


def build_tuning(
    spec: Mapping[str, Any],
    direction: str,
    seeds: int,
    arms: Mapping[str, Mapping[str, Any]],
    tuning_rows: Sequence[tuple[Any, Mapping[str, Any]]],
    evaluated: Sequence[Any],
    untuned: Sequence[Comparison] | None,
    compute: Mapping[str, Mapping[str, Any]] | None = None,
) -> Tuning:
    """The tuning part of an analysis.

    ``spec``: the normalised spec (its ``tuning`` and ``baseline``); ``direction``: the
    experiment metric's; ``arms``: name -> ``{"components", "config"}`` of each compared arm
    (config: what its compared trials ran); ``tuning_rows``: every tuning trial with its params;
    ``evaluated``: the compared trials; ``untuned``: the verdicts at spec values, or None when
    those trials did not run; ``compute``: arm -> summary of its tuning trials' compute."""
    t = spec["tuning"]
    obj_dir = metric_direction(t["objective"], "min" if direction == "min" else "max")
    common = dims_of(t["space"])
    own = {a: dims_of(s) for a, s in (t.get("arms") or {}).items()}
    n = int(t["seeds"])
    by_arm: dict[str, list[tuple[Any, Mapping[str, Any]]]] = {}
    for row, params in tuning_rows:
        if row.seed < t["budget"] * n:
            by_arm.setdefault(row.arm, []).append((row, params))
    out: dict[str, ArmTuning] = {}
    for name, info in arms.items():
        configs = select.configurations(by_arm.get(name, []), n)
        top = select.best(configs, obj_dir)
        dims = {**common, **own.get(name, {})}
        components = info.get("components") or {}
        out[name] = ArmTuning(
            arm=name,
            space={k: d.normalized() for k, d in sorted(dims.items())},
            trials=configs,
            best=top,
            config=info.get("config"),
            starting_points={k: v for k, v in components.items() if k in dims},
            curve=curve(configs, int(t["budget"]), obj_dir),
            importance=importance(dims, configs, obj_dir),
            compute=dict((compute or {}).get(name) or {}) or None,
        )
    wall = sum(r.wall_time or 0.0 for r, _ in tuning_rows)
    ran = sum(r.status not in select.UNENDED for r, _ in tuning_rows)
    note = None
    if untuned is None:
        note = (
            "the arms at their spec values did not run on these seeds: `fairtrial run SPEC "
            "--also-untuned` runs them, to show whether the gain survives equal tuning"
        )
    return Tuning(
        budget=int(t["budget"]),
        sampler=str(t["sampler"]),
        objective=str(t["objective"]),
        direction=obj_dir,
        seeds=n,
        root_seed=int(t["root_seed"]),
        arms=out,
        untuned=list(untuned or []),
        untuned_note=note,
        compute={
            "tuning": {"wall_time_s": wall, "trials": ran},
            "evaluation": {
                "wall_time_s": sum(r.wall_time or 0.0 for r in evaluated),
                "trials": sum(r.status not in select.UNENDED for r in evaluated),
            },
        },
        text=procedure(t, seeds, obj_dir),
    )
