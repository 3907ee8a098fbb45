"""The ledger: where experiments, trials, metrics and provenance are stored."""

from fairtrial.ledger.store import (
    DEFAULT_STORE,
    DONE,
    ExperimentRow,
    Ledger,
    TrialEvent,
    TrialRow,
    store_url,
)

__all__ = [
    "DEFAULT_STORE",
    "DONE",
    "ExperimentRow",
    "Ledger",
    "TrialEvent",
    "TrialRow",
    "store_url",
]
