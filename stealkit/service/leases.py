"""Leases: which server process owns which reservations, so that no process clears a live one's.

Every serving process (a uvicorn worker, on any host) holds a lease row `(owner, host, pid, expires)`
in the ledger's database and renews it every `seconds / 3` from a background thread; its reservations
carry its owner id. A reservation is provably dead once its owner's lease has expired (by the
database's clock, one clock for all hosts): the process died, or stalled for longer than the lease, and
`reap` deletes it so its quota is free again. A stalled process that wakes up finds its reservation gone:
`Ledger.commit` raises `ReservationLost` and the request is not answered (503, nothing billed).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

log = logging.getLogger("stealkit.service")


def reap(ledger, unowned: bool = False) -> int:
    """Delete the reservations whose owner's lease has expired (and, with `unowned`, those no lease owns)
    and the expired leases; -> how many reservations."""
    db = ledger.db
    dead = f"owner IS NOT NULL AND owner NOT IN (SELECT owner FROM leases WHERE expires >= {db.now})"
    where = f"status = 'reserved' AND ({dead}{' OR owner IS NULL' if unowned else ''})"
    with db.transaction() as tx:
        n = tx.execute(f"DELETE FROM requests WHERE {where}").rowcount
        tx.execute(f"DELETE FROM leases WHERE expires < {db.now}")
    return int(n)


class Lease:
    """This process's lease on `ledger` (sets `ledger.owner`); `start()` renews and reaps in a thread."""

    def __init__(self, ledger, seconds: float = 30.0):
        if seconds <= 0:
            raise ValueError(f"lease must last > 0 s, got {seconds}")
        self.ledger, self.seconds = ledger, float(seconds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.renewed_at: float | None = None  # database time of the last successful renewal
        self.lost = 0  # renewals that found the lease gone (reaped while this process stalled)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        db = ledger.db
        with db.transaction() as tx:
            tx.execute(
                f"INSERT INTO leases (owner, host, pid, started, expires) VALUES (?, ?, ?, {db.now}, {db.now} + ?)",
                (self.owner, socket.gethostname(), os.getpid(), self.seconds),
            )
        self.renewed_at = db.clock()
        ledger.owner = self.owner

    def renew(self) -> bool:
        """Extend the lease; -> False (and a new lease row) if it had expired and been reaped."""
        db = self.ledger.db
        with db.transaction() as tx:
            ok = tx.execute(f"UPDATE leases SET expires = {db.now} + ? WHERE owner = ?", (self.seconds, self.owner)).rowcount == 1
            if not ok:
                tx.execute(
                    f"INSERT INTO leases (owner, host, pid, started, expires) VALUES (?, ?, ?, {db.now}, {db.now} + ?)",
                    (self.owner, socket.gethostname(), os.getpid(), self.seconds),
                )
            self.renewed_at = float(tx.execute(f"SELECT {db.now}").fetchone()[0])
        if not ok:
            self.lost += 1
            log.warning("lease %s had expired (this process stalled for over %.0f s); its reservations were cleared", self.owner, self.seconds)
        return ok

    def fresh(self) -> bool:
        """Whether the last renewal is recent enough that the lease has not expired (for readiness)."""
        if self.renewed_at is None:
            return False
        try:
            return self.ledger.db.clock() < self.renewed_at + self.seconds
        except Exception:  # noqa: BLE001 - an unreachable database is "not fresh"
            return False

    def start(self) -> "Lease":
        self._thread = threading.Thread(target=self._run, daemon=True, name="stealkit-lease")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
                self.ledger.retry_cancels()
                freed = reap(self.ledger)
                if freed:
                    log.warning("cleared %d reservations of server processes whose lease expired", freed)
            except Exception as exc:  # noqa: BLE001 - keep renewing; readiness reports a stale lease
                log.error("lease renewal failed: %s", exc)

    def release(self) -> None:
        """Stop renewing and delete the lease (after the server has drained its requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with self.ledger.db.transaction() as tx:
                tx.execute("DELETE FROM leases WHERE owner = ?", (self.owner,))
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("could not release lease %s: %s", self.owner, exc)
        if self.ledger.owner == self.owner:
            self.ledger.owner = None
