"""The validated spec: :class:`Spec` with its arms (:class:`Arm`), ablations and hypothesis,
all frozen plain data, and what identifies an experiment: its normalised form, whose hash
(:func:`hash_normalized`) is the spec hash and, in its first 12 hex digits, the experiment
id. :func:`flatten` and :func:`set_dotted` move between nested config tables and the dotted
keys arms change.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fairtrial.dotted import flatten, set_dotted
from fairtrial.record import Ablation, ArmKind, DesignInfo, Hypothesis
from fairtrial.tasks import METRICS
from fairtrial.tasks.external import is_external

__all__ = [
    "SAMPLERS",
    "Ablation",
    "Arm",
    "ArmKind",
    "DesignInfo",
    "Dim",
    "Hypothesis",
    "Spec",
    "TuningSpec",
    "flatten",
    "hash_normalized",
    "metric_direction",
    "set_dotted",
]


@dataclass(frozen=True)
class Arm:
    """One configuration: the baseline plus named components (dotted keys -> values)."""

    name: str
    kind: ArmKind
    config: dict[str, Any]
    components: dict[str, Any]
    parent: str | None = None  # ablations: the arm a component was removed from
    removed: str | None = None  # ablations: the component removed


@dataclass(frozen=True)
class Dim:
    """One dimension of a tuning space: a range (``low``..``high``, on a log scale with
    ``log``, whole numbers with ``integer``, in steps of ``step``) or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    def normalized(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        if self.integer:
            out["int"] = True
        return out

    def describe(self) -> str:
        """The dimension in words: ``1e-4..1 (log)``, ``one of 64, 128``."""
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        how = [w for w, on in (("log", self.log), ("whole numbers", self.integer)) if on]
        if self.step is not None:
            how.append(f"step {self.step:g}")
        return f"{self.low:g}..{self.high:g}" + (f" ({', '.join(how)})" if how else "")


#: the samplers ``[tuning] sampler`` names (Optuna's RandomSampler, QMCSampler, TPESampler)
SAMPLERS = ("random", "qmc", "tpe")


@dataclass(frozen=True)
class TuningSpec:
    """``[tuning]``: the same budget of configurations for every arm, chosen on a validation
    objective; each arm's best configuration then runs on the experiment's seeds."""

    budget: int
    sampler: str
    objective: str
    direction: Literal["max", "min"]
    seeds: int
    root_seed: int
    space: dict[str, Dim]
    #: ``[arms.NAME.tuning.space]``: hyperparameters only that arm has
    arm_spaces: dict[str, dict[str, Dim]] = field(default_factory=dict)

    def space_of(self, arm: Arm) -> dict[str, Dim]:
        """The space ``arm`` is tuned over: the common one and the arm's own (an ablation keeps
        its parent's own dimensions whose component it still has)."""
        own = self.arm_spaces.get(arm.name)
        if own is None and arm.parent is not None:
            own = {k: d for k, d in self.arm_spaces.get(arm.parent, {}).items() if k != arm.removed}
        return {**self.space, **(own or {})}

    def normalized(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "sampler": self.sampler,
            "objective": self.objective,
            "seeds": self.seeds,
            "root_seed": self.root_seed,
            "space": {k: d.normalized() for k, d in sorted(self.space.items())},
            "arms": {
                a: {k: d.normalized() for k, d in sorted(s.items())}
                for a, s in sorted(self.arm_spaces.items())
            },
        }


def metric_direction(name: str, default: Literal["max", "min"]) -> Literal["max", "min"]:
    """Whether higher or lower is better for the logged metric ``name``: that of the metric
    named after its ``val_``/``train_`` prefix (``val_mse``: min), "min" for a name ending in
    ``loss`` or ``error``, else ``default``."""
    bare = re.sub(r"^(val|train|valid|validation)_", "", name)
    if bare in METRICS:
        return METRICS[bare].direction
    if bare.endswith(("loss", "error")):
        return "min"
    return default


@dataclass(frozen=True)
class Spec:
    """A validated experiment spec."""

    name: str
    task: str
    seeds: int
    root_seed: int
    metric: str
    direction: Literal["max", "min"]
    baseline: dict[str, Any]
    arms: dict[str, Arm]
    recipe: str | None = None
    command: str | None = None
    target: float | None = None
    time_limit: float | None = None
    description: str = ""
    hypothesis: Hypothesis = field(default_factory=Hypothesis)
    ablations: tuple[Ablation, ...] = ()
    path: Path | None = None
    task_checksum: str = ""
    #: seeds = "auto": ``seeds`` starts at the pilot and grows to what the power analysis asks
    auto_seeds: bool = False
    max_seeds: int | None = None
    #: the ``[compute]`` keys that were set (fairtrial.meter.ComputeSettings.from_table reads it)
    compute: dict[str, Any] = field(default_factory=dict)
    #: the recipe has no randomness: each arm is one run (seeds past 0 only check that)
    deterministic: bool = False
    #: ``[tuning]``: equal tuning of every arm before the compared seeds run
    tuning: TuningSpec | None = None
    #: ``tasks = [...]``: the tasks of an experiment over several, and each one's own spec
    #: (a single-task spec each, ``part_of`` this one); empty for a single-task experiment
    tasks: tuple[str, ...] = ()
    task_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: tuple[Spec, ...] = ()
    #: ``suite:NAME`` when the tasks were named by a suite
    suite: str | None = None
    #: a task's spec within an experiment over several tasks: that experiment's name (not part
    #: of the normalised spec: a task's experiment, named ``NAME.TASK``, is a plain spec that
    #: a bundle rebuilds and replicates like any other)
    part_of: str | None = None

    def target_metric(self) -> tuple[str, Literal["max", "min"]]:
        """The logged metric time-to-target watches, and whether higher or lower is better.

        ``[compute] target_metric`` or ``val_<metric>``; the direction is that of the metric
        named after its ``val_``/``train_`` prefix (``val_mse``: min), "min" for a name ending
        in ``loss`` or ``error``, else the experiment metric's.
        """
        name = self.compute.get("target_metric") or f"val_{self.metric}"
        return name, metric_direction(name, self.direction)

    #: ``[experiment] primary``: "metric", or a cost ("train_time", "time_to_target") for a
    #: speed trial, whose metric is a non-inferiority guard
    primary: str = "metric"
    #: ``[ablations] factorial`` / ``fractional``: the design over an arm's components
    design: DesignInfo | None = None

    #: how a trial runs, not what it computes: neither is part of the experiment's identity
    max_retries: int = 2
    #: baseline trials (seeds 1..n) run a second time, so the report can state the timing
    #: noise between repeated identical trials (not part of the identity either)
    timing_repeats: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    #: ``[slurm]``: where ``--backend slurm`` submits (the keys that were set)
    slurm: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def normalized(self) -> dict[str, Any]:
        """The spec as canonical data: what identifies the experiment (its hash covers this)."""
        return {
            "experiment": {
                "name": self.name,
                "task": self.task,
                "recipe": self.recipe,
                "command": self.command,
                "seeds": "auto" if self.auto_seeds else self.seeds,
                **({"max_seeds": self.max_seeds} if self.auto_seeds else {}),
                # only when set: experiments from before the key keep their ids
                **({"deterministic": True} if self.deterministic else {}),
                "root_seed": self.root_seed,
                "metric": self.metric,
                # an external task's metric is the spec's own: its direction is part of what
                # the experiment is (only there: other experiments keep their ids)
                **({"direction": self.direction} if is_external(self.task) else {}),
                "target": self.target,
                "time_limit": self.time_limit,
                # only when set: experiments from before the key keep their ids
                **({"primary": self.primary} if self.primary != "metric" else {}),
            },
            "hypothesis": {
                "claim": self.hypothesis.claim,
                "smallest_effect": self.hypothesis.smallest_effect,
                "alpha": self.hypothesis.alpha,
                "power": self.hypothesis.power,
                **(
                    {"cost_margin": self.hypothesis.cost_margin}
                    if self.hypothesis.cost_margin != Hypothesis.cost_margin
                    else {}
                ),
            },
            "baseline": self.baseline,
            "arms": {a.name: a.components for a in self.arms.values() if a.kind == "arm"},
            "ablations": sorted({a.arm for a in self.ablations}),
            # only when set: experiments without tuning keep their ids
            **({"tuning": self.tuning.normalized()} if self.tuning else {}),
            **({"design": self.design.normalized()} if self.design else {}),
            **(self._tasks_normalized() if self.tasks else {}),
        }

    def _tasks_normalized(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tasks": list(self.tasks),
            "task_overrides": self.task_overrides,
            # each task's own experiment (its id covers its overrides and the code's options)
            "children": {c.task: c.experiment_id for c in self.children},
        }
        if self.suite:
            out["suite"] = self.suite
        return out

    def arm_table(self) -> dict[str, list[dict[str, Any]]]:
        """Arms in order (baseline, declared arms, ablations) and the ablation map."""
        return {
            "arms": [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "components": a.components,
                    "parent": a.parent,
                    "removed": a.removed,
                }
                for a in self.arms.values()
            ],
            "ablations": [
                {"arm": ab.arm, "removed": ab.removed, "as": ab.as_arm} for ab in self.ablations
            ],
        }

    @property
    def spec_hash(self) -> str:
        return hash_normalized(self.normalized())

    @property
    def experiment_id(self) -> str:
        return self.spec_hash[:12]


def hash_normalized(normalized: Mapping[str, Any]) -> str:
    """The spec hash of a normalised spec (:meth:`Spec.normalized`): an experiment's identity;
    its first 12 hex digits are the experiment id."""
    blob = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
