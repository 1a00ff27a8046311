"""The HTTP gateway against a real broker: what it takes, what it refuses and why, and that
a reading it acknowledged is on the raw topic (and nothing of a refused request is)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import WORKBENCH, cli_env, isolated_settings, own_settings
from test_cli import workbench

from workbench.config import Settings
from workbench.gateway.ingest import AVRO_MANY, avro_array
from workbench.schemas import READING
from workbench.stack import Stack

TS = 1_767_225_600_000


def reading(machine: str = "m-0001", seq: int = 0, **fields) -> dict:
    return {"machine_id": machine, "ts": TS + seq * 1000, "sensor_type": "pressure",
            "value": 4.2 + seq, "status_code": 0, "seq": seq} | fields  # fmt: skip


@dataclasses.dataclass
class Gateway:
    url: str
    process: subprocess.Popen
    settings: Settings

    def post(self, body, key: str | None = "k1", run_id: str | None = None, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["X-API-Key"] = key
        if run_id is not None:
            headers["X-Run-Id"] = run_id
        if isinstance(body, bytes):
            return httpx.post(self.url + "/v1/telemetry", content=body, headers=headers, **kw)
        return httpx.post(self.url + "/v1/telemetry", json=body, headers=headers, **kw)


@contextlib.contextmanager
def running_gateway(settings: Settings, **env: str) -> Iterator[Gateway]:
    """``workbench gateway --port 0`` as a subprocess; its URL from its log line."""
    proc = subprocess.Popen(
        [WORKBENCH, "gateway", "--port", "0"],
        env=cli_env(settings, **env), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if found := re.search(r"gateway on (http://[\d.]+:\d+)", line):
                break
        else:
            raise AssertionError("the gateway did not start:\n" + "".join(lines))
        url = found.group(1)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the gateway never became ready"
            time.sleep(0.2)
        yield Gateway(url, proc, settings)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def gateway(stack, tmp_path_factory) -> Iterator[Gateway]:
    settings = own_settings(*stack)
    keys = tmp_path_factory.mktemp("keys") / "keys.toml"
    made = workbench(
        settings, "gateway", "key", "line-1", "--machines", "m-0001,m-0002", "--json",
        WORKBENCH_GATEWAY_KEYS_FILE=str(keys),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    restricted = json.loads(made.stdout)["key"]
    env = {
        "WORKBENCH_GATEWAY_API_KEYS": "k1,k2,slow",
        "WORKBENCH_GATEWAY_KEYS_FILE": str(keys),
        "WORKBENCH_GATEWAY_RATE": "1000",
        "WORKBENCH_GATEWAY_MAX_BODY_BYTES": "200000",
    }
    with running_gateway(settings, **env) as gw:
        gw.restricted = restricted
        gw.keys_file = keys
        yield gw


def messages_of(settings: Settings, bootstrap: str, run_id: str, timeout_s: float = 10.0):
    """The raw topic's messages of ``run_id``: (key, value, headers) in each partition's order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        parts = consumer.list_topics(settings.topic_raw, timeout=10).topics[settings.topic_raw]
        consumer.assign([TopicPartition(settings.topic_raw, p, 0) for p in parts.partitions])
        found, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < timeout_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            quiet_since = time.monotonic() - timeout_s + 1.0  # a second more after each message
            headers = dict(msg.headers() or [])
            if headers.get("run_id") == run_id.encode():
                found.append((msg.key(), msg.value(), headers))
        return found
    finally:
        consumer.close()


def test_a_json_batch_is_acknowledged_and_on_the_raw_topic(gateway, endpoints):
    run_id = f"gw-{uuid.uuid4().hex[:8]}"
    batch = [reading(seq=0), reading(seq=1, value=None), reading("m-0002", sensor_type="current")]
    r = gateway.post(batch, run_id=run_id)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 3 and r.json()["run_id"] == run_id
    got = messages_of(gateway.settings, endpoints.bootstrap_servers, run_id)
    decoded = sorted(
        (READING.decode(v) for _, v, _ in got), key=lambda x: (x["machine_id"], x["seq"])
    )
    assert [(d["machine_id"], d["seq"], d["value"]) for d in decoded] == [
        ("m-0001", 0, 4.2),
        ("m-0001", 1, None),
        ("m-0002", 0, 4.2),
    ]
    assert all(key == READING.decode(v)["machine_id"].encode() for key, v, _ in got)
    # a single reading as a JSON object, value and status left out
    one = {k: v for k, v in reading(seq=5).items() if k not in ("value", "status_code")}
    assert gateway.post(one, run_id=run_id).status_code == 202


