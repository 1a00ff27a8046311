"""``WORKBENCH_KAFKA_*`` end to end against a broker that only speaks TLS (see tls_broker):
the pipeline's commands run through it with the CA given, and stop with one clear line
without it; SASL credentials reach the broker, and its refusal is one line too."""

import json
import subprocess
import uuid

import pytest
from conftest import isolated_settings, read_topic, readings_in
from test_cli import workbench
from tls_broker import start_tls_broker

from workbench import kafka
from workbench.runs import RunRegistry
from workbench.stack import Endpoints
from workbench.stack.broker import resolve_binary


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    broker = start_tls_broker(tmp_path_factory.mktemp("tls"))
    yield broker
    broker.stop()


def external(tmp_path, bootstrap, database_url, **properties):
    """Settings for ``bootstrap`` with ``properties``, topics and a group of their own, and
    the session stack's database (an external one, as far as these settings go)."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    return isolated_settings(
        tmp_path / "state",
        bootstrap_servers=bootstrap,
        database_url=database_url,
        kafka_properties=properties,
        topic_raw=f"{tag}.raw", topic_clean=f"{tag}.clean", topic_alerts=f"{tag}.alerts",
        topic_deadletter=f"{tag}.deadletter", topic_chaos=f"{tag}.chaos",
        consumer_group=f"{tag}-processor",
    )  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("workbench: error: "), proc.stderr
    return last


def test_the_pipeline_runs_through_tls_with_the_ca_given(tmp_path, tls_broker, endpoints):
    """simulate, then process with two workers (each its own process, the properties
    handed over with the settings) publishing clean readings: every producer, consumer and
    admin client of both commands reaches the broker through TLS only."""
    settings = external(
        tmp_path, tls_broker.bootstrap, endpoints.database_url,
        **{"security.protocol": "SSL", "ssl.ca.location": str(tls_broker.ca)},
    )  # fmt: skip
    sim = workbench(settings, "simulate", "--machines", "2", "--duration", "4", "--json")
    assert sim.returncode == 0, sim.stderr
    produced = json.loads(sim.stdout)
    n = readings_in(2, 4)
    assert produced["produced"] == produced["delivered"] == n

    proc = workbench(settings, "process", "--workers", "2", "--idle-timeout", "3", "--json",
                     WORKBENCH_PUBLISH_CLEAN="reading")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["per_run"] == {produced["run_id"]: n}
    assert RunRegistry(endpoints.database_url).counts(produced["run_id"]).stored == n

    # the processors' own producer published every reading, read back through TLS
    broker = kafka.Endpoint(tls_broker.bootstrap, settings.kafka_properties)
    clean = read_topic(settings, Endpoints(broker, ""), settings.topic_clean, n)
    assert len(clean) == n

    status = workbench(settings, "status", "--json")
    assert json.loads(status.stdout)["broker"] == {
        "embedded": False,
        "running": True,
        "address": tls_broker.bootstrap,
        "properties": {"security.protocol": "SSL", "ssl.ca.location": str(tls_broker.ca)},
    }


def test_without_the_ca_the_broker_is_refused_in_one_line(tmp_path, tls_broker, endpoints):
    settings = external(
        tmp_path, tls_broker.bootstrap, endpoints.database_url, **{"security.protocol": "SSL"}
    )
    line = one_line_error(workbench(settings, "simulate", "--duration", "1"))
    assert f"cannot reach the Kafka broker at {tls_broker.bootstrap}" in line
    assert "certificate verify failed" in line and "ssl.ca.location" in line


def test_without_tls_the_broker_is_not_reached(tmp_path, tls_broker, endpoints):
    settings = external(tmp_path, tls_broker.bootstrap, endpoints.database_url)
    line = one_line_error(workbench(settings, "simulate", "--duration", "1",
                                    WORKBENCH_CONNECT_TIMEOUT_S="2"))  # fmt: skip
    assert f"cannot reach the Kafka broker at {tls_broker.bootstrap}" in line


def test_a_ca_file_that_is_not_there_names_its_variable(tmp_path, tls_broker, endpoints):
    missing = tmp_path / "no-ca.pem"
    settings = external(
        tmp_path, tls_broker.bootstrap, endpoints.database_url,
        **{"security.protocol": "SSL", "ssl.ca.location": str(missing)},
    )  # fmt: skip
    line = one_line_error(workbench(settings, "simulate", "--duration", "1"))
    assert line.startswith(f"workbench: error: WORKBENCH_KAFKA_SSL_CA_LOCATION='{missing}'")


def test_sasl_credentials_reach_the_broker_and_its_refusal_is_one_line(tmp_path, endpoints):
    """Tansu 0.6 with --authentication offers SCRAM only (its build has no PLAIN), and knows
    no user until one is created through the Kafka protocol, which that same broker refuses
    before authentication (and its storage keeps users in memory, gone with a restart): no
    client can log in to it. What can be shown is that the SCRAM exchange happens, over
    TLS, with the properties' credentials, and that the refusal is one clear line with no
    password in it."""
    broker = start_tls_broker(tmp_path / "broker", "--authentication")
    try:
        password = "pa55-" + uuid.uuid4().hex
        settings = external(
            tmp_path, broker.bootstrap, endpoints.database_url,
            **{"security.protocol": "SASL_SSL", "ssl.ca.location": str(broker.ca),
               "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice",
               "sasl.password": password},
        )  # fmt: skip
        proc = workbench(settings, "simulate", "--duration", "1")
        line = one_line_error(proc)
        assert "SASL authentication error" in line and "SCRAM" in line, line
        status = workbench(settings, "status")
        assert "sasl.password=***" in status.stdout and "sasl.username=alice" in status.stdout
        for out in (proc.stdout, proc.stderr, status.stdout, status.stderr):
            assert password not in out
    finally:
        broker.stop()


def test_tansu_cannot_serve_tls_itself_so_a_terminator_does():
    """Why tls_broker puts a TLS terminator in front of Tansu: the shipped Tansu refuses
    --cert with --key, and needs both for TLS. When this fails, Tansu can do it itself."""
    proc = subprocess.run(
        [resolve_binary(None), "broker", "--cert", "server.pem", "--key", "server.key"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode != 0 and "cannot be used with" in proc.stderr, proc.stderr
