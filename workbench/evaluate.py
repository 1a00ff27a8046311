"""``workbench evaluate``: labelled files of public benchmarks replayed through the real
pipeline, its alerts scored as those benchmarks score, beside two baselines.

Each file is replayed as ``workbench replay`` does (the mapping detected from its columns,
its labels as ground truth), processed and stored by a processor with the rules in use, and
then scored (:mod:`workbench.analysis.benchmark`):

* **NAB score** under NAB's three profiles: the detections are the times the alerts
  opened, the windows are the file's labelled anomaly windows (NAB's ``labels.json``), or
  30 s windows after each labelled changepoint (SKAB's ``changepoint`` column), or else the
  blocks of rows labelled anomalous;
* **F1** of the rows flagged, for files with per-row labels (SKAB's ``anomaly`` column): a
  row is flagged while an alert of its machine is open (from the reading that opened it to
  the one that closed it), so the figure is causal, as the pipeline's alerts are.

Beside each score, two baselines computed on the same rows in the same command: the null
detector (no detection at all: NAB 0 by construction, F1 0) and a rolling z-score over the
previous day of readings (|z| > 5 on any column, one detection per excursion), the plain
detector any new one has to beat. Files are scored per machine and pooled as the benchmarks
pool a corpus (NAB: raw, null and perfect summed before normalising; F1: counts summed).

>>> # report = evaluate(Settings.from_env(), ["../shared/data/nab"])
>>> # report.to_dict()["pooled"]["nab"]["standard"]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.analysis.benchmark import (
    PROFILES,
    NabScore,
    OutlierScore,
    nab_scores,
    outlier_score,
    pool_nab_scores,
    pool_outlier_scores,
    rolling_zscore_columns,
    skab_changepoint_windows,
)
from workbench.config import Settings
from workbench.errors import ConfigError
from workbench.job import replay_experiment
from workbench.lab.queries import alerts as alerts_of
from workbench.simulator.csvsource import BadRow, CsvSource
from workbench.stack import Stack

log = logging.getLogger(__name__)

DETECTORS = ("pipeline", "null", "zscore")


@dataclass
class Scores:
    """One detector's scores of one file (or of the pool): NAB per profile, and the per-row
    outlier counts when the file has per-row labels."""

    nab: dict[str, NabScore]
    rows: OutlierScore | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "nab": {name: _round(s.normalised) for name, s in self.nab.items()},
            "f1": None if self.rows is None else _round(self.rows.f1, 4),
            "precision": None if self.rows is None else _round(self.rows.precision, 4),
            "recall": None if self.rows is None else _round(self.rows.recall, 4),
        }


@dataclass
class FileResult:
    """A file's scores by detector, with what the replay did."""

    file: str
    scores: dict[str, Scores]
    windows: int
    rows: int
    alerts: int
    run_id: str | None = None
    deadlettered: int = 0
    reconciled: bool = True
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        ours = self.scores["pipeline"].to_dict()
        return {
            "file": self.file,
            "nab": ours["nab"],
            **({"f1": ours["f1"]} if self._labelled else {}),
            "precision": ours["precision"],
            "recall": ours["recall"],
            "baselines": {
                name: _entry_scores(self.scores[name].to_dict(), self._labelled)
                for name in DETECTORS[1:]
            },
            "windows": self.windows,
            "rows": self.rows,
            "alerts": self.alerts,
            "run_id": self.run_id,
            "deadlettered": self.deadlettered,
            "reconciled": self.reconciled,
            "warnings": self.warnings,
        }

    @property
    def _labelled(self) -> bool:
        return self.scores["pipeline"].rows is not None


@dataclass
class EvaluationReport:
    """Every file's :class:`FileResult` and the pool (``workbench evaluate --json``)."""

    files: list[FileResult]

    def pooled(self) -> FileResult:
        scores = {}
        for name in DETECTORS:
            of = [f.scores[name] for f in self.files]
            rows = [s.rows for s in of if s.rows is not None]
            nab = {p: pool_nab_scores(s.nab[p] for s in of) for p in PROFILES}
            scores[name] = Scores(nab, pool_outlier_scores(rows) if rows else None)
        return FileResult(
            file="pooled",
            scores=scores,
            windows=sum(f.windows for f in self.files),
            rows=sum(f.rows for f in self.files),
            alerts=sum(f.alerts for f in self.files),
            deadlettered=sum(f.deadlettered for f in self.files),
            reconciled=all(f.reconciled for f in self.files),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"files": [f.to_dict() for f in self.files], "pooled": self.pooled().to_dict()}

    def text(self) -> str:
        head = f"{'file':<44} {'NAB std':>8} {'null':>6} {'z-score':>8} {'F1':>6} {'z F1':>6}"
        lines = [head]
        for f in [*self.files, self.pooled()]:
            d = f.to_dict()
            z = d["baselines"]["zscore"]
            name = f.file if len(f.file) <= 44 else "..." + f.file[-41:]
            lines.append(
                f"{name:<44} {_num(d['nab']['standard']):>8} "
                f"{_num(d['baselines']['null']['nab']['standard']):>6} "
                f"{_num(z['nab']['standard']):>8} {_num(d.get('f1')):>6} {_num(z.get('f1')):>6}"
            )
            lines += [f"  WARNING {w}" for w in f.warnings]
        return "\n".join(lines)


