"""Engineering claims and designed experiments in the result document, as typed records.

* :class:`CostVerdict`: one cost figure of a comparison (train time, FLOPs, energy, ...),
  paired by seed on the log scale: the ratio arm / against with its interval and a verdict
  (``faster``/``cheaper``, ``slower``/``costlier``, ``same``, ``inconclusive``);
* :class:`SpeedGuard`: in a speed trial (``[experiment] primary`` a time), the metric's
  non-inferiority check that a ``faster`` verdict needs;
* :class:`Design`, :class:`DesignEffect`: a factorial or fractional factorial design over an
  arm's components, with each main effect and interaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fairtrial.typed import Interval, Record

if TYPE_CHECKING:
    from fairtrial.results import Comparison

#: the one sentence every report gives on how the two kinds of ablation differ
LOO_VS_FACTORIAL = (
    "A leave-one-out ablation measures what a component adds with every other component "
    "present; a factorial main effect is its effect averaged over every combination of the "
    "others, and an interaction says how much one component's effect depends on another's."
)


@dataclass(frozen=True)
class CostVerdict(Record):
    """One cost figure of a comparison: the ratio arm / against, paired by seed."""

    figure: str = field(default="", metadata={"doc": "train_time, wall_time, flops, energy, ..."})
    basis: str | None = field(
        default=None, metadata={"doc": "the compute record's figure compared (memory: which one)"}
    )
    unit: str | None = None
    n_pairs: int = field(default=0, metadata={"doc": "seeds measured on both arms"})
    ratio: float | None = field(
        default=None, metadata={"doc": "geometric mean of the per-seed ratios arm / against"}
    )
    interval: Interval | None = field(
        default=None, metadata={"doc": "the ratio's interval (exp of the log-ratio interval)"}
    )
    interval_method: str | None = None
    t_interval: Interval | None = field(
        default=None, metadata={"doc": "the paired t interval on the logs, alongside"}
    )
    p: float | None = field(default=None, metadata={"doc": "sign-flip permutation p on the logs"})
    p_t: float | None = None
    p_adjusted: float | None = field(
        default=None, metadata={"doc": "Holm within the comparison's family, per figure"}
    )
    exact: bool = field(
        default=False, metadata={"doc": "the same ratio on every seed (deterministic): no test"}
    )
    same: dict[str, Any] | None = field(
        default=None, metadata={"doc": "TOST on the log ratio within the cost margin"}
    )
    noise: float | None = field(
        default=None, metadata={"doc": "timing noise between repeated identical trials"}
    )
    missing: int = field(default=0, metadata={"doc": "seeds of either arm without the figure"})
    verdict: str | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class SpeedGuard(Record):
    """A speed trial's guard: the metric may be at most ``margin`` worse (TOST's one side)."""

    margin: float | None = field(default=None, metadata={"doc": "smallest_effect"})
    lower: float | None = field(
        default=None, metadata={"doc": "lower bound of the metric effect's 1 - 2 alpha interval"}
    )
    non_inferior: bool = False
    metric_verdict: str | None = field(
        default=None, metadata={"doc": "the metric comparison's own verdict"}
    )
    metric_reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DesignEffect(Record):
    """One main effect or interaction of a factorial design, paired by seed."""

    term: str = field(default="", metadata={"doc": "letters: A (main effect), AB (interaction)"})
    components: list[str] = field(default_factory=list, metadata={"doc": "its factors' keys"})
    order: int = 1
    aliases: list[str] = field(
        default_factory=list, metadata={"doc": "fractional design: terms confounded with it"}
    )
    estimate: float | None = field(
        default=None, metadata={"doc": "high minus low level, signed: positive is better"}
    )
    interval: Interval | None = None
    interval_method: str | None = None
    t_interval: Interval | None = None
    p: float | None = None
    p_t: float | None = None
    p_adjusted: float | None = field(default=None, metadata={"doc": "Holm over every term"})
    tost: dict[str, Any] | None = None
    verdict: str | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Design(Record):
    """A 2-level design over the components of one arm: which components matter, and how they
    combine."""

    arm: str = ""
    kind: str = field(default="factorial", metadata={"doc": "factorial or fractional"})
    name: str = field(default="", metadata={"doc": "the design in words"})
    factors: dict[str, str] = field(
        default_factory=dict, metadata={"doc": "letter -> component key"}
    )
    generators: list[str] = field(default_factory=list)
    defining_relation: list[str] = field(default_factory=list)
    resolution: int | None = None
    runs: list[dict[str, Any]] = field(
        default_factory=list, metadata={"doc": "each combination: its levels, arm and mean"}
    )
    n_seeds: int = field(default=0, metadata={"doc": "seeds every run finished"})
    dropped_seeds: int = 0
    effects: list[DesignEffect] = field(default_factory=list)
    pooled: dict[str, Any] | None = field(
        default=None, metadata={"doc": "higher-order interactions, pooled"}
    )
    aliasing: list[dict[str, Any]] = field(
        default_factory=list, metadata={"doc": "fractional design: each term's alias chain"}
    )
    main_means: dict[str, Any] | None = field(
        default=None, metadata={"doc": "per factor: the metric's mean at low and high"}
    )
    pair_means: dict[str, Any] | None = field(
        default=None, metadata={"doc": "per pair of factors: the 2x2 means"}
    )
    text: str = field(default="", metadata={"doc": "the design and its method in words"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


# -- in words ------------------------------------------------------------------------------
#: the figures a report's one line shows, in order, when measured
LINE_FIGURES = ("time_to_target", "train_time", "flops", "energy", "memory")
_WORDS = {
    "train_time": "the train time",
    "time_to_target": "the time to target",
    "wall_time": "the wall time",
    "cpu_time": "the CPU time",
    "flops": "the FLOPs",
    "memory": "the memory",
    "energy": "the energy",
}


def figure_words(figure: str) -> str:
    """``"the train time"``: a cost figure in words."""
    return _WORDS.get(figure, figure.replace("_", " "))


def ratio_text(cv: CostVerdict) -> str:
    """``"1.21× [1.15, 1.27]"`` (an exact ratio without interval)."""
    if cv.ratio is None:
        return "—"
    iv = None if cv.exact or cv.interval is None else cv.interval
    return str(_format_ratio(cv.ratio, iv))


def cost_text(verdicts: Mapping[str, CostVerdict]) -> str:
    """``"for 1.21× the train time [1.15, 1.27] and 2.0× the FLOPs (exact)"``: the figures of
    :data:`LINE_FIGURES` that were measured (time to target in place of train time when there
    is one), '' when none was."""
    shown = [f for f in LINE_FIGURES if f in verdicts and verdicts[f].ratio is not None]
    if "time_to_target" in shown and "train_time" in shown:
        shown.remove("train_time")
    parts = [_with_words(verdicts[f], figure_words(f)) for f in shown[:3]]
    if not parts:
        return ""
    return "for " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])


def cost_line(c: Comparison) -> str:
    """What it gained for what it cost, in one line: ``"+0.025 [+0.021, +0.029] for 1.21× the
    train time [1.15, 1.27]"`` ('' without an effect)."""
    if c.effect is None:
        return ""
    gain = f"{c.effect:+.4g}"
    if c.interval is not None and c.interval[0] is not None and c.interval[1] is not None:
        gain += f" [{c.interval[0]:+.4g}, {c.interval[1]:+.4g}]"
    text = cost_text(c.costs or {}) if c.costs else (c.cost_text or "")
    return f"{gain} {text}".strip()


def _with_words(cv: CostVerdict, words: str) -> str:
    """``"1.21× the train time [1.15, 1.27]"`` (``"2.0× the FLOPs (exact)"``)."""
    shown = ratio_text(cv)
    head, _, tail = shown.partition(" [")
    if cv.exact:
        return f"{head} {words} (exact)"
    return f"{head} {words}" + (f" [{tail}" if tail else "")


def _format_ratio(ratio: float, interval: Any) -> str:
    from fairtrial.stats import format_ratio

    return str(format_ratio(ratio, interval))
