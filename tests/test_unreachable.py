"""A configured broker or database that does not answer: one clear line, within seconds."""

import subprocess
import time

import pytest
from conftest import WORKBENCH, cli_env, isolated_settings

from workbench import kafka
from workbench.errors import BrokerUnavailable, DatabaseUnavailable
from workbench.sinks.postgres import check_database
from workbench.stack import Stack


def test_unreachable_broker_raises_naming_the_address():
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        kafka.check_broker(kafka.Endpoint("127.0.0.1:1"), timeout_s=2)
    assert time.monotonic() - t0 < 10


def test_unreachable_database_raises_naming_the_url_without_password():
    with pytest.raises(DatabaseUnavailable) as err:
        check_database("postgresql://me:secret@127.0.0.1:1/db", timeout_s=2)
    assert "127.0.0.1:1" in str(err.value) and "secret" not in str(err.value)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("WORKBENCH_BOOTSTRAP_SERVERS", "127.0.0.1:1", "Kafka broker at 127.0.0.1:1"),
        ("WORKBENCH_DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/x", "127.0.0.1:1/x"),
    ],
)
def test_cli_run_against_unreachable_server_prints_one_line(
    tmp_path, stack, variable, value, named
):
    # the other part points at the (working) session stack, so only one is unreachable
    _, endpoints = stack
    settings = isolated_settings(
        tmp_path / "state",
        bootstrap_servers=endpoints.bootstrap_servers,
        database_url=endpoints.database_url,
        connect_timeout_s=2.0,
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [WORKBENCH, "run", "--duration", "1", "--json"],
        env=cli_env(settings, **{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("workbench: error: cannot reach") and named in lines[-1]
    assert "Traceback" not in proc.stderr and "pw@" not in proc.stderr


def test_status_reports_an_unreachable_external_part_as_not_running(tmp_path):
    settings = isolated_settings(
        tmp_path / "state",
        bootstrap_servers="127.0.0.1:1",
        database_url="postgresql://u@127.0.0.1:1/x",
        connect_timeout_s=1.0,
    )
    status = Stack(settings).status()
    assert status["broker"]["running"] is False and status["database"]["running"] is False
