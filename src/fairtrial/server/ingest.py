"""From an uploaded bundle to what the registry stores: verified, re-analysed, never executed.

:func:`ingest` reads the bundle with :func:`fairtrial.bundle.read_bundle` (every member checked
before anything is extracted, manifest and cross-member checks), then

* checks the type of every field it uses, so a malformed bundle is refused naming the field;
* checks the experiment's identity (its id is its spec's hash) and, for built-in tasks,
  re-scores every finished trial's stored test predictions against the task's own test labels
  (:mod:`fairtrial.rescore`): a result they do not give is refused; results that cannot be
  re-scored (the uploader's own task code, missing predictions) are stored as *unverifiable*;
* checks that the analysis the uploader sent reports the per-seed results of
  ``results/trials.json``;
* re-analyses those results with the function ``fairtrial report`` uses
  (:func:`fairtrial.analysis.document.build`) and the registry's own settings (``Options()``:
  failures dropped, 10,000 resamples, seed 0), so every leaderboard entry was judged the same
  way, and records where the uploaded verdicts differ;
* for built-in tasks whose data checksum matches, loads the task here (fairtrial's own code,
  never the bundle's) to get the truth and the inputs for the predictions demo;
* draws the report's figures (inline SVG) once, so pages only read them.

Nothing from the bundle is imported or run: recipe files are stored as bytes in the archive.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from fairtrial import rescore
from fairtrial.analysis import (
    Options,
    arm_summary,
    curves_from_points,
    disagreement_table,
    majority_votes,
)
from fairtrial.analysis.document import build
from fairtrial.bundle import Limits, read_bundle
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, TrialRow
from fairtrial.record import ExperimentRecord, sign
from fairtrial.report import html as report_html
from fairtrial.results import Analysis, Comparison
from fairtrial.server.upload_checks import _check_rows
from fairtrial.tasks.external import is_external
from fairtrial.typed import ShapeError


@dataclass
class Ingested:
    """Rows for the registry's tables, ready to insert (see :mod:`fairtrial.server.schema`)."""

    sha256: str
    content: bytes
    experiment: dict[str, Any]
    entries: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    #: what the bundle holds, whatever its bytes (:func:`content_key`)
    content_key: str


