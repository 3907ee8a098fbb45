"""Verdicts on imported results: the same analysis as fairtrial's own experiments.

:func:`experiment_of` turns one task's imported rows into what the analysis reads of a stored
experiment (an :class:`~fairtrial.record.ExperimentRecord` whose spec records ``imported``,
and finished :class:`~fairtrial.ledger.TrialRow` s), so :func:`analyze_imported` is
:func:`fairtrial.analysis.document.build` on them, one document per task;
:func:`store_imported` keeps them in a ledger as an experiment marked imported, for
``fairtrial report``, ``bundle`` and ``verify``. :func:`across_tasks` is where the verdict
over several tasks joins the per-task documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fairtrial.analysis.verdicts import Options
from fairtrial.errors import ImportedDataError, LedgerError
from fairtrial.imports.table import NOTE, ImportedResults
from fairtrial.ledger import TrialRow
from fairtrial.record import ExperimentRecord, Hypothesis

if TYPE_CHECKING:
    from fairtrial.ledger import ExperimentRow, Ledger
    from fairtrial.results import Analysis

#: a PostgreSQL ledger keeps seeds as 32-bit integers
_SEED_RANGE = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class ImportedExperiment:
    """One task's imported results as the analysis reads an experiment."""

    record: ExperimentRecord
    trials: tuple[TrialRow, ...]


def experiment_of(
    results: ImportedResults,
    baseline: str,
    *,
    direction: str = "max",
    hypothesis: Hypothesis | None = None,
    task: str | None = None,
    store_names: bool = False,
) -> ImportedExperiment:
    """The experiment of ``task``'s rows (the only task when None), ``baseline`` its baseline.

    fairtrial calls the baseline arm ``baseline``: the given arm takes that name (the report
    says which it was) and the other arms keep theirs, in sorted order. The id is cut from
    the hash of the spec, which holds a digest of the rows: the same results, in any row
    order, are the same experiment. ``store_names``: arm and experiment names as a ledger
    (and a bundle's folders) allows them, the imported ones kept in the spec.
    """
    results.check(baseline)
    hypothesis = hypothesis or Hypothesis()
    tasks = results.tasks
    if task is None:
        if len(tasks) > 1:
            raise ImportedDataError(
                f"{results.source}: results of {len(tasks)} tasks ({', '.join(tasks)}): pick one"
            )
        task = tasks[0]
    rows = sorted(
        results.for_task(task).rows, key=lambda r: (r.arm != baseline, r.arm, r.seed, r.value)
    )
    if baseline != "baseline" and any(r.arm == "baseline" for r in rows):
        raise ImportedDataError(
            f"{results.source}: an arm is named 'baseline' but --baseline is '{baseline}': "
            "fairtrial names the baseline arm 'baseline'; rename the other arm"
        )
    given = list(dict.fromkeys(r.arm for r in rows))
    names = {a: "baseline" if a == baseline else a for a in given}
    name = results.name
    if store_names:
        names = _safe_names(names)
        name = _safe(name) or "imported"
    digest = hashlib.sha256(
        json.dumps(
            [results.metric, [[r.arm, r.seed, r.value] for r in rows]], separators=(",", ":")
        ).encode()
    ).hexdigest()
    seeds = sorted({r.seed for r in rows})
    hyp = {"alpha": hypothesis.alpha, "power": hypothesis.power}
    if hypothesis.smallest_effect is not None:
        hyp["smallest_effect"] = hypothesis.smallest_effect
    imported: dict[str, Any] = {"source": results.source, "note": NOTE, "baseline": baseline}
    if results.value:
        imported["value"] = results.value
    if results.skipped:
        imported["skipped"] = list(results.skipped)
    renamed = {new: old for old, new in names.items() if new not in (old, "baseline")}
    if renamed:
        imported["arm_names"] = renamed
    imported["rows_sha256"] = digest
    spec = {
        "experiment": {
            "name": name,
            "task": task,
            "metric": results.metric,
            "direction": direction,
            "seeds": len(seeds),
        },
        "hypothesis": hyp,
        "baseline": {},
        "arms": {names[a]: {} for a in given if names[a] != "baseline"},
        "imported": imported,
    }
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    spec_hash = hashlib.sha256(blob.encode()).hexdigest()
    eid = spec_hash[:12]
    table: dict[str, list[dict[str, Any]]] = {
        "arms": [
            {"name": names[a], "kind": "baseline" if names[a] == "baseline" else "arm",
             "components": {}, "parent": None, "removed": None}
            for a in given
        ],
        "ablations": [],
    }  # fmt: skip
    record = ExperimentRecord.from_normalized(spec, table, id=eid, spec_hash=spec_hash)
    trials = tuple(
        TrialRow(
            id=_identity(results, task, r.arm, r.seed, r.value),
            experiment_id=eid,
            arm=names[r.arm],
            seed=r.seed,
            status="finished",
            attempt=1,
            config=dict(r.params),
            seeds={},
            result=r.value,
            error=None,
            error_detail=None,
            owner=None,
            started_at=None,
            finished_at=None,
            wall_time=None,
            phases={},
            task_checksum=None,
            provenance_id=None,
            origin=eid,
        )
        for r in rows
    )
    return ImportedExperiment(record, trials)


