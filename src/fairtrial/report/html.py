"""One self-contained HTML file: tables, inline SVG figures, no script, nothing fetched.

Figures: the per-seed paired plot (one line per seed across arms), learning curves with interval
bands across seeds, the forest plot of every comparison and ablation, the metric against
compute with its Pareto front, and the tuning curves when every arm was tuned. Every string
that comes from a spec, a recipe or a ledger is escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from fairtrial import record
from fairtrial.report import claims, fmt, svg, tuning

if TYPE_CHECKING:
    from fairtrial.results import Analysis, ArmCompute, Comparison, Interaction

#: the colour of each verdict in figures (the CSS classes above colour the words alike)
VERDICT_COLOURS = {
    "better": "#117733", "faster": "#117733", "cheaper": "#117733",
    "worse": "#b2182b", "slower": "#b2182b", "costlier": "#b2182b",
    "equivalent": "#0072B2", "same": "#0072B2",
}  # fmt: skip
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .6em;border-bottom:1px solid #eee;
text-align:right;vertical-align:middle}th{background:#f6f6f6}td.l,th.l{text-align:left}
.better,.faster,.cheaper{color:#117733;font-weight:600}
.worse,.slower,.costlier{color:#b2182b;font-weight:600}
.equivalent,.same{color:#0072B2;font-weight:600}.inconclusive{color:#a66f00;font-weight:600}
.invalid{color:#882255;font-weight:600}
.muted{color:#666}.figs{display:flex;flex-wrap:wrap;gap:1.2em}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .title{font-weight:600;font-size:12px}
svg line{stroke:#333}svg line.grid{stroke:#eee}code{background:#f3f3f3;padding:0 .25em}
.ok{color:#117733}.bad{color:#b2182b}
"""


def _e(x: Any) -> str:
    return escape(str(x))


def render_html(
    doc: Analysis, details: dict[str, Any] | None = None, *, fragment: bool = False
) -> str:
    """The report page; ``details`` adds the learning curves (``{"curves": ...}`` of
    :func:`fairtrial.analysis.learning_curves`).

    ``fragment``: the report as one ``<div>`` with its own stylesheet, to embed in another
    page (a Jupyter notebook's output cell) rather than a whole document.
    """
    details = details or {}
    e = doc.experiment
    if doc.tasks:
        from fairtrial.report import tasks as over_tasks

        each = over_tasks.render_html_body(doc, lambda d: render_html(d, fragment=True))
        return _page(each, e.name, fragment)
    conf = f"{doc.settings['confidence']:.0%}"
    body: list[str] = [
        f"<h1>{_e(e.name)}</h1>",
        f'<p class="muted">experiment <code>{_e(e.id)}</code> · task <code>{_e(e.task)}'
        f"</code> · metric {_e(e.metric)} ({fmt.direction_word(doc)} is better) · "
        f"{e.seeds} seeds · {e.trials} trials</p>",
    ]
    if e.claim:
        body.append(f"<p><strong>Claim:</strong> {_e(e.claim)}</p>")
    body.append(
        "<ul class='muted'>" + "".join(f"<li>{_e(x)}</li>" for x in fmt.rigor_lines(doc)) + "</ul>"
    )
    if doc.comparisons:
        body += [
            f"<h2>Verdicts</h2><p class='muted'>Effect: the arm minus the baseline, positive is "
            f"better, with its {conf} {_e(fmt.interval_kind(doc))} interval.</p>",
            _verdict_table(doc.comparisons, "vs"),
        ]
    if doc.ablations:
        body += [
            "<h2>Ablations</h2><p class='muted'>Contribution of each component: the arm minus "
            "the arm without it.</p>",
            _verdict_table(doc.ablations, "removed"),
        ]
        for inter in doc.interactions:
            if inter.interaction is not None:
                body.append(f"<p>{_e(_interaction(inter, conf))}</p>")
    body += claims.html(doc)
    body += tuning.html(doc)
    figs = [
        _paired_plot(doc),
        _forest_plot(doc),
        _curves_plot(details.get("curves"), doc),
        _compute_plot(doc),
    ]
    body += ["<h2>Figures</h2>", '<div class="figs">', *[f for f in figs if f], "</div>"]
    body += ["<h2>Arms</h2>", _arms_table(doc, conf)]
    heads, rows, notes = fmt.compute_rows(doc)
    if len(heads) > 1:
        body.append("<h2>Compute per trial</h2><table><tr>")
        body.append(
            "".join(f"<th{' class=l' if i == 0 else ''}>{_e(h)}</th>" for i, h in enumerate(heads))
        )
        body.append("</tr>")
        for row in rows:
            body.append(
                "<tr>"
                + "".join(
                    f"<td{' class=l' if i == 0 else ''}>{_e(v)}</td>" for i, v in enumerate(row)
                )
                + "</tr>"
            )
        body.append(
            "</table><ul class='muted'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
        )
    if line := fmt.seed_plan_line(doc):
        body.append(f"<p>{_e(line)}</p>")
    fails = [(n, f) for n, a in doc.arms.items() for f in a.failures]
    if fails:
        body.append("<h2>Failures</h2><p class='muted'>Counted, not averaged in.</p><ul>")
        body += [
            f"<li>{_e(n)} seed {f.seed}: {_e(f.status)}: {_e(f.reason)}</li>" for n, f in fails[:50]
        ]
        body.append("</ul>")
    if doc.predictions:
        body.append(_predictions(doc.predictions))
    body += ["<h2>Methods</h2><ul>"] + [f"<li>{_e(m)}</li>" for m in fmt.methods(doc)] + ["</ul>"]
    prov = doc.provenance or {}
    if prov:
        body += [
            "<h2>Provenance</h2><table>",
            *[
                f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_e(v)}</td></tr>"
                for k, v in prov.items()
            ],
            "</table>",
        ]
    return _page(body, e.name, fragment)


