"""The ledger and the registry are each one class composed of a group of methods per job.

Composing them must lose no method, let no group shadow another's method, and keep every
public ledger method running through the retrier (a transient fault in any of them is retried
whole, see fairtrial.ledger.faults), whichever module the method is written in.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from fairtrial.ledger import Ledger
from fairtrial.server.registry import Registry

#: every public method the ledger had as one class
LEDGER_METHODS = {
    "add_compute", "add_config_reads", "add_metrics", "add_preregistration", "add_replication",
    "add_test_evaluation", "add_trials", "attempts", "check_chain", "claim", "close",
    "code_file", "compute", "compute_settings", "config_reads", "experiment", "experiments",
    "find_experiment", "finish", "metrics", "now", "preregistrations", "provenance",
    "put_code_files", "put_code_snapshot", "put_provenance", "renew", "replications",
    "set_compute_settings", "set_seeds", "test_evaluation_keys", "test_evaluations",
    "test_evaluations_before_log", "test_log", "test_log_since", "trial", "trial_at", "trials",
    "trials_of_identity", "trim_slots", "upsert_experiment",
}  # fmt: skip
#: every public method the registry had as one class
REGISTRY_METHODS = {
    "add_bundle", "add_replication", "bundle", "capture", "check_token", "close",
    "create_token", "diff", "doc", "experiment", "experiment_json", "experiment_row",
    "fresh_version", "leaderboard", "predictions", "reference", "replications", "resolve",
    "revoke_token", "search", "set_reference", "summary", "tasks", "tokens", "version",
}  # fmt: skip


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(inspect.getattr_static(cls, name))
    }


class _Recorder:
    """Stands in for the ledger's retrier: records what runs through it, and runs nothing."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        self.ran.append(fn.__name__)


@pytest.mark.parametrize(
    ("cls", "methods"), [(Ledger, LEDGER_METHODS), (Registry, REGISTRY_METHODS)]
)
def test_no_method_was_lost(cls: type, methods: set[str]) -> None:
    assert methods <= _public_methods(cls), sorted(methods - _public_methods(cls))


def test_the_ledger_dialect_is_still_a_property() -> None:
    assert isinstance(inspect.getattr_static(Ledger, "dialect"), property)


@pytest.mark.parametrize("cls", [Ledger, Registry])
def test_no_group_of_methods_shadows_another(cls: type) -> None:
    where: dict[str, list[str]] = {}
    for part in cls.__mro__[:-1]:  # the class, its groups and their bases; not object
        for name, value in vars(part).items():
            # the ledger's retrier wraps each public method of a group on the class itself
            if not name.startswith("__") and not hasattr(value, "__wrapped__"):
                where.setdefault(name, []).append(part.__name__)
    clashes = {name: parts for name, parts in where.items() if len(parts) > 1}
    assert not clashes, f"defined in more than one part of {cls.__name__}: {clashes}"


def test_every_public_ledger_method_runs_through_the_retrier(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        recorder = _Recorder()
        ledger._retrier = recorder  # type: ignore[assignment]
        public = _public_methods(Ledger)
        for name in sorted(public):
            # the recorder runs nothing, so no arguments are needed
            assert getattr(ledger, name)() is None, name
        assert sorted(recorder.ran) == sorted(public)
        assert public >= LEDGER_METHODS
    finally:
        ledger.__dict__.pop("_retrier")
        ledger.close()
