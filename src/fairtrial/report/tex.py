"""A LaTeX table for papers: booktabs, mean with its interval, effects with verdict marks.

The output is a ``table`` environment that needs ``\\usepackage{booktabs}`` and
``\\usepackage{amssymb}`` (for the marks); every name from the spec is escaped. When every arm
was tuned, tables of the verdicts before and after equal tuning, of each arm's tuning, of the
tuning curves and of hyperparameter importance follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fairtrial.report import claims, fmt, tuning

if TYPE_CHECKING:
    from fairtrial.results import Analysis, Comparison

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
    "faster": r"$\blacktriangle$",
    "cheaper": r"$\blacktriangle$",
    "slower": r"$\blacktriangledown$",
    "costlier": r"$\blacktriangledown$",
    "same": r"$\approx$",
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
    if doc.tasks:
        from fairtrial.report import tasks as over_tasks

        return over_tasks.render_tex(doc, lambda d: render_tex(d, digits), tex_escape)
    e = doc.experiment
    conf = f"{doc.settings['confidence'] * 100:.0f}"
    by_arm = {c.arm: c for c in doc.comparisons}
    kinds = {c.interval_method for c in doc.comparisons}
    lines = [
        "% fairtrial report: needs \\usepackage{booktabs} and \\usepackage{amssymb}",
        *[f"% {line}" for line in [*fmt.evaluation_lines(doc), *fmt.imported_lines(doc)]],
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
    imported = "".join(
        f"{tex_escape(line)}. " for line in [*fmt.evaluation_lines(doc), *fmt.imported_lines(doc)]
    )
    caption = imported + (
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
    lines += claims.tex(doc, tex_escape, MARKS)
    lines += _tuning_tables(doc, digits)
    return "\n".join(lines) + "\n"


def _t(s: str) -> str:
    """Escaped text of the shared formatters, their few non-ASCII signs made LaTeX."""
    return (
        tex_escape(s)
        .replace("—", "--")
        .replace("×", r"$\times$")
        .replace("±", r"$\pm$")
        .replace("▲", MARKS["better"])
        .replace("▼", MARKS["worse"])
        .replace("≈", MARKS["equivalent"])
    )


def _delta(c: Comparison | None, d: int) -> str:
    if c is None:
        return "--"
    return f"{_s(c.effect, d)}{_iv(c.interval, d, True)} {MARKS[c.verdict or 'inconclusive']}"


def _table(spec: str, head: str, rows: list[str], caption: str, label: str) -> list[str]:
    return [
        "",
        r"\begin{table}[t]",
        r"\centering",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        head + r" \\",
        r"\midrule",
        *[r + r" \\" for r in rows],
        r"\bottomrule",
        r"\end{tabular}",
        f"\\caption{{{caption}}}",
        f"\\label{{tab:{label}}}",
        r"\end{table}",
    ]


def _tuning_tables(doc: Analysis, d: int) -> list[str]:
    t = doc.tuning
    if t is None:
        return []
    name = _label(doc.experiment.name)
    out: list[str] = []
    pairs = tuning.verdict_pairs(doc)
    if pairs:
        rows = [
            f"{tex_escape(p.arm)} & {tex_escape(p.against)} & {_delta(p.untuned, d)} & "
            f"{_delta(p.tuned, d)}"
            for p in pairs
        ]
        caption = (
            "Untuned vs tuned: each arm's paired difference at its spec values and after equal "
            "tuning. " + " ".join(_t(line) + "." for line in tuning.pair_lines(doc))
        )
        head = r"Arm & vs & $\Delta$ untuned & $\Delta$ tuned"
        out += _table("llll", head, rows, caption, f"{name}-untuned")
    imp_rows, imp_lines = [], []
    for a in t.arms.values():
        said, imp = tuning.importance(a)
        imp_lines.append(said)
        imp_rows += [f"{tex_escape(a.arm)} & {tex_escape(k)} & {v}" for k, v in imp]
    rows = [" & ".join(_t(v) for v in row) for row in tuning.arm_rows(doc)]
    notes = [
        tuning.lead(t),
        *([] if pairs else [f"Untuned: {tuning.no_untuned(t)}"]),
        *tuning.starting_notes(t),
        *([spent] if (spent := tuning.compute_line(t)) else []),
        *([f"Procedure: {t.text}"] if t.text else []),
        *([] if imp_rows else imp_lines),
    ]
    head = " & ".join(h[:1].upper() + h[1:] for h in tuning.ARM_HEADS)
    caption = " ".join(_t(n.rstrip(".")) + "." for n in notes)
    out += _table("lllrrrr", head, rows, caption, f"{name}-tuning")
    heads, curve, how = tuning.curve_rows(t)
    if curve:
        caption = " ".join(_t(n) + "." for n in (tuning.curve_title(t), *how))
        head = " & ".join(f"${h}$" if h == "k" else tex_escape(h) for h in heads)
        out += _table(
            "r" * len(heads),
            head,
            [" & ".join(_t(v) for v in r) for r in curve],
            caption,
            f"{name}-tuning-curve",
        )
    if imp_rows:
        caption = " ".join(_t(n) + "." for n in ("Hyperparameter importance", *imp_lines))
        head = "Arm & Hyperparameter & Importance"
        out += _table("llr", head, imp_rows, caption, f"{name}-importance")
    return out


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name)