def _page(body: list[str], title: str, fragment: bool) -> str:
    """``body`` as a whole page, or as one ``<div>`` with its own scoped stylesheet."""
    if fragment:
        scoped = re.sub(
            r"([^{}]+)\{",
            lambda m: (
                ",".join(
                    ".fairtrial-report"
                    if sel.strip() == "body"
                    else f".fairtrial-report {sel.strip()}"
                    for sel in m.group(1).split(",")
                )
                + "{"
            ),
            _CSS,
        )
        return f"<div class='fairtrial-report'><style>{scoped}</style>" + "\n".join(body) + "</div>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)} · fairtrial report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "\n<p class='muted'>Made by fairtrial.</p></body></html>\n"
    )


#: the report's stylesheet, which the registry's pages share
CSS = _CSS


def figures(doc: Analysis, curves: dict[str, Any] | None = None) -> dict[str, str]:
    """The report's figures as inline SVG (escaped), by name; figures without data are left out."""
    made = {
        "paired": _paired_plot(doc),
        "forest": _forest_plot(doc),
        "curves": _curves_plot(curves, doc),
        "compute": _compute_plot(doc),
        "tuning": tuning.curve_figure(doc),
    }
    return {k: v for k, v in made.items() if v}


def verdict_table(rows: Sequence[Comparison], against: str) -> str:
    """The verdicts (``against="vs"``) or ablations (``"removed"``) table as escaped HTML."""
    return _verdict_table(rows, against)


def arms_table(doc: Analysis) -> str:
    """The per-arm table (n, failures, mean, interval) as escaped HTML."""
    return _arms_table(doc, f"{doc.settings['confidence']:.0%}")


def draw_input(x: list[Any] | None, how: dict[str, Any] | None) -> str:
    """A test input drawn as SVG (image, signal) or as escaped text."""
    return _draw(x, how or {})


