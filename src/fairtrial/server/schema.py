"""The registry's tables (SQLAlchemy Core): the same SQL layer as the ledger, its own database.

A registry is usually a database of its own (``.fairtrial/registry.db`` or a PostgreSQL URL);
the tables carry a ``registry_`` prefix so that one PostgreSQL database can also hold a ledger.

What a page needs is stored ready to read, so that every page is one or two indexed queries:
``registry_entries`` holds one leaderboard row per arm (interval, verdict, compute, the
conservative bound it ranks by), and ``registry_experiments`` holds the analysis document, the
figures (SVG) and the predictions table, computed once when the bundle arrives. Replication
counts are kept on the experiment row and updated in the transaction that stores a record.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1
metadata = MetaData()

meta = Table(
    "registry_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Write tokens: only the sha256 of each token is kept. Tokens are 32 random bytes, so a fast hash
# is enough (a password hash's work factor protects guessable secrets, which these are not).
tokens = Table(
    "registry_tokens",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

bundles = Table(
    "registry_bundles",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("uploaded_at", Float, nullable=False),
)

experiments = Table(
    "registry_experiments",
    metadata,
    Column("id", String(64), primary_key=True),  # the bundle's sha256
    Column("experiment_id", String(64), nullable=False, index=True),  # the spec hash
    Column("name", String(200), nullable=False),
    Column("task", String(200), nullable=False, index=True),
    Column("metric", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("seeds", Integer, nullable=False),
    Column("claim", Text, nullable=False),
    Column("recipe", String(300), nullable=False),
    Column("baseline_key", String(64), nullable=False),
    Column("uploaded_at", Float, nullable=False, index=True),
    Column("token_id", String(16)),
    Column("fairtrial", String(32)),
    Column("hardware", String(300), nullable=False),
    Column("device", String(8), nullable=False),  # cpu | gpu
    Column("preregistered", String(32), nullable=False),  # no | yes | deviations | broken
    Column("verdicts", String(300), nullable=False),  # "proposed: better", ...
    Column("trials", Integer, nullable=False),
    Column("wall_time_total_s", Float),
    Column("flops_total", Float),
    Column("energy_total_j", Float),
    Column("replicated", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("inconclusive", Integer, nullable=False, default=0),
    Column("search", Text, nullable=False),  # lower-cased name, claim, task, recipe, arms
    Column("doc_json", Text, nullable=False),
    Column("figures_json", Text, nullable=False),
    Column("predictions_json", Text),
    Column("capture_json", Text, nullable=False),  # for diff (fairtrial.diff.capture)
    # the experiment page's parts that change with no upload, rendered when the bundle arrived
    # (fairtrial.server.pages.render_parts), with the version of the templates that made them
    Column("page_json", Text),
    # 1: every finished trial's result was re-scored from its predictions against the task's
    # own test labels (fairtrial.rescore); 0: it could not be, and ``unverifiable`` says why
    Column("verified", Integer, nullable=False, default=0, server_default="0"),
    Column("unverifiable", Text),
    # what the bundle holds, not its bytes: the spec hash and every trial's result and
    # predictions hash (ingest.content_key); the same experiment uploaded twice is stored once
    Column("content_key", String(64)),
    # a task's reference baseline (Registry.reference) counted from this index, not the rows
    Index("registry_experiments_task_baseline", "task", "baseline_key", "uploaded_at"),
    # unique: of two uploads of the same content at once, one is stored
    Index("registry_experiments_content", "content_key", unique=True),
)

# What a leaderboard reads: task and metric, then whether the entry is verified (every sort puts
# verified entries first), then the default sort key (the score), then every other column it
# filters or sorts by (all but the hardware text and the experiment's replication count), so
# that listing, counting and paging a task's entries read this index and never the rows: a row
# lookup per entry cost ~25 ms per query at 18,000 entries in a task (bench/registry_bench.py).
BOARD_COLUMNS = (
    "task", "metric", "verified", "score", "kind", "device", "verdict", "wall_time_mean_s",
    "flops_mean", "energy_mean_j", "mean", "effect", "n", "uploaded_at",
)  # fmt: skip

entries = Table(
    "registry_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment", String(64), nullable=False, index=True),
    Column("task", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("arm", String(200), nullable=False),
    Column("kind", String(16), nullable=False),  # baseline | arm
    Column("metric", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("n", Integer, nullable=False),
    Column("failed_trials", Integer, nullable=False),
    Column("mean", Float),
    Column("low", Float),
    Column("high", Float),
    # the interval's worse end, signed so that higher is better: what the leaderboard ranks by
    Column("score", Float),
    Column("effect", Float),
    Column("effect_low", Float),
    Column("effect_high", Float),
    Column("verdict", String(16)),
    Column("p_adjusted", Float),
    Column("wall_time_mean_s", Float),
    Column("flops_mean", Float),
    Column("energy_mean_j", Float),
    Column("hardware", String(300), nullable=False),
    Column("device", String(8), nullable=False),
    Column("baseline_key", String(64), nullable=False),
    Column("uploaded_at", Float, nullable=False),
    Column("verified", Integer, nullable=False, default=0, server_default="0"),  # as experiments
    Index("registry_entries_board", *BOARD_COLUMNS),
)

trials = Table(
    "registry_trials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment", String(64), nullable=False, index=True),
    Column("trial_id", String(300), nullable=False),
    Column("arm", String(200), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Float),
    Column("wall_time", Float),
)

replications = Table(
    "registry_replications",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the record as uploaded
    Column("experiment", String(64), nullable=False, index=True),
    Column("outcome", String(32), nullable=False),
    Column("seeds", String(16), nullable=False),
    Column("host", String(200), nullable=False),
    Column("badge", String(64)),
    Column("created_at", String(32), nullable=False),
    Column("uploaded_at", Float, nullable=False),
    Column("token_id", String(16)),
    Column("record_json", Text, nullable=False),
)
