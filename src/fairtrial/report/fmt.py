"""Formatting shared by every report format: numbers, intervals, verdict words and marks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fairtrial.results import Analysis, Comparison


MARKS = {
    "better": "▲",
    "worse": "▼",
    "equivalent": "≈",
    "inconclusive": "?",
    "invalid": "✗",
    # cost verdicts (and a speed trial's): the mark of the same news about quality
    "faster": "▲",
    "cheaper": "▲",
    "slower": "▼",
    "costlier": "▼",
    "same": "≈",
}
STYLES = {
    "better": "bold green",
    "worse": "bold red",
    "equivalent": "cyan",
    "inconclusive": "yellow",
    "invalid": "bold magenta",
    "faster": "bold green",
    "cheaper": "bold green",
    "slower": "bold red",
    "costlier": "bold red",
    "same": "cyan",
}


def num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def signed(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def interval(iv: Sequence[float | None] | None, digits: int = 4, sign: bool = False) -> str:
    if not iv or iv[0] is None or iv[1] is None:
        return "—"
    f = signed if sign else num
    return f"[{f(iv[0], digits)}, {f(iv[1], digits)}]"


def pvalue(p: float | None) -> str:
    if p is None:
        return "—"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3g}" if p < 0.1 else f"{p:.2f}"


def components(c: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in c.items()) or "—"


def values(vs: list[float | None], limit: int = 10) -> str:
    shown = " ".join(num(v, 3) for v in vs[:limit])
    return shown + (f" … (+{len(vs) - limit})" if len(vs) > limit else "")


def verdict(c: Comparison) -> str:
    v = c.verdict or "inconclusive"
    return f"{MARKS[v]} {v}"


def power_note(c: Comparison) -> str:
    """What an inconclusive comparison would need: its MDE and the seeds for smallest_effect."""
    if c.verdict != "inconclusive":
        return ""
    parts = []
    if c.mde is not None:
        parts.append(f"detectable ≥ {c.mde:.4g}")
    if c.seeds_needed is not None:
        parts.append(f"{c.seeds_needed} seeds needed")
    return "; ".join(parts)


def prob(c: Comparison) -> str:
    p = c.prob_improvement
    if p is None or p.estimate is None:
        return "—"
    return f"{p.estimate:.2f}"


def direction_word(doc: Analysis) -> str:
    return doc.experiment.better


def seed_plan_line(doc: Analysis) -> str | None:
    sp = doc.experiment.seed_plan
    if not sp:
        return None
    line = f'seeds = "auto": a pilot of {sp["pilot"]} seeds asked for {sp["needed"]} ({sp["rule"]})'
    if sp["capped"]:
        line += f"; capped at max_seeds = {sp['max_seeds']}"
    return line + f"; planned {sp['seeds']}."


def disagreement_line(pred: dict[str, Any] | None) -> str | None:
    if not pred:
        return None
    return (
        f"The arms' majority predictions differ on {pred['n_disagree']} of "
        f"{pred['n_test']} test examples."
    )


def methods(doc: Analysis) -> list[str]:
    """The analysis' settings, as sentences for the report's methods section."""
    s = doc.settings
    keys = [
        "pairing",
        "effect",
        "effect_interval",
        "test",
        "unpaired",
        "multiple_comparisons",
        "equivalence",
        "verdict",
        "effect_size",
        "power_analysis",
        "interaction",
        "arm_interval",
        "failures",
    ]
    out = [f"{k.replace('_', ' ')}: {s[k]}" for k in keys if k in s]
    if doc.tuning is not None and doc.tuning.text:
        out.append(f"tuning: {doc.tuning.text}")
    return out


def interval_kind(doc: Analysis) -> str:
    """Which interval the comparisons use ("paired t", "BCa bootstrap", or both)."""
    kinds = sorted({c.interval_method for c in doc.judged if c.interval_method})
    return " / ".join(kinds) or "no"


def si(x: float | None, unit: str) -> str:
    """A quantity with an SI prefix: 3.2 GFLOP, 1.5 kJ, 12 ms."""
    if x is None:
        return "—"
    if unit == "bytes":
        for size, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if abs(x) >= size:
                return f"{x / size:.3g} {name}"
        return f"{x:.0f} B"
    if unit == "s" and abs(x) < 1:
        return f"{x * 1000:.3g} ms"
    prefixes: tuple[tuple[float, str], ...] = (
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    )
    for scale, prefix in prefixes:
        if abs(x) >= scale and unit != "s":
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


#: the compute table's columns: (figure, heading, how to show it)
COMPUTE_COLUMNS = (
    ("train_time", "train time", "mean"),
    ("wall_time", "wall time", "mean"),
    ("time_to_target", "time to target", "olympic"),
    ("flops", "FLOPs", "mean"),
    ("peak_rss_increase", "peak RSS (trial)", "mean"),
    ("gpu_peak_allocated", "GPU peak", "mean"),
    ("energy", "energy", "mean"),
    ("co2e", "CO2e", "mean"),
    ("cost", "cost", "mean"),
)


def compute_rows(doc: Analysis) -> tuple[list[str], list[list[str]], list[str]]:
    """Headings, one row per arm (per-trial means ± sd; time-to-target's olympic mean) and
    the notes that say how each figure was obtained. Columns no arm has are left out."""
    arms = {n: a.compute for n, a in doc.arms.items()}
    cols = []
    for key, head, kind in COMPUTE_COLUMNS:
        if kind == "olympic":
            if any((c.time_to_target or {}).get("n") for c in arms.values()):
                cols.append((key, head, kind))
        elif any(c.figure(key).mean is not None for c in arms.values()):
            cols.append((key, head, kind))
    rows = []
    for name, c in arms.items():
        row = [name]
        for key, _, kind in cols:
            if kind == "olympic":
                t = c.time_to_target or {}
                row.append(
                    si(t.get("value"), "s") if t.get("valid") else "invalid" if t.get("n") else "—"
                )
                continue
            f = c.figure(key)
            unit = f.unit or ""
            text = si(f.mean, unit)
            if f.sd and f.mean is not None:
                text += f" ± {si(f.sd, unit)}"
            row.append(text)
        rows.append(row)
    notes = []
    for key, head, kind in cols:
        if kind == "olympic":
            ttt: dict[str, Any] = next(
                (
                    c.time_to_target or {}
                    for c in arms.values()
                    if (c.time_to_target or {}).get("n")
                ),
                {},
            )
            notes.append(
                f"{head}: {ttt.get('target_metric')} reaching {ttt.get('target')}, MLPerf olympic "
                "mean of train time (fastest and slowest run dropped)"
            )
            continue
        methods = sorted({m for c in arms.values() for m in (c.figure(key).methods or [])})
        if methods:
            notes.append(f"{head}: " + "; ".join(methods))
    hw = doc.compute.hardware or {}
    if hw.get("text"):
        notes.append(
            "hardware: "
            + hw["text"]
            + (" (mixed: figures not comparable one to one)" if hw.get("mixed") else "")
        )
    if start := doc.compute.worker_startup:
        notes.append(
            f"worker start-up: {start['workers']} worker(s), {si(start['mean'], 's')} each on "
            f"average ({si(start['interpreter_and_imports'], 's')} interpreter start and "
            f"imports, {si(start['task_and_recipe'], 's')} loading the task and the recipe); "
            "in no trial's time and no cost ratio"
        )
    settings = doc.compute.settings or {}
    if any(h == "CO2e" for _, h, _ in cols):
        notes.append(
            f"CO2e = energy × PUE {settings.get('pue')} × {settings.get('grid_intensity')} "
            f"gCO2e/kWh ({settings.get('grid_intensity_source')})"
        )
    return ["arm"] + [h for _, h, _ in cols], rows, notes


def cost_text(c: Comparison) -> str:
    """The comparison's cost ratios, short: "1.0× FLOPs, 1.4× time"."""
    text = str(c.cost_text or "").removeprefix("for ")
    return text.replace(" the ", " ").replace(" and ", ", ")


def evaluation_lines(doc: Analysis) -> list[str]:
    """For results the recipe evaluated itself (``task = "external:NAME"``): that they were,
    and that they are not sealed, in plain words. Empty otherwise."""
    if doc.experiment.evaluation != "recipe":
        return []
    from fairtrial.tasks.external import RECIPE_EVALUATION

    return [RECIPE_EVALUATION[:1].upper() + RECIPE_EVALUATION[1:]]


def imported_lines(doc: Analysis) -> list[str]:
    """For results fairtrial did not run: where they come from and what that means, and the
    seeds each comparison left out (or that it compared unpaired). Empty otherwise."""
    imp = doc.experiment.imported
    if not imp:
        return []
    head = f"imported from {imp.get('source')}: {imp.get('note')}"
    details = [
        f"baseline = {imp['baseline']}" if imp.get("baseline") else "",
        str(imp.get("value") or ""),
    ]
    lines = ["; ".join([head, *[d for d in details if d]])]
    for c in doc.judged:
        dropped = c.dropped_seeds or {}
        who = f"{c.arm} vs {c.against}"
        if c.unpaired:
            lines.append(
                f"{who}: no seed shared, compared unpaired (Welch t) on "
                + " and ".join(f"{n} seed(s) of {a}" for a, n in dropped.items())
            )
        elif sum(dropped.values()):
            lines.append(
                f"{who}: paired on the {c.n_pairs} seed(s) both have; dropped "
                + ", ".join(f"{n} of {a}" for a, n in dropped.items())
                + " (no partner)"
            )
    return lines


def rigor_lines(doc: Analysis) -> list[str]:
    """Who evaluated the results (when the recipe did), where imported results come from, then
    preregistration, the sealed test log and arm isolation, one line each."""
    e = doc.experiment
    pre = e.preregistered
    unregistered = (
        "none (imported results)"
        if e.imported
        else "none (`fairtrial register SPEC` before the first run)"
    )
    lines = [
        *evaluation_lines(doc),
        *imported_lines(doc),
        "preregistration: " + (pre["text"] if pre else unregistered),
    ]
    lines += [
        f"deviation, {d['kind'].replace('_', ' ')}: {d['detail']}"
        for d in (pre or {}).get("deviations") or []
    ]
    for c in doc.judged:
        if c.verdict == "invalid":
            lines.insert(0, f"INVALID {c.arm} vs {c.against}: {c.reason}")
    code = e.code
    if code:
        reused = e.reused or 0
        lines.append(
            "code version "
            + ", ".join(h[:12] for h in code)
            + (" (MIXED: trials ran different code)" if len(code) > 1 else "")
            + (
                f"; {reused} trial(s) reused from other experiments with the same identity"
                if reused
                else ""
            )
        )
    log = e.test_log
    if log:
        line = (
            f"sealed test log: {log['evaluations']} test evaluation(s) by this experiment; "
            f"{log['experiments_on_task']} experiment(s) in this ledger evaluated this task's "
            "test split"
        )
        if log.get("warning"):
            line += f". Warning: {log['warning']}"
        lines.append(line)
    iso = e.arm_isolation
    if iso and iso.get("text"):
        lines.append(("" if iso.get("ok") else "Warning: ") + f"hidden variables: {iso['text']}")
    return lines
