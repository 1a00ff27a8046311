"""The processor's Prometheus metrics: scraped over HTTP from a real `workbench process`
(one worker, and two) on the session stack, parsed with prometheus_client's parser, and
compared with what the run stored; plus the pieces of workbench.metrics on their own.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import WORKBENCH, cli_env
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families
from test_cli import workbench

from workbench.config import Settings
from workbench.errors import MetricsUnavailable
from workbench.grafana import dashboards as boards
from workbench.grafana.promql import metric_names as promql_names
from workbench.metrics import (
    LATENCY_BUCKETS,
    SCRAPE_SERIES,
    BulkHistogram,
    ProcessorMetrics,
    exported_names,
    metric_names,
    new_registry,
    serve,
)
from workbench.runs import RunRegistry
from workbench.sinks.postgres import connect

P = "workbench_processor_"
#: event-time seconds of the simulated runs, and the allowed lateness (Settings' default)
DURATION_S, LATENESS_S = 20, Settings().allowed_lateness_s
CHAOS = "malformed=0.03,latency=4,duplicate=0.02"


def free_port(count: int = 1) -> int:
    """A port with ``count - 1`` free ports after it (free when asked; the kernel hands
    out ephemeral ports in order, so a clash with another test is unlikely)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + count > 65535:
            continue
        taken = False
        for other in range(port + 1, port + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", other))
                except OSError:
                    taken = True
        if not taken:
            return port
    raise RuntimeError("no free port range")


@dataclass
class Scrape:
    """One /metrics answer: sample values by (name, labels)."""

    samples: dict[tuple[str, frozenset], float]
    types: dict[str, str]

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def by(self, name: str, label: str) -> dict[str, float]:
        return {dict(k)[label]: v for (n, k), v in self.samples.items() if n == name}

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(samples, types)


def simulate(settings: Settings, machines: int, seed: int) -> tuple[dict, int]:
    """A chaos run dated from now (malformed messages: dead letters; delays: late readings;
    duplicates); its summary and the epoch ms it starts at."""
    start_ms = int(time.time()) * 1000
    start = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC).isoformat()
    sim = workbench(settings, "simulate", "--machines", str(machines), "--duration",
                    str(DURATION_S), "--seed", str(seed), "--chaos", CHAOS, "--start", start,
                    "--json")  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    return json.loads(sim.stdout), start_ms


def caught_up(scrapes: list[Scrape], partitions: int) -> bool:
    """Every partition's lag reported, by one scrape only, and 0."""
    lags = [s.by(f"{P}consumer_lag_messages", "partition") for s in scrapes]
    seen = [p for lag in lags for p in lag]
    return (
        sorted(seen) == [str(p) for p in range(partitions)]
        and all(v == 0 for lag in lags for v in lag.values())
        and sum(s.get(f"{P}consumed_total") or 0 for s in scrapes) > 0
    )


