"""One claim over several tasks: each task's analysis as for any experiment, then every
comparison judged across them (Demšar 2006; Benavoli et al. 2016): the Wilcoxon signed-rank
test on the per-task effects (exact, zeros as Demšar handles them), the sign test alongside,
an aggregate effect with a stratified paired bootstrap interval (seeds resampled within
tasks), wins / ties / losses from the per-task verdicts, Holm over the arms; with three or
more arms, the Friedman test and every pair's Wilcoxon with Holm (the critical-difference
diagram's groups). Pure: the per-task analyses in, the across-task part out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fairtrial.across import AcrossComparison, AcrossTasks, TaskEffect
from fairtrial.analysis.verdicts import Options
from fairtrial.record import Hypothesis, sign
from fairtrial.results import Analysis
from fairtrial.stats import holm
from fairtrial.stats.across import pairwise_wilcoxon_holm, sign_test, wilcoxon_signed_rank
from fairtrial.stats.task_effects import stratified_paired_bootstrap

ACROSS_RULE = (
    "better: Holm-adjusted Wilcoxon p < alpha over the tasks and the aggregate effect's "
    "interval above 0; worse: likewise below 0; equivalent: the aggregate effect's interval "
    "within ±smallest_effect; invalid: the comparison is invalid on a task; else inconclusive"
)


def _paired(doc: Analysis, arm: str, against: str, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed scores (against, arm) on the seeds both finished, signed so higher is better."""
    a, b = doc.arms[against], doc.arms[arm]
    av = {s: v for s, v in zip(a.seeds, a.values, strict=False) if v is not None}
    bv = {s: v for s, v in zip(b.seeds, b.values, strict=False) if v is not None}
    seeds = sorted(set(av) & set(bv))
    return (np.array([k * av[s] for s in seeds], dtype=float),
            np.array([k * bv[s] for s in seeds], dtype=float))  # fmt: skip


def across_tasks(
    per_task: Mapping[str, Analysis],
    arms: list[str],
    direction: str,
    hyp: Hypothesis,
    options: Options = Options(),
    suite: str | None = None,
) -> AcrossTasks:
    """Every arm of ``arms`` against the baseline over the tasks of ``per_task``."""
    k = sign(direction)
    tasks = list(per_task)
    notes: list[str] = []
    comparisons: list[AcrossComparison] = []
    raw: list[dict[str, Any]] = []
    for i, arm in enumerate(arms):
        effects: list[TaskEffect] = []
        pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        invalid = []
        for task, doc in per_task.items():
            c = doc.comparison(arm)
            effects.append(TaskEffect(task=task, effect=c.effect, interval=c.interval,
                                      n_pairs=c.n_pairs, verdict=c.verdict))  # fmt: skip
            if c.verdict == "invalid" or c.effect is None:
                invalid.append(task)
                continue
            pairs[task] = _paired(doc, arm, "baseline", k)
        diffs = [e.effect for e in effects if e.task in pairs and e.effect is not None]
        entry: dict[str, Any] = {"arm": arm, "effects": effects, "invalid": invalid}
        if len(diffs) >= 2:
            w = wilcoxon_signed_rank(diffs)
            entry["wilcoxon"] = w.to_dict()
            entry["sign"] = sign_test(diffs).to_dict()
            if all(len(a) >= 2 for a, _ in pairs.values()):
                rng = np.random.default_rng([options.seed, 7919, i])
                agg = stratified_paired_bootstrap(
                    pairs, rng=rng, n_resamples=options.n_resamples, confidence=hyp.confidence
                ).to_dict()
            else:  # one seed on a task: nothing to resample within it
                agg = {"mean": float(np.mean(diffs)), "mean_low": None, "mean_high": None,
                       "iqm": None, "iqm_low": None, "iqm_high": None,
                       "method": "mean of the per-task effects; no interval: a task has one "
                                 "seed, so there is nothing to resample within it"}  # fmt: skip
            entry["aggregate"] = {**agg, "normalise": "none (the metric's units)"}
        raw.append(entry)
    adjusted = holm([e["wilcoxon"]["pvalue"] if "wilcoxon" in e else 1.0 for e in raw])
    for entry, p_adj in zip(raw, adjusted, strict=True):
        effects = entry["effects"]
        # a task's outcome: its verdict, or with too few seeds for one, the sign of its effect
        wins = sum(_outcome(e) > 0 for e in effects)
        losses = sum(_outcome(e) < 0 for e in effects)
        verdict, reason = _verdict(entry, float(p_adj), hyp, len(arms))
        comparisons.append(
            AcrossComparison(
                arm=entry["arm"], against="baseline", n_tasks=len(effects), tasks=effects,
                wins=wins, ties=len(effects) - wins - losses, losses=losses,
                wilcoxon=entry.get("wilcoxon"), sign_test=entry.get("sign"),
                aggregate=entry.get("aggregate"),
                p_adjusted=float(p_adj) if "wilcoxon" in entry else None,
                verdict=verdict, reason=reason,
            )
        )  # fmt: skip
    min_p = next((e["wilcoxon"]["min_p"] for e in raw if "wilcoxon" in e), None)
    if min_p is not None and min_p >= hyp.alpha / max(len(arms), 1):
        notes.append(
            f"with {len(tasks)} tasks the exact two-sided Wilcoxon test cannot go below "
            f"p = {min_p:.4g}: no claim across these tasks can be better or worse at alpha "
            f"{hyp.alpha:g}"
            + (f" / {len(arms)} arms" if len(arms) > 1 else "")
            + "; add tasks (chosen before looking) to be able to decide"
        )
    notes.append(
        "the task set is part of the spec and its preregistration: it must be fixed before "
        "looking at any result, or the claim across tasks means nothing"
    )
    friedman: dict[str, Any] | None = None
    pairwise: list[dict[str, Any]] = []
    cliques: list[list[str]] = []
    names = ["baseline", *arms]
    if len(names) >= 3 and len(tasks) >= 2:
        matrix = np.array(
            [[k * float(per_task[t].arms[a].mean or 0.0) for a in names] for t in tasks]
        )
        cd = pairwise_wilcoxon_holm(matrix, names, hyp.alpha)
        friedman = {**cd.friedman.to_dict(), "avg_ranks_sorted": dict(zip(cd.names, cd.avg_ranks,
                                                                         strict=True))}  # fmt: skip
        pairwise = [p.to_dict() for p in cd.pairs]
        cliques = [list(c) for c in cd.cliques]
    return AcrossTasks(
        tasks=tasks, suite=suite, comparisons=comparisons, friedman=friedman,
        pairwise=pairwise, cliques=cliques, notes=notes,
        method=(
            "per task: the experiment's paired analysis; across tasks: Wilcoxon signed-rank "
            "test on the per-task mean paired effects (exact up to 25 tasks; zero effects "
            "split between the signs, an odd one dropped, as Demšar 2006), sign test "
            "alongside, Holm over the arms; aggregate effect: mean and IQM of the per-task "
            "effects with a stratified paired bootstrap percentile interval (seeds resampled "
            "within each task); wins / ties / losses count the per-task verdicts (ties: "
            "equivalent or inconclusive)"
            + ("; three or more arms: Friedman test and every pair's Wilcoxon with Holm"
               if friedman is not None else "")
            + f". Verdict: {ACROSS_RULE}"
        ),
    )  # fmt: skip


