"""The benchmark: throughput of each stage, as ratios against a baseline run in the same process.

Machines here are shared and noisy, so absolute numbers say little from one run to the
next; a ratio against a baseline measured minutes apart on the same data says much more.
Every measurement is repeated and interleaved with the others (A B C A B C ...), and the
median is reported.

Simulator section: the baseline is producing already-encoded messages (the cost of the
Kafka client and broker alone); against it stand the simulator alone (physics, chaos,
Avro encoding, no Kafka), and simulator + Avro + produce, without and with chaos.

Archive section: the processor section's readings, written to Parquet as the archive
writes them (zstd) against a baseline of the same Arrow table written as uncompressed
Arrow IPC (Feather v2: the cost of the disk and the page cache alone); also uncompressed
Parquet (the encoding without compression) and the whole archival from PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pyarrow as pa

from workbench import archive, kafka
from workbench.archive import parquet
from workbench.archive.writer import BEGINNING, END, to_arrow
from workbench.config import Settings
from workbench.errors import ConfigError
from workbench.processor.loop import Processor
from workbench.processor.malloc import peak_rss_mb
from workbench.processor.predict import Predictor
from workbench.processor.rules import load_rules
from workbench.processor.validate import Reading
from workbench.producer import RecordProducer
from workbench.schemas import READING
from workbench.simulator.control import ChaosControl, parse_chaos
from workbench.simulator.physics import FactoryConfig
from workbench.simulator.source import Simulation
from workbench.sinks.postgres import READING_COLUMNS, PostgresSink, connect

log = logging.getLogger(__name__)

#: Chaos for the "with chaos" row: every kind on, at the standard scenario's background
#: levels for network faults and a few episodes per machine-hour for the others.
BENCH_CHAOS = (
    "spike=0.001,drift=0.05,stuck=0.05,loss=0.002,duplicate=0.002,latency=200ms,"
    "burst=0.02,failure=0.01,power=0.01,malformed=0.0005"
)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _median_rate(samples: list[tuple[int, float]]) -> tuple[int, float, float]:
    """(events, median seconds, events per second) over repeated runs of the same work."""
    events = samples[0][0]
    seconds = statistics.median(s for _, s in samples)
    return events, seconds, events / seconds if seconds else 0.0


def interleaved(
    cases: dict[str, Callable[[], tuple[int, float]]], repeats: int
) -> list[tuple[str, int, float, float, float]]:
    """Run every case once per round, ``repeats`` rounds, interleaved so that a noisy
    moment hits all cases alike; per case (name, events, median seconds, events/s, ratio to
    the first case, the baseline)."""
    samples: dict[str, list[tuple[int, float]]] = {name: [] for name in cases}
    for round_ in range(repeats):
        for name, case in cases.items():
            samples[name].append(case())
            log.info("round %d/%d: %s done", round_ + 1, repeats, name)
    medians = [(name, *_median_rate(samples[name])) for name in cases]
    baseline = medians[0][3]
    return [(name, n, sec, rate, rate / baseline) for name, n, sec, rate in medians]


def produce_all(
    broker: kafka.Endpoint, topic: str, encoded: list[tuple[bytes, bytes]]
) -> tuple[int, float]:
    """Produce already-encoded (key, value) messages and wait for every acknowledgement:
    the baseline of the simulator and gateway sections (the Kafka client and broker alone).
    Returns (messages, seconds)."""
    producer = RecordProducer(broker, topic, "bench")
    producer.connect()  # the producer's handshake is not producing
    t0 = time.perf_counter()
    for key, value in encoded:
        producer.send_raw(key, value)
    producer.flush()
    elapsed = time.perf_counter() - t0
    producer.close()  # its topic watch: no thread left polling the broker
    return len(encoded), elapsed


def _stage_rows(results: list[tuple[str, int, float, float, float]]) -> list[dict[str, Any]]:
    return [{"name": name, "events": n, "seconds": round(seconds, 3), "events_per_s": round(eps),
             "ratio": round(ratio, 3)} for name, n, seconds, eps, ratio in results]  # fmt: skip


def bench_simulator(
    broker: kafka.Endpoint,
    topic_prefix: str,
    machines: int = 1000,
    duration_s: float = 60.0,
    repeats: int = 3,
) -> dict[str, Any]:
    """Simulator + Avro + produce throughput, against producing pre-encoded messages."""
    config = FactoryConfig(machines=machines, seed=1)
    chaos = parse_chaos(BENCH_CHAOS)
    encoded: list[tuple[bytes, bytes]] = []
    Simulation(config, "bench").run(lambda k, v: encoded.append((k, v)), duration_s)
    kafka.ensure_topics(broker, [f"{topic_prefix}.baseline", f"{topic_prefix}.sim"], 4)

    def produce_encoded() -> tuple[int, float]:
        return produce_all(broker, f"{topic_prefix}.baseline", encoded)

    def simulate(send_to_kafka: bool, with_chaos: bool) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            control = ChaosControl(chaos if with_chaos else {})
            sim = Simulation(config, "bench", control)
            producer = (
                RecordProducer(broker, f"{topic_prefix}.sim", "bench") if send_to_kafka else None
            )
            if producer:
                producer.connect()
            send = producer.send_raw if producer else (lambda k, v: None)
            t0 = time.perf_counter()
            counts = sim.run(send, duration_s)
            if producer:
                producer.flush()
            elapsed = time.perf_counter() - t0
            if producer:
                producer.close()
            return counts.produced, elapsed

        return run

    cases: dict[str, Callable[[], tuple[int, float]]] = {
        "baseline: produce pre-encoded": produce_encoded,
        "simulator alone (no Kafka)": simulate(False, False),
        "simulator + Avro + produce": simulate(True, False),
        "simulator + chaos + Avro + produce": simulate(True, True),
    }
    rows = _stage_rows(interleaved(cases, repeats))
    with_kafka = rows[2]["events_per_s"]
    return {
        "machines": machines,
        "duration_s": duration_s,
        "repeats": repeats,
        "chaos": BENCH_CHAOS,
        "baseline_events_per_s": rows[0]["events_per_s"],
        "simulator_produce_events_per_s": with_kafka,
        "rows": rows,
    }


class NullSink:
    """A sink that stores nothing: the processor's own cost, without the database's."""

    url = "null://"

    def __init__(self) -> None:
        #: predictions it was given (machine-minutes scored)
        self.predictions = 0

    def write(self, batch: Any) -> Any:
        from workbench.sinks import WriteResult

        n = len(batch.readings.get("seq", ())) if batch.readings else 0
        if batch.predictions:
            self.predictions += len(batch.predictions["score"])
        return WriteResult(n, 0, 0)

    def checkpoint(self, group: str, topic: str, partition: int) -> None:
        return None

    def write_chaos_events(self, events: Any) -> int:
        return 0

    def close(self) -> None:
        pass


def bench_predictor(
    sensors: Collection[str] = ("temperature", "vibration", "pressure"), seed: int = 0
) -> Predictor:
    """A failure-precursor model of the default kind (scaling, then logistic regression) that
    has learnt from random vectors of every feature: what it costs to score a machine-minute
    does not depend on what it learnt, and the bench must not depend on the registry."""
    import random

    from workbench.models.precursor import make_learner
    from workbench.processor.predict import NAMES

    rng = random.Random(seed)
    model = make_learner("logistic")
    for _ in range(200):
        x = {f"{s}.{n}": rng.gauss(0, 1) for s in sensors for n in NAMES}
        model.learn_one(x, rng.random() < 0.2)
    return Predictor("bench", 0, model, 0.5)


def bench_processor(
    settings: Settings,
    broker: kafka.Endpoint,
    database_url: str,
    topic_prefix: str,
    machines: int = 500,
    duration_s: float = 120.0,
    repeats: int = 3,
    latency_rate: int = 10_000,
    latency_s: float = 20.0,
) -> dict[str, Any]:
    """The processor against tuned raw consume + decode, on the same pre-produced readings:
    with a sink that stores nothing (``compute_eps``: the processor's own work) and into
    PostgreSQL (``processor_eps``); then end-to-end latency at a steady rate
    (``latency_ms``) and with each second's readings sent at once (``latency_ticks_ms``)."""
    topic = f"{topic_prefix}.raw"
    run_id = f"bench-{topic_prefix}"
    kafka.ensure_topics(broker, [topic, f"{topic_prefix}.clean", f"{topic_prefix}.alerts",
                                    f"{topic_prefix}.deadletter"], settings.partitions)  # fmt: skip
    config = FactoryConfig(machines=machines, seed=2)
    with RecordProducer(broker, topic, run_id) as producer:
        Simulation(config, run_id).run(producer, duration_s)
    assert producer.report is not None
    total = producer.report.delivered
    # the same readings as a run that ends (its end-of-run markers after them), so that its
    # windows become final and the model has machine-minutes to score
    ended_topic = f"{topic_prefix}.ended.raw"
    kafka.ensure_topics(broker, [ended_topic], settings.partitions)
    with RecordProducer(broker, ended_topic, f"{run_id}-ended") as producer:
        sim = Simulation(config, f"{run_id}-ended")
        sim.run(producer, duration_s)
        ended_partitions = producer.end_of_run(m.encode() for m in sim.factory.machine_ids)
    proc_settings = dataclasses.replace(
        settings,
        topic_raw=topic,
        topic_clean=f"{topic_prefix}.clean",
        topic_alerts=f"{topic_prefix}.alerts",
        topic_deadletter=f"{topic_prefix}.deadletter",
    )

    def raw_consume_decode() -> tuple[int, float]:
        """The best a consumer can do: tuned fetching, fastavro decode of every message."""
        consumer = kafka.make_consumer(broker, f"{topic_prefix}.raw-reader", 6000,
                                       **kafka.FAST_CONSUMER)  # fmt: skip
        consumer.assign([kafka.TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        decode, n, t0 = READING.decode, 0, None
        try:
            while n < total:
                for msg in consumer.consume(10_000, 0.05):
                    if msg.error() is None:
                        t0 = t0 or time.perf_counter()
                        decode(msg.value())
                        n += 1
        finally:
            consumer.close()
        return n, time.perf_counter() - (t0 or time.perf_counter())

    counter = itertools.count()

    rules = load_rules(settings.rules_file)
    without_model = dataclasses.replace(
        rules, rules=tuple(r for r in rules.rules if r.kind != "model")
    )

    scorer = bench_predictor()

    scored_minutes: list[int] = []

    def ended_run(predictor: Predictor | None) -> Callable[[], tuple[int, float]]:
        """The processor over the run that ends, until it has ended on every partition."""

        def run() -> tuple[int, float]:
            sink = NullSink()
            group = f"{topic_prefix}.processor-{next(counter)}"
            processor = Processor(dataclasses.replace(proc_settings, topic_raw=ended_topic),
                                  broker, database_url, group_id=group, sink=sink,
                                  predictors=() if predictor is None else (predictor,))  # fmt: skip
            want = {(f"{run_id}-ended", p) for p in ended_partitions}
            stop = threading.Event()
            worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
            worker.start()
            deadline = time.monotonic() + 600
            while not want <= processor.ended and worker.is_alive():
                if time.monotonic() > deadline:
                    raise RuntimeError("the ended run did not end within 600 s")
                time.sleep(0.01)
            stop.set()
            worker.join(60)
            if predictor is not None:
                scored_minutes.append(sink.predictions)
            return processor.stats.consumed, processor.last_commit_at - processor.first_message_at

        return run

    def full_processor(store: bool, model: bool = True) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            if store:
                with connect(database_url, autocommit=True) as conn:
                    for table in ("readings", "window_stats", "alerts", "sensor_stats"):
                        conn.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))
            group = f"{topic_prefix}.processor-{next(counter)}"
            processor = Processor(proc_settings, broker, database_url, group_id=group,
                                  sink=None if store else NullSink(),
                                  rules=rules if model else without_model,
                                  predictors=())  # fmt: skip
            stats = processor.run(max_messages=total)
            # first message in to last batch committed: joining and leaving the group are not
            # processing, and the raw pass does neither
            return stats.consumed, processor.last_commit_at - processor.first_message_at

        return run

    cases = {"baseline: raw consume + decode (tuned)": raw_consume_decode,
             "processor, null sink (compute)": full_processor(False),
             "processor into PostgreSQL": full_processor(True)}  # fmt: skip
    if rules.uses_model:
        cases["compute without the machine model"] = full_processor(False, model=False)
    cases["compute, the run ending"] = ended_run(None)
    cases["compute, the run ending, with a failure-precursor model"] = ended_run(scorer)
    rows = _stage_rows(interleaved(cases, repeats))
    by_name = {r["name"]: r for r in rows}
    unscored = by_name["compute, the run ending"]["events_per_s"]
    scored = by_name["compute, the run ending, with a failure-precursor model"]["events_per_s"]
    # the passes above deleted what they stored: clean up now, so that the server's own
    # autovacuum of those rows does not land in the latency measurement
    with connect(database_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) readings, window_stats, alerts, sensor_stats")
    latency, ticks = (
        _latency(proc_settings, broker, database_url, topic_prefix, latency_rate, latency_s, p)
        for p in LATENCY_PATTERNS
    )
    return {
        "machines": machines,
        "duration_s": duration_s,
        "repeats": repeats,
        "run_id": run_id,
        "raw_eps": rows[0]["events_per_s"],
        "compute_eps": rows[1]["events_per_s"],
        "processor_eps": rows[2]["events_per_s"],
        "ratio": round(rows[2]["events_per_s"] / rows[0]["events_per_s"], 3),
        "compute_ratio": rows[1]["ratio"],
        # the share of the processor's own work the machine model takes
        "model_share": round(1 - rows[1]["events_per_s"] / rows[3]["events_per_s"], 3)
        if rules.uses_model
        else None,
        # ... and the share scoring each machine-minute with a failure-precursor model adds
        # the run ending, as a run does: its windows final, its machine-minutes scored
        "prediction_share": round(1 - scored / unscored, 3),
        "predictions": scored_minutes[-1] if scored_minutes else 0,
        "latency_ms": latency,
        "latency_ticks_ms": ticks,
        "rows": rows,
    }


def bench_memory(
    settings: Settings, broker: kafka.Endpoint, database_url: str, topic_prefix: str,
    machines: int = 5000, duration_s: float = 60.0,
) -> dict[str, Any]:  # fmt: skip
    """Peak resident memory of a `workbench process` storing ``machines`` x ``duration_s``
    of readings into PostgreSQL, as the process itself reports it."""
    import json
    import subprocess
    import sys

    topic = f"{topic_prefix}.rss.raw"
    run_id = f"bench-rss-{topic_prefix}"
    kafka.ensure_topics(broker, [topic], settings.partitions)
    with RecordProducer(broker, topic, run_id) as producer:
        Simulation(FactoryConfig(machines=machines, seed=5), run_id).run(producer, duration_s)
    assert producer.report is not None
    total = producer.report.delivered
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_")}
    env |= dataclasses.replace(settings, topic_raw=topic, bootstrap_servers=broker.bootstrap,
                               kafka_properties=broker.properties,
                               database_url=database_url, model="off").to_env()  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "-q", "process", "--json", "--group",
         f"{topic_prefix}.rss", "--max-messages", str(total)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    # the process's own ru_maxrss (a child's RUSAGE_CHILDREN figure counts the pages it
    # had at fork, i.e. this benchmark process)
    summary = json.loads(out.stdout)
    with connect(database_url, autocommit=True) as conn:
        for table in ("readings", "window_stats", "alerts", "sensor_stats"):
            conn.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))
    return {"machines": machines, "duration_s": duration_s, "readings": total,
            "consumed": summary["consumed"], "peak_rss_mb": summary["peak_rss_mb"]}  # fmt: skip


