"""The factorial part of an analysis: which of an arm's components matter, and how they combine.

Leave-one-out ablations measure what each component adds with all the others present; a
factorial design measures each component's main effect averaged over the levels of the
others, and every interaction, from the same seeds. Pure: per-arm ``{seed: score}`` maps in,
a :class:`~fairtrial.claims.Design` record out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fairtrial.claims import Design
from fairtrial.record import ExperimentRecord, Hypothesis


def design_part(
    record: ExperimentRecord,
    scores: Mapping[str, Mapping[int, float]],
    hyp: Hypothesis,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Design | None:
    """The design of ``record``'s spec, estimated from ``scores`` (arm -> seed -> score, a
    failed seed left out); None when the spec has no design."""
    info = record.design
    if info is None:
        return None
    from fairtrial.stats import factorial

    design = info.build()
    arms = [record.design_arm(levels) for levels in design.runs]
    seeds = sorted(set().union(*(set(scores.get(a or "", {})) for a in arms)))
    y = np.full((len(seeds), len(arms)), np.nan)
    for j, arm in enumerate(arms):
        for i, s in enumerate(seeds):
            v = (scores.get(arm or "") or {}).get(s)
            if v is not None and math.isfinite(v):
                y[i, j] = v
    letters = list(design.factors)
    base: dict[str, Any] = {
        "arm": info.arm,
        "kind": info.kind,
        "name": design.name,
        "factors": dict(zip(letters, info.factors, strict=True)),
        "generators": list(design.generators),
        "defining_relation": list(design.defining_relation),
        "resolution": design.resolution,
        "text": design_text(info, design, hyp),
    }
    if info.kind == "fractional":
        base["aliasing"] = _aliasing(design)
    complete = int(np.sum(~np.isnan(y).any(axis=1))) if len(seeds) else 0
    runs = [
        {
            "levels": {f: int(lv) for f, lv in zip(letters, levels, strict=True)},
            "arm": arm,
            "mean": None,
        }
        for levels, arm in zip(design.runs, arms, strict=True)
    ]
    if complete < 2:
        return Design.from_dict(
            {**base, "runs": runs, "n_seeds": complete, "dropped_seeds": len(seeds) - complete}
        )
    fit = factorial.estimate_effects(
        design,
        y,
        max_order=info.interactions,
        confidence=hyp.confidence,
        smallest_effect=hyp.smallest_effect,
        alpha=hyp.alpha,
        n_resamples=n_resamples,
        rng=np.random.default_rng([seed, 104_729]),
        sign=1.0 if record.direction == "max" else -1.0,
    )
    d = fit.to_dict()
    for run, mean in zip(runs, d.get("cell_means") or [], strict=False):
        run["mean"] = mean
    effects: list[dict[str, Any]] = []
    for e in sorted(fit.effects, key=lambda e: -abs(e.estimate)):
        effects.append(
            {
                "term": e.term,
                "order": e.order,
                "components": [base["factors"][c] for c in e.term if c in base["factors"]],
                "aliases": list(e.aliases),
                "estimate": e.estimate,
                "interval": [e.low, e.high],
                "interval_method": e.interval_method,
                "t_interval": [e.t_low, e.t_high],
                "p": e.p,
                "p_t": e.p_t,
                "p_adjusted": e.p_adjusted,
                "tost": None
                if e.tost_equivalent is None
                else {
                    "equivalent": e.tost_equivalent,
                    "pvalue": e.tost_p,
                    "margin": hyp.smallest_effect,
                },
                "verdict": e.verdict,
                "reason": e.reason,
            }
        )
    return Design.from_dict(
        {
            **base,
            "runs": runs,
            "n_seeds": d.get("n_seeds", complete),
            "dropped_seeds": d.get("dropped_seeds", len(seeds) - complete),
            "effects": effects,
            "pooled": d.get("pooled"),
            "main_means": {
                f: list(m) for f, m in zip(letters, d.get("main_means") or [], strict=False)
            },
            "pair_means": d.get("pair_means"),
        }
    )


def _aliasing(design: Any) -> list[dict[str, Any]]:
    """Each main effect's and two-factor interaction's alias chain, up to order 3."""
    return [dict(c.to_dict()) for c in design.alias_table(max_order=3)]


def design_text(info: Any, design: Any, hyp: Hypothesis) -> str:
    """The design and how it is analysed, in words (derived from what runs)."""
    k = len(info.factors)
    legend = ", ".join(f"{f} = {c}" for f, c in zip(design.factors, info.factors, strict=True))
    order = {1: "main effects only", 2: "main effects and two-factor interactions"}.get(
        info.interactions, f"effects up to order {info.interactions}"
    )
    text = (
        f"{design.name} over the {k} components of arm {info.arm} ({legend}); every run on the "
        f"same seeds. Each effect is the mean over seeds of the per-seed contrast (high level "
        f"minus low level, averaged over the other factors), signed so that positive is "
        f"better; {order} are listed, higher-order ones pooled. Intervals: paired t below 20 "
        f"seeds, BCa bootstrap from 20; p: sign-flip permutation test, Holm over every listed "
        f"term; a term is better or worse when its adjusted p < {hyp.alpha:g} and its interval "
        "excludes 0"
    )
    if hyp.smallest_effect is not None:
        text += f", equivalent when TOST shows it within ±{hyp.smallest_effect:g}"
    text += ". A seed with a failed run is left out of every estimate."
    if design.generators:
        text += (
            f" Generators {', '.join(design.generators)}; defining relation I = "
            f"{' = '.join(design.defining_relation)}: each estimate is the sum of the effects "
            "in its alias chain."
        )
    return text
