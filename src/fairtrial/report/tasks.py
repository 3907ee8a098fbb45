"""Reports of an experiment over several tasks: the claims across the tasks first (verdict,
wins / ties / losses, Wilcoxon and sign test, the aggregate effect), what the reader must
know about them, then each task's own report, rendered as any experiment's is."""

from __future__ import annotations

import html as _html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fairtrial.report import fmt
from fairtrial.report.fmt import MARKS

if TYPE_CHECKING:
    from fairtrial.across import AcrossComparison
    from fairtrial.results import Analysis

HEAD = ("arm", "vs", "verdict across tasks", "wins/ties/losses", "Wilcoxon R+ / R−",
        "p (Holm)", "sign test p", "aggregate effect", "per task")  # fmt: skip


def _mark(v: str | None) -> str:
    return f"{MARKS.get(v or '', '')} {v}".strip() if v else "—"


def row(c: AcrossComparison) -> list[str]:
    """One comparison across tasks, as the cells of :data:`HEAD`."""
    w, s, agg = c.wilcoxon or {}, c.sign_test or {}, c.aggregate or {}
    rank = f"{w['r_plus']:g} / {w['r_minus']:g}" if w else "—"
    p = "—" if c.p_adjusted is None else f"{c.p_adjusted:.3g}"
    sp = f"{s['pvalue']:.3g}" if s else "—"
    effect = "—"
    if agg and agg.get("mean_low") is not None:
        effect = f"{agg['mean']:+.4f} [{agg['mean_low']:+.4f}, {agg['mean_high']:+.4f}]"
    elif agg:
        effect = f"{agg['mean']:+.4f} (no interval)"
    per = "; ".join(f"{t.task}: {t.verdict} ({t.effect:+.4f})" if t.effect is not None
                    else f"{t.task}: {t.verdict}" for t in c.tasks)  # fmt: skip
    return [c.arm, c.against, _mark(c.verdict), f"{c.wins}/{c.ties}/{c.losses}", rank, p, sp,
            effect, per]  # fmt: skip


def _lines(doc: Analysis) -> list[str]:
    across = doc.across
    assert across is not None
    out = list(across.notes)
    fr = across.friedman
    if fr:
        ranks = ", ".join(f"{a} {r:.2f}" for a, r in fr.get("avg_ranks_sorted", {}).items())
        out.append(
            f"Friedman over {len(across.tasks)} tasks: chi² = {fr['statistic']:.3g} "
            f"(p = {fr['pvalue']:.3g}), Iman-Davenport F p = {fr['f_pvalue']:.3g}; "
            f"average ranks (1 = best): {ranks}"
        )
        for clique in across.cliques:
            out.append(f"not told apart (Wilcoxon, Holm): {', '.join(clique)}")
    for c in across.comparisons:
        if c.reason:
            out.append(f"{c.arm} vs {c.against}: {c.reason}")
    return out


def _title(doc: Analysis) -> str:
    across = doc.across
    assert across is not None
    suite = f" (suite {across.suite})" if across.suite else ""
    return f"{len(across.tasks)} tasks{suite}: {', '.join(across.tasks)}"


def render_text(doc: Analysis, one: Callable[[Analysis], Any]) -> Group:
    e = doc.experiment
    claim = f"\nclaim: {e.claim}" if e.claim else ""
    head = Text.assemble((e.name, "bold"), f"  ({e.id})\n",
                         f"{_title(doc)} · metric {e.metric} · {e.seeds} seeds · "
                         f"{e.trials} trials", claim)  # fmt: skip
    t = Table(title="Verdicts across tasks (effect: + is better)")
    for col in HEAD:
        t.add_column(col)
    for c in doc.across.comparisons if doc.across else []:
        t.add_row(*(escape(x) for x in row(c)))
    parts: list[Any] = [head, *[Text(x) for x in fmt.evaluation_lines(doc)], t]
    parts.append(Text("\n".join(_lines(doc)), style="dim"))
    for task, sub in (doc.tasks or {}).items():
        parts += [Text(f"\n── task {task} ──", style="bold"), one(sub)]
    return Group(*parts)