def _verdict_table(rows: Sequence[Comparison], against: str) -> str:
    head = (
        f"<table><tr><th class='l'>arm</th><th class='l'>{against}</th><th class='l'>verdict</th>"
        "<th>effect</th><th>interval</th><th>p</th><th>p adj.</th><th>d<sub>z</sub></th>"
        "<th>P(better)</th><th>pairs</th><th class='l'>power</th><th class='l'>cost</th></tr>"
    )
    out = [head]
    for c in rows:
        v = c.verdict or "inconclusive"
        other = (
            f"{getattr(c, 'removed', '')} ({getattr(c, 'ablation_arm', '')})"
            if against == "removed"
            else c.against
        )
        out.append(
            f"<tr><td class='l'>{_e(c.arm)}</td><td class='l'>{_e(other)}</td>"
            f"<td class='l {v}' title='{_e(c.reason or '')}'>{_e(fmt.verdict(c))}</td>"
            f"<td>{fmt.signed(c.effect)}</td><td>{fmt.interval(c.interval, sign=True)}</td>"
            f"<td>{fmt.pvalue(c.p)}</td><td>{fmt.pvalue(c.p_adjusted)}</td>"
            f"<td>{fmt.num(c.d_z, 2)}</td><td>{fmt.prob(c)}</td><td>{c.n_pairs}</td>"
            f"<td class='l'>{_e(fmt.power_note(c))}</td><td class='l'>{_e(fmt.cost_text(c))}</td>"
            "</tr>"
        )
    return "".join(out) + "</table>"


def _arms_table(doc: Analysis, conf: str) -> str:
    out = [
        "<table><tr><th class='l'>arm</th><th class='l'>components</th><th>n</th>"
        f"<th>failed</th><th>mean</th><th>sd</th><th>{conf} CI</th><th class='l'>per seed</th></tr>"
    ]
    for name, a in doc.arms.items():
        out.append(
            f"<tr><td class='l'>{_e(name)}</td><td class='l'>{_e(fmt.components(a.components))}"
            f"</td><td>{a.n}</td><td>{a.failed}</td><td>{fmt.num(a.mean)}</td>"
            f"<td>{fmt.num(a.sd)}</td><td>{fmt.interval(a.interval)}</td>"
            f"<td class='l'>{_e(fmt.values(a.values, 12))}</td></tr>"
        )
    return "".join(out) + "</table>"


def _interaction(inter: Interaction, conf: str) -> str:
    kind = (
        "the components add up (no interaction detected)"
        if inter.additive
        else "the components interact"
    )
    return (
        f"{inter.arm}: total effect {fmt.signed(inter.total_effect)}, sum of "
        f"contributions {fmt.signed(inter.sum_of_contributions)}, interaction "
        f"{fmt.signed(inter.interaction)} {fmt.interval(inter.interval, sign=True)} "
        f"({conf}): {kind}."
    )


def _range(vals: list[float], pad: float = 0.06) -> tuple[float, float]:
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or (abs(hi) * 0.1 or 1.0)
    return lo - span * pad, hi + span * pad


def _paired_plot(doc: Analysis) -> str | None:
    arms = [n for n, a in doc.arms.items() if a.values]
    if len(arms) < 2:
        return None
    vals = [v for n in arms for v in doc.arms[n].values if v is not None]
    vals += [v for n in arms for v in doc.arms[n].interval or () if v is not None]
    longest = max(len(n) for n in arms)
    fig = svg.Figure(
        (-0.5, len(arms) - 0.5),
        _range(vals),
        width=max(360, 90 * len(arms) + 110),
        height=300 + 5 * min(longest, 30),
        title="Per seed: one line per seed across arms",
        y_label=f"test {doc.experiment.metric}",
        x_ticks=[(i, n[:30]) for i, n in enumerate(arms)],
        rotate_x=True,
        margin=(34, 20, 30 + 5 * min(longest, 30), 64),
    )
    by_seed: dict[int, dict[int, float]] = {}
    for i, n in enumerate(arms):
        for s, v in zip(doc.arms[n].seeds, doc.arms[n].values, strict=True):
            if v is not None:
                by_seed.setdefault(s, {})[i] = v
    for pts in by_seed.values():
        xs = sorted(pts)
        if len(xs) > 1:
            fig.polyline(xs, [pts[x] for x in xs], "#888", width=1, opacity=0.55)
    for i, n in enumerate(arms):
        a = doc.arms[n]
        for s, v in zip(a.seeds, a.values, strict=True):
            if v is not None:
                fig.point(i, v, svg.color(i), r=2.5, title=f"{n} seed {s}: {v}")
        if a.interval and a.interval[0] is not None and a.interval[1] is not None:
            fig.segment(i + 0.12, a.interval[0], i + 0.12, a.interval[1], "#000")
        if a.mean is not None:
            fig.point(i + 0.12, a.mean, "#000", r=4, title=f"{n} mean {a.mean}")
    return fig.svg("per-seed paired plot")


