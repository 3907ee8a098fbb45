"""What each change cost next to what it gained, the speed trial's guard, and a factorial
design's effects, in every report format.

The parts follow the verdicts: one line per comparison ("+0.025 [+0.021, +0.029] for 1.21×
the train time [1.15, 1.27]"), the cost verdicts figure by figure, the timing noise, and, when
the spec has a design, the table of effects sorted by size ("which components matter"), the
aliasing of a fraction, and the main-effects and interaction plots (HTML).
"""

from __future__ import annotations

from html import escape as _e
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fairtrial.claims import LOO_VS_FACTORIAL, cost_line, figure_words, ratio_text
from fairtrial.report import fmt

if TYPE_CHECKING:
    from fairtrial.claims import Design
    from fairtrial.results import Analysis, Comparison


def _label(c: Comparison) -> str:
    return f"{c.arm} vs {c.against}"


def gain_lines(doc: Analysis) -> list[str]:
    """One line per comparison with a cost: what it gained for what it cost."""
    out = []
    for c in doc.judged:
        if not c.costs:
            continue
        line = cost_line(c)
        if line:
            out.append(f"{_label(c)}: {line}")
    return out


def cost_rows(doc: Analysis) -> list[list[str]]:
    """comparison, figure, ratio [interval], pairs, p (Holm), verdict: every cost verdict."""
    rows = []
    for c in doc.judged:
        for figure, cv in (c.costs or {}).items():
            rows.append(
                [
                    _label(c),
                    figure_words(figure).removeprefix("the ")
                    + (f" ({cv.basis})" if cv.basis and cv.basis != figure else ""),
                    ratio_text(cv) + (" exact" if cv.exact else ""),
                    str(cv.n_pairs),
                    fmt.pvalue(cv.p_adjusted),
                    f"{fmt.MARKS.get(cv.verdict or 'inconclusive', '?')} {cv.verdict}",
                ]
            )
    return rows


COST_HEADS = ["comparison", "figure", "ratio (arm / against)", "pairs", "p (Holm)", "verdict"]


def noise_line(doc: Analysis) -> str:
    """The timing noise between repeated identical trials, or that none was measured."""
    n = doc.compute.timing_noise
    if not n:
        return (
            "Timing noise: not measured (no repeated identical trials: [experiment] "
            "timing_repeats = 3 runs three baseline trials twice; a speed trial does by "
            "default). Time verdicts rest on the seed-to-seed spread alone."
        )
    rel = n.get("spread")
    rel_text = "—" if rel is None else f"{100 * float(rel):.1f}%"
    return (
        f"Timing noise between repeated identical trials: {rel_text} "
        f"({str(n.get('figure', 'time')).replace('_', ' ')}, {n.get('n_values')} runs in "
        f"{n.get('n_groups')} groups); no time difference within it is called faster or slower."
    )


def speed_lines(doc: Analysis) -> list[str]:
    """A speed trial's verdicts, each with its guard in words."""
    out = []
    for c in doc.judged:
        if c.primary is None or c.guard is None:
            continue
        g = c.guard
        bound = "—" if g.lower is None else f"{g.lower:+.4g}"
        out.append(
            f"{_label(c)}: {c.verdict} ({figure_words(c.primary)}, metric as guard) — "
            f"{c.reason}. Guard: the metric's lower bound {bound} vs -{(g.margin or 0):g}: "
            + ("non-inferior" if g.non_inferior else "not shown non-inferior")
            + f" (metric verdict: {g.metric_verdict})."
        )
    return out


def design_rows(d: Design) -> list[list[str]]:
    """term, components, effect, interval, p (Holm), verdict, aliases: sorted by size."""
    return [
        [
            e.term,
            " × ".join(e.components),
            fmt.signed(e.estimate),
            fmt.interval(e.interval, sign=True),
            fmt.pvalue(e.p_adjusted),
            f"{fmt.MARKS.get(e.verdict or 'inconclusive', '?')} {e.verdict}",
            " = ".join(e.aliases) if e.aliases else "",
        ]
        for e in d.effects
    ]


DESIGN_HEADS = ["term", "components", "effect", "interval", "p (Holm)", "verdict", "aliases"]


def design_notes(d: Design) -> list[str]:
    """The design's legend, pooled higher-order terms, dropped seeds, and how it differs from
    leave-one-out."""
    notes = [d.text] if d.text else []
    if d.pooled and d.pooled.get("n_terms"):
        p = d.pooled
        notes.append(
            f"Higher-order interactions ({p.get('n_terms')}), pooled: RMS effect "
            f"{fmt.num(p.get('rms'))}, the largest {p.get('largest_term', '?')} = "
            f"{fmt.signed(p.get('largest'))}."
        )
    if d.dropped_seeds:
        notes.append(f"{d.dropped_seeds} seed(s) with a failed run left out of every estimate.")
    if d.n_seeds < 2:
        notes.append(f"{d.n_seeds} complete seed(s): at least 2 are needed to estimate effects.")
    notes.append(LOO_VS_FACTORIAL)
    return notes


def alias_rows(d: Design) -> list[list[str]]:
    rows = []
    for a in d.aliasing:
        term = str(a.get("term", ""))
        chain = a.get("aliases") or []
        rows.append([term, " = ".join(str(x) for x in chain) or "—", "clear" if a.get("clear")
                     else "aliased"])  # fmt: skip
    return rows