def content_key(exp: ExperimentRow, trials: list[TrialRow], preds: Mapping[str, Any] | None) -> str:
    """What identifies a bundle's content: the spec hash and every trial's id, arm, seed,
    attempt, status, result and predictions hash. Two bundles with the same key hold the same
    experiment with the same results, however their bytes differ (compression, padding, an
    edited field that is not a result)."""
    rows = []
    for t in trials:
        p = (preds or {}).get(t.id)
        digest = None
        if isinstance(p, Mapping) and p.get("attempt") == t.attempt:
            blob = json.dumps(p.get("predictions"), sort_keys=True)
            digest = hashlib.sha256(blob.encode()).hexdigest()
        rows.append([t.id, t.arm, t.seed, t.attempt, t.status, t.result, digest])
    rows.sort(key=lambda r: json.dumps(r))
    blob = json.dumps({"spec_hash": exp.spec_hash, "trials": rows}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def baseline_key(exp: ExperimentRow) -> str:
    """What makes two experiments' baselines the same: task, metric, recipe and its config."""
    e = exp.spec["experiment"]
    blob = {
        "task": exp.task,
        "metric": exp.metric,
        "recipe": e.get("recipe"),
        "command": e.get("command"),
        "baseline": exp.spec.get("baseline", {}),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _figure(compute: Mapping[str, Any], name: str, key: str) -> float | None:
    figures = compute.get("figures")
    f = figures.get(name) if isinstance(figures, dict) else None
    v = f.get(key) if isinstance(f, dict) else None
    return float(v) if _is_number(v) and math.isfinite(v) else None


def _fig(compute: Mapping[str, Any], name: str) -> float | None:
    return _figure(compute, name, "mean")


def _total(compute: Mapping[str, Any], name: str) -> float | None:
    return _figure(compute, name, "total")


def _compute_of(sent: Any) -> dict[str, Any]:
    """An arm's compute summary as uploaded, with the figures the registry computes from (cost
    ratios, leaderboard columns) kept only where they are numbers."""
    if not isinstance(sent, dict):
        return {"figures": {}}
    figures = sent.get("figures")
    if not isinstance(figures, dict):
        figures = {}
    kept = {
        name: f
        for name, f in figures.items()
        if isinstance(f, dict)
        and all(f.get(k) is None or _is_number(f[k]) for k in ("mean", "total"))
    }
    return {**sent, "figures": kept}


def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _reanalyze(
    exp: ExperimentRow,
    trials: list[TrialRow],
    uploaded: Mapping[str, Any],
    preds: Mapping[str, Any] | None = None,
    costs: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    repeats: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
) -> Analysis:
    """The registry's own analysis of the bundle's results (the function ``fairtrial report``
    uses, with the registry's options); raises when the uploaded analysis reports numbers that
    the trials do not hold."""
    record = ExperimentRecord.from_row(exp)
    up_arms = uploaded.get("arms") or {}
    if not isinstance(up_arms, dict):
        raise BundleError("results/analysis.json: 'arms' is not an object of arm -> summary")
    compute: dict[str, dict[str, Any]] = {}
    for a in record.arms:
        name = a.name
        summary = arm_summary([t for t in trials if t.arm == name], record.hypothesis.confidence)
        sent = up_arms.get(name) or {}
        seeds, values = (
            (sent.get("seeds"), sent.get("values")) if isinstance(sent, dict) else (0, 0)
        )
        if not (isinstance(seeds, list) and isinstance(values, list)):
            raise BundleError(
                f"results/analysis.json: arm '{name[:80]}' has no lists of 'seeds' and 'values'"
            )
        sent_values = dict(zip(map(str, seeds), values, strict=False))
        for seed, value in zip(summary.seeds, summary.values, strict=True):
            got = sent_values.get(str(seed))
            if not _is_number(got) or not math.isclose(
                float(got), float(value or 0.0), rel_tol=1e-9, abs_tol=1e-12
            ):
                raise BundleError(
                    f"results/analysis.json: arm '{name}' seed {seed} reports {got!r}, but "
                    f"results/trials.json holds {value!r} (edited)"
                )
        compute[name] = _compute_of(sent.get("compute"))
    # the same seed-blindness check as the analysis, on the bundle's own predictions
    finished = {t.id: t for t in trials if t.status == "finished"}
    hashes: dict[str, dict[int, str]] = {}
    for trial_id, p in (preds or {}).items():
        row = finished.get(trial_id)
        if row is not None and isinstance(p, dict) and p.get("attempt") == row.attempt:
            blob = json.dumps(p.get("predictions")).encode()
            hashes.setdefault(row.arm, {})[row.seed] = hashlib.sha256(blob).hexdigest()
    sent_doc = _uploaded_parts(uploaded)
    doc = build(
        record,
        trials,
        Options(),
        predictions=hashes,
        compute=compute,
        costs=costs,
        repeats=repeats,
        # what only the uploader's store knew, as uploaded
        experiment={
            k: v
            for k, v in sent_doc.experiment.to_dict().items()
            if k in ("preregistered", "test_log", "arm_isolation", "test_evaluations")
        },
        compute_info=sent_doc.compute.to_dict(),
        provenance=sent_doc.provenance,
        config_reads=sent_doc.config_reads,
        extra=sent_doc.extra,
    )
    sent_verdicts = {
        (str(c.get("arm")), str(c.get("against"))): c.get("verdict")
        for key in ("comparisons", "ablations")
        if isinstance(uploaded.get(key), list)
        for c in uploaded[key]
        if isinstance(c, dict)
    }
    differences = [
        f"{c.arm} vs {c.against}: uploaded '{sent_verdicts.get(c.key)}', registry '{c.verdict}'"
        for c in doc.judged
        if sent_verdicts.get(c.key) != c.verdict
    ]
    registry = {
        "reanalysed": "the registry re-ran the analysis on the bundle's per-seed results "
        "(failures dropped, 10000 resamples, seed 0)",
        "verdict_differences": differences,
    }
    return doc.replace(extra={**doc.extra, "registry": registry})


def _uploaded_parts(uploaded: Mapping[str, Any]) -> Analysis:
    """The parts of the uploaded analysis the registry keeps as they came (what only the
    uploader's store knew), read into the schema; a part of the wrong shape is refused."""
    keep = ("experiment", "compute", "provenance", "config_reads")
    parts = {k: uploaded[k] for k in keep if k in uploaded}
    extra = {k: v for k, v in uploaded.items() if k not in Analysis.__dataclass_fields__}
    try:
        doc = Analysis.from_dict(parts)
    except ShapeError as exc:
        raise BundleError(f"results/analysis.json: {exc}") from None
    for name, value in (("provenance", doc.provenance), ("config_reads", doc.config_reads)):
        if value is not None and not isinstance(value, dict):
            raise BundleError(f"results/analysis.json: '{name}' is not an object")
    return doc.replace(extra=extra)


def _predictions(
    exp: ExperimentRow, trials: list[TrialRow], preds: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """(the predictions table, the disagreements for the report, or why there are none)."""
    if not preds:
        return (
            None,
            None,
            "the bundle holds no test predictions (made before fairtrial 0.1 kept them)",
        )
    if is_external(exp.task):
        return (
            None,
            None,
            f"task '{exp.task}' was evaluated by the recipe: it holds no test predictions",
        )
    if ":" in exp.task:
        return (
            None,
            None,
            (
                f"task '{exp.task}' is defined by the uploader's code, which the registry never "
                "runs, so it has no inputs or truth to show"
            ),
        )
    from fairtrial.tasks import get_task

    try:
        task = get_task(exp.task)
    except Exception as exc:  # an unknown built-in name from a newer fairtrial
        return None, None, f"task '{exp.task}' is not built into this registry's fairtrial ({exc})"
    if task.checksum != exp.task_checksum:
        return (
            None,
            None,
            (
                f"task '{exp.task}' data here (checksum {task.checksum[:12]}) differ from the "
                f"experiment's ({exp.task_checksum[:12]})"
            ),
        )
    if task.kind != "classification":
        return None, None, f"task '{exp.task}' is not a classification task"
    by_arm: dict[str, list[Any]] = {}
    for t in sorted(trials, key=lambda t: t.seed):
        p = preds.get(t.id)
        if t.status == "finished" and isinstance(p, dict) and p.get("attempt") == t.attempt:
            if not isinstance(p.get("predictions"), list):
                raise BundleError(
                    f"results/predictions.json: trial {t.id[:80]}'s 'predictions' is not a list"
                )
            by_arm.setdefault(t.arm, []).append(p["predictions"])
    order = [a["name"] for a in exp.arms["arms"] if a["name"] in by_arm]
    n_test = len(task.test_idx)
    for arm in order:
        if any(len(p) != n_test for p in by_arm[arm]):
            raise BundleError(
                f"results/predictions.json: arm '{arm}' has predictions of a length other than "
                f"the task's {n_test} test examples"
            )
    if not order:
        return None, None, "no finished trial recorded test predictions"
    votes = majority_votes(by_arm, order)
    table = {
        "n_test": n_test,
        "truth": [v.item() if hasattr(v, "item") else v for v in task.y[task.test_idx]],
        "arms": {
            a: {
                "labels": [v.item() if hasattr(v, "item") else v for v in votes[a][0]],
                "agreement": [round(float(v), 3) for v in votes[a][1]],
                "seeds": len(by_arm[a]),
            }
            for a in order
        },
    }
    return table, disagreement_table(by_arm, order, task), None


def _curves(exp: ExperimentRow, trials: list[TrialRow], metrics: bytes) -> dict[str, Any]:
    finished = {(t.id, t.attempt): t for t in trials if t.status == "finished"}
    points = []
    for line in metrics.decode().splitlines():
        if not line.strip():
            continue
        try:
            trial_id, attempt, step, _, name, value = json.loads(line)
            t = finished.get((trial_id, attempt))
        except (ValueError, TypeError, RecursionError):
            raise BundleError(
                "results/metrics.jsonl: a line is not [trial, attempt, step, time, name, value]"
            ) from None
        whole = isinstance(step, int) and not isinstance(step, bool)
        if t is not None and _is_number(value) and (step is None or whole):
            points.append((t.arm, t.seed, step, str(name), float(value)))
    return curves_from_points(points, exp)


def _hardware(doc: Mapping[str, Any]) -> tuple[str, str]:
    def obj(v: Any) -> dict[str, Any]:
        return v if isinstance(v, dict) else {}

    hw = obj(obj(doc.get("compute")).get("hardware"))
    text = str(hw.get("text") or obj(doc.get("provenance")).get("cpu") or "unknown")[:300]
    machines = hw.get("machines")
    if not isinstance(machines, list):
        machines = []
    gpu = any(
        _is_number(m.get("gpu_count")) and m["gpu_count"] > 0
        for m in machines
        if isinstance(m, dict)
    )
    return text, "gpu" if gpu else "cpu"


def _prereg_state(status: Mapping[str, Any] | None) -> str:
    if not status:
        return "no"
    if not status.get("chain_ok", True):
        return "broken"
    return "deviations" if status.get("deviations") else "yes"


def ingest(
    path: str | Path, content: bytes, *, limits: Limits | None = None, now: float
) -> Ingested:
    """Verify and analyse the bundle at ``path`` (whose bytes are ``content``); raises
    :class:`BundleError` naming the member when it is unsafe, corrupt, modified or
    inconsistent."""
    with read_bundle(path, limits=limits) as b:
        exp = b.experiment()
        trials = b.trials()
        uploaded = b.json("results/analysis.json")
        files = b.manifest["files"]
        preds = b.json("results/predictions.json") if "results/predictions.json" in files else None
        metrics = b.read_bytes("results/metrics.jsonl") if "results/metrics.jsonl" in files else b""
        prereg_status = b.json("preregistration.json")
        sha = b.sha256
        fairtrial_version = str(b.manifest.get("fairtrial") or "")[:32]
        named = b.manifest.get("experiment")
        _check_rows(exp, trials)
        capture = b.capture()
        sent_compute = uploaded.get("compute") if isinstance(uploaded, dict) else None
        sent_settings = sent_compute.get("settings") if isinstance(sent_compute, dict) else None
        costs = b.costs(trials, sent_settings if isinstance(sent_settings, dict) else None)
        repeats = b.repeats()
    rescore.check_identity(exp)
    if isinstance(named, dict) and named.get("id") != exp.id:
        raise BundleError(
            f"manifest.json: experiment id {str(named.get('id'))[:40]!r} is not experiment.json's "
            f"{exp.id!r}"
        )
    if not isinstance(uploaded, dict):
        raise BundleError("results/analysis.json: not an analysis document")
    if preds is not None and not isinstance(preds, dict):
        raise BundleError(
            "results/predictions.json: expected an object of trial id -> "
            '{"attempt": N, "predictions": [...]}'
        )
    checked = rescore.rescore(exp, trials, preds)
    table, disagree, why = _predictions(exp, trials, preds)
    doc = _reanalyze(exp, trials, uploaded, preds, costs, repeats)
    registry = {**doc.extra["registry"], "predictions": why, "results": checked.as_dict()}
    doc = doc.replace(predictions=disagree, extra={**doc.extra, "registry": registry})
    curves = _curves(exp, trials, metrics)
    figures = report_html.figures(doc, curves)
    hardware, device = _hardware(doc.to_dict())
    key = baseline_key(exp)
    key_of_content = content_key(exp, trials, preds)
    e = exp.spec["experiment"]
    recipe = str(e.get("recipe") or e.get("command") or "")[:300]
    verdicts = ", ".join(f"{c.arm}: {c.verdict}" for c in doc.comparisons)[:300]
    arms_compute = {n: a.compute.to_dict() for n, a in doc.arms.items()}
    experiment = {
        "id": sha,
        "experiment_id": exp.id,
        "name": exp.name[:200],
        "task": exp.task[:200],
        "metric": exp.metric,
        "direction": exp.direction,
        "seeds": exp.seeds,
        "claim": str(exp.spec.get("hypothesis", {}).get("claim") or ""),
        "recipe": recipe,
        "baseline_key": key,
        "uploaded_at": now,
        "fairtrial": fairtrial_version,
        "hardware": hardware,
        "device": device,
        "preregistered": _prereg_state(prereg_status if isinstance(prereg_status, dict) else None),
        "verdicts": verdicts,
        "trials": len(trials),
        "wall_time_total_s": _sum(_total(c, "wall_time") for c in arms_compute.values()),
        "flops_total": _sum(_total(c, "flops") for c in arms_compute.values()),
        "energy_total_j": _sum(_total(c, "energy") for c in arms_compute.values()),
        "replicated": 0,
        "failed": 0,
        "inconclusive": 0,
        "search": " ".join(
            [
                exp.name,
                exp.task,
                recipe,
                str(exp.spec.get("hypothesis", {}).get("claim") or ""),
                *doc.arms,
            ]
        ).lower(),
        "doc_json": json.dumps(doc.to_dict(), allow_nan=False, default=str),
        "figures_json": json.dumps(figures),
        "predictions_json": json.dumps(table) if table else None,
        "capture_json": json.dumps(capture, default=str),
        "verified": int(checked.verified),
        "unverifiable": checked.reason,
        "content_key": key_of_content,
    }
    verdict = {c.arm: c for c in doc.comparisons}
    entries = []
    for name, a in doc.arms.items():
        if a.kind not in ("baseline", "arm"):
            continue
        c = verdict.get(name) or Comparison(arm=name, against="")
        low, high = a.interval or (None, None)
        effect_low, effect_high = c.interval or (None, None)
        # the interval's worse end ranks the arm: its lower end when higher is better
        worse_end = low if sign(exp.direction) > 0 else high
        entries.append(
            {
                "experiment": sha,
                "task": experiment["task"],
                "name": experiment["name"],
                "arm": name[:200],
                "kind": a.kind,
                "metric": exp.metric,
                "direction": exp.direction,
                "n": a.n,
                "failed_trials": a.failed + a.diverged,
                "mean": a.mean,
                "low": low,
                "high": high,
                "score": None if worse_end is None else sign(exp.direction) * float(worse_end),
                "effect": c.effect,
                "effect_low": effect_low,
                "effect_high": effect_high,
                "verdict": c.verdict,
                "p_adjusted": c.p_adjusted,
                "wall_time_mean_s": _fig(arms_compute[name], "wall_time"),
                "flops_mean": _fig(arms_compute[name], "flops"),
                "energy_mean_j": _fig(arms_compute[name], "energy"),
                "hardware": hardware,
                "device": device,
                "baseline_key": key,
                "uploaded_at": now,
                "verified": int(checked.verified),
            }
        )
    trial_rows = [
        {
            "experiment": sha,
            "trial_id": t.id[:300],
            "arm": t.arm[:200],
            "seed": t.seed,
            "attempt": t.attempt,
            "status": t.status,
            "result": t.result if t.result is None or math.isfinite(t.result) else None,
            "wall_time": t.wall_time,
        }
        for t in trials
    ]
    return Ingested(sha, content, experiment, entries, trial_rows, key_of_content)


def _sum(values: Any) -> float | None:
    got = [v for v in values if v is not None]
    return float(sum(got)) if got else None
