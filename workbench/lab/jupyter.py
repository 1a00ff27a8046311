"""``workbench lab``: JupyterLab on the notebooks, started, shown and stopped as one command.

``jupyter lab`` alone trips a newcomer up: as root it refuses to start without
``--allow-root``, it prints its URL among thirty log lines, and its kernels warn that they
run "over TCP without encryption". This module starts the same server with:

- the notebooks folder as its root (``notebooks/``, or ``--notebooks DIR``);
- ``127.0.0.1`` by default: on a shared machine nothing is reachable from outside;
- a token made here (``secrets.token_urlsafe``) and handed over in ``JUPYTER_TOKEN``,
  which jupyter_server's ``IdentityProvider.token`` reads: in the environment it is not
  shown to other users by ``ps`` as a command-line option would be, and we know it, so the
  one line printed once the server answers is the URL to open, token included;
- ``--allow-root`` when running as root (containers, CI);
- kernels on Unix sockets (``KernelManager.transport = "ipc"``) instead of loopback TCP,
  which is what ipykernel's warning asks for: a socket file readable by this user alone
  instead of ports any local user can connect to; on Windows (no Unix sockets for zmq)
  kernels stay on TCP and the warning remains;
- its log in ``<state dir>/lab.log``, not on the terminal.

The server runs in a session of its own, so the terminal's Ctrl-C reaches this process
only (JupyterLab would otherwise ask "Shutdown this Jupyter server (y/[n])?"); Ctrl-C,
SIGTERM or a closed terminal stop it by its PID with SIGTERM, on which it shuts its
kernels down, and the command exits 0. On Linux the server also gets SIGTERM should this
process die without a chance to stop it (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_runtime_dir

from workbench.config import Settings, project_root
from workbench.errors import ConfigError, WorkbenchError

log = logging.getLogger(__name__)

#: How long the server may take to shut its kernels down after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0
#: Kernels talk to the server over Unix sockets where zmq has them.
KERNEL_TRANSPORT = "ipc" if os.name == "posix" else "tcp"
_WILDCARDS = {"", "0.0.0.0", "::", "*"}


class LabError(WorkbenchError):
    """JupyterLab could not be started, or stopped on its own with an error."""


@dataclass(frozen=True)
class LabOptions:
    """What ``workbench lab`` was asked for.

    ``port_given``: the user named the port, so a busy one is an error; otherwise JupyterLab
    moves on to the next free port, as ``jupyter lab`` does. ``browser``: open the URL in a
    web browser once the server answers.
    """

    notebooks: Path
    ip: str = "127.0.0.1"
    port: int = 8888
    port_given: bool = False
    browser: bool = False

    @classmethod
    def from_args(
        cls, notebooks: str | None, ip: str, port: int | None, no_browser: bool
    ) -> LabOptions:
        folder = Path(notebooks) if notebooks else project_root() / "notebooks"
        if not folder.is_dir():
            raise ConfigError("--notebooks", str(folder), "a folder (of .ipynb files)")
        return cls(
            notebooks=folder.resolve(),
            ip=ip,
            port=8888 if port is None else port,
            port_given=port is not None,
            browser=not no_browser and has_display(),
        )


def has_display() -> bool:
    """Whether a web browser could be shown: always on macOS and Windows, on Linux and
    other Unixes only with an X or Wayland display (without one Python's ``webbrowser``
    would start a text browser such as lynx in this terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def server_argv(options: LabOptions, *, as_root: bool) -> list[str]:
    """The command line of the JupyterLab server (the token is not on it: see the module)."""
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        f"--ServerApp.ip={options.ip}",
        f"--ServerApp.port={options.port}",
        f"--ServerApp.root_dir={options.notebooks}",
        f"--KernelManager.transport={KERNEL_TRANSPORT}",
    ]  # fmt: skip
    if options.port_given:
        argv.append("--ServerApp.port_retries=0")
    if as_root:
        argv.append("--allow-root")
    return argv


def url_host(ip: str) -> str:
    """The host to put in a URL for a server listening on ``ip``: loopback for a wildcard
    address (it answers there too), IPv6 literals in brackets."""
    if ip in _WILDCARDS:
        return "127.0.0.1"
    return f"[{ip}]" if ":" in ip else ip


