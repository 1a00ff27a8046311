"""Child server processes: spawn detached, record, recognise after a restart, stop by pid.

The embedded servers outlive the command that started them (``workbench up`` returns
while the broker keeps running), so each one is recorded in a small JSON file in the
state directory: pid, process start time and address. The start time guards against
pid reuse: a recorded pid that now belongs to another process counts as not running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: Popen handles of the children this Python process started, so that we reap them
#: (a long-lived notebook kernel or test session must not collect zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What we remember about a running server, stored as ``<name>.json``."""

    pid: int
    create_time: float
    port: int
    address: str

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


def spawn(
    argv: list[str], log_path: Path, *, user: str | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {argv[0]}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            **run_as(user),
        )
    _children[proc.pid] = proc
    log.debug("spawned pid %d: %s", proc.pid, " ".join(argv))
    return proc


def run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user``: its uid, its gid and no other groups.

    All three matter: keeping root's group would make a root-owned folder's group bits
    (often none) apply instead of its "other" bits.
    """
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def create_time(pid: int) -> float:
    return psutil.Process(pid).create_time()


def is_running(record: ProcessRecord | None) -> bool:
    """True when the recorded process is alive and is the one we started (not a reused pid)."""
    if record is None:
        return False
    child = _children.get(record.pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        proc = psutil.Process(record.pid)
        return (
            abs(proc.create_time() - record.create_time) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


def stop(pid: int, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> bool:
    """Send ``sig`` to ``pid``, wait up to ``timeout_s``, then SIGKILL. True if it was running."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        _reap(pid)
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
    if not _wait_gone(pid, proc, timeout_s):
        log.warning(
            "pid %d did not exit within %.0fs of signal %d; killing it", pid, timeout_s, sig
        )
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
        _wait_gone(pid, proc, 5.0)
    return True


def _wait_gone(pid: int, proc: psutil.Process, timeout_s: float) -> bool:
    child = _children.get(pid)
    try:
        if child is not None:
            child.wait(timeout_s)
            _children.pop(pid, None)
        else:
            proc.wait(timeout_s)
        return True
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return False


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        child.poll()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the caller retries on a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port``. Connections of a server that just stopped may linger in
    TIME_WAIT; servers bind with SO_REUSEADDR and do not mind them, so neither do we."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def accepts_connections(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a server log, for error messages that say why a start failed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_system_user(name: str) -> str:
    """Create an unprivileged system account (PostgreSQL refuses to run as root)."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %r to run PostgreSQL (it refuses to run as root)", name)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    return name


def ensure_traversable(path: Path) -> None:
    """Give other users search permission on every ancestor of ``path``.

    Needed only when root starts PostgreSQL as an unprivileged user and the checkout
    lives under a private directory (``mktemp -d`` makes mode 0700 folders).
    """
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            log.info("granting o+x on %s so the database user can reach its data", parent)
            os.chmod(parent, mode | 0o001)
