"""The search space as Optuna sees it, and the sampler each arm's study gets.

Optuna is imported here only (``fairtrial[tuning]``). Every arm's study gets its own sampler
seeded with ``[tuning] root_seed``: with ``random`` or ``qmc`` and the same space, every arm is
asked for the same configurations in the same order. Parameters are asked for in a fixed order
(the common space's keys, then the arm's own), so the sequence does not depend on how the
spec's tables were written.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from fairtrial.errors import MissingDependency
from fairtrial.spec.model import Dim, TuningSpec

#: configurations TPE draws at random before its model takes over (Optuna's default is 10;
#: a small budget would otherwise never leave the random start)
TPE_STARTUP = 10


def import_optuna() -> Any:
    """Optuna, quiet (its per-trial log lines would drown the run's own)."""
    try:
        import optuna
    except ImportError:
        raise MissingDependency("optuna", "tuning", "[tuning]") from None
    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


def distributions(space: dict[str, Dim], order: list[str]) -> dict[str, Any]:
    """Optuna distributions of ``space``, in ``order``."""
    optuna = import_optuna()
    d = optuna.distributions
    out: dict[str, Any] = {}
    for key in order:
        dim = space[key]
        if dim.choices is not None:
            out[key] = d.CategoricalDistribution(list(dim.choices))
        elif dim.integer:
            out[key] = d.IntDistribution(
                int(dim.low or 0), int(dim.high or 0), log=dim.log, step=int(dim.step or 1)
            )
        else:
            out[key] = d.FloatDistribution(
                float(dim.low or 0.0), float(dim.high or 0.0), log=dim.log, step=dim.step
            )
    return out


def order_of(tuning: TuningSpec, space: dict[str, Dim]) -> list[str]:
    """The order parameters are asked in: the common space's keys, then the arm's own."""
    common = sorted(k for k in space if k in tuning.space)
    return common + sorted(k for k in space if k not in tuning.space)


def tpe_startup(budget: int) -> int:
    """Random configurations TPE starts with: :data:`TPE_STARTUP`, or half a smaller budget."""
    return max(1, min(TPE_STARTUP, budget // 2))


def make_sampler(tuning: TuningSpec) -> Any:
    """A fresh sampler for one arm's study, seeded with ``[tuning] root_seed``."""
    optuna = import_optuna()
    seed = tuning.root_seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QMCSampler is marked experimental
        if tuning.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if tuning.sampler == "qmc":
            return optuna.samplers.QMCSampler(
                seed=seed, scramble=True, warn_independent_sampling=False
            )
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup(tuning.budget))


def rounds(tuning: TuningSpec) -> list[int]:
    """How many configurations each round asks of every arm before any is told: all of them
    for random and qmc (their draws do not depend on results, so they run as one batch);
    for tpe its random start, then one at a time (each next one learns from all before it).
    The rounds are fixed by the spec, never by the backend, so the sequence is the same
    whatever runs the trials."""
    if tuning.sampler in ("random", "qmc"):
        return [tuning.budget]
    start = tpe_startup(tuning.budget)
    return [start] + [1] * (tuning.budget - start)
