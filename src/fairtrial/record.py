"""A stored experiment as one typed record: what its spec fixed for the analysis.

The ledger keeps an experiment's normalized spec as JSON; bundles carry the same JSON. Every
module that needs to know what the spec said after the run (the analysis, the preregistration,
``replicate``, bundles, the registry's ingest) reads it through :class:`ExperimentRecord`, so a
default (alpha 0.05, power 0.8) or a rule (which direction of the metric is better, which trial
statuses count as lost) is written once, here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from fairtrial.tomlw import spec_toml

if TYPE_CHECKING:
    from fairtrial.ledger import ExperimentRow

Direction = Literal["max", "min"]
#: how an attempt of a trial ended, as a backend reports it. "lost": the process running it
#: died under it (killed, crashed, vanished with its node); the runner retries a lost trial as
#: its next attempt, up to ``max_retries``
OutcomeStatus = Literal["finished", "failed", "diverged", "interrupted", "lost"]
#: every status a trial row can hold: not yet run, running, or how its last attempt ended
TrialStatus = Literal["pending", "running", "finished", "failed", "diverged", "interrupted", "lost"]
TRIAL_STATUSES: tuple[str, ...] = get_args(TrialStatus)
#: a trial that ran and will not run again unless asked: it has an outcome
ENDED: tuple[str, ...] = ("finished", "failed", "diverged")
#: an ended trial without a result: counted per arm, never averaged in
LOST: tuple[str, ...] = ("failed", "diverged")
#: "design": a combination of an arm's components that a factorial design runs (and no other
#: arm of the spec has)
ArmKind = Literal["baseline", "arm", "ablation", "design"]
#: the cost margin when the spec sets none: costs within 5% of each other count as the same
DEFAULT_COST_MARGIN = 0.05


def sign(direction: str) -> float:
    """+1 when higher is better (``max``), -1 when lower is (``min``): multiply a score by it
    and higher is better either way."""
    return 1.0 if direction == "max" else -1.0


def better_word(direction: str) -> str:
    """ "higher" or "lower": which way of the metric is better, in a word."""
    return "higher" if direction == "max" else "lower"


def worst(values: Iterable[float], direction: str) -> float | None:
    """The worst of ``values`` in the metric's direction (None when there are none)."""
    vals = list(values)
    if not vals:
        return None
    return min(vals) if direction == "max" else max(vals)


@dataclass(frozen=True)
class Hypothesis:
    """What the spec's ``[hypothesis]`` table fixes for the analysis (with its defaults)."""

    claim: str = ""
    smallest_effect: float | None = None
    alpha: float = 0.05
    power: float = 0.8
    #: costs (times, FLOPs, energy, ...) whose ratio is shown within 1 ± this are the "same"
    cost_margin: float = DEFAULT_COST_MARGIN

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None) -> Hypothesis:
        """From a ``[hypothesis]`` table as stored (missing keys take the defaults)."""
        h = table or {}
        se = h.get("smallest_effect")
        cm = h.get("cost_margin")
        return cls(
            claim=str(h.get("claim") or ""),
            smallest_effect=None if se is None else float(se),
            alpha=float(h.get("alpha", cls.alpha)),
            power=float(h.get("power", cls.power)),
            cost_margin=DEFAULT_COST_MARGIN if cm is None else float(cm),
        )

    @classmethod
    def from_spec(cls, normalized: Mapping[str, Any]) -> Hypothesis:
        """From a whole normalized spec."""
        return cls.from_table(normalized.get("hypothesis"))

    @property
    def confidence(self) -> float:
        """The confidence of every interval: 1 - alpha."""
        return 1.0 - self.alpha


@dataclass(frozen=True)
class ArmInfo:
    """One arm as the experiment stored it: its kind and the components it adds."""

    name: str
    kind: ArmKind
    components: dict[str, Any]
    #: ablations: the arm a component was removed from, and which
    parent: str | None = None
    removed: str | None = None


