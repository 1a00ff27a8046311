"""Everything the processor knows about one Kafka partition, as named arrays, and its
checkpoints.

A :class:`PartitionState` holds the key table (:mod:`workbench.processor.keys`) and, indexed
by its ids, the state of every step: re-delivery (:mod:`~workbench.processor.dedup`), the
watermarks of the partition's runs (:mod:`~workbench.processor.watermark`), windows, rolling
means, sensor statistics, the machine model (when a rule uses it) and rule hysteresis. A
checkpoint is all of it as plain arrays in
one zstd-compressed ``np.savez`` file (names prefixed by the step, plus a JSON header with
the format version and the settings the arrays depend on), written in the same database
transaction as the batch it follows, with the offset it was taken at. The values of final
windows, most of a partition's state, are not in it: they are in sealed cold segments
(:mod:`~workbench.processor.cold`), each stored once, with the first checkpoint that refers
to it, and deleted with the first that no longer does: checkpoints are incremental. No pickles: a
checkpoint does not depend on the classes that wrote it, and the rules are not in it: a
restored partition applies the rules file of the process that restores it.
"""

from __future__ import annotations

import io
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from workbench.errors import ConfigError
from workbench.processor.decode import MachineTable
from workbench.processor.dedup import DedupState
from workbench.processor.hysteresis import RuleEngine
from workbench.processor.keys import KeyTable
from workbench.processor.predict import FeatureState, Predictor, ring_depth
from workbench.processor.rolling import RollingState
from workbench.processor.rules import RuleSet
from workbench.processor.stats import SensorStatsState
from workbench.processor.stats.machine import MachineModelState, sensor_masks
from workbench.processor.watermark import WatermarkState
from workbench.processor.windows import WindowConfig, WindowState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """A partition's checkpoint as it is stored: the state, and the cold segments
    (:mod:`~workbench.processor.cold`) to store with it and to delete."""

    #: everything but the sealed cold segments: see :meth:`Snapshot.encode`
    state: bytes
    #: sealed segments no earlier checkpoint carried, by number (compressed already)
    segments: Mapping[int, bytes] = field(default_factory=dict)
    #: segments earlier checkpoints carried that this one no longer refers to
    dropped: Sequence[int] = ()


@dataclass(frozen=True)
class Snapshot:
    """A partition's state at one offset, as arrays of its own (see
    :meth:`PartitionState.capture`), and the cold segments new or dropped since the last."""

    arrays: dict[str, np.ndarray]
    segments: Mapping[int, bytes] = field(default_factory=dict)
    dropped: Sequence[int] = ()

    def encode(self) -> Checkpoint:
        """The arrays as one ``.npz`` file, zstd-compressed as it is written (never whole
        and uncompressed in memory): ~8x smaller (arrays of similar numbers compress well),
        which is what a checkpoint costs the database."""
        return Checkpoint(self._npz(), self.segments, self.dropped)

    def _npz(self) -> bytes:
        out = io.BytesIO()
        out.write(ZSTD_MAGIC + bytes(8))  # the uncompressed size goes here at the end
        with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as z:
            counted = _Counted(z)
            np.savez(counted, **self.arrays)
        out.getbuffer()[4:12] = counted.size.to_bytes(8, "big")
        return out.getvalue()


class _Counted:
    """A write-only stream that counts what passes through (zipfile copes without seek)."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.size = sink, 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.sink.write(data)
        self.size += n
        return n

    def flush(self) -> None:
        self.sink.flush()

    def read(self, *_: Any) -> bytes:  # numpy takes an object with read() for a file
        raise io.UnsupportedOperation("write-only")


#: Version of the checkpoint layout; a checkpoint of another version is not restored.
FORMAT = 2
#: The first bytes of a zstd-compressed checkpoint (then its size, then the frame).
ZSTD_MAGIC = b"WBZ1"
#: Ended runs remembered per partition (their late readings are recognised as such).
ENDED_KEPT = 1000
#: Event-time seconds a reading may be ahead of its run before it waits for confirmation.
MAX_CLOCK_JUMP_S = 3600.0
#: Rolling means stay exact for readings this far (event time) behind their key's newest
#: (``WORKBENCH_ROLLING_HISTORY_S``).
ROLLING_HISTORY_S = 60.0


@dataclass(frozen=True)
class EngineConfig:
    """The settings a partition's state depends on (a checkpoint records them)."""

    windows: WindowConfig
    max_clock_jump_s: float = MAX_CLOCK_JUMP_S
    rolling_history_s: float = ROLLING_HISTORY_S

    def header(self) -> dict:
        w = self.windows
        return {"widths_s": list(w.widths_s), "allowed_lateness_s": w.allowed_lateness_s,
                "late_policy": w.late_policy, "quantile": w.quantile,
                "correction_horizon_s": w.correction_horizon_s,
                "max_clock_jump_s": self.max_clock_jump_s,
                "rolling_history_s": self.rolling_history_s}  # fmt: skip