def render_md(doc: Analysis, one: Callable[[Analysis], str]) -> str:
    e = doc.experiment
    out = [f"## {e.name}", "", f"{_title(doc)}, metric {e.metric}, {e.seeds} seeds, "
           f"experiment `{e.id}`." + (f" Claim: {e.claim}" if e.claim else ""), "",
           *[f"{x}\n" for x in fmt.evaluation_lines(doc)],
           "### Verdicts across tasks", "", "| " + " | ".join(HEAD) + " |",
           "|" + "---|" * len(HEAD)]  # fmt: skip
    out += [
        "| " + " | ".join(row(c)) + " |" for c in (doc.across.comparisons if doc.across else [])
    ]
    out += ["", *[f"- {line}" for line in _lines(doc)], ""]
    for task, sub in (doc.tasks or {}).items():
        demoted = "\n".join("#" + ln if ln.startswith("#") else ln for ln in one(sub).split("\n"))
        out += [f"## Task {task}", "", demoted, ""]
    return "\n".join(out)


def render_html_body(doc: Analysis, one: Callable[[Analysis], str]) -> list[str]:
    e = doc.experiment
    esc = _html.escape
    body = [f"<h1>{esc(e.name)}</h1>",
            f"<p class='muted'>experiment <code>{esc(e.id)}</code> · {esc(_title(doc))} · "
            f"metric {esc(e.metric)} · {e.seeds} seeds · {e.trials} trials</p>"]  # fmt: skip
    if e.claim:
        body.append(f"<p><strong>Claim:</strong> {esc(e.claim)}</p>")
    body += [f"<p><strong>{esc(x)}</strong></p>" for x in fmt.evaluation_lines(doc)]
    body.append("<h2>Verdicts across tasks</h2><table><tr>"
                + "".join(f"<th>{esc(h)}</th>" for h in HEAD) + "</tr>")  # fmt: skip
    for c in doc.across.comparisons if doc.across else []:
        body.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row(c)) + "</tr>")
    body.append("</table>")
    body.append("<ul class='muted'>" + "".join(f"<li>{esc(x)}</li>" for x in _lines(doc))
                + "</ul>")  # fmt: skip
    body += _figures(doc)
    for task, sub in (doc.tasks or {}).items():
        body += [f"<section><h2>Task {esc(task)}</h2>", one(sub), "</section>"]
    return body


def _figures(doc: Analysis) -> list[str]:
    """The critical-difference diagram (three or more arms) and the performance profile."""
    from fairtrial.report.across import critical_difference_svg, performance_profile_svg
    from fairtrial.stats import performance_profile

    across = doc.across
    out: list[str] = []
    if across is None or not doc.tasks:
        return out
    fr = across.friedman or {}
    ranks = fr.get("avg_ranks_sorted") or {}
    if ranks:
        out += ["<h3>Average ranks over the tasks (1 = best)</h3>",
                "<p class='muted'>A bar joins arms that every pair's Wilcoxon test with Holm's "
                "correction could not tell apart.</p>",
                critical_difference_svg(list(ranks.values()), across.cliques,
                                        list(ranks))]  # fmt: skip
    names = list(next(iter(doc.tasks.values())).arms)
    k = -1.0 if doc.experiment.direction == "min" else 1.0
    scores = [[k * float(sub.arms[a].mean or 0.0) for a in names] for sub in doc.tasks.values()]
    prof = performance_profile(scores, names, measure="gap")
    out += ["<h3>Performance profile</h3>",
            "<p class='muted'>For each arm, the share of tasks on which its mean is within τ "
            f"(in {esc_text(doc.experiment.metric)}) of the best arm's.</p>",
            performance_profile_svg(list(prof.taus), [list(f) for f in prof.fractions],
                                    list(prof.names), measure="gap")]  # fmt: skip
    return out


def esc_text(s: str) -> str:
    return _html.escape(s)


def render_tex(
    doc: Analysis, one: Callable[[Analysis], str], escape_tex: Callable[[str], str]
) -> str:
    cols = ["arm", "verdict", "W/T/L", "$p$ (Holm)", "aggregate effect"]
    lines = [*[f"% {x}" for x in fmt.evaluation_lines(doc)], r"\begin{table}[t]", r"\centering",
             r"\caption{" + escape_tex(f"{doc.experiment.name}: verdicts across {_title(doc)}")
             + "}", r"\begin{tabular}{llrrl}", r"\toprule", " & ".join(cols) + r" \\",
             r"\midrule"]  # fmt: skip
    for c in doc.across.comparisons if doc.across else []:
        cells = row(c)
        lines.append(" & ".join(escape_tex(x) for x in (cells[0], c.verdict or "—", cells[3],
                                                         cells[5], cells[7])) + r" \\")  # fmt: skip
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    for _task, sub in (doc.tasks or {}).items():
        lines.append(one(sub))
    return "\n".join(lines)
