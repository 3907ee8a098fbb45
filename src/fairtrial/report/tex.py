"""A LaTeX table for papers: booktabs, mean with its interval, effects with verdict marks.

The output is a ``table`` environment that needs ``\\usepackage{booktabs}`` and
``\\usepackage{amssymb}`` (for the marks); every name from the spec is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairtrial.results import Analysis

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
MARKS = {
    "better": r"$\blacktriangle$",
    "worse": r"$\blacktriangledown$",
    "equivalent": r"$\approx$",
    "inconclusive": r"$\circ$",
    "invalid": r"$\times$",
}


def tex_escape(s: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in str(s))


def _n(x: float | None, d: int) -> str:
    return "--" if x is None else f"{x:.{d}f}"


def _s(x: float | None, d: int) -> str:
    return "--" if x is None else f"{x:+.{d}f}".replace("-", "$-$")


def _iv(iv: Sequence[float | None] | None, d: int, signed: bool = False) -> str:
    if not iv or iv[0] is None or iv[1] is None:
        return ""
    f = _s if signed else _n
    return f" [{f(iv[0], d)}, {f(iv[1], d)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "--"
    if p < 1e-3:
        return "$<$0.001"
    return f"{p:.3f}"


def render_tex(doc: Analysis, digits: int = 3) -> str:
    """The results table (and an ablation table when the experiment has ablations)."""
    e = doc.experiment
    conf = f"{doc.settings['confidence'] * 100:.0f}"
    by_arm = {c.arm: c for c in doc.comparisons}
    kinds = {c.interval_method for c in doc.comparisons}
    lines = [
        "% fairtrial report: needs \\usepackage{booktabs} and \\usepackage{amssymb}",
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{llrllr}",
        r"\toprule",
        f"Arm & Change & Seeds & {tex_escape(e.metric)} [{conf}\\% CI] & "
        f"$\\Delta$ vs baseline [{conf}\\% CI] & $p_{{\\mathrm{{Holm}}}}$ \\\\",
        r"\midrule",
    ]
    for name, a in doc.arms.items():
        if a.kind == "ablation":
            continue
        comp = ", ".join(f"{k}={v}" for k, v in a.components.items()) or "--"
        c = by_arm.get(name)
        delta = (
            f"{_s(c.effect, digits)}{_iv(c.interval, digits, True)} "
            f"{MARKS[c.verdict or 'inconclusive']}"
            if c
            else "--"
        )
        lines.append(
            f"{tex_escape(name)} & {tex_escape(comp)} & {a.n} & "
            f"{_n(a.mean, digits)}{_iv(a.interval, digits)} & {delta} & "
            f"{_p(c.p_adjusted) if c else '--'} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    better = e.better
    caption = (
        f"{tex_escape(e.name)} on {tex_escape(e.task)}: test {tex_escape(e.metric)} "
        f"({better} is better) over {e.seeds} seeds paired across arms. $\\Delta$: mean "
        f"paired difference (positive is better) with a {conf}\\% "
        f"{'BCa bootstrap' if 'BCa bootstrap' in kinds else 'paired $t$'} interval; "
        f"$p$: sign-flip permutation test, Holm-adjusted. "
        f"{MARKS['better']} better, {MARKS['worse']} worse, {MARKS['equivalent']} equivalent "
        f"(TOST), {MARKS['inconclusive']} inconclusive, {MARKS['invalid']} invalid (the seeds "
        "gave no spread)."
    )
    lines += [f"\\caption{{{caption}}}", f"\\label{{tab:{_label(e.name)}}}", r"\end{table}"]
    if doc.ablations:
        lines += [
            "",
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{llrlr}",
            r"\toprule",
            f"Arm & Component removed & Seeds & Contribution [{conf}\\% CI] & "
            r"$p_{\mathrm{Holm}}$ \\",
            r"\midrule",
        ]
        for c in doc.ablations:
            lines.append(
                f"{tex_escape(c.arm)} & {tex_escape(c.removed or '')} & {c.n_pairs} & "
                f"{_s(c.effect, digits)}{_iv(c.interval, digits, True)} "
                f"{MARKS[c.verdict or 'inconclusive']} & {_p(c.p_adjusted)} \\\\"
            )
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [
            f"\\caption{{Ablations of {tex_escape(e.name)}: each component's contribution is "
            f"the arm minus the arm without it, paired by seed.}}",
            f"\\label{{tab:{_label(e.name)}-ablations}}",
            r"\end{table}",
        ]
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name)
