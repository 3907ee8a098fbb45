"""The tuning driver: every arm gets the same budget of configurations, asked of Optuna from
this one process (ask/tell), run as ordinary fairtrial trials on any backend.

Each arm has its own study and sampler, all seeded alike (:mod:`fairtrial.tuning.space`).
The configurations are asked in rounds fixed by the spec (:func:`~fairtrial.tuning.space.rounds`),
each round's trials run as one batch, and their scores are told back in a fixed order, so the
sequence of configurations depends on the root seed and the results only, never on the backend
or the number of workers.

The study is not stored: the ledger's own tuning trials are. A resumed run rebuilds each study
by asking the sampler again, round by round, and telling it the stored results: the sampler,
seeded the same way and told the same history, asks for the same configurations, each of which
is checked against the one stored with its trial (a different one stops the run with the
reason), and a finished configuration is not run again. Keeping the ledger the one source of
truth means nothing else to back up, migrate or keep consistent with it, and a tuning run
resumes on any store the ledger supports.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from fairtrial import provenance
from fairtrial.backends.base import Backend
from fairtrial.ledger import Ledger, TrialRow
from fairtrial.ledger.stages import TUNING
from fairtrial.plan import TrialPlan, spec_code_snapshot, trial_identity
from fairtrial.rounds import Options, RunSummary, code_changed, run_rows
from fairtrial.seeding import trial_seeds, tuning_root
from fairtrial.spec import Arm, Spec, set_dotted
from fairtrial.tuning import select, space
from fairtrial.tuning.records import TuningTrial


@dataclass
class TuneResult:
    """What tuning gave: each arm's best configuration and its config, and how the tuning
    trials ran (``summary``); ``stopped`` says why it could not finish."""

    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    best: dict[str, TuningTrial] = field(default_factory=dict)
    summary: RunSummary | None = None
    stopped: str | None = None


def tuned_config(arm: Arm, params: dict[str, Any]) -> dict[str, Any]:
    """``arm``'s config with the values tuning chose."""
    config = copy.deepcopy(arm.config)
    for key, value in params.items():
        set_dotted(config, key, value)
    return config


def tuning_plans(
    spec: Spec, arm: Arm, index: int, params: dict[str, Any], code_hash: str
) -> list[TrialPlan]:
    """The tuning trials of configuration ``index`` of ``arm``: one per tuning seed, on the
    tuning seed root (the same seeds for every arm's configuration ``index``)."""
    assert spec.tuning is not None
    n = spec.tuning.seeds
    config = tuned_config(arm, params)
    root = tuning_root(spec.root_seed)
    out = []
    for s in range(n):
        seed = index * n + s
        streams = trial_seeds(root, seed)
        identity = trial_identity(
            task=spec.task,
            task_checksum=spec.task_checksum,
            metric=spec.metric,
            code_hash=code_hash,
            config=config,
            seeds=streams,
            objective=spec.tuning.objective,
        )
        out.append(TrialPlan(identity, spec.experiment_id, arm.name, seed, config, streams,
                             code_hash))  # fmt: skip
    return out


class TuningMismatch(Exception):
    """The sampler asked for another configuration than the one stored for that slot."""