class SteadySender:
    """``send_raw`` at a steady ``rate`` per wall second: each reading leaves at its own
    moment, as from devices whose clocks are not synchronised, not one burst per tick.

    The clock is looked at every ``every`` readings (10 ms at 10,000/s), so pacing costs
    next to nothing.
    """

    def __init__(self, send: Callable[[bytes, bytes], None], rate: float, every: int = 100):
        self.send, self.interval, self.every = send, 1.0 / rate, every
        self.start: float | None = None
        self.sent = 0

    def __call__(self, key: bytes, value: bytes) -> None:
        if self.start is None:
            self.start = time.monotonic()
        if self.sent % self.every == 0:
            wait = self.start + self.sent * self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        self.send(key, value)
        self.sent += 1


#: How the latency load arrives: ``steady`` spreads the readings evenly over each second;
#: ``ticks`` sends each second's readings of every machine at once, as a poller does.
LATENCY_PATTERNS = ("steady", "ticks")


def _latency(
    settings: Settings,
    broker: kafka.Endpoint,
    database_url: str,
    prefix: str,
    rate: int,
    seconds: float,
    pattern: str = "steady",
) -> dict[str, Any]:
    """Event creation (producer timestamp) to its row visible in the database, at ``rate``
    readings/s paced in real time, arriving as ``pattern`` says (see LATENCY_PATTERNS)."""
    # A topic of its own: the throughput passes' readings must not queue up in front.
    settings = dataclasses.replace(settings, topic_raw=f"{prefix}.latency-{pattern}.raw")
    kafka.ensure_topics(broker, [settings.topic_raw], settings.partitions)
    group = f"{prefix}.latency-{pattern}"
    # as every pass here, without a registry model: the throughput passes show its cost
    processor = Processor(settings, broker, database_url, group_id=group, predictors=())
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, args=(stop,), daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not processor.partitions and time.monotonic() < deadline:
        time.sleep(0.05)  # joined the group: measure steady state, not the first join
    machines = max(1, round(rate / FactoryConfig(machines=1).events_per_second()))
    config = FactoryConfig(machines=machines, seed=3, start_ms=int(time.time()) * 1000)
    run_id = f"bench-latency-{pattern}-{prefix}"
    with RecordProducer(broker, settings.topic_raw, run_id, **{"linger.ms": 5}) as p:
        simulation = Simulation(config, run_id)
        if pattern == "steady":
            simulation.run(SteadySender(p.send_raw, config.events_per_second()), seconds)
        else:
            simulation.run(p.send_raw, seconds, realtime=True)
    time.sleep(2 * settings.batch_max_wait_s + 1)
    stop.set()
    worker.join(60)
    samples = sorted(processor.stats.latency_ms)
    if not samples:
        return {"p50": None, "p99": None, "samples": 0, "pattern": pattern}
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 1)  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(samples[-1], 1),
            "samples": len(samples), "rate_per_s": rate, "pattern": pattern,
            "batch_max_wait_s": settings.batch_max_wait_s}  # fmt: skip