# -- formats ------------------------------------------------------------------------------------
def text_parts(doc: Analysis) -> list[Any]:
    parts: list[Any] = []
    if speed := speed_lines(doc):
        parts.append(Text("Speed trial\n" + "\n".join(speed)))
    if gains := gain_lines(doc):
        parts.append(Text("What it gained, for what it cost\n" + "\n".join(gains)))
    if rows := cost_rows(doc):
        t = Table(title="Costs, paired by seed (ratio: geometric mean of arm / against)")
        for h in COST_HEADS:
            t.add_column(h, justify="left" if h in ("comparison", "figure", "verdict") else "right")
        for r in rows:
            t.add_row(*(escape(v) for v in r))
        parts.append(t)
        parts.append(Text(noise_line(doc), style="dim"))
    if d := doc.design:
        t = Table(title=f"Which components matter: {d.name} (+ is better)")
        for h in DESIGN_HEADS:
            t.add_column(h, justify="right" if h in ("effect", "interval", "p (Holm)") else "left")
        for r in design_rows(d):
            t.add_row(*(escape(v) for v in r))
        parts.append(t)
        parts.append(Text("\n".join(design_notes(d)), style="dim"))
    return parts


def markdown(doc: Analysis) -> list[str]:
    out: list[str] = []
    if speed := speed_lines(doc):
        out += ["### Speed trial", ""] + [f"- {s}" for s in speed] + [""]
    if gains := gain_lines(doc):
        out += ["### What it gained, for what it cost", ""] + [f"- {g}" for g in gains] + [""]
    if rows := cost_rows(doc):
        out += [_md_table(COST_HEADS, rows), "", noise_line(doc), ""]
    if d := doc.design:
        out += [f"### Which components matter: {d.name}", "", _md_table(DESIGN_HEADS,
                design_rows(d)), ""]  # fmt: skip
        out += [f"- {n}" for n in design_notes(d)] + [""]
        if d.aliasing:
            out += ["Aliasing:", "", _md_table(["term", "alias chain", ""], alias_rows(d)), ""]
    return out


def _md_table(heads: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(heads: list[str], rows: list[list[str]], verdict_col: int) -> str:
    head = "".join(f"<th class='l'>{_e(h)}</th>" for h in heads)
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = "l"
            if i == verdict_col:
                cls += " " + v.split(" ")[-1]
            cells.append(f"<td class='{cls}'>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def html(doc: Analysis) -> list[str]:
    out: list[str] = []
    if speed := speed_lines(doc):
        out.append("<h2>Speed trial</h2><ul>" + "".join(f"<li>{_e(s)}</li>" for s in speed)
                   + "</ul>")  # fmt: skip
    if gains := gain_lines(doc):
        out.append(
            "<h2>What it gained, for what it cost</h2><ul>"
            + "".join(f"<li>{_e(g)}</li>" for g in gains)
            + "</ul>"
        )
    if rows := cost_rows(doc):
        out.append(_html_table(COST_HEADS, rows, 5))
        out.append(f"<p class='muted'>{_e(noise_line(doc))}</p>")
    if d := doc.design:
        out.append(f"<h2>Which components matter: {_e(d.name)}</h2>")
        out.append(_html_table(DESIGN_HEADS, design_rows(d), 5))
        out.append("".join(f"<p class='muted'>{_e(n)}</p>" for n in design_notes(d)))
        if d.aliasing:
            out.append(_html_table(["term", "alias chain", ""], alias_rows(d), -1))
        out.append(f"<div class='figs'>{''.join(design_figures(d, doc.experiment.metric))}</div>")
    return out


def design_figures(d: Design, metric: str) -> list[str]:
    """The main-effects plot, the interaction plots of the flagged (else the largest) two-factor
    interactions, and the effects sorted by size, as SVG."""
    from fairtrial.report import design_svg

    labels = [f"{letter}: {key}" for letter, key in d.factors.items()]
    figs = []
    if d.main_means:
        means = [d.main_means[letter] for letter in d.factors if letter in d.main_means]
        if len(means) == len(labels):
            figs.append(design_svg.main_effects_svg(means, labels, metric))
    pairs = [e.term for e in d.effects if e.order == 2 and e.verdict in ("better", "worse")]
    if not pairs:
        pairs = [e.term for e in d.effects if e.order == 2][:2]
    if d.pair_means and pairs:
        figs.append(design_svg.interaction_svg(d.pair_means, labels, metric, pairs[:4]))
    rows = [
        {**e.to_dict(), "low": e.interval[0], "high": e.interval[1]}
        for e in d.effects
        if e.interval is not None and None not in e.interval and e.estimate is not None
    ]
    if rows:
        figs.append(design_svg.effects_forest_svg(rows, metric=metric))
    return figs


def tex(doc: Analysis, esc: Any, marks: dict[str, str]) -> list[str]:
    """LaTeX: the gain-for-cost lines and the design's table (``esc`` escapes text, ``marks``
    are the verdicts' marks)."""
    out: list[str] = []
    if speed := speed_lines(doc):
        out += [r"\paragraph{Speed trial.} " + " ".join(esc(s) for s in speed), ""]
    if gains := gain_lines(doc):
        out += [r"\paragraph{What it gained, for what it cost.} " + "; ".join(esc(g) for g in
                gains) + ".", ""]  # fmt: skip
    if d := doc.design:
        out += [
            r"\begin{table}[t]\centering\small",
            rf"\caption{{Which components matter: {esc(d.name)}. "
            + esc(" ".join(design_notes(d)[-1:]))
            + "}",
            r"\begin{tabular}{llrlrl}\toprule",
            r"term & components & effect & interval & $p$ (Holm) & verdict \\ \midrule",
        ]
        for e, r in zip(d.effects, design_rows(d), strict=True):
            v = e.verdict or "inconclusive"
            out.append(" & ".join([*(esc(x) for x in r[:5]), f"{marks.get(v, '')} {v}"]) + r" \\")
        out += [r"\bottomrule\end{tabular}\end{table}", ""]
    return out
