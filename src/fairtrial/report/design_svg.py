"""Figures of a factorial design: main effects, interactions, and the forest plot of effects.

Each takes plain data (what :func:`fairtrial.stats.estimate_effects` returns: means in the
metric's own units, effects signed so that + is better) and gives a string of inline SVG drawn
with :mod:`fairtrial.report.svg`, every text escaped. A factor is shown by its letter and its
component's name ("A model.norm"); a term by its letters and the names joined by " × ".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from fairtrial.report import svg
from fairtrial.stats.designs import LETTERS, term_indexes, term_name

_PANEL_W = 190
_PANEL_H = 190
_COLUMNS = 4
_CHAR_PX = 6.5  # about the width of one character at the figures' 11 px sans-serif
_ROW_PX = 24
_VERDICT_COLOURS = {"better": "#117733", "worse": "#b2182b", "equivalent": "#0072B2"}


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return v


def _span(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    width = (hi - lo) or (abs(hi) * 0.1 or 1.0)
    return lo - width * pad, hi + width * pad


def _factor(i: int, labels: Sequence[str]) -> str:
    return f"{LETTERS[i]} {labels[i]}" if i < len(labels) and labels[i] else LETTERS[i]


def _check_labels(labels: Sequence[str], k: int) -> list[str]:
    names = [str(s) for s in labels]
    if len(names) != k:
        raise ValueError(f"labels needs one component name per factor ({k}), got {len(names)}")
    return names


def _panels(
    n: int, title: str, draw: Any, y_range: tuple[float, float], label: str, **kwargs: Any
) -> str:
    """Small multiples: ``n`` panels of one shared y range in rows of up to four; ``draw(i,
    fig)`` fills panel i. Each panel is a ``<g class="panel">``."""
    cols = min(n, _COLUMNS)
    rows = math.ceil(n / cols)
    top = 30 if title else 6
    outer = svg.Figure(
        (0.0, 1.0), (0.0, 1.0), width=cols * _PANEL_W + 10, height=top + rows * _PANEL_H + 4
    )
    outer.parts.clear()  # only the frame: each panel draws its own axes
    if title:
        outer.parts.append(f'<text x="10" y="18" class="title">{escape(title)}</text>')
    for i in range(n):
        r, c = divmod(i, cols)
        fig = svg.Figure(
            (-0.3, 1.3),
            y_range,
            width=_PANEL_W,
            height=_PANEL_H,
            x_ticks=[(0.0, "off"), (1.0, "on")],
            margin=(40, 12, 40, 52),
            **kwargs,
        )
        draw(i, fig)
        outer.parts.append(
            f'<g class="panel" transform="translate({10 + c * _PANEL_W},{top + r * _PANEL_H})">'
            + "".join(fig.parts)
            + "</g>"
        )
    return outer.svg(label)


def _line(
    fig: svg.Figure, ys: tuple[float, float], colour: str, cls: str, tip: str, dash: str = ""
) -> None:
    pts = f"{fig.sx(0.0):.1f},{fig.sy(ys[0]):.1f} {fig.sx(1.0):.1f},{fig.sy(ys[1]):.1f}"
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    fig.parts.append(
        f'<polyline class="{cls}" points="{pts}" fill="none" stroke="{colour}" '
        f'stroke-width="2"{extra}><title>{escape(tip)}</title></polyline>'
    )
    for x, y in zip((0.0, 1.0), ys, strict=True):
        fig.point(x, y, colour, r=3.5)


def main_effects_svg(
    main_means: Sequence[Sequence[float]],
    labels: Sequence[str],
    metric: str,
    *,
    title: str = "Main effects",
) -> str:
    """One panel per factor: the mean of the metric with the factor off and on (averaged over
    the other factors), joined by a line (``class="main-effect"``); every panel shares the y
    axis, so steeper lines are bigger effects.

    ``main_means[i]`` is factor i's ``(off, on)`` means, ``labels[i]`` its component's name.
    """
    means = [
        (_finite(m[0], f"main_means[{i}]"), _finite(m[1], f"main_means[{i}]"))
        for i, m in enumerate(main_means)
    ]
    if not means or len(means) > len(LETTERS):
        raise ValueError(f"main_means needs one (off, on) pair per factor, got {len(means)}")
    names = _check_labels(labels, len(means))

    def draw(i: int, fig: svg.Figure) -> None:
        name = _factor(i, names)
        fig.parts.append(f'<text x="52" y="18" class="title">{escape(_short(name, 26))}</text>')
        off, on = means[i]
        tip = f"{name}: {metric} {off:.6g} off, {on:.6g} on ({on - off:+.6g})"
        _line(fig, means[i], svg.color(i), "main-effect", tip)

    y_range = _span([v for m in means for v in m])
    return _panels(len(means), title, draw, y_range, "main effects plot", y_label=metric)


def interaction_svg(
    pair_means: Mapping[str, Sequence[Sequence[float]]],
    labels: Sequence[str],
    metric: str,
    pairs: Sequence[str],
    *,
    title: str = "Interactions",
) -> str:
    """One panel per pair ``"XY"`` in ``pairs``: the mean of the metric across X off and on,
    one line (``class="interaction"``) with Y off (dashed) and one with Y on. Parallel lines
    mean no interaction. Every panel shares the y axis.

    ``pair_means["AB"][a][b]`` is the mean with A at a and B at b (0 off, 1 on), as
    :func:`fairtrial.stats.estimate_effects` gives them; ``labels[i]`` is factor i's name. A
    pair given as ``"BA"`` puts B on the x axis.
    """
    names = [str(s) for s in labels]
    cells: list[tuple[int, int, list[list[float]]]] = []
    for pair in pairs:
        idx = term_indexes(pair, len(names))
        if len(idx) != 2:
            raise ValueError(f"pairs must name two factors each, like 'AB', got {pair!r}")
        key = term_name(idx)
        if key not in pair_means:
            raise ValueError(f"pair {pair!r} is not in pair_means ({sorted(pair_means)})")
        m = [[_finite(v, f"pair_means[{key!r}]") for v in row] for row in pair_means[key]]
        if len(m) != 2 or any(len(row) != 2 for row in m):
            raise ValueError(f"pair_means[{key!r}] must be 2 × 2 means, got {m}")
        first, second = LETTERS.index(pair[0]), LETTERS.index(pair[1])
        if first > second:
            m = [[m[0][0], m[1][0]], [m[0][1], m[1][1]]]  # x axis: the factor named first
        cells.append((first, second, m))
    if not cells:
        raise ValueError("pairs must name at least one pair of factors, like 'AB'")

    def draw(i: int, fig: svg.Figure) -> None:
        first, second, m = cells[i]
        a, b = _factor(first, names), _factor(second, names)
        fig.parts.append(
            f'<text x="52" y="18" class="title">{escape(_short(f"{a} × {b}", 28))}</text>'
        )
        fig.text(fig.w / 2 + 20, fig.h - 8, _short(a, 26), anchor="middle", px=True)
        for level, dash in ((0, "5 3"), (1, "")):
            ys = (m[0][level], m[1][level])
            state = "on" if level else "off"
            tip = f"{b} {state}: {metric} {ys[0]:.6g} with {a} off, {ys[1]:.6g} on"
            _line(fig, ys, svg.color(level), "interaction", tip, dash)
            fig.parts.append(
                f'<text x="{52 + 56 * level}" y="32" fill="{svg.color(level)}">'
                f"{escape(LETTERS[second])} {state}{'' if level else ' - -'}</text>"
            )

    y_range = _span([v for _, _, m in cells for row in m for v in row])
    return _panels(len(cells), title, draw, y_range, "interaction plots", y_label=metric)


def _row(effect: Any) -> dict[str, Any]:
    data = effect.to_dict() if hasattr(effect, "to_dict") else dict(effect)
    term = str(data.get("term", ""))
    return {
        "term": term,
        "estimate": _finite(data.get("estimate"), f"the estimate of {term!r}"),
        "low": _finite(data.get("low"), f"the interval of {term!r}"),
        "high": _finite(data.get("high"), f"the interval of {term!r}"),
        "verdict": str(data.get("verdict") or ""),
        "aliases": [str(a) for a in data.get("aliases") or () if len(str(a)) <= 2],
    }


def effects_forest_svg(
    effects: Sequence[Any],
    *,
    labels: Sequence[str] | None = None,
    smallest_effect: float | None = None,
    metric: str = "",
    title: str = "Which components matter (+ is better)",
) -> str:
    """Every effect with its interval, sorted by |estimate| (largest on top), around a zero
    line: a dot per term (``class="effect"``) coloured by its verdict, the interval as a bar
    (``class="interval"``), the band ±smallest_effect shaded when given.

    ``effects`` are :class:`fairtrial.stats.FactorialEffect` records or their ``to_dict()``
    (``term``, ``estimate``, ``low``, ``high``, ``verdict``, ``aliases``: a term's aliases of
    order 2 or less are shown with it, "AB = CE"); ``labels[i]`` names factor i.
    """
    rows = sorted((_row(e) for e in effects), key=lambda r: -abs(r["estimate"]))
    if not rows:
        raise ValueError("effects must hold at least one effect")
    names = [str(s) for s in labels] if labels is not None else []

    def text(row: dict[str, Any]) -> str:
        term = row["term"]
        idx = term_indexes(term) if term else ()
        parts = [names[i] for i in idx if i < len(names)]
        chain = "".join(f" = {a}" for a in row["aliases"])  # confounded, in a fraction
        named = f" ({' × '.join(parts)})" if parts and len(parts) == len(idx) else ""
        return f"{term}{chain}{named}"

    texts = [text(r) for r in rows]
    left = int(min(280, max(70, _CHAR_PX * max(len(_short(t, 40)) for t in texts) + 24)))
    xs = [v for r in rows for v in (r["low"], r["high"], r["estimate"])] + [0.0]
    if smallest_effect is not None:
        se = _finite(smallest_effect, "smallest_effect")
        xs += [se, -se]
    fig = svg.Figure(
        _span(xs),
        (-0.5, len(rows) - 0.5),
        width=max(560, left + 320),
        height=90 + _ROW_PX * len(rows),
        title=title,
        x_label=f"effect on {metric} (off → on)" if metric else "effect (off → on)",
        y_ticks=False,
        margin=(34, 20, 46, left),
    )
    if smallest_effect is not None:
        fig.vspan(-abs(float(smallest_effect)), abs(float(smallest_effect)))
    fig.vline(0.0)
    for i, (r, label) in enumerate(zip(rows, texts, strict=True)):
        y = len(rows) - 1 - i
        colour = _VERDICT_COLOURS.get(r["verdict"], "#a66f00")
        tip = f"{label}: {r['estimate']:.6g} [{r['low']:.6g}, {r['high']:.6g}]"
        tip += f", {r['verdict']}" if r["verdict"] else ""
        fig.parts.append(
            f'<line class="interval" x1="{fig.sx(r["low"]):.1f}" y1="{fig.sy(y):.1f}" '
            f'x2="{fig.sx(r["high"]):.1f}" y2="{fig.sy(y):.1f}" stroke="{colour}" '
            'stroke-width="2"/>'
            f'<circle class="effect" cx="{fig.sx(r["estimate"]):.1f}" cy="{fig.sy(y):.1f}" '
            f'r="4" fill="{colour}"><title>{escape(tip)}</title></circle>'
        )
        fig.text(fig.left - 8, fig.sy(y) + 4, _short(label, 40), anchor="end", px=True)
    return fig.svg("forest plot of the design's effects")