def run(settings: Settings, options: LabOptions) -> int:
    """Start JupyterLab, print its URL once it answers, and serve until interrupted.

    Returns 0 when stopped by Ctrl-C, SIGTERM or SIGHUP (the server stopped by its PID
    first); raises :class:`LabError` when it cannot start or stops on its own with an error.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / "lab.log"
    token = secrets.token_urlsafe(32)
    previous_hup = signal.signal(signal.SIGHUP, _interrupted) if hasattr(signal, "SIGHUP") else None
    # Ctrl-C stops the lab even when this process was started with SIGINT ignored (a parent
    # that ignores it passes that on, and Python then leaves it ignored)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as server_log:
            proc = subprocess.Popen(
                server_argv(options, as_root=hasattr(os, "geteuid") and os.geteuid() == 0),
                env={**os.environ, "JUPYTER_TOKEN": token},
                stdin=subprocess.DEVNULL,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        log.info(
            "JupyterLab (pid %d) on %s; its log: %s; Ctrl-C stops it",
            proc.pid, options.notebooks, log_path,
        )  # fmt: skip
        port = _wait_until_answering(proc, options, token, log_path, settings.startup_timeout_s)
        url = f"http://{url_host(options.ip)}:{port}/lab?token={token}"
        print(url, flush=True)
        if options.browser:
            webbrowser.open(url)
        code = proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            stop(proc)
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)
        signal.signal(signal.SIGINT, previous_int)
    if code != 0:
        raise LabError(f"JupyterLab stopped with exit code {code}; see {log_path}")
    return 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID: SIGTERM (it shuts its kernels down), then SIGKILL if it
    is still there after :data:`STOP_TIMEOUT_S`. Further Ctrl-Cs meanwhile are ignored, so a
    second one cannot leave the server running."""
    if proc.poll() is not None:
        return
    handlers = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        log.info("stopping JupyterLab (pid %d) and its kernels", proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("JupyterLab (pid %d) did not stop within %gs: killing it", proc.pid,
                        STOP_TIMEOUT_S)  # fmt: skip
            proc.kill()
            proc.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    log.info("JupyterLab stopped")


def _wait_until_answering(
    proc: subprocess.Popen[bytes], options: LabOptions, token: str, log_path: Path,
    timeout_s: float,
) -> int:  # fmt: skip
    """The port the server answers on, once ``/api/status`` answers 200 with our token.

    The port is read from the server's own info file (``jpserver-<pid>.json`` in Jupyter's
    runtime folder): without ``--port`` JupyterLab takes the next free port when 8888 is
    busy, and only it knows which.
    """
    info = Path(jupyter_runtime_dir()) / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + max(timeout_s, 60.0)  # a first start builds nothing, but
    while time.monotonic() < deadline:  # imports a few hundred modules on a busy machine
        code = proc.poll()
        if code is not None:
            raise LabError(_failed_to_start(code, log_path))
        port = _port_from(info)
        if port is not None:
            status = _status(f"http://{url_host(options.ip)}:{port}/api/status", token)
            if status == 200:
                return port
            if status in (401, 403):
                raise LabError(
                    f"JupyterLab refused the token it was started with (HTTP {status}): a "
                    "Jupyter configuration file sets IdentityProvider.token or a password; "
                    f"see {log_path}"
                )
        time.sleep(0.2)
    raise LabError(f"JupyterLab did not answer within {max(timeout_s, 60.0):g}s; see {log_path}")


def _port_from(info: Path) -> int | None:
    try:
        return int(json.loads(info.read_text())["port"])
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or half written


def _status(url: str, token: str) -> int | None:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None  # not listening yet


def _failed_to_start(code: int, log_path: Path) -> str:
    """One line: the exit code and the server's last error line (a busy port, a bad option)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    said = [ln.strip() for ln in lines if ln.strip()]
    errors = [ln for ln in said if ln.startswith(("[C ", "[E ")) or "Error" in ln]
    last = re.sub(r"^\[[A-Z] [^]]*\]\s*", "", (errors or said or ["(nothing logged)"])[-1])
    return f"JupyterLab exited with code {code} before it answered: {last} (log: {log_path})"


def _interrupted(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux), so that a
    ``workbench lab`` killed with SIGKILL does not leave the server behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def ipc_kernel_config() -> Iterator[dict[str, Any]]:
    """Configuration for a jupyter_client ``KernelManager`` whose kernel talks over Unix
    sockets in a private folder, removed afterwards: no "Kernel is running over TCP without
    encryption" warning from ipykernel, and no socket names shared with a concurrent run.

    For headless runs: ``papermill.execute_notebook(..., config=Config(cfg))`` passes it
    on to nbclient's kernel manager. Yields ``{}`` where kernels cannot use Unix sockets.
    (Without ``ip``, jupyter_client names IPC sockets ``kernel-ipc-N`` in the working
    directory, where two runs at once would collide.)
    """
    if KERNEL_TRANSPORT != "ipc":
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="wb-kernel-")  # mode 0700: this user's alone
    try:
        yield {"KernelManager": {"transport": "ipc", "ip": str(Path(folder) / "kernel")}}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