def _forest_plot(doc: Analysis) -> str | None:
    rows = [(f"{c.arm} vs {c.against}", c) for c in doc.comparisons]
    rows += [(f"{c.arm}: {c.removed}", c) for c in doc.ablations]
    rows = [
        (label, c)
        for label, c in rows
        if c.interval and None not in c.interval and c.effect is not None
    ]
    if not rows:
        return None
    se = doc.settings.get("smallest_effect")
    xs = (
        [float(v) for _, c in rows for v in c.interval or () if v is not None]
        + [0.0]
        + ([se, -se] if se else [])
    )
    height = 60 + 26 * len(rows)
    fig = svg.Figure(
        _range(xs),
        (-0.5, len(rows) - 0.5),
        width=620,
        height=height + 30,
        title="Effects and contributions (+ is better)",
        x_label="paired difference",
        y_ticks=False,
        margin=(34, 20, 46, 260),
    )
    if se:
        fig.vspan(-se, se)
    fig.vline(0.0)
    for i, (label, c) in enumerate(rows):
        y = len(rows) - 1 - i
        col = VERDICT_COLOURS.get(c.verdict or "", "#a66f00")
        low, high = c.interval or (0.0, 0.0)
        fig.segment(float(low or 0.0), y, float(high or 0.0), y, col)
        fig.point(float(c.effect or 0.0), y, col, r=4, title=f"{label}: {c.effect}")
        fig.text(fig.left - 8, fig.sy(y) + 4, label[:40], anchor="end", px=True)
    return fig.svg("forest plot")


def _curves_plot(curves: dict[str, Any] | None, doc: Analysis) -> str | None:
    if not curves or not curves.get("arms"):
        return None
    arms = curves["arms"]
    xs = [s for a in arms.values() for s in a["steps"]]
    ys = [v for a in arms.values() for v in a["low"] + a["high"]]
    fig = svg.Figure(
        (min(xs), max(xs)),
        _range(ys),
        width=760,
        title=f"Learning curves: {curves['metric']}, mean and "
        f"{doc.settings['confidence']:.0%} band across seeds",
        x_label="step",
        y_label=str(curves["metric"]),
        margin=(34, 180, 46, 64),
    )
    names = list(doc.arms)
    for name, a in arms.items():
        col = svg.color(names.index(name) if name in names else 0)
        if len(a["steps"]) > 1:
            fig.band(a["steps"], a["low"], a["high"], col)
            fig.polyline(a["steps"], a["mean"], col, width=1.8)
        else:
            fig.point(a["steps"][0], a["mean"][0], col)
    fig.legend([(n[:26], svg.color(names.index(n) if n in names else 0)) for n in arms])
    return fig.svg("learning curves")


