"""The tuning part of a report, for the terminal, Markdown and HTML (LaTeX: :mod:`.tex`).

When every arm was tuned with the same budget, the report shows, after the verdicts: the
verdicts of the arms at their spec values next to the verdicts after equal tuning, with one
line in plain words per arm; how each arm was tuned (configurations finished and failed, the
best one, the spec values that were only starting points, what tuning cost next to the
evaluation); the tuning curve (expected best validation score after k configurations, with its
interval); and which hyperparameters mattered. Every line is derived from the document.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from rich.markup import escape as rich_escape
from rich.table import Table
from rich.text import Text

from fairtrial.report import fmt, svg

if TYPE_CHECKING:
    from fairtrial.results import Analysis, Comparison, Tuning
    from fairtrial.tuning.records import ArmTuning


# -- what every format shows ----------------------------------------------------------------------
@dataclass(frozen=True)
class VerdictPair:
    """One comparison before and after equal tuning (either side may be missing)."""

    arm: str
    against: str
    untuned: Comparison | None
    tuned: Comparison | None


def verdict_pairs(doc: Analysis) -> list[VerdictPair]:
    """The untuned verdicts, each with the tuned verdict of the same arm and opponent."""
    t = doc.tuning
    if t is None:
        return []
    tuned = {c.key: c for c in doc.judged}
    return [VerdictPair(u.arm, u.against, u, tuned.get(u.key)) for u in t.untuned]


def meaning(untuned: str | None, tuned: str | None) -> str:
    """What a change of verdict from the spec values to equal tuning means, in words."""
    if untuned is None or tuned is None:
        return "no tuned verdict to compare with" if tuned is None else "no untuned verdict"
    if untuned == "better" and tuned == "better":
        return "the gain holds after equal tuning"
    if untuned == "better" and tuned == "equivalent":
        return "the gain came from tuning"
    if untuned == "better" and tuned == "inconclusive":
        return "the gain is not confirmed after equal tuning"
    if untuned == "better" and tuned == "worse":
        return "the gain reverses after equal tuning"
    if tuned == "better":
        return "better only once every arm is tuned equally"
    if untuned == tuned:
        return "the verdict holds after equal tuning"
    return f"the verdict changes from {untuned} to {tuned} with equal tuning"


def pair_line(p: VerdictPair) -> str:
    """``proposed: better untuned, equivalent after equal tuning: the gain came from tuning``."""
    who = p.arm if p.against == "baseline" else f"{p.arm} vs {p.against}"
    u = p.untuned.verdict if p.untuned else None
    v = p.tuned.verdict if p.tuned else None
    return (
        f"{who}: {u or 'no verdict'} untuned, {v or 'no verdict'} after equal tuning: "
        f"{meaning(u, v)}"
    )


def effect(c: Comparison | None) -> str:
    if c is None:
        return "—"
    return f"{fmt.signed(c.effect)} {fmt.interval(c.interval, sign=True)}"


def no_untuned(t: Tuning) -> str:
    return t.untuned_note or "no verdicts of the arms at their spec values"


def pair_lines(doc: Analysis) -> list[str]:
    """One line in words per untuned verdict, then the note on what they mean (if any)."""
    t = doc.tuning
    assert t is not None
    return [pair_line(p) for p in verdict_pairs(doc)] + ([t.untuned_note] if t.untuned_note else [])


def value(v: Any) -> str:
    """A hyperparameter's value: floats to 6 significant digits."""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def params(p: dict[str, Any]) -> str:
    """``lr=0.003, depth=4``."""
    return ", ".join(f"{k}={value(v)}" for k, v in p.items()) or "—"


def _wall_total(compute: dict[str, Any] | None) -> float | None:
    wall = ((compute or {}).get("figures") or {}).get("wall_time") or {}
    total = wall.get("total")
    return None if total is None else float(total)


#: the per-arm table's headings (every format)
ARM_HEADS = (
    "arm",
    "configurations",
    "best",
    "best params",
    "validation score",
    "tuning wall time",
    "evaluation wall time",
)