@dataclass(frozen=True)
class Ablation:
    """``arm`` without ``removed``, run as arm ``as_arm`` (generated, or an arm declared alike)."""

    arm: str
    removed: str
    as_arm: str


@dataclass(frozen=True)
class DesignInfo:
    """``[ablations] factorial`` / ``fractional``: the 2-level design over the components of
    ``arm``. ``factors`` are the components (dotted keys, sorted: factor A is the first);
    the runs and their arms are worked out by :meth:`ExperimentRecord.design_runs`."""

    arm: str
    kind: Literal["factorial", "fractional"]
    factors: tuple[str, ...]
    #: the least resolution asked of a fraction (None: a full factorial)
    resolution: int | None = None
    #: the highest order of interaction listed one by one (higher ones are pooled)
    interactions: int = 2

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any] | None, components: Mapping[str, Any]
    ) -> DesignInfo | None:
        """From the normalised spec's ``design`` table and the designed arm's components."""
        if not table:
            return None
        kind: Literal["factorial", "fractional"] = (
            "fractional" if table.get("fractional") else "factorial"
        )
        return cls(
            arm=str(table.get(kind)),
            kind=kind,
            factors=tuple(sorted(components)),
            resolution=int(table.get("resolution") or 4) if kind == "fractional" else None,
            interactions=int(table.get("interactions") or 2),
        )

    def build(self) -> Any:
        """The design itself (:class:`fairtrial.stats.factorial.Design`): its runs, and for a
        fraction its generators and aliasing."""
        from fairtrial.stats import factorial

        k = len(self.factors)
        if self.kind == "fractional":
            return factorial.fractional_factorial(k, resolution=self.resolution or 4)
        return factorial.full_factorial(k)

    def normalized(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.kind: self.arm, "interactions": self.interactions}
        if self.resolution is not None:
            out["resolution"] = self.resolution
        return out


