"""MLflow plumbing shared by ``fairtrial export --to mlflow`` and the live mirror.

Connecting (a store that cannot be used is one line, an unreachable server fails at once
instead of after MLflow's minutes of retries), the MLflow experiment named after fairtrial's,
the parent run of each arm, the runs already there, and ``log_batch`` cut to MLflow's limits
(1000 metrics, 100 params and 100 tags, 1000 in all, per call; param values cut to MLflow's
longest). Imports MLflow (the ``mlflow`` extra) only when called.

Every run fairtrial makes carries ``fairtrial.kind`` (``trial``, ``arm``: the parent of an
arm's trials, ``report``: the experiment's report) and ``fairtrial.experiment_id``; a trial's
run also ``fairtrial.trial_id`` and ``fairtrial.attempt``, by which an export finds what is
there already.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fairtrial.errors import ExportError, require
from fairtrial.exports.trials import TAG, param_text, run_name

MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
MAX_ENTITIES = 1000
MAX_TAG_TEXT = 8000
#: seconds a tracking server has to answer the first request (:func:`probe`)
PROBE_TIMEOUT = 10
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
KIND = f"{TAG}kind"
EXPERIMENT = f"{TAG}experiment_id"
TRIAL = f"{TAG}trial_id"
ATTEMPT = f"{TAG}attempt"
ARM = f"{TAG}arm"
TASK = f"{TAG}task"
_BAD_KEY = re.compile(r"[^/\w.\- ]")


def one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextlib.contextmanager
def failing_as_one_line(uri: str) -> Iterator[None]:
    """MLflow's errors (and the network's, the disk's) as one :class:`ExportError` line
    naming the tracking URI."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        raise ExportError(f"MLflow at {uri}: {one_line(str(exc))}") from None


def probe(uri: str) -> None:
    """An HTTP tracking server that does not answer at all is one line now, rather than after
    MLflow's minutes of retries (one request to its ``/health``, no retry); any answer, even
    an error status or a certificate MLflow may be told to accept, leaves it to MLflow."""
    if not uri.startswith(("http://", "https://")):
        return
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLError):
            return
        raise ExportError(f"MLflow at {uri} cannot be reached: {one_line(str(reason))}") from None


def connect(tracking_uri: str | None, purpose: str) -> tuple[Any, str]:
    """An MlflowClient of ``tracking_uri`` (default: ``$MLFLOW_TRACKING_URI``, else MLflow's
    own default) that has answered one request, and the URI; else one line."""
    require("mlflow", "mlflow", purpose)
    from mlflow.tracking import MlflowClient, get_tracking_uri

    for name in ("mlflow", "alembic"):  # MLflow's INFO lines (creating tables...) are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri or get_tracking_uri()
    probe(uri)
    with failing_as_one_line(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client, uri


def key_of(name: str) -> str:
    """``name`` as an MLflow metric or param key: characters MLflow refuses become ``_``."""
    key = _BAD_KEY.sub("_", str(name)) or "_"
    if posixpath.normpath(key) != key or key.startswith((".", "/")):
        key = "_" + key.replace("/", "_")
    return key[:250]


def experiment(client: Any, name: str, experiment_id: str) -> tuple[str, str]:
    """The MLflow experiment of fairtrial experiment ``experiment_id`` (its id and name):
    named ``name``, made when there is none; ``name-ID`` when ``name`` holds another one."""
    for candidate in (name, f"{name}-{experiment_id}"):
        exp = client.get_experiment_by_name(candidate)
        if exp is None:
            created = client.create_experiment(candidate, tags={EXPERIMENT: experiment_id})
            return str(created), candidate
        if exp.tags.get(EXPERIMENT) == experiment_id and exp.lifecycle_stage == "active":
            return str(exp.experiment_id), candidate
    raise ExportError(
        f"MLflow experiments '{name}' and '{name}-{experiment_id}' both hold other runs (or are "
        "deleted): export to another tracking URI, or rename or restore them in MLflow"
    )


def runs(client: Any, mlflow_experiment: str, kind: str) -> list[Any]:
    """The active runs of one kind (``trial``, ``arm``, ``report``) fairtrial made there."""
    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [mlflow_experiment],
            filter_string=f"tags.`{KIND}` = '{kind}'",
            max_results=1000,
            page_token=token,
        )
        out.extend(page)
        token = page.token
        if not token:
            return out


