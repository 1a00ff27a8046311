"""The gateway section of ``workbench bench``: readings per second through a real
``workbench gateway`` process, as ratios against producing the same readings straight to
the broker from the benchmark process (the baseline: what Kafka takes without HTTP).

Cases, interleaved and repeated like the other sections: JSON and Avro bodies of 100
readings, and one reading per request, each with several keep-alive connections
(closed loop: as fast as the gateway answers); then single readings at a steady rate
(open loop, 500 requests/s by default) for the latency a device sees.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
import threading
from typing import Any

import orjson

from workbench import kafka
from workbench.bench import interleaved, produce_all
from workbench.config import Settings
from workbench.errors import StackError
from workbench.gateway import load
from workbench.gateway.ingest import AVRO_MANY, JSON, avro_array
from workbench.schemas import ReadingEncoder

log = logging.getLogger(__name__)

BATCH = 100


def _records(n: int, machines: int = 1000) -> list[dict[str, Any]]:
    """``n`` readings of ``machines`` machines, a second apart per machine."""
    t0 = 1_767_225_600_000
    return [
        {
            "machine_id": f"m-{i % machines:04d}",
            "ts": t0 + (i // machines) * 1000,
            "sensor_type": "pressure",
            "value": 4.0 + (i % 97) / 100,
            "status_code": 0,
            "seq": i // machines,
        }
        for i in range(n)
    ]


class _GatewayProcess:
    """``workbench gateway --port 0`` on ``topic``, with a key of its own and no rate limit."""

    def __init__(self, settings: Settings, broker: kafka.Endpoint, topic: str) -> None:
        self.key = secrets.token_urlsafe(16)
        env = os.environ | settings.to_env() | {
            "WORKBENCH_BOOTSTRAP_SERVERS": broker.bootstrap,
            "WORKBENCH_TOPIC_RAW": topic,
            "WORKBENCH_GATEWAY_API_KEYS": self.key,
            "WORKBENCH_GATEWAY_RATE": "1e12",
        }  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "gateway", "--port", "0"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        lines = []
        for line in self.proc.stderr:
            lines.append(line)
            if found := re.search(r"gateway on (http://[\d.]+:\d+)", line):
                self.url = found.group(1)
                break
        else:
            raise StackError("the benchmark's gateway did not start:\n" + "".join(lines[-10:]))
        # keep reading its log so that it never blocks on a full pipe
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def bench_gateway(
    settings: Settings,
    broker: kafka.Endpoint,
    topic_prefix: str,
    readings: int = 100_000,
    singles: int = 5_000,
    repeats: int = 3,
    steady_rate: float = 500.0,
    steady_s: float = 10.0,
) -> dict[str, Any]:
    """The gateway section of the benchmark (see the module's docstring)."""
    topic = f"{topic_prefix}.gateway"
    kafka.ensure_topics(broker, [topic], settings.partitions)
    records = _records(readings)
    enc = ReadingEncoder()
    encoded = [(r["machine_id"].encode(), enc.encode(r)) for r in records]
    gateway = _GatewayProcess(settings, broker, topic)
    url = gateway.url + "/v1/telemetry"
    headers = {"X-API-Key": gateway.key, "X-Run-Id": "bench"}

    def prepared(bodies: list[bytes], content_type: str) -> list[bytes]:
        return [load.request_bytes(url, b, content_type, headers) for b in bodies]

    chunks = [records[i : i + BATCH] for i in range(0, readings, BATCH)]
    as_json = prepared([orjson.dumps(c) for c in chunks], JSON)
    as_avro = prepared(
        [avro_array([v for _, v in encoded[i : i + BATCH]]) for i in range(0, readings, BATCH)],
        AVRO_MANY,
    )
    one_by_one = prepared([orjson.dumps(r) for r in records[:singles]], JSON)
    latencies: dict[str, load.LoadResult] = {}

    def direct() -> tuple[int, float]:
        return produce_all(broker, topic, encoded)

    def through(name: str, requests: list[bytes], per: int, connections: int):
        def run() -> tuple[int, float]:
            result = load.closed_loop(gateway.url, requests, connections)
            refused = {s: n for s, n in result.statuses.items() if s != 202}
            if refused:
                raise StackError(f"the benchmark's gateway refused requests: {refused}")
            latencies[name] = result
            return len(requests) * per, result.seconds

        return run

    cases = {
        "baseline: produce directly": direct,
        f"gateway, JSON, {BATCH} per request": through("json", as_json, BATCH, 8),
        f"gateway, Avro, {BATCH} per request": through("avro", as_avro, BATCH, 8),
        "gateway, JSON, 1 per request": through("single", one_by_one, 1, 16),
    }
    try:
        rows = [
            {
                "name": name,
                "readings": n,
                "seconds": round(sec, 3),
                "readings_per_s": round(rate),
                "ratio": round(ratio, 3),
            }
            for name, n, sec, rate, ratio in interleaved(cases, repeats)
        ]
        steady_n = int(steady_rate * steady_s)
        steady = load.open_loop(
            gateway.url, (one_by_one * (steady_n // len(one_by_one) + 1))[:steady_n], steady_rate
        )
    finally:
        gateway.stop()
    for row, key in zip(rows[1:], ("json", "avro", "single"), strict=True):
        lat = latencies[key]
        row |= {"p50_ms": lat.percentile_ms(0.5), "p99_ms": lat.percentile_ms(0.99)}
    return {
        "readings": readings,
        "repeats": repeats,
        "rows": rows,
        "batched_readings_per_s": rows[1]["readings_per_s"],
        "single_readings_per_s": rows[3]["readings_per_s"],
        "steady": {
            "rate_per_s": steady_rate,
            "requests": steady.requests,
            "accepted": steady.statuses.get(202, 0),
            **{f"p{q}_ms": steady.percentile_ms(q / 100) for q in (50, 90, 99)},
            "max_ms": steady.percentile_ms(1.0),
        },
    }