def _identity(results: ImportedResults, task: str, arm: str, seed: int, value: float) -> str:
    """An imported trial's identity: its source and its row."""
    content = {
        "imported": results.source,
        "task": task,
        "metric": results.metric,
        "arm": arm,
        "seed": seed,
        "value": value,
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _safe(name: str) -> str:
    """``name`` as a valid experiment or arm name (letters, digits, ``_ . -``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")[:100]


def _safe_names(names: Mapping[str, str]) -> dict[str, str]:
    from fairtrial.spec import valid_name

    out: dict[str, str] = {}
    taken = {n for n in names.values() if valid_name(n)}
    for old, new in names.items():
        if valid_name(new):
            out[old] = new
            continue
        base = _safe(new) or "arm"
        candidate, k = base, 2
        while candidate in taken:
            candidate, k = f"{base[:95]}-{k}", k + 1
        taken.add(candidate)
        out[old] = candidate
    return out


def analyze_imported(
    results: ImportedResults,
    baseline: str,
    *,
    direction: str = "max",
    hypothesis: Hypothesis | None = None,
    options: Options = Options(),
    store_names: bool = False,
) -> dict[str, Analysis]:
    """The analysis of each task's results, ``{task: document}`` in task order."""
    from fairtrial.analysis.document import build

    results.check(baseline)
    out = {}
    for task in results.tasks:
        exp = experiment_of(
            results,
            baseline,
            direction=direction,
            hypothesis=hypothesis,
            task=task,
            store_names=store_names,
        )
        out[task] = build(exp.record, exp.trials, options)
    return out


def across_tasks(
    per_task: Mapping[str, Analysis],
    *,
    name: str,
    direction: str = "max",
    hypothesis: Hypothesis | None = None,
    options: Options = Options(),
) -> Analysis:
    """One document of the results of several tasks: each task's analysis, and every claim
    judged across them (:func:`fairtrial.analysis.across.combine`)."""
    from fairtrial.analysis.across import combine

    return combine(per_task, name=name, direction=direction,
                   hyp=hypothesis or Hypothesis(), options=options)  # fmt: skip


def store_imported(
    ledger: Ledger,
    results: ImportedResults,
    baseline: str,
    *,
    direction: str = "max",
    hypothesis: Hypothesis | None = None,
) -> list[ExperimentRow]:
    """Keep each task's results in ``ledger`` as an experiment marked imported (its spec's
    ``imported`` table), every row a finished trial; storing the same results again changes
    nothing. Returns the experiments, in task order."""
    from fairtrial.plan import TrialPlan

    results.check(baseline)
    owner = f"import:{os.getpid()}"
    stored = []
    for task in results.tasks:
        exp = experiment_of(
            results,
            baseline,
            direction=direction,
            hypothesis=hypothesis,
            task=task,
            store_names=True,
        )
        rec = exp.record
        for t in exp.trials:
            if not _SEED_RANGE[0] <= t.seed <= _SEED_RANGE[1]:
                raise ImportedDataError(
                    f"{results.source}: seed {t.seed} of arm {t.arm} does not fit a ledger "
                    "(a 32-bit integer is needed to store it)"
                )
        ledger.upsert_experiment(
            experiment_id=rec.id,
            name=rec.name,
            spec_hash=rec.spec_hash,
            spec=rec.spec,
            arms=rec.arm_table(),
            spec_path=None,
            task=rec.task,
            task_checksum="",
            metric=rec.metric,
            direction=rec.direction,
            seeds=rec.seeds,
            root_seed=0,
        )
        ledger.add_trials(
            TrialPlan(t.id, rec.id, t.arm, t.seed, t.config, {}, "") for t in exp.trials
        )
        have = {t.id: t for t in ledger.trials(rec.id)}
        for t in exp.trials:
            row = have[t.id]
            if row.status == "finished":  # the same identity: the same row, already kept
                continue
            attempt = ledger.claim(t.id, row.attempt, owner, lease=600.0)
            if attempt is None:
                raise LedgerError(f"trial {t.id[:12]} of {rec.id} is held by another run")
            ledger.finish(t.id, attempt, status="finished", result=t.result, owner=owner)
        stored.append(ledger.experiment(rec.id))
    return stored