def arm_rows(doc: Analysis) -> list[list[str]]:
    """One row per tuned arm: budget, finished/failed, best configuration, compute."""
    t = doc.tuning
    assert t is not None
    rows = []
    for name, a in t.arms.items():
        status = [tr.status for tr in a.trials]
        failed = sum(s in ("failed", "diverged") for s in status)
        counts = f"{status.count('finished')} finished, {failed} failed of {t.budget}"
        if status.count("diverged"):
            counts += f" ({status.count('diverged')} diverged)"
        if status.count("pending"):
            counts += f", {status.count('pending')} pending"
        summary = doc.arms.get(name)
        evaluation = (
            summary.compute.figure("wall_time").total or summary.compute.wall_time_total_s
            if summary
            else None
        )
        rows.append(
            [
                name,
                counts,
                f"#{a.best.index}" if a.best else "none finished",
                params(a.best.params) if a.best else "—",
                fmt.num(a.best.score) if a.best else "—",
                fmt.si(_wall_total(a.compute), "s"),
                fmt.si(evaluation, "s"),
            ]
        )
    return rows


def starting_notes(t: Tuning) -> list[str]:
    """For each component of an arm that tuning also set: its spec value was a starting point."""
    out = []
    for name, a in t.arms.items():
        for key, spec_value in a.starting_points.items():
            if a.best is not None and key in a.best.params:
                chose = f"tuning chose {value(a.best.params[key])}"
            else:
                chose = "no configuration finished, so tuning chose no value"
            out.append(
                f"{name}: {key} = {value(spec_value)} in the spec was only a starting point: "
                f"{chose}"
            )
    return out


def compute_line(t: Tuning) -> str | None:
    """Tuning against evaluation compute, summed over every arm."""
    c = t.compute or {}
    tune, ev = c.get("tuning") or {}, c.get("evaluation") or {}
    if not tune and not ev:
        return None
    line = (
        f"compute: tuning {fmt.si(tune.get('wall_time_s'), 's')} wall time over "
        f"{tune.get('trials', '—')} trials (every arm); evaluation "
        f"{fmt.si(ev.get('wall_time_s'), 's')} over {ev.get('trials', '—')} trials"
    )
    if tune.get("wall_time_s") and ev.get("wall_time_s"):
        line += f": tuning took {tune['wall_time_s'] / ev['wall_time_s']:.3g}× the evaluation"
    return line


def curve_ks(budget: int) -> list[int]:
    """k = 1, 2, 4, 8, ... and the budget itself."""
    ks, k = [], 1
    while k < budget:
        ks.append(k)
        k *= 2
    return [*ks, budget] if budget >= 1 else []


def curve_rows(t: Tuning) -> tuple[list[str], list[list[str]], list[str]]:
    """The tuning curve table: headings, one row per k shown, and how each curve was made."""
    arms = {n: a.curve for n, a in t.arms.items() if a.curve and a.curve.k}
    if not arms:
        return [], [], []
    budget = max(max(c.k) for c in arms.values())
    rows = []
    for k in curve_ks(budget):
        row = [str(k)]
        for c in arms.values():
            if k in c.k:
                i = c.k.index(k)
                iv = (c.low[i], c.high[i]) if i < min(len(c.low), len(c.high)) else None
                row.append(f"{fmt.num(c.expected[i])} {fmt.interval(iv)}".strip())
            else:
                row.append("—")
        rows.append(row)
    notes = []
    for name, c in arms.items():
        how = "; ".join(x for x in (c.interval_method, c.failed_as) if x)
        if how:
            notes.append(f"{name}: {how}")
    return ["k", *arms], rows, notes


def importance(a: ArmTuning) -> tuple[str, list[tuple[str, str]]]:
    """An arm's importance: the line that names the evaluator (or why it is missing), rows."""
    imp = a.importance
    if imp is None:
        return f"{a.arm}: hyperparameter importance not computed", []
    rows = [(k, f"{v:.3f}") for k, v in sorted(imp.values.items(), key=lambda kv: -kv[1])]
    line = f"{a.arm}: importance by {imp.evaluator or 'an unnamed evaluator'}"
    if imp.note:
        line += f" ({imp.note})" if rows else f": missing: {imp.note}"
    elif not rows:
        line += ": missing"
    return line, rows


def curve_title(t: Tuning) -> str:
    better = "lower" if t.direction == "min" else "higher"
    return f"Tuning curves: expected best {t.objective} after k configurations ({better} is better)"


def lead(t: Tuning) -> str:
    return (
        f"Every arm tried {t.budget} configurations ({t.sampler} sampler, seed {t.root_seed}, "
        f"{t.seeds} tuning seed(s) each) on validation {t.objective}; each arm's best "
        "configuration then ran on the experiment's fresh paired seeds."
    )


