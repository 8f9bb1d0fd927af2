"""The EaaS ledger: accounts and one row per served request, in SQLite (WAL) or PostgreSQL.

Billing protocol (one image = one query, StolenEncoder, Liu et al., CCS 2022, Section II: the API charges per query):
  reserve(account, n)   one transaction: refuse whole if used + n > quota; insert a 'reserved' row
                        owned by this process's lease (leases.py)
  commit(request_id)    mark 'served', before the response is sent; raises ReservationLost if there
                        was no reservation left to mark (then the request is not answered)
  cancel(request_id)    delete the row: the encoder failed, nothing is billed
Usage and quota count 'reserved' + 'served' rows, so concurrent requests (threads, workers, hosts)
can never overshoot: the account row is locked (SQLite: one writer; PostgreSQL: SELECT ... FOR UPDATE).
Reservations of a process whose lease expired were never answered; any server clears them (reap),
and a starting server also clears reservations that no lease owns (`drop_stale_reservations`).

Idempotency (a paid query is never paid twice): a request may carry a client-chosen key. The
answer of a keyed request is stored with its 'served' row, in the same transaction, and a later
request of the same account with the same key and the same body gets that stored answer back,
billed nothing: a client whose connection dropped after the server had answered retries safely,
and answers of randomised defences (noise) are not drawn a second time. Same key, other body:
`IdempotencyMismatch`; same key while the first is still being answered: `IdempotencyInFlight`.
Stored answers are forgotten after `ttl` seconds (the key can then be used afresh).

The database is named by a URL (db.py): a path or sqlite:///path (default), or postgresql://...
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stealkit.db import Database, DatabaseUnavailable
from stealkit.service.keys import hash_key, key_id_of, key_matches, new_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, key_hash TEXT NOT NULL,
    quota {int}, rate {real}, burst {int}, created {real} NOT NULL, revoked {real}
);
CREATE TABLE IF NOT EXISTS requests (
    id {id}, account TEXT NOT NULL REFERENCES accounts(name), time {real} NOT NULL,
    count {int} NOT NULL, price {real} NOT NULL, status TEXT NOT NULL CHECK (status IN ('reserved', 'served'))
);
CREATE INDEX IF NOT EXISTS requests_account ON requests(account, status);
CREATE TABLE IF NOT EXISTS leases (
    owner TEXT PRIMARY KEY, host TEXT NOT NULL, pid {int} NOT NULL, started {real} NOT NULL, expires {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS rate_buckets (account TEXT PRIMARY KEY, tokens {real} NOT NULL, updated {real} NOT NULL)
"""
# accounts: quota in images (NULL = unlimited), rate in requests/s and burst (token-bucket capacity;
# NULL = max(1, ceil(rate))), revoked = time of revocation (NULL = active).
# requests: count = images answered (billable queries), price = charged for this request.
# Columns added after the first release; `Ledger()` adds them to an older ledger.
ADDED_COLUMNS = {
    "requests": {
        "idem_key": "TEXT",  # the client's Idempotency-Key; NULL = none (or forgotten after the ttl)
        "body_sha": "TEXT",  # SHA-256 of the request that used the key
        "answer": "{blob}",  # little-endian float32 count×dim answer of a keyed, served request
        "dim": "{int}",
        "owner": "TEXT",  # the lease of the process that reserved the row; NULL = a process without one
        "request_id": "TEXT",  # the X-Request-Id it was answered with (random; nothing to count by)
    }
}
INDEXES = [
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_idem ON requests(account, idem_key) WHERE idem_key IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS requests_reserved ON requests(owner) WHERE status = 'reserved'",
]


class QuotaExceeded(Exception):
    """The request would take the account past its quota; nothing was recorded."""


class IdempotencyInFlight(Exception):
    """A request with this idempotency key is still being answered; retry in a moment."""


class IdempotencyMismatch(Exception):
    """The idempotency key was already used by this account for a different request."""


class ReservationLost(Exception):
    """commit() found no reservation to mark served: it was cleared as a dead process's (its lease had
    expired) or cancelled. The request must not be answered: nothing is billed for it."""


