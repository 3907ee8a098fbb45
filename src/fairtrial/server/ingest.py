"""From an uploaded bundle to what the registry stores: verified, re-analysed, never executed.

:func:`ingest` reads the bundle with :func:`fairtrial.bundle.read_bundle` (every member checked
before anything is extracted, manifest and cross-member checks), then

* checks that the analysis the uploader sent reports the per-seed results of
  ``results/trials.json`` (which the sealed test log already vouches for);
* re-analyses those results with the registry's own settings (``Options()``: failures dropped,
  10,000 resamples, seed 0), so every leaderboard entry was judged the same way, and records
  where the uploaded verdicts differ;
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
from typing import Any

from fairtrial import meter
from fairtrial.analysis import (
    Hypothesis,
    analyze_scores,
    arm_summary,
    curves_from_points,
    disagreement_table,
    majority_votes,
    seed_blind_arms,
)
from fairtrial.bundle import Limits, read_bundle
from fairtrial.errors import BundleError
from fairtrial.ledger import ExperimentRow, TrialRow
from fairtrial.report import html as report_html


@dataclass
class Ingested:
    """Rows for the registry's tables, ready to insert (see :mod:`fairtrial.server.schema`)."""

    sha256: str
    content: bytes
    experiment: dict[str, Any]
    entries: list[dict[str, Any]]
    trials: list[dict[str, Any]]


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


