"""The embedded stack: real Tansu and PostgreSQL processes, started, reused, killed, stopped."""

import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
from conftest import isolated_settings

from workbench import job, kafka
from workbench.errors import DatabaseUnavailable, StackError
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
    assert kafka.check_broker(endpoints.broker, 2) is not None
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


def methods(hba: Path) -> set[str]:
    """The authentication methods of a pg_hba.conf's entries."""
    lines = hba.read_text().splitlines()
    return {line.split()[-1] for line in lines if line.strip() and not line.startswith("#")}


def refused(url: str) -> str:
    with pytest.raises(DatabaseUnavailable) as info:
        check_database(url, 2)
    return str(info.value)


def test_every_database_connection_needs_the_password(tmp_path):
    """No trust: a local user without the password, or with a wrong one, is refused (the
    superuser could otherwise run programs as the server's user)."""
    settings = isolated_settings(tmp_path / "state", reader_password="reader-secret")
    st = Stack(settings)
    try:
        endpoints, _ = st.up()
        secret = st.postgres.secret_path
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) >= 32
        assert methods(st.postgres.data_dir / "pg_hba.conf") == {"scram-sha-256"}
        assert check_database(endpoints.database_url, 2)  # the workbench's own URL has it
        host = endpoints.database_url.split("@", 1)[1]
        assert "password" in refused(f"postgresql://postgres@{host}")
        assert "password" in refused(f"postgresql://postgres:wrong@{host}")
        job.prepare(settings, endpoints)  # creates the reader role with its password
        assert check_database(f"postgresql://workbench_reader:reader-secret@{host}", 2)
        assert "password" in refused(f"postgresql://workbench_reader:@{host}")
        assert "password" in refused(f"postgresql://workbench_reader:nope@{host}")
        status = st.status()["database"]
        assert secret.read_text().strip() not in json.dumps(status)  # printed redacted
        assert status["password_file"] == str(secret)
    finally:
        st.down()


def test_a_data_directory_that_trusted_everyone_gets_a_password(private):
    """As an earlier version left it: trust for every local connection, no secret file."""
    private.up()
    private.down()
    hba = private.postgres.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
    private.postgres.secret_path.unlink()
    endpoints, _ = private.up()
    assert methods(hba) == {"scram-sha-256"}
    assert private.postgres.password() and check_database(endpoints.database_url, 2)
    assert "password" in refused(f"postgresql://postgres@{endpoints.database_url.split('@')[1]}")


def test_up_after_down_takes_the_same_ports_again(private):
    """A processor or notebook that outlives `workbench down`/`up` finds the servers where
    they were (it used to retry the database's old port until it gave up)."""
    before, _ = private.up()
    private.down()
    after, started = private.up()
    assert started == ["broker", "database"]
    assert after == before


def test_a_producer_says_at_once_that_the_broker_went_away(private, caplog):
    """Not a minute later, when its messages time out."""
    endpoints, _ = private.up()
    producer = kafka.make_producer(endpoints.broker)
    kafka.ensure_topics(endpoints.broker, ["gone"], 1)
    producer.produce("gone", b"before")
    assert producer.flush(10) == 0
    caplog.set_level(logging.WARNING, "workbench.kafka")
    os.kill(private.broker.record().pid, signal.SIGKILL)
    producer.produce("gone", b"after")
    deadline = time.monotonic() + 10
    while "does not answer" not in caplog.text and time.monotonic() < deadline:
        producer.poll(0.2)
    assert "does not answer" in caplog.text and endpoints.bootstrap_servers in caplog.text
    producer.purge()
