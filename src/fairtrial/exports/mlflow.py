"""``fairtrial export --to mlflow``: an experiment's trials as MLflow runs, with its report.

One MLflow experiment per fairtrial experiment, named after it. In it:

* one run per trial (its latest attempt): params are the arm's config and the trial's seeds
  (:func:`fairtrial.exports.trials.params_of`), metrics the series it logged, with their
  steps, and its result under the experiment's metric (at the trial's last step, so it is
  the series' last point), tags its arm, seed, status, ids and its arm's verdict against the
  baseline; its status is FINISHED, or FAILED for a failed or diverged trial;
* one parent run per arm (``mlflow.parentRunId``: the trial runs nest under it in MLflow's
  UI), tagged with the arm's verdict;
* one ``report`` run with the report (Markdown, HTML) and the results (JSON) as artifacts.
  The report is of the whole experiment (every arm against the baseline), so it is kept once,
  beside the arms rather than in one of them.

Exporting again makes only what is missing: a trial's run is found by its trial id and
attempt tags (the live mirror's runs too) and left as it is, its verdict tags brought up to
date; a run an interrupted export or mirror left unfinished is replaced. Trials that have not
ended wait for a later export. ``fairtrial analyze mlflow:NAME --arm-param arm`` reads the
trial runs back.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairtrial.exports import mlflowkit as kit
from fairtrial.exports.trials import (
    RUN_STATUS,
    TAG,
    Exported,
    Unit,
    exported_trials,
    last_step,
    params_of,
    points_of,
    report_files,
    units_of,
)

if TYPE_CHECKING:
    from fairtrial.analysis import Options
    from fairtrial.ledger import ExperimentRow, Ledger, TrialRow

#: seconds after its trial ended that an unfinished run counts as left behind (a live
#: mirror ends its runs within about a second)
STALE_SECONDS = 60.0
VERDICT = f"{TAG}verdict"
AGAINST = f"{TAG}verdict_against"


def export_mlflow(
    ledger: Ledger,
    exp: ExperimentRow,
    *,
    tracking_uri: str | None = None,
    options: Options | None = None,
) -> Exported:
    """Export ``exp`` to MLflow at ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``, else
    MLflow's own default); see the module's docstring."""
    from fairtrial.analysis import Options
    from fairtrial.analysis.document import analyze

    t0 = time.perf_counter()
    client, uri = kit.connect(tracking_uri, "Exporting to MLflow")
    doc = analyze(ledger, exp, options or Options())
    units = units_of(ledger, exp, doc)
    with kit.failing_as_one_line(uri):
        mexp, name = kit.experiment(client, exp.name, exp.id)
        out = Exported(f"MLflow experiment '{name}' at {uri}", exp.name)
        have = kit.trial_runs(client, mexp)
        parents = kit.arm_runs(client, mexp)
        for unit in units:
            trials, waiting = exported_trials(ledger, unit)
            out.waiting += waiting
            for trial in trials:
                run = have.get((trial.id, trial.attempt))
                if run is not None and not _left_behind(run, trial):
                    _refresh(client, run, unit, trial.arm)
                    out.already += 1
                    continue
                if run is not None:
                    client.delete_run(run.info.run_id)
                    out.replaced += 1
                key = (unit.task, trial.arm)
                if key not in parents:
                    parents[key] = kit.new_arm_run(client, mexp, exp.id, trial.arm, unit.task)
                out.points += _send_trial(client, ledger, mexp, parents[key], unit, trial)
                out.made += 1
        verdicts = {(u.task, a): v for u in units for a, v in u.verdicts.items()}
        for key, run_id in parents.items():
            verdict, against = verdicts.get(key, ("none", ""))
            kit.send(client, run_id, tags={VERDICT: verdict, AGAINST: against})
            client.set_terminated(run_id, "FINISHED")
        report = _report(client, ledger, exp, mexp, doc)
    out.then = f"the report and results.json are in run {report} ('report')"
    out.seconds = time.perf_counter() - t0
    return out


def _left_behind(run: Any, trial: TrialRow) -> bool:
    """A run still RUNNING of a trial that ended a while ago: an export or mirror stopped
    before ending it."""
    ended = trial.finished_at or 0.0
    return run.info.status == "RUNNING" and time.time() - ended > STALE_SECONDS


def _refresh(client: Any, run: Any, unit: Unit, arm: str) -> None:
    """Bring a trial run's verdict tags up to date (more trials may have ended since)."""
    verdict, against = unit.verdicts.get(arm, ("none", ""))
    tags = run.data.tags
    if tags.get(VERDICT) != verdict or tags.get(AGAINST, "") != against:
        kit.send(client, run.info.run_id, tags={VERDICT: verdict, AGAINST: against})


def _send_trial(
    client: Any, ledger: Ledger, mexp: str, parent: str, unit: Unit, trial: TrialRow
) -> int:
    """One trial's run, made and ended; how many points it holds."""
    from mlflow.entities import Metric

    start = int((trial.started_at or trial.finished_at or time.time()) * 1000)
    end = int((trial.finished_at or time.time()) * 1000)
    tags = kit.trial_tags(
        unit.experiment_id, trial.id, trial.attempt, trial.arm, trial.seed, trial.status, unit.task
    )
    # the identifying tags go with the run itself: an export stopped halfway finds it again
    run = client.create_run(mexp, start_time=start, tags={**tags, kit.PARENT: parent})
    run_id = run.info.run_id
    points = points_of(ledger, trial)
    metrics = kit.metric_list(points, start)
    if trial.result is not None:
        metrics.append(Metric(kit.key_of(unit.metric), trial.result, end, last_step(points)))
    verdict, against = unit.verdicts.get(trial.arm, ("none", ""))
    more = {VERDICT: verdict, AGAINST: against}
    if trial.error:
        more[f"{TAG}error"] = trial.error
    params = params_of(trial.config, trial.arm, trial.seed, trial.seeds, unit.task)
    kit.send(client, run_id, metrics, params, more)
    client.set_terminated(run_id, RUN_STATUS.get(trial.status, "FAILED"), end_time=end)
    return len(metrics)


def _report(client: Any, ledger: Ledger, exp: ExperimentRow, mexp: str, doc: Any) -> str:
    """The experiment's ``report`` run (made once) with the report files as artifacts."""
    found = kit.runs(client, mexp, "report")
    if found:
        run_id = str(found[0].info.run_id)
    else:
        tags = {kit.KIND: "report", kit.EXPERIMENT: exp.id, kit.RUN_NAME: "report"}
        run_id = str(client.create_run(mexp, start_time=kit.now_ms(), tags=tags).info.run_id)
    verdicts = json.dumps(doc.verdicts, sort_keys=True)
    kit.send(client, run_id, tags={f"{TAG}verdicts": verdicts, f"{TAG}name": exp.name})
    with tempfile.TemporaryDirectory(prefix="fairtrial-export-") as folder:
        for name, text in report_files(ledger, exp, doc).items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        client.log_artifacts(run_id, folder)
    client.set_terminated(run_id, "FINISHED")
    return run_id
