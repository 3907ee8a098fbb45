"""Formatting shared by every report format: numbers, intervals, verdict words and marks."""

from __future__ import annotations

import json
from typing import Any

MARKS = {"better": "▲", "worse": "▼", "equivalent": "≈", "inconclusive": "?"}
STYLES = {
    "better": "bold green",
    "worse": "bold red",
    "equivalent": "cyan",
    "inconclusive": "yellow",
}


def num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def interval(iv: list[float] | None, digits: int = 4, sign: bool = False) -> str:
    if not iv or iv[0] is None or iv[1] is None:
        return "—"
    f = signed if sign else num
    return f"[{f(iv[0], digits)}, {f(iv[1], digits)}]"


def pvalue(p: float | None) -> str:
    if p is None:
        return "—"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3g}" if p < 0.1 else f"{p:.2f}"


def components(c: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in c.items()) or "—"


def values(vs: list[float | None], limit: int = 10) -> str:
    shown = " ".join(num(v, 3) for v in vs[:limit])
    return shown + (f" … (+{len(vs) - limit})" if len(vs) > limit else "")


def verdict(c: dict[str, Any]) -> str:
    v = c.get("verdict") or "inconclusive"
    return f"{MARKS[v]} {v}"


def power_note(c: dict[str, Any]) -> str:
    """What an inconclusive comparison would need: its MDE and the seeds for smallest_effect."""
    if c.get("verdict") != "inconclusive":
        return ""
    parts = []
    if c.get("mde") is not None:
        parts.append(f"detectable ≥ {c['mde']:.4g}")
    if c.get("seeds_needed") is not None:
        parts.append(f"{c['seeds_needed']} seeds needed")
    return "; ".join(parts)


def prob(c: dict[str, Any]) -> str:
    p = c.get("prob_improvement")
    if not p or p.get("estimate") is None:
        return "—"
    return f"{p['estimate']:.2f}"


def direction_word(doc: dict[str, Any]) -> str:
    return "higher" if doc["experiment"]["direction"] == "max" else "lower"


def seed_plan_line(doc: dict[str, Any]) -> str | None:
    sp = doc["experiment"].get("seed_plan")
    if not sp:
        return None
    line = f'seeds = "auto": a pilot of {sp["pilot"]} seeds asked for {sp["needed"]} ({sp["rule"]})'
    if sp["capped"]:
        line += f"; capped at max_seeds = {sp['max_seeds']}"
    return line + f"; planned {sp['seeds']}."


def disagreement_line(pred: dict[str, Any] | None) -> str | None:
    if not pred:
        return None
    return (
        f"The arms' majority predictions differ on {pred['n_disagree']} of "
        f"{pred['n_test']} test examples."
    )


def methods(doc: dict[str, Any]) -> list[str]:
    """The analysis' settings, as sentences for the report's methods section."""
    s = doc["settings"]
    keys = [
        "pairing",
        "effect",
        "effect_interval",
        "test",
        "multiple_comparisons",
        "verdict",
        "effect_size",
        "power_analysis",
        "interaction",
        "arm_interval",
        "failures",
    ]
    return [f"{k.replace('_', ' ')}: {s[k]}" for k in keys if k in s]


def interval_kind(doc: dict[str, Any]) -> str:
    """Which interval the comparisons use ("paired t", "BCa bootstrap", or both)."""
    kinds = sorted(
        {c.get("interval_method") for c in doc["comparisons"] + doc["ablations"]} - {None}
    )
    return " / ".join(kinds) or "no"
