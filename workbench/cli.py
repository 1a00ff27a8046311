"""The ``workbench`` command: argument parsing only; every command calls the package.

Errors the user can act on print one line (``workbench: error: ...``) and exit 1;
``--json`` output goes to stdout alone, logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from workbench import job
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.processor.pipeline import Processor
from workbench.runs import RunRegistry, new_run_id
from workbench.simulator.physics import FactoryConfig
from workbench.stack import Endpoints, Stack

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


def _add_factory_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--machines", type=_positive_int, default=5, help="machines (default 5)")
    p.add_argument(
        "--duration", type=_positive_float, default=30.0, help="seconds of event time (default 30)"
    )
    p.add_argument(
        "--rate", type=_positive_float, default=1.0, help="samples/s per sensor per machine (1)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--run-id", help="name the run (default: time + random suffix)")
    p.add_argument(
        "--realtime", action="store_true", help="pace event time to the wall clock (default: max)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="IoT streaming lab: simulate a factory, stream it through Kafka, "
        "process it into PostgreSQL, report what happened.",
        epilog="Settings come from WORKBENCH_* environment variables; see the README.",
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

    p = sub.add_parser("simulate", help="produce a simulated factory to the raw topic")
    _add_factory_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = sub.add_parser("process", help="consume the raw topic into the database")
    p.add_argument("--idle-timeout", type=_positive_float, help="stop after this many idle seconds")
    p.add_argument("--max-messages", type=_positive_int, help="stop after this many messages")
    p.add_argument("--group", help="consumer group (default WORKBENCH_CONSUMER_GROUP)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    p = sub.add_parser("run", help="simulate + process + store end to end, and check the books")
    _add_factory_args(p)
    p.add_argument(
        "--keep-up", action="store_true", help="leave an embedded stack this run started running"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("workbench").setLevel(level)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        settings = Settings.from_env()
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
    stopped = Stack(settings).down()
    text = ", ".join(f"{k} {'stopped' if v else 'was not running'}" for k, v in stopped.items())
    _emit(args, {"stopped": stopped}, text)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    status = Stack(settings).status()
    lines = [
        f"{name:<9}{'running' if part['running'] else 'stopped':<9}"
        f"{'embedded' if part['embedded'] else 'external':<10}{part['address'] or ''}"
        for name, part in status.items()
    ]
    _emit(args, status, "\n".join(lines))
    return 0


def _ready_stack(settings: Settings) -> Endpoints:
    """Attach to or start the stack, and leave it running: the other half of the pipeline
    (processor or simulator, in another command) still needs it. Topics and tables exist
    on return."""
    endpoints, started = Stack(settings).up()
    if started:
        log.info("started embedded %s; `workbench down` stops it", " and ".join(started))
    job.prepare(settings, endpoints)
    return endpoints


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    factory = FactoryConfig(machines=args.machines, rate_hz=args.rate, seed=args.seed)
    run_id = args.run_id or new_run_id()
    endpoints = _ready_stack(settings)
    registry = RunRegistry(endpoints.database_url)
    params = {"machines": args.machines, "duration_s": args.duration, "rate_hz": args.rate,
              "realtime": args.realtime}  # fmt: skip
    registry.start(run_id, "simulate", args.seed, params)
    report = job.simulate(settings, endpoints, factory, args.duration, run_id, args.realtime)
    ok = report.failed == 0
    registry.finish(run_id, "completed" if ok else "failed", produced=report.delivered)
    registry.close()
    data = {"run_id": run_id, "produced": report.delivered, "failed": report.failed,
            "sha256": report.sha256, "topic": settings.topic_raw}  # fmt: skip
    _emit(args, data, f"run {run_id}: produced {report.delivered} readings to {settings.topic_raw}")
    return 0 if ok else 1


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    endpoints = _ready_stack(settings)
    processor = Processor(
        settings, endpoints.bootstrap_servers, endpoints.database_url, group_id=args.group
    )
    stop = threading.Event()
    # Ctrl-C or SIGTERM: finish the batch in hand, commit, leave the group, then exit
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stats = processor.run(stop, idle_timeout_s=args.idle_timeout, max_messages=args.max_messages)
    data = {
        "consumed": stats.consumed,
        "stored": stats.stored,
        "duplicates": stats.duplicates,
        "deadlettered": stats.deadlettered,
        "batches": stats.batches,
        "per_run": stats.per_run,
    }
    _emit(
        args,
        data,
        f"consumed {stats.consumed}: stored {stats.stored}, {stats.duplicates} duplicates "
        f"absorbed, {stats.deadlettered} dead-lettered",
    )
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    summary = job.run_experiment(
        settings,
        machines=args.machines,
        duration_s=args.duration,
        seed=args.seed,
        rate_hz=args.rate,
        run_id=args.run_id,
        realtime=args.realtime,
        keep_up=args.keep_up,
    )
    s = summary
    text = "\n".join(
        [
            f"run {s.run_id}: {s.machines} machines, {s.duration_s:g}s of event time "
            f"at {s.rate_hz:g} Hz, seed {s.seed}",
            f"  produced       {s.produced}",
            f"  stored         {s.stored}",
            f"  dead-lettered  {s.deadlettered}",
            f"  elapsed        {s.elapsed_s:.1f}s ({s.events_per_s:,.0f} events/s end to end)",
            f"  books close    {'yes' if s.reconciled else 'NO'}",
        ]
    )
    _emit(args, summary.to_dict(), text)
    return 0 if summary.reconciled else 1


COMMANDS = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
    "simulate": cmd_simulate,
    "process": cmd_process,
    "run": cmd_run,
}

if __name__ == "__main__":
    sys.exit(main())