def bench_archive(database_url: str, run_id: str, repeats: int = 3) -> dict[str, Any]:
    """Parquet write throughput (MB/s of Arrow data in, MB/s of file out) and compression
    ratio (Arrow bytes / file bytes) of a run's readings, against writing the same table
    as uncompressed Arrow IPC. Files go to a temporary folder (page cache, no fsync)."""
    spec = archive.READINGS
    with connect(database_url) as conn:
        rows = conn.execute(spec.select_sql(), (run_id, *_EVER)).fetchall()
    if not rows:
        raise ValueError(f"run {run_id!r} has no readings to archive")
    data = to_arrow(rows, spec.schema)
    del rows
    arrow_bytes = data.nbytes
    with tempfile.TemporaryDirectory(prefix="workbench-bench-archive-") as tmp:
        folder = Path(tmp)

        def timed(write: Callable[[Path], None], name: str) -> tuple[int, float, int]:
            path = folder / name
            t0 = time.perf_counter()
            write(path)
            seconds = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")))
            return data.num_rows, seconds, size

        def ipc(path: Path) -> None:
            with pa.OSFile(str(path), "wb") as out, pa.ipc.new_file(out, data.schema) as w:
                w.write_table(data, max_chunksize=parquet.ROW_GROUP_ROWS)

        def parquet_file(compression: str | None) -> Callable[[Path], None]:
            def write(path: Path) -> None:
                with pa.OSFile(str(path), "wb") as out:
                    parquet.write_groups(out, spec.schema, [data], compression)

            return write

        def end_to_end(path: Path) -> None:
            location = archive.open_location(str(path))
            archive.archive(location, database_url, run_id)

        cases: dict[str, Callable[[Path], None]] = {
            "baseline: Arrow IPC, uncompressed": ipc,
            "Parquet, uncompressed": parquet_file(None),
            "Parquet, zstd (the archive's format)": parquet_file(parquet.COMPRESSION),
            "archive: PostgreSQL -> Parquet zstd": end_to_end,
        }
        samples: dict[str, list[tuple[int, float, int]]] = {name: [] for name in cases}
        for round_ in range(repeats):
            for i, (name, write) in enumerate(cases.items()):
                samples[name].append(timed(write, f"{round_}-{i}"))
            log.info("round %d/%d: archive writes done", round_ + 1, repeats)
    table_rows = []
    for name in cases:
        seconds = statistics.median(s for _, s, _ in samples[name])
        size = samples[name][-1][2]
        table_rows.append({"name": name, "events": data.num_rows, "seconds": round(seconds, 3),
                           "events_per_s": round(data.num_rows / seconds),
                           "arrow_mb_per_s": round(arrow_bytes / seconds / 1e6, 1),
                           "file_mb_per_s": round(size / seconds / 1e6, 1),
                           "file_mb": round(size / 1e6, 2),
                           "compression_ratio": round(arrow_bytes / size, 2)})  # fmt: skip
    baseline = table_rows[0]["arrow_mb_per_s"]
    for row in table_rows:
        row["ratio"] = round(row["arrow_mb_per_s"] / baseline, 3)
    zstd = table_rows[2]
    return {
        "run_id": run_id,
        "readings": data.num_rows,
        "arrow_mb": round(arrow_bytes / 1e6, 2),
        "row_group_rows": parquet.ROW_GROUP_ROWS,
        "compression": f"{parquet.COMPRESSION}-{parquet.COMPRESSION_LEVEL}",
        "repeats": repeats,
        "parquet_mb_per_s": zstd["arrow_mb_per_s"],
        "parquet_file_mb_per_s": zstd["file_mb_per_s"],
        "compression_ratio": zstd["compression_ratio"],
        "ratio": zstd["ratio"],
        "rows": table_rows,
    }


