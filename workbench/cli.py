"""The ``workbench`` command: argument parsing only; every command calls the package.

Errors the user can act on print one line (``workbench: error: ...``) and exit 1;
``--json`` output goes to stdout alone, logs go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench import job, kafka
from workbench.config import Settings, project_root
from workbench.errors import ConfigError, WorkbenchError
from workbench.gateway import command as gateway_command
from workbench.models import command as model_command  # light: River loads when it runs
from workbench.processor.loop import Processor
from workbench.processor.rules import load_rules
from workbench.runs import new_run_id, table_counts
from workbench.simulator.control import duration_argument, parse_chaos, parse_duration_s
from workbench.simulator.csvsource import CsvSource
from workbench.simulator.mapping import Overrides
from workbench.simulator.replay import ReplayOptions, replay
from workbench.simulator.spec import SimulationSpec
from workbench.sinks import redact, sink_kind
from workbench.sinks.postgres import engine
from workbench.sinks.timeseries import prune
from workbench.stack import Stack

log = logging.getLogger("workbench.cli")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number > 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number > 0")
    return value


def _port(text: str) -> int:
    """A TCP port, 0 meaning none."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 0 (none) to 65535")
    return int(text)


def _position(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` of a raw message."""
    partition, _, offset = text.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not PARTITION:OFFSET (e.g. 2:1534)")
    return int(partition), int(offset)


def _chaos(text: str) -> dict[str, float]:
    try:
        return parse_chaos(text)
    except WorkbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lead(text: str) -> tuple[float, float]:
    """A failure's lead: ``5m-15m`` (drawn between), ``10m`` (always), ``0`` (no precursor)."""
    low, _, high = text.partition("-")
    try:
        lead = (parse_duration_s(low), parse_duration_s(high or low))
    except WorkbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 <= lead[0] <= lead[1]:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range of durations, shortest first")
    return lead


def _start(text: str) -> int:
    """Event-time origin: ``now`` or an ISO 8601 time (UTC unless it says otherwise)."""
    if text == "now":
        return int(time.time()) * 1000
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'now' or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _moment(text: str) -> dt.datetime:
    """A period bound: ISO 8601 time, a date (its midnight) or a month ``YYYY-MM`` (its
    first midnight); UTC unless it says otherwise."""
    try:
        if len(text) == 7 and text[4] == "-":
            when = dt.datetime.strptime(text, "%Y-%m")
        else:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time, a date or a YYYY-MM month"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _add_factory_args(p: argparse.ArgumentParser) -> None:
    """Simulation options; those left out come from --scenario, else from the defaults."""
    p.add_argument("--scenario", help="a shipped scenario (e.g. standard) or a .toml file")
    p.add_argument("--machines", type=_positive_int, help="machines (default 5)")
    p.add_argument(
        "--factory",
        choices=("machines", "nodes"),
        help="machines (pumps, compressors, presses: the default) or nodes (environmental "
        "sensor nodes: temperature, humidity, battery)",
    )
    p.add_argument(
        "--duration", type=duration_argument, help="event time to simulate, e.g. 90 or 5m (30s)"
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=_positive_float, help="samples/s of each sensor (default 1)")
    rate.add_argument("--events-per-s", type=_positive_float, help="readings/s, whole factory")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--chaos",
        type=_chaos,
        default={},
        metavar="SPEC",
        help="fault intensities, e.g. spike=0.01,drift=0.2,loss=0.05,latency=2s "
        "(per reading: spike loss duplicate malformed; per machine-minute: drift stuck "
        "burst failure power; latency: mean delay)",
    )
    p.add_argument(
        "--failure-lead",
        type=_lead,
        metavar="SPAN",
        help="how long a failure degrades before its runaway (vibration rising, running warmer): "
        "5m-15m (default: drawn in that range), 10m, or 0 for no precursor",
    )
    p.add_argument(
        "--start",
        type=_start,
        help="event time of the first reading: 'now' or ISO 8601 (default: 2026-01-01T00:00Z, "
        "or now with --realtime), so equal seeds give equal streams",
    )
    p.add_argument("--run-id", help="name the run (default: time + random suffix)")
    p.add_argument(
        "--realtime", action="store_true", help="pace event time to the wall clock (default: max)"
    )


def _spec(args: argparse.Namespace) -> SimulationSpec:
    return SimulationSpec.build(
        machines=args.machines,
        duration_s=args.duration,
        rate_hz=args.rate,
        seed=args.seed,
        chaos=args.chaos,
        scenario=args.scenario,
        start_ms=args.start,
        events_per_s=args.events_per_s,
        realtime=args.realtime,
        factory_kind=args.factory,
        failure_lead_s=args.failure_lead,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="IoT streaming lab: simulate a factory, stream it through Kafka, "
        "process it into PostgreSQL, report what happened.",
        epilog="Settings come from WORKBENCH_* environment variables: see docs/settings.md.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in [
        ("up", "start the embedded broker and database (or check the configured ones)"),
        ("down", "stop the embedded broker and database"),
        ("status", "where the broker and database are and whether they answer"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--json", action="store_true", help="print JSON")
        if name == "down":
            p.add_argument("--force", action="store_true",
                           help="stop even with raw messages the processors have not "
                           "taken (the embedded broker forgets them)")  # fmt: skip

    p = sub.add_parser("simulate", help="produce a simulated factory to the raw topic")
    _add_factory_args(p)
    _add_via(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = sub.add_parser(
        "tail",
        help="print a topic's messages, decoded, as they arrive",
        description="Print the messages of one of the pipeline's topics, decoded, one line "
        "each (an Arrow batch on the clean topic: a line per reading), until Ctrl-C. A dead "
        "letter shows its reason and its first bytes, as does a message that cannot be "
        "decoded. Reads without joining any consumer group or committing: the pipeline "
        "does not notice.",
    )
    p.add_argument(
        "topic",
        metavar="TOPIC",
        help="raw, clean, alerts, deadletter or chaos (or the topic's name, e.g. telemetry.raw)",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="every message the topic holds first (default: only those arriving from now on)",
    )
    p.add_argument("--max", type=_positive_int, metavar="N", help="stop after N lines")
    p.add_argument("--run", metavar="RUN_ID", help="only this run's messages")
    p.add_argument("--machine", metavar="ID", help="only this machine's messages")
    p.add_argument("--sensor", metavar="TYPE", help="only this sensor type's messages")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("process", help="consume the raw topic into the database")
    p.add_argument("--idle-timeout", type=_positive_float, help="stop after this many idle seconds")
    p.add_argument("--max-messages", type=_positive_int, help="stop after this many messages")
    p.add_argument("--group", help="consumer group (default WORKBENCH_CONSUMER_GROUP)")
    p.add_argument(
        "--skip",
        type=_position,
        action="append",
        default=[],
        metavar="PARTITION:OFFSET",
        help="dead-letter the raw message at this position unread, whatever it holds "
        "(repeatable): the way past a message that stops the processor",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="processes in the consumer group, each taking a share of the partitions "
        "(default WORKBENCH_WORKERS, 1)",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://WORKBENCH_METRICS_HOST:PORT/metrics; worker i "
        "of --workers serves on PORT+i (default WORKBENCH_METRICS_PORT; 0: none)",
    )
    _add_rules(p)
    p.add_argument(
        "--sink",
        metavar="URL",
        help="store into this database instead of the configured one: sqlite:///PATH (the "
        "edge path, no database server) or postgresql://...; the broker is unchanged",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    p = sub.add_parser("run", help="simulate + process + store end to end, and check the books")
    _add_factory_args(p)
    _add_via(p)
    _add_rules(p)
    p.add_argument(
        "--keep-up", action="store_true", help="leave an embedded stack this run started running"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    p = sub.add_parser(
        "replay",
        help="stream a CSV file of real sensor data to the raw topic, its labels as ground truth",
        description="Replay a CSV file through the producer. Columns are mapped by a mapping "
        "(shipped: nab, skab, smoke; picked by the file's columns when not given) and/or flags.",
    )
    p.add_argument("file", metavar="FILE", help="the CSV file")
    p.add_argument("--mapping", metavar="NAME_OR_FILE", help="shipped mapping name or TOML file")
    p.add_argument("--sep", help="field separator, or tab (default: the mapping's, else guessed)")
    p.add_argument("--time-column", metavar="COLUMN", help="the event-time column")
    p.add_argument("--time-format", metavar="FMT", help="strptime format, iso, unix_s or unix_ms")
    p.add_argument(
        "--machine-id", metavar="ID", help="machine id; may use {stem} {parent} {session}"
    )
    p.add_argument("--machine-column", metavar="COLUMN", help="take the machine id from a column")
    p.add_argument(
        "--sensor",
        action="append",
        metavar="COLUMN=TYPE[*SCALE]",
        help="map a column to a sensor type (repeatable; replaces the mapping's sensors)",
    )
    p.add_argument("--label-column", metavar="COLUMN", help="0/1 anomaly label column")
    p.add_argument("--labels", metavar="FILE", help="NAB-style JSON file of anomaly windows")
    p.add_argument(
        "--timestamps",
        choices=["original", "now"],
        default="original",
        help="keep the file's event times (default), or start now",
    )
    p.add_argument(
        "--speed", type=_positive_float, default=1.0, help="divide time intervals by this (1)"
    )
    p.add_argument(
        "--realtime", action="store_true", help="send rows at their event time (default: max)"
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="replay the first N rows")
    p.add_argument("--run-id", help="name the run (default: time + random suffix)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when more than 1%% of the readings are dead letters (bad rows, values "
        "outside their sensor type's range: a column mapped to the wrong type)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p = sub.add_parser(
        "archive",
        help="archive a run's or a period's readings to Parquet (safe to run twice)",
        description="Copy readings (and with --windows, window results) from the database to "
        "the Parquet archive at WORKBENCH_ARCHIVE_URI (default <state dir>/archive), "
        "partitioned by date and run. Periods are half-open [since, until) in event time.",
    )
    p.add_argument("--run-id", help="the run to archive (default: every run in the period)")
    p.add_argument("--since", type=_moment, help="from this event time: ISO 8601, date, YYYY-MM")
    p.add_argument("--until", type=_moment, help="up to (not including) this event time")
    p.add_argument("--windows", action="store_true", help="archive window results too")
    compaction = p.add_mutually_exclusive_group()
    compaction.add_argument(
        "--compact", action="store_true", help="then merge each day's small files into one"
    )
    compaction.add_argument(
        "--only-compact", action="store_true", help="merge small files; read no database"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    p = sub.add_parser(
        "report",
        help="run a notebook headless into reports/ (executed notebook + HTML)",
        description="Execute a notebook with papermill into reports/<date>/<notebook>-<run "
        "id>.ipynb and .html, and update reports/index.html. NAME: 01_quickstart, quickstart, "
        "01, or a path to an .ipynb file.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the notebook")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="set a parameter (repeatable)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="the notebooks and their parameters")
    p.add_argument("--all", action="store_true", help="run every notebook with its defaults "
                   "(all of them, even after one fails; exit 1 if any failed)")  # fmt: skip
    p.add_argument("--history", action="store_true", help="each series' latest run against "
                   "the runs before it; exit 1 if one failed or regressed")  # fmt: skip
    p.add_argument("--keep-code", action="store_true", help="show the code in the HTML")
    p.add_argument("--out", help="reports folder (default reports/)")
    p.add_argument("--notebooks", metavar="DIR", help="where NAME is found (default notebooks/)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "lab",
        help="start JupyterLab on the notebooks and print its URL (with its token)",
        description="Serve JupyterLab on notebooks/ (or --notebooks DIR) until Ctrl-C, which "
        "stops it and its kernels. The URL, token included, is printed once it answers; the "
        "server's log goes to <state dir>/lab.log.",
    )
    p.add_argument("--notebooks", metavar="DIR", help="the folder to serve (default notebooks/)")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default 8888, or the next free one)")
    p.add_argument(
        "--no-browser", action="store_true", help="open no browser (none opens without a display)"
    )

    p = sub.add_parser(
        "prune",
        help="delete what is older than the retention, by when each run was recorded",
        description="Readings and dead letters of runs older than --readings go; everything "
        "else of runs older than --windows goes too. By run age, not event time: seeded runs "
        "are stamped at a fixed event-time origin.",
    )
    p.add_argument(
        "--readings", type=duration_argument, help="default WORKBENCH_RETENTION_READINGS_S (7d)"
    )
    p.add_argument(
        "--windows", type=duration_argument, help="default WORKBENCH_RETENTION_WINDOWS_S (90d)"
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("db", help="look into the database", description="look into the database")
    db = p.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = db.add_parser(
        "counts",
        help="rows of one run in each table",
        description="Print the rows of one run in each table (runs, readings, window_stats, "
        "sensor_stats, alerts, chaos_events, dead_letters, predictions). An unknown run id "
        "gives zeros, "
        "a warning, and found=false in the JSON.",
    )
    p.add_argument("--run-id", required=True, help="the run to count")
    p.add_argument(
        "--database",
        "--sink",
        metavar="URL",
        help="sqlite:///PATH or postgresql://... (default: WORKBENCH_DATABASE_URL, else the "
        "embedded PostgreSQL, started for the query if it is not running)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"run_id": ..., "found": ..., "tables": {"readings": N, ...}}',
    )
    p = db.add_parser(
        "digest",
        help="digests of one run's stored results, to compare two runs or two databases",
        description="Print SHA-256 digests of one run's stored readings (with their late "
        "flags and scores), final windows, alerts, sensor statistics and predictions, and its "
        "count of late "
        "readings. They do not depend on the run id, on the order rows were written in or on "
        "when: the same stream processed twice (or into PostgreSQL and into SQLite) gives the "
        "same digests. An unknown run id is an error.",
    )
    p.add_argument("--run-id", required=True, help="the run to digest")
    p.add_argument(
        "--database",
        "--sink",
        metavar="URL",
        help="sqlite:///PATH or postgresql://... (default: WORKBENCH_DATABASE_URL, else the "
        "embedded PostgreSQL, started for the query if it is not running)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"readings": SHA256, "windows": ..., "alerts": ..., "stats": ..., '
        '"predictions": ..., "late": N}',
    )

    p = sub.add_parser(
        "grafana", help="check the Grafana dashboards", description="check the Grafana dashboards"
    )
    gf = p.add_subparsers(dest="grafana_command", required=True, metavar="GRAFANA_COMMAND")
    p = gf.add_parser(
        "check",
        help="run every dashboard query against the database",
        description="Load the Grafana provisioning files and every dashboard, expand the "
        "PostgreSQL macros and template variables for a time range, run every panel, "
        "annotation and variable query against the configured database and check the shape "
        "of each result. Exit 0 only when every panel is ok.",
    )
    p.add_argument("--run-id", help="the run to show (default: the newest)")
    p.add_argument(
        "--from",
        dest="time_from",
        type=_instant,
        metavar="ISO",
        help="start of the time range (default: the run's first event time)",
    )
    p.add_argument(
        "--to",
        dest="time_to",
        type=_instant,
        metavar="ISO",
        help="end of the time range (default: the run's last event time)",
    )
    p.add_argument(
        "--dashboards", metavar="DIR", help="dashboard JSON folder (default: grafana/dashboards)"
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://... (default: WORKBENCH_DATABASE_URL, else the embedded PostgreSQL)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": ..., "panels": [{"dashboard", "panel", "rows", "ok"}]}',
    )

    p = sub.add_parser(
        "evaluate",
        help="score the pipeline's alerts on labelled benchmark files (NAB, SKAB) beside baselines",
        description="Replay each labelled CSV file through the pipeline and score its alerts "
        "as NAB (three profiles) and SKAB (F1 of the rows flagged) do, beside the null "
        "detector and a rolling z-score.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="CSV files or directories of them")
    p.add_argument("--mapping", metavar="NAME_OR_FILE", help="mapping (default: detected)")
    _add_rules(p)
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")

    p = sub.add_parser(
        "gateway",
        help="take readings over HTTP (POST /v1/telemetry) onto the raw topic",
        description="Serve the HTTP gateway: readings as JSON or Avro, answered 202 once the "
        "broker acknowledged each; API keys from WORKBENCH_GATEWAY_API_KEYS or the keys file. "
        "`workbench gateway key NAME` adds a key to the file.",
    )
    gateway_command.add_arguments(p)

    p = sub.add_parser("model", help="train, list, evaluate and promote models of the registry")
    model_command.add_arguments(p)

    p = sub.add_parser(
        "health",
        help="a health score and narrative per machine of a stored run, worst first",
        description="Score each machine of a run from 0 to 100 from measured indicators "
        "(failure alerts and the time since the last, other alerts, drift, temperature per "
        "ampere, data quality), with a narrative that cites its numbers and the deductions "
        "that make the score. Alerts open in the recent window before the run's latest "
        "reading cost full points; older ones cost less or are only listed.",
    )
    p.add_argument("machine", nargs="?", metavar="MACHINE_ID", help="one machine (default: all)")
    p.add_argument("--run", metavar="RUN_ID", help="the stored run (default: the latest)")
    p.add_argument("--recent", type=duration_argument, metavar="DURATION",
                   help="alerts open in this span before the run's latest reading are recent, "
                   "e.g. 30m (default 60m)")  # fmt: skip
    p.add_argument("--save", action="store_true",
                   help="also store the summaries in the machine_health table (Grafana reads "
                   "them), replacing the run's earlier ones")  # fmt: skip
    p.add_argument("--database", metavar="URL",
                   help="postgresql://... or sqlite:///PATH (default: WORKBENCH_DATABASE_URL, "
                   "else the embedded PostgreSQL)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summaries as one JSON object")

    p = sub.add_parser("bench", help="measure throughput, as ratios against a baseline")
    p.add_argument("--machines", type=_positive_int, default=1000, help="machines (1000)")
    p.add_argument(
        "--duration", type=duration_argument, default=60.0, help="event time per pass (default 60s)"
    )
    p.add_argument("--repeats", type=_positive_int, default=3, help="passes per stage (3)")
    p.add_argument("--out", help="write the JSON here (default reports/bench/bench-<time>.json)")
    p.add_argument(
        "--skip-processor",
        action="store_true",
        help="no processor section (nor archive: it archives the processor's rows)",
    )
    p.add_argument("--skip-archive", action="store_true", help="no Parquet archive section")
    p.add_argument("--skip-sink", action="store_true", help="no PostgreSQL write section")
    p.add_argument(
        "--skip-gateway", action="store_true", help="no HTTP gateway section (a gateway process)"
    )
    p.add_argument(
        "--skip-memory", action="store_true", help="no peak-memory section (a processor process)"
    )
    p.add_argument(
        "--rss-machines", type=_positive_int, default=5000,
        help="machines of the peak-memory section (5000)",
    )  # fmt: skip
    p.add_argument(
        "--rss-duration", type=duration_argument, default=60.0,
        help="event time of the peak-memory section (60s; state grows until the longest "
             "horizon, window width + correction horizon, is covered)",
    )  # fmt: skip
    p.add_argument(
        "--sink-rows", type=_positive_int, default=100_000, help="rows per sink batch (100000)"
    )
    p.add_argument(
        "--latency-rate",
        type=_positive_int,
        default=10_000,
        help="readings/s for latency (10000)",
    )
    p.add_argument(
        "--latency-seconds", type=duration_argument, default=20.0, help="latency run length (20s)"
    )
    p.add_argument("--json", action="store_true", help="print the JSON instead of a table")
    return parser


def _add_via(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--via",
        metavar="URL",
        help="send the readings through the HTTP gateway at URL (`workbench gateway`) "
        "instead of straight to the broker",
    )
    p.add_argument(
        "--api-key",
        help="the gateway's API key for --via (default: the first of WORKBENCH_GATEWAY_API_KEYS)",
    )


def _via(settings: Settings, args: argparse.Namespace) -> job.Via | None:
    if not args.via:
        return None
    key = args.api_key or (settings.gateway_api_keys or "").split(",")[0].strip()
    if not key:
        raise ConfigError("--api-key", "", "the gateway's API key (or WORKBENCH_GATEWAY_API_KEYS)")
    return job.Via(args.via, key)


def _add_rules(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rules", metavar="NAME_OR_FILE", help="alert rules (default WORKBENCH_RULES_FILE)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("workbench").setLevel(level)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = Settings.from_env()
        if getattr(args, "rules", None):
            settings = dataclasses.replace(settings, rules_file=args.rules)
        if args.command in ("process", "run"):
            load_rules(settings.rules_file)  # a bad rules file stops us before any server starts
        if getattr(args, "sink", None):
            sink_kind(args.sink, "--sink")  # so does a sink URL of an unknown kind
        if getattr(args, "database", None):
            sink_kind(args.database, "--database")
        return COMMANDS[args.command](settings, args)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, default=str) if args.json else text)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    endpoints, started = stack.up()
    status = stack.status()
    note = f"started {', '.join(started)}" if started else "already running"
    _emit(
        args,
        status,
        f"broker   {endpoints.bootstrap_servers}\n"
        f"database {status['database']['address']}\n({note})",
    )
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if not args.force and settings.bootstrap_servers is None:
        rec = stack.broker.running()
        left = 0
        if rec is not None:
            broker = kafka.Endpoint(stack.broker.bootstrap(rec), settings.kafka_properties)
            left = kafka.unprocessed(broker, settings.topic_raw, settings.consumer_group)
        if left:
            raise WorkbenchError(
                f"{left} messages on {settings.topic_raw} were not processed by group "
                f"{settings.consumer_group}, and the embedded broker forgets them when it "
                "stops: run `workbench process --idle-timeout 5` first, or `workbench down "
                "--force` to drop them"
            )
    stopped = stack.down()
    text = ", ".join(f"{k} {'stopped' if v else 'was not running'}" for k, v in stopped.items())
    _emit(args, {"stopped": stopped}, text)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    status = Stack(settings).status()
    lines = [
        f"{name:<9}{'running' if part['running'] else 'stopped':<9}"
        f"{'embedded' if part['embedded'] else 'external':<10}{part['address'] or ''}"
        + "".join(f" {k}={v}" for k, v in part.get("properties", {}).items())
        for name, part in status.items()
    ]
    _emit(args, status, "\n".join(lines))
    # a health check's answer: 1 unless every part answers
    return 0 if all(part["running"] for part in status.values()) else 1


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    run_id = args.run_id or new_run_id()
    report = job.simulate_run(settings, _spec(args), run_id, args.realtime, _via(settings, args))
    data = dataclasses.asdict(report) | {"topic": settings.topic_raw}
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(report.chaos.items())) or "none"
    text = (
        f"run {run_id}: produced {report.produced} readings, sent {report.delivered} messages "
        f"to {settings.topic_raw}; faults injected: {faults}"
    )
    if report.via:
        text += f"\nthrough the gateway at {report.via}: {report.rejected} messages refused"
    if not report.intact:
        text += (
            f"\nNOT DELIVERED: {report.sent - report.delivered} of {report.sent} messages not "
            f"acknowledged; about {report.lost} lost unprocessed by the broker after it "
            "acknowledged them"
        )
    _emit(args, data, text)
    return 0 if report.intact else 1


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    """``workbench tail TOPIC``: Ctrl-C (or SIGTERM) ends it quietly, with status 0, as
    does a reader of the output that goes away (``| head``)."""
    from workbench import tail

    kind, topic = tail.topic_for(settings, args.topic)  # a bad name stops us before the broker
    broker = job.ready_broker(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    filters = tail.Filters(run=args.run, machine=args.machine, sensor=args.sensor)
    try:
        tail.tail(broker, kind, topic, tail.printer(kind, args.json, sys.stdout), stop,
                  args.from_beginning, filters, args.max, sys.stdout.flush)  # fmt: skip
    except BrokenPipeError:
        # nothing more to write to; Python would complain again flushing stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.metrics import processor_metrics
    from workbench.processor.malloc import fix_mmap_threshold, peak_rss_mb

    fix_mmap_threshold()  # a process of its own: batch-sized arrays go back when freed
    workers = args.workers or settings.workers
    if args.metrics_port is not None:
        settings = dataclasses.replace(settings, metrics_port=args.metrics_port)
    if settings.metrics_port and settings.metrics_port + workers - 1 > 65535:
        raise ConfigError("--metrics-port", settings.metrics_port,
                          f"a port that leaves room for {workers} workers (<= 65535)")  # fmt: skip
    endpoints = job.ready_stack(settings, sink=args.sink)
    if workers > 1:
        from workbench.processor.workers import run_workers

        total = run_workers(settings, endpoints.broker, endpoints.database_url,
                            workers, group_id=args.group, idle_timeout_s=args.idle_timeout,
                            max_messages=args.max_messages, skip=tuple(args.skip))  # fmt: skip
        data = {k: total.get(k, 0) for k in ("consumed", "stored", "duplicates", "deadlettered",
                                              "batches")}  # fmt: skip
        data |= {"per_run": total.get("per_run", {}), "workers": total["workers"]}
    else:
        with processor_metrics(settings.metrics_port, settings.metrics_host) as metrics:
            processor = Processor(settings, endpoints.broker, endpoints.database_url,
                                  group_id=args.group, skip=args.skip, metrics=metrics)  # fmt: skip
            stop = threading.Event()
            # Ctrl-C or SIGTERM: finish the batch in hand, commit, leave the group, then exit
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            stats = processor.run(
                stop, idle_timeout_s=args.idle_timeout, max_messages=args.max_messages
            )
        data = {
            "consumed": stats.consumed,
            "stored": stats.stored,
            "duplicates": stats.duplicates,
            "deadlettered": stats.deadlettered,
            "batches": stats.batches,
            "per_run": stats.per_run,
        }
    # this process's own peak resident memory (with --workers, the parent's alone)
    data["peak_rss_mb"] = peak_rss_mb()
    _emit(
        args,
        data,
        f"consumed {data['consumed']}: stored {data['stored']}, {data['duplicates']} duplicates "
        f"absorbed, {data['deadlettered']} dead-lettered",
    )
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    summary = job.run_experiment(
        settings,
        _spec(args),
        run_id=args.run_id,
        realtime=args.realtime,
        keep_up=args.keep_up,
        via=_via(settings, args),
    )
    s = summary
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(s.chaos.items())) or "none"
    text = "\n".join(
        [
            f"run {s.run_id}: {s.machines} machines, {s.duration_s:g}s of event time "
            f"at {s.rate_hz:g} Hz, seed {s.seed}"
            + (f", scenario {s.scenario}" if s.scenario else ""),
            f"  produced       {s.produced}",
            f"  stored         {s.stored}",
            f"  dead-lettered  {s.deadlettered}",
            f"  dropped        {s.dropped} (lost by chaos on the way)",
            *([f"  refused        {s.rejected} (by the gateway at {s.via})"] if s.via else []),
            *(
                [
                    f"  NOT DELIVERED  {s.failed_deliveries} failed, about {s.lost_by_broker} "
                    "lost unprocessed by the broker after it acknowledged them"
                ]
                if s.failed_deliveries or (s.lost_by_broker and not s.reconciled)
                else []
            ),
            f"  late           {s.late} (behind the watermark on arrival)",
            f"  windows        {s.windows} final",
            f"  alerts         {s.alerts}",
            *[
                f"  predictions    {p['minutes']} machine-minutes by {p['model']} version "
                f"{p['version']}, {p['alarms']} alarms"
                for p in s.predictions
            ],
            f"  faults         {faults}",
            f"  elapsed        {s.elapsed_s:.1f}s ({s.events_per_s:,.0f} events/s end to end)",
            f"  books close    {'yes' if s.reconciled else 'NO'}",
            *_score_lines(s.score),
        ]
    )
    _emit(args, summary.to_dict(), text)
    return 0 if summary.reconciled else 1


