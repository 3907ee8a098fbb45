"""The result of an experiment, assembled: one pure function, :func:`build`, and the ledger's
way to feed it, :func:`analyze`.

:func:`build` turns per-seed results (trial rows), the experiment's record and the options into
an :class:`~fairtrial.results.Analysis`. The ledger path (``fairtrial report``, bundles,
``replicate``) and the registry's re-analysis of an uploaded bundle both call it, so a verdict
is reached the same way wherever it is computed. What only a ledger knows (the test log, arm
isolation, provenance, the predictions table) is gathered by :func:`analyze` and passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fairtrial import diff, meter, prereg, testlog
from fairtrial.analysis.costs import cost_verdicts, speed_verdict, timing_noise
from fairtrial.analysis.design import design_part
from fairtrial.analysis.methodology import cost_rule, method_of, settings
from fairtrial.analysis.predictions import disagreements
from fairtrial.analysis.verdicts import (
    Options,
    analyze_scores,
    arm_summary,
    seed_blind_arms,
    worst_score,
)
from fairtrial.claims import cost_text
from fairtrial.ledger import ExperimentRow, Ledger, TrialRow
from fairtrial.plan import plan_seeds
from fairtrial.record import ExperimentRecord
from fairtrial.results import Analysis, ArmCompute, ComputeInfo, CostRatios, ExperimentSummary
from fairtrial.tasks.external import EVALUATION, is_external


def build(
    record: ExperimentRecord,
    trials: Sequence[TrialRow],
    options: Options = Options(),
    *,
    predictions: Mapping[str, Mapping[int, str]] | None = None,
    compute: Mapping[str, Mapping[str, Any]] | None = None,
    experiment: Mapping[str, Any] | None = None,
    costs: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    repeats: Mapping[str, Mapping[int, Mapping[str, Any]]] | None = None,
    **parts: Any,
) -> Analysis:
    """The analysis of ``record``'s ``trials`` (every arm's, every attempt's latest row).

    Pure: the same inputs give the same analysis. ``predictions``: arm -> seed -> sha256 of
    the finished trial's test predictions (the seed-blindness check; without them, identical
    scores over 3+ seeds). ``compute``: arm -> its compute summary
    (:func:`fairtrial.meter.summarize_arm`), from which the cost ratios come. ``experiment``:
    fields of the experiment summary only a store knows (``preregistered``, ``test_log``,
    ``arm_isolation``, ``test_evaluations``). ``costs``: arm -> seed -> the compute record
    of that finished trial (:func:`fairtrial.meter.fill_record`), from which each cost figure
    is compared paired by seed (:mod:`fairtrial.analysis.costs`); ``repeats``: the same for
    trials run a second time, whose times give the timing noise. ``parts``: the document's
    other parts as they were gathered (``compute``'s settings as ``compute_info``, ``provenance``,
    ``predictions_table``, ``config_reads``).
    """
    hyp = record.hypothesis
    by_arm: dict[str, list[TrialRow]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    fail_score = worst_score(trials, record.direction, options)
    arms = {
        a.name: arm_summary(
            by_arm.get(a.name, []),
            hyp.confidence,
            fail_score,
            kind=a.kind,
            components=a.components,
        )
        for a in record.arms
    }
    scores = {name: a.scores for name, a in arms.items()}
    deterministic = record.deterministic
    finished = {
        name: {t.seed: float(t.result or 0.0) for t in rows if t.status == "finished"}
        for name, rows in by_arm.items()
        if name in arms
    }
    # a recipe that evaluates itself hands in scores, not predictions: equal scores of two
    # seeds are no sign of seed-blindness (three equal scores still are, as for any arm)
    external = is_external(record.task)
    hashes = {} if external else {a: h for a, h in (predictions or {}).items() if a in arms}
    blind = {} if deterministic else seed_blind_arms(finished, hashes)
    for name, a in arms.items():
        given = (compute or {}).get(name)
        merged = {**a.compute.to_dict(), **(given or {})}
        arms[name] = a.replace(seed_blind=name in blind, compute=ArmCompute.from_dict(merged))
    table = record.arm_table()
    imported = record.spec.get("imported")
    comparisons, ablations, interactions = analyze_scores(
        scores,
        table,
        record.direction,
        hyp,
        options,
        seed_blind=blind,
        deterministic=deterministic,
        imported=imported is not None,
    )

    def priced(c: Any) -> Any:
        a, b = arms[c.arm].compute, arms[c.against].compute
        if a.figures is None or b.figures is None:
            return c
        ratios = meter.cost_ratios(a.to_dict(), b.to_dict())
        return c.replace(
            cost=CostRatios.from_dict(ratios), cost_text=meter.format_cost_ratios(ratios)
        )

    comparisons, ablations = [priced(c) for c in comparisons], [priced(c) for c in ablations]
    noise = None
    if costs:
        noise = timing_noise(costs, list(arms) if deterministic else [], repeats)
        found = cost_verdicts(
            costs, [*comparisons, *ablations], hyp, seed=options.seed, noise=noise
        )
        judged = [
            c.replace(costs=v or None, cost_text=_both_texts(v, c))
            for c, v in zip([*comparisons, *ablations], found, strict=True)
        ]
        if record.primary != "metric":
            judged = [speed_verdict(c, record.primary, hyp) for c in judged]
        comparisons = judged[: len(comparisons)]
        ablations = judged[len(comparisons) :]  # type: ignore[assignment]
    design = design_part(record, finished, hyp, n_resamples=options.n_resamples, seed=options.seed)
    used = method_of(
        scores, table, hyp, options, deterministic, primary=record.primary, design=record.design
    )
    if imported is not None:
        used = _imported_method(used, [*comparisons, *ablations])
    summary: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "task": record.task,
        "metric": record.metric,
        "direction": record.direction,
        "spec_hash": record.spec_hash,
        "preregistered": None,
        "task_checksum": record.task_checksum,
        "seeds": record.seeds,
        "root_seed": record.root_seed,
        "claim": hyp.claim,
        "trials": len(trials),
        # the code version(s) of the trials in this verdict (one, unless trials from before
        # identities are mixed in) and how many were reused from other experiments
        "code": sorted({t.code_hash or "unrecorded" for t in trials if t.attempt > 0}),
        "reused": sum(t.reused for t in trials),
        "test_evaluations": None,
        "test_log": None,
        "arm_isolation": None,
        **(experiment or {}),
    }
    if external:
        summary["evaluation"] = EVALUATION
    if imported is not None:
        # fairtrial saw neither the code, nor the test split, nor the environment of these
        # results: there is no code version, test log or arm isolation to state
        summary.update(
            imported=dict(imported), code=[], test_evaluations=None, test_log=None,
            arm_isolation=None,
        )  # fmt: skip
    if record.seeds_auto and hyp.smallest_effect:
        summary["seed_plan"] = plan_seeds(
            scores,
            table,
            record.direction,
            smallest_effect=hyp.smallest_effect,
            alpha=hyp.alpha,
            power=hyp.power,
            max_seeds=record.max_seeds,
        )
    tuning = None
    if parts.get("tuning") is not None:
        tuning = _tuning(record, trials, parts["tuning"], table, hyp, options)
    said = settings(used)
    if costs:
        said["costs"] = cost_rule(hyp)
    if "unpaired" in used:
        said["unpaired"] = (
            "where two arms share no seed: Welch's t-test and interval (unequal variances, "
            "Welch-Satterthwaite degrees of freedom), TOST on the same t; P(improvement) over "
            "all pairs of runs"
        )
    return Analysis(
        experiment=ExperimentSummary.from_dict(summary),
        arms=arms,
        comparisons=comparisons,
        ablations=ablations,  # type: ignore[arg-type]
        interactions=interactions,
        compute=ComputeInfo.from_dict(
            {**(parts.get("compute_info") or {}), **({"timing_noise": noise} if noise else {})}
        ),
        provenance=dict(parts.get("provenance") or {}),
        settings=said,
        predictions=parts.get("predictions_table"),
        config_reads=parts.get("config_reads"),
        extra=dict(parts.get("extra") or {}),
        tuning=tuning,
        design=design,
    )


def _both_texts(paired: Mapping[str, Any], c: Any) -> str | None:
    """The cost in words: the figures compared paired by seed, then those only the arms'
    means give (too few seeds measured on both arms to pair), marked as such."""
    missing = [
        name
        for name, figures in (
            ("time", ("train_time", "time_to_target")),
            ("flops", ("flops",)),
            ("energy", ("energy",)),
        )
        if not any(f in paired for f in figures)
    ]
    means = meter.format_cost_ratios(c.cost.to_dict(), missing) if c.cost and missing else ""
    parts = [cost_text(paired).removeprefix("for ")]
    if means:
        parts.append(means.removeprefix("for ") + " (ratio of means)")
    text = "; ".join(p for p in parts if p)
    return f"for {text}" if text else c.cost_text


def _imported_method(used: dict[str, Any], judged: Sequence[Any]) -> dict[str, Any]:
    """The method of an analysis of imported results: seeds are paired as the data declare
    them (fairtrial did not derive their streams), and unpaired comparisons say so."""
    out = {**used, "pairing": "seed, as declared by the imported data"}
    if any(c.unpaired for c in judged):
        out["unpaired"] = {"method": "Welch t", "when": "two arms share no seed"}
    return out


def _tuning(
    record: ExperimentRecord,
    trials: Sequence[TrialRow],
    parts: Mapping[str, Any],
    table: Mapping[str, Any],
    hyp: Any,
    options: Options,
) -> Any:
    """The tuning part: ``parts`` holds the tuning trials (``rows``: (TrialRow, params)), the
    arms' trials at their spec values (``untuned``: TrialRows) and the tuning compute per arm."""
    from fairtrial.tuning.summary import build_tuning

    configs: dict[str, Any] = {}
    for t in trials:
        configs.setdefault(t.arm, t.config)
    arms = {a.name: {"components": a.components, "config": configs.get(a.name)}
            for a in record.arms}  # fmt: skip
    untuned_rows = list(parts.get("untuned") or [])
    untuned = None
    if untuned_rows and all(r.status == "finished" for r in untuned_rows):
        scores: dict[str, dict[int, float]] = {}
        for r in untuned_rows:
            scores.setdefault(r.arm, {})[r.seed] = float(r.result or 0.0)
        untuned, _, _ = analyze_scores(scores, table, record.direction, hyp, options)
    return build_tuning(
        record.spec, record.direction, record.seeds, arms, parts.get("rows") or [], trials,
        untuned, parts.get("compute"),
    )  # fmt: skip