def combine(
    per_task: Mapping[str, Analysis],
    *,
    name: str,
    direction: str,
    hyp: Hypothesis,
    options: Options = Options(),
    suite: str | None = None,
    experiment: Mapping[str, Any] | None = None,
) -> Analysis:
    """The document of a claim over several tasks: each task's analysis under ``tasks`` and
    every comparison across them under ``across``. ``experiment``: summary fields to set."""
    from fairtrial.results import ExperimentSummary

    first = next(iter(per_task.values()))
    arms = [c.arm for c in first.comparisons]
    across = across_tasks(per_task, arms, direction, hyp, options, suite)
    summary = {
        **first.experiment.to_dict(),
        "name": name,
        "task": ", ".join(per_task),
        "trials": sum(d.experiment.trials or 0 for d in per_task.values()),
        "reused": sum(d.experiment.reused or 0 for d in per_task.values()),
        "code": sorted({c for d in per_task.values() for c in d.experiment.code}),
        "preregistered": None,
        **(experiment or {}),
    }
    return Analysis(
        experiment=ExperimentSummary.from_dict(summary),
        settings=first.settings,
        compute=first.compute,
        provenance=first.provenance,
        across=across,
        tasks=dict(per_task),
    )


def _outcome(e: TaskEffect) -> int:
    """+1 when the arm won the task, -1 when it lost, 0 for a tie."""
    if e.verdict is not None:
        return {"better": 1, "worse": -1}.get(e.verdict, 0)
    return 0 if e.effect is None or e.effect == 0 else (1 if e.effect > 0 else -1)


def _verdict(entry: dict[str, Any], p_adj: float, hyp: Hypothesis, m: int) -> tuple[str, str]:
    if entry["invalid"]:
        return "invalid", f"invalid on task(s) {', '.join(entry['invalid'])}"
    if "wilcoxon" not in entry:
        return "inconclusive", "fewer than 2 tasks with a paired effect"
    agg = entry["aggregate"]
    low, high = agg["mean_low"], agg["mean_high"]
    bounded = low is not None and high is not None
    if not bounded:  # no interval: the direction of the mean decides, equivalence cannot
        low = high = agg["mean"]
        iv = f"aggregate {agg['mean']:+.4g} (no interval: one seed on a task)"
    else:
        iv = f"aggregate {agg['mean']:+.4g} [{low:+.4g}, {high:+.4g}]"
    if p_adj < hyp.alpha and low > 0:
        return "better", f"Wilcoxon p = {p_adj:.3g} (Holm) < {hyp.alpha:g}; {iv}"
    if p_adj < hyp.alpha and high < 0:
        return "worse", f"Wilcoxon p = {p_adj:.3g} (Holm) < {hyp.alpha:g}; {iv}"
    eps = hyp.smallest_effect
    if bounded and eps is not None and -eps < low and high < eps:
        return "equivalent", f"{iv} within ±{eps:g}"
    why = f"Wilcoxon p = {p_adj:.3g} (Holm)"
    if entry["wilcoxon"]["min_p"] >= hyp.alpha / m:
        why += f", and it cannot go below {entry['wilcoxon']['min_p']:.4g} with these tasks"
    return "inconclusive", f"{why}; {iv}"
