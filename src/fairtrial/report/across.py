"""Figures of a claim across tasks: the critical-difference diagram and performance profiles.

Both take plain data (what :func:`fairtrial.stats.pairwise_wilcoxon_holm` and
:func:`fairtrial.stats.performance_profile` return) and give a string of inline SVG drawn with
:mod:`fairtrial.report.svg`, every text escaped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from html import escape

from fairtrial.report import svg

_CHAR_PX = 6.5  # about the width of one character at the figures' 11 px sans-serif
_ROW_PX = 18
_BAR_PX = 8


def _label_margin(labels: Sequence[str]) -> int:
    longest = max((len(s) for s in labels), default=0)
    return int(min(240, max(70, _CHAR_PX * longest + 24)))


def critical_difference_svg(
    avg_ranks: Sequence[float],
    cliques: Sequence[Sequence[str]],
    names: Sequence[str],
    *,
    title: str = "",
    width: int = 600,
) -> str:
    """A critical-difference diagram (Demšar 2006, Fig. 1; the Wilcoxon-Holm variant of
    Ismail Fawaz et al. 2019): the arms' average ranks on an axis from 1 (best, left) to
    ``k``, each marked by a dot (``class="rank"``) with a line to its name, the better half
    labelled on the left and the rest on the right; a thick bar (``class="clique"``) under
    the axis joins each group of arms that are not significantly different.

    ``avg_ranks[j]`` belongs to ``names[j]`` (any order); ``cliques`` are groups of names.
    """
    ranks = [float(r) for r in avg_ranks]
    labels = [str(n) for n in names]
    if len(ranks) != len(labels) or not labels:
        raise ValueError(
            f"avg_ranks and names need one entry per arm, got {len(ranks)} and {len(labels)}"
        )
    if not all(math.isfinite(r) for r in ranks):
        raise ValueError(f"avg_ranks must be finite numbers, got {ranks}")
    where = {name: j for j, name in enumerate(labels)}
    for group in cliques:
        unknown = [str(g) for g in group if str(g) not in where]
        if unknown:
            raise ValueError(f"clique {list(group)} names arms not in names: {unknown}")
    k = len(labels)
    order = sorted(range(k), key=lambda j: ranks[j])
    left_side = order[: (k + 1) // 2]
    right_side = order[(k + 1) // 2 :][::-1]  # the worst arm on the top row of its side
    text = [f"{labels[j]} ({ranks[j]:.2f})" for j in order]
    side = _label_margin(text)
    axis_y = 44 if title else 30
    bars_y = axis_y + 12
    rows_y = bars_y + _BAR_PX * len(cliques) + 10
    height = rows_y + _ROW_PX * max(len(left_side), len(right_side), 1) + 8
    hi = max(float(k), max(ranks))
    fig = svg.Figure(
        (1.0, hi if hi > 1.0 else 2.0),
        (0.0, 1.0),
        width=width,
        height=height,
        margin=(axis_y, side, 4, side),
    )
    fig.parts.clear()  # only the scale: the rank axis is drawn here, at the top
    p = fig.parts
    x_left, x_right = fig.sx(fig.x0), fig.sx(fig.x1)
    if title:
        p.append(f'<text x="{x_left:.1f}" y="16" class="title">{escape(title)}</text>')
    p.append(
        f'<line x1="{x_left:.1f}" x2="{x_right:.1f}" y1="{axis_y}" y2="{axis_y}" stroke="#000"/>'
    )
    for t in range(1, math.floor(fig.x1) + 1):
        x = fig.sx(t)
        p.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_y - 4}" y2="{axis_y}" stroke="#000"/>'
            f'<text x="{x:.1f}" y="{axis_y - 7}" text-anchor="middle">{t}</text>'
        )
    for i, group in enumerate(cliques):
        xs = [fig.sx(ranks[where[str(g)]]) for g in group]
        y = bars_y + _BAR_PX * i
        p.append(
            f'<line class="clique" x1="{min(xs) - 4:.1f}" x2="{max(xs) + 4:.1f}" '
            f'y1="{y}" y2="{y}" stroke="#000" stroke-width="3" stroke-linecap="round">'
            f"<title>{escape(', '.join(str(g) for g in group))}: "
            "no significant difference</title></line>"
        )
    for rows, to_left in ((left_side, True), (right_side, False)):
        for row, j in enumerate(rows):
            x = fig.sx(ranks[j])
            y = rows_y + _ROW_PX * row
            end = x_left - 6 if to_left else x_right + 6
            label = f"{labels[j]} ({ranks[j]:.2f})"
            p.append(
                f'<polyline points="{x:.1f},{axis_y} {x:.1f},{y} {end:.1f},{y}" fill="none" '
                f'stroke="{svg.color(order.index(j))}" stroke-width="1.2"/>'
            )
            p.append(
                f'<text x="{end + (-4 if to_left else 4):.1f}" y="{y + 4}" '
                f'text-anchor="{"end" if to_left else "start"}">{escape(label)}</text>'
            )
    for j in order:
        p.append(
            f'<circle class="rank" cx="{fig.sx(ranks[j]):.1f}" cy="{axis_y}" r="3.5" '
            f'fill="{svg.color(order.index(j))}"><title>{escape(labels[j])}: average rank '
            f"{ranks[j]:.3f}</title></circle>"
        )
    return fig.svg(title or "critical-difference diagram")


def performance_profile_svg(
    taus: Sequence[float],
    fractions: Sequence[Sequence[float]],
    names: Sequence[str],
    *,
    measure: str = "ratio",
    title: str = "",
) -> str:
    """Performance profiles (Dolan & Moré 2002) as step lines, one per arm
    (``class="profile"``): the share of tasks on which the arm is within ``tau`` of the best.

    ``fractions[j][i]`` is arm ``names[j]``'s share at ``taus[i]`` (ascending), as
    :func:`fairtrial.stats.performance_profile` gives them; ``measure`` (``"ratio"`` or
    ``"gap"``) only names the axis. The x axis is logarithmic when the ratios span more than
    a factor 20.
    """
    ts = [float(t) for t in taus]
    labels = [str(n) for n in names]
    if not ts or any(b < a for a, b in itertools.pairwise(ts)):
        raise ValueError(f"taus must be a non-empty ascending sequence, got {ts}")
    if len(fractions) != len(labels) or any(len(f) != len(ts) for f in fractions):
        raise ValueError(
            "fractions needs one row per name and one value per tau: "
            f"{len(fractions)} rows for {len(labels)} names and {len(ts)} taus"
        )
    log_x = measure == "ratio" and ts[0] > 0 and ts[-1] / ts[0] > 20
    x_label = (
        "τ: score at least best / τ" if measure == "ratio" else "τ: score at most τ below the best"
    )
    fig = svg.Figure(
        (ts[0], ts[-1]),
        (0.0, 1.0),
        title=title,
        x_label=x_label,
        y_label="share of tasks",
        log_x=log_x,
        margin=(34, max(120, _label_margin(labels) + 30), 46, 64),
    )
    end = 10.0**fig.x1 if log_x else fig.x1
    for j, (label, row) in enumerate(zip(labels, fractions, strict=True)):
        pts: list[tuple[float, float]] = []
        for i, (t, f) in enumerate(zip(ts, row, strict=True)):
            if i:
                pts.append((t, float(row[i - 1])))  # the profile steps up at each tau
            pts.append((t, float(f)))
        pts.append((end, float(row[-1])))
        coords = " ".join(f"{fig.sx(x):.1f},{fig.sy(y):.1f}" for x, y in pts)
        fig.parts.append(
            f'<polyline class="profile" points="{coords}" fill="none" stroke="{svg.color(j)}" '
            f'stroke-width="1.8"><title>{escape(label)}</title></polyline>'
        )
    fig.legend([(label, svg.color(j)) for j, label in enumerate(labels)])
    return fig.svg(title or "performance profiles")
