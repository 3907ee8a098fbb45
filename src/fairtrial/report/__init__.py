"""Render an experiment's result document: terminal, Markdown, HTML, LaTeX and JSON.

Every renderer takes the analysis document (:func:`fairtrial.analysis.analyze`) and, where it
draws figures or shows predictions, the details (:func:`details`): verdicts come first, then
ablations, the tuning (:mod:`.tuning`, when every arm was tuned), arms, failures and predictions,
then the methods that produced the numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fairtrial.report import claims, fmt, tasks, tuning
from fairtrial.report.html import render_html
from fairtrial.report.tex import render_tex

if TYPE_CHECKING:
    from fairtrial.results import Ablation, Analysis, Comparison, Interaction

FORMATS = ("text", "md", "html", "tex", "json")


def render_json(doc: Analysis) -> str:
    return doc.to_json()


def _comparison_rows(doc: Analysis) -> list[Comparison]:
    return doc.judged


def render_text(doc: Analysis) -> Group:
    """A rich renderable: verdicts first (what the user came for), then arms and failures."""
    if doc.tasks:
        return tasks.render_text(doc, render_text)
    e = doc.experiment
    head = Text.assemble(
        (f"{e.name}", "bold"),
        f"  ({e.id})\n",
        f"task {e.task} · metric {e.metric} ({fmt.direction_word(doc)} is better) · ",
        f"{e.seeds} seeds · {e.trials} trials",
        (f"\nclaim: {e.claim}" if e.claim else ""),
    )
    parts: list[Any] = [Panel(head, expand=False)]
    parts.append(Text("\n".join(fmt.rigor_lines(doc)), style="dim"))
    conf = f"{doc.settings['confidence']:.0%}"
    if doc.comparisons:
        t = Table(
            title=f"Verdicts: arm vs baseline (effect: + is better; {conf} "
            f"{fmt.interval_kind(doc)} interval)"
        )
        _verdict_columns(t, "vs")
        for c in doc.comparisons:
            _verdict_row(t, c, c.against)
        parts.append(t)
    by_arm: dict[str, list[Ablation]] = {}
    for ab in doc.ablations:
        by_arm.setdefault(ab.arm, []).append(ab)
    for arm, rows in by_arm.items():
        t = Table(
            title=f"Ablations of {arm}: contribution of each component (arm − arm without it)"
        )
        _verdict_columns(t, "removed")
        for r in rows:
            _verdict_row(t, r, f"{r.removed} ({r.ablation_arm})")
        parts.append(t)
        inter = next((i for i in doc.interactions if i.arm == arm), None)
        if inter and inter.interaction is not None:
            parts.append(Text(_interaction_line(inter, conf)))
    parts += claims.text_parts(doc)
    parts += tuning.text_parts(doc)
    t = Table(title=f"Arms: test {e.metric} per seed")
    for col in ("arm", "components", "n", "failed", "mean", "sd", f"{conf} CI", "per seed"):
        t.add_column(col, justify="left" if col in ("arm", "components", "per seed") else "right")
    for name, arm_ in doc.arms.items():
        a = arm_
        t.add_row(
            escape(name),
            escape(fmt.components(a.components)),
            str(a.n),
            str(a.failed) + (f" ({a.pending} pending)" if a.pending else ""),
            fmt.num(a.mean),
            fmt.num(a.sd),
            fmt.interval(a.interval),
            fmt.values(a.values),
        )
    parts.append(t)
    if reads := doc.config_reads:
        parts.append(Text(f"Warning: {reads['text']}", style="yellow"))
    heads, table, notes = fmt.compute_rows(doc)
    if len(heads) > 1:
        t = Table(title="Compute per trial (mean ± sd)")
        for i, h in enumerate(heads):
            t.add_column(h, justify="left" if i == 0 else "right")
        for cells in table:
            t.add_row(*(escape(v) for v in cells))
        parts.append(t)
        parts.append(Text("\n".join(notes), style="dim"))
    if line := fmt.seed_plan_line(doc):
        parts.append(Text(line))
    fails = [(n, f) for n, a in doc.arms.items() for f in a.failures]
    if fails:
        lines = Text("Failures (counted, not averaged in):\n", style="yellow")
        for name, f in fails[:20]:
            lines.append(f"  {name} seed {f.seed}: {f.status}: {f.reason}\n")
        if len(fails) > 20:
            lines.append(f"  … {len(fails) - 20} more\n")
        parts.append(lines)
    pred = doc.predictions
    if pred and pred["examples"]:
        t = Table(title=fmt.disagreement_line(pred))
        arms = list(pred["examples"][0]["arms"])
        for col in ("example", "truth", *arms):
            t.add_column(escape(col), justify="right")
        for ex in pred["examples"][:8]:
            t.add_row(
                f"#{ex['index']}",
                str(ex["truth"]),
                *(_pred_cell(ex, a) for a in arms),
            )
        parts.append(t)
    parts.append(Text("Methods: " + " · ".join(fmt.methods(doc)), style="dim"))
    return Group(*parts)


def _verdict_columns(t: Table, against: str) -> None:
    for col in (
        "arm",
        against,
        "verdict",
        "effect",
        "interval",
        "p (adj.)",
        "d_z",
        "P(better)",
        "pairs",
        "power",
        "cost",
    ):
        t.add_column(
            col, justify="left" if col in ("arm", against, "verdict", "power") else "right"
        )


def _verdict_row(t: Table, c: Comparison, against: str) -> None:
    v = c.verdict or "inconclusive"
    t.add_row(
        escape(c.arm),
        escape(against),
        Text(fmt.verdict(c), style=fmt.STYLES[v]),
        fmt.signed(c.effect),
        fmt.interval(c.interval, sign=True),
        f"{fmt.pvalue(c.p)} ({fmt.pvalue(c.p_adjusted)})",
        fmt.num(c.d_z, 2),
        fmt.prob(c),
        str(c.n_pairs),
        escape(fmt.power_note(c)),
        escape(fmt.cost_text(c)),
    )


def _pred_cell(ex: dict[str, Any], arm: str) -> str:
    p = ex["arms"][arm]
    mark = "✓" if p["prediction"] == ex["truth"] else "✗"
    return f"{p['prediction']} {mark} ({p['agreement']:.0%})"


def _interaction_line(inter: Interaction, conf: str) -> str:
    verdict = (
        "the components add up (no interaction detected)"
        if inter.additive
        else (
            "the components reinforce each other"
            if (inter.interaction or 0) > 0
            else "the components overlap (together they gain less than the sum)"
        )
    )
    return (
        f"{inter.arm}: total effect {fmt.signed(inter.total_effect)}, sum of contributions "
        f"{fmt.signed(inter.sum_of_contributions)}, interaction "
        f"{fmt.signed(inter.interaction)} {fmt.interval(inter.interval, sign=True)} "
        f"({conf}, {inter.n_pairs} seeds): {verdict}."
    )


def render_md(doc: Analysis) -> str:
    """Markdown for READMEs, issues and pull requests."""
    if doc.tasks:
        return tasks.render_md(doc, render_md)
    e = doc.experiment
    conf = f"{doc.settings['confidence']:.0%}"
    out = [
        f"## {e.name}",
        "",
        f"Task `{e.task}`, metric {e.metric} ({fmt.direction_word(doc)} is better), "
        f"{e.seeds} seeds, experiment `{e.id}`." + (f" Claim: {e.claim}" if e.claim else ""),
        "",
        *[f"- {line}" for line in fmt.rigor_lines(doc)],
        "",
    ]
    head = (
        "| arm | vs | verdict | effect | {c} interval | p | p adj. | d_z | P(better) | pairs "
        "| power | cost |"
    )
    rule = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"

    def row(c: Comparison, against: str) -> str:
        return (
            f"| {c.arm} | {against} | {fmt.verdict(c)} | {fmt.signed(c.effect)} | "
            f"{fmt.interval(c.interval, sign=True)} | {fmt.pvalue(c.p)} | "
            f"{fmt.pvalue(c.p_adjusted)} | {fmt.num(c.d_z, 2)} | {fmt.prob(c)} | "
            f"{c.n_pairs} | {fmt.power_note(c)} | {fmt.cost_text(c)} |"
        )

    if doc.comparisons:
        out += ["### Verdicts", "", head.format(c=conf), rule]
        out += [row(c, c.against) for c in doc.comparisons]
        out.append("")
    if doc.ablations:
        out += [
            "### Ablations",
            "",
            "Contribution of each component: the arm minus the arm without it.",
            "",
            head.format(c=conf).replace("| vs |", "| removed |"),
            rule,
        ]
        out += [row(c, f"{c.removed} (`{c.ablation_arm}`)") for c in doc.ablations]
        out.append("")
        for inter in doc.interactions:
            if inter.interaction is not None:
                out += [_interaction_line(inter, conf), ""]
    out += claims.markdown(doc)
    out += tuning.markdown(doc)
    out += [
        "### Arms",
        "",
        f"| arm | components | n | failed | mean | sd | {conf} CI | per seed |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    out += [
        f"| {n} | {fmt.components(a.components)} | {a.n} | {a.failed} | "
        f"{fmt.num(a.mean)} | {fmt.num(a.sd)} | {fmt.interval(a.interval)} | "
        f"{fmt.values(a.values)} |"
        for n, a in doc.arms.items()
    ]
    out.append("")
    if reads := doc.config_reads:
        out += [f"**Warning**: {reads['text']}", ""]
    heads, rows, notes = fmt.compute_rows(doc)
    if len(heads) > 1:
        out += [
            "### Compute per trial (mean ± sd)",
            "",
            "| " + " | ".join(heads) + " |",
            "|---|" + "---:|" * (len(heads) - 1),
        ]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out += [""] + [f"- {n}" for n in notes] + [""]
    if line := fmt.seed_plan_line(doc):
        out += [line, ""]
    fails = [(n, f) for n, a in doc.arms.items() for f in a.failures]
    if fails:
        out += ["Failures (counted, not averaged in):", ""]
        out += [f"- {n} seed {f.seed}: {f.status}: {f.reason}" for n, f in fails[:20]]
        out.append("")
    pred = doc.predictions
    if pred and pred["examples"]:
        arms = list(pred["examples"][0]["arms"])
        out += [
            "### Where the arms disagree",
            "",
            fmt.disagreement_line(pred) or "",
            "",
            "| example | truth | " + " | ".join(arms) + " |",
            "|---:|---:|" + "---:|" * len(arms),
        ]
        out += [
            f"| #{ex['index']} | {ex['truth']} | "
            + " | ".join(_pred_cell(ex, a) for a in arms)
            + " |"
            for ex in pred["examples"][:8]
        ]
        out.append("")
    out += ["### Methods", ""] + [f"- {m}" for m in fmt.methods(doc)]
    return "\n".join(out) + "\n"


__all__ = ["FORMATS", "render_html", "render_json", "render_md", "render_tex", "render_text"]
