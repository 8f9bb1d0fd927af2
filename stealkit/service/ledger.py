"""The EaaS ledger: accounts and one row per served request, in SQLite (WAL mode).

Billing protocol (one image = one query, Section II of 004: the API charges per query):
  reserve(account, n)   BEGIN IMMEDIATE; refuse whole if used + n > quota; insert a 'reserved' row; COMMIT
  commit(request_id)    mark 'served' — done before the response is sent
  cancel(request_id)    delete the row — the encoder failed, nothing is billed
'reserved' rows left by a killed process were never answered; `open()` deletes them.
Usage and quota count 'reserved' + 'served' rows, so concurrent requests can never overshoot.

Idempotency (a paid query is never paid twice): a request may carry a client-chosen key. The
answer of a keyed request is stored with its 'served' row, in the same transaction, and a later
request of the same account with the same key and the same body gets that stored answer back,
billed nothing: a client whose connection dropped after the server had answered retries safely,
and answers of randomised defences (noise) are not drawn a second time. Same key, other body:
`IdempotencyMismatch`; same key while the first is still being answered: `IdempotencyInFlight`.
Stored answers are forgotten after `ttl` seconds (the key can then be used afresh).
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
# Columns added after the first release; `Ledger()` adds them to an older ledger file.
IDEMPOTENCY_COLUMNS = {
    "idem_key": "TEXT",  # the client's Idempotency-Key; NULL = none (or forgotten after the ttl)
    "body_sha": "TEXT",  # SHA-256 of the request that used the key
    "answer": "BLOB",  # little-endian float32 count×dim answer of a keyed, served request
    "dim": "INTEGER",
}
IDEMPOTENCY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS requests_idem ON requests(account, idem_key) WHERE idem_key IS NOT NULL"


class QuotaExceeded(Exception):
    """The request would take the account past its quota; nothing was recorded."""


class IdempotencyInFlight(Exception):
    """A request with this idempotency key is still being answered; retry in a moment."""


class IdempotencyMismatch(Exception):
    """The idempotency key was already used by this account for a different request."""


@dataclass(frozen=True)
class Replay:
    """The stored answer of an earlier request with the same idempotency key (billed then, not now)."""

    request_id: int
    answer: np.ndarray  # float32 count×dim


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

    def __init__(self, path: str | Path, ttl: float = 24 * 3600.0):
        self.path = Path(path)
        self.ttl = float(ttl)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            for attempt in range(100):  # switching to WAL needs the file to itself; SQLite does not wait for that
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 99:
                        raise
                    time.sleep(0.05)
        with self._transaction() as con:  # one process at a time: two opening an old file must not both add a column
            statement = ""
            for line in SCHEMA.splitlines(keepends=True):  # one statement at a time (executescript would COMMIT)
                statement += line
                if sqlite3.complete_statement(statement):
                    con.execute(statement)
                    statement = ""
            have = {row[1] for row in con.execute("PRAGMA table_info(requests)")}
            for column, kind in IDEMPOTENCY_COLUMNS.items():
                if column not in have:
                    con.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")
            con.execute(IDEMPOTENCY_INDEX)

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
    def reserve(self, account: str, count: int, price: float, idem_key: str | None = None, body_sha: str | None = None) -> int | Replay:
        """Atomically check the quota and record a 'reserved' request; -> request id. Raises QuotaExceeded.

        With `idem_key`: a served earlier request of this account with that key and the same `body_sha`
        -> its `Replay` (nothing recorded or billed); same key, other body -> IdempotencyMismatch;
        same key still reserved -> IdempotencyInFlight.
        """
        with self._transaction() as con:
            row = con.execute("SELECT quota FROM accounts WHERE name = ? AND revoked IS NULL", (account,)).fetchone()
            if row is None:
                raise KeyError(f"no active account {account!r}")
            if idem_key is not None:
                self._forget_expired(con, account)
                earlier = con.execute(
                    "SELECT id, status, body_sha, answer, count, dim FROM requests WHERE account = ? AND idem_key = ?", (account, idem_key)
                ).fetchone()
                if earlier is not None:
                    rid, status, sha, answer, n, dim = earlier
                    if sha != body_sha:
                        raise IdempotencyMismatch(
                            f"idempotency key {idem_key!r} was already used by account {account!r} for a different request "
                            f"(request {rid}), or the server now serves another model or defence; use a new key for a new request"
                        )
                    if status == "reserved":
                        raise IdempotencyInFlight(f"request {rid} with idempotency key {idem_key!r} is still being answered; retry shortly")
                    if answer is None:
                        raise IdempotencyMismatch(f"request {rid} with idempotency key {idem_key!r} was served without a stored answer; use a new key")
                    return Replay(int(rid), np.frombuffer(answer, dtype="<f4").reshape(int(n), int(dim)).astype(np.float32))
            quota = row[0]
            if quota is not None:
                used = con.execute("SELECT COALESCE(SUM(count), 0) FROM requests WHERE account = ?", (account,)).fetchone()[0]
                if used + count > quota:
                    raise QuotaExceeded(
                        f"request of {count} images refused: account {account!r} has used {used} of its quota of "
                        f"{quota} queries ({quota - used} left); nothing was billed"
                    )
            cur = con.execute(
                "INSERT INTO requests (account, time, count, price, status, idem_key, body_sha) VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
                (account, time.time(), count, price, idem_key, body_sha if idem_key is not None else None),
            )
            return int(cur.lastrowid)

    def commit(self, request_id: int, answer: np.ndarray | None = None) -> None:
        """Mark served; a keyed request also stores `answer` (count×dim) for replays, in the same transaction."""
        blob = dim = None
        if answer is not None:
            arr = np.ascontiguousarray(answer, dtype="<f4")
            blob, dim = arr.tobytes(), int(arr.shape[1])
        with self._transaction() as con:
            con.execute(
                "UPDATE requests SET status = 'served', answer = CASE WHEN idem_key IS NULL THEN NULL ELSE ? END, "
                "dim = CASE WHEN idem_key IS NULL THEN NULL ELSE ? END WHERE id = ?",
                (blob, dim, request_id),
            )

    def cancel(self, request_id: int) -> None:
        with self._transaction() as con:
            con.execute("DELETE FROM requests WHERE id = ? AND status = 'reserved'", (request_id,))

    def forget_expired_answers(self) -> int:
        """Free the stored answers of keyed requests older than the ttl, for every account; -> how many.
        (The ledger rows stay: only the replay copies go.)"""
        with self._transaction() as con:
            return self._forget_expired(con)

    def _forget_expired(self, con, account: str | None = None) -> int:
        """Inside a transaction: forget keys and answers older than the ttl (of one account, or all)."""
        where = "status = 'served' AND idem_key IS NOT NULL AND time < ?" + (" AND account = ?" if account is not None else "")
        args = (time.time() - self.ttl,) + ((account,) if account is not None else ())
        return con.execute(f"UPDATE requests SET idem_key = NULL, body_sha = NULL, answer = NULL WHERE {where}", args).rowcount

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