# -- terminal -------------------------------------------------------------------------------------
def text_parts(doc: Analysis) -> list[Any]:
    """Rich renderables of the tuning part (nothing when the experiment was not tuned)."""
    t = doc.tuning
    if t is None:
        return []
    parts: list[Any] = [Text(lead(t))]
    pairs = verdict_pairs(doc)
    if pairs:
        tab = Table(
            title="Untuned vs tuned: the verdicts at the spec values and after equal tuning"
        )
        for col in ("arm", "vs", "untuned", "untuned effect", "tuned", "tuned effect"):
            tab.add_column(col, justify="right" if "effect" in col else "left")
        for p in pairs:
            tab.add_row(
                rich_escape(p.arm),
                rich_escape(p.against),
                _styled(p.untuned),
                effect(p.untuned),
                _styled(p.tuned),
                effect(p.tuned),
            )
        parts += [tab, Text("\n".join(pair_lines(doc)))]
    else:
        parts.append(Text(f"Untuned vs tuned: {no_untuned(t)}", style="dim"))
    tab = Table(title=f"Tuning of each arm (validation {t.objective}, {t.direction})")
    for i, h in enumerate(ARM_HEADS):
        tab.add_column(h, justify="left" if i < 4 else "right")
    for row in arm_rows(doc):
        tab.add_row(*(rich_escape(v) for v in row))
    parts.append(tab)
    notes = starting_notes(t) + ([line] if (line := compute_line(t)) else [])
    if notes:
        parts.append(Text("\n".join(notes)))
    heads, rows, how = curve_rows(t)
    if rows:
        tab = Table(title=curve_title(t))
        for i, h in enumerate(heads):
            tab.add_column(rich_escape(h), justify="right" if i else "left")
        for row in rows:
            tab.add_row(*row)
        parts += [tab, Text("\n".join(how), style="dim")]
    for a in t.arms.values():
        line, imp = importance(a)
        if imp:
            tab = Table(title=rich_escape(line))
            tab.add_column("hyperparameter")
            tab.add_column("importance", justify="right")
            for k, v in imp:
                tab.add_row(rich_escape(k), v)
            parts.append(tab)
        else:
            parts.append(Text(line, style="dim"))
    return parts


def _styled(c: Comparison | None) -> Text:
    if c is None:
        return Text("—")
    return Text(fmt.verdict(c), style=fmt.STYLES[c.verdict or "inconclusive"])


