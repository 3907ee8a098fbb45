"""Checking a bundle's results against the truth it does not control.

A bundle is self-consistent by construction: its manifest, test log chain and analysis are all
written by whoever wrote the bundle, so a forger who rewrites the results can rewrite every one
of them to match. What a forger cannot rewrite is a built-in task's test labels: they ship with
fairtrial, pinned by checksum. :func:`rescore` scores every finished trial's stored test
predictions with the experiment's metric against those labels, exactly as
``ctx.evaluate_test`` scored them when the trial ran, and refuses a result they do not give.

A task defined by the uploader's own code (``module:function``) has labels that only that code
knows; it is never imported here, so its results cannot be re-scored: they are *unverifiable*,
and :func:`rescore` says why. So are results whose predictions are missing, or whose task data
differ from the ones this fairtrial ships (another version's data, or an edited checksum). So
are the results of an external task (``external:NAME``), which the recipe evaluated itself:
there is nothing to re-score, and :func:`rescore` says so (it only checks that each result is
the score its recipe reported, as stored with the trial).

:func:`check_identity` checks the experiment's identity: its id is the first 12 hex digits of
the hash of its normalised spec (:func:`fairtrial.spec.hash_normalized`, the code that made it),
and the name, task and metric it is filed under are the spec's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairtrial.errors import BundleError, TaskError
from fairtrial.ledger import ExperimentRow, TrialRow
from fairtrial.tasks import METRICS, Task, get_task
from fairtrial.tasks.external import is_external


@dataclass(frozen=True)
class Rescored:
    """What re-scoring found: ``verified`` when every finished trial's result was recomputed
    from its predictions and matched; otherwise ``reason`` says why it could not be checked."""

    verified: bool
    rescored: int
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "rescored": self.rescored, "unverifiable": self.reason}


def check_identity(exp: ExperimentRow) -> None:
    """Raise :class:`BundleError` unless ``exp``'s id, spec hash and spec agree."""
    from fairtrial.spec import hash_normalized

    spec = exp.spec
    table = spec.get("experiment") if isinstance(spec, Mapping) else None
    if not isinstance(table, Mapping):
        raise BundleError("experiment.json: 'spec' is not a normalised spec (no experiment table)")
    try:
        digest = hash_normalized(spec)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"experiment.json: 'spec' cannot be hashed ({exc})") from None
    if digest != exp.spec_hash:
        raise BundleError(
            f"experiment.json: the spec hashes to {digest[:12]}, not to its spec_hash "
            f"{str(exp.spec_hash)[:12]} (edited)"
        )
    if exp.id != digest[:12]:
        raise BundleError(
            f"experiment.json: experiment id {str(exp.id)[:40]!r} is not its spec hash's first "
            f"12 hex digits ({digest[:12]}) (edited)"
        )
    for field in ("name", "task", "metric"):
        got, want = getattr(exp, field), table.get(field)
        if got != want:
            raise BundleError(
                f"experiment.json: {field} {str(got)[:80]!r} is not the spec's "
                f"{str(want)[:80]!r} (edited)"
            )
    if is_external(exp.task):  # the spec names the direction of the recipe's own metric
        if exp.direction != table.get("direction"):
            raise BundleError(
                f"experiment.json: direction {str(exp.direction)[:10]!r} is not the spec's "
                f"{str(table.get('direction'))[:10]!r} (edited)"
            )
        return
    metric = METRICS.get(exp.metric) if isinstance(exp.metric, str) else None
    if metric is not None and exp.direction != metric.direction:
        raise BundleError(
            f"experiment.json: direction {str(exp.direction)[:10]!r} is not metric "
            f"'{exp.metric}''s ('{metric.direction}') (edited)"
        )


def _task(exp: ExperimentRow) -> tuple[Task | None, str | None]:
    """The built-in task the experiment ran on, or (None, why its labels are not known here)."""
    name = exp.task
    if ":" in name:
        return None, (
            f"task '{name[:80]}' is defined by the uploader's code, which is never run here: "
            "its test labels are unknown, so the results cannot be re-scored"
        )
    try:
        task = get_task(name)
    except Exception as exc:  # an unknown name, a newer fairtrial's task, a missing extra
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return None, f"task '{name[:80]}' cannot be built here ({first})"
    if task.checksum != exp.task_checksum:
        return None, (
            f"task '{name[:80]}': its data here (checksum {task.checksum[:12]}) differ from the "
            f"experiment's ({str(exp.task_checksum)[:12]}), so its test labels are not the ones "
            "the trials were scored on"
        )
    metric = METRICS.get(exp.metric)
    if metric is None or task.kind not in metric.kinds:
        return (
            None,
            f"metric '{str(exp.metric)[:40]}' is not a metric of {task.kind} tasks in this "
            "fairtrial",
        )
    return task, None


