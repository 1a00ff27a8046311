"""The benchmark's own parts that need no stack (workbench/bench.py)."""

from __future__ import annotations

from workbench import bench


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_steady_sender_spreads_readings_evenly_over_time(monkeypatch):
    """1,000 readings at 10,000/s leave in 10 steps of 100, 10 ms apart, in order: not at
    once (ticks) and not late."""
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(bench.time, "sleep", clock.sleep)
    sent: list[tuple[bytes, float]] = []
    sender = bench.SteadySender(lambda k, v: sent.append((k, clock.now)), rate=10_000)
    for i in range(1000):
        sender(str(i).encode(), b"")
    assert [k for k, _ in sent] == [str(i).encode() for i in range(1000)]
    starts = [round(t - 100.0, 6) for _, t in sent[::100]]
    assert starts == [round(0.01 * i, 6) for i in range(10)]
    assert len(clock.slept) == 9  # the first step goes at once


def test_a_sender_that_fell_behind_does_not_sleep(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(bench.time, "sleep", clock.sleep)

    def slow_send(key: bytes, value: bytes) -> None:
        clock.now += 0.001  # 1 ms per reading: slower than 10,000/s

    sender = bench.SteadySender(slow_send, rate=10_000)
    for _ in range(500):
        sender(b"k", b"")
    assert clock.slept == []