def _fig(compute: Mapping[str, Any], name: str) -> float | None:
    f = (compute.get("figures") or {}).get(name) or {}
    v = f.get("mean")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _total(compute: Mapping[str, Any], name: str) -> float | None:
    f = (compute.get("figures") or {}).get(name) or {}
    v = f.get("total")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _reanalyze(
    exp: ExperimentRow,
    trials: list[TrialRow],
    uploaded: Mapping[str, Any],
    preds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The registry's own analysis of the bundle's results; raises when the uploaded analysis
    reports numbers that the trials do not hold."""
    hyp = Hypothesis.from_spec(exp.spec)
    by_arm: dict[str, list[TrialRow]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    up_arms = uploaded.get("arms") or {}
    arms: dict[str, Any] = {}
    for a in exp.arms["arms"]:
        name = a["name"]
        summary = arm_summary(by_arm.get(name, []), 1.0 - hyp.alpha)
        sent = up_arms.get(name) or {}
        sent_values = dict(zip(sent.get("seeds") or [], sent.get("values") or [], strict=False))
        for seed, value in zip(summary["seeds"], summary["values"], strict=True):
            got = sent_values.get(seed)
            if got is None or not math.isclose(
                float(got), float(value), rel_tol=1e-9, abs_tol=1e-12
            ):
                raise BundleError(
                    f"results/analysis.json: arm '{name}' seed {seed} reports {got!r}, but "
                    f"results/trials.json holds {value!r} (edited)"
                )
        compute = sent.get("compute") if isinstance(sent.get("compute"), dict) else {}
        arms[name] = {
            **summary,
            "kind": a["kind"],
            "components": a["components"],
            "compute": compute,
        }
    scores = {name: dict(zip(a["seeds"], a["values"], strict=True)) for name, a in arms.items()}
    # the same seed-blindness check as the analysis, on the bundle's own predictions
    finished = {t.id: t for t in trials if t.status == "finished"}
    hashes: dict[str, dict[int, str]] = {}
    for trial_id, p in (preds or {}).items():
        row = finished.get(trial_id)
        if row is not None and isinstance(p, dict) and p.get("attempt") == row.attempt:
            blob = json.dumps(p.get("predictions")).encode()
            hashes.setdefault(row.arm, {})[row.seed] = hashlib.sha256(blob).hexdigest()
    deterministic = bool((exp.spec.get("experiment") or {}).get("deterministic"))
    blind = (
        {}
        if deterministic
        else seed_blind_arms(dict(scores), {a: h for a, h in hashes.items() if a in scores})
    )
    for name, a in arms.items():
        a["seed_blind"] = name in blind
    comparisons, ablations, interactions = analyze_scores(
        scores, exp.arms, exp.direction, hyp, seed_blind=blind, deterministic=deterministic
    )
    for c in comparisons + ablations:
        ratios = meter.cost_ratios(arms[c["arm"]]["compute"], arms[c["against"]]["compute"])
        c["cost"] = ratios
        c["cost_text"] = meter.format_cost_ratios(ratios)
    sent_verdicts = {
        (c.get("arm"), c.get("against")): c.get("verdict")
        for c in list(uploaded.get("comparisons") or []) + list(uploaded.get("ablations") or [])
        if isinstance(c, dict)
    }
    differences = [
        f"{c['arm']} vs {c['against']}: uploaded '{sent_verdicts.get((c['arm'], c['against']))}'"
        f", registry '{c['verdict']}'"
        for c in comparisons + ablations
        if sent_verdicts.get((c["arm"], c["against"])) != c["verdict"]
    ]
    doc = dict(uploaded)
    doc.update(arms=arms, comparisons=comparisons, ablations=ablations, interactions=interactions)
    # the code version is read from the trials, not taken from the uploaded analysis
    experiment = dict(doc.get("experiment") or {})
    experiment["code"] = sorted({t.code_hash or "unrecorded" for t in trials if t.attempt > 0})
    doc["experiment"] = experiment
    doc["registry"] = {
        "reanalysed": "the registry re-ran the analysis on the bundle's per-seed results "
        "(failures dropped, 10000 resamples, seed 0)",
        "verdict_differences": differences,
    }
    return doc


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
        except (ValueError, TypeError):
            raise BundleError(
                "results/metrics.jsonl: a line is not [trial, attempt, step, time, name, value]"
            ) from None
        t = finished.get((trial_id, attempt))
        if t is not None and isinstance(value, (int, float)):
            points.append((t.arm, t.seed, step, str(name), float(value)))
    return curves_from_points(points, exp)


def _hardware(doc: Mapping[str, Any]) -> tuple[str, str]:
    hw = (doc.get("compute") or {}).get("hardware") or {}
    text = str(hw.get("text") or (doc.get("provenance") or {}).get("cpu") or "unknown")[:300]
    machines = hw.get("machines") or []
    gpu = any(int(m.get("gpu_count") or 0) > 0 for m in machines if isinstance(m, dict))
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
        capture = b.capture()
        sha = b.sha256
        fairtrial_version = str(b.manifest.get("fairtrial") or "")[:32]
    if not isinstance(uploaded, dict):
        raise BundleError("results/analysis.json: not an analysis document")
    doc = _reanalyze(exp, trials, uploaded, preds if isinstance(preds, dict) else None)
    table, disagree, why = _predictions(exp, trials, preds if isinstance(preds, dict) else None)
    doc["predictions"] = disagree
    doc["registry"]["predictions"] = why
    curves = _curves(exp, trials, metrics)
    figures = report_html.figures(doc, curves)
    hardware, device = _hardware(doc)
    key = baseline_key(exp)
    e = exp.spec["experiment"]
    recipe = str(e.get("recipe") or e.get("command") or "")[:300]
    verdicts = ", ".join(f"{c['arm']}: {c['verdict']}" for c in doc["comparisons"])[:300]
    arms_compute = {n: a["compute"] for n, a in doc["arms"].items()}
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
                *doc["arms"],
            ]
        ).lower(),
        "doc_json": json.dumps(doc, allow_nan=False, default=str),
        "figures_json": json.dumps(figures),
        "predictions_json": json.dumps(table) if table else None,
        "capture_json": json.dumps(capture, default=str),
    }
    verdict = {c["arm"]: c for c in doc["comparisons"]}
    sign = 1.0 if exp.direction == "max" else -1.0
    entries = []
    for name, a in doc["arms"].items():
        if a["kind"] not in ("baseline", "arm"):
            continue
        c = verdict.get(name) or {}
        low, high = (a.get("interval") or [None, None])[:2]
        worse_end = low if exp.direction == "max" else high
        entries.append(
            {
                "experiment": sha,
                "task": experiment["task"],
                "name": experiment["name"],
                "arm": name[:200],
                "kind": a["kind"],
                "metric": exp.metric,
                "direction": exp.direction,
                "n": int(a.get("n") or 0),
                "failed_trials": int(a.get("failed") or 0) + int(a.get("diverged") or 0),
                "mean": a.get("mean"),
                "low": low,
                "high": high,
                "score": None if worse_end is None else sign * float(worse_end),
                "effect": c.get("effect"),
                "effect_low": (c.get("interval") or [None, None])[0],
                "effect_high": (c.get("interval") or [None, None])[1],
                "verdict": c.get("verdict"),
                "p_adjusted": c.get("p_adjusted"),
                "wall_time_mean_s": _fig(a["compute"], "wall_time"),
                "flops_mean": _fig(a["compute"], "flops"),
                "energy_mean_j": _fig(a["compute"], "energy"),
                "hardware": hardware,
                "device": device,
                "baseline_key": key,
                "uploaded_at": now,
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
    return Ingested(sha, content, experiment, entries, trial_rows)


def _sum(values: Any) -> float | None:
    got = [v for v in values if v is not None]
    return float(sum(got)) if got else None
