"""Column mappings: how the columns of a CSV file of real sensor data become readings.

A mapping says which column holds the event time and how to parse it, which machine the
rows belong to (a constant, a column, or one machine per recording session), which
columns become which sensor type (with an optional unit conversion), where the anomaly
labels are (a 0/1 column, or a file of NAB-style anomaly windows) and what separates the
fields. Columns a mapping does not name are ignored (and listed in the replay summary).

Mappings are small TOML files. The ones for the shipped data sets live in
``workbench/simulator/mappings/`` and are selected by name (``nab``, ``skab``, ``smoke``);
when none is given, the shipped mapping whose columns the file's header has is picked.
Command-line flags (:class:`Overrides`) change single fields of a mapping, or make one
from scratch::

    separator = ";"
    machine_id = "skab-{parent}-{stem}"   # {stem}, {parent}: of the data file; {session}
    [time]
    column = "datetime"
    format = "%Y-%m-%d %H:%M:%S"          # strptime format, or iso, unix_s, unix_ms
    [sensors]
    Current = "current"
    "Temperature[F]" = { type = "temperature", scale = 0.5556, offset = -17.78 }
    [labels]
    column = "anomaly"                    # or: file = "{stem}.labels.json"
    optional = true                       # files without labels replay without them

Times without a time zone (NAB, SKAB) are read as UTC.

>>> m = load_mapping("skab")
>>> m.time_column, m.separator, [s.sensor_type for s in m.sensors][:3]
('datetime', ';', ['vibration', 'current', 'pressure'])
>>> m.apply(Overrides(machine_id="pump-7")).machine_id
'pump-7'
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import logging
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.schemas import sensor_types

log = logging.getLogger(__name__)

MAPPINGS_DIR = Path(__file__).parent / "mappings"
#: Time formats other than strptime format strings.
TIME_KINDS = ("iso", "unix_s", "unix_ms")
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
#: Separators that are awkward to type on a command line.
SEPARATOR_NAMES = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "pipe": "|"}


class MappingError(WorkbenchError):
    """A mapping is invalid, cannot be found, or does not fit the file it is used on."""


@dataclass(frozen=True)
class SensorColumn:
    """One mapped column: ``value * scale + offset`` becomes a reading of ``sensor_type``."""

    column: str
    sensor_type: str
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Mapping:
    """Everything needed to turn the rows of one CSV layout into readings."""

    name: str
    time_column: str
    sensors: tuple[SensorColumn, ...]
    time_format: str = "iso"
    separator: str = ","
    #: Template with ``{stem}`` and ``{parent}`` (of the data file) and ``{session}``.
    machine_id: str = "{stem}"
    machine_column: str | None = None
    #: A counter column that restarts (does not increase) at each new recording session.
    session_column: str | None = None
    label_column: str | None = None
    #: NAB-style windows file; a template relative to the data file's folder.
    labels_file: str | None = None
    labels_optional: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        known = sensor_types()
        seen: dict[str, str] = {}
        for s in self.sensors:
            if s.sensor_type not in known:
                raise MappingError(
                    f"mapping {self.name}: column {s.column!r} maps to unknown sensor type "
                    f"{s.sensor_type!r}; expected one of {', '.join(known)}"
                )
            if s.sensor_type in seen:
                # seq numbers readings per (machine, sensor type): two columns would collide
                raise MappingError(
                    f"mapping {self.name}: columns {seen[s.sensor_type]!r} and {s.column!r} both "
                    f"map to {s.sensor_type}; a machine has one stream per sensor type"
                )
            seen[s.sensor_type] = s.column
        if ("{session}" in self.machine_id) != (self.session_column is not None):
            raise MappingError(
                f"mapping {self.name}: machine_id needs {{session}} exactly when a "
                "session_column is set"
            )
        if len(self.separator) != 1:
            raise MappingError(
                f"mapping {self.name}: separator {self.separator!r} is not one character"
            )
        if self.label_column and self.labels_file:
            raise MappingError(
                f"mapping {self.name}: give a label column or a labels file, not both"
            )

    def columns(self) -> list[str]:
        """The columns this mapping reads (the label column only when it is required)."""
        cols = [self.time_column, *(s.column for s in self.sensors)]
        cols += [c for c in (self.machine_column, self.session_column) if c]
        if self.label_column and not self.labels_optional:
            cols.append(self.label_column)
        return cols

    def missing(self, header: Sequence[str]) -> list[str]:
        return [c for c in self.columns() if c not in header]

    def apply(self, overrides: Overrides) -> Mapping:
        """This mapping with the fields the overrides set replaced."""
        return dataclasses.replace(self, **overrides.changes())

    def params(self) -> dict[str, Any]:
        """The mapping as plain data, for the run registry."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Overrides:
    """Mapping fields given as flags: each one set replaces the mapping's field.

    ``sensors`` are ``COLUMN=TYPE`` or ``COLUMN=TYPE*SCALE`` strings and replace the
    mapping's sensor list as a whole; a label column replaces a labels file and back.
    """

    separator: str | None = None
    time_column: str | None = None
    time_format: str | None = None
    machine_id: str | None = None
    machine_column: str | None = None
    sensors: Sequence[str] | None = None
    label_column: str | None = None
    labels_file: str | None = None

    def changes(self) -> dict[str, Any]:
        out = {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name))}
        if "separator" in out:
            out["separator"] = SEPARATOR_NAMES.get(out["separator"], out["separator"])
        if "sensors" in out:
            out["sensors"] = tuple(parse_sensor_flag(s) for s in out["sensors"])
        if "label_column" in out:
            out |= {"labels_file": None, "labels_optional": False}
        elif "labels_file" in out:
            out |= {"label_column": None, "labels_optional": False}
        return out

    def complete(self) -> bool:
        """Enough to replay without a mapping file: a time column and a sensor."""
        return bool(self.time_column and self.sensors)


