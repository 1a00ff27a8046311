"""A load generator for the gateway: many requests over a few keep-alive connections, for
``workbench bench``.

A general HTTP client (httpx, requests) spends about a millisecond of CPU per request,
as much as the gateway itself; on a small machine the client would then measure
itself. This one writes prepared requests and reads the status line and the body
(uvicorn always sends ``Content-Length``), about 30 µs per request on uvloop.

Two shapes of load:

- :func:`closed_loop`: ``connections`` clients each sending the next request as soon as
  the previous one is answered: the most the gateway can take.
- :func:`open_loop`: requests at a fixed rate whatever the answers, each timed from the
  moment it was due, so a gateway that falls behind shows it in the latency (no
  coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import uvloop


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    #: per status code, how many answers
    statuses: dict[int, int]
    #: request latencies in seconds (each from when it was due, for the open loop)
    latencies: list[float]

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def request_bytes(url: str, body: bytes, content_type: str, headers: dict[str, str]) -> bytes:
    """A whole HTTP/1.1 POST to ``url``, ready to write."""
    parts = urllib.parse.urlsplit(url)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urllib.parse.urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


def closed_loop(url: str, requests: Sequence[bytes], connections: int = 8) -> LoadResult:
    """Send every request, ``connections`` at a time, each as soon as one is answered."""

    async def main() -> LoadResult:
        conns = [await _connect(url) for _ in range(connections)]
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        queue = iter(requests)

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for req in queue:
                t = time.perf_counter()
                status = await _send(reader, writer, req)
                latencies.append(time.perf_counter() - t)
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(r, w) for r, w in conns))
        elapsed = time.perf_counter() - t0
        for _, w in conns:
            w.close()
        return LoadResult(len(requests), elapsed, statuses, latencies)

    return uvloop.run(main())


def open_loop(
    url: str, requests: Sequence[bytes], rate_per_s: float, connections: int = 16
) -> LoadResult:
    """Send request ``i`` at ``i / rate_per_s`` seconds on a free connection; its latency
    is from then to its answer (waiting for a free connection included)."""

    async def main() -> LoadResult:
        free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for _ in range(connections):
            free.put_nowait(await _connect(url))
        statuses: dict[int, int] = {}
        latencies: list[float] = []

        begin = asyncio.Event()
        t0 = 0.0

        async def one(i: int, req: bytes) -> None:
            await begin.wait()
            due = t0 + i / rate_per_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            conn = await free.get()
            status = await _send(*conn, req)
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
            free.put_nowait(conn)

        # every request waits on its own timer, made before the clock starts: making
        # thousands of tasks takes tens of milliseconds, which the first ones would count
        tasks = [asyncio.create_task(one(i, req)) for i, req in enumerate(requests)]
        await asyncio.sleep(0)
        t0 = time.perf_counter() + 0.25  # every task has set its timer by then
        begin.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        while not free.empty():
            free.get_nowait()[1].close()
        return LoadResult(len(requests), elapsed, statuses, latencies)

    return uvloop.run(main())