class PartitionState:
    """The state of one partition: keys, and per key the state of every step."""

    def __init__(
        self,
        config: EngineConfig,
        rules: RuleSet,
        machines: MachineTable,
        predictors: Sequence[Predictor] = (),
    ) -> None:
        self.config = config
        self.rules = rules
        #: the models that score machine-minutes, and the features they are given (if any)
        self.predictors = tuple(predictors)
        self.features = FeatureState(_depth(config)) if self.predictors else None
        w = config.windows
        self.keys = KeyTable(machines)
        self.dedup = DedupState()
        self.clock = WatermarkState(_ms(w.allowed_lateness_s), _ms(config.max_clock_jump_s))
        self.windows = WindowState(w)
        self.rolling = RollingState(tuple(_ms(x) for x in w.widths_s),
                                    _ms(config.rolling_history_s))  # fmt: skip
        self.stats = SensorStatsState(q=w.quantile)
        #: the machine model, when a rule needs it
        self.model = MachineModelState(rules.model) if rules.uses_model else None
        #: per sensor code: taken by the model, a load sensor
        self.model_takes, self.model_load = sensor_masks(
            rules.modelled_sensors, rules.model.load_sensors
        )
        self.alerts = RuleEngine(rules)
        #: keys whose statistics changed since they were last written
        self.changed = np.zeros(0, dtype=np.bool_)
        #: runs ended on this partition (oldest first), by name
        self.ended: OrderedDict[str, None] = OrderedDict()
        #: wall time (monotonic) of each run's last reading, by run id: for idleness only
        self.last_wall: dict[int, float] = {}
        #: runs to forget once the batch's results are out (ended, or quiet)
        self.dropping: set[int] = set()

    def grow(self) -> None:
        """Make every step's arrays as long as the key table."""
        n = self.keys.n_keys
        for part in (self.dedup, self.windows, self.rolling, self.stats):
            part.grow(n)
        self.alerts.grow(max(n, self.keys.n_mkeys))
        if self.model is not None:
            self.model.grow(n, self.keys.n_mkeys)
        if self.features is not None:
            self.features.grow(n)
        self.clock.grow(len(self.keys.runs))
        if self.changed.size < n:
            self.changed = np.concatenate([self.changed, np.zeros(n - self.changed.size, bool)])

    def end(self, run: str) -> None:
        self.ended[run] = None
        self.ended.move_to_end(run)
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)

    def drop_runs(self, runs: set[int]) -> None:
        """Forget runs and everything of their keys (after their results went out)."""
        if not runs:
            return
        keys, mkeys, kept_runs = self.keys.drop_runs(runs)
        for part in (self.dedup, self.rolling, self.stats):
            part.keep(keys)
        self.windows.keep(keys, kept_runs)
        self.alerts.keep(keys, mkeys)
        if self.model is not None:
            self.model.keep(keys, mkeys)
        if self.features is not None:
            self.features.keep(keys)
        self.clock.keep(kept_runs)
        self.changed = self.changed[keys]
        remap = {old: new for new, old in enumerate(kept_runs.tolist())}
        self.last_wall = {remap[r]: t for r, t in self.last_wall.items() if r in remap}

    # -- checkpoints ---------------------------------------------------------------------

    def capture(self) -> Snapshot:
        """The state as copied arrays, cheap enough for the consume thread; the writer
        encodes it (:meth:`Snapshot.encode`) off the hot path. Sealed cold segments are
        immutable: each comes once, with the first snapshot that refers to it."""
        return self._arrays(copy=True)

    def snapshot(self) -> Checkpoint:
        """The state as one checkpoint, encoded here (no copies kept)."""
        return self._arrays(copy=False).encode()

    def _arrays(self, copy: bool) -> Snapshot:
        arrays: dict[str, np.ndarray] = {}
        parts = {"keys": self.keys, "dedup": self.dedup, "clock": self.clock,
                 "windows": self.windows, "rolling": self.rolling, "stats": self.stats,
                 "alerts": self.alerts}  # fmt: skip
        if self.model is not None:
            parts["model"] = self.model
        if self.features is not None:
            parts["features"] = self.features
        for prefix, part in parts.items():
            for name, value in part.arrays().items():
                # a copy when the state moves on while the snapshot waits to be encoded
                arrays[f"{prefix}.{name}"] = np.array(value) if copy else np.asarray(value)
        arrays["changed"] = self.changed.copy() if copy else self.changed
        header = {"format": FORMAT, "config": self.config.header(), "ended": list(self.ended)}
        if self.model is not None:
            header["model"] = self.model.config.header()
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        cold = self.windows.cold
        return Snapshot(arrays, cold.take_new(), cold.take_dropped())

    @classmethod
    def restore(
        cls,
        config: EngineConfig,
        rules: RuleSet,
        machines: MachineTable,
        data: bytes,
        segments: Mapping[int, bytes] | None = None,
        predictors: Sequence[Predictor] = (),
    ) -> PartitionState:
        """Rebuild from a checkpoint's state and the cold segments stored with it and with
        earlier ones. Raises :class:`ConfigError` when the checkpoint is of another format,
        was taken under settings its arrays depend on (window widths, lateness, ...) or
        lacks a segment: such a partition starts afresh instead."""
        if data[:4] == ZSTD_MAGIC:
            size = int.from_bytes(data[4:12], "big")
            data = zstandard.ZstdDecompressor().decompress(data[12:], max_output_size=size)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(arrays.pop("header").tobytes())
        changed = arrays.pop("changed")
        if header.get("format") != FORMAT:
            raise ConfigError("checkpoint", f"format {header.get('format')}", f"format {FORMAT}")
        # the rolling history may change across a restart: it only bounds how late a reading
        # may be for exact means (values older than a new, longer one come back as they age)
        if _but_history(header["config"]) != _but_history(config.header()):
            raise ConfigError("checkpoint", json.dumps(header["config"]),
                              f"the current settings {json.dumps(config.header())}")  # fmt: skip
        parts: dict[str, dict[str, np.ndarray]] = {}
        for name, value in arrays.items():
            prefix, _, rest = name.partition(".")
            parts.setdefault(prefix, {})[rest] = value
        state = cls(config, rules, machines, predictors)
        w = config.windows
        state.keys = KeyTable.from_arrays(parts["keys"], machines)
        state.dedup = DedupState.from_arrays(parts["dedup"])
        state.clock = WatermarkState.from_arrays(
            parts["clock"], _ms(w.allowed_lateness_s), _ms(config.max_clock_jump_s)
        )
        try:
            state.windows = WindowState.from_arrays(parts["windows"], w, segments)
        except KeyError as exc:
            raise ConfigError("checkpoint", exc.args[0], "every segment it refers to") from None
        state.rolling = RollingState.from_arrays(parts["rolling"])
        state.rolling.set_history(_ms(config.rolling_history_s))
        state.stats = SensorStatsState.from_arrays(parts["stats"])
        state.alerts = RuleEngine.from_arrays(parts["alerts"], rules)
        state.model = _model(rules, header.get("model"), parts.get("model"))
        if state.predictors:
            state.features = _features(parts.get("features"), state.keys.n_keys,
                                       _depth(config))  # fmt: skip
        state.changed = changed.copy()
        for run in header["ended"]:
            state.ended[run] = None
        return state