def parse_sensor_flag(text: str) -> SensorColumn:
    """``COLUMN=TYPE`` or ``COLUMN=TYPE*SCALE`` (split at the last ``=``).

    >>> parse_sensor_flag("Temperature[C]=temperature")
    SensorColumn(column='Temperature[C]', sensor_type='temperature', scale=1.0, offset=0.0)
    >>> parse_sensor_flag("Pressure[hPa]=pressure*0.001").scale
    0.001
    """
    column, eq, spec = text.rpartition("=")
    stype, star, scale = spec.partition("*")
    try:
        if not (eq and column and stype):
            raise ValueError
        return SensorColumn(column, stype.strip(), float(scale) if star else 1.0)
    except ValueError:
        raise MappingError(
            f"--sensor {text!r}: expected COLUMN=TYPE or COLUMN=TYPE*SCALE"
        ) from None


def time_parser(fmt: str) -> Callable[[str], int]:
    """A function from a time cell to epoch milliseconds (naive times are UTC).

    It raises ValueError (or OverflowError) for a cell it cannot read.

    >>> time_parser("%Y-%m-%d %H:%M:%S")("2013-12-02 21:15:00")
    1386018900000
    >>> time_parser("unix_s")("1654733331"), time_parser("iso")("2022-06-09T00:08:51+02:00")
    (1654733331000, 1654726131000)
    """
    if fmt == "unix_s":
        return lambda text: round(float(text) * 1000)
    if fmt == "unix_ms":
        return lambda text: round(float(text))
    parse = dt.datetime.fromisoformat if fmt == "iso" else lambda t: dt.datetime.strptime(t, fmt)

    def to_ms(text: str) -> int:
        d = parse(text.strip())
        return (d - _EPOCH) // _MS if d.tzinfo is None else (d - _EPOCH_UTC) // _MS

    return to_ms


def _sensor(name: str, column: str, spec: Any) -> SensorColumn:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or set(spec) - {"type", "scale", "offset"} or "type" not in spec:
        raise MappingError(
            f"mapping {name}: sensor {column!r} must be a type name or "
            "{ type = ..., scale = ..., offset = ... }"
        )
    try:
        return SensorColumn(column, spec["type"], float(spec.get("scale", 1.0)),
                            float(spec.get("offset", 0.0)))  # fmt: skip
    except (TypeError, ValueError):
        raise MappingError(
            f"mapping {name}: scale and offset of {column!r} must be numbers"
        ) from None


def mapping_from_toml(name: str, data: dict[str, Any]) -> Mapping:
    """Build a :class:`Mapping` from parsed TOML; unknown keys are errors (typos)."""
    allowed = {"description", "separator", "machine_id", "machine_column", "session_column",
               "time", "sensors", "labels"}  # fmt: skip
    sections = {"time": {"column", "format"}, "labels": {"column", "file", "optional"}}
    unknown = sorted(set(data) - allowed) + [
        f"{s}.{k}" for s, keys in sections.items() for k in sorted(set(data.get(s, {})) - keys)
    ]
    if unknown:
        raise MappingError(f"mapping {name}: unknown key(s) {', '.join(unknown)}")
    time, labels = data.get("time", {}), data.get("labels", {})
    if "column" not in time or not data.get("sensors"):
        raise MappingError(f"mapping {name}: needs [time] column = ... and a [sensors] table")
    return Mapping(
        name=name,
        time_column=time["column"],
        time_format=time.get("format", "iso"),
        sensors=tuple(_sensor(name, col, spec) for col, spec in data["sensors"].items()),
        separator=data.get("separator", ","),
        machine_id=data.get("machine_id", "{stem}"),
        machine_column=data.get("machine_column"),
        session_column=data.get("session_column"),
        label_column=labels.get("column"),
        labels_file=labels.get("file"),
        labels_optional=bool(labels.get("optional", False)),
        description=data.get("description", ""),
    )


