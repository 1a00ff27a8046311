"""Load the compiled kernels before the first real batch.

numba loads a kernel's machine code from its on-disk cache the first time the kernel is
called, ~0.4 s for all of them: without a warm-up, the first readings a processor handles
wait that long (and a benchmark's latency tail shows it). :func:`warm_up` runs a short
made-up stream, with a fault in it, through every step on a throwaway state, before the
processor joins its consumer group.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from workbench.processor import steps
from workbench.processor.batch import Batch
from workbench.processor.decode import MachineTable
from workbench.processor.intake import Intake
from workbench.processor.rules import RuleSet
from workbench.processor.state import EngineConfig, PartitionState
from workbench.processor.validate import Limits

log = logging.getLogger(__name__)

WARM_UP_RUN = "warm-up"
SECONDS = 420.0  # past the widest default window (300 s), so windows close


def warm_up(config: EngineConfig, rules: RuleSet, limits: Limits) -> float:
    """Run a made-up stream through every step once; return the seconds it took.

    Nothing leaves this function: the state, the machines and the output are thrown away.
    """
    from workbench.simulator.control import ChaosControl, parse_chaos
    from workbench.simulator.physics import FactoryConfig
    from workbench.simulator.source import Simulation

    t0 = time.perf_counter()
    messages: list[tuple[bytes, bytes]] = []
    chaos = ChaosControl(parse_chaos("spike=0.01,stuck=0.05,drift=0.05,duplicate=0.01"))
    Simulation(FactoryConfig(machines=2, seed=1), WARM_UP_RUN, chaos).run(
        lambda k, v: messages.append((k, v)), SECONDS
    )
    machines = MachineTable()
    intake = Intake(machines, limits, "warm-up")
    state = PartitionState(config, rules, machines)
    wall_s = time.monotonic()
    half = len(messages) // 2
    for start, chunk in ((0, messages[:half]), (half, messages[half:])):
        _feed(intake, state, chunk, start, control=False, wall_s=wall_s)
        steps.due(state, wall_s, provisional=True, idle_since=None, idle_timeout_s=None)
    _feed(intake, state, [(b"", b"")], len(messages), control=True, wall_s=wall_s)
    steps.due(state, wall_s, provisional=False, idle_since=wall_s, idle_timeout_s=0.0)
    steps.forget_dropped(state)
    # a restore from a checkpoint compiles (and the ahead-of-time build exports) the
    # kernels only a restore calls
    checkpoint = state.snapshot()
    PartitionState.restore(config, rules, machines, checkpoint.state, checkpoint.segments)
    seconds = time.perf_counter() - t0
    log.debug("kernels warmed up in %.2fs", seconds)
    return seconds


def _feed(
    intake: Intake,
    state: PartitionState,
    chunk: list[tuple[bytes, bytes]],
    start: int,
    control: bool,
    wall_s: float,
) -> None:
    n = len(chunk)
    batch = Batch(
        values=[v for _, v in chunk],
        keys=[k for k, _ in chunk],
        partition=np.zeros(n, np.int64),
        offset=np.arange(start, start + n, dtype=np.int64),
        run=np.zeros(n, np.int64),
        run_names=[WARM_UP_RUN],
        control=np.full(n, control, bool),
        created_ms=np.zeros(n, np.int64),
    )
    taken = intake.take(batch, int(time.time() * 1000))
    rows, markers = taken.partition(0)
    steps.process(state, rows, batch.run_names, markers, wall_s)