def test_avro_readings_reach_the_topic_byte_for_byte(gateway, endpoints):
    run_id = f"gw-{uuid.uuid4().hex[:8]}"
    values = [READING.encode(reading(seq=i)) for i in range(5)]
    one = gateway.post(values[0], run_id=run_id, headers={"Content-Type": "application/avro"})
    assert one.status_code == 202, one.text
    many = gateway.post(avro_array(values[1:]), run_id=run_id, headers={"Content-Type": AVRO_MANY})
    assert many.status_code == 202 and many.json()["accepted"] == 4, many.text
    got = messages_of(gateway.settings, endpoints.bootstrap_servers, run_id)
    assert sorted(v for _, v, _ in got) == sorted(values)


def test_refused_requests_say_why_and_produce_nothing(gateway, endpoints):
    run_id = f"gw-{uuid.uuid4().hex[:8]}"
    post = gateway.post
    wrong_types = [reading(), reading(seq=1, ts="yesterday", value="hot")]
    no_seq = {k: v for k, v in reading().items() if k != "seq"}
    cases = {
        "missing key": post([reading()], key=None, run_id=run_id),
        "wrong key": post([reading()], key="guess", run_id=run_id),
        "bad json": post(b"[{", run_id=run_id, headers={"Content-Type": "application/json"}),
        "wrong types": post(wrong_types, run_id=run_id),
        "unknown sensor": post([reading(sensor_type="smell")], run_id=run_id),
        "missing field": post([no_seq], run_id=run_id),
        "other machine": post([reading("m-0009")], key=gateway.restricted, run_id=run_id),
        "oversize": post([reading(seq=i) for i in range(3000)], run_id=run_id),
        "content type": post(b"x", run_id=run_id, headers={"Content-Type": "text/csv"}),
        "broken avro": post(b"\x04\x06abc", run_id=run_id, headers={"Content-Type": AVRO_MANY}),
    }
    status = {name: r.status_code for name, r in cases.items()}
    assert status == {
        "missing key": 401, "wrong key": 401, "bad json": 400, "wrong types": 422,
        "unknown sensor": 422, "missing field": 422, "other machine": 403, "oversize": 413,
        "content type": 415, "broken avro": 400,
    }  # fmt: skip
    errors = cases["wrong types"].json()["errors"]
    assert {tuple(e["loc"]) for e in errors} == {("body", 1, "ts"), ("body", 1, "value")}
    assert "epoch milliseconds" in next(e["msg"] for e in errors if e["loc"][2] == "ts")
    sensor = cases["unknown sensor"].json()["errors"][0]
    assert sensor["loc"] == ["body", 0, "sensor_type"] and "temperature" in sensor["msg"]
    assert cases["missing field"].json()["errors"][0]["loc"] == ["body", 0, "seq"]
    assert "m-0009" in cases["other machine"].json()["detail"]
    assert "X-API-Key" in cases["missing key"].json()["detail"]
    # the restricted key may send for its own machines
    assert post([reading("m-0002")], key=gateway.restricted, run_id=run_id).status_code == 202
    got = messages_of(gateway.settings, endpoints.bootstrap_servers, run_id)
    assert [READING.decode(v)["machine_id"] for _, v, _ in got] == ["m-0002"]