def analyze(
    ledger: Ledger,
    exp: ExperimentRow,
    options: Options = Options(),
    *,
    extras: Mapping[str, Any] | None = None,
) -> Analysis:
    """The analysis of one stored experiment: its trials as they stand, read from ``ledger``."""
    if exp.spec.get("children"):
        return _analyze_tasks(ledger, exp, options, extras)
    record = ExperimentRecord.from_row(exp)
    trials = ledger.trials(exp.id)
    current = {t.id: t for t in trials if t.status == "finished"}
    hashes: dict[str, dict[int, str]] = {}
    evaluations = ledger.test_evaluations(exp.id)  # every stored prediction: read once
    for ev in evaluations:
        tr = current.get(ev["trial_id"])
        if tr is not None and ev["attempt"] == tr.attempt:
            hashes.setdefault(tr.arm, {})[tr.seed] = ev["predictions_sha256"]
    by_arm: dict[str, list[TrialRow]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, []).append(t)
    compute = _compute(ledger, exp, by_arm, trials, options)
    doc = build(
        record,
        trials,
        options,
        predictions=hashes,
        compute=compute["arms"],
        costs=compute["per_seed"],
        repeats=_repeats(ledger, exp, options),
        experiment={
            "test_evaluations": len(evaluations),
            "test_log": testlog.summary(ledger, exp),
            "arm_isolation": diff.arm_isolation(ledger, exp),
        },
        compute_info={
            "settings": compute["settings"],
            "hardware": compute["hardware"],
            "worker_startup": compute["worker_startup"],
        },
        provenance=_provenance(ledger, trials),
        predictions_table=disagreements(ledger, exp),
        config_reads=_config_reads(ledger, exp),
        extra=extras,
        tuning=_tuning_parts(ledger, exp, options) if exp.spec.get("tuning") else None,
    )
    registered = prereg.status(ledger, exp, doc.method)
    return doc.replace(experiment=doc.experiment.replace(preregistered=registered))


