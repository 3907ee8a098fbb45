"""The ledger's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

JSON is stored as text so that both engines hold byte-identical documents.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

#: 2: trials are identified by what they ran (``trials.id`` is the trial identity) and an
#: experiment's slots (arm, seed) point at them through ``experiment_trials``
#: 3: a running trial is held by a lease (``trials.heartbeat_at``, renewed by its run) and
#: every attempt's ending is kept in ``trial_attempts``
SCHEMA_VERSION = 3

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(64), primary_key=True),  # first 12 hex of spec_hash
    Column("name", String(200), nullable=False, index=True),
    Column("spec_hash", String(64), nullable=False),
    Column("spec_json", Text, nullable=False),  # normalised spec
    Column("arms_json", Text, nullable=False),  # arms in order: name, kind, components, ...
    Column("spec_path", Text),
    Column("task", String(200), nullable=False),
    Column("task_checksum", String(64), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("seeds", Integer, nullable=False),
    Column("root_seed", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# A trial is identified by the content of what it ran (fairtrial.plan.trial_identity: task
# checksum, recipe code hash, arm config, seed streams): ``id`` is that hash. Any experiment
# whose plan has a trial of that identity reuses it; ``experiment_id``, ``arm`` and ``seed``
# name the experiment slot that first ran it. Ledgers from before identities (schema 1) keep
# their ``experiment/arm/seed`` ids, which no new plan matches: those trials are re-run.
trials = Table(
    "trials",
    metadata,
    Column("id", String(300), primary_key=True),  # the trial identity
    Column("experiment_id", String(64), ForeignKey("experiments.id"), nullable=False),
    Column("arm", String(200), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("code_hash", String(64)),  # provenance.code_hash of the code it ran
    # pending | running | finished | failed | diverged | interrupted
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),  # 0 before the first start
    Column("config_json", Text, nullable=False),
    Column("seeds_json", Text, nullable=False),
    Column("result", Float),  # the test metric, for finished trials
    Column("error", Text),  # the reason, for failed/diverged/interrupted trials
    Column("error_detail", Text),  # traceback or last output lines
    # the run that holds a running trial (fairtrial.ledger.lease.owner_id) and when it last
    # renewed its lease, on the ledger's clock: a trial is re-claimed only when that lease
    # expired, or when its owner is provably dead (a process of this machine that is gone)
    Column("owner", String(200)),
    Column("heartbeat_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("wall_time", Float),
    Column("phases_json", Text),
    Column("task_checksum", String(64)),
    Column("provenance_id", String(64), ForeignKey("provenance.id")),
    Index("ix_trials_experiment", "experiment_id", "arm", "seed"),
)

# Which trial fills each slot (arm, seed) of an experiment. A run points every slot at the
# identity its plan computes from the code as it is now, all at once: a verdict never mixes
# code versions, and a trial of older code stays in the ledger, out of the verdict.
experiment_trials = Table(
    "experiment_trials",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.id"), primary_key=True),
    Column("arm", String(200), primary_key=True),
    Column("seed", Integer, primary_key=True),
    Column("trial_id", String(300), nullable=False, index=True),
)

# How every attempt of a trial ended, current or not. An attempt that ends after its lease
# expired and another run took the trial over is kept here (``superseded``) with its result:
# a result is never silently dropped, and the trial's own row keeps the attempt that holds it.
#: the slots of an experiment's other stages: ``tuning`` (arm, seed = configuration index ×
#: tuning seeds + tuning seed; params = what the sampler asked for) and ``untuned`` (arm, seed:
#: the arms at their spec values, beside the tuned verdict). Their trials are ordinary trials.
stage_trials = Table(
    "stage_trials",
    metadata,
    Column("experiment_id", String(64), ForeignKey("experiments.id"), primary_key=True),
    Column("stage", String(16), primary_key=True),
    Column("arm", String(200), primary_key=True),
    Column("seed", Integer, primary_key=True),
    Column("trial_id", String(300), nullable=False, index=True),
    Column("params_json", Text),
)

trial_attempts = Table(
    "trial_attempts",
    metadata,
    Column("trial_id", String(300), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("owner", String(200)),
    Column("status", String(16), nullable=False),
    Column("result", Float),
    Column("error", Text),
    Column("wall_time", Float),
    Column("finished_at", Float, nullable=False),
    Column("superseded", Integer, nullable=False),  # 1: another run held the trial by then
)

metrics = Table(
    "metrics",
    metadata,
    Column("trial_id", String(300), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step", Integer),
    Column("t", Float, nullable=False),  # seconds since the trial started
    Column("name", String(200), nullable=False),
    Column("value", Float),  # NULL stands for NaN (SQLite has no NaN)
    Index("ix_metrics_trial", "trial_id", "attempt"),
)

provenance = Table(
    "provenance",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of data_json
    Column("data_json", Text, nullable=False),
)

test_evaluations = Table(
    "test_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("trial_id", String(300), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("experiment_id", String(64), nullable=False),
    Column("task", String(200), nullable=False),
    Column("task_checksum", String(64), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("n", Integer, nullable=False),
    Column("predictions_sha256", String(64), nullable=False),
    Column("predictions_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# -- rigor guards (issue #5): new tables only --------------------------------------------------
# The two logs below are append-only hash chains: each row stores the hash of the row before it
# (``prev_hash``) and its own hash over its fields and ``prev_hash`` (``entry_hash``), so editing,
# deleting or reordering a row breaks every hash after it (see ``fairtrial.ledger.chain``).
# ``seq`` is the row's position in its chain; as the primary key it also makes two concurrent
# appends collide instead of forking the chain (the loser retries on the new head).

preregistrations = Table(
    "preregistrations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False, index=True),  # the experiment's name
    Column("experiment_id", String(64), nullable=False),  # of the registered spec
    Column("spec_hash", String(64), nullable=False),
    Column("record_hash", String(64), nullable=False),  # sha256 of record_json
    Column("record_json", Text, nullable=False),  # the frozen plan (prereg.plan_record)
    Column("created_at", Float, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

test_log = Table(
    "test_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("experiment_id", String(64), nullable=False, index=True),
    Column("trial_id", String(300), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("task", String(200), nullable=False),
    Column("task_checksum", String(64), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("predictions_sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

code_files = Table(
    "code_files",
    metadata,
    Column("sha256", String(64), primary_key=True),  # content-addressed recipe files
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
)

replications = Table(
    "replications",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of record_json
    Column("experiment_id", String(64), nullable=False, index=True),  # the original's
    Column("experiment_name", String(200), nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("outcome", String(32), nullable=False),  # replicated | not replicated | inconclusive
    Column("created_at", Float, nullable=False),
    Column("record_json", Text, nullable=False),
)

# The compute record of each attempt of each trial (fairtrial.meter): wall/CPU time, memory,
# FLOPs, energy, each with the label of how it was obtained. Every status has one.
trial_compute = Table(
    "trial_compute",
    metadata,
    Column("trial_id", String(300), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("compute_json", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# The experiment's [compute] table (grid intensity, PUE, price, ...), as last run. Kept out of
# the spec hash: changing how energy is turned into CO2e must not make a new experiment.
experiment_compute = Table(
    "experiment_compute",
    metadata,
    Column("experiment_id", String(64), primary_key=True),
    Column("settings_json", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The config keys each attempt of a trial read (fairtrial.configreads), for recipes without a
# config class: a key no trial read had no effect, and the run and the report say so.
trial_config_reads = Table(
    "trial_config_reads",
    metadata,
    Column("trial_id", String(300), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("keys_json", Text, nullable=False),
)

# The job a cluster backend submitted for an attempt of a trial (``--backend slurm``): a run
# that finds the trial still ``running`` after its driver stopped collects that job instead of
# submitting the trial again. ``handle_json`` is what the backend needs to find the job's files.
trial_jobs = Table(
    "trial_jobs",
    metadata,
    Column("trial_id", String(300), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("backend", String(32), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("handle_json", Text, nullable=False),
    Column("submitted_at", Float, nullable=False),
)
