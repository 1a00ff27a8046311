"""`workbench lab` as a user runs it: a real JupyterLab started, asked with its token,
given a kernel, and stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import WORKBENCH, cli_env, isolated_settings
from jupyter_client import BlockingKernelClient
from jupyter_core.paths import jupyter_runtime_dir

from workbench.lab.jupyter import LabOptions, server_argv
from workbench.stack.process import free_port

pytestmark = pytest.mark.slow  # starts JupyterLab servers

URL = re.compile(r"^http://127\.0\.0\.1:(\d+)/lab\?token=([\w-]+)$")
SERVER_PID = re.compile(r"JupyterLab \(pid (\d+)\)")


def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method, data=b"{}" if
                                     method == "POST" else None)  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            is_json = r.headers.get_content_type() == "application/json"
            return r.status, json.loads(body) if is_json else {"text": body.decode()}
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def first_line(proc: subprocess.Popen, timeout_s: float = 120) -> str:
    """The first stdout line, waited for in a thread (a pipe read cannot time out)."""
    got: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: got.put(proc.stdout.readline()), daemon=True).start()
    try:
        return got.get(timeout=timeout_s).strip()
    except queue.Empty:
        proc.kill()
        pytest.fail(f"workbench lab printed no URL within {timeout_s}s: {proc.stderr.read()}")


def kernel_processes(kernel_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(kernel_id in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_lab_prints_a_working_url_and_stops_with_its_kernels(tmp_path: Path, stop_with):
    settings = isolated_settings(tmp_path / "state")
    notebooks = tmp_path / "nb"
    notebooks.mkdir()
    (notebooks / "mine.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    port = free_port()
    # Ctrl-C must stop it even when its parent ignores SIGINT and passes that on (a test
    # worker that had it ignored left the lab deaf to it, once in a while)
    ignore_int = stop_with == signal.SIGINT
    proc = subprocess.Popen(
        [WORKBENCH, "lab", "--port", str(port), "--notebooks", str(notebooks)],
        env=cli_env(settings, DISPLAY=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_int else None,
    )
    try:
        line = first_line(proc)
        m = URL.match(line)
        assert m, f"not a URL with a token: {line!r}"
        assert int(m.group(1)) == port
        token = m.group(2)
        base = f"http://127.0.0.1:{port}"

        assert get(f"{base}/api/status", token)[0] == 200
        assert get(f"{base}/api/status")[0] in (401, 403), "the server must need the token"
        status, page = get(line)  # the printed URL itself opens the lab
        assert status == 200 and "JupyterLab" in page["text"]
        status, listing = get(f"{base}/api/contents", token)
        assert [c["name"] for c in listing["content"]] == ["mine.ipynb"]  # --notebooks

        status, kernel = get(f"{base}/api/kernels", token, method="POST")
        assert status == 201, kernel
        # the kernel runs code over the transport the server gave it
        client = BlockingKernelClient(
            connection_file=str(Path(jupyter_runtime_dir()) / f"kernel-{kernel['id']}.json")
        )
        client.load_connection_file()
        assert client.transport == "ipc"
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
            said = []
            reply = client.execute_interactive(
                "print(6 * 7)", timeout=60, output_hook=lambda m: said.append(m["content"])
            )
        finally:
            client.stop_channels()
        assert reply["content"]["status"] == "ok"
        assert {"name": "stdout", "text": "42\n"} in said
        assert kernel_processes(kernel["id"]), "the kernel process runs"
        server_log = (settings.state_dir / "lab.log").read_text()
        assert "Kernel started" in server_log
        assert "without encryption" not in server_log

        proc.send_signal(stop_with)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "JupyterLab stopped" in err
    server_pid = int(SERVER_PID.search(err).group(1))
    assert not psutil.pid_exists(server_pid) or psutil.Process(server_pid).status() == "zombie"
    assert not kernel_processes(kernel["id"]), "the kernel stopped with the server"


def test_a_busy_port_is_one_line(tmp_path: Path):
    settings = isolated_settings(tmp_path / "state")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [WORKBENCH, "lab", "--port", str(port)],
            env=cli_env(settings),
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert r.returncode == 1
    assert r.stdout == ""
    error = [ln for ln in r.stderr.splitlines() if ln.startswith("workbench: error:")]
    assert len(error) == 1 and f"port {port} is not available" in error[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_notebooks_folder_is_one_line(tmp_path: Path):
    settings = isolated_settings(tmp_path / "state")
    r = subprocess.run(
        [WORKBENCH, "lab", "--notebooks", str(tmp_path / "nope")],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"workbench: error: --notebooks='{tmp_path / 'nope'}' is not valid: "
        "expected a folder (of .ipynb files)"
    )


def test_the_server_command_line(tmp_path: Path):
    given = LabOptions(tmp_path, ip="127.0.0.1", port=9999, port_given=True)
    argv = server_argv(given, as_root=True)
    assert "--allow-root" in argv and "--ServerApp.port_retries=0" in argv
    assert f"--ServerApp.root_dir={tmp_path}" in argv and "--ServerApp.port=9999" in argv
    default = server_argv(LabOptions(tmp_path), as_root=False)
    assert "--allow-root" not in default and "--ServerApp.port_retries=0" not in default
    assert not any("token" in a.lower() for a in argv + default), "the token stays off ps"


HEADLESS = """
import sys
import papermill
from traitlets.config import Config
from workbench.lab.jupyter import ipc_kernel_config

with ipc_kernel_config() as cfg:
    print(cfg["KernelManager"]["ip"])
    papermill.execute_notebook(sys.argv[1], sys.argv[2], progress_bar=False, config=Config(cfg))
"""


@pytest.mark.skipif(os.name != "posix", reason="kernels use Unix sockets on POSIX only")
def test_a_headless_kernel_on_unix_sockets_runs_code_without_the_tcp_warning(tmp_path: Path):
    """What report.py can pass to papermill: the kernel runs, and its stderr (the terminal
    of `workbench report`) says nothing about TCP."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    r = subprocess.run(
        [sys.executable, "-c", HEADLESS, str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "without encryption" not in r.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[0].outputs[0]["text"] == "42\n"
    sockets = Path(r.stdout.strip())
    assert not sockets.parent.exists(), "the sockets' folder is removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ipynb", "out.ipynb"], "no sockets"
