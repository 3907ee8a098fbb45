"""The ledger: experiments, trials, metric series, provenance and test evaluations.

One class over SQLAlchemy Core. SQLite (the default, a file under ``./.fairtrial``) runs in WAL
mode so that readers (``fairtrial status``) never block the writer; PostgreSQL is any
``postgresql://`` URL. Each method is one short transaction, so a kill at any moment leaves the
ledger consistent, and claiming a trial is a conditional update, so two runs on one ledger never
run the same attempt twice. The class is composed of one group of methods per job, each in its
module: opening the store (:mod:`~fairtrial.ledger.engine`), experiments, trials with their
claims and attempts, test evaluations with the hash-chained logs (:mod:`~fairtrial.ledger.logs`),
the other per-trial records (:mod:`~fairtrial.ledger.records`) and the cluster jobs
behind running trials (:mod:`~fairtrial.ledger.jobs`); every public method of
every group runs through the retrier of :mod:`~fairtrial.ledger.faults`.
"""

from __future__ import annotations

from fairtrial.ledger import faults
from fairtrial.ledger.engine import DEFAULT_STORE, store_url
from fairtrial.ledger.experiments import ExperimentRow, Experiments
from fairtrial.ledger.jobs import Jobs
from fairtrial.ledger.logs import TEST_LOG_FIELDS, Logs
from fairtrial.ledger.records import Records
from fairtrial.ledger.stages import Stages
from fairtrial.ledger.trials import DONE, TrialEvent, TrialRow, Trials

__all__ = [
    "DEFAULT_STORE",
    "DONE",
    "TEST_LOG_FIELDS",
    "ExperimentRow",
    "Ledger",
    "TrialEvent",
    "TrialRow",
    "store_url",
]


@faults.retried
class Ledger(Experiments, Trials, Stages, Logs, Records, Jobs):
    """The store behind every command; open with ``Ledger(store)`` (URL, path or None)."""
