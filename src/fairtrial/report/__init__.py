"""Render an experiment's result document: terminal text, Markdown, JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

FORMATS = ("text", "md", "json")


def _f(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _signed(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def _iv(iv: list[float] | None, digits: int = 4, signed: bool = False) -> str:
    if not iv:
        return "—"
    f = _signed if signed else _f
    return f"[{f(iv[0], digits)}, {f(iv[1], digits)}]"


def _values(values: list[float | None], limit: int = 10) -> str:
    shown = " ".join(_f(v, 3) for v in values[:limit])
    return shown + (f" … (+{len(values) - limit})" if len(values) > limit else "")


def _components(c: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in c.items()) or "—"


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def render_text(doc: dict[str, Any], console: Console | None = None) -> Group:
    """A rich renderable: comparisons first (what the user came for), then arms, then failures."""
    e = doc["experiment"]
    better = "higher" if e["direction"] == "max" else "lower"
    head = Text.assemble(
        (f"{e['name']}", "bold"),
        f"  ({e['id']})\n",
        f"task {e['task']} · metric {e['metric']} ({better} is better) · ",
        f"{e['seeds']} seeds · {e['trials']} trials\n",
        (f"claim: {e['claim']}" if e["claim"] else ""),
    )
    parts: list[Any] = [Panel(head, expand=False)]
    conf = int(doc["settings"]["confidence"] * 100)
    rows = doc["comparisons"] + [
        {**a, "arm": a["arm"], "against": a["ablation_arm"]} for a in doc["ablations"]
    ]
    if rows:
        t = Table(title=f"Paired comparisons (effect = arm − against, + is better; {conf}% CI)")
        for col in ("arm", "against", "pairs", "effect", f"{conf}% CI (t)", "wins/losses"):
            t.add_column(col, justify="right" if col not in ("arm", "against") else "left")
        for c in rows:
            t.add_row(
                escape(c["arm"]),
                escape(c["against"]),
                str(c["n_pairs"]),
                _signed(c["effect"]),
                _iv(c["interval"], signed=True),
                f"{c['wins']}/{c['losses']}",
            )
        parts.append(t)
    t = Table(title=f"Arms: test {e['metric']} per seed")
    for col in ("arm", "components", "n", "failed", "mean", "sd", f"{conf}% CI", "per-seed"):
        t.add_column(col, justify="left" if col in ("arm", "components", "per-seed") else "right")
    for name, a in doc["arms"].items():
        t.add_row(
            escape(name),
            escape(_components(a["components"])),
            str(a["n"]),
            str(a["failed"]) + (f" ({a['pending']} pending)" if a["pending"] else ""),
            _f(a["mean"]),
            _f(a["sd"]),
            _iv(a["interval"]),
            _values(a["values"]),
        )
    parts.append(t)
    fails = [(n, f) for n, a in doc["arms"].items() for f in a["failures"]]
    if fails:
        lines = Text("Failures (counted, not averaged in):\n", style="yellow")
        for name, f in fails[:20]:
            lines.append(f"  {name} seed {f['seed']}: {f['status']}: {f['reason']}\n")  # plain Text
        if len(fails) > 20:
            lines.append(f"  … {len(fails) - 20} more\n")
        parts.append(lines)
    return Group(*parts)


def render_md(doc: dict[str, Any]) -> str:
    e = doc["experiment"]
    conf = int(doc["settings"]["confidence"] * 100)
    out = [
        f"## {e['name']}",
        "",
        f"Task `{e['task']}`, metric {e['metric']} "
        f"({'higher' if e['direction'] == 'max' else 'lower'} is better), {e['seeds']} seeds, "
        f"experiment `{e['id']}`." + (f" Claim: {e['claim']}" if e["claim"] else ""),
        "",
    ]
    rows = doc["comparisons"] + [{**a, "against": a["ablation_arm"]} for a in doc["ablations"]]
    if rows:
        out += [
            f"| arm | against | pairs | effect | {conf}% CI (t) | wins/losses |",
            "|---|---|---:|---:|---:|---:|",
        ]
        out += [
            f"| {c['arm']} | {c['against']} | {c['n_pairs']} | {_signed(c['effect'])} | "
            f"{_iv(c['interval'], signed=True)} | {c['wins']}/{c['losses']} |"
            for c in rows
        ]
        out.append("")
    out += [
        f"| arm | components | n | failed | mean | sd | {conf}% CI |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| {n} | {_components(a['components'])} | {a['n']} | {a['failed']} | {_f(a['mean'])} "
        f"| {_f(a['sd'])} | {_iv(a['interval'])} |"
        for n, a in doc["arms"].items()
    ]
    return "\n".join(out) + "\n"


__all__ = ["FORMATS", "render_json", "render_md", "render_text"]