def _score_lines(score: dict[str, dict[str, Any]]) -> list[str]:
    """The alerts against ground truth, one line per fault kind."""
    if not score:
        return []

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    lines = ["", f"  {'fault':<10}{'faults':>7}{'caught':>8}{'recall':>8}{'precision':>11}"
             f"{'delay':>9}"]  # fmt: skip
    for kind, k in sorted(score.items()):
        lines.append(
            f"  {kind:<10}{k['faults']:>7}{k['detected']:>8}{fmt(k['recall'], '.2f'):>8}"
            f"{fmt(k['precision'], '.2f'):>11}{fmt(k['mean_delay_s'], '.0f') + ' s':>9}"
            + (f"  ({k['early']} early)" if k.get("early") else "")
        )
    return lines


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    overrides = Overrides(
        separator=args.sep,
        time_column=args.time_column,
        time_format=args.time_format,
        machine_id=args.machine_id,
        machine_column=args.machine_column,
        sensors=args.sensor,
        label_column=args.label_column,
        labels_file=args.labels,
    )
    # the file and its mapping are checked before the stack is touched
    source = CsvSource.open(args.file, args.mapping, overrides)
    options = ReplayOptions(args.timestamps, args.speed, args.realtime, args.limit)
    endpoints = job.ready_stack(settings)
    summary = replay(settings, endpoints, source, options, args.run_id or new_run_id())
    _emit(args, summary.to_dict(), summary.text())
    return 0 if summary.ok and not (args.strict and summary.warnings()) else 1


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.evaluate import evaluate  # pandas and the scoring: only this command

    report = evaluate(settings, args.paths, args.mapping)
    _emit(args, report.to_dict(), report.text())
    return 0


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    from workbench import archive  # pyarrow: only the commands that need it import it

    if args.run_id is None and args.since is None and args.until is None:
        raise archive.ArchiveError("give --run-id, --since/--until, or both: what to archive")
    archive.check_period(args.since, args.until)
    tables = (archive.READINGS, archive.WINDOWS) if args.windows else (archive.READINGS,)
    # the archive is reached first: an unreachable bucket stops us before any server starts
    location = archive.open_location(archive.default_uri(settings), settings.connect_timeout_s)
    report = archive.ArchiveReport(location.uri, args.run_id, args.since, args.until)
    if not args.only_compact:
        endpoints = job.ready_stack(settings)
        report = archive.archive(location, endpoints.database_url, args.run_id, args.since,
                                 args.until, tables, settings.connect_timeout_s)  # fmt: skip
    if args.compact or args.only_compact:
        report.compacted = archive.compact(location, args.run_id, args.since, args.until, tables)
    _emit(args, report.to_dict(), report.text())
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    """``workbench db counts``: the rows of one run in each table; ``workbench db digest``:
    digests of its stored results."""
    if args.db_command == "digest":
        return _db_digest(settings, args)
    with job.database(settings, args.database) as url:
        counts = table_counts(url, args.run_id)
    if not counts.found:
        log.warning("run %s: no rows in any table of %s", args.run_id, redact(url))
    width = max(len(t) for t in counts.tables)
    lines = [f"run {args.run_id} in {redact(url)}"]
    lines += [f"  {table:<{width}}  {n:>10,}" for table, n in counts.tables.items()]
    _emit(args, counts.to_dict(), "\n".join(lines))
    return 0


