"""Predictions of a stored failure-precursor model for one machine: what ``POST /v1/predict``
answers and ``workbench model predict`` prints.

A request names a machine and either a stored run (default: the latest run), whose latest
final one-minute window of that machine is scored with its vector made exactly as training
makes it (:func:`workbench.models.features.latest_vector`), or a feature vector to score as
given. The model is the version asked for, else the promoted version of the name (default
``failure-precursor``, the name ``workbench model train`` stores a precursor under).

A :class:`Predictor` keeps the models it loaded, per name and version, for its life (the
gateway holds one): a model is unpickled once, by the first prediction that needs it, never
before. A request that names no version asks the database which version is promoted (one
indexed query), so a ``workbench model promote`` is served from the next request on.

>>> r = PredictRequest.from_json({"machine_id": "m-3", "features": {"temperature.mean": 71}})
>>> r.machine_id, r.features, r.run_id
('m-3', {'temperature.mean': 71.0}, None)
>>> try:
...     PredictRequest.from_json({"machine_id": "m-3", "features": {"t": "hot"}, "versoin": 2})
... except InvalidRequest as exc:
...     for e in exc.errors:
...         print(e["loc"], e["msg"])
['versoin'] not a field of a prediction request (machine_id, run, features, model, version)
['features', 't'] must be a number
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from workbench.models import ModelError, NotFound
from workbench.models.command import DEFAULT_NAME  # the model a request names by default

#: Models a :class:`Predictor` keeps loaded at once (each version of each name asked for).
CACHED_MODELS = 8
#: The longest machine id a request may name (the gateway's limit for readings).
MAX_ID = 128


class NotPromoted(ModelError):
    """No version of the model is promoted, and the request named none (HTTP 409)."""


class InvalidRequest(ModelError):
    """A request that cannot be scored as it is: ``errors`` lists each problem with its
    ``loc`` (the field's path) and ``msg`` (HTTP 422)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        count = f"{len(errors)} errors" if len(errors) > 1 else "1 error"
        super().__init__(f"{count} in the request: {said}")


@dataclass(frozen=True)
class PredictRequest:
    """What to score: a machine's latest stored minute (``run_id``, default the latest run)
    or the ``features`` given; by ``name`` (default :data:`DEFAULT_NAME`) at ``version``
    (default the promoted one)."""

    machine_id: str
    run_id: str | None = None
    features: dict[str, float] | None = None
    name: str | None = None
    version: int | None = None

    FIELDS = ("machine_id", "run", "features", "model", "version")

    @classmethod
    def from_json(cls, body: Any) -> PredictRequest:
        """A request from its JSON body (``run`` and ``model`` name the run and the model);
        :class:`InvalidRequest` lists every field that is wrong."""
        if not isinstance(body, dict):
            raise InvalidRequest([_error([], "the body must be a JSON object", body)])
        errors = [_error([k], f"not a field of a prediction request ({', '.join(cls.FIELDS)})")
                  for k in body if k not in cls.FIELDS]  # fmt: skip

        def text(key: str, required: bool = False) -> str | None:
            value = body.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
                errors.append(_error([key], f"must be a text of 1 to {MAX_ID} characters", value))
                return None
            return value

        machine, run, name = text("machine_id", required=True), text("run"), text("model")
        version = body.get("version")
        if version is not None and (type(version) is not int or version < 1):
            errors.append(_error(["version"], "must be a whole number from 1", version))
        features = body.get("features")
        if features is not None:
            if not isinstance(features, dict):
                errors.append(_error(["features"], "must be an object of name: number", features))
                features = None
            else:
                for key, value in features.items():
                    if not _number(value):
                        errors.append(_error(["features", key], "must be a number", value))
                features = {k: float(v) for k, v in features.items() if _number(v)}
        if features is not None and run is not None:
            errors.append(_error(["run"], "give a run or features, not both"))
        if errors:
            raise InvalidRequest(errors)
        return cls(machine, run, features, name, version)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Prediction:
    """A model's probability that a machine is failing or will within the model's horizon;
    ``alarm`` when it is at or above the model's threshold. ``run_id`` and the window's
    bounds (ISO 8601, UTC) say which minute was scored when it came from storage (None for
    features given); ``missing``: the model's features the vector lacks (None for a model
    stored without its feature list, before predictions existed)."""

    model: str
    version: int
    probability: float
    alarm: bool
    threshold: float
    machine_id: str
    run_id: str | None
    window_start: str | None
    window_end: str | None
    missing: list[str] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        where = (f"minute {self.window_start} to {self.window_end} of run {self.run_id}"
                 if self.run_id else "the features given")  # fmt: skip
        verdict = "ALARM" if self.alarm else "no alarm"
        gaps = "" if self.missing is None else f"; {len(self.missing)} of its features missing"
        return (
            f"{self.machine_id}, {where}: probability {self.probability:.3f} "
            f"({verdict} at {self.threshold:g}) by {self.model} version {self.version}{gaps}"
        )


class Predictor:
    """Scores requests against one database, keeping the models it loaded (see the module).
    Safe to share between threads: a model is only read while it scores."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._model = functools.lru_cache(maxsize=CACHED_MODELS)(self._load)

    def predict(self, request: PredictRequest) -> Prediction:
        """Score ``request``: :class:`NotFound` for an unknown run, machine or version,
        :class:`NotPromoted`, :class:`InvalidRequest` for features the model does not know
        or a model that is not a precursor."""
        from workbench.models import features, precursor

        name = request.name or DEFAULT_NAME
        version = request.version or self._promoted(name)
        meta, model, known = self._model(name, version)
        run_id = start = end = None
        if request.features is not None:
            x = request.features
            if known is not None and (unknown := sorted(set(x) - set(known))):
                said = f"not a feature of {name} version {version}"
                raise InvalidRequest([_error(["features", k], said) for k in unknown])
        else:
            run_id = request.run_id or self._latest_run()
            row = features.latest_vector(self.database_url, run_id, request.machine_id)
            if row is None:
                raise NotFound(self._no_minute(run_id, request.machine_id))
            x, start, end = row.x, _iso(row.start_ms), _iso(row.end_ms)
        p = precursor.probability(model, x)
        threshold = float(meta.params["threshold"])
        missing = None if known is None else sorted(set(known) - set(x))
        return Prediction(name, version, p, p >= threshold, threshold, request.machine_id,
                          run_id, start, end, missing)  # fmt: skip

    def _promoted(self, name: str) -> int:
        from workbench.models import registry

        version = registry.promoted_version(self.database_url, name)
        if version is None:
            raise NotPromoted(
                f"no version of model {name} is promoted: run `workbench model promote VERSION "
                f"--name {name}` (`workbench model list` shows the versions)"
            )
        return version

    def _load(self, name: str, version: int) -> tuple[Any, Any, list[str] | None]:
        """A version, its model and the features it knows (cached per name and version)."""
        from workbench.models import registry

        meta, model = registry.load(self.database_url, name, version)
        if meta.kind != "precursor":
            said = f"{name} is a model of kind {meta.kind}: predictions are made by precursors"
            raise InvalidRequest([_error(["model"], said, name)])
        return meta, model, model_features(meta.params, model)

    def _latest_run(self) -> str:
        from workbench.models.health import HealthError, latest_run

        try:
            return latest_run(self.database_url)
        except HealthError as exc:
            raise NotFound(str(exc)) from None

    def _no_minute(self, run_id: str, machine_id: str) -> str:
        """Why there is no minute to score: the run, or the machine in it, is unknown."""
        from workbench.models.health import HealthError, machines

        try:
            known = machines(self.database_url, run_id)
        except HealthError:
            return f"no run {run_id!r} in the database"
        shown = ", ".join(known[:5]) + (", ..." if len(known) > 5 else "")
        return (f"machine {machine_id!r} has no final one-minute window in run {run_id!r} "
                f"(its {len(known)} machines: {shown})")  # fmt: skip


def model_features(params: dict[str, Any], model: Any) -> list[str] | None:
    """The feature names a precursor learnt from: stored with it since predictions exist;
    for an older version, the names the scaler at the head of its pipeline counted (the
    ``logistic`` and ``tree`` learners have one); None when neither tells."""
    if "features" in params:
        return list(params["features"])
    head = next(iter(getattr(model, "steps", {}).values()), None)
    counts = getattr(head, "counts", None)
    return sorted(counts) if counts else None


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _error(loc: list[Any], msg: str, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"loc": loc, "msg": msg}
    if value is not None:
        out["input"] = value
    return out


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()