def test_a_key_over_its_rate_gets_429_with_retry_after(gateway):
    batch = [reading(seq=i) for i in range(600)]  # the rate is 1000 readings/s, one second saved
    assert gateway.post(batch, key="slow").status_code == 202
    over = gateway.post(batch, key="slow")
    assert over.status_code == 429, over.text
    assert int(over.headers["Retry-After"]) >= 1 and "rate" in over.json()["detail"]
    # other keys have buckets of their own
    assert gateway.post(batch[:10], key="k2").status_code == 202


def test_health_readiness_metrics_and_docs(gateway):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "/readyz").json()["status"] == "ready"
    gateway.post([reading(seq=99)], key="k2")
    text = httpx.get(gateway.url + "/metrics").text
    assert re.search(r'workbench_gateway_requests_total\{status="202"\} [1-9]', text)
    assert re.search(r'workbench_gateway_readings_total\{outcome="accepted"\} [1-9]', text)
    assert "workbench_gateway_request_seconds_bucket" in text
    spec = httpx.get(gateway.url + "/openapi.json").json()
    assert "/v1/telemetry" in spec["paths"]
    assert httpx.get(gateway.url + "/docs").status_code == 200


def test_the_keys_file_holds_hashes_only(gateway):
    text = gateway.keys_file.read_text()
    assert gateway.restricted not in text and "sha256" in text and "m-0001" in text


def test_a_gateway_without_keys_refuses_to_start(tmp_path):
    settings = isolated_settings(tmp_path / "state")
    r = workbench(settings, "gateway", "--port", "0", timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("workbench: error:") and "WORKBENCH_GATEWAY_API_KEYS" in r.stderr
    assert "Traceback" not in r.stderr


def test_broker_down_answers_503_and_acknowledges_nothing(tmp_path):
    settings = isolated_settings(tmp_path / "state")
    stack = Stack(settings)
    try:
        with running_gateway(
            settings, WORKBENCH_GATEWAY_API_KEYS="k1", WORKBENCH_GATEWAY_ACK_TIMEOUT_S="2"
        ) as gw:
            assert gw.post([reading()]).status_code == 202
            stack.broker.stop()
            r = gw.post([reading(seq=1), reading(seq=2)])
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] and r.json()["delivered"] == 0
            assert "send them again" in r.json()["detail"]
            assert httpx.get(gw.url + "/readyz").status_code == 503
            assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        stack.down()


def test_a_chaos_run_through_the_gateway_closes_the_books(stack, tmp_path):
    settings = own_settings(*stack)
    args = ["--machines", "5", "--duration", "30", "--seed", "3",
            "--chaos", "malformed=0.02,spike=0.002,duplicate=0.01"]  # fmt: skip
    with running_gateway(settings, WORKBENCH_GATEWAY_API_KEYS="k1") as gw:
        r = workbench(settings, "run", *args, "--via", gw.url, "--json",
                      WORKBENCH_GATEWAY_API_KEYS="k1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["reconciled"] and s["via"] == gw.url
    assert s["rejected"] == s["chaos"]["malformed"] > 0
    assert s["stored"] + s["deadlettered"] + s["dropped"] + s["rejected"] == s["produced"]
    # the same factory straight to the broker sends the same bytes
    direct = workbench(settings, "simulate", *args, "--json")
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["sha256"] == s["sha256"]


def test_via_with_a_wrong_key_fails_with_one_line(stack):
    settings = own_settings(*stack)
    with running_gateway(settings, WORKBENCH_GATEWAY_API_KEYS="k1") as gw:
        r = workbench(settings, "simulate", "--machines", "2", "--duration", "5",
                      "--via", gw.url, "--api-key", "nope")  # fmt: skip
    assert r.returncode == 1
    assert "workbench: error:" in r.stderr and "401" in r.stderr and "Traceback" not in r.stderr


def test_keys_file_errors_name_the_file_and_entry(tmp_path: Path):
    from workbench.errors import FileConfigError
    from workbench.gateway.keys import KeyRing

    bad = tmp_path / "keys.toml"
    bad.write_text('[[key]]\nname = "x"\nsha256 = "nothex"\n')
    with pytest.raises(FileConfigError, match=r"keys.toml: \[\[key\]\] 1: sha256"):
        KeyRing.from_sources(None, bad)
