"""Send a simulation through a gateway (``workbench simulate --via URL``) instead of straight
to the broker, so that a chaos run exercises the gateway end to end.

:class:`GatewaySender` has the interface of :class:`~workbench.producer.RecordProducer`
that a simulation uses (``send_raw``, ``flush``, ``end_of_run``, ``problems``, ``report``):
messages are posted in batches, as Avro (``application/vnd.workbench.readings+avro``), so
the raw topic ends up with the same bytes as a direct run and the same digest.

A batch the gateway refuses for some of its readings (422: the simulator's ``malformed``
chaos makes bytes no gateway takes) is sent again without them; they are counted as
``rejected``: refused at the door, they never reach the dead-letter topic, and the books
count them apart. A busy gateway (429) or a broker that is away (503) is waited for, as
``Retry-After`` says, up to ``timeout_s``; any other refusal (a wrong key: 401, 403) is a
:class:`~workbench.errors.DeliveryError` at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

from workbench.errors import DeliveryError
from workbench.gateway.ingest import AVRO_MANY, avro_array, bad_indices
from workbench.producer import Flushing, ProduceReport

log = logging.getLogger(__name__)


class GatewaySender(Flushing):
    """Posts messages to ``url``'s ``/v1/telemetry`` in batches of ``batch`` readings.

    >>> # sender = GatewaySender("http://127.0.0.1:8000", "my-key", run_id="r1")
    >>> # sender.send_raw(b"m-0001", avro_bytes); sender.flush().delivered
    """

    def __init__(
        self, url: str, api_key: str, run_id: str, batch: int = 2000, timeout_s: float = 60.0
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(f"--via {url!r} is not an http:// or https:// URL of a gateway")
        self.url, self.run_id, self.batch, self.timeout_s = url, run_id, batch, timeout_s
        self._base = parts.path.rstrip("/")
        secure = parts.scheme == "https"
        make = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        self._conn = make(parts.hostname, parts.port, timeout=timeout_s)
        self._headers = {"X-API-Key": api_key, "X-Run-Id": run_id}
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._digest = hashlib.sha256()
        self.sent = self.delivered = self.rejected = 0
        self.reasons: dict[str, int] = {}
        self.waiting = ""
        self.report: ProduceReport | None = None

    def send_raw(self, key: bytes, value: bytes) -> None:
        self._digest.update(len(key).to_bytes(4, "big") + key)
        self._digest.update(len(value).to_bytes(4, "big") + value)
        self._keys.append(key)
        self._values.append(value)
        self.sent += 1
        if len(self._values) >= self.batch:
            self._post_batch()

    def _post_batch(self) -> None:
        values, self._keys, self._values = self._values, [], []
        while values:
            status, body = self._post("/v1/telemetry", avro_array(values), AVRO_MANY)
            if status == 202:
                self.delivered += len(values)
                return
            bad = set(bad_indices(body.get("errors", [])))
            if status != 422 or not bad:
                raise DeliveryError(f"the gateway at {self.url} refused readings ({status}): "
                                    f"{body.get('detail', body)}")  # fmt: skip
            for err in body["errors"]:
                self.reasons[err["msg"]] = self.reasons.get(err["msg"], 0) + 1
            self.rejected += len(bad)
            values = [v for i, v in enumerate(values) if i not in bad]

    def _post(self, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        """POST, waiting out 429/503 and lost connections for up to ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        headers = self._headers | {"Content-Type": content_type}
        while True:
            try:
                self._conn.request("POST", self._base + path, body, headers)
                response = self._conn.getresponse()
                payload = response.read()
                status, retry = response.status, response.getheader("Retry-After")
                self.waiting = ""
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                status, retry, payload = 0, "1", b"{}"
                self.waiting = f"the gateway at {self.url} does not answer ({exc})"
            if status not in (0, 429, 503):
                return status, json.loads(payload or b"{}")
            if status:
                self.waiting = f"the gateway answers {status}: {json.loads(payload).get('detail')}"
            wait = float(retry or 1)
            if time.monotonic() + wait > deadline:
                raise DeliveryError(f"{self.waiting}; gave up after {self.timeout_s:g}s")
            time.sleep(wait)

    def problems(self) -> str:
        """What is wrong so far, for a progress line ("" when nothing is)."""
        said = [self.waiting] if self.waiting else []
        if self.rejected:
            said.append(f"{self.rejected:,} refused by the gateway")
        return ", ".join(said)

    def flush(self) -> ProduceReport:
        """Post what is buffered; the report of everything sent."""
        if self._values:
            self._post_batch()
        self.report = ProduceReport(
            self.sent, self.delivered, 0, dict(self.reasons), self._digest.hexdigest(),
            rejected=self.rejected,
        )  # fmt: skip
        if self.rejected:
            log.warning("the gateway refused %d messages: %s", self.rejected, self.reasons)
        return self.report

    def end_of_run(self, keys: Iterable[bytes], timeout_s: float = 30.0) -> set[int]:
        """Tell the processors the run ended (``POST /v1/end-of-run``); the partitions the
        markers reached."""
        machines = [k.decode() for k in keys]
        status, body = self._post(
            "/v1/end-of-run", json.dumps({"machines": machines}).encode(), "application/json"
        )
        if status != 202:
            raise DeliveryError(f"the gateway refused the end of the run ({status}): {body}")
        return set(body["partitions"])

    def close(self) -> None:
        self._conn.close()
