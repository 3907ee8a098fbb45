"""The TOML tables of a spec as pydantic models: ``[experiment]``, ``[hypothesis]``,
``[compute]`` and ``[ablations]``, each key's type and range checked by a validator whose
message says what would be valid (:data:`_VALID`, in words rather than Python types). They
are private: the loader validates a table with one and copies what it holds into the frozen
:class:`~fairtrial.spec.Spec`.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, field_validator

from fairtrial.spec.limits import (
    MAX_REF,
    MAX_RETRIES,
    MAX_SEEDS,
    MAX_TIME_LIMIT,
    MAX_TIMING_REPEATS,
    NAME_RULE,
    PILOT_SEEDS,
    PRIMARIES,
    RESOURCE_KEYS,
    ROOT_SEED_END,
    SBATCH_KEY,
    valid_name,
)


class _Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    task: str
    recipe: str | None = None
    command: str | None = None
    seeds: int | str | None = None
    max_seeds: int | None = None
    deterministic: bool = False
    root_seed: int = 0
    metric: str | None = None
    direction: str | None = None
    target: float | int | None = None
    time_limit: float | int | None = None
    description: str = ""
    max_retries: int = 2
    resources: dict[str, float | int] = {}
    primary: str = "metric"
    timing_repeats: int | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not valid_name(v):
            raise ValueError(f"must be {NAME_RULE}")
        return v

    @field_validator("task", "recipe")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_REF:
            raise ValueError(f"is {len(v)} characters long; at most {MAX_REF}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError(f"must be {_VALID['seeds']}")
            return v
        if v is not None and v < 1:
            raise ValueError("must be at least 2 (one seed cannot tell a gain from luck)")
        if v is not None and v > MAX_SEEDS:
            raise ValueError(f"must be at most {MAX_SEEDS} seeds per arm")
        return v

    @field_validator("max_seeds")
    @classmethod
    def _max_seeds(cls, v: int | None) -> int | None:
        if v is not None and v < PILOT_SEEDS:
            raise ValueError(f"must be at least the {PILOT_SEEDS} seeds of the pilot")
        if v is not None and v > MAX_SEEDS:
            raise ValueError(f"must be at most {MAX_SEEDS} seeds per arm")
        return v

    @field_validator("root_seed")
    @classmethod
    def _root_seed(cls, v: int) -> int:
        if not 0 <= v < ROOT_SEED_END:
            raise ValueError(f"must be {_VALID['root_seed']}")
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be {_VALID['target']}")
        return v

    @field_validator("time_limit")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= MAX_TIME_LIMIT:
            raise ValueError(f"must be {_VALID['time_limit']}")
        return v

    @field_validator("primary")
    @classmethod
    def _primary(cls, v: str) -> str:
        if v not in PRIMARIES:
            raise ValueError(f"must be {_VALID['primary']}")
        return v

    @field_validator("direction")
    @classmethod
    def _direction(cls, v: str | None) -> str | None:
        if v is not None and v not in ("max", "min"):
            raise ValueError(f"must be {_VALID['direction']}")
        return v

    @field_validator("timing_repeats")
    @classmethod
    def _repeats(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v <= MAX_TIMING_REPEATS:
            raise ValueError(f"must be {_VALID['timing_repeats']}")
        return v

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, v: int) -> int:
        if not 0 <= v <= MAX_RETRIES:
            raise ValueError(
                f"must be a whole number from 0 to {MAX_RETRIES} (0 = never retry a lost trial)"
            )
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float | int]) -> dict[str, float | int]:
        for key, amount in v.items():
            if key not in RESOURCE_KEYS:
                raise ValueError(f"unknown resource '{key}'; valid: {', '.join(RESOURCE_KEYS)}")
            if (
                isinstance(amount, bool)
                or not math.isfinite(amount)
                or amount < 0
                or (key != "gpus" and amount == 0)
            ):
                raise ValueError(f"'{key}' must be a number {'>= 0' if key == 'gpus' else '> 0'}")
        return v


class _Hypothesis(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    claim: str = ""
    smallest_effect: float | int | None = None
    alpha: float = 0.05
    power: float = 0.8
    cost_margin: float | None = None

    @field_validator("cost_margin")
    @classmethod
    def _cost_margin(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0 < v < 1):
            raise ValueError(f"must be {_VALID['cost_margin']}")
        return v

    @field_validator("smallest_effect")
    @classmethod
    def _effect(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("must be a number > 0 (in the metric's units)")
        return v

    @field_validator("alpha", "power")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be between 0 and 1")
        return v


class _Compute(BaseModel):
    """``[compute]``: how the meter's figures become time-to-target, CO2e and money.

    Not part of the spec hash: changing the grid intensity or a price re-labels the same
    trials, it does not make a new experiment.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    target_metric: str | None = None
    grid_intensity: float | int | None = None
    grid_intensity_source: str | None = None
    pue: float | int | None = None
    price_per_hour: float | int | None = None
    currency: str | None = None
    estimate_energy: bool = False
    cpu_watts: float | int | None = None
    gpu_watts: float | int | None = None

    @field_validator("grid_intensity", "price_per_hour")
    @classmethod
    def _non_negative(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError("must be a number >= 0")
        return v

    @field_validator("pue")
    @classmethod
    def _pue(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v >= 1):
            raise ValueError("must be a number >= 1 (1 = no facility overhead)")
        return v

    @field_validator("cpu_watts", "gpu_watts")
    @classmethod
    def _watts(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("must be a number of watts > 0")
        return v


class _Slurm(BaseModel):
    """``[slurm]``: where ``--backend slurm`` submits the trials (CLI flags override each key).

    Not part of the spec hash: where a trial runs does not change what it computes.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int | None = None
    array_parallelism: int | None = None
    setup: list[str] = []
    python: str | None = None
    folder: str | None = None
    sbatch: dict[str, str | int | bool] = {}

    @field_validator("partition", "account", "qos", "python", "folder")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\n" in v):
            raise ValueError("must be a non-empty string on one line")
        return v

    @field_validator("time", "array_parallelism")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be a whole number >= 1")
        return v

    @field_validator("sbatch")
    @classmethod
    def _sbatch(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key in v:
            if not SBATCH_KEY.fullmatch(key):
                raise ValueError(
                    f"'{key}' is not an sbatch option name: letters, digits and '-' or '_', "
                    'e.g. constraint = "a100"'
                )
        return v


class _Ablations(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    leave_one_out: str | list[str] = []
    factorial: str | None = None
    fractional: str | None = None
    resolution: int | None = None
    interactions: int | None = None

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int | None) -> int | None:
        if v is not None and v not in (3, 4, 5):
            raise ValueError(f"must be {_VALID['resolution']}")
        return v

    @field_validator("interactions")
    @classmethod
    def _interactions(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be {_VALID['interactions']}")
        return v


#: What each field accepts, for the messages (pydantic's own words name Python types).
_VALID: dict[str, str] = {
    "name": "a string",
    "task": "a task name, 'module:function' or 'external:NAME'",
    "tasks": 'a list of task names (at least 2), or "suite:NAME"',
    "recipe": "a built-in recipe name or 'module:function'",
    "command": 'a command line, e.g. "python3 train.py --lr {lr} --seed {seed}"',
    "seeds": f'a whole number >= 2 and <= {MAX_SEEDS}, or "auto"',
    "deterministic": "true (the recipe has no randomness: one run per arm) or false",
    "max_seeds": f'a whole number from {PILOT_SEEDS} to {MAX_SEEDS} (with seeds = "auto")',
    "root_seed": f"a whole number from 0 to {ROOT_SEED_END - 1}",
    "metric": "a metric name",
    "direction": '"max" (higher is better) or "min" (lower is better), for task = "external:NAME"',
    "target": "a finite number",
    "time_limit": f"a number of seconds > 0 and at most {MAX_TIME_LIMIT}",
    "description": "a string",
    "max_retries": f"a whole number from 0 to {MAX_RETRIES}",
    "resources": "a table like {cpus = 1, gpus = 0.5, mem = 8} (mem in GB)",
    "partition": 'a Slurm partition name, e.g. "gpu"',
    "account": "a Slurm account name",
    "qos": "a Slurm quality of service name",
    "time": "a whole number of minutes >= 1: each job's time limit",
    "array_parallelism": "a whole number >= 1: jobs of one array running at once",
    "setup": 'a list of shell lines each job runs first, e.g. ["module load cuda"]',
    "python": "the Python interpreter on the nodes (default: this one)",
    "folder": "a folder on the shared file system for the jobs' files",
    "sbatch": 'a table of extra sbatch options, e.g. {constraint = "a100", exclusive = true}',
    "claim": "a string",
    "smallest_effect": "a number > 0",
    "alpha": "a number in (0, 1)",
    "power": "a number in (0, 1)",
    "leave_one_out": "an arm name or a list of arm names",
    "factorial": "the name of an arm with 2 or more components (all 2^k combinations run)",
    "fractional": "the name of an arm with 4 or more components (a 2^(k-p) fraction runs)",
    "resolution": "3, 4 or 5 (the fraction's resolution; 4 by default)",
    "interactions": "a whole number >= 1: the highest order of interaction listed (2 by default)",
    "primary": '"metric" (default), "train_time" or "time_to_target"',
    "timing_repeats": f"a whole number from 0 to {MAX_TIMING_REPEATS}: baseline trials run twice "
    "to measure the timing noise",
    "cost_margin": "a number in (0, 1): costs within this share count as the same (0.05)",
    "target_metric": 'the name of a logged metric, e.g. "val_accuracy"',
    "grid_intensity": "a number of gCO2e per kWh >= 0",
    "grid_intensity_source": "a string naming where the intensity comes from",
    "pue": "a number >= 1",
    "price_per_hour": "a number >= 0",
    "currency": 'a string, e.g. "USD"',
    "estimate_energy": "true or false",
    "cpu_watts": "a number of watts > 0",
    "gpu_watts": "a number of watts > 0",
    "budget": "a whole number of configurations per arm, at least 2",
    "sampler": '"random", "qmc" or "tpe"',
    "objective": 'the name of a validation metric the recipe logs, e.g. "val_accuracy"',
    "space": "a table of keys to tune: lr = { low = 1e-4, high = 1.0, log = true }",
}
_SECTIONS = (
    "experiment", "hypothesis", "baseline", "arms", "ablations", "compute", "tuning", "tasks",
    "slurm",
)  # fmt: skip
