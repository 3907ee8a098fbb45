"""The sealed test log: every test evaluation, in an append-only hash chain.

Each ``ctx.evaluate_test`` call reaches the ledger as one row of ``test_evaluations`` and, in
the same transaction, one entry of the ``test_log`` chain (task, task checksum, experiment,
trial, attempt, time, score and the sha256 of the predictions); see
:meth:`fairtrial.ledger.Ledger.add_test_evaluation`. :func:`summary` says how often this
experiment looked at the test split and how many experiments in the ledger looked at the same
task's test split: when several did, picking the best of them on test scores is model selection
on the test set, the leak that Dwork et al. (2015), "The reusable holdout", Science 349(6248),
show inflates results. A trial scores the test split once; selection belongs on validation.
"""

from __future__ import annotations

from typing import Any

from fairtrial.ledger import ExperimentRow, Ledger


def verify(ledger: Ledger) -> dict[str, Any]:
    """Check the chain and cross-check it against stored evaluations and trial results.

    Finds: edited, deleted or inserted log entries (the chain); test evaluations with no log
    entry (written around the log); finished trials whose result is not the logged score.
    Returns ``{"ok", "entries", "head", "problems"}``.
    """
    check = ledger.check_chain("test_log")
    problems = list(check.problems)
    log = ledger.test_log()
    logged = {(e["trial_id"], e["attempt"], e["predictions_sha256"]) for e in log}
    unlogged = [k for k in ledger.test_evaluation_keys() if (k[0], k[1], k[2]) not in logged]
    if unlogged:
        shown = ", ".join(f"{t} (attempt {a})" for t, a, _, _ in unlogged[:5])
        problems.append(
            f"test log: {len(unlogged)} test evaluation(s) missing from the log: {shown}"
        )
    by_trial: dict[tuple[str, int], float] = {
        (e["trial_id"], e["attempt"]): e["score"] for e in log
    }
    before = ledger.test_evaluations_before_log()
    for t in ledger.trials_of_identity(sorted({e["trial_id"] for e in log})):
        if t.status != "finished" or t.result is None or (t.id, t.attempt) in before:
            continue
        score = by_trial.get((t.id, t.attempt))
        if score is None:
            problems.append(f"test log: finished trial {t.id} has no logged evaluation")
        elif score != t.result:
            problems.append(
                f"test log: trial {t.id} reports {t.result!r} but its logged test score "
                f"is {score!r}: the result was changed after it was scored"
            )
    return {"ok": not problems, "entries": check.entries, "head": check.head, "problems": problems}


def excerpt(ledger: Ledger, experiment_id: str) -> list[dict[str, Any]]:
    """The log entries of one experiment's trials, with their chain hashes (what bundles
    carry); a trial reused from another experiment brings the entry it was logged with."""
    mine = {t.id for t in ledger.trials(experiment_id)}
    return [e for e in ledger.test_log() if e["trial_id"] in mine]


def summary(ledger: Ledger, exp: ExperimentRow) -> dict[str, Any]:
    """What the report shows about test-split access for ``exp``.

    Keys: ``evaluations`` (log entries of this experiment), ``trials`` (distinct trials that
    scored the test split), ``repeated`` (trials that scored it more than once: retried
    attempts), ``experiments_on_task`` (experiments in this ledger that scored the same task's
    test split, same checksum, this one included), ``other_experiments`` (how many of them are
    others: a count, never their names, since bundles carry this summary and the user's other
    experiments may be unpublished; ``fairtrial status`` lists them locally),
    ``chain_ok``, ``chain_problems``, ``head`` (the chain's head hash) and ``warning`` (text, or
    None).
    """
    log = ledger.test_log()
    trial_ids = {t.id for t in ledger.trials(exp.id)}
    mine = [e for e in log if e["trial_id"] in trial_ids]
    per_trial: dict[str, int] = {}
    for e in mine:
        per_trial[e["trial_id"]] = per_trial.get(e["trial_id"], 0) + 1
    # an experiment is another look at the test split only for trials it did not share
    same_task = {
        e["experiment_id"]
        for e in log
        if e["task"] == exp.task
        and e["task_checksum"] == exp.task_checksum
        and e["trial_id"] not in trial_ids
    } | ({exp.id} if mine else set())
    others = sorted(same_task - {exp.id})
    check = verify(ledger)
    warnings = []
    if others:
        warnings.append(
            f"{len(others)} other experiment(s) in this ledger have evaluated the test split "
            f"of '{exp.task}' (fairtrial status lists them): if any choice among them was made "
            "on test scores, model selection leaked into the test set; choose on the "
            "validation split and report the test score of the chosen one only"
        )
    repeated = sorted(t for t, n in per_trial.items() if n > 1)
    if repeated:
        warnings.append(
            f"{len(repeated)} trial(s) scored the test split more than once (retried attempts)"
        )
    if not check["ok"]:
        warnings.append("the sealed test log fails its integrity check: " + check["problems"][0])
    unsealed = sum(tid in trial_ids for tid, _ in ledger.test_evaluations_before_log())
    if unsealed:
        warnings.append(
            f"{unsealed} test evaluation(s) of this experiment predate the sealed test log "
            "(made by an older fairtrial): they are stored but not chained"
        )
    return {
        "evaluations": len(mine),
        "trials": len(per_trial),
        "repeated": repeated,
        "experiments_on_task": len(same_task),
        "other_experiments": len(others),
        "chain_ok": check["ok"],
        "chain_problems": check["problems"],
        "head": check["head"],
        "before_log": unsealed,
        "warning": "; ".join(warnings) or None,
    }