# -- Markdown -------------------------------------------------------------------------------------
def markdown(doc: Analysis) -> list[str]:
    """The tuning part as Markdown lines (none when the experiment was not tuned)."""
    t = doc.tuning
    if t is None:
        return []
    out = ["### Untuned vs tuned", "", lead(t), ""]
    pairs = verdict_pairs(doc)
    if pairs:
        out += [
            "| arm | vs | untuned | untuned effect | tuned | tuned effect |",
            "|---|---|---|---:|---|---:|",
        ]
        out += [
            f"| {p.arm} | {p.against} | {fmt.verdict(p.untuned) if p.untuned else '—'} | "
            f"{effect(p.untuned)} | {fmt.verdict(p.tuned) if p.tuned else '—'} | "
            f"{effect(p.tuned)} |"
            for p in pairs
        ]
        out += [""] + [f"- {line}" for line in pair_lines(doc)] + [""]
    else:
        out += [no_untuned(t), ""]
    out += [
        "### Tuning",
        "",
        "| " + " | ".join(ARM_HEADS) + " |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in arm_rows(doc)]
    notes = starting_notes(t) + ([line] if (line := compute_line(t)) else [])
    out += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    heads, rows, how = curve_rows(t)
    if rows:
        out += [
            f"#### {curve_title(t)}",
            "",
            "| " + " | ".join(_md_cell(h) for h in heads) + " |",
            "|---:|" + "---:|" * (len(heads) - 1),
        ]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out += [""] + [f"- {n}" for n in how] + ([""] if how else [])
    out += ["#### Hyperparameter importance", ""]
    for a in t.arms.values():
        line, imp = importance(a)
        out += [line, ""]
        if imp:
            out += ["| hyperparameter | importance |", "|---|---:|"]
            out += [f"| {_md_cell(k)} | {v} |" for k, v in imp] + [""]
    return out


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


# -- HTML -----------------------------------------------------------------------------------------
def html(doc: Analysis) -> list[str]:
    """The tuning part as HTML (escaped), its curve figure included."""
    t = doc.tuning
    if t is None:
        return []
    e = escape
    out = ["<h2>Untuned vs tuned</h2>", f"<p class='muted'>{e(lead(t))}</p>"]
    pairs = verdict_pairs(doc)
    if pairs:
        out.append(
            "<table class='tuning-verdicts'><tr><th class='l'>arm</th><th class='l'>vs</th>"
            "<th class='l'>untuned</th><th>untuned effect</th><th class='l'>tuned</th>"
            "<th>tuned effect</th></tr>"
        )
        for p in pairs:
            out.append(
                f"<tr><td class='l'>{e(p.arm)}</td><td class='l'>{e(p.against)}</td>"
                f"{_verdict_cell(p.untuned)}<td>{e(effect(p.untuned))}</td>"
                f"{_verdict_cell(p.tuned)}<td>{e(effect(p.tuned))}</td></tr>"
            )
        out.append("</table><ul>" + "".join(f"<li>{e(line)}</li>" for line in pair_lines(doc)))
        out.append("</ul>")
    else:
        out.append(f"<p>{e(no_untuned(t))}</p>")
    out.append("<h2>Tuning</h2><table class='tuning-arms'><tr>")
    out.append(
        "".join(f"<th{' class=l' if i < 4 else ''}>{e(h)}</th>" for i, h in enumerate(ARM_HEADS))
    )
    out.append("</tr>")
    for row in arm_rows(doc):
        cells = "".join(f"<td{' class=l' if i < 4 else ''}>{e(v)}</td>" for i, v in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    notes = starting_notes(t) + ([line] if (line := compute_line(t)) else [])
    if notes:
        out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    fig = curve_figure(doc)
    if fig:
        _, _, how = curve_rows(t)
        out += [
            f"<div class='figs'>{fig}</div>",
            "<ul class='muted'>" + "".join(f"<li>{e(n)}</li>" for n in how) + "</ul>",
        ]
    out.append("<h3>Hyperparameter importance</h3>")
    for a in t.arms.values():
        line, imp = importance(a)
        out.append(f"<p>{e(line)}</p>")
        if imp:
            out.append(
                "<table class='tuning-importance'><tr><th class='l'>hyperparameter</th>"
                "<th>importance</th></tr>"
                + "".join(f"<tr><td class='l'>{e(k)}</td><td>{v}</td></tr>" for k, v in imp)
                + "</table>"
            )
    return out


def _verdict_cell(c: Comparison | None) -> str:
    if c is None:
        return "<td class='l'>—</td>"
    v = c.verdict or "inconclusive"
    return f"<td class='l {v}' title='{escape(c.reason or '')}'>{escape(fmt.verdict(c))}</td>"


def curve_figure(doc: Analysis) -> str | None:
    """Expected best validation score against k per arm, with its interval band (SVG)."""
    t = doc.tuning
    if t is None:
        return None
    arms = {n: a.curve for n, a in t.arms.items() if a.curve and a.curve.k and a.curve.expected}
    if not arms:
        return None
    xs = [float(k) for c in arms.values() for k in c.k]
    ys = [float(v) for c in arms.values() for v in (*c.expected, *c.low, *c.high)]
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.06 or (abs(hi) * 0.1 or 1.0)
    log_x = max(xs) > 64
    fig = svg.Figure(
        (min(xs), max(xs)),
        (lo - pad, hi + pad),
        width=680,
        title=curve_title(t)[:90],
        x_label="k: configurations tried" + (" (log scale)" if log_x else ""),
        y_label=f"expected best {t.objective}",
        log_x=log_x,
        margin=(34, 170, 46, 64),
    )
    names = list(doc.arms)
    order = {n: (names.index(n) if n in names else len(names) + i) for i, n in enumerate(arms)}
    for name, c in arms.items():
        col = svg.color(order[name])
        ks = [float(k) for k in c.k]
        if len(ks) > 1:
            if len(c.low) == len(ks) and len(c.high) == len(ks):
                fig.band(ks, c.low, c.high, col)
            fig.polyline(ks, c.expected, col, width=1.8)
        else:
            fig.point(ks[0], c.expected[0], col, title=f"{name}: {c.expected[0]}")
    fig.legend([(n[:24], svg.color(order[n])) for n in arms])
    return fig.svg("tuning curves")
