"""The limits and name rules of a spec: how many seeds, arms, config values and trials one
may hold, how long names, keys and references may be, what names and config keys look like,
and which placeholders a command may use. Every error that enforces one names it, and the
stores, bundles and the registry rely on them (an arm name fits a column and a folder name).
"""

from __future__ import annotations

import re

#: seeds = "auto": the pilot's seeds, and the default cap on the seeds the plan may ask for
PILOT_SEEDS = 5
DEFAULT_MAX_SEEDS = 50
#: Limits of a spec (each error that enforces one names it).
MAX_SPEC_BYTES = 1024 * 1024
MAX_SEEDS = 1000
#: arms, ablations included; with MAX_CONFIG_VALUES, bounds the work of checking a spec
MAX_ARMS = 200
#: values in [baseline] (each item of a list counts)
MAX_CONFIG_VALUES = 1000
#: arms × seeds (× max_seeds with seeds = "auto"): what `plan` lists and a run records
MAX_TRIALS = 20_000
MAX_RETRIES = 100
#: 0 <= root_seed < 2^31: the experiments table's Integer column on SQLite and PostgreSQL
ROOT_SEED_END = 2**31
#: a worker's deadline is waited on in milliseconds, which must fit a C int (about 24 days)
MAX_TIME_LIMIT = 1_000_000
#: experiment and arm names; a dotted config key; a task or recipe reference. An ablation's
#: name (ARM-no-KEY) then fits the stores' 200-character arm column and a file name.
MAX_NAME = 100
MAX_KEY = 80
MAX_REF = 200
#: tables and lists inside one another
MAX_DEPTH = 32
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")
#: What experiment and arm names may be; they become folder names, so nothing else is allowed.
NAME_RULE = f"up to {MAX_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit"
#: one part of a config key: what a command placeholder and a keyword argument can name
_KEY_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_INT64 = (-(2**63), 2**63 - 1)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: Placeholders a command may use besides the (dotted) config keys.
COMMAND_FIELDS = (
    "seed",
    "seed_init",
    "seed_data",
    "seed_augment",
    "seed_dropout",
    "seed_env",
    "data_dir",
    "predictions",
    "workdir",
    "arm",
    "trial_id",
    "task",
    "python",
)


def valid_name(text: object) -> bool:
    """Whether ``text`` is a valid experiment or arm name (:data:`NAME_RULE`): the one check
    of names, for spec files and for the names a bundle brings."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


#: What a trial may ask of a cluster (``[experiment] resources``): CPUs, (fractional) GPUs and
#: memory in GB.
RESOURCE_KEYS = ("cpus", "gpus", "mem")
#: ``[slurm] sbatch``: the name of an extra sbatch option (``constraint``, ``exclusive``, ...)
SBATCH_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


#: ``[experiment] primary``: what a comparison's verdict is about. ``metric`` (the default);
#: ``train_time`` or ``time_to_target`` make a speed trial: the cost is the primary outcome and
#: the metric a guard (the verdict is ``faster`` only if the metric is not worse).
PRIMARIES = ("metric", "train_time", "time_to_target")
#: ``[experiment] timing_repeats``: at most this many baseline trials run a second time
MAX_TIMING_REPEATS = 20
#: the repeats a speed trial runs when the spec does not say (other experiments run none)
SPEED_TIMING_REPEATS = 3
