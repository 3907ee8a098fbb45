"""Small SVG figures for the HTML report: no plotting library, no script, readable offline.

Every figure is a string of inline SVG; every text in it is escaped. The palette is Okabe and
Ito's (2008) colour-blind-safe set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.6g}"


class Figure:
    """A plot area with linear (or log-x) scales and a few primitives."""

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        *,
        width: int = 560,
        height: int = 320,
        title: str = "",
        x_label: str = "",
        y_label: str = "",
        log_x: bool = False,
        x_ticks: Sequence[tuple[float, str]] | None = None,
        y_ticks: bool = True,
        rotate_x: bool = False,
        margin: tuple[int, int, int, int] = (34, 20, 46, 64),  # top, right, bottom, left
    ) -> None:
        self.w, self.h = width, height
        self.top, self.right, self.bottom, self.left = margin
        self.log_x = log_x
        self.rotate_x = rotate_x
        x0, x1 = (math.log10(v) for v in x_range) if log_x else x_range
        y0, y1 = y_range
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 <= y0:
            pad = abs(y0) * 0.05 or 0.5
            y0, y1 = y0 - pad, y1 + pad
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.parts: list[str] = []
        self._axes(title, x_label, y_label, x_ticks, y_ticks)

    # scales
    def sx(self, x: float) -> float:
        v = math.log10(x) if self.log_x else x
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def sy(self, y: float) -> float:
        return (
            self.h
            - self.bottom
            - (y - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)
        )

    def _axes(
        self,
        title: str,
        x_label: str,
        y_label: str,
        x_ticks: Sequence[tuple[float, str]] | None,
        y_ticks: bool,
    ) -> None:
        p = self.parts
        left, right = self.left, self.w - self.right
        top, bottom = self.top, self.h - self.bottom
        for t in nice_ticks(self.y0, self.y1) if y_ticks else []:
            y = self.sy(t)
            p.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            p.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(t)}</text>')
        if x_ticks is None:
            if self.log_x:
                ticks = [10.0**k for k in range(math.floor(self.x0), math.ceil(self.x1) + 1)]
                ticks = [t for t in ticks if self.x0 - 1e-9 <= math.log10(t) <= self.x1 + 1e-9]
            else:
                ticks = nice_ticks(self.x0, self.x1)
            x_ticks = [(t, fmt_tick(t)) for t in ticks]
        for t, label in x_ticks:
            x = self.sx(t)
            p.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>')
            if self.rotate_x:
                p.append(
                    f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="end" '
                    f'transform="rotate(-30 {x:.1f} {bottom + 14})">{escape(label)}</text>'
                )
            else:
                p.append(
                    f'<text x="{x:.1f}" y="{bottom + 17}" text-anchor="middle">'
                    f"{escape(label)}</text>"
                )
        p.append(f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
        p.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/>')
        if title:
            p.append(f'<text x="{left}" y="{top - 14}" class="title">{escape(title)}</text>')
        if x_label:
            p.append(
                f'<text x="{(left + right) / 2:.1f}" y="{self.h - 8}" '
                f'text-anchor="middle">{escape(x_label)}</text>'
            )
        if y_label:
            cy = (top + bottom) / 2
            p.append(
                f'<text x="14" y="{cy:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {cy:.1f})">{escape(y_label)}</text>'
            )

    # primitives
    def polyline(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        stroke: str,
        *,
        width: float = 1.5,
        opacity: float = 1.0,
        dash: str = "",
    ) -> None:
        pts = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in zip(xs, ys, strict=True))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{stroke}" stroke-width="{width}" '
            f'stroke-opacity="{opacity}"{extra}/>'
        )

    def band(
        self, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float], fill: str
    ) -> None:
        up = [f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in zip(xs, hi, strict=True)]
        down = [f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in zip(xs, lo, strict=True)]
        self.parts.append(
            f'<polygon points="{" ".join(up + down[::-1])}" fill="{fill}" fill-opacity="0.18" '
            'stroke="none"/>'
        )

    def point(self, x: float, y: float, fill: str, *, r: float = 3.5, title: str = "") -> None:
        tip = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(
            f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="{r}" fill="{fill}">'
            f"{tip}</circle>"
        )

    def hline(self, y: float, *, dash: str = "4 3", stroke: str = "#555") -> None:
        self.parts.append(
            f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{self.sy(y):.1f}" '
            f'y2="{self.sy(y):.1f}" stroke="{stroke}" stroke-dasharray="{dash}"/>'
        )

    def vline(self, x: float, *, dash: str = "4 3", stroke: str = "#555") -> None:
        self.parts.append(
            f'<line x1="{self.sx(x):.1f}" x2="{self.sx(x):.1f}" y1="{self.top}" '
            f'y2="{self.h - self.bottom}" stroke="{stroke}" stroke-dasharray="{dash}"/>'
        )

    def vspan(self, x0: float, x1: float, fill: str = "#999") -> None:
        a, b = sorted((self.sx(x0), self.sx(x1)))
        self.parts.append(
            f'<rect x="{a:.1f}" y="{self.top}" width="{b - a:.1f}" '
            f'height="{self.h - self.top - self.bottom}" fill="{fill}" fill-opacity="0.15"/>'
        )

    def segment(self, x0: float, y0: float, x1: float, y1: float, stroke: str) -> None:
        self.parts.append(
            f'<line x1="{self.sx(x0):.1f}" y1="{self.sy(y0):.1f}" x2="{self.sx(x1):.1f}" '
            f'y2="{self.sy(y1):.1f}" stroke="{stroke}" stroke-width="2"/>'
        )

    def text(self, x: float, y: float, s: str, *, anchor: str = "start", px: bool = False) -> None:
        cx, cy = (x, y) if px else (self.sx(x), self.sy(y))
        self.parts.append(
            f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="{anchor}">{escape(s)}</text>'
        )

    def legend(self, items: Sequence[tuple[str, str]]) -> None:
        """Colour keys in the right margin (make it wide enough: ``margin`` right ~170)."""
        x = self.w - self.right + 12
        y = self.top + 4
        for i, (label, col) in enumerate(items):
            yy = y + i * 15
            self.parts.append(
                f'<rect x="{x}" y="{yy}" width="10" height="10" fill="{col}"/>'
                f'<text x="{x + 15}" y="{yy + 9}">{escape(label)}</text>'
            )

    def svg(self, label: str = "") -> str:
        aria = f' role="img" aria-label="{escape(label)}"' if label else ""
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" '
            f'width="{self.w}" height="{self.h}" font-family="sans-serif" font-size="11"{aria}>'
            '<rect width="100%" height="100%" fill="#fff"/>' + "".join(self.parts) + "</svg>"
        )


def image(values: Sequence[float], shape: tuple[int, int], *, cell: int = 6) -> str:
    """A grey-scale picture of a flattened image (e.g. an 8×8 digit), dark = high."""
    rows, cols = shape
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    cells = []
    for i, v in enumerate(values[: rows * cols]):
        r, c = divmod(i, cols)
        g = int(255 - 255 * (v - lo) / span)
        cells.append(
            f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" height="{cell}" '
            f'fill="rgb({g},{g},{g})"/>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * cell}" height="{rows * cell}" '
        f'viewBox="0 0 {cols * cell} {rows * cell}" role="img" aria-label="input">'
        + "".join(cells)
        + "</svg>"
    )


def signal(values: Sequence[float], *, width: int = 120, height: int = 36) -> str:
    """A 1-D input (e.g. an MNIST-1D sequence) as a small line."""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(values) - 1, 1)
    pts = " ".join(
        f"{i / n * (width - 2) + 1:.1f},{height - 1 - (v - lo) / span * (height - 2):.1f}"
        for i, v in enumerate(values)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="input">'
        f'<polyline points="{pts}" fill="none" stroke="#0072B2" stroke-width="1.2"/></svg>'
    )
