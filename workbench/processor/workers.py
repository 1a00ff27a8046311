"""``workbench process --workers N``: N processor processes in one consumer group.

One Python process uses one core for its steps; more cores need more processes. The group
coordinator gives each worker a share of the partitions (so N is useful up to the partition
count), and checkpoints move a partition's state when the assignment changes, so results do
not depend on how many workers there are. The parent only starts, stops and sums them up:
Ctrl-C or SIGTERM asks every worker to finish the batch in hand, commit and leave the group.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from workbench.config import Settings
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench import kafka

log = logging.getLogger(__name__)


class WorkerFailed(WorkbenchError):
    """A worker process stopped with an error; the message names the worker and the error."""


def _worker(
    index: int,
    settings: Settings,
    broker: kafka.Endpoint,
    database_url: str,
    group_id: str | None,
    idle_timeout_s: float | None,
    max_messages: int | None,
    stop: Any,
    results: Any,
    level: int,
    skip: tuple[tuple[int, int], ...] = (),
) -> None:
    """A worker's body (in its own process): run a processor until ``stop`` is set."""
    logging.basicConfig(level=logging.WARNING, format=f"%(levelname)s worker {index} %(name)s: "
                        "%(message)s")  # fmt: skip
    logging.getLogger("workbench").setLevel(level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from workbench.metrics import processor_metrics
    from workbench.processor.loop import Processor
    from workbench.processor.malloc import fix_mmap_threshold

    fix_mmap_threshold()
    try:
        # each worker its own metrics server: port + index (see workbench.metrics)
        with processor_metrics(settings.metrics_port, settings.metrics_host, index) as metrics:
            processor = Processor(settings, broker, database_url, group_id=group_id,
                                  skip=skip, metrics=metrics)  # fmt: skip
            stats = processor.run(stop, idle_timeout_s=idle_timeout_s,
                                  max_messages=max_messages)  # fmt: skip
        summary = asdict(stats)
        summary.pop("latency_ms", None)
        summary.pop("_seen", None)
        results.put((index, summary, None))
    except BaseException as exc:  # reported by the parent, with the worker's number
        results.put((index, None, f"{type(exc).__name__}: {exc}"))


def run_workers(
    settings: Settings,
    broker: kafka.Endpoint,
    database_url: str,
    workers: int,
    group_id: str | None = None,
    idle_timeout_s: float | None = None,
    max_messages: int | None = None,
    stop: Any = None,
    skip: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """Run ``workers`` processors in separate processes until they stop (idle timeout,
    ``max_messages`` each, or ``stop`` set: an ``multiprocessing`` event, or None to stop on
    SIGINT/SIGTERM); return their summed statistics and one summary per worker."""
    ctx = mp.get_context("spawn")
    stop = stop or ctx.Event()
    results = ctx.Queue()
    level = logging.getLogger("workbench").getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_worker,
            name=f"workbench-worker-{i}",
            daemon=False,
            args=(
                i,
                settings,
                broker,
                database_url,
                group_id,
                idle_timeout_s,
                max_messages,
                stop,
                results,
                level,
                skip,
            ),
        )
        for i in range(workers)
    ]
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        for p in procs:
            p.start()
        log.info("started %d workers in consumer group %s", workers,
                 group_id or settings.consumer_group)  # fmt: skip
        got: dict[int, tuple[dict | None, str | None]] = {}
        while len(got) < workers:
            try:
                index, summary, error = results.get(timeout=0.5)
                got[index] = (summary, error)
                if error is not None:
                    stop.set()  # one worker failed: the others finish their batch and stop
            except Exception:  # queue.Empty: see whether a worker died without a word
                for i, p in enumerate(procs):
                    if i not in got and not p.is_alive() and p.exitcode is not None:
                        got[i] = (None, f"exited with code {p.exitcode}")
                        stop.set()
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failures = [f"worker {i}: {err}" for i, (_s, err) in sorted(got.items()) if err]
    if failures:
        raise WorkerFailed("; ".join(failures))
    per_worker = [got[i][0] or {} for i in range(workers)]
    total: dict[str, Any] = {}
    for s in per_worker:
        for k, v in s.items():
            if isinstance(v, int):
                total[k] = total.get(k, 0) + v
            elif isinstance(v, dict):
                merged = total.setdefault(k, {})
                for run, n in v.items():
                    merged[run] = merged.get(run, 0) + n
    total["workers"] = per_worker
    return total