@dataclass(frozen=True)
class Replay:
    """The stored answer of an earlier request with the same idempotency key (billed then, not now)."""

    request_id: int
    answer: np.ndarray  # float32 count×dim
    public_id: str | None = None  # the X-Request-Id the billed request was answered with


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
    """Thread-safe and shared by processes and hosts: every operation is one short transaction."""

    def __init__(self, url: str | Path, ttl: float = 24 * 3600.0):
        self.db = Database.open(url)
        self.url = str(url)
        self.path = self.db.path  # the SQLite file (None for PostgreSQL or in-memory)
        self.ttl = float(ttl)
        self.owner: str | None = None  # this process's lease (leases.Lease sets it); reservations carry it
        self._uncancelled: set[int] = set()  # reservations whose cancel could not reach the database
        self.db.create(SCHEMA, ADDED_COLUMNS, INDEXES)

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
        with self.db.transaction() as tx:
            if tx.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"account {name!r} already exists")
            tx.execute(
                "INSERT INTO accounts (name, key_id, key_hash, quota, rate, burst, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, key_id, hash_key(key), quota, rate, burst, time.time()),
            )
        return key

    def set_limits(self, name: str, *, quota: int | None = ..., rate: float | None = ..., burst: int | None = ...) -> None:
        """Change an account's quota / rate / burst (pass None for unlimited; omit to keep)."""
        fields = {k: v for k, v in (("quota", quota), ("rate", rate), ("burst", burst)) if v is not ...}
        if not fields:
            return
        with self.db.transaction() as tx:
            sets = ", ".join(f"{k} = ?" for k in fields)
            if tx.execute(f"UPDATE accounts SET {sets} WHERE name = ?", (*fields.values(), name)).rowcount == 0:
                raise KeyError(f"no account {name!r}")

    def revoke(self, name: str) -> None:
        with self.db.transaction() as tx:
            cur = tx.execute("UPDATE accounts SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
            if cur.rowcount == 0 and not tx.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise KeyError(f"no account {name!r}")

    def accounts(self) -> list[Account]:
        with self.db.read() as tx:
            rows = tx.execute("SELECT name, key_id, quota, rate, burst, created, revoked FROM accounts ORDER BY created").fetchall()
        return [Account(*r) for r in rows]

    def account(self, name: str) -> Account | None:
        with self.db.read() as tx:
            r = tx.execute("SELECT name, key_id, quota, rate, burst, created, revoked FROM accounts WHERE name = ?", (name,)).fetchone()
        return Account(*r) if r else None

    def authenticate(self, key: str | None) -> Account | None:
        """The active account owning `key`, or None (malformed, unknown or revoked key)."""
        key_id = key_id_of(key) if key else None
        if key_id is None:
            return None
        with self.db.read() as tx:
            r = tx.execute(
                "SELECT name, key_id, quota, rate, burst, created, revoked, key_hash FROM accounts WHERE key_id = ?", (key_id,)
            ).fetchone()
        if r is None or not key_matches(key, r[7]) or r[6] is not None:
            return None
        return Account(*r[:7])

    # ---- billing --------------------------------------------------------------------------
    def reserve(self, account: str, count: int, price: float, idem_key: str | None = None, body_sha: str | None = None,
                request_id: str | None = None) -> int | Replay:
        """Atomically check the quota and record a 'reserved' request; -> its row id. Raises QuotaExceeded.

        With `idem_key`: a served earlier request of this account with that key and the same `body_sha`
        -> its `Replay` (nothing recorded or billed); same key, other body -> IdempotencyMismatch;
        same key still reserved -> IdempotencyInFlight. `request_id` (the public X-Request-Id) is kept with the row.
        """
        with self.db.transaction() as tx:
            row = tx.execute(f"SELECT quota FROM accounts WHERE name = ? AND revoked IS NULL{self.db.for_update}", (account,)).fetchone()
            if row is None:
                raise KeyError(f"no active account {account!r}")
            if idem_key is not None:
                self._forget_expired(tx, account)
                earlier = tx.execute(
                    "SELECT id, status, body_sha, answer, count, dim, request_id FROM requests WHERE account = ? AND idem_key = ?",
                    (account, idem_key),
                ).fetchone()
                if earlier is not None:
                    return _replay(earlier, account, idem_key, body_sha)
            quota = row[0]
            if quota is not None:
                used = int(tx.execute("SELECT COALESCE(SUM(count), 0) FROM requests WHERE account = ?", (account,)).fetchone()[0])
                if used + count > quota:
                    raise QuotaExceeded(
                        f"request of {count} images refused: account {account!r} has used {used} of its quota of "
                        f"{quota} queries ({quota - used} left); nothing was billed"
                    )
            rows = tx.execute(
                "INSERT INTO requests (account, time, count, price, status, idem_key, body_sha, owner, request_id) "
                "VALUES (?, ?, ?, ?, 'reserved', ?, ?, ?, ?) RETURNING id",
                (account, time.time(), count, price, idem_key, body_sha if idem_key is not None else None, self.owner, request_id),
            ).fetchall()
            return int(rows[0][0])

    def commit(self, request_id: int, answer: np.ndarray | None = None) -> None:
        """Mark served; a keyed request also stores `answer` (count×dim) for replays, in the same transaction.
        Raises ReservationLost when no reservation was marked (it had been cleared or cancelled)."""
        blob = dim = None
        if answer is not None:
            arr = np.ascontiguousarray(answer, dtype="<f4")
            blob, dim = arr.tobytes(), int(arr.shape[1])
        t = self.db.types
        with self.db.transaction() as tx:
            cur = tx.execute(
                f"UPDATE requests SET status = 'served', answer = CASE WHEN idem_key IS NULL THEN NULL ELSE CAST(? AS {t['blob']}) END, "
                f"dim = CASE WHEN idem_key IS NULL THEN NULL ELSE CAST(? AS {t['int']}) END WHERE id = ? AND status = 'reserved'",
                (blob, dim, request_id),
            )
            if cur.rowcount != 1:
                raise ReservationLost(
                    f"request {request_id} has no reservation left to bill (cleared as a dead process's, or cancelled); "
                    "it was not answered and nothing was billed"
                )

    def cancel(self, request_id: int) -> None:
        """Delete a reservation. If the database cannot be reached, it is remembered and `retry_cancels`
        (the lease thread) deletes it later: a live worker's reservation would otherwise never be cleared."""
        try:
            with self.db.transaction() as tx:
                tx.execute("DELETE FROM requests WHERE id = ? AND status = 'reserved'", (request_id,))
        except DatabaseUnavailable:
            self._uncancelled.add(request_id)
            raise

    def retry_cancels(self) -> int:
        """Delete the reservations whose cancel failed; -> how many are still pending."""
        for rid in sorted(self._uncancelled):
            try:
                with self.db.transaction() as tx:
                    tx.execute("DELETE FROM requests WHERE id = ? AND status = 'reserved'", (rid,))
                self._uncancelled.discard(rid)
            except DatabaseUnavailable:
                break
        return len(self._uncancelled)

    def forget_expired_answers(self) -> int:
        """Free the stored answers of keyed requests older than the ttl, for every account; -> how many.
        (The ledger rows stay: only the replay copies go.)"""
        with self.db.transaction() as tx:
            return self._forget_expired(tx)

    def _forget_expired(self, tx, account: str | None = None) -> int:
        """Inside a transaction: forget keys and answers older than the ttl (of one account, or all)."""
        where = "status = 'served' AND idem_key IS NOT NULL AND time < ?" + (" AND account = ?" if account is not None else "")
        args = (time.time() - self.ttl,) + ((account,) if account is not None else ())
        return tx.execute(f"UPDATE requests SET idem_key = NULL, body_sha = NULL, answer = NULL WHERE {where}", args).rowcount

    def drop_stale_reservations(self) -> int:
        """Delete the reservations of processes that are provably gone: their lease expired, or no lease
        owns them (a ledger used without one, or a server before leases); -> how many. Live servers'
        reservations stay (a starting worker must not unbill the requests of the others)."""
        from stealkit.service.leases import reap

        return reap(self, unowned=True)

    def usage(self, account: str) -> Usage:
        with self.db.read() as tx:
            quota = tx.execute("SELECT quota FROM accounts WHERE name = ?", (account,)).fetchone()
            if quota is None:
                raise KeyError(f"no account {account!r}")
            rows = {
                s: (q, r, c)
                for s, q, r, c in tx.execute(
                    "SELECT status, COALESCE(SUM(count), 0), COUNT(*), COALESCE(SUM(price), 0) FROM requests "
                    "WHERE account = ? GROUP BY status",
                    (account,),
                ).fetchall()
            }
        q, r, c = rows.get("served", (0, 0, 0.0))
        return Usage(account, int(q), int(r), float(c), quota[0], int(rows.get("reserved", (0, 0, 0))[0]))

    def billed(self) -> dict[str, int]:
        """{account: images billed} for every account (served rows)."""
        with self.db.read() as tx:
            rows = tx.execute("SELECT account, COALESCE(SUM(count), 0) FROM requests WHERE status = 'served' GROUP BY account").fetchall()
        return {a: int(n) for a, n in rows}

    def records(self, account: str | None = None) -> list[tuple]:
        """(id, account, time, count, price, status, request_id) rows, oldest first."""
        sql = "SELECT id, account, time, count, price, status, request_id FROM requests"
        with self.db.read() as tx:
            if account is None:
                rows = tx.execute(sql + " ORDER BY id").fetchall()
            else:
                rows = tx.execute(sql + " WHERE account = ? ORDER BY id", (account,)).fetchall()
        return [tuple(r) for r in rows]

    def close(self) -> None:
        self.db.close()


def _replay(earlier, account: str, idem_key: str, body_sha: str | None) -> Replay:
    rid, status, sha, answer, n, dim, public_id = earlier
    if sha != body_sha:
        raise IdempotencyMismatch(
            f"idempotency key {idem_key!r} was already used by account {account!r} for a different request, "
            "or the server now serves another model or defence; use a new key for a new request"
        )
    if status == "reserved":
        raise IdempotencyInFlight(f"a request with idempotency key {idem_key!r} is still being answered; retry shortly")
    if answer is None:
        raise IdempotencyMismatch(f"the request with idempotency key {idem_key!r} was served without a stored answer; use a new key")
    arr = np.frombuffer(bytes(answer), dtype="<f4").reshape(int(n), int(dim)).astype(np.float32)
    return Replay(int(rid), arr, public_id)