def _analyze_tasks(
    ledger: Ledger,
    exp: ExperimentRow,
    options: Options,
    extras: Mapping[str, Any] | None,
) -> Analysis:
    """An experiment over several tasks: each task's analysis, and every claim across them."""
    from fairtrial.analysis.across import combine

    record = ExperimentRecord.from_row(exp)
    children = exp.spec["children"]
    per_task = {  # in the spec's order (the stored JSON sorts its keys)
        task: analyze(ledger, ledger.experiment(children[task]), options)
        for task in exp.spec.get("tasks") or children
    }
    doc = combine(
        per_task, name=record.name, direction=record.direction, hyp=record.hypothesis,
        options=options, suite=exp.spec.get("suite"),
        experiment={"id": record.id, "spec_hash": record.spec_hash,
                    "task_checksum": record.task_checksum},
    ).replace(extra=dict(extras or {}))  # fmt: skip
    registered = prereg.status(ledger, exp, doc.method)
    return doc.replace(experiment=doc.experiment.replace(preregistered=registered))


def _settings(ledger: Ledger, exp: ExperimentRow, options: Options) -> meter.ComputeSettings:
    """How compute is priced: the experiment's settings, overridden by ``options``."""
    return meter.ComputeSettings.from_table(
        ledger.compute_settings(exp.id),
        grid_intensity=options.grid_intensity,
        grid_intensity_source=options.grid_intensity_source,
        pue=options.pue,
        price_per_hour=options.price_per_hour,
    )