_EVER = (BEGINNING, END)


def bench_sink(database_url: str, rows: int = 100_000, repeats: int = 3) -> dict[str, Any]:
    """Rows/s into PostgreSQL: the sink's path (binary COPY built from columns, straight into
    the readings table, in one transaction) against a plain ``executemany`` of INSERT ... ON
    CONFLICT DO NOTHING, on the same readings. Each pass writes new rows (its own run id)
    and removes them afterwards."""
    t0 = 1_767_225_600_000

    def batch(run_id: str) -> list[Reading]:
        return [Reading(run_id, f"m-{i % 500:04d}", "temperature", i // 500, t0 + 1000 * (i // 500),
                        20.0 + (i % 97) / 10, 0, False, 0.5, 20.0, 20.0)
                for i in range(rows)]  # fmt: skip

    names = ", ".join(READING_COLUMNS).replace("ts_ms", "ts")
    insert = (f"INSERT INTO readings ({names}) VALUES ({', '.join(['%s'] * len(READING_COLUMNS))})"
              " ON CONFLICT DO NOTHING")  # fmt: skip
    counter = itertools.count()

    def executemany() -> tuple[int, float]:
        data = [(*r[:4], _at(r[4]), *r[5:]) for r in batch(f"bench-sink-{next(counter)}")]
        with connect(database_url) as conn:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(insert, data)
            seconds = time.perf_counter() - started
            conn.execute("DELETE FROM readings WHERE run_id = %s", (data[0][0],))
            conn.commit()
        return rows, seconds

    def bulk() -> tuple[int, float]:
        data = batch(f"bench-sink-{next(counter)}")
        with PostgresSink(database_url) as sink:
            started = time.perf_counter()
            sink.write(data)
            seconds = time.perf_counter() - started
        with connect(database_url) as conn:
            conn.execute("DELETE FROM readings WHERE run_id = %s", (data[0].run_id,))
            conn.commit()
        return rows, seconds

    cases = {"baseline: executemany INSERT": executemany,
             "the sink: binary COPY into readings": bulk}  # fmt: skip
    out = [{"name": name, "rows": n, "seconds": round(seconds, 3), "rows_per_s": round(rate),
            "ratio": round(ratio, 2)} for name, n, seconds, rate, ratio in interleaved(
                cases, repeats)]  # fmt: skip
    return {"rows": out, "repeats": repeats, "batch_rows": rows}


