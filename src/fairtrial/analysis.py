"""From the ledger's per-seed results to the experiment's result document (DESIGN.md's JSON).

Per arm: how many trials finished and failed, the per-seed values, mean, sd and a t-interval of
the mean. Comparisons: each arm against the baseline and each ablation against the arm it was
cut from, as the mean *paired* difference over the seeds both finished (signed so that positive
is better in the metric's direction) with its paired t-interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fairtrial.ledger import ExperimentRow, Ledger, TrialRow

CONFIDENCE = 0.95


def _t_interval(values: np.ndarray[Any, Any], confidence: float) -> list[float] | None:
    from scipy import stats

    n = len(values)
    if n < 2:
        return None
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return [mean - half, mean + half]


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _arm_summary(trials: list[TrialRow], confidence: float) -> dict[str, Any]:
    done = sorted((t for t in trials if t.status == "finished"), key=lambda t: t.seed)
    values = np.array([t.result for t in done], dtype=float)
    walls = [t.wall_time for t in trials if t.wall_time is not None and t.status == "finished"]
    out: dict[str, Any] = {
        "n": len(done),
        "failed": sum(t.status in ("failed", "diverged") for t in trials),
        "diverged": sum(t.status == "diverged" for t in trials),
        "pending": sum(t.status not in ("finished", "failed", "diverged") for t in trials),
        "seeds": [t.seed for t in done],
        "values": [_r(v) for v in values.tolist()],
        "mean": _r(float(values.mean())) if len(values) else None,
        "sd": _r(float(values.std(ddof=1))) if len(values) > 1 else None,
        "interval": [_r(v) for v in iv] if (iv := _t_interval(values, confidence)) else None,
        "compute": {
            "wall_time_mean_s": _r(float(np.mean(walls)), 4) if walls else None,
            "wall_time_total_s": _r(float(np.sum(walls)), 4) if walls else None,
        },
        "failures": [
            {"seed": t.seed, "status": t.status, "reason": t.error}
            for t in trials
            if t.status in ("failed", "diverged")
        ],
    }
    return out


def _compare(
    arm: str, against: str, by_arm: dict[str, list[TrialRow]], sign: float, confidence: float
) -> dict[str, Any]:
    a = {t.seed: t.result for t in by_arm.get(arm, []) if t.status == "finished"}
    b = {t.seed: t.result for t in by_arm.get(against, []) if t.status == "finished"}
    seeds = sorted(set(a) & set(b))
    diffs: np.ndarray[Any, np.dtype[np.float64]] = np.array(
        [sign * (float(a[s] or 0.0) - float(b[s] or 0.0)) for s in seeds], dtype=np.float64
    )
    iv = _t_interval(diffs, confidence)
    return {
        "arm": arm,
        "against": against,
        "n_pairs": len(seeds),
        "effect": _r(float(diffs.mean())) if len(diffs) else None,
        "sd_diff": _r(float(diffs.std(ddof=1))) if len(diffs) > 1 else None,
        "interval": [_r(v) for v in iv] if iv else None,
        "wins": int(np.sum(diffs > 0)),
        "losses": int(np.sum(diffs < 0)),
        "ties": int(np.sum(diffs == 0)),
    }


def analyze(ledger: Ledger, exp: ExperimentRow, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The result document of one experiment (stable keys; see DESIGN.md)."""
    trials = ledger.trials(exp.id)
    by_arm: dict[str, list[TrialRow]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    arm_rows = exp.arms["arms"]
    sign = 1.0 if exp.direction == "max" else -1.0
    arms = {
        a["name"]: {
            **_arm_summary(by_arm.get(a["name"], []), confidence),
            "kind": a["kind"],
            "components": a["components"],
        }
        for a in arm_rows
    }
    comparisons = [
        _compare(a["name"], "baseline", by_arm, sign, confidence)
        for a in arm_rows
        if a["kind"] == "arm"
    ]
    ablations = []
    for ab in exp.arms["ablations"]:
        comp = _compare(ab["arm"], ab["as"], by_arm, sign, confidence)
        rest = {k: v for k, v in comp.items() if k not in ("arm", "against")}
        ablations.append(
            {"arm": ab["arm"], "removed": ab["removed"], "ablation_arm": ab["as"], **rest}
        )
    prov: dict[str, Any] = {}
    prov_ids = sorted({t.provenance_id for t in trials if t.provenance_id})
    if prov_ids:
        p = ledger.provenance(prov_ids[-1])
        git = p.get("git", {})
        prov = {
            "fairtrial": p.get("fairtrial"),
            "python": p.get("python"),
            "os": p.get("os"),
            "cpu": p.get("cpu"),
            "cpu_count": p.get("cpu_count"),
            "gpus": p.get("gpus"),
            "git_commit": git.get("commit"),
            "git_dirty": git.get("dirty"),
            "packages": len(p.get("packages", {})),
            "run": p.get("run"),
            "records": len(prov_ids),
        }
    return {
        "experiment": {
            "id": exp.id,
            "name": exp.name,
            "task": exp.task,
            "metric": exp.metric,
            "direction": exp.direction,
            "spec_hash": exp.spec_hash,
            "preregistered": None,
            "task_checksum": exp.task_checksum,
            "seeds": exp.seeds,
            "root_seed": exp.root_seed,
            "claim": exp.spec.get("hypothesis", {}).get("claim", ""),
            "trials": len(trials),
            "test_evaluations": len(ledger.test_evaluations(exp.id)),
        },
        "arms": arms,
        "comparisons": comparisons,
        "ablations": ablations,
        "provenance": prov,
        "settings": {
            "confidence": confidence,
            "arm_interval": "Student t interval of the mean over finished seeds",
            "effect": "mean paired difference over seeds both arms finished, "
            "positive = better in the metric's direction",
            "effect_interval": "paired Student t interval",
            "failures": "failed and diverged trials are counted per arm, not averaged in",
        },
    }
