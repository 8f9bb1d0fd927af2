"""Per-account token buckets (requests per second, in process memory).

An account with rate r and burst b holds up to b tokens, refilled at r per second; each request
takes one. When empty, `acquire` returns the seconds until a token is back (-> 429 + Retry-After).
"""

from __future__ import annotations

import math
import threading
import time


class TokenBuckets:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # account -> (tokens, last refill time)

    def acquire(self, account: str, rate: float | None, burst: int | None = None) -> float:
        """Take a token; -> 0.0 if allowed, else the wait in seconds before one is available."""
        if rate is None:
            return 0.0
        capacity = float(burst) if burst else max(1.0, math.ceil(rate))
        now = self._clock()
        with self._lock:
            tokens, last = self._state.get(account, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._state[account] = (tokens - 1.0, now)
                return 0.0
            self._state[account] = (tokens, now)
            return (1.0 - tokens) / rate