@dataclass(frozen=True)
class ExperimentRecord:
    """A stored experiment's spec, typed: what the analysis, reports and bundles read."""

    id: str
    name: str
    spec_hash: str
    task: str
    task_checksum: str
    metric: str
    direction: Direction
    seeds: int
    root_seed: int
    #: the normalized spec, as hashed
    spec: dict[str, Any]
    arms: tuple[ArmInfo, ...]
    ablations: tuple[Ablation, ...] = ()
    spec_path: str | None = None
    hypothesis: Hypothesis = field(default_factory=Hypothesis)

    @classmethod
    def from_normalized(
        cls,
        normalized: Mapping[str, Any],
        arm_table: Mapping[str, Any],
        *,
        id: str,
        spec_hash: str,
        task_checksum: str = "",
        spec_path: str | None = None,
    ) -> ExperimentRecord:
        """From a normalized spec and its arm table (``Spec.arm_table()``'s shape)."""
        e = normalized.get("experiment") or {}
        seeds = e.get("seeds")
        if not isinstance(seeds, int) or isinstance(seeds, bool):
            seeds = int(e.get("max_seeds") or 0)
        direction = e.get("direction", "max")
        return cls(
            id=id,
            name=str(e.get("name", id)),
            spec_hash=spec_hash,
            task=str(e.get("task", "")),
            task_checksum=task_checksum,
            metric=str(e.get("metric", "")),
            direction="min" if direction == "min" else "max",
            seeds=seeds,
            root_seed=int(e.get("root_seed", 0)),
            spec=dict(normalized),
            arms=tuple(
                ArmInfo(
                    name=a["name"],
                    kind=a["kind"],
                    components=dict(a.get("components") or {}),
                    parent=a.get("parent"),
                    removed=a.get("removed"),
                )
                for a in arm_table.get("arms", [])
            ),
            ablations=tuple(
                Ablation(arm=ab["arm"], removed=ab["removed"], as_arm=ab["as"])
                for ab in arm_table.get("ablations", [])
            ),
            spec_path=spec_path,
            hypothesis=Hypothesis.from_spec(normalized),
        )

    @classmethod
    def from_row(cls, row: ExperimentRow) -> ExperimentRecord:
        """From the ledger's (or a bundle's) experiment row."""
        rec = cls.from_normalized(
            row.spec,
            row.arms,
            id=row.id,
            spec_hash=row.spec_hash,
            task_checksum=row.task_checksum,
            spec_path=row.spec_path,
        )
        # the row's own columns are what the run used
        return rec.replace(
            name=row.name,
            task=row.task,
            metric=row.metric,
            direction="min" if row.direction == "min" else "max",
            seeds=row.seeds,
            root_seed=row.root_seed,
        )

    # -- what the spec fixed -------------------------------------------------------------------
    @property
    def experiment_table(self) -> dict[str, Any]:
        return dict(self.spec.get("experiment") or {})

    @property
    def claim(self) -> str:
        return self.hypothesis.claim

    @property
    def deterministic(self) -> bool:
        """The spec says the recipe has no randomness: one run per arm, compared exactly."""
        return bool(self.experiment_table.get("deterministic"))

    @property
    def seeds_auto(self) -> bool:
        """``seeds = "auto"``: the run plans its seeds from the pilot's spread."""
        return self.experiment_table.get("seeds") == "auto"

    @property
    def primary(self) -> str:
        """What a comparison's verdict is about: ``metric``, or the cost of a speed trial
        (``train_time``, ``time_to_target``) with the metric as its guard."""
        return str(self.experiment_table.get("primary") or "metric")

    @property
    def design(self) -> DesignInfo | None:
        """The factorial design of the spec's ``[ablations]``, if it has one."""
        table = self.spec.get("design")
        if not table:
            return None
        target = table.get("factorial") or table.get("fractional")
        arm = next((a for a in self.arms if a.name == target), None)
        return DesignInfo.from_table(table, arm.components if arm else {})

    def design_arm(self, levels: Iterable[int]) -> str | None:
        """The arm that runs the combination ``levels`` (+1: the component on, -1: off, in
        the order of :attr:`DesignInfo.factors`), or None when no arm has exactly it."""
        design = self.design
        if design is None:
            return None
        target = self.arm(design.arm).components
        wanted = {f: target[f] for f, on in zip(design.factors, levels, strict=True) if on > 0}
        return next((a.name for a in self.arms if a.components == wanted), None)

    @property
    def max_seeds(self) -> int:
        return int(self.experiment_table.get("max_seeds") or self.seeds)

    @property
    def recipe(self) -> str | None:
        return self.experiment_table.get("recipe")

    @property
    def command(self) -> str | None:
        return self.experiment_table.get("command")

    @property
    def sign(self) -> float:
        """+1 when higher is better, -1 when lower is (see :func:`sign`)."""
        return sign(self.direction)

    @property
    def better(self) -> str:
        """ "higher" or "lower"."""
        return better_word(self.direction)

    def replace(self, **changes: Any) -> ExperimentRecord:
        """A copy with ``changes`` (records are frozen)."""
        return dataclasses.replace(self, **changes)

    def arm(self, name: str) -> ArmInfo:
        return next(a for a in self.arms if a.name == name)

    @property
    def compared(self) -> list[tuple[str, str]]:
        """Every comparison the analysis makes, in order: (arm, against)."""
        pairs = [(a.name, "baseline") for a in self.arms if a.kind == "arm"]
        return pairs + [(ab.arm, ab.as_arm) for ab in self.ablations]

    def arm_table(self) -> dict[str, list[dict[str, Any]]]:
        """The arms as the ledger stores them (``Spec.arm_table()``'s shape)."""
        return {
            "arms": [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "components": a.components,
                    "parent": a.parent,
                    "removed": a.removed,
                }
                for a in self.arms
            ],
            "ablations": [
                {"arm": ab.arm, "removed": ab.removed, "as": ab.as_arm} for ab in self.ablations
            ],
        }

    def to_toml(self) -> str:
        """The spec as a TOML file that loads to the same normalized spec (same hash)."""
        return spec_toml(self.spec)
