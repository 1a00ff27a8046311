"""The database schema, as SQLAlchemy Core metadata: one definition for every backend.

Every fact table has a natural key, so writing the same event twice (a redelivery
after a crash, a duplicate injected by chaos, a replayed run) never creates a second
row: at-least-once delivery plus idempotent sinks gives exactly-once results.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    func,
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
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # ts is part of the key so that a TimescaleDB hypertable on ts can enforce it.
    PrimaryKeyConstraint("run_id", "machine_id", "sensor_type", "seq", "ts", name="readings_pkey"),
    Index("readings_machine_ts", "machine_id", "ts"),
    comment="Every valid reading the processor consumed, keyed by its per-sensor sequence.",
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("run_id", Text, comment="when it could be read from the message"),
    Column("reason", Text, nullable=False),
    Column("key", LargeBinary),
    Column("payload", LargeBinary),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("topic", "partition", "offset", name="dead_letters_pkey"),
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