def _model(
    rules: RuleSet, saved: dict | None, arrays: dict[str, np.ndarray] | None
) -> MachineModelState | None:
    """The machine model a checkpoint kept, when the rules still use it under the same
    settings; a fresh one (it learns again) when it had none or other settings."""
    if not rules.uses_model:
        return None
    if arrays is not None and saved == rules.model.header():
        return MachineModelState.from_arrays(arrays, rules.model)
    log.info("the machine model starts afresh: the checkpoint has %s",
             "another model's settings" if arrays is not None else "no model")  # fmt: skip
    return MachineModelState(rules.model)


def _depth(config: EngineConfig) -> int:
    w = config.windows
    return ring_depth(w.correction_horizon_s, w.late_policy)


def _features(arrays: dict[str, np.ndarray] | None, n_keys: int, depth: int) -> FeatureState:
    """The feature history a checkpoint kept; an empty one (the first minutes' trend
    features missing) when it was taken without a model in use."""
    try:
        if arrays is None:
            raise ValueError("the checkpoint has none")
        state = FeatureState.from_arrays(arrays, depth)
    except ValueError as exc:
        log.info("the model's feature history starts afresh: %s", exc)
        state = FeatureState(depth)
    state.grow(n_keys)
    return state


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _but_history(header: dict) -> dict:
    return {k: v for k, v in header.items() if k != "rolling_history_s"}
