"""The processor's state, kept per partition and, within it, per run: windows, rolling means,
River statistics and alert hysteresis. All of it is checkpointed with the data it reflects.

Each run is its own event-time universe (a seeded run starts at a fixed origin, so two
runs replayed one after the other cover the same event times), so the watermark, windows,
statistics and alerts of one run never see another's readings. A run's state is dropped
once it has been quiet for a while and its windows are final.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field

import numpy as np

from workbench.processor.legacy.alerts import AlertEngine, AlertEvent
from workbench.processor.legacy.rolling import RollingMeans
from workbench.processor.legacy.stats import SensorStats
from workbench.processor.legacy.windows import PartitionWindows, WindowConfig, WindowResult
from workbench.processor.rules import RuleSet
from workbench.processor.stats import machine
from workbench.processor.validate import Reading
from workbench.schemas import sensor_types

#: Sequence numbers remembered per sensor to recognise a re-delivered reading.
RECENT = 32


class MachineModel:
    """The machine model (:mod:`workbench.processor.stats.machine`) of one run, a reading at
    a time: the model has one implementation, which the batch engine runs on columns."""

    def __init__(self, rules: RuleSet) -> None:
        self.state = machine.MachineModelState(rules.model)
        self.takes, self.is_load = machine.sensor_masks(
            rules.modelled_sensors, rules.model.load_sensors
        )
        self.codes = {name: i for i, name in enumerate([*sensor_types(), "unknown"])}
        self.keys: dict[tuple[str, str], int] = {}
        self.machines: dict[str, int] = {}

    def score(self, r: Reading) -> float | None:
        """The reading's score (None: the model does not take it, or has none yet)."""
        off = r.status_code != 0
        code = self.codes.get(r.sensor_type, len(self.codes) - 1)
        taken = r.value is not None and not off and bool(self.takes[code])
        if not (taken or off):
            return None
        k = self.keys.setdefault((r.machine_id, r.sensor_type), len(self.keys))
        m = self.machines.setdefault(r.machine_id, len(self.machines))
        self.state.grow(len(self.keys), len(self.machines))
        (score,) = machine.update(
            self.state, np.array([k]), np.array([m]), np.array([code]),
            np.array([r.ts_ms]), np.array([np.nan if r.value is None else r.value], np.float64),
            np.array([taken]), self.is_load, np.array([off]),
        ).tolist()  # fmt: skip
        return None if math.isnan(score) else score


