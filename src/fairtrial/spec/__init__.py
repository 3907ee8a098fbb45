"""Load and validate an experiment spec (TOML) into plain, frozen data.

Every mistake becomes one :class:`~fairtrial.errors.SpecError` whose message names the file,
the line where it can be found, the table and key, and what would be valid::

    exp.toml:7: [experiment] seeds = 1: must be a whole number >= 2

Validation is complete before any trial runs: the task is built (its checksum known), the
recipe imported and the config of every arm checked against the recipe's declared options.
The package's modules each do one job: :mod:`~fairtrial.spec.limits` (limits and name rules),
:mod:`~fairtrial.spec.tables` (the TOML tables' models), :mod:`~fairtrial.spec.reading` (the
file and its TOML), :mod:`~fairtrial.spec.refs` (recipe and task references),
:mod:`~fairtrial.spec.parse` (the whole validation), :mod:`~fairtrial.spec.model` (the
validated :class:`Spec` and its hash) and :mod:`~fairtrial.spec.errors` (how errors are
written); everything public is imported from here.
"""

from __future__ import annotations

from fairtrial.spec.errors import spec_error
from fairtrial.spec.limits import (
    COMMAND_FIELDS,
    DEFAULT_MAX_SEEDS,
    MAX_ARMS,
    MAX_CONFIG_VALUES,
    MAX_DEPTH,
    MAX_KEY,
    MAX_NAME,
    MAX_REF,
    MAX_RETRIES,
    MAX_SEEDS,
    MAX_SPEC_BYTES,
    MAX_TIME_LIMIT,
    MAX_TRIALS,
    NAME_RULE,
    PILOT_SEEDS,
    RESOURCE_KEYS,
    ROOT_SEED_END,
    valid_name,
)
from fairtrial.spec.model import (
    Ablation,
    Arm,
    ArmKind,
    Hypothesis,
    Spec,
    flatten,
    hash_normalized,
    set_dotted,
)
from fairtrial.spec.parse import load_spec, parse_spec
from fairtrial.spec.reading import read_spec_text

__all__ = [
    "COMMAND_FIELDS",
    "DEFAULT_MAX_SEEDS",
    "MAX_ARMS",
    "MAX_CONFIG_VALUES",
    "MAX_DEPTH",
    "MAX_KEY",
    "MAX_NAME",
    "MAX_REF",
    "MAX_RETRIES",
    "MAX_SEEDS",
    "MAX_SPEC_BYTES",
    "MAX_TIME_LIMIT",
    "MAX_TRIALS",
    "NAME_RULE",
    "PILOT_SEEDS",
    "RESOURCE_KEYS",
    "ROOT_SEED_END",
    "Ablation",
    "Arm",
    "ArmKind",
    "Hypothesis",
    "Spec",
    "flatten",
    "hash_normalized",
    "load_spec",
    "parse_spec",
    "read_spec_text",
    "set_dotted",
    "spec_error",
    "valid_name",
]
