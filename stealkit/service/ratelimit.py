"""Per-account token buckets (requests per second).

An account with rate r and burst b holds up to b tokens, refilled at r per second; each request
takes one. When empty, the wait in seconds until a token is back is returned (-> 429 + Retry-After).

`take_token(ledger, ...)` keeps the buckets in the ledger's database (one row per account, by the
database's clock), so the limit holds across workers and hosts; `TokenBuckets` is the same rule in
process memory (for a single process, and the unit test of the rule).
"""

from __future__ import annotations

import math
import threading
import time


def capacity_of(rate: float, burst: int | None) -> float:
    return float(burst) if burst else max(1.0, math.ceil(rate))


def refill(tokens: float, last: float, now: float, rate: float, capacity: float) -> tuple[float, float]:
    """-> (tokens left after taking one, or unchanged if none; wait in seconds, 0.0 if one was taken)."""
    tokens = min(capacity, tokens + max(0.0, now - last) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


def take_token(ledger, account: str, rate: float | None, burst: int | None = None) -> float:
    """Take a token from the account's bucket in the ledger; -> 0.0 if allowed, else the wait in seconds."""
    if rate is None:
        return 0.0
    capacity = capacity_of(rate, burst)
    db = ledger.db
    with db.transaction() as tx:
        now = float(tx.execute(f"SELECT {db.now}").fetchone()[0])
        tx.execute("INSERT INTO rate_buckets (account, tokens, updated) VALUES (?, ?, ?) ON CONFLICT (account) DO NOTHING", (account, capacity, now))
        tokens, last = tx.execute(f"SELECT tokens, updated FROM rate_buckets WHERE account = ?{db.for_update}", (account,)).fetchone()
        tokens, wait = refill(float(tokens), float(last), now, rate, capacity)
        tx.execute("UPDATE rate_buckets SET tokens = ?, updated = ? WHERE account = ?", (tokens, max(now, float(last)), account))
    return wait


class TokenBuckets:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}  # account -> (tokens, last refill time)

    def acquire(self, account: str, rate: float | None, burst: int | None = None) -> float:
        """Take a token; -> 0.0 if allowed, else the wait in seconds before one is available."""
        if rate is None:
            return 0.0
        capacity = capacity_of(rate, burst)
        now = self._clock()
        with self._lock:
            tokens, last = self._state.get(account, (capacity, now))
            tokens, wait = refill(tokens, last, now, rate, capacity)
            self._state[account] = (tokens, now)
            return wait