def tune(
    spec: Spec,
    ledger: Ledger,
    backend: Backend,
    console: Console,
    options: Options,
    snapshot: dict[str, Any] | None = None,
) -> TuneResult:
    """Tune every arm of ``spec`` (its ``[tuning]``) with the same budget; resumable.
    ``snapshot``: the code the trials run (default: as it is on disk now)."""
    tuning = spec.tuning
    assert tuning is not None
    optuna = space.import_optuna()
    eid = spec.experiment_id
    snapshot = spec_code_snapshot(spec) if snapshot is None else snapshot
    code_hash = provenance.code_hash(snapshot)
    arms = list(spec.arms.values())
    spaces = {a.name: tuning.space_of(a) for a in arms}
    orders = {a.name: space.order_of(tuning, spaces[a.name]) for a in arms}
    dists = {a.name: space.distributions(spaces[a.name], orders[a.name]) for a in arms}
    studies = {
        a.name: optuna.create_study(
            direction="minimize" if tuning.direction == "min" else "maximize",
            sampler=space.make_sampler(tuning),
        )
        for a in arms
    }
    n = tuning.seeds
    summary = RunSummary(eid, total=len(arms) * tuning.budget * n, already_done=0)
    result = TuneResult(summary=summary)
    asked = 0
    # what an earlier run asked for (a resumed run checks the sampler asks for it again)
    stored = {(r.arm, r.seed): p for r, p in ledger.stage_trials(eid, TUNING)}
    for size in space.rounds(tuning):
        batch: list[tuple[Arm, int, Any]] = []
        plans: list[TrialPlan] = []
        params_of: dict[tuple[str, int], dict[str, Any]] = {}
        for index in range(asked, asked + size):
            for arm in arms:
                trial = studies[arm.name].ask(dists[arm.name])
                params = {k: trial.params[k] for k in orders[arm.name]}
                was = stored.get((arm.name, index * n))
                if was is not None and was != params:
                    result.stopped = (
                        f"tuning arm '{arm.name}': the sampler now asks for configuration "
                        f"#{index} = {params}, but the ledger holds {was} for it (a different "
                        "Optuna version samples differently): run the experiment on a new "
                        "store, or with the Optuna version that started it"
                    )
                    return result
                batch.append((arm, index, trial))
                for p in tuning_plans(spec, arm, index, params, code_hash):
                    plans.append(p)
                    params_of[(arm.name, p.seed)] = params
        ledger.add_stage_trials(eid, TUNING, plans, params_of)
        ids = list(dict.fromkeys(p.trial_id for p in plans))
        rows = {r.id: r for r in ledger.trials_of_identity(ids)}
        planned = [rows[i] for i in ids]
        run_rows(spec, ledger, backend, snapshot, code_hash, planned, summary, console,
                 options, stage=TUNING, check_code=False)  # fmt: skip
        if summary.stopped:
            result.stopped = summary.stopped
            return result
        # this round's trials as they ended, in their slots (a trial reused from another
        # experiment holds that experiment's arm name)
        ended = {r.id: r for r in ledger.trials_of_identity(ids)}
        now = {(p.arm, p.seed): (replace(ended[p.trial_id], arm=p.arm, seed=p.seed),
                                 params_of[(p.arm, p.seed)]) for p in plans}  # fmt: skip
        for arm, index, trial in batch:
            group = [now[(arm.name, index * n + s)] for s in range(n)]
            (config,) = select.configurations(group, n)
            if config.status == "pending":
                result.stopped = _unended(group)
                return result
            if config.status == "finished" and config.score is not None:
                studies[arm.name].tell(trial, config.score)
            else:
                studies[arm.name].tell(trial, state=optuna.trial.TrialState.FAIL)
        asked += size
    if (changed := code_changed(spec, code_hash)) is not None:
        result.stopped = changed
        return result
    by_arm: dict[str, list[tuple[TrialRow, dict[str, Any]]]] = {}
    for row, params in ledger.stage_trials(eid, TUNING):
        if row.seed < tuning.budget * n:
            by_arm.setdefault(row.arm, []).append((row, params))
    for arm in arms:
        configs = select.configurations(by_arm.get(arm.name, []), n)
        top = select.best(configs, tuning.direction)
        if top is None:
            first = next((c.error for c in configs if c.error), "no reason recorded")
            result.stopped = (
                f"every tuning configuration of arm '{arm.name}' failed or diverged "
                f"({len(configs)} tried; the first: {first}): widen or move [tuning.space]"
            )
            return result
        result.best[arm.name] = top
        result.configs[arm.name] = tuned_config(arm, top.params)
    return result


def _unended(group: Sequence[tuple[TrialRow, Any]]) -> str:
    rows = [r for r, _ in group if r.status in select.UNENDED]
    held = [r for r in rows if r.status == "running"]
    if held:
        return (
            f"{len(held)} tuning trial(s) are running in another run: the next configurations "
            "depend on their results; run again when it has finished"
        )
    return "tuning trials were left unfinished: run again to resume"


def describe_best(arm: str, best: TuningTrial, objective: str) -> str:
    """One line: the configuration tuning chose for ``arm``."""
    values = ", ".join(f"{k} = {_short(v)}" for k, v in best.params.items())
    score = "" if best.score is None else f" ({objective} {best.score:.4g})"
    return f"{arm}: configuration #{best.index}, {values}{score}"


def _short(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:.4g}"
    return repr(v) if isinstance(v, str) else str(v)