@dataclass
class RunState:
    """Everything the processor knows about one run on one partition."""

    windows: PartitionWindows
    rolling: RollingMeans
    alerts: AlertEngine
    stats: dict[tuple[str, str], SensorStats] = field(default_factory=dict)
    last_wall_s: float = 0.0
    ended: bool = False
    late: int = 0
    late_dropped: int = 0
    redelivered: int = 0
    #: per (machine, sensor): the sequence numbers of its last readings, newest last
    recent: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: sensors whose statistics changed since :meth:`stats_due`
    changed: set[tuple[str, str]] = field(default_factory=set)
    #: the machine model, when a rule uses it
    model: MachineModel | None = None

    @classmethod
    def new(cls, windows: WindowConfig, rules: RuleSet) -> RunState:
        return cls(PartitionWindows(windows), RollingMeans(windows.widths_s), AlertEngine(rules),
                   model=MachineModel(rules) if rules.uses_model else None)  # fmt: skip

    def process(self, r: Reading, wall_s: float) -> tuple[Reading, list[AlertEvent]]:
        """Fold one valid reading in; return it enriched, and any alert transitions.

        A reading delivered twice (the same sequence number as one of the last
        ``RECENT`` of its sensor) counts once: the sink absorbs the second copy, and
        windows, statistics and alerts never see it.
        """
        self.last_wall_s = wall_s
        key = (r.machine_id, r.sensor_type)
        recent = self.recent.get(key)
        if recent is None:
            recent = self.recent[key] = []
        elif r.seq in recent:
            self.redelivered += 1
            return r, []
        recent.append(r.seq)
        if len(recent) > RECENT:
            del recent[0]
        outcome = self.windows.add(r.machine_id, r.sensor_type, r.ts_ms, r.value, wall_s)
        if outcome.late:
            self.late += 1
            self.late_dropped += outcome.dropped
        means = self.rolling.update(r.machine_id, r.sensor_type, r.ts_ms, r.value)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = SensorStats()
        features = stats.update(r.ts_ms, r.value)
        self.changed.add(key)
        model = self.model.score(r) if self.model is not None else None
        events = self.alerts.observe(
            r.machine_id, r.sensor_type, r.ts_ms, r.value, r.status_code, features, model
        )
        widths = self.windows.cfg.widths_s
        enriched = Reading(
            *r[:7],
            outcome.late,
            features.score,
            means.get(widths[0]),
            means.get(widths[1]) if len(widths) > 1 else None,
        )
        return enriched, events

    def end(self) -> list[AlertEvent]:
        """The run's end-of-run marker arrived: its windows close at the next flush, and
        breaches held back for a decision are decided now."""
        self.ended = True
        return self.alerts.flush()

    def stats_due(self, run_id: str) -> list[tuple]:
        """Rows (``SENSOR_STATS_COLUMNS``) of the sensors whose statistics changed."""
        rows = []
        for key in self.changed:
            st = self.stats[key]
            f = st.features
            rows.append((run_id, *key, st.n, st.nulls, st.late, _num(f.mean), _num(f.std),
                         _num(f.ewma), _num(f.ewstd), _num(f.quantile), _num(f.baseline),
                         f.score, st.drifts, st.last_ts))  # fmt: skip
        self.changed.clear()
        return rows

    def windows_due(self, wall_s: float, provisional: bool = True) -> list[WindowResult]:
        """Final windows now due (all of them once the run has ended), then, if asked,
        provisional results of the open windows that changed."""
        due = self.windows.close_all() if self.ended else self.windows.advance(wall_s)
        return due + self.windows.provisional() if provisional else due


def _num(x: float) -> float | None:
    return None if x != x else x  # NaN (not enough values yet) is stored as NULL


class PartitionState:
    """The states of every run seen on one partition, and the offset they reflect."""

    def __init__(self, windows: WindowConfig, rules: RuleSet) -> None:
        self.window_config = windows
        self.rules = rules
        self.runs: dict[str, RunState] = {}

    def run(self, run_id: str) -> RunState:
        state = self.runs.get(run_id)
        if state is None:
            state = self.runs[run_id] = RunState.new(self.window_config, self.rules)
        return state

    def evict_quiet(self, wall_s: float, after_s: float) -> list[str]:
        """Forget runs that ended, or have had no reading for ``after_s``, once their
        windows are all emitted."""
        gone = [
            run_id
            for run_id, st in self.runs.items()
            if (st.ended or wall_s - st.last_wall_s > after_s) and st.windows.window_count == 0
        ]
        for run_id in gone:
            del self.runs[run_id]
        return gone

    def snapshot(self) -> bytes:
        return pickle.dumps(
            {run_id: st.__dict__ | {"windows": st.windows.snapshot(),
                                    "rolling": st.rolling.snapshot()}
             for run_id, st in self.runs.items()},
            protocol=pickle.HIGHEST_PROTOCOL,
        )  # fmt: skip

    @classmethod
    def restore(cls, windows: WindowConfig, rules: RuleSet, data: bytes) -> PartitionState:
        """Rebuild from :meth:`snapshot`, possibly in another process: idle clocks restart
        from now (each process has its own monotonic clock)."""
        state = cls(windows, rules)
        now = time.monotonic()
        for run_id, fields in pickle.loads(data).items():
            fields = dict(fields, last_wall_s=now)
            fields["windows"] = PartitionWindows.restore(windows, fields["windows"], wall_s=now)
            fields["rolling"] = RollingMeans.restore(windows.widths_s, fields["rolling"])
            state.runs[run_id] = RunState(**fields)
        return state
