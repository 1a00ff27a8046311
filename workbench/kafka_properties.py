"""librdkafka properties from the environment: ``WORKBENCH_KAFKA_<NAME>`` sets property NAME.

How a cloud broker is reached (TLS, SASL, their files and secrets) is librdkafka's own
business, with a property for everything; the workbench passes them through to every
client rather than inventing settings for each. This module only names them, refuses the
few the workbench decides itself, and keeps their secrets out of everything shown.
:class:`workbench.config.Settings` reads them (``Settings.kafka_properties``) and
:class:`workbench.kafka.Endpoint` has librdkafka check them.

NAME is the property in capitals with ``_`` for each ``.``: ``WORKBENCH_KAFKA_SASL_MECHANISM``
is ``sasl.mechanism``. No property that takes a text value has an underscore in its name
but ``log_level`` and ``enabled_events``, which are recognised by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from workbench.errors import ConfigError

#: Where the librdkafka properties come from: ``WORKBENCH_KAFKA_SASL_PASSWORD`` is
#: ``sasl.password``.
KAFKA_PREFIX = "WORKBENCH_KAFKA_"

#: librdkafka's properties that take a text value and hold an underscore in their name:
#: recognised by name, as every other ``_`` in a variable's name stands for a ``.``.
_UNDERSCORED = {"log.level": "log_level", "enabled.events": "enabled_events"}

_COMMITS = "the processor, which commits offsets once the sinks hold the data"
_ACKS = "the producers: a message counts as delivered once every replica has it"

#: Properties the workbench sets itself, for correctness or from a setting of its own: a
#: variable for one of them is refused, naming what decides it instead (aliases too).
_RESERVED = {
    "bootstrap.servers": "WORKBENCH_BOOTSTRAP_SERVERS",
    "metadata.broker.list": "WORKBENCH_BOOTSTRAP_SERVERS",
    "group.id": "WORKBENCH_CONSUMER_GROUP",
    "session.timeout.ms": "WORKBENCH_SESSION_TIMEOUT_MS",
    "fetch.wait.max.ms": "WORKBENCH_FETCH_WAIT_MS",
    "enable.auto.commit": _COMMITS,
    "auto.commit.enable": _COMMITS,
    "enable.auto.offset.store": _COMMITS,
    "acks": _ACKS,
    "request.required.acks": _ACKS,
    "delivery.report.only.error": "the producers, which count deliveries from their reports",
}

#: A property whose value is a secret: shown as ``***`` in reprs, logs, errors and status.
#: Broad on purpose ("pas" catches a misspelt password too): hiding a value that was not
#: secret costs less than showing one that was.
_SECRET = re.compile(r"pas|pwd|secret|token|credential|\.pem$|^sasl\.oauthbearer\.config$")

REDACTED = "***"


def kafka_variable(prop: str) -> str:
    """The environment variable that sets librdkafka property ``prop``.

    >>> kafka_variable("sasl.password"), kafka_variable("log_level")
    ('WORKBENCH_KAFKA_SASL_PASSWORD', 'WORKBENCH_KAFKA_LOG_LEVEL')
    """
    return KAFKA_PREFIX + prop.replace(".", "_").upper()


def is_secret(prop: str) -> bool:
    """Whether librdkafka property ``prop`` holds a secret (a password, a key, a token).

    >>> is_secret("sasl.password"), is_secret("ssl.key.pem"), is_secret("sasl.username")
    (True, True, False)
    """
    return bool(_SECRET.search(prop))


class KafkaProperties(Mapping[str, str]):
    """librdkafka properties that every producer, consumer and admin client gets, read from
    ``WORKBENCH_KAFKA_<NAME>``: NAME is the property in capitals with ``_`` for ``.``
    (``WORKBENCH_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` is ``security.protocol``). An empty
    variable is not set. An immutable mapping whose repr shows secrets as ``***``.

    Whether librdkafka knows a property and accepts its value is checked where the
    clients are made (:class:`workbench.kafka.Endpoint`), which is the only place that may
    load librdkafka; the properties the workbench decides itself are refused here.

    >>> p = KafkaProperties.from_env({"WORKBENCH_KAFKA_SASL_MECHANISM": "PLAIN",
    ...                               "WORKBENCH_KAFKA_SASL_PASSWORD": "s3cret"})
    >>> p
    KafkaProperties({'sasl.mechanism': 'PLAIN', 'sasl.password': '***'})
    >>> p["sasl.password"], p.to_env()["WORKBENCH_KAFKA_SASL_PASSWORD"]
    ('s3cret', 's3cret')
    >>> KafkaProperties.from_env({"WORKBENCH_KAFKA_GROUP_ID": "mine"})
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: WORKBENCH_KAFKA_GROUP_ID='mine' is not valid: expected it unset: \
WORKBENCH_CONSUMER_GROUP decides group.id
    """

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = dict(items)
        self._items = {k: str(pairs[k]) for k in sorted(pairs)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> KafkaProperties:
        """The properties set by ``WORKBENCH_KAFKA_*`` variables of ``environ``."""
        items = {}
        for variable, value in environ.items():
            if not variable.startswith(KAFKA_PREFIX) or not value.strip():
                continue
            prop = variable[len(KAFKA_PREFIX) :].lower().replace("_", ".")
            prop = _UNDERSCORED.get(prop, prop)
            if prop in _RESERVED:
                raise ConfigError(variable, value, f"it unset: {_RESERVED[prop]} decides {prop}")
            items[prop] = value.strip()
        return cls(items)

    def to_env(self) -> dict[str, str]:
        """The variables that give these properties back through :meth:`from_env`."""
        return {kafka_variable(k): v for k, v in self._items.items()}

    def redacted(self) -> dict[str, str]:
        """The properties with every secret's value replaced by ``***``, for showing."""
        return {k: REDACTED if is_secret(k) else v for k, v in self._items.items()}

    def redact(self, text: str) -> str:
        """``text`` with every secret value of these properties in it replaced by ``***``
        (for a message from librdkafka about them)."""
        for k, v in self._items.items():
            if is_secret(k) and v:
                text = text.replace(v, REDACTED)
        return text

    def shown(self, prop: str) -> str:
        """The value of ``prop`` as it may be shown: ``***`` for a secret."""
        return self.redacted()[prop]

    @property
    def secured(self) -> bool:
        """Whether the properties ask for TLS or SASL (``security.protocol`` other than
        plaintext): something the embedded broker does not speak."""
        return self._items.get("security.protocol", "plaintext").lower() != "plaintext"

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"KafkaProperties({self.redacted()!r})"
