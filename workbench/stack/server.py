"""What every embedded server shares: its record, start on a loopback port, health wait, stop.

A subclass says how to launch itself on a port (:meth:`EmbeddedServer.argv`) and how to
tell that it answers (:meth:`EmbeddedServer.answers`); this class does the rest, the same
way for the broker and the database.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

from workbench.errors import StackError
from workbench.stack import process
from workbench.stack.process import ProcessRecord

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class EmbeddedServer:
    """A server process started from, and recorded in, the state directory."""

    #: "broker" or "database": the key in ``Stack.status()`` and in messages.
    name: str
    #: The setting that fixes the port, named when that port is taken.
    port_setting: str
    #: How to ask the server to shut down cleanly, and how long to give it.
    stop_signal: int
    stop_timeout_s: float

    def __init__(self, state_dir: Path, stem: str, port: int = 0) -> None:
        self.state_dir = state_dir
        self.port = port
        self.record_path = state_dir / f"{stem}.json"
        self.log_path = state_dir / f"{stem}.log"
        #: the port of the last start, taken again when free: clients that outlive a
        #: ``down``/``up`` (a processor, a notebook) find the server where it was
        self.last_port_path = state_dir / f"{stem}.port"

    def argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def answers(self, rec: ProcessRecord) -> bool:
        """True once the server serves requests (not merely accepts connections)."""
        raise NotImplementedError

    def address(self, rec: ProcessRecord) -> str:
        return f"{rec.address}:{rec.port}"

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.load(self.record_path)

    def running(self) -> ProcessRecord | None:
        """The record of the running server, or None (a stale record is removed)."""
        rec = self.record()
        if rec is None:
            return None
        if process.is_running(rec):
            return rec
        log.info(
            "%s pid %d recorded in %s is gone; forgetting it", self.name, rec.pid, self.record_path
        )
        self.record_path.unlink(missing_ok=True)
        return None

    def launch(
        self, timeout_s: float, user: str | None = None, cwd: Path | None = None
    ) -> ProcessRecord:
        """Start on the configured port, or on a free one (retried if another process wins
        the race for it), and wait until the server answers."""
        attempts = 1 if self.port else 3
        last = self._last_port()
        for attempt in range(1, attempts + 1):
            port = self.port or (last if attempt == 1 and last else process.free_port(HOST))
            if not process.port_is_free(port, HOST):
                raise StackError(
                    f"port {port} on {HOST} is already in use, so the embedded {self.name} "
                    f"cannot listen there; set {self.port_setting} to another port, "
                    "or to 0 for a free one"
                )
            proc = process.spawn(self.argv(port), self.log_path, user=user, cwd=cwd)
            rec = ProcessRecord(proc.pid, process.create_time(proc.pid), port, HOST)
            rec.save(self.record_path)
            self.last_port_path.write_text(f"{port}\n")
            try:
                self._wait_healthy(proc, rec, timeout_s)
            except StackError:
                died_at_start = process.exited(proc)
                self.stop()
                if attempt == attempts or not died_at_start:
                    raise
                log.info("%s exited at start (port race?); retrying on another port", self.name)
                continue
            log.info("embedded %s (pid %d) listening on %s", self.name, rec.pid, self.address(rec))
            return rec
        raise AssertionError("unreachable")

    def _last_port(self) -> int | None:
        """The port of the last start, if it is free now."""
        try:
            port = int(self.last_port_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return port if 0 < port < 65536 and process.port_is_free(port, HOST) else None

    def _wait_healthy(
        self, proc: subprocess.Popen[bytes], rec: ProcessRecord, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.exited(proc):
                raise StackError(
                    f"the embedded {self.name} exited at start (code {proc.returncode}); "
                    f"last lines of {self.log_path}:\n{process.log_tail(self.log_path)}"
                )
            if process.accepts_connections(rec.port, HOST) and self.answers(rec):
                return
            time.sleep(0.1)
        raise StackError(
            f"the embedded {self.name} did not answer on {self.address(rec)} within "
            f"{timeout_s:g}s; see {self.log_path}"
        )

    def stop(self) -> bool:
        """Stop the recorded server; True if one was running."""
        rec = self.record()
        was_running = process.is_running(rec)
        if rec is not None and was_running:
            process.stop(rec.pid, self.stop_signal, timeout_s=self.stop_timeout_s)
            log.info("stopped embedded %s (pid %d)", self.name, rec.pid)
        self.record_path.unlink(missing_ok=True)
        return was_running