class Processing:
    """A `workbench process --metrics-port PORT ...` in the background; its output once
    stopped."""

    def __init__(self, settings: Settings, port: int, *args: str) -> None:
        # no idle advance of the watermark while the test looks at it
        env = cli_env(settings, WORKBENCH_IDLE_TIMEOUT_S="600")
        self.proc = subprocess.Popen([WORKBENCH, "process", "--metrics-port", str(port),
                                      "--json", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.out, self.err = "", ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.out, self.err = self.proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out, self.err = self.proc.communicate()


@pytest.fixture
def processing() -> Iterator[list[Processing]]:
    """Processes started by the test (``Processing``), stopped after it."""
    started: list[Processing] = []
    yield started
    for p in started:
        p.stop()


def wait_caught_up(
    urls: list[str], partitions: int, p: Processing, timeout_s: float = 240
) -> tuple[list[Scrape], float, float]:
    """Scrape ``urls`` until every partition's lag is 0; the scrapes and the wall clock
    just before and after them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert p.proc.poll() is None, p.proc.communicate()[1]
        before = time.time()
        try:
            scrapes = [scrape(u) for u in urls]
        except OSError:  # not listening yet (the workers are still starting)
            time.sleep(0.5)
            continue
        if caught_up(scrapes, partitions):
            return scrapes, before, time.time()
        time.sleep(0.5)
    raise AssertionError(f"not caught up in {timeout_s}s: {[s.samples for s in scrapes]}")


def max_event_s(url: str, run_id: str) -> float:
    with connect(url) as conn:
        (newest,) = conn.execute("SELECT max(ts) FROM readings WHERE run_id = %s",
                                 (run_id,)).fetchone()  # fmt: skip
    return newest.timestamp()


def test_a_processor_serves_its_counts_lag_latencies_and_watermark_delay(
    settings, endpoints, processing
) -> None:
    summary, _start_ms = simulate(settings, machines=6, seed=11)
    port = free_port()
    p = Processing(settings, port)
    processing.append(p)
    url = f"http://127.0.0.1:{port}/metrics"
    (m,), before, after = wait_caught_up([url], settings.partitions, p)

    # the counters are the run's counts in the database
    counts = RunRegistry(endpoints.database_url).counts(summary["run_id"], full=True)
    assert m.get(f"{P}stored_total") == counts.stored > 0
    assert m.get(f"{P}dead_lettered_total") == counts.deadlettered == summary["malformed"] > 0
    assert m.get(f"{P}late_total") == counts.late > 0
    assert m.get(f"{P}duplicates_total") == summary["duplicates"] > 0
    consumed = m.get(f"{P}consumed_total")
    assert consumed == counts.stored + counts.deadlettered + summary["duplicates"]
    assert m.types[f"{P}consumed"] == "counter" and m.types[f"{P}late"] == "counter"

    # lag: a gauge per partition, 0 now that everything is stored and committed
    assert m.types[f"{P}consumer_lag_messages"] == "gauge"
    assert m.by(f"{P}consumer_lag_messages", "partition") == {
        str(i): 0.0 for i in range(settings.partitions)
    }

    # histograms with observations: a batch through the steps, a write, every message
    for stage in ("process", "write"):
        n = m.get(f"{P}batch_duration_seconds_count", stage=stage)
        assert n and n >= 1, stage
        assert m.get(f"{P}batch_duration_seconds_bucket", stage=stage, le="+Inf") == n
        assert m.get(f"{P}batch_duration_seconds_sum", stage=stage) > 0
    assert m.types[f"{P}end_to_end_latency_seconds"] == "histogram"
    seen = m.get(f"{P}end_to_end_latency_seconds_count")
    assert seen is not None and seen >= consumed  # end-of-run markers have a time too
    assert m.get(f"{P}end_to_end_latency_seconds_bucket", le="+Inf") == seen
    buckets = [m.get(f"{P}end_to_end_latency_seconds_bucket", le=str(b)) for b in LATENCY_BUCKETS]
    assert buckets == sorted(buckets), "cumulative"
    assert m.get(f"{P}end_to_end_latency_seconds_sum") > 0

    # watermark delay: each partition with data; the wall clock minus (its newest event
    # time - the allowed lateness), within the second the gauge may be old
    delays = m.by(f"{P}watermark_delay_seconds", "partition")
    assert set(delays) == {str(i) for i in summary["partitions"]}
    newest = max_event_s(endpoints.database_url, summary["run_id"])
    for partition, delay in delays.items():
        # a partition's newest reading is its machines' last (a few seconds at most before
        # the run's last: malformed ones are not stored)
        low = before - 1.0 - (newest - LATENESS_S)
        high = after - (newest - 5.0 - LATENESS_S)
        assert low <= delay <= high, (partition, low, delay, high)

    # every metric the dashboard's Pipeline health row reads is here (or Prometheus's own)
    for board in boards.load_dashboards():
        for q in board.promql:
            for name in promql_names(q.expr):
                if not name.startswith("workbench_gateway_"):
                    assert name in m.names | SCRAPE_SERIES, (q.panel, name)

    p.stop()
    assert p.proc.returncode == 0, p.err
    assert f"serving metrics at {url}" in p.err
    assert json.loads(p.out)["consumed"] == consumed


def test_each_worker_serves_its_own_partitions_on_its_own_port(
    settings, endpoints, processing
) -> None:
    summary, _start_ms = simulate(settings, machines=8, seed=12)
    port = free_port(2)
    p = Processing(settings, port, "--workers", "2")
    processing.append(p)
    urls = [f"http://127.0.0.1:{port + i}/metrics" for i in range(2)]
    scrapes, _before, _after = wait_caught_up(urls, settings.partitions, p)
    counts = RunRegistry(endpoints.database_url).counts(summary["run_id"])
    assert sum(s.get(f"{P}stored_total") for s in scrapes) == counts.stored > 0
    assert sum(s.get(f"{P}dead_lettered_total") for s in scrapes) == counts.deadlettered
    # each worker reports the partitions it owns, and only those (caught_up: no overlap)
    owned = [set(s.by(f"{P}consumer_lag_messages", "partition")) for s in scrapes]
    assert all(owned) and not owned[0] & owned[1]
    p.stop()
    assert p.proc.returncode == 0, p.err
    for u in urls:
        assert f"serving metrics at {u}" in p.err


def test_a_taken_metrics_port_is_one_clear_error(settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = workbench(settings, "process", "--idle-timeout", "1", "--metrics-port", str(port))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [f"workbench: error: cannot serve metrics on 127.0.0.1:{port}: "
                      "Address already in use"]  # fmt: skip


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_bad_metrics_port_is_refused(tmp_path, port: str) -> None:
    from conftest import isolated_settings

    done = workbench(isolated_settings(tmp_path), "process", "--metrics-port", port)
    assert done.returncode == 2 and "--metrics-port" in done.stderr
    assert "not a port from 0 (none) to 65535" in done.stderr


# --- workbench.metrics on its own -------------------------------------------------------


def test_bulk_histogram_matches_prometheus_clients_histogram() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([
        rng.exponential(2.0, 5000), np.array(LATENCY_BUCKETS),  # values on the bounds
        np.array([-1.0, 0.0, 1e6]),
    ])  # fmt: skip
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("lat_seconds", "x", LATENCY_BUCKETS, ours)
    for chunk in np.array_split(values, 7):
        bulk.observe(chunk)
    bulk.observe(np.array([np.nan, np.inf]))  # not finite: left out
    reference = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS, registry=theirs)
    for v in values.tolist():
        reference.observe(v)
    for le in [*map(str, LATENCY_BUCKETS), "+Inf"]:
        labels = {"le": le}
        assert ours.get_sample_value("lat_seconds_bucket", labels) == theirs.get_sample_value(
            "lat_seconds_bucket", labels
        ), le
    assert ours.get_sample_value("lat_seconds_count") == values.size
    assert ours.get_sample_value("lat_seconds_sum") == pytest.approx(
        theirs.get_sample_value("lat_seconds_sum")
    )


def test_a_revoked_partition_loses_its_series() -> None:
    registry = new_registry()
    m = ProcessorMetrics(registry)
    m.partitions({0: 7, 1: 3}, {0: 2.5, 1: 1.0})
    m.partitions({1: 0}, {})
    lag = f"{P}consumer_lag_messages"
    assert registry.get_sample_value(lag, {"partition": "0"}) is None
    assert registry.get_sample_value(lag, {"partition": "1"}) == 0
    assert registry.get_sample_value(f"{P}watermark_delay_seconds", {"partition": "0"}) is None


def test_serve_answers_over_http_and_a_taken_port_is_refused() -> None:
    registry = new_registry()
    ProcessorMetrics(registry).consumed_batch(5, 0.01)
    server = serve(registry, 0)
    try:
        m = scrape(server.url)
        assert m.get(f"{P}consumed_total") == 5
        assert m.get("process_resident_memory_bytes") > 0  # the process collector
        with pytest.raises(MetricsUnavailable, match=f"127.0.0.1:{server.port}"):
            serve(new_registry(), server.port)
    finally:
        server.close()


def test_exported_names_include_labelled_metrics_before_they_have_values() -> None:
    names = exported_names()
    assert {f"{P}consumer_lag_messages", f"{P}watermark_delay_seconds", f"{P}consumed_total",
            f"{P}end_to_end_latency_seconds_bucket", "up"} <= names  # fmt: skip
    assert f"{P}consumed" not in names, "a counter's series end in _total"
    assert metric_names(new_registry()) < names