def csv_files(paths: Iterable[str | Path]) -> list[Path]:
    """The CSV files named, and those under the directories named, in a stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(x for x in p.rglob("*.csv") if x.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise ConfigError("path", str(p), "a CSV file or a directory of them")
    if not found:
        raise ConfigError("paths", ", ".join(map(str, paths)), "at least one CSV file")
    return found


def evaluate(
    settings: Settings, paths: Sequence[str | Path], mapping: str | None = None
) -> EvaluationReport:
    """Replay, process and score every labelled file under ``paths`` (see the module
    docstring). The stack is started once for all of them (and stopped again if this
    started it); files without any label are reported and skipped."""
    files = csv_files(paths)
    sources = [CsvSource.open(f, mapping) for f in files]  # every file checked first
    results = []
    with Stack(settings).session() as endpoints:
        for source in sources:
            truth = _Truth.read(source)
            if not truth.labelled:
                log.warning("%s has no labels: nothing to score it against; skipped", source.path)
                continue
            summary = replay_experiment(settings, source, keep_up=True)
            result = score_replayed(endpoints.database_url, summary.run_id, source, truth)
            result.alerts = summary.alerts
            result.deadlettered, result.reconciled = summary.deadlettered, summary.reconciled
            result.warnings = list(summary.replay.get("warnings", []))
            results.append(result)
            log.info("%s: NAB %s (z-score %s)", source.path.name,
                     result.to_dict()["nab"]["standard"],
                     result.to_dict()["baselines"]["zscore"]["nab"]["standard"])  # fmt: skip
    if not results:
        raise ConfigError("paths", ", ".join(map(str, paths)), "at least one labelled file")
    return EvaluationReport(results)


def score_replayed(
    database_url: str, run_id: str, source: CsvSource, truth: _Truth | None = None
) -> FileResult:
    """A replayed run's alerts scored as :func:`evaluate` scores them (NAB's profiles, the
    F1 of the rows flagged, the baselines), from the run's stored alerts and the file.

    >>> # score_replayed(url, summary.run_id, source).to_dict()["nab"]["standard"]
    """
    truth = truth or _Truth.read(source)
    result = _score(source.path, truth, _alert_times(database_url, run_id))
    result.run_id = run_id
    return result


@dataclass
class _Truth:
    """A file's rows as the scoring sees them, per machine: times, values, labels."""

    frame: pd.DataFrame  # machine, ts, label (bool or NA), changepoint (bool or NA), values
    columns: list[str]
    windows: list[tuple[int, int]]  # the labels file's windows (all machines)

    @property
    def labelled(self) -> bool:
        return bool(self.windows) or self.frame["label"].notna().any()

    @classmethod
    def read(cls, source: CsvSource) -> _Truth:
        rows = [r for r in source.rows() if type(r) is not BadRow]
        columns = [s.column for s in source.mapping.sensors]
        frame = pd.DataFrame(
            {
                "index": [r.index for r in rows],
                "machine": [r.machine_id for r in rows],
                "ts": np.array([r.ts for r in rows], dtype=np.int64),
                "label": pd.array(
                    [r.labelled if source.label_column else None for r in rows], dtype="boolean"
                ),
            }
        )
        values = np.array([[np.nan if v is None else v for v in r.values] for r in rows], float)
        for i, name in enumerate(columns):
            frame[name] = values[:, i] if len(rows) else np.array([], float)
        frame["changepoint"] = _changepoints(source, frame["index"].to_numpy())
        windows = [(w.start_ts, w.end_ts) for w in source.windows]
        return cls(frame, columns, windows)