def _db_digest(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.sinks.digest import digest

    with job.database(settings, args.database) as url:
        result = digest(url, args.run_id)
    width = max(len(name) for name in result.to_dict())
    lines = [f"run {args.run_id} in {redact(url)}"]
    lines += [f"  {name:<{width}}  {value}" for name, value in result.to_dict().items()]
    _emit(args, result.to_dict(), "\n".join(lines))
    return 0


def _instant(text: str) -> dt.datetime:
    """An ISO 8601 instant for --from / --to; UTC when it names no zone."""
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def cmd_grafana(settings: Settings, args: argparse.Namespace) -> int:
    """``workbench grafana check``: every dashboard query, run against the database."""
    from workbench.grafana import check  # psycopg, yaml: only for this command
    from workbench.grafana.dashboards import load_dashboards
    from workbench.grafana.macros import TimeRange

    if (args.time_from is None) != (args.time_to is None):
        raise ConfigError("--from/--to", args.time_from or args.time_to, "both or neither")
    if args.database and sink_kind(args.database, "--database") == "sqlite":
        raise ConfigError(
            "--database", args.database, "a postgresql:// URL (Grafana reads PostgreSQL)"
        )
    if args.time_from and args.time_to < args.time_from:
        raise ConfigError("--to", args.time_to.isoformat(), "a time after --from")
    span = TimeRange(args.time_from, args.time_to) if args.time_from else None
    folder = Path(args.dashboards) if args.dashboards else None
    try:  # a missing folder or a broken file stops us before the database starts
        load_dashboards(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError("--dashboards", str(folder or "grafana/dashboards"), str(exc)) from None
    with job.database(settings, args.database) as url:
        report = check.check(url, args.run_id, span, folder)
    _emit(args, report.to_dict(), report.text())
    return 0 if report.ok else 1


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from workbench import bench

    endpoints = job.ready_stack(settings)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    skipped = {"processor": args.skip_processor, "archive": args.skip_archive,
               "memory": args.skip_memory, "gateway": args.skip_gateway,
               "sink": args.skip_sink}  # fmt: skip
    result = bench.run_benchmark(
        settings,
        endpoints.broker,
        endpoints.database_url,
        f"bench.{stamp}",
        parts=[p for p in bench.PARTS if not skipped.get(p)],
        machines=args.machines,
        duration_s=args.duration,
        repeats=args.repeats,
        sink_rows=args.sink_rows,
        latency_rate=args.latency_rate,
        latency_s=args.latency_seconds,
        rss_machines=args.rss_machines,
        rss_duration_s=args.rss_duration,
    )
    out = (
        Path(args.out) if args.out else project_root() / "reports" / "bench" / f"bench-{stamp}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _emit(args, result, bench.table(result) + f"\n\nwritten to {out}")
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    return gateway_command.run(settings, args)


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.lab import report as reports  # nbformat/jsonschema: seconds to import

    folder = Path(args.notebooks) if args.notebooks else None
    if args.list:
        notebooks = [nb.to_dict() for nb in reports.list_notebooks(folder)]
        lines = [f"{nb['name']}: " + ", ".join(f"{k}={v['default']!r}"
                 for k, v in nb["parameters"].items()) for nb in notebooks]  # fmt: skip
        _emit(args, {"notebooks": notebooks}, "\n".join(lines))
        return 0
    out = Path(args.out) if args.out else project_root() / "reports"
    if args.history:
        from workbench.lab import history
        from workbench.lab.index import write_index

        found = history.series(history.load(out))
        if found:
            write_index(out)  # the page agrees with what is printed
        data = {"ok": all(s.ok for s in found), "series": [s.to_dict() for s in found]}
        _emit(args, data, "\n".join(s.text() for s in found) or f"no reports in {out}")
        return 0 if data["ok"] else 1
    if args.all == bool(args.name):
        raise ConfigError("report", args.name or "", "a notebook NAME, --all, --list or --history")
    if not args.all:
        r = reports.run(args.name, dict(args.parameter), out, args.keep_code,
                        progress=sys.stderr.isatty(), folder=folder)  # fmt: skip
        _emit(args, r.to_dict(), f"{r.executed}\n{r.html}\n{r.results}")
        return 0
    names = [nb.name for nb in reports.list_notebooks(folder)]
    done, failed = [], []
    for i, name in enumerate(names, 1):
        log.info("report %d of %d: %s", i, len(names), name)
        try:
            r = reports.run(name, dict(args.parameter), out, args.keep_code,
                            progress=sys.stderr.isatty(), folder=folder)  # fmt: skip
        except reports.ReportFailed as exc:  # a scheduled run goes on to the next notebook
            log.error("%s", exc)
            failed.append(name)
            continue
        done.append(r.to_dict())
    text = "\n".join(f"{r['executed']}\n{r['html']}\n{r['results']}" for r in done)
    _emit(args, {"reports": done, "failed": failed}, text)
    if failed:
        raise reports.ReportFailed(f"{len(failed)} of {len(names)} notebooks failed: "
                                   f"{', '.join(failed)} (see reports/index.html)")  # fmt: skip
    return 0


def cmd_lab(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.lab import jupyter  # jupyter_core, and pandas through workbench.lab

    options = jupyter.LabOptions.from_args(args.notebooks, args.ip, args.port, args.no_browser)
    return jupyter.run(settings, options)


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    from workbench.models import health

    recent_s = health.recent_seconds(args.recent)
    with job.database(settings, args.database) as url:
        run_id = args.run or health.latest_run(url)
        if args.machine:
            found = [health.health(url, run_id, args.machine, recent_s)]
        else:
            found = health.health_all(url, run_id, recent_s)
        saved = health.save(url, found) if args.save else None
    data = {"run_id": run_id, "recent_s": recent_s, "machines": [h.to_dict() for h in found]}
    text = "\n".join(h.text() for h in found) or f"run {run_id} has no machines"
    if saved is not None:
        data["saved"] = saved
        text += f"\nsaved {saved} machine(s) to the machine_health table"
    _emit(args, data, text)
    return 0


def cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    readings_s = args.readings or settings.retention_readings_s
    windows_s = args.windows or settings.retention_windows_s
    if windows_s < readings_s:
        raise ConfigError("--windows", windows_s, f"at least --readings ({readings_s:g} s)")
    endpoints = job.ready_stack(settings)
    eng = engine(endpoints.database_url)
    try:
        with eng.begin() as conn:
            result = prune(
                conn,
                dt.timedelta(seconds=readings_s),
                dt.timedelta(seconds=windows_s),
                dry_run=args.dry_run,
            )
    finally:
        eng.dispose()
    verb = "would delete" if result.dry_run else "deleted"
    text = f"{verb}: " + (", ".join(f"{n} {t}" for t, n in result.rows.items() if n) or "nothing")
    _emit(args, {"dry_run": result.dry_run, "rows": result.rows, "runs": result.runs}, text)
    return 0


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "simulate": cmd_simulate,
    "process": cmd_process,
    "tail": cmd_tail,
    "run": cmd_run,
    "bench": cmd_bench,
    "evaluate": cmd_evaluate,
    "prune": cmd_prune,
    "report": cmd_report,
    "archive": cmd_archive,
    "replay": cmd_replay,
    "db": cmd_db,
    "grafana": cmd_grafana,
    "gateway": cmd_gateway,
    "lab": cmd_lab,
    "model": model_command.run,
    "health": cmd_health,
}

if __name__ == "__main__":
    sys.exit(main())
