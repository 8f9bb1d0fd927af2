"""The EaaS ledger: accounts and one row per served request, in SQLite (WAL mode).

Billing protocol (one image = one query, Section II of 004: the API charges per query):
  reserve(account, n)   BEGIN IMMEDIATE; refuse whole if used + n > quota; insert a 'reserved' row; COMMIT
  commit(request_id)    mark 'served' — done before the response is sent
  cancel(request_id)    delete the row — the encoder failed, nothing is billed
'reserved' rows left by a killed process were never answered; `open()` deletes them.
Usage and quota count 'reserved' + 'served' rows, so concurrent requests can never overshoot.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stealkit.service.keys import hash_key, key_id_of, key_matches, new_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    key_id TEXT UNIQUE NOT NULL,
    key_hash TEXT NOT NULL,
    quota INTEGER,              -- images; NULL = unlimited
    rate REAL,                  -- requests per second; NULL = unlimited
    burst INTEGER,              -- token-bucket capacity; NULL = max(1, ceil(rate))
    created REAL NOT NULL,
    revoked REAL                -- time of revocation; NULL = active
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account TEXT NOT NULL REFERENCES accounts(name),
    time REAL NOT NULL,
    count INTEGER NOT NULL,     -- images answered (billable queries)
    price REAL NOT NULL,        -- charged for this request
    status TEXT NOT NULL CHECK (status IN ('reserved', 'served'))
);
CREATE INDEX IF NOT EXISTS requests_account ON requests(account, status);
"""


class QuotaExceeded(Exception):
    """The request would take the account past its quota; nothing was recorded."""


@dataclass(frozen=True)
class Account:
    name: str
    key_id: str
    quota: int | None
    rate: float | None
    burst: int | None
    created: float
    revoked: float | None

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True)
class Usage:
    account: str
    queries: int      # images served (billed)
    requests: int     # requests served
    cost: float       # sum of prices of served requests
    quota: int | None
    reserved: int     # images of requests in flight

    @property
    def remaining(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.queries - self.reserved)


class Ledger:
    """Thread-safe: every operation opens its own short-lived connection (cheap with SQLite)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self):
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self):
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ---- accounts -------------------------------------------------------------------------
    def create_account(self, name: str, quota: int | None = None, rate: float | None = None, burst: int | None = None) -> str:
        """Create an account; returns its API key (shown once, stored only as a hash)."""
        if not name or len(name) > 128:
            raise ValueError("account name must be 1–128 characters")
        if quota is not None and quota < 0:
            raise ValueError(f"quota must be >= 0, got {quota}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate}")
        key_id, key = new_key()
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"account {name!r} already exists")
            con.execute(
                "INSERT INTO accounts (name, key_id, key_hash, quota, rate, burst, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, key_id, hash_key(key), quota, rate, burst, time.time()),
            )
        return key

    def set_limits(self, name: str, *, quota: int | None = ..., rate: float | None = ..., burst: int | None = ...) -> None:
        """Change an account's quota / rate / burst (pass None for unlimited; omit to keep)."""
        fields = {k: v for k, v in (("quota", quota), ("rate", rate), ("burst", burst)) if v is not ...}
        if not fields:
            return
        with self._transaction() as con:
            sets = ", ".join(f"{k} = ?" for k in fields)
            if con.execute(f"UPDATE accounts SET {sets} WHERE name = ?", (*fields.values(), name)).rowcount == 0:
                raise KeyError(f"no account {name!r}")

    def revoke(self, name: str) -> None:
        with self._transaction() as con:
            cur = con.execute("UPDATE accounts SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
            if cur.rowcount == 0:
                if not con.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                    raise KeyError(f"no account {name!r}")

    def accounts(self) -> list[Account]:
        with self._connect() as con:
            rows = con.execute("SELECT name, key_id, quota, rate, burst, created, revoked FROM accounts ORDER BY created").fetchall()
        return [Account(*r) for r in rows]

    def account(self, name: str) -> Account | None:
        with self._connect() as con:
            r = con.execute("SELECT name, key_id, quota, rate, burst, created, revoked FROM accounts WHERE name = ?", (name,)).fetchone()
        return Account(*r) if r else None

    def authenticate(self, key: str | None) -> Account | None:
        """The active account owning `key`, or None (malformed, unknown or revoked key)."""
        key_id = key_id_of(key) if key else None
        if key_id is None:
            return None
        with self._connect() as con:
            r = con.execute(
                "SELECT name, key_id, quota, rate, burst, created, revoked, key_hash FROM accounts WHERE key_id = ?", (key_id,)
            ).fetchone()
        if r is None or not key_matches(key, r[7]) or r[6] is not None:
            return None
        return Account(*r[:7])

    # ---- billing --------------------------------------------------------------------------
    def reserve(self, account: str, count: int, price: float) -> int:
        """Atomically check the quota and record a 'reserved' request; -> request id. Raises QuotaExceeded."""
        with self._transaction() as con:
            row = con.execute("SELECT quota FROM accounts WHERE name = ? AND revoked IS NULL", (account,)).fetchone()
            if row is None:
                raise KeyError(f"no active account {account!r}")
            quota = row[0]
            if quota is not None:
                used = con.execute("SELECT COALESCE(SUM(count), 0) FROM requests WHERE account = ?", (account,)).fetchone()[0]
                if used + count > quota:
                    raise QuotaExceeded(
                        f"request of {count} images refused: account {account!r} has used {used} of its quota of "
                        f"{quota} queries ({quota - used} left); nothing was billed"
                    )
            cur = con.execute(
                "INSERT INTO requests (account, time, count, price, status) VALUES (?, ?, ?, ?, 'reserved')",
                (account, time.time(), count, price),
            )
            return int(cur.lastrowid)

    def commit(self, request_id: int) -> None:
        with self._transaction() as con:
            con.execute("UPDATE requests SET status = 'served' WHERE id = ?", (request_id,))

    def cancel(self, request_id: int) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM requests WHERE id = ? AND status = 'reserved'", (request_id,))

    def drop_stale_reservations(self) -> int:
        """Delete 'reserved' rows (requests of a process that died before answering); -> how many."""
        with self._transaction() as con:
            return con.execute("DELETE FROM requests WHERE status = 'reserved'").rowcount

    def usage(self, account: str) -> Usage:
        with self._connect() as con:
            quota = con.execute("SELECT quota FROM accounts WHERE name = ?", (account,)).fetchone()
            if quota is None:
                raise KeyError(f"no account {account!r}")
            rows = dict(
                (s, (q, r, c))
                for s, q, r, c in con.execute(
                    "SELECT status, COALESCE(SUM(count), 0), COUNT(*), COALESCE(SUM(price), 0) FROM requests "
                    "WHERE account = ? GROUP BY status",
                    (account,),
                )
            )
        q, r, c = rows.get("served", (0, 0, 0.0))
        return Usage(account, int(q), int(r), float(c), quota[0], int(rows.get("reserved", (0, 0, 0))[0]))

    def records(self, account: str | None = None) -> list[tuple]:
        """(id, account, time, count, price, status) rows, oldest first."""
        sql = "SELECT id, account, time, count, price, status FROM requests"
        with self._connect() as con:
            if account is None:
                return con.execute(sql + " ORDER BY id").fetchall()
            return con.execute(sql + " WHERE account = ? ORDER BY id", (account,)).fetchall()