def _repeats(
    ledger: Ledger, exp: ExperimentRow, options: Options
) -> dict[str, dict[int, dict[str, Any]]]:
    """arm -> seed -> the compute record of each finished trial run a second time."""
    from fairtrial.ledger.stages import REPEAT

    records = ledger.stage_compute(exp.id, REPEAT)
    if not records:
        return {}
    settings = _settings(ledger, exp, options)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row, _ in ledger.stage_trials(exp.id, REPEAT):
        if row.status == "finished" and row.id in records:
            out.setdefault(row.arm, {})[row.seed] = meter.fill_record(records[row.id], settings)
    return out


def _tuning_parts(ledger: Ledger, exp: ExperimentRow, options: Options) -> dict[str, Any]:
    """What the tuning part is built from, read from the ledger."""
    from fairtrial.ledger.stages import TUNING, UNTUNED

    rows = ledger.stage_trials(exp.id, TUNING)
    settings = _settings(ledger, exp, options)
    records = ledger.stage_compute(exp.id, TUNING)
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r, _ in rows:
        if r.id in records and r.status != "pending":
            by_arm.setdefault(r.arm, []).append(records[r.id])
    return {
        "rows": rows,
        "untuned": [r for r, _ in ledger.stage_trials(exp.id, UNTUNED)],
        "compute": {arm: meter.summarize_arm(recs, settings) for arm, recs in by_arm.items()},
    }


def _compute(
    ledger: Ledger,
    exp: ExperimentRow,
    by_arm: Mapping[str, Sequence[TrialRow]],
    trials: Sequence[TrialRow],
    options: Options,
) -> dict[str, Any]:
    """Per-arm compute summaries (every ended trial's record), settings and hardware."""
    settings = _settings(ledger, exp, options)
    records = ledger.compute(exp.id)
    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for name, rows in by_arm.items():
        for t in rows:
            if t.status == "finished" and t.id in records:
                per_seed.setdefault(name, {})[t.seed] = meter.fill_record(records[t.id], settings)
    arms = {
        name: meter.summarize_arm(
            [records[t.id] for t in rows if t.id in records and t.status != "pending"], settings
        )
        for name, rows in by_arm.items()
    }
    provs = [
        ledger.provenance(pid)
        for pid in sorted({t.provenance_id for t in trials if t.provenance_id})
    ]
    return {
        "arms": arms,
        "per_seed": per_seed,
        "settings": settings.as_dict(),
        "hardware": meter.hardware_summary(provs),
        "worker_startup": meter.worker_startup(list(records.values())),
    }


def _config_reads(ledger: Ledger, exp: ExperimentRow) -> dict[str, Any] | None:
    """Config keys no finished trial of an arm read (None: all read, or not recorded)."""
    from fairtrial.configreads import experiment_unread, unread_text

    found = experiment_unread(ledger, exp.id)
    if found is None:
        return None
    command = exp.spec.get("experiment", {}).get("command") is not None
    return {**found, "text": unread_text(found, command=command)}


def _provenance(ledger: Ledger, trials: Sequence[TrialRow]) -> dict[str, Any]:
    prov_ids = sorted({t.provenance_id for t in trials if t.provenance_id})
    if not prov_ids:
        return {}
    p = ledger.provenance(prov_ids[-1])
    git = p.get("git", {})
    return {
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