def _compute_plot(doc: Analysis) -> str | None:
    """Test metric against a compute figure per arm, with the Pareto front."""
    pts = []
    label = ""
    for name, a in doc.arms.items():
        x, label = _compute_x(a.compute)
        if x is not None and a.mean is not None and x > 0:
            pts.append((name, x, a.mean))
    if len(pts) < 2:
        return None
    xs = [p[1] for p in pts]
    log_x = max(xs) / min(xs) > 30
    lo, hi = min(xs), max(xs)
    if not log_x:
        lo, hi = _range(xs)
        lo, hi = max(lo, 0.0), hi + (hi - lo) * 0.1
    else:
        lo, hi = lo / 1.5, hi * 1.5
    fig = svg.Figure(
        (lo, hi),
        _range([p[2] for p in pts]),
        width=620,
        title="Metric against compute (Pareto front dashed)",
        x_label=label,
        y_label=f"test {doc.experiment.metric}",
        log_x=log_x,
        margin=(34, 150, 46, 64),
    )
    sign = record.sign(doc.experiment.direction)
    front = []
    best = -math.inf
    for _, x, y in sorted(pts, key=lambda p: (p[1], -sign * p[2])):
        if sign * y > best:
            front.append((x, y))
            best = sign * y
    if len(front) > 1:
        fig.polyline([p[0] for p in front], [p[1] for p in front], "#555", dash="5 3")
    names = list(doc.arms)
    for name, x, y in pts:
        fig.point(x, y, svg.color(names.index(name)), r=5, title=f"{name}: {y} at {x:.4g}")
        fig.text(x, y, f" {name}")
    return fig.svg("metric against compute")


def _compute_x(c: ArmCompute) -> tuple[float | None, str]:
    """The best compute figure an arm has: FLOPs when counted, else train time, else wall time."""
    flops = c.figure("flops").mean
    if flops:
        return float(flops), "FLOPs per trial (matmul/conv, counted on one step)"
    train = c.figure("train_time").mean
    if train:
        return float(train), "train time per trial (s)"
    wall = c.wall_time_mean_s
    if wall:
        return float(wall), "wall time per trial (s)"
    return None, ""


def _predictions(pred: dict[str, Any]) -> str:
    if not pred["examples"]:
        return (
            f"<h2>Predictions</h2><p>The arms' majority predictions agree on all "
            f"{pred['n_test']} test examples.</p>"
        )
    arms = list(pred["examples"][0]["arms"])
    how = pred.get("input") or {}
    out = [
        "<h2>Where the arms disagree</h2>",
        f"<p>{_e(fmt.disagreement_line(pred))} Each cell: the label most seeds predicted, "
        "✓/✗ against the truth, and the share of seeds that predicted it. Majority-vote "
        "accuracy: "
        + ", ".join(f"{_e(a)} {v:.4f}" for a, v in pred["majority_vote_accuracy"].items())
        + ".</p>",
        "<table><tr><th>example</th><th>input</th><th>truth</th>"
        + "".join(f"<th>{_e(a)}</th>" for a in arms)
        + "</tr>",
    ]
    for ex in pred["examples"]:
        x = (pred.get("inputs") or {}).get(str(ex["index"]))
        out.append(
            f"<tr><td>#{ex['index']}</td><td>{_draw(x, how)}</td><td>{_e(ex['truth'])}</td>"
            + "".join(_cell(ex, a) for a in arms)
            + "</tr>"
        )
    return "".join(out) + "</table>"


def _cell(ex: dict[str, Any], arm: str) -> str:
    p = ex["arms"][arm]
    ok = p["prediction"] == ex["truth"]
    return (
        f"<td class='{'ok' if ok else 'bad'}'>{_e(p['prediction'])} {'✓' if ok else '✗'} "
        f"<span class='muted'>({p['agreement']:.0%})</span></td>"
    )


def _draw(x: list[Any] | None, how: dict[str, Any]) -> str:
    if x is None or not how:
        return ""
    if how.get("kind") == "image":
        rows, cols = how["shape"][:2]
        return svg.image([float(v) for v in x], (rows, cols))
    if how.get("kind") == "signal":
        return svg.signal([float(v) for v in x])
    return _e(" ".join(str(v) for v in x))
