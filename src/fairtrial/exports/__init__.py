"""Where researchers already watch their runs: fairtrial's experiments in MLflow and W&B.

* :mod:`~fairtrial.exports.mlflow`: ``fairtrial export --to mlflow``, an experiment's trials
  as MLflow runs (nested under a run per arm) with the report as artifacts;
* :mod:`~fairtrial.exports.wandb`: ``fairtrial export --to wandb``, one offline W&B run per
  trial, for ``wandb sync``;
* :mod:`~fairtrial.exports.mirror`: ``fairtrial run --mirror mlflow``, the trials' runs made
  and filled live while the experiment runs, by a process of the mirror's own
  (:mod:`~fairtrial.exports.mirrorproc`);
* :mod:`~fairtrial.exports.trials` (what every export says of a trial) and
  :mod:`~fairtrial.exports.mlflowkit` (MLflow's connection, limits and run lookup).

The trackers are optional extras, imported only when an export or mirror runs.
"""

from __future__ import annotations

from fairtrial.exports.trials import Exported

__all__ = ["Exported"]