def trial_runs(client: Any, mlflow_experiment: str) -> dict[tuple[str, int], Any]:
    """(trial id, attempt) -> the run of every trial attempt already there."""
    out = {}
    for run in runs(client, mlflow_experiment, "trial"):
        tags = run.data.tags
        with contextlib.suppress(KeyError, ValueError):
            out[tags[TRIAL], int(tags[ATTEMPT])] = run
    return out


def arm_runs(client: Any, mlflow_experiment: str) -> dict[tuple[str | None, str], str]:
    """(task, arm) -> the id of each arm's parent run already there."""
    out: dict[tuple[str | None, str], str] = {}
    for run in runs(client, mlflow_experiment, "arm"):
        tags = run.data.tags
        if ARM in tags:
            out.setdefault((tags.get(TASK), tags[ARM]), run.info.run_id)
    return out


def new_arm_run(
    client: Any, mlflow_experiment: str, experiment_id: str, arm: str, task: str | None
) -> str:
    """A parent run for the trials of ``arm`` (of ``task``)."""
    tags = {KIND: "arm", EXPERIMENT: experiment_id, ARM: arm, RUN_NAME: arm}
    if task is not None:
        tags.update({TASK: task, RUN_NAME: f"{task}/{arm}"})
    run = client.create_run(mlflow_experiment, start_time=now_ms(), tags=tags)
    return str(run.info.run_id)


def trial_tags(
    experiment_id: str,
    trial_id: str,
    attempt: int,
    arm: str,
    seed: int,
    status: str,
    task: str | None = None,
) -> dict[str, str]:
    """The tags that identify a trial's run (the live mirror's too)."""
    tags = {
        KIND: "trial",
        EXPERIMENT: experiment_id,
        TRIAL: trial_id,
        ATTEMPT: str(attempt),
        ARM: arm,
        f"{TAG}seed": str(seed),
        f"{TAG}status": status,
        RUN_NAME: run_name(arm, seed, task),
    }
    if task is not None:
        tags[TASK] = task
    return tags


def now_ms() -> int:
    return int(time.time() * 1000)


def batches(
    metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    """``(metrics, params, tags)`` slices, each one ``log_batch`` call within MLflow's
    limits, in order: the params and tags first, the metrics filling what room is left."""
    m = p = t = 0
    while m < len(metrics) or p < len(params) or t < len(tags):
        np_ = min(MAX_PARAMS, len(params) - p)
        nt = min(MAX_TAGS, len(tags) - t)
        nm = min(MAX_METRICS, MAX_ENTITIES - np_ - nt, len(metrics) - m)
        yield list(metrics[m : m + nm]), list(params[p : p + np_]), list(tags[t : t + nt])
        m, p, t = m + nm, p + np_, t + nt


def send(
    client: Any,
    run_id: str,
    metrics: Sequence[Any] = (),
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> None:
    """Log ``metrics`` (MLflow Metric objects), ``params`` and ``tags`` to a run, in as few
    ``log_batch`` calls as MLflow allows."""
    for m, p, t in batches(metrics, param_list(params or {}), tag_list(tags or {})):
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def param_list(params: Mapping[str, Any]) -> list[Any]:
    """Params as MLflow's, values as text cut to its longest (6000 characters in MLflow 3)."""
    from mlflow.entities import Param

    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as longest
    except ImportError:  # another MLflow's layout: its old limit
        longest = 500
    return [Param(key_of(k), _cut(param_text(v), longest)) for k, v in params.items()]


def tag_list(tags: Mapping[str, Any]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, _cut(str(v), MAX_TAG_TEXT)) for k, v in tags.items()]


def metric_list(points: Sequence[tuple[int, float, str, float]], start_ms: int) -> list[Any]:
    """``(step, t, name, value)`` points as MLflow metrics, timed ``t`` seconds after the
    trial's start."""
    from mlflow.entities import Metric

    return [
        Metric(key_of(name), value, start_ms + int(t * 1000), step)
        for step, t, name, value in points
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