def _at(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


def table(result: dict[str, Any]) -> str:
    """The result as a plain-text table for the terminal."""
    lines = []
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
                 f"Python {m['python']}")  # fmt: skip
    heads = [("raw consume + decode", "raw_eps"), ("processor, null sink", "compute_eps"),
             ("processor into PostgreSQL", "processor_eps"),
             ("simulator + encode + produce", "produce_eps")]  # fmt: skip
    if any(k in result for _, k in heads):
        lines.append("")
        for label, key in heads:
            if key in result:
                lines.append(f"  {label:<32}{result[key]:>12,}/s")
        if "ratio" in result:
            lines.append(f"  {'ratio processor / raw':<32}{result['ratio']:>12.3f}")
        share = (result.get("processor") or {}).get("model_share")
        if share is not None:
            lines.append(f"  {'machine model, share of compute':<32}{share:>12.1%}")
        share = (result.get("processor") or {}).get("prediction_share")
        if share is not None:
            lines.append(f"  {'failure prediction, share':<32}{share:>12.1%} "
                         f"({result['processor']['predictions']:,} machine-minutes)")  # fmt: skip
    mem = result.get("memory")
    if mem:
        lines.append(f"  {'peak RSS of a processor':<32}{mem['peak_rss_mb']:>10,.1f} MB "
                     f"({mem['machines']:,} machines, {mem['readings']:,} readings)")  # fmt: skip
    for section in ("simulator", "processor"):
        s = result.get(section)
        if not s:
            continue
        lines.append(f"\n{section}: {s['machines']} machines x {s['duration_s']:g} s of event "
                     f"time, median of {s['repeats']}")  # fmt: skip
        lines.append(f"  {'stage':<38}{'events':>10}{'seconds':>10}{'events/s':>12}{'ratio':>8}")
        for row in s["rows"]:
            lines.append(f"  {row['name']:<38}{row['events']:>10}{row['seconds']:>10.3f}"
                         f"{row['events_per_s']:>12,}{row['ratio']:>8.2f}")  # fmt: skip
    for key, how in (("latency_ms", "steady"), ("latency_ticks_ms", "each second at once")):
        lat = (result.get("processor") or {}).get(key)
        if lat and lat.get("p50") is not None:
            lines.append(
                f"\nend-to-end latency at {lat['rate_per_s']} readings/s, {how} (event created "
                f"-> row visible): p50 {lat['p50']} ms, p90 {lat['p90']} ms, "
                f"p99 {lat['p99']} ms, max {lat['max']} ms over {lat['samples']} readings"
            )
    a = result.get("archive")
    if a:
        lines.append(f"\narchive: {a['readings']:,} readings ({a['arrow_mb']} MB in Arrow), "
                     f"{a['compression']}, row groups of {a['row_group_rows']:,}, "
                     f"median of {a['repeats']}")  # fmt: skip
        lines.append(f"  {'write':<38}{'seconds':>9}{'Arrow MB/s':>12}{'file MB/s':>11}"
                     f"{'file MB':>9}{'Arrow/file':>12}{'ratio':>7}")  # fmt: skip
        for row in a["rows"]:
            lines.append(f"  {row['name']:<38}{row['seconds']:>9.3f}{row['arrow_mb_per_s']:>12,.1f}"
                         f"{row['file_mb_per_s']:>11,.1f}{row['file_mb']:>9.2f}"
                         f"{row['compression_ratio']:>12.2f}{row['ratio']:>7.2f}")  # fmt: skip
    k = result.get("sink")
    if k:
        lines.append(f"\ninto PostgreSQL: {k['batch_rows']:,} readings per batch, "
                     f"median of {k['repeats']}")  # fmt: skip
        lines.append(f"  {'path':<38}{'seconds':>10}{'rows/s':>12}{'ratio':>8}")
        for row in k["rows"]:
            lines.append(f"  {row['name']:<38}{row['seconds']:>10.3f}{row['rows_per_s']:>12,}"
                         f"{row['ratio']:>8.2f}")  # fmt: skip
    g = result.get("gateway")
    if g:
        lines.append(f"\nHTTP gateway: {g['readings']:,} readings, median of {g['repeats']}")
        lines.append(f"  {'path':<38}{'readings/s':>12}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}")
        for row in g["rows"]:
            lat = f"{row.get('p50_ms', '-')!s:>9}{row.get('p99_ms', '-')!s:>9}"
            lines.append(
                f"  {row['name']:<38}{row['readings_per_s']:>12,}{row['ratio']:>8.2f}{lat}"
            )
        st = g["steady"]
        lines.append(f"  single readings at {st['rate_per_s']:g}/s: p50 {st['p50_ms']} ms, "
                     f"p90 {st['p90_ms']} ms, p99 {st['p99_ms']} ms, max {st['max_ms']} ms "
                     f"({st['accepted']:,} of {st['requests']:,} accepted)")  # fmt: skip
    lines.append(f"\npeak RSS of the benchmark process {result['bench_peak_rss_mb']} MB")
    return "\n".join(lines)


