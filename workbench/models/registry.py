"""The model registry: numbered versions of each model in the ``models`` table.

A version holds the model (the River object, pickled), what it was made with (kind,
parameters, the runs it learnt from), how it did (metrics), the River version that pickled
it, and whether it is the promoted one (at most one per name, enforced by a unique partial
index). Versions count up from 1 per name and are never rewritten.

A pickle is code: loading one runs whatever it says, so the registry is as trustworthy as
the database's writers. A model pickled by another River (another major version, or, while
River is 0.x, another minor one: that is where River breaks compatibility) is refused with
an error that says to train it again, rather than loaded into a half-working object.

>>> compatible("0.26.1", "0.26.0"), compatible("0.26.1", "0.21.0"), compatible("1.2", "1.0")
(True, False, True)
"""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from workbench.models import ModelError, NotFound
from workbench.sinks import engine, redact, schema


@dataclass(frozen=True)
class ModelVersion:
    """One stored version, without its bytes (see :func:`load`)."""

    name: str
    version: int
    kind: str
    params: dict[str, Any]
    runs: list[str]
    metrics: dict[str, Any]
    river_version: str
    promoted: bool
    created_at: dt.datetime | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


def river_version() -> str:
    import river

    return river.__version__


def compatible(saved: str, running: str) -> bool:
    """Whether a pickle made under River ``saved`` may be loaded under ``running``: the same
    major version (and, for 0.x, the same minor one)."""
    a, b = saved.split("."), running.split(".")
    width = 2 if a[0] == "0" else 1
    return a[:width] == b[:width]


def ensure_table(database_url: str) -> None:
    """Create the ``models`` table if the database lacks it (a database made before the
    registry existed); every other table is ``workbench up``'s business. A SQLite file that
    does not exist is an error, not created: a mistyped path must not make a database."""
    engine(database_url).dispose()  # the reading engine refuses a missing SQLite file
    eng = engine_for_writing(database_url)
    try:
        schema.models.create(eng, checkfirst=True)
    finally:
        eng.dispose()


def engine_for_writing(database_url: str) -> sa.Engine:
    """An engine that may write (the SQLite reader engine is read-only)."""
    from workbench.sinks import is_sqlite

    if is_sqlite(database_url):
        from workbench.sinks import sqlite

        return sqlite.engine(database_url)
    return engine(database_url)


def save(
    database_url: str,
    name: str,
    kind: str,
    model: Any,
    params: dict[str, Any],
    runs: list[str],
    metrics: dict[str, Any],
) -> ModelVersion:
    """Store ``model`` as the next version of ``name``; return that version."""
    m = schema.models
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    row = {"name": name, "kind": kind, "params": params, "runs": runs, "metrics": metrics,
           "river_version": river_version(), "model": blob}  # fmt: skip
    ensure_table(database_url)
    eng = engine_for_writing(database_url)
    try:
        for _attempt in range(5):  # another trainer may take the same number: try the next
            try:
                with eng.begin() as conn:
                    latest = conn.execute(
                        sa.select(sa.func.max(m.c.version)).where(m.c.name == name)
                    ).scalar()
                    version = (latest or 0) + 1
                    conn.execute(m.insert().values(version=version, **row))
                break
            except sa.exc.IntegrityError:
                continue
        else:
            raise ModelError(f"could not number a new version of model {name}: try again")
    finally:
        eng.dispose()
    return get(database_url, name, version)


def versions(database_url: str, name: str | None = None) -> list[ModelVersion]:
    """Every stored version (of ``name``, or of every model), by name and version."""
    m = schema.models
    query = sa.select(*_columns()).order_by(m.c.name, m.c.version)
    if name is not None:
        query = query.where(m.c.name == name)
    return [ModelVersion(**row._mapping) for row in _read(database_url, query)]


def get(database_url: str, name: str, version: int) -> ModelVersion:
    """One version, or :class:`ModelError` naming the versions there are."""
    m = schema.models
    query = sa.select(*_columns()).where(m.c.name == name, m.c.version == version)
    rows = _read(database_url, query)
    if not rows:
        raise NotFound(_unknown(database_url, name, version))
    return ModelVersion(**rows[0]._mapping)


def load(database_url: str, name: str, version: int) -> tuple[ModelVersion, Any]:
    """A version and its model, unpickled; :class:`ModelError` for an unknown version or a
    model pickled by an incompatible River."""
    meta = get(database_url, name, version)
    running = river_version()
    if not compatible(meta.river_version, running):
        raise ModelError(
            f"model {name} version {version} was saved with River {meta.river_version} and "
            f"this is River {running}: train it again (workbench model train --runs "
            f"{','.join(meta.runs)})"
        )
    m = schema.models
    query = sa.select(m.c.model).where(m.c.name == name, m.c.version == version)
    return meta, pickle.loads(_read(database_url, query)[0][0])


def promoted(database_url: str, name: str) -> tuple[ModelVersion, Any] | None:
    """The promoted version of ``name`` and its model, or None when none is promoted (or the
    database has no ``models`` table yet); :class:`ModelError` as :func:`load` raises it."""
    version = promoted_version(database_url, name)
    return None if version is None else load(database_url, name, version)


def promoted_version(database_url: str, name: str) -> int | None:
    """The number of the promoted version of ``name``, nothing loaded (one indexed query:
    cheap enough to ask before every prediction); None as :func:`promoted` says."""
    m = schema.models
    query = sa.select(m.c.version).where(m.c.name == name, m.c.promoted.is_(True))
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            if not sa.inspect(conn).has_table(m.name):
                return None
            return conn.execute(query).scalar()
    except sa.exc.OperationalError as exc:
        raise ModelError(f"cannot read models from {redact(database_url)}: {exc.orig}") from None
    finally:
        eng.dispose()


def promote(database_url: str, name: str, version: int) -> ModelVersion:
    """Make ``version`` the promoted version of ``name`` (and no other)."""
    get(database_url, name, version)  # an unknown version says so
    m = schema.models
    eng = engine_for_writing(database_url)
    try:
        with eng.begin() as conn:
            conn.execute(m.update().where(m.c.name == name, m.c.promoted.is_(True))
                         .values(promoted=False))  # fmt: skip
            conn.execute(m.update().where(m.c.name == name, m.c.version == version)
                         .values(promoted=True))  # fmt: skip
    finally:
        eng.dispose()
    return get(database_url, name, version)


def _columns() -> list[sa.Column]:
    return [c for c in schema.models.c if c.name != "model"]


def _read(database_url: str, query: sa.Select) -> list[sa.Row]:
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            return list(conn.execute(query))
    except sa.exc.OperationalError as exc:
        raise ModelError(f"cannot read models from {redact(database_url)}: {exc.orig}") from None
    finally:
        eng.dispose()


def _unknown(database_url: str, name: str, version: int) -> str:
    m = schema.models
    eng = engine(database_url)
    try:
        with eng.connect() as conn:
            have = list(conn.execute(sa.select(m.c.version).where(m.c.name == name)
                                     .order_by(m.c.version)).scalars())  # fmt: skip
    finally:
        eng.dispose()
    there = f"its versions are {', '.join(map(str, have))}" if have else "it has no versions"
    return f"model {name} has no version {version}: {there} (workbench model list)"
