"""Prometheus metrics: the processor's, and how a workbench process serves them.

Why: a Kafka consumer is watched by its lag and its rates, in Prometheus. ``workbench process
--metrics-port PORT`` serves the processor's metrics at ``http://HOST:PORT/metrics``; the
compose stack's Prometheus scrapes them and Grafana's *Pipeline health* row reads them.

Conventions every workbench component follows (the HTTP gateway too):

- a registry of the component's own (:func:`new_registry`, with the process and Python
  collectors), never prometheus_client's global one: one Python process (a test) may hold
  several processors;
- names ``workbench_<component>_<what>_<unit>``: counters end in ``_total`` (prometheus_client
  adds it), durations are in seconds; labels take few values (partition, stage, status),
  never a run id, machine or key; rates and quantiles are PromQL's job (``rate()``,
  ``histogram_quantile()``), not the process's;
- updated once per batch (or request), never per reading: the processor's hot path stays
  as it was. Many values at once go into a :class:`BulkHistogram` (numpy, one call);
- served by :func:`serve` (prometheus_client's HTTP server in a daemon thread), or mounted in
  an ASGI app with ``prometheus_client.make_asgi_app(registry)``;
- listed in :data:`COMPONENTS`, so that ``workbench grafana check`` knows every name a
  dashboard may use (:func:`exported_names`).

With ``--workers N`` each worker is a process of its own and serves its own metrics on
PORT + i (worker i); Prometheus scrapes each as a target of its own. prometheus_client's
multiprocess mode was not chosen: it keeps values in files shared through a directory that
must be set before import and cleaned after a worker dies, cannot remove a partition's
series when the partition moves to another worker, and takes no custom collector.

>>> registry = new_registry()
>>> m = ProcessorMetrics(registry)
>>> m.consumed_batch(3, 0.002)
>>> m.partitions({0: 5, 1: 0}, {0: 1.5})
>>> registry.get_sample_value("workbench_processor_consumed_total")
3.0
>>> registry.get_sample_value("workbench_processor_consumer_lag_messages", {"partition": "0"})
5.0
>>> "workbench_processor_end_to_end_latency_seconds_bucket" in metric_names(registry)
True
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from workbench.errors import MetricsUnavailable

if TYPE_CHECKING:
    from workbench.processor.writer import WriteResult

log = logging.getLogger(__name__)

#: How long one batch takes, per stage (seconds).
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0)  # fmt: skip
#: From a reading's producer time to its row in the database (seconds): tens of milliseconds
#: when caught up, minutes while a backlog drains.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 600.0)  # fmt: skip
#: The series names each metric type exports in the text format, by suffix.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
#: Series Prometheus itself adds to every target's scrape.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                           "scrape_samples_post_metric_relabeling",
                           "scrape_series_added"})  # fmt: skip


def new_registry() -> CollectorRegistry:
    """A registry of one component's own, with the process (CPU, memory, open files),
    platform and garbage-collector metrics every Prometheus client exports."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class BulkHistogram(Collector):
    """A histogram fed a numpy array of observations at a time.

    prometheus_client's :class:`~prometheus_client.Histogram` takes one value per call (a
    lock and a bucket search each): ten thousand readings a batch would cost milliseconds.
    Here a batch is one ``searchsorted`` and one ``bincount``; the exported family is the
    same (cumulative ``_bucket``, ``_count``, ``_sum``).

    >>> registry = CollectorRegistry()
    >>> h = BulkHistogram("wait_seconds", "Waits.", (0.1, 1.0), registry)
    >>> h.observe(np.array([0.05, 0.1, 0.5, 7.0]))
    >>> [registry.get_sample_value("wait_seconds_bucket", {"le": le})
    ...  for le in ("0.1", "1.0", "+Inf")]
    [2.0, 3.0, 4.0]
    >>> registry.get_sample_value("wait_seconds_sum")
    7.65
    """

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = np.array(sorted(float(b) for b in buckets), dtype=np.float64)
        self._le = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        self._counts = np.zeros(self._bounds.size + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()  # observed in one thread, collected in the server's
        registry.register(self)

    def observe(self, values: np.ndarray) -> None:
        """Add every finite value of ``values`` (a value equal to a bound counts in it)."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            return
        slots = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slots, minlength=self._counts.size)
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).astype(float).tolist(), self._sum
        yield HistogramMetricFamily(self.name, self.documentation,
                                    buckets=list(zip(self._le, cumulative, strict=True)),
                                    sum_value=total)  # fmt: skip

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


class ProcessorMetrics:
    """The processor's metrics, in ``registry`` (default: a new one).

    The consume thread calls :meth:`consumed_batch` once per ``consume()`` batch,
    :meth:`written` once per write whose results came back, and :meth:`partitions` about
    once a second; the HTTP server's thread reads them.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else new_registry()
        p = "workbench_processor"
        self.consumed = Counter(f"{p}_consumed", "Raw messages consumed: readings and "
                                "undecodable messages (end-of-run markers are not counted).",
                                registry=r)  # fmt: skip
        self.stored = Counter(f"{p}_stored", "Readings stored for the first time (one "
                              "redelivered and found stored counts as a duplicate).",
                              registry=r)  # fmt: skip
        self.duplicates = Counter(f"{p}_duplicates", "Readings absorbed as duplicates (seen "
                                  "before in the stream, or already stored).",
                                  registry=r)  # fmt: skip
        self.dead_lettered = Counter(f"{p}_dead_lettered", "Messages sent to the dead-letter "
                                     "topic and table with their reason.",
                                     registry=r)  # fmt: skip
        self.late = Counter(f"{p}_late", "Readings behind their run's watermark on arrival "
                            "(stored, flagged late).", registry=r)  # fmt: skip
        self.alert_events = Counter(f"{p}_alert_events", "Alert transitions (opened, updated, "
                                    "closed) stored.", registry=r)  # fmt: skip
        self.batch_duration = Histogram(
            f"{p}_batch_duration_seconds",
            "Time a batch takes: stage=process is one consume() batch decoded, validated and "
            "through the steps; stage=write is one write stored (two transactions) and "
            "published.",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._process = self.batch_duration.labels(stage="process")
        self._write = self.batch_duration.labels(stage="write")
        self.end_to_end = BulkHistogram(
            f"{p}_end_to_end_latency_seconds",
            "From a message's producer timestamp (ingest) to its readings visible in the "
            "database, per message.",
            LATENCY_BUCKETS,
            r,
        )
        self.lag = Gauge(f"{p}_consumer_lag_messages", "Messages in the partition past the "
                         "offset this processor committed (high watermark as of the last "
                         "fetch minus committed offset).", ["partition"],
                         registry=r)  # fmt: skip
        self.watermark_delay = Gauge(f"{p}_watermark_delay_seconds", "Wall clock minus the "
                                     "partition's newest event-time watermark (over its runs).",
                                     ["partition"], registry=r)  # fmt: skip
        self._lag_labels: set[str] = set()
        self._delay_labels: set[str] = set()

    def consumed_batch(self, messages: int, seconds: float) -> None:
        """One ``consume()`` batch: ``messages`` data messages, processed in ``seconds``."""
        if messages:
            self.consumed.inc(messages)
        self._process.observe(seconds)

    def written(self, result: WriteResult, latency_ms: np.ndarray) -> None:
        """One write's results are back (stored and published); ``latency_ms`` is each of
        its messages' producer time to visible, in milliseconds."""
        for counter, n in ((self.stored, result.stored), (self.duplicates, result.duplicates),
                           (self.dead_lettered, result.deadlettered), (self.late, result.late),
                           (self.alert_events, result.alert_events)):  # fmt: skip
            if n:
                counter.inc(n)
        self._write.observe(result.write_s)
        self.end_to_end.observe(np.maximum(latency_ms, 0.0) / 1000.0)

    def partitions(self, lag: Mapping[int, int], delay_s: Mapping[int, float]) -> None:
        """The assigned partitions' lag and watermark delay; a partition no longer in
        ``lag`` (revoked) or ``delay_s`` (no watermark yet) loses its series."""
        self._lag_labels = _set_gauge(self.lag, lag, self._lag_labels)
        self._delay_labels = _set_gauge(self.watermark_delay, delay_s, self._delay_labels)


def _set_gauge(gauge: Gauge, values: Mapping[int, float], before: set[str]) -> set[str]:
    now = {str(p): v for p, v in values.items()}
    for gone in before - now.keys():
        with contextlib.suppress(KeyError):
            gauge.remove(gone)
    for p, v in now.items():
        gauge.labels(partition=p).set(v)
    return set(now)


#: What makes each component's metrics in a registry: ``exported_names`` reads them all.
class GatewayMetrics:
    """The gateway's metrics, by HTTP status and reading outcome; updated per request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.requests = Counter(
            "workbench_gateway_requests", "Telemetry requests by HTTP status", ["status"],
            registry=r,
        )  # fmt: skip
        self.readings = Counter(
            "workbench_gateway_readings",
            "Readings by outcome: accepted (acknowledged), refused (4xx), failed (503)",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "workbench_gateway_request_seconds", "Telemetry request latency, body to answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )  # fmt: skip
        self.inflight = Gauge(
            "workbench_gateway_inflight_requests", "Requests waiting for the broker", registry=r
        )


COMPONENTS: list[Callable[[CollectorRegistry], Any]] = [ProcessorMetrics, GatewayMetrics]


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` exports, or will once a labelled metric has values
    (then by its type: a counter ``x`` as ``x_total`` and ``x_created``, a histogram's
    ``_bucket``, ...)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def exported_names() -> set[str]:
    """Every series name a workbench component exports, and those Prometheus adds to each
    scrape (``up``, ...): what a dashboard's PromQL may use."""
    names = set(SCRAPE_SERIES)
    for make in COMPONENTS:
        registry = new_registry()
        make(registry)
        names |= metric_names(registry)
    return names


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server answering in a daemon thread (any path, /metrics too)."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` on ``host:port`` until :meth:`MetricsServer.close` (port 0: a free
    one, see ``.port``); :class:`MetricsUnavailable` when the port is taken."""
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsUnavailable(f"{host}:{port}", exc.strerror or str(exc)) from None
    return MetricsServer(host, int(server.server_port), server, thread)


@contextlib.contextmanager
def processor_metrics(port: int, host: str, worker: int = 0) -> Iterator[ProcessorMetrics | None]:
    """For the block, a processor's metrics served on ``host:port + worker``; None (and no
    server) when ``port`` is 0."""
    if not port:
        yield None
        return
    metrics = ProcessorMetrics()
    server = serve(metrics.registry, port + worker, host)
    log.info("serving metrics at %s", server.url)
    try:
        yield metrics
    finally:
        server.close()
