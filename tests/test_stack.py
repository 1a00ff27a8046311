"""The embedded stack: real Tansu and PostgreSQL processes, started, reused, killed, stopped."""

import os
import signal
import socket
import time

import psutil
import pytest
from conftest import isolated_settings

from workbench import kafka
from workbench.errors import StackError
from workbench.sinks.postgres import check_database, connect
from workbench.stack import Stack


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def private(tmp_path):
    """A stack of this test's own, always stopped at the end."""
    st = Stack(isolated_settings(tmp_path / "state"))
    yield st
    st.down()


def test_second_caller_attaches_instead_of_starting_another(stack):
    settings, endpoints = stack
    again, started = Stack(settings).up()
    assert started == []
    assert again == endpoints
    status = Stack(settings).status()
    assert status["broker"]["running"] and status["database"]["running"]
    assert status["broker"]["address"] == endpoints.bootstrap_servers


def test_up_waits_for_health_and_down_leaves_no_process(private):
    endpoints, started = private.up()
    assert started == ["broker", "database"]
    assert kafka.check_broker(endpoints.bootstrap_servers, 2) is not None
    assert check_database(endpoints.database_url, 2).startswith("18")
    pids = [private.broker.record().pid, private.postgres.record().pid]
    backends = psutil.Process(pids[1]).children()

    assert private.down() == {"broker": True, "database": True}
    assert all(gone(p) for p in pids + [b.pid for b in backends])
    status = private.status()
    assert not status["broker"]["running"] and not status["database"]["running"]
    assert private.down() == {"broker": False, "database": False}


def test_killed_servers_are_recovered_and_data_survives(private):
    endpoints, _ = private.up()
    with connect(endpoints.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivor (x int)")
    for rec in (private.broker.record(), private.postgres.record()):
        os.kill(rec.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert not private.status()["broker"]["running"]

    endpoints, started = private.up()  # stale pid files, lock file and orphans are cleared
    assert started == ["broker", "database"]
    with connect(endpoints.database_url) as conn:
        assert conn.execute("SELECT to_regclass('survivor')").fetchone()[0] == "survivor"


def test_interrupted_initdb_is_redone(private):
    data_dir = private.postgres.data_dir
    data_dir.mkdir(parents=True)
    (data_dir / "half-written").write_text("")
    endpoints, _ = private.up()
    assert check_database(endpoints.database_url, 2)


def test_port_already_taken_is_named(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        st = Stack(isolated_settings(tmp_path / "state", broker_port=port))
        with pytest.raises(StackError, match=rf"port {port} .* WORKBENCH_BROKER_PORT"):
            st.up()
        assert not st.status()["broker"]["running"]


def test_database_port_taken_stops_the_broker_it_started(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        st = Stack(isolated_settings(tmp_path / "state", database_port=port))
        with pytest.raises(StackError, match="WORKBENCH_DATABASE_PORT"):
            st.up()
        status = st.status()
        assert not status["broker"]["running"] and not status["database"]["running"]


def test_missing_broker_binary_is_a_clear_error(tmp_path):
    st = Stack(isolated_settings(tmp_path / "state", broker_bin=str(tmp_path / "no-tansu")))
    with pytest.raises(StackError, match=r"WORKBENCH_BROKER_BIN=.*not an executable"):
        st.up()


def test_external_parts_are_checked_not_started(tmp_path, stack):
    _, endpoints = stack
    settings = isolated_settings(
        tmp_path / "state",
        bootstrap_servers=endpoints.bootstrap_servers,
        database_url=endpoints.database_url,
    )
    st = Stack(settings)
    got, started = st.up()
    assert started == [] and got == endpoints
    assert not (tmp_path / "state" / "postgres").exists()
    status = st.status()
    assert status["broker"] == {
        "embedded": False,
        "running": True,
        "address": endpoints.bootstrap_servers,
    }