def rescore(exp: ExperimentRow, trials: list[TrialRow], predictions: Any) -> Rescored:
    """Re-score every finished trial's stored test predictions (``results/predictions.json``:
    trial id -> ``{"attempt", "predictions"}``, or None when the bundle has none).

    Raises :class:`BundleError` naming the trial and both numbers when a trial's result is not
    what its predictions score. Returns unverified (with the reason) when the task's labels
    are not known here or a finished trial has no stored predictions; every trial that can be
    re-scored is re-scored first, so leaving some predictions out hides nothing."""
    finished = [t for t in trials if t.status == "finished"]
    if not finished:
        return Rescored(True, 0)
    if isinstance(exp.spec, Mapping) and exp.spec.get("imported"):
        return Rescored(
            False, 0, "imported results, not run by fairtrial: no test predictions to re-score"
        )
    if is_external(exp.task):
        return _reported(exp, finished, predictions)
    task, why = _task(exp)
    if task is None:
        return Rescored(False, 0, why)
    if predictions is not None and not isinstance(predictions, Mapping):
        raise BundleError(
            "results/predictions.json: expected an object of trial id -> "
            '{"attempt": N, "predictions": [...]}'
        )
    stored = predictions or {}
    missing: list[str] = []
    differ: list[tuple[TrialRow, float]] = []
    for t in finished:
        p = stored.get(t.id)
        if not (isinstance(p, Mapping) and p.get("attempt") == t.attempt):
            missing.append(t.id)
            continue
        if t.task_checksum not in (None, task.checksum):
            missing.append(t.id)
            continue
        values = p.get("predictions")
        if not isinstance(values, list):
            raise BundleError(
                f"results/predictions.json: trial {t.id[:80]}'s 'predictions' is not a list"
            )
        try:
            score = task.score(values, exp.metric)
        except (TaskError, ValueError, TypeError) as exc:
            raise BundleError(
                f"results/predictions.json: trial {t.id[:80]}'s predictions cannot be scored on "
                f"task '{task.name}': {str(exc)[:200]}"
            ) from None
        result = t.result
        if (
            isinstance(result, bool)
            or not isinstance(result, (int, float))
            or not math.isclose(float(result), score, rel_tol=1e-9, abs_tol=1e-12)
        ):
            differ.append((t, score))
    if differ:
        t, score = differ[0]
        more = (
            f" ({len(differ)} of {len(finished)} finished trials differ)" if len(differ) > 1 else ""
        )
        raise BundleError(
            f"results/trials.json: trial {t.id[:80]} reports {exp.metric} {t.result!r}, but its "
            f"stored test predictions score {score!r} against task '{task.name}''s test labels"
            f"{more}: the results are not what the predictions give (forged or edited)"
        )
    if missing:
        return Rescored(
            False,
            len(finished) - len(missing),
            f"{len(missing)} of {len(finished)} finished trials have no stored test predictions "
            f"for their attempt on this task's data (first: {missing[0][:80]}), so their results "
            "cannot be re-scored",
        )
    return Rescored(True, len(finished))


def _reported(exp: ExperimentRow, finished: list[TrialRow], predictions: Any) -> Rescored:
    """An external task's results: there is nothing to re-score (the recipe evaluated itself on
    data fairtrial never held), so they are unverifiable; but a result that is not the score
    its recipe reported, as stored with the trial's test evaluation, is refused as edited."""
    stored = predictions if isinstance(predictions, Mapping) else {}
    for t in finished:
        p = stored.get(t.id)
        if not (isinstance(p, Mapping) and p.get("attempt") == t.attempt):
            continue
        reported = p.get("predictions")
        metrics = reported.get("metrics") if isinstance(reported, Mapping) else None
        value = metrics.get(exp.metric) if isinstance(metrics, Mapping) else None
        if not (isinstance(reported, Mapping) and reported.get("evaluation") == "recipe"):
            raise BundleError(
                f"results/predictions.json: trial {t.id[:80]}'s test evaluation is not the "
                f"recipe's own report, as on task '{exp.task[:80]}' it must be"
            )
        result = t.result
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or isinstance(result, bool)
            or not isinstance(result, (int, float))
            or not math.isclose(float(result), float(value), rel_tol=1e-9, abs_tol=1e-12)
        ):
            raise BundleError(
                f"results/trials.json: trial {t.id[:80]} reports {exp.metric} {result!r}, but "
                f"its recipe reported {value!r} (edited)"
            )
    return Rescored(
        False,
        0,
        f"task '{exp.task[:80]}' was evaluated by the recipe on data fairtrial never held: "
        "there are no test labels to re-score against, so the results are as the recipe "
        "reported them",
    )
