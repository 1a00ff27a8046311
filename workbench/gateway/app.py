"""The gateway's HTTP interface (FastAPI): ``POST /v1/telemetry`` and the endpoints around it.

Every answer is JSON with a ``detail`` that says what happened; errors name what was
wrong and where:

====  =====================================================================
202   every reading acknowledged by the broker (``accepted``, ``run_id``)
400   a body that cannot be parsed (not JSON, a broken Avro array)
401   no ``X-API-Key`` header, or a key that is not one of ours
403   readings of a machine the key may not send for (or ask the health or a prediction of)
404   ``GET /v1/machines/{id}/health`` or ``POST /v1/predict`` of a run, machine or model
      version the database does not have
409   ``POST /v1/predict`` naming no version of a model that has none promoted
413   a body over the size limit, or more readings than the key's burst
415   a content type other than JSON or Avro
422   readings that break the schema: ``errors`` lists each field (``loc``, ``msg``); a
      health request's ``recent`` that is not a duration
429   over the key's rate: ``Retry-After`` says when the request would pass
503   the broker did not acknowledge every reading: ``Retry-After``, and the counts
====  =====================================================================

Nothing of a request that is refused (4xx) reaches the broker.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from workbench.errors import WorkbenchError
from workbench.gateway import ingest
from workbench.gateway.keys import ApiKey, KeyRing
from workbench.gateway.publisher import Publisher
from workbench.gateway.ratelimit import TokenBucket
from workbench.metrics import GatewayMetrics, new_registry

log = logging.getLogger(__name__)

#: a run id travels as a Kafka header and a database column: short and printable
MAX_RUN_ID = 128


@dataclass
class GatewayConfig:
    """What the application needs besides the publisher."""

    keys: KeyRing
    #: the run id of readings whose request names none (``X-Run-Id``)
    run_id: str
    #: readings per second per key, and how many may be saved up
    rate: float = 100_000.0
    burst: float = 100_000.0
    max_body_bytes: int = 4 * 1024 * 1024
    #: the seconds a 503 tells the client to wait
    retry_after_s: int = 5
    #: the database URL, asked for (and the database started) only by the first health or
    #: predict request, so that the ingest path never waits on the database; None: none
    database: Callable[[], str] | None = None
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def bucket(self, key: ApiKey) -> TokenBucket:
        bucket = self._buckets.get(key.name)
        if bucket is None:
            bucket = self._buckets[key.name] = TokenBucket(self.rate, self.burst)
        return bucket


class Reading(BaseModel):
    """A reading as JSON (the reading schema's fields); for the API documentation. The
    gateway checks bodies itself, faster than a model per reading would."""

    machine_id: str = Field(max_length=ingest.MAX_MACHINE_ID, examples=["m-0001"])
    ts: int = Field(ge=0, description="event time, epoch milliseconds", examples=[1767225600000])
    sensor_type: str = Field(description="one of the schema's sensor types", examples=["pressure"])
    value: float | None = Field(None, description="null when the sensor sent nothing")
    status_code: int = Field(0, description="device status, 0 ok")
    seq: int = Field(ge=0, description="per machine and sensor, from 0, no gaps")


class Accepted(BaseModel):
    accepted: int
    run_id: str
    detail: str


def create_app(publisher: Publisher, config: GatewayConfig) -> FastAPI:
    """The application; ``publisher`` is closed when it shuts down."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        left = publisher.close()
        if left:
            log.error("%d acknowledged-pending readings were not sent at shutdown", left)

    app = FastAPI(
        title="workbench gateway",
        summary="Readings over HTTP onto the raw topic; answered once the broker has them.",
        version="1",
        lifespan=lifespan,
    )
    metrics = GatewayMetrics(new_registry())

    def answer(status: int, body: dict[str, Any], readings: int = 0, **headers: str) -> Response:
        metrics.requests.labels(str(status)).inc()
        if readings:
            outcome = "accepted" if status == 202 else "failed" if status == 503 else "refused"
            metrics.readings.labels(outcome).inc(readings)
        return JSONResponse(body, status, headers=headers or None)

    readings_schema = Reading.model_json_schema()
    many = {"type": "array", "items": readings_schema}
    body_doc: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                ingest.JSON: {"schema": {"oneOf": [readings_schema, many]}},
                ingest.AVRO_ONE: {"schema": {"type": "string", "format": "binary"}},
                ingest.AVRO_MANY: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    @app.post(
        "/v1/telemetry",
        status_code=202,
        response_model=Accepted,
        openapi_extra=body_doc,
        summary="Send one reading or a batch",
        description=__doc__,
    )
    async def telemetry(request: Request) -> Response:
        return await _telemetry_timed(request)

    async def _telemetry_timed(request: Request) -> Response:
        started = time.perf_counter()
        metrics.inflight.inc()
        try:
            return await _telemetry(request)
        finally:
            metrics.inflight.dec()
            metrics.latency.observe(time.perf_counter() - started)

    def authorised(request: Request) -> ApiKey | Response:
        """The request's key, or the 401 to answer."""
        key = config.keys.check(request.headers.get("x-api-key"))
        if key is not None:
            return key
        said = "missing" if "x-api-key" not in request.headers else "not a valid key"
        return answer(401, {"detail": f"X-API-Key header {said}"})

    async def _telemetry(request: Request) -> Response:
        key = authorised(request)
        if isinstance(key, Response):
            return key
        run_id = request.headers.get("x-run-id", config.run_id)
        if not 0 < len(run_id) <= MAX_RUN_ID or not run_id.isprintable():
            said = f"X-Run-Id must be 1 to {MAX_RUN_ID} printable characters"
            return answer(422, {"detail": said})
        body = await _read_body(request, config.max_body_bytes)
        if body is None:
            return answer(413, {"detail": f"the body is over {config.max_body_bytes:,} bytes"})
        try:
            batch = ingest.parse(body, request.headers.get("content-type"))
        except ingest.InvalidBody as exc:
            return answer(exc.status, exc.detail())
        n = len(batch)
        if forbidden := key.forbidden(batch.machines):
            shown = ", ".join(forbidden[:10]) + (" ..." if len(forbidden) > 10 else "")
            return answer(403, {"detail": f"{key.name} may not send for {shown}"}, n)
        if n > config.burst:
            said = f"{n:,} readings is more than a request may hold ({config.burst:,.0f})"
            return answer(413, {"detail": said}, n)
        wait = config.bucket(key).take(n)
        if wait:
            return answer(
                429,
                {"detail": f"{key.name} is over its rate of {config.rate:,.0f} readings/s"},
                n,
                **{"Retry-After": str(math.ceil(wait))},
            )
        outcome = await publisher.publish(batch.keys, batch.values, run_id)
        if not outcome.complete:
            detail = (
                f"the broker did not acknowledge {n - outcome.delivered:,} of {n:,} readings "
                f"({'; '.join(outcome.errors) or 'no report in time'}); send them again "
                "(readings stored twice are dropped by sequence number)"
            )
            failed = {"detail": detail, "delivered": outcome.delivered}
            failed["failed"] = n - outcome.delivered
            return answer(503, failed, n, **{"Retry-After": str(config.retry_after_s)})
        done = {"accepted": n, "run_id": run_id, "detail": "acknowledged by the broker"}
        return answer(202, done, n)

    @app.post(
        "/v1/end-of-run",
        status_code=202,
        summary="Tell the processors a run has no more data from these machines",
        description="A bounded input that ends (a simulation sent through the gateway): the "
        "processors make the run's windows final at once instead of after the idle timeout. "
        'Body: {"machines": ["m-0001", ...]}; header X-Run-Id names the run.',
    )
    async def end_of_run(request: Request) -> Response:
        key = authorised(request)
        if isinstance(key, Response):
            return key
        run_id = request.headers.get("x-run-id", "")
        body = await _read_body(request, config.max_body_bytes)
        try:
            machines = ingest.machine_list(body or b"")
        except ingest.InvalidBody as exc:
            return answer(exc.status, exc.detail())
        if not run_id:
            return answer(422, {"detail": "X-Run-Id header missing: which run ends?"})
        if forbidden := key.forbidden(set(machines)):
            said = f"{key.name} may not send for {', '.join(forbidden[:10])}"
            return answer(403, {"detail": said})
        keys = [m.encode() for m in machines]
        outcome = await publisher.publish(keys, [b""] * len(keys), run_id, control=b"end-of-run")
        if not outcome.complete:
            return answer(503, {"detail": "the broker did not acknowledge the end of the run"},
                          **{"Retry-After": str(config.retry_after_s)})  # fmt: skip
        return answer(202, {"accepted": len(keys), "run_id": run_id, "detail": "run ended",
                            "partitions": sorted(outcome.partitions)})  # fmt: skip

    @app.get(
        "/v1/machines/{machine_id}/health",
        summary="A machine's health score, narrative and deductions in a stored run",
        description="The JSON of workbench.models.health.MachineHealth; `run` defaults to the "
        "latest run, `recent` (e.g. 30m, or seconds) to 60m: alerts open in that span before "
        "the run's latest reading cost full points. 404 for an unknown run or machine, 403 for "
        "a machine outside the key's, 422 for a `recent` that is not a duration.",
    )
    async def machine_health(
        request: Request, machine_id: str, run: str | None = None, recent: str | None = None
    ) -> Response:
        key = authorised(request)
        if isinstance(key, Response):
            return key
        if key.forbidden({machine_id}):
            return answer(403, {"detail": f"{key.name} may not read {machine_id}"})
        if config.database is None:
            return answer(503, {"detail": "this gateway has no database"})
        from workbench.models.health import recent_seconds

        try:
            recent_s = recent_seconds(recent)
        except WorkbenchError as exc:
            return answer(422, {"detail": str(exc)})
        try:
            found = await asyncio.to_thread(_health, config.database, run, machine_id, recent_s)
        except WorkbenchError as exc:
            from workbench.models.health import HealthError

            status = 404 if isinstance(exc, HealthError) else 503
            return answer(status, {"detail": str(exc)})
        return answer(200, found)

    # made (and the models loaded) by the first prediction: ingest never pays for them
    predictor = functools.cache(lambda: _predictor(config.database()))

    @app.post(
        "/v1/predict",
        summary="A machine's failure probability from the promoted (or a given) model version",
        description="Body: `machine_id`, and either `run` (default the latest run: its latest "
        "final minute of the machine is scored) or `features` (name: number); optional "
        "`model` (default failure-precursor) and `version` (default the promoted one). "
        "401 without a key, 403 for a machine outside the key's, 404 for an unknown run, "
        "machine or version, 409 when no version is promoted, 422 for a body or features "
        "that cannot be scored (`errors` lists each field).",
        openapi_extra={"requestBody": {"required": True, "content": {ingest.JSON: {
            "schema": {"type": "object", "required": ["machine_id"]}}}}},
    )  # fmt: skip
    async def predict(request: Request) -> Response:
        key = authorised(request)
        if isinstance(key, Response):
            return key
        body = await _read_body(request, config.max_body_bytes)
        if body is None:
            return answer(413, {"detail": f"the body is over {config.max_body_bytes:,} bytes"})
        try:
            asked = _predict_request(body)
        except ValueError as exc:
            return answer(400, {"detail": f"the body is not JSON: {exc}"})
        except WorkbenchError as exc:  # InvalidRequest: the fields that are wrong
            return answer(422, _invalid(exc))
        if key.forbidden({asked.machine_id}):
            return answer(403, {"detail": f"{key.name} may not read {asked.machine_id}"})
        if config.database is None:
            return answer(503, {"detail": "this gateway has no database"})
        try:
            found = await asyncio.to_thread(lambda: predictor().predict(asked).to_dict())
        except WorkbenchError as exc:
            return answer(_predict_status(exc), _invalid(exc))
        return answer(200, found)

    app.add_middleware(_HotPath, path="/v1/telemetry", handler=_telemetry_timed)

    @app.get("/healthz", summary="The gateway process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The broker answers and has the raw topic")
    async def readyz() -> Response:
        if await asyncio.to_thread(publisher.ready):
            return JSONResponse({"status": "ready", "topic": publisher.topic})
        return JSONResponse(
            {"status": "not ready", "detail": f"the broker at {publisher.bootstrap} does not "
             f"answer or has no topic {publisher.topic}"},
            503, headers={"Retry-After": str(config.retry_after_s)},
        )  # fmt: skip

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _HotPath:
    """Sends ``POST path`` straight to its handler, past the framework's routing, exception
    handling and dependency solving (a third of the cost of a one-reading request); the
    route stays declared for the API documentation. Everything else goes to the app."""

    def __init__(self, app: ASGIApp, path: str, handler: Callable[[Request], Any]) -> None:
        self.app, self.path, self.handler = app, path, handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            response = await self.handler(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _health(
    database: Callable[[], str], run_id: str | None, machine_id: str, recent_s: float
) -> dict[str, Any]:
    """A machine's health as JSON (health loads SQLAlchemy queries: imported when asked)."""
    from workbench.models import health

    url = database()
    return health.health(url, run_id or health.latest_run(url), machine_id, recent_s).to_dict()


def _predictor(database_url: str) -> Any:
    """The gateway's one :class:`~workbench.models.predict.Predictor` (imported when the
    first prediction is asked for: River and pandas stay out of a gateway that only ingests)."""
    from workbench.models.predict import Predictor

    return Predictor(database_url)


def _predict_request(body: bytes) -> Any:
    """The request a body asks for; ValueError for a body that is not JSON."""
    from workbench.models.predict import PredictRequest

    return PredictRequest.from_json(json.loads(body))


def _predict_status(exc: WorkbenchError) -> int:
    """404 unknown run, machine or version; 409 nothing promoted; 422 features or a model
    that cannot be scored; 503 otherwise (the database does not answer, a model pickled by
    another River)."""
    from workbench.models import NotFound
    from workbench.models.predict import InvalidRequest, NotPromoted

    for kind, status in ((NotFound, 404), (NotPromoted, 409), (InvalidRequest, 422)):
        if isinstance(exc, kind):
            return status
    return 503


def _invalid(exc: WorkbenchError) -> dict[str, Any]:
    """A refusal's body: the message, and the fields that are wrong (``loc`` under body)."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return {"detail": str(exc)}
    return {"detail": str(exc), "errors": [e | {"loc": ["body", *e["loc"]]} for e in errors]}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is over ``limit`` bytes (said or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