def shipped_mappings() -> list[str]:
    """Names of the mappings shipped with the workbench.

    >>> shipped_mappings()
    ['nab', 'skab', 'smoke']
    """
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))


def load_mapping(ref: str | Path) -> Mapping:
    """A mapping by shipped name or TOML file path."""
    path = Path(ref)
    if not path.is_file():
        if str(ref) not in shipped_mappings():
            raise MappingError(
                f"no mapping {str(ref)!r}: not a file, nor a shipped mapping "
                f"({', '.join(shipped_mappings())})"
            )
        path = MAPPINGS_DIR / f"{ref}.toml"
        name = str(ref)
    else:
        name = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping {path} is not valid TOML: {exc}") from None
    return mapping_from_toml(name, data)


def split_header(line: str, separator: str) -> list[str]:
    """The column names of a header line (csv quoting rules)."""
    return next(csv.reader([line], delimiter=separator), [])


def guess_separator(line: str) -> str:
    """The most frequent of ``, ; tab |`` in a header line.

    >>> guess_separator("datetime;Current;Pressure"), guess_separator("a,b")
    (';', ',')
    """
    return max([",", ";", "\t", "|"], key=line.count)


def resolve(
    file: Path, header_line: str, ref: str | Path | None, overrides: Overrides
) -> tuple[Mapping, list[str]]:
    """The mapping to replay ``file`` with, and the file's columns.

    In order: the named mapping plus overrides; else a shipped mapping whose columns the
    header has (the most specific one); else one made from the flags alone. A mapping
    that names a column the header lacks is a :class:`MappingError` naming the column.
    """
    if ref is not None:
        mapping = load_mapping(ref).apply(overrides)
    else:
        mapping = _detect(header_line, overrides)
        if mapping is None:
            sep = overrides.separator or guess_separator(header_line)
            if not overrides.complete():
                cols = ", ".join(repr(c) for c in split_header(header_line, sep))
                raise MappingError(
                    f"{file}: no mapping fits its columns ({cols}); give --mapping "
                    f"{'|'.join(shipped_mappings())}|FILE.toml, or --time-column COLUMN and "
                    "--sensor COLUMN=TYPE (repeatable)"
                )
            mapping = Mapping("(flags)", overrides.time_column or "", ()).apply(
                dataclasses.replace(overrides, separator=sep)
            )
    header = split_header(header_line, mapping.separator)
    missing = mapping.missing(header)
    if missing:
        raise MappingError(
            f"{file}: mapping {mapping.name} names column {missing[0]!r}, which the file does "
            f"not have (its columns: {', '.join(repr(c) for c in header)})"
        )
    for col in mapping.columns():
        if header.count(col) > 1:
            raise MappingError(f"{file}: column {col!r} appears {header.count(col)} times")
    return mapping, header


def _detect(header_line: str, overrides: Overrides) -> Mapping | None:
    """The shipped mapping whose own columns the header has (most columns wins), overridden.
    Without a separator given, the header is split by the mapping's own and, failing that,
    by the one the header line suggests (NAB's columns in a semicolon file fit ``nab``)."""
    fits = []
    for name in shipped_mappings():
        mapping = load_mapping(name)
        tried = [overrides.separator or mapping.separator]
        tried += [] if overrides.separator else [guess_separator(header_line)]
        sep = next((s for s in tried if not mapping.missing(split_header(header_line, s))), None)
        if sep is not None:
            fits.append((len(mapping.columns()), name, sep, mapping))
    if not fits:
        return None
    _, name, sep, mapping = max(fits)
    other = sep != mapping.separator
    log.info("no --mapping given: using the shipped mapping %r, whose columns the file has%s",
             name, f" (separated by {sep!r})" if other else "")  # fmt: skip
    found = mapping.apply(overrides)
    return dataclasses.replace(found, separator=sep) if other else found
