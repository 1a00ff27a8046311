"""The database schema, as SQLAlchemy Core metadata: one definition for every backend.

Every fact table has a natural key, so writing the same event twice (a redelivery
after a crash, a duplicate injected by chaos, a replayed run) never creates a second
row: at-least-once delivery plus idempotent sinks gives exactly-once results.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import JSON

metadata = MetaData()

#: JSON on every backend, JSONB on PostgreSQL (indexable, compact).
_Json = JSON().with_variant(JSONB(), "postgresql")

runs = Table(
    "runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("kind", Text, nullable=False, comment="run | simulate | replay"),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    Column("seed", BigInteger),
    Column("params", _Json, nullable=False),
    Column("produced", BigInteger),
    Column("stored", BigInteger),
    Column("deadlettered", BigInteger),
    Column("dropped", BigInteger, comment="readings chaos lost on the way (never sent)"),
    Column("status", Text, nullable=False, comment="running | completed | failed"),
    comment="One row per experiment run: its parameters, seed and accounting.",
)

readings = Table(
    "readings",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("sensor_type", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False, comment="event time"),
    Column("value", Float, comment="NULL when the sensor sent no value"),
    Column("status_code", Integer, nullable=False),
    Column(
        "late",
        Boolean,
        nullable=False,
        server_default=false(),
        comment="event time was behind the partition's watermark on arrival",
    ),
    Column("score", Float, comment="anomaly score against the running baseline"),
    Column("rolling_1", Float, comment="rolling mean over the first window width (1 min)"),
    Column("rolling_2", Float, comment="rolling mean over the second window width (5 min)"),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The key is the only btree, chosen for ingest speed (measured: see the docstring of
    # workbench.sinks.postgres): every query filters a run, then a machine and sensor and a
    # time range, which this order serves. ts is in the key so that a TimescaleDB hypertable
    # on ts can enforce it.
    PrimaryKeyConstraint("run_id", "machine_id", "sensor_type", "ts", "seq", name="readings_pkey"),
    # time-range scans over append-mostly data: a BRIN index is a few pages, not gigabytes
    Index("readings_ts_brin", "ts", postgresql_using="brin"),
    comment="Every valid reading the processor consumed, keyed by its per-sensor sequence.",
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column(
        "run_id", Text, nullable=False, comment="the run id header (the live run's id without one)"
    ),
    Column("reason", Text, nullable=False),
    Column("key", LargeBinary),
    Column("payload", LargeBinary),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # the run first: a broker that keeps its topics in memory numbers offsets from 0 again
    # after a restart, so a position alone repeats across runs
    PrimaryKeyConstraint("run_id", "topic", "partition", "offset", name="dead_letters_pkey"),
    comment="Messages the processor could not use, with the reason and the original bytes.",
)

chaos_events = Table(
    "chaos_events",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("sensor_type", Text, comment="NULL when every sensor of the machine is hit"),
    Column("start_ts", DateTime(timezone=True), nullable=False),
    Column("end_ts", DateTime(timezone=True), nullable=False),
    Column("magnitude", Float),
    Column("source", Text, nullable=False),
    Column("detail", Text),
    PrimaryKeyConstraint("run_id", "event_id", name="chaos_events_pkey"),
    Index("chaos_events_machine_start", "machine_id", "start_ts"),
    comment="Ground truth: every injected fault and every labelled anomaly of a replayed file.",
)

window_stats = Table(
    "window_stats",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("sensor_type", Text, nullable=False),
    Column("width_s", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("count", Integer, nullable=False),
    Column("nulls", Integer, nullable=False),
    Column("late", Integer, nullable=False),
    Column("mean", Float),
    Column("min", Float),
    Column("max", Float),
    Column("stddev", Float),
    Column("quantile", Float, comment="the configured quantile (p95 by default)"),
    Column("final", Boolean, nullable=False, comment="false while the window is still open"),
    Column("revision", Integer, nullable=False, comment="-1 provisional, 0 final, >0 corrected"),
    Column("emitted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint(
        "run_id", "machine_id", "sensor_type", "width_s", "window_start", name="window_stats_pkey"
    ),
    Index("window_stats_machine_start", "machine_id", "window_start"),
    Index("window_stats_start_brin", "window_start", postgresql_using="brin"),
    comment="Event-time tumbling windows: provisional while open, final once the watermark passes.",
)

alerts = Table(
    "alerts",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("alert_id", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("state", Text, nullable=False, comment="open | closed"),
    Column("machine_id", Text, nullable=False),
    Column("sensor_type", Text),
    Column("start_ts", DateTime(timezone=True), nullable=False, comment="first breach"),
    Column("opened_ts", DateTime(timezone=True), nullable=False),
    Column("updated_ts", DateTime(timezone=True), nullable=False),
    Column("closed_ts", DateTime(timezone=True)),
    Column("peak", Float),
    Column("breaches", Integer, nullable=False),
    Column("detects", _Json, nullable=False, comment="fault kinds the rule aims at"),
    PrimaryKeyConstraint("run_id", "alert_id", name="alerts_pkey"),
    Index("alerts_machine_start", "machine_id", "start_ts"),
    comment="One row per alert, updated through its lifecycle (opened, updated, closed).",
)

sensor_stats = Table(
    "sensor_stats",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("sensor_type", Text, nullable=False),
    Column("n", BigInteger, nullable=False, comment="readings seen, nulls and late ones included"),
    Column("nulls", BigInteger, nullable=False),
    Column("late", BigInteger, nullable=False),
    Column("mean", Float, comment="running mean of every value (river.stats.Var)"),
    Column("std", Float, comment="running sample standard deviation"),
    Column("ewma", Float, comment="exponentially weighted mean (river.stats.EWMean)"),
    Column("ewstd", Float, comment="exponentially weighted standard deviation"),
    Column("quantile", Float, comment="running p95 (river.stats.Quantile, P-square)"),
    Column("baseline", Float, comment="the robust level the last reading was judged against"),
    Column("score", Float, comment="the last reading's anomaly score"),
    Column("drifts", Integer, nullable=False, comment="level changes Page-Hinkley detected"),
    Column("last_ts", DateTime(timezone=True), comment="event time of the newest reading"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("run_id", "machine_id", "sensor_type", name="sensor_stats_pkey"),
    comment="The processor's online statistics per machine and sensor, as of its last flush.",
)

predictions = Table(
    "predictions",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("model", Text, nullable=False, comment="the registry model's name"),
    Column("version", Integer, nullable=False, comment="the version that made the prediction"),
    Column("kind", Text, nullable=False, comment="precursor | anomaly"),
    Column(
        "score",
        Float,
        nullable=False,
        comment="precursor: probability of a failure now or within its horizon; "
        "anomaly: how unusual the minute is (0-1)",
    ),
    Column("alarm", Boolean, nullable=False, comment="score >= the version's threshold"),
    Column("features", Integer, nullable=False, comment="features the vector had"),
    Column("emitted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("run_id", "machine_id", "model", "window_start", name="predictions_pkey"),
    Index("predictions_machine_start", "machine_id", "window_start"),
    comment="The promoted models' scores per machine and minute, made as its windows closed.",
)


models = Table(
    "models",
    metadata,
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False, comment="1, 2, ... per name"),
    Column("kind", Text, nullable=False, comment="precursor | anomaly"),
    Column("params", _Json, nullable=False, comment="learner, horizon, threshold, features"),
    Column("runs", _Json, nullable=False, comment="the run ids it was trained on"),
    Column("metrics", _Json, nullable=False, comment="its progressive-validation metrics"),
    Column("river_version", Text, nullable=False, comment="the River that pickled it"),
    Column("model", LargeBinary, nullable=False, comment="the River object, pickled"),
    Column("promoted", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("name", "version", name="models_pkey"),
    # at most one promoted version per name
    Index(
        "models_promoted",
        "name",
        unique=True,
        postgresql_where=text("promoted"),
        sqlite_where=text("promoted"),
    ),
    comment="The model registry: versions of models learnt from runs' ground truth "
    "(workbench model train | list | evaluate | promote).",
)

machine_health = Table(
    "machine_health",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("machine_id", Text, nullable=False),
    Column("score", Float, nullable=False, comment="0 to 100: 100 less the deductions"),
    Column("worst_indicator", Text, comment="the indicator that took the most points"),
    Column("narrative", Text, nullable=False, comment="the sentences, each citing its numbers"),
    Column("deductions", _Json, nullable=False, comment="[{indicator, value, points, why}]"),
    Column("indicators", _Json, nullable=False, comment="every number the sentences cite"),
    Column("recent_s", Float, nullable=False, comment="the recent window of the alerts (s)"),
    Column("as_of", DateTime(timezone=True), nullable=False, comment="the run's latest reading"),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("run_id", "machine_id", name="machine_health_pkey"),
    comment="The health summary of each machine of a run (workbench.models.health), as last "
    "saved by `workbench health --save`, `workbench run` or a notebook: one row per machine.",
)


def _checkpoint_table(name: str, *columns: Column, key: tuple[str, ...] = (), **kw) -> Table:
    """A table of a consumer group's checkpoints, one partition of a topic at a time."""
    partition = ("consumer_group", "topic", "partition")
    return Table(
        name,
        metadata,
        Column("consumer_group", Text, nullable=False),
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        *columns,
        Column("saved_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint(*partition, *key, name=f"{name}_pkey"),
        **kw,
    )


processor_state = _checkpoint_table(
    "processor_state",
    Column("next_offset", BigInteger, nullable=False),
    Column("state", LargeBinary, nullable=False),
    comment="Checkpoints of a partition's windows, statistics and alerts, with the offset they "
    "were taken at: the next owner of the partition restores them and resumes there.",
)

processor_state_segments = _checkpoint_table(
    "processor_state_segments",
    Column("segment", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    key=("segment",),
    comment="The values of final windows that late readings may still correct, in sealed "
    "zstd-compressed segments: written once, with the first checkpoint that refers to them, "
    "and deleted with the first one that no longer does (incremental checkpoints).",
)

#: Indexes earlier versions of the schema made and this one does not want: creating the
#: schema drops them from a database made by an earlier version.
RETIRED_INDEXES = ("readings_machine_ts",)
