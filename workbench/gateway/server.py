"""``workbench gateway``: the gateway application on uvicorn, attached to the broker.

It starts or attaches to the broker like the other commands (the embedded one unless
``WORKBENCH_BOOTSTRAP_SERVERS`` names another), makes sure the topics exist, and serves
until Ctrl-C or SIGTERM; then it answers the requests it has, sends what is queued and
stops. It touches the database only to answer ``GET /v1/machines/{id}/health`` and ``POST
/v1/predict``: the first such request finds (or starts) it; telemetry never waits on it.
"""

from __future__ import annotations

import functools
import gc
import logging
import socket
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from workbench import kafka
from workbench.config import Settings
from workbench.errors import ConfigError
from workbench.gateway.app import GatewayConfig, create_app
from workbench.gateway.keys import KeyRing
from workbench.gateway.publisher import Publisher
from workbench.stack import Stack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gateway:
    """A configured gateway, ready to :meth:`serve`."""

    settings: Settings
    bootstrap: kafka.Endpoint
    config: GatewayConfig

    def app(self) -> FastAPI:
        publisher = Publisher(
            self.bootstrap, self.settings.topic_raw, self.settings.gateway_ack_timeout_s
        )
        return create_app(publisher, self.config)

    def serve(self, host: str, port: int) -> None:
        """Run until interrupted (uvicorn handles SIGINT and SIGTERM). Port 0 takes a free
        port, which the log line names."""
        sock = socket.create_server((host, port), reuse_port=False)
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                self.app(),
                loop="uvloop",
                http="httptools",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=int(self.settings.gateway_ack_timeout_s + 5),
            )
        )
        log.info(
            "gateway on http://%s:%d (docs at /docs) -> %s on %s; %d API keys; run id %s",
            host, port, self.settings.topic_raw, self.bootstrap, len(self.config.keys),
            self.config.run_id,
        )  # fmt: skip
        # what is loaded by now lives as long as the process: out of the collector's
        # sight, so that a collection scans only what requests make (shorter pauses)
        gc.collect()
        gc.freeze()
        server.run(sockets=[sock])


def prepare_gateway(settings: Settings, run_id: str) -> Gateway:
    """Keys loaded and checked, the broker up and its topics made; :class:`ConfigError`
    when no key is configured (a gateway that takes anything is not offered)."""
    keys = KeyRing.from_sources(settings.gateway_api_keys, settings.gateway_keys_path)
    if not len(keys):
        raise ConfigError(
            "WORKBENCH_GATEWAY_API_KEYS",
            "",
            f"at least one API key (comma-separated), or keys in {settings.gateway_keys_path} "
            "made with `workbench gateway key NAME`",
        )
    endpoints, started = Stack(settings).up(parts=("broker",))
    if started:
        log.info("started the embedded broker; `workbench down` stops it")
    kafka.ensure_topics(endpoints.broker, settings.topics, settings.partitions)
    rate = settings.gateway_rate
    config = GatewayConfig(
        keys,
        run_id,
        rate=rate,
        burst=rate,
        max_body_bytes=settings.gateway_max_body_bytes,
        database=functools.cache(lambda: _database_url(settings)),
    )
    return Gateway(settings, endpoints.broker, config)


def _database_url(settings: Settings) -> str:
    """The database the health and predict endpoints read: the configured one, else the
    embedded PostgreSQL (started if it is not running, like the other commands do)."""
    endpoints, started = Stack(settings).up(parts=("database",))
    if started:
        log.info("started the embedded database for the health and predict endpoints")
    return endpoints.database_url
