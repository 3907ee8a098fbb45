"""The result of an analysis as typed, frozen data: :class:`Analysis` and its parts.

One function builds it (:func:`fairtrial.analysis.build`), from per-seed results, the
experiment's record and the options, whether the results come from the ledger, from a bundle or
from an upload to the registry. Reports, bundles, ``replicate``, the registry and its pages read
its attributes. ``to_dict()`` gives the JSON document of ``fairtrial report --format json`` and
``results/analysis.json`` in a bundle; ``from_dict()`` reads one back, including documents
written by older versions (a missing key reads as None) and newer ones (keys this version does
not know are kept, in ``extra``, and written back unchanged).

The JSON is a stable interface: keys are added, never renamed. ``SCHEMA_VERSION`` counts
additions; ``docs/results-schema.md`` is generated from these classes
(``python -m fairtrial.results``) and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fairtrial.across import AcrossComparison, AcrossTasks, TaskEffect
from fairtrial.claims import CostVerdict, Design, DesignEffect, SpeedGuard
from fairtrial.record import better_word
from fairtrial.resultschema import schema_markdown as markdown
from fairtrial.tuning.records import ArmTuning, Importance, TuningCurve, TuningTrial
from fairtrial.typed import Interval, Record
from fairtrial.typed import ShapeError as ShapeError  # part of this module's API

#: the result document's schema: 2 is the first typed one (documents without the key are 1);
#: 3 adds ``tuning``, ``across`` and ``tasks``; 4 adds ``costs``, ``primary`` and ``guard`` to a
#: comparison and ``design``
SCHEMA_VERSION = 4


# -- comparisons ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tost(Record):
    """Two one-sided tests: is the effect within ±margin?"""

    pvalue: float | None = None
    equivalent: bool | None = None
    margin: float | None = None
    interval: Interval | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ProbImprovement(Record):
    """Share of seeds on which the arm beats the other (ties count half), with its interval."""

    estimate: float | None = None
    interval: Interval | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CostRatios(Record):
    """Arm / other ratios of the mean cost per trial (None where either side lacks it)."""

    flops: float | None = None
    time: float | None = None
    wall_time: float | None = None
    energy: float | None = None
    co2e: float | None = None
    memory: float | None = None
    cost: float | None = None
    #: which figure each ratio compares (e.g. time: train_time, else wall_time)
    basis: dict[str, str | None] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Comparison(Record):
    """One arm against another, paired by seed: effect, interval, test, verdict, cost."""

    arm: str = field(metadata={"doc": "the arm judged"})
    against: str = field(
        metadata={"doc": "the arm it is compared with (``baseline``, or an ablation arm)"}
    )
    family: str = field(default="", metadata={"doc": "Holm's family it is corrected in"})
    n_pairs: int = field(
        default=0, metadata={"doc": "seeds both arms finished (the pairs compared)"}
    )
    effect: float | None = field(
        default=None, metadata={"doc": "mean paired difference; + is better"}
    )
    sd_diff: float | None = field(default=None, metadata={"doc": "sd of the paired differences"})
    interval: Interval | None = field(
        default=None, metadata={"doc": "the effect's interval (method: interval_method)"}
    )
    interval_method: str | None = field(
        default=None, metadata={"doc": "paired t below 20 pairs, BCa bootstrap from 20"}
    )
    bca_interval: Interval | None = field(
        default=None, metadata={"doc": "the BCa bootstrap interval"}
    )
    t_interval: Interval | None = field(default=None, metadata={"doc": "the paired t interval"})
    p: float | None = field(default=None, metadata={"doc": "sign-flip permutation p (unadjusted)"})
    p_method: str | None = field(default=None, metadata={"doc": "exact or Monte Carlo permutation"})
    p_t: float | None = field(default=None, metadata={"doc": "paired t-test p, alongside"})
    d_z: float | None = field(default=None, metadata={"doc": "mean / sd of the paired differences"})
    prob_improvement: ProbImprovement | None = field(
        default=None, metadata={"doc": "P(arm beats the other)"}
    )
    tost: Tost | None = field(
        default=None, metadata={"doc": "equivalence test (with smallest_effect)"}
    )
    mde: float | None = field(
        default=None, metadata={"doc": "minimum detectable effect at these pairs"}
    )
    wins: int = field(default=0, metadata={"doc": "seeds where the arm is better"})
    losses: int = field(default=0, metadata={"doc": "seeds where the arm is worse"})
    ties: int = field(default=0, metadata={"doc": "seeds where the two are equal"})
    deterministic: bool | None = field(
        default=None, metadata={"omit_none": True, "doc": "true: one run per arm, compared exactly"}
    )
    invalid: str | None = field(
        default=None, metadata={"omit_none": True, "doc": "why the data cannot support a verdict"}
    )
    unpaired: bool | None = field(
        default=None,
        metadata={
            "omit_none": True,
            "doc": "true: the arms share no seed, compared unpaired (Welch; imported results)",
        },
    )
    dropped_seeds: dict[str, int] | None = field(
        default=None,
        metadata={
            "omit_none": True,
            "doc": "arm -> its seeds without a partner in the other arm, left out (imported)",
        },
    )
    p_adjusted: float | None = field(
        default=None, metadata={"doc": "Holm-adjusted p within the family"}
    )
    seeds_needed: int | None = field(
        default=None, metadata={"doc": "seeds to detect smallest_effect (inconclusive)"}
    )
    verdict: str | None = field(
        default=None, metadata={"doc": "better, worse, equivalent, inconclusive or invalid"}
    )
    reason: str | None = field(default=None, metadata={"doc": "the verdict's reason in one line"})
    cost: CostRatios | None = field(
        default=None, metadata={"doc": "what the arm cost relative to the other"}
    )
    cost_text: str | None = field(default=None, metadata={"doc": "the cost ratios in words"})
    costs: dict[str, CostVerdict] | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "each cost figure paired by seed, with a verdict"},
    )
    primary: str | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "a speed trial: the cost the verdict is about"},
    )
    guard: SpeedGuard | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "a speed trial: the metric's non-inferiority"},
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.arm, self.against)


@dataclass(frozen=True)
class Ablation(Comparison):
    """An arm against itself without one component: that component's contribution."""

    removed: str | None = field(
        default=None, metadata={"omit_none": True, "doc": "the component removed"}
    )
    ablation_arm: str | None = field(
        default=None, metadata={"omit_none": True, "doc": "the arm that runs without it"}
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Interaction(Record):
    """Do an arm's components add up? Sum of contributions minus the total effect."""

    arm: str = ""
    ablations: list[str] = field(default_factory=list)
    n_pairs: int = 0
    total_effect: float | None = field(
        default=None, metadata={"omit_none": True, "doc": "the arm's effect against the baseline"}
    )
    sum_of_contributions: float | None = field(
        default=None, metadata={"omit_none": True, "doc": "sum of the components' contributions"}
    )
    interaction: float | None = None
    interval: Interval | None = None
    additive: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


# -- arms -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure(Record):
    """A seed of an arm that failed or diverged: counted, never averaged in."""

    seed: int = 0
    status: str = ""
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Figure(Record):
    """One compute figure of an arm: mean ± sd over finished trials, total over all."""

    mean: float | None = None
    sd: float | None = None
    total: float | None = None
    n: int | None = None
    missing: int | None = None
    unit: str | None = None
    #: how it was measured, or why it is missing
    method: str | None = None
    methods: list[str] | None = None
    n_total: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ArmCompute(Record):
    """What an arm's trials cost: per-figure summaries and time-to-target."""

    wall_time_mean_s: float | None = None
    wall_time_total_s: float | None = None
    n: int | None = field(
        default=None, metadata={"omit_none": True, "doc": "trials with a compute record"}
    )
    n_finished: int | None = field(
        default=None, metadata={"omit_none": True, "doc": "finished trials with a compute record"}
    )
    figures: dict[str, Figure] | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "train_time, wall_time, flops, energy, ..."},
    )
    time_to_target: dict[str, Any] | None = field(
        default=None, metadata={"omit_none": True, "doc": "olympic mean time to the target"}
    )
    settings: dict[str, Any] | None = field(
        default=None, metadata={"omit_none": True, "doc": "grid intensity, PUE, price used"}
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def figure(self, name: str) -> Figure:
        """The figure ``name`` (an empty one when the arm has none)."""
        return (self.figures or {}).get(name) or Figure()


@dataclass(frozen=True)
class ArmSummary(Record):
    """One arm's test scores per seed, its summary and what it cost."""

    n: int = field(default=0, metadata={"doc": "finished seeds"})
    failed: int = field(default=0, metadata={"doc": "failed or diverged seeds"})
    diverged: int = field(default=0, metadata={"doc": "diverged seeds"})
    pending: int = field(default=0, metadata={"doc": "seeds not yet run"})
    seeds: list[int] = field(default_factory=list, metadata={"doc": "the seeds scored, in order"})
    values: list[float | None] = field(
        default_factory=list, metadata={"doc": "each seed's test score"}
    )
    mean: float | None = None
    sd: float | None = None
    interval: Interval | None = field(default=None, metadata={"doc": "t interval of the mean"})
    compute: ArmCompute = field(default_factory=ArmCompute)
    failures: list[Failure] = field(default_factory=list)
    kind: str | None = field(default=None, metadata={"doc": "baseline, arm or ablation"})
    components: dict[str, Any] = field(
        default_factory=dict, metadata={"doc": "what the arm adds to the baseline"}
    )
    seed_blind: bool | None = field(
        default=None, metadata={"doc": "every seed gave identical predictions"}
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scores(self) -> dict[int, float]:
        """``{seed: score}`` of the seeds scored."""
        return {s: float(v) for s, v in zip(self.seeds, self.values, strict=False) if v is not None}


# -- the whole ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentSummary(Record):
    """What was run: the experiment's identity, its seeds and trials, and how it was kept."""

    id: str = ""
    name: str = ""
    task: str = ""
    metric: str = ""
    direction: str = "max"
    spec_hash: str = ""
    preregistered: dict[str, Any] | None = field(
        default=None, metadata={"doc": "the preregistration and every deviation from it"}
    )
    task_checksum: str | None = None
    seeds: int | None = None
    root_seed: int | None = None
    claim: str = ""
    trials: int | None = field(default=None, metadata={"doc": "trials in the verdict"})
    #: the code version(s) of the trials in the verdict
    code: list[str] = field(default_factory=list)
    reused: int | None = field(
        default=None, metadata={"doc": "trials reused from other experiments"}
    )
    test_evaluations: int | None = field(
        default=None, metadata={"doc": "stored test evaluations of this experiment"}
    )
    test_log: dict[str, Any] | None = field(
        default=None, metadata={"doc": "the sealed test log of the task"}
    )
    arm_isolation: dict[str, Any] | None = field(
        default=None, metadata={"doc": "hidden variables that differ between arms"}
    )
    seed_plan: dict[str, Any] | None = field(
        default=None, metadata={"omit_none": True, "doc": "the seed plan of seeds = 'auto'"}
    )
    imported: dict[str, Any] | None = field(
        default=None,
        metadata={
            "omit_none": True,
            "doc": "results not run by fairtrial: their source, and what that means",
        },
    )
    evaluation: str | None = field(
        default=None,
        metadata={
            "omit_none": True,
            "doc": "'recipe': the recipe evaluated itself (task external:NAME), not sealed",
        },
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def better(self) -> str:
        """ "higher" or "lower"."""
        return better_word(self.direction)


@dataclass(frozen=True)
class ComputeInfo(Record):
    """How compute was priced and on what hardware it ran."""

    settings: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    worker_startup: dict[str, Any] | None = None
    timing_noise: dict[str, Any] | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "time spread between repeated identical trials"},
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Tuning(Record):
    """Equal tuning of every arm, then each arm's best configuration on fresh paired seeds."""

    budget: int = field(default=0, metadata={"doc": "configurations tried per arm"})
    sampler: str = ""
    objective: str = field(default="", metadata={"doc": "the validation metric tuned"})
    direction: str = "max"
    seeds: int = field(default=1, metadata={"doc": "tuning seeds per configuration"})
    root_seed: int = field(default=0, metadata={"doc": "the sampler's seed"})
    arms: dict[str, ArmTuning] = field(default_factory=dict)
    untuned: list[Comparison] = field(
        default_factory=list, metadata={"doc": "the verdicts of the arms at their spec values"}
    )
    untuned_note: str | None = field(
        default=None, metadata={"doc": "why there are no untuned verdicts, or what they mean"}
    )
    compute: dict[str, Any] | None = field(
        default=None, metadata={"doc": "tuning and evaluation compute, summed over arms"}
    )
    text: str = field(default="", metadata={"doc": "the procedure in words"})
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Analysis(Record):
    """The result of an experiment: verdicts, ablations, arms, compute and the method used."""

    schema_version: int = field(
        default=SCHEMA_VERSION, metadata={"doc": "the schema of this document (absent: 1)"}
    )
    experiment: ExperimentSummary = field(
        default_factory=ExperimentSummary, metadata={"doc": "what was run"}
    )
    arms: dict[str, ArmSummary] = field(
        default_factory=dict, metadata={"doc": "arm name -> its scores and compute"}
    )
    comparisons: list[Comparison] = field(
        default_factory=list, metadata={"doc": "every arm against the baseline"}
    )
    ablations: list[Ablation] = field(
        default_factory=list, metadata={"doc": "every arm against itself without a component"}
    )
    interactions: list[Interaction] = field(
        default_factory=list, metadata={"doc": "whether each arm's components add up"}
    )
    compute: ComputeInfo = field(
        default_factory=ComputeInfo, metadata={"doc": "how compute was priced, on what hardware"}
    )
    provenance: dict[str, Any] = field(
        default_factory=dict, metadata={"doc": "versions, machine and git state of the trials"}
    )
    #: every statistical choice, in words and (under ``method``) as data
    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={"doc": "every statistical choice, in words and (under method) as data"},
    )
    #: the test examples on which the arms disagree (classification)
    predictions: dict[str, Any] | None = field(
        default=None, metadata={"doc": "test examples on which the arms disagree"}
    )
    config_reads: dict[str, Any] | None = field(
        default=None, metadata={"doc": "config keys an arm set but its trials never read"}
    )
    across: AcrossTasks | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "over several tasks: every claim across them"},
    )
    tasks: dict[str, Analysis] | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "over several tasks: each task's own analysis"},
    )
    tuning: Tuning | None = field(
        default=None,
        metadata={
            "omit_none": True,
            "doc": "equal tuning of every arm, when the spec has [tuning]",
        },
    )
    design: Design | None = field(
        default=None,
        metadata={"omit_none": True, "doc": "a factorial design over an arm's components"},
    )
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "") -> Analysis:
        doc = super().from_dict(data, where)
        if "schema_version" not in data:  # written before the schema was typed
            doc = dataclasses.replace(doc, schema_version=1)
        return doc

    @classmethod
    def from_json(cls, text: str | bytes) -> Analysis:
        return cls.from_dict(json.loads(text))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    # -- reading -----------------------------------------------------------------------------
    @property
    def judged(self) -> list[Comparison]:
        """Every comparison with a verdict: arms against the baseline, then ablations."""
        return [*self.comparisons, *self.ablations]

    def comparison(self, arm: str, against: str = "baseline") -> Comparison:
        """The comparison of ``arm`` with ``against``; KeyError naming the ones there are."""
        for c in self.judged:
            if c.arm == arm and c.against == against:
                return c
        have = ", ".join(f"{c.arm} vs {c.against}" for c in self.judged) or "none"
        raise KeyError(f"no comparison of {arm} with {against} (there are: {have})")

    @property
    def verdicts(self) -> dict[str, str | None]:
        """``{"arm vs against": verdict}`` of every comparison (over several tasks: the
        across-task verdicts, then each task's as ``"arm vs against on TASK"``)."""
        out = {f"{c.arm} vs {c.against}": c.verdict for c in self.judged}
        if self.across is not None:
            out.update({f"{c.arm} vs {c.against}": c.verdict for c in self.across.comparisons})
        for task, doc in (self.tasks or {}).items():
            out.update({f"{k} on {task}": v for k, v in doc.verdicts.items()})
        return out

    @property
    def confidence(self) -> float:
        return float(self.settings.get("confidence", 0.95))

    @property
    def method(self) -> dict[str, Any]:
        """The method as data (what a preregistration freezes)."""
        return dict(self.settings.get("method") or {})

    def failures(self) -> Iterator[tuple[str, Failure]]:
        for name, a in self.arms.items():
            for f in a.failures:
                yield name, f

    # -- showing itself ----------------------------------------------------------------------
    def _repr_html_(self) -> str:
        """In Jupyter: the HTML report's verdict, ablation and arm tables, with its figures."""
        from fairtrial.report.html import render_html

        return render_html(self, fragment=True)

    def __rich__(self) -> Any:
        """In a terminal (``rich.print(analysis)``): the text report."""
        from fairtrial.report import render_text

        return render_text(self)

    def __repr__(self) -> str:
        verdicts = "; ".join(f"{k}: {v}" for k, v in self.verdicts.items()) or "no comparisons"
        return f"<Analysis {self.experiment.name} ({self.experiment.id}): {verdicts}>"


# -- the schema, in words ------------------------------------------------------------------------
SCHEMA_CLASSES: tuple[type[Record], ...] = (
    Analysis,
    ExperimentSummary,
    ArmSummary,
    ArmCompute,
    Figure,
    Failure,
    Comparison,
    Ablation,
    Tost,
    ProbImprovement,
    CostRatios,
    CostVerdict,
    SpeedGuard,
    Interaction,
    ComputeInfo,
    Design,
    DesignEffect,
    AcrossTasks,
    AcrossComparison,
    TaskEffect,
    Tuning,
    ArmTuning,
    TuningTrial,
    TuningCurve,
    Importance,
)


def schema_markdown() -> str:
    """The result document's schema as Markdown (``docs/results-schema.md``)."""
    return markdown(SCHEMA_CLASSES, SCHEMA_VERSION)


if __name__ == "__main__":
    print(schema_markdown(), end="")