#: The benchmark's sections, in the order they run; ``archive`` archives the readings of
#: the ``processor`` section, so it runs only with it.
PARTS = ("simulator", "processor", "archive", "sink", "memory", "gateway")


def run_benchmark(
    settings: Settings,
    broker: kafka.Endpoint,
    database_url: str,
    topic_prefix: str,
    parts: Collection[str] = PARTS,
    machines: int = 1000,
    duration_s: float = 60.0,
    repeats: int = 3,
    sink_rows: int = 100_000,
    latency_rate: int = 10_000,
    latency_s: float = 20.0,
    rss_machines: int = 5000,
    rss_duration_s: float = 60.0,
) -> dict[str, Any]:
    """Run the benchmark's ``parts`` on a running stack (topics ``<topic_prefix>.*`` of
    their own; tables must exist) and gather them with what they ran on, as
    ``workbench bench --json`` prints it: ``machine``, one key per section, and the
    headline figures at the top: ``raw_eps``, ``compute_eps``, ``processor_eps``,
    ``ratio`` (processor_eps / raw_eps), ``produce_eps``, ``latency_ms`` and
    ``peak_rss_mb`` (of a processor at ``rss_machines`` when the memory part ran, else of
    this process).

    >>> run_benchmark(Settings.from_env({}), "", "", "bench.x", parts=["gpu"])
    Traceback (most recent call last):
    ...
    workbench.errors.ConfigError: parts='gpu' is not valid: expected any of simulator, processor, archive, sink, memory, gateway
    """  # noqa: E501
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError("parts", ",".join(unknown), f"any of {', '.join(PARTS)}")
    result: dict[str, Any] = {"machine": machine_info()}
    if "simulator" in parts:
        result["simulator"] = bench_simulator(
            broker, topic_prefix, machines=machines, duration_s=duration_s, repeats=repeats
        )
    if "processor" in parts:
        result["processor"] = bench_processor(
            settings,
            broker,
            database_url,
            topic_prefix,
            machines=machines,
            duration_s=duration_s,
            repeats=repeats,
            latency_rate=latency_rate,
            latency_s=latency_s,
        )
        if "archive" in parts:
            result["archive"] = bench_archive(
                database_url, result["processor"]["run_id"], repeats=repeats
            )
    if "sink" in parts:
        result["sink"] = bench_sink(database_url, rows=sink_rows, repeats=repeats)
    if "memory" in parts:
        result["memory"] = bench_memory(settings, broker, database_url, topic_prefix,
                                        rss_machines, rss_duration_s)  # fmt: skip
    if "gateway" in parts:
        from workbench.gateway.benchmark import bench_gateway

        result["gateway"] = bench_gateway(settings, broker, topic_prefix, repeats=repeats)
    result["bench_peak_rss_mb"] = peak_rss_mb()
    result["peak_rss_mb"] = result.get("memory", {}).get("peak_rss_mb", peak_rss_mb())
    processor = result.get("processor", {})
    result |= {k: processor[k] for k in ("raw_eps", "compute_eps", "processor_eps", "ratio",
                                          "latency_ms", "latency_ticks_ms")
               if k in processor}  # fmt: skip
    if "simulator" in result:
        result["produce_eps"] = result["simulator"]["simulator_produce_events_per_s"]
    return result