def _changepoints(source: CsvSource, index: np.ndarray) -> pd.arrays.BooleanArray:
    """SKAB's ``changepoint`` column by data row, when the file has one."""
    if "changepoint" not in source.header:
        return pd.array([None] * len(index), dtype="boolean")
    column = pd.read_csv(source.path, sep=source.mapping.separator, usecols=["changepoint"])
    return pd.array(column["changepoint"].to_numpy()[index] != 0, dtype="boolean")


def _alert_times(database_url: str, run_id: str) -> pd.DataFrame:
    """Per alert: machine, opened and closed event times (ms; closed NaN while open)."""
    frame = alerts_of(database_url, run_id)
    out = pd.DataFrame({"machine": frame["machine_id"]})
    out["opened"] = _ms(frame["opened_ts"])
    out["closed"] = _ms(frame["closed_ts"])
    return out


def _ms(times: pd.Series) -> np.ndarray:
    """Epoch milliseconds of timestamps (NaN for none), whatever unit pandas holds them in."""
    stamps = pd.to_datetime(times, utc=True)
    ms = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(milliseconds=1)
    return ms.to_numpy(dtype=float, na_value=np.nan)


def _score(path: Path, truth: _Truth, alerts: pd.DataFrame) -> FileResult:
    """Every detector's scores, per machine, pooled into the file's."""
    per_detector: dict[str, list[Scores]] = {name: [] for name in DETECTORS}
    windows = rows = 0
    for machine, part in truth.frame.groupby("machine", sort=True):
        part = part.sort_values("ts", kind="stable")
        ts = part["ts"].to_numpy()
        ts_unique = np.maximum.accumulate(ts)  # (a clock step back scores at the latest time)
        wins = _windows(truth, part, ts_unique)
        windows, rows = windows + len(wins), rows + len(part)
        labels = part["label"]
        mine = alerts[alerts["machine"] == machine]
        opened = np.sort(mine["opened"].to_numpy(dtype=np.int64))
        flags = _open_rows(ts_unique, mine)
        zscore = rolling_zscore_columns(ts_unique, {c: part[c].to_numpy() for c in truth.columns})
        for name, detections, flagged in (
            ("pipeline", opened, flags),
            ("null", np.zeros(0, dtype=np.int64), np.zeros(len(part), dtype=bool)),
            ("zscore", zscore.detections, zscore.flags),
        ):
            row_score = None
            if labels.notna().all():
                row_score = outlier_score(labels.to_numpy(dtype=bool), flagged)
            per_detector[name].append(Scores(nab_scores(ts_unique, wins, detections), row_score))
    pooled = {}
    for name, scores in per_detector.items():
        rows_scores = [s.rows for s in scores if s.rows is not None]
        pooled[name] = Scores(
            {p: pool_nab_scores(s.nab[p] for s in scores) for p in PROFILES},
            pool_outlier_scores(rows_scores) if rows_scores else None,
        )
    return FileResult(str(path), pooled, windows, rows, alerts=len(alerts))


def _windows(truth: _Truth, part: pd.DataFrame, ts: np.ndarray) -> list[tuple[int, int]]:
    """The anomaly windows of one machine's rows: the labels file's, else 30 s after each
    labelled changepoint, else the blocks of labelled rows."""
    if truth.windows:
        first, last = int(ts[0]), int(ts[-1])
        inside = [
            (max(a, first), min(b, last)) for a, b in truth.windows if b >= first and a <= last
        ]
        return [(a, b) for a, b in inside if ((ts >= a) & (ts <= b)).any()]
    cp = part["changepoint"]
    if cp.notna().all() and cp.any():
        return skab_changepoint_windows(ts, cp.to_numpy(dtype=bool))
    labels = part["label"].fillna(False).to_numpy(dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], labels.astype(np.int8), [0]])))
    return [(int(ts[a]), int(ts[b - 1])) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _open_rows(ts: np.ndarray, alerts: pd.DataFrame) -> np.ndarray:
    """Rows at which an alert was open: from its opening reading to its closing one."""
    flags = np.zeros(len(ts), dtype=bool)
    for opened, closed in zip(alerts["opened"], alerts["closed"], strict=True):
        end = ts[-1] if np.isnan(closed) else closed
        flags[(ts >= opened) & (ts <= end)] = True
    return flags


def _entry_scores(scores: dict[str, Any], labelled: bool) -> dict[str, Any]:
    out = {"nab": scores["nab"]}
    if labelled:
        out |= {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}
    return out


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(float(x), digits)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"
