"""Exceptions raised by the workbench.

Every error a user can cause or meet derives from :class:`WorkbenchError`, whose
message is one line that names what went wrong and where. The CLI prints that line
and exits non-zero; it never shows a traceback for these.

>>> str(BrokerUnavailable("127.0.0.1:1", "connection refused"))
'cannot reach the Kafka broker at 127.0.0.1:1: connection refused'
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ConfigError(WorkbenchError):
    """A setting (environment variable or argument) has a value that cannot be used."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}={value!r} is not valid: expected {expected}")


class FileConfigError(ConfigError):
    """A configuration file (scenario, rules) that cannot be used: names the file, the entry
    in it, and the problem."""

    label = "file"

    def __init__(self, path: object, where: str, problem: str) -> None:
        self.path, self.where, self.problem = path, where, problem
        Exception.__init__(self, f"{self.label} {path}: {where}: {problem}")


class StackError(WorkbenchError):
    """The embedded stack could not be started, attached to or stopped."""


class BrokerUnavailable(StackError):
    """A Kafka broker did not answer at the address we were given."""

    def __init__(self, bootstrap: str, reason: str) -> None:
        self.bootstrap, self.reason = bootstrap, reason
        super().__init__(f"cannot reach the Kafka broker at {bootstrap}: {reason}")


class DatabaseUnavailable(StackError):
    """A PostgreSQL server did not answer at the URL we were given (password redacted)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"cannot reach the database at {url}: {reason}")


class SchemaError(WorkbenchError):
    """An Avro schema file is missing or invalid, or a message does not match it."""


class DeliveryError(WorkbenchError):
    """The broker did not acknowledge every message we produced."""


class ArchiveError(WorkbenchError):
    """The Parquet archive cannot do what was asked: a bad period, an unknown run, or a write
    that would lose rows the archive already holds."""


class ArchiveUnavailable(ArchiveError):
    """The archive location (a local folder or an S3 bucket) cannot be reached or written."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri, self.reason = uri, reason
        super().__init__(f"cannot use the archive at {uri}: {reason}")


class MetricsUnavailable(WorkbenchError):
    """The Prometheus metrics server could not listen where it was asked to."""

    def __init__(self, address: str, reason: str) -> None:
        self.address, self.reason = address, reason
        super().__init__(f"cannot serve metrics on {address}: {reason}")
