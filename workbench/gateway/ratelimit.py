"""A token bucket per API key, counted in readings: a batch of 100 costs 100 tokens.

Readings, not requests, are what loads the broker and the processor, so a client that
batches is not punished for it and one that sends readings one by one gets the same share.

>>> bucket = TokenBucket(rate=10.0, burst=20.0, now=0.0)
>>> bucket.take(15, now=0.0), bucket.take(15, now=0.0)
(0.0, 1.0)
>>> bucket.take(15, now=1.0)
0.0
"""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic() if now is None else now

    def take(self, n: int, now: float | None = None) -> float:
        """Take ``n`` tokens: 0.0 when granted, else the seconds until they would be (and
        nothing is taken: a refused request costs nothing)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate
