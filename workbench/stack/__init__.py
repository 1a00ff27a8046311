"""The stack the pipeline talks to: a Kafka broker and a PostgreSQL database.

Each part is either external (its URL is configured, nothing is started, and we only
check that it answers) or embedded (started on loopback from the project's state
directory, or attached to when another caller already started it).

>>> # from workbench import Settings, Stack
>>> # with Stack(Settings.from_env()).session() as ends:
>>> #     print(ends.bootstrap_servers, ends.database_url)
>>> #     producer = RecordProducer(ends.broker, "telemetry.raw", run_id)
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from workbench import kafka
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.sinks.postgres import check_database, redact
from workbench.stack.broker import EmbeddedBroker
from workbench.stack.postgres import EmbeddedPostgres

__all__ = ["Endpoints", "Stack"]

log = logging.getLogger(__name__)

#: The parts of the stack, by the names :meth:`Stack.up` reports as started.
PARTS = ("broker", "database")


@dataclass(frozen=True)
class Endpoints:
    """Where the pipeline's broker and database answer.

    ``broker`` is what every Kafka client is made for: the bootstrap servers with the
    ``WORKBENCH_KAFKA_*`` properties (TLS, SASL). ``bootstrap_servers`` is its address alone,
    for messages and reports.
    """

    broker: kafka.Endpoint | None
    database_url: str

    def __post_init__(self) -> None:
        if self.broker is not None and not isinstance(self.broker, kafka.Endpoint):
            raise TypeError(f"Endpoints.broker is a kafka.Endpoint, not {self.broker!r}")

    @property
    def bootstrap_servers(self) -> str:
        """The broker's bootstrap servers ("" when the broker was not asked for)."""
        return self.broker.bootstrap if self.broker is not None else ""


class Stack:
    """Start, attach to, check and stop the broker and database that ``settings`` name."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = EmbeddedBroker(settings.state_dir, settings.broker_port, settings.broker_bin)
        self.postgres = EmbeddedPostgres(settings.state_dir, settings.database_port)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop between processes sharing the state directory."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.state_dir / "stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def up(self, parts: Collection[str] = PARTS) -> tuple[Endpoints, list[str]]:
        """Make the ``parts`` (both by default) available; return the endpoints and the names
        of parts started now. A part not asked for is not started or checked, and its
        address in the endpoints is empty (a SQLite sink needs no database server, a
        database query no broker)."""
        s = self.settings
        kafka.check_properties(s.kafka_properties)  # before an embedded broker is started
        started: list[str] = []
        broker: kafka.Endpoint | None = None
        database_url = ""
        with self._locked():
            try:
                if "broker" not in parts:
                    pass
                elif s.bootstrap_servers is None:
                    rec = self.broker.running()
                    if rec is None:
                        rec = self.broker.start(s.startup_timeout_s)
                        started.append(self.broker.name)
                    broker = kafka.Endpoint(self.broker.bootstrap(rec), s.kafka_properties)
                else:
                    broker = kafka.Endpoint(s.bootstrap_servers, s.kafka_properties)
                    kafka.check_broker(broker, s.connect_timeout_s)
                if "database" not in parts:
                    pass
                elif s.database_url is None:
                    rec = self.postgres.running()
                    if rec is None:
                        rec = self.postgres.start(s.startup_timeout_s)
                        started.append(self.postgres.name)
                    database_url = self.postgres.url(rec)
                else:
                    database_url = s.database_url
                    check_database(database_url, s.connect_timeout_s)
            except BaseException:
                self._stop(started)  # no half-started stack left behind
                raise
        return Endpoints(broker, database_url), started

    def down(self) -> dict[str, bool]:
        """Stop the embedded parts; return which ones were running."""
        with self._locked():
            return {
                self.broker.name: self.broker.stop(),
                self.postgres.name: self.postgres.stop(),
            }

    def _stop(self, names: list[str]) -> None:
        for part in (self.broker, self.postgres):
            if part.name in names:
                part.stop()

    @contextmanager
    def session(self, keep_up: bool = False, parts: Collection[str] = PARTS) -> Iterator[Endpoints]:
        """Use the stack (its ``parts``) for a block; stop on exit what this block started,
        unless ``keep_up``."""
        endpoints, started = self.up(parts)
        if started:
            log.info("started embedded %s", " and ".join(started))
        try:
            yield endpoints
        finally:
            if started and not keep_up:
                with self._locked():
                    self._stop(started)

    def status(self) -> dict[str, dict[str, Any]]:
        """Where each part is and whether it answers; checks external parts with a short timeout."""
        s = self.settings
        kafka.check_properties(s.kafka_properties)  # a bad one is an error, not shown
        timeout = min(s.connect_timeout_s, 3.0)
        result: dict[str, dict[str, Any]] = {}
        if s.bootstrap_servers is None:
            rec = self.broker.running()
            result["broker"] = {
                "embedded": True,
                "running": rec is not None,
                "address": self.broker.bootstrap(rec) if rec else None,
                "pid": rec.pid if rec else None,
                "log": str(self.broker.log_path),
            }
        else:
            broker = kafka.Endpoint(s.bootstrap_servers, s.kafka_properties)
            result["broker"] = {
                "embedded": False,
                "running": _answers(kafka.check_broker, broker, timeout),
                "address": s.bootstrap_servers,
            }
        if s.kafka_properties:  # secrets as ***
            result["broker"]["properties"] = s.kafka_properties.redacted()
        if s.database_url is None:
            rec = self.postgres.running()
            result["database"] = {
                "embedded": True,
                "running": rec is not None,
                "address": self.postgres.address(rec) if rec else None,
                "pid": rec.pid if rec else None,
                "data_dir": str(self.postgres.data_dir),
                "password_file": str(self.postgres.secret_path),
                "log": str(self.postgres.log_path),
            }
        else:
            result["database"] = {
                "embedded": False,
                "running": _answers(check_database, s.database_url, timeout),
                "address": redact(s.database_url),
            }
        return result


def _answers(check: Any, address: Any, timeout_s: float) -> bool:
    try:
        check(address, timeout_s)
    except WorkbenchError:
        return False
    return True
