"""Ledger and keys: hashed keys, constant-time check, revoke, atomic reservations, leases, shared
rate limits, CLI — on SQLite and, where a test server is set, PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from stealkit.cli import app
from stealkit.db import Database, parse_url
from stealkit.service.keys import hash_key, key_id_of
from stealkit.service.leases import Lease, reap
from stealkit.service.ledger import Ledger, QuotaExceeded, ReservationLost
from stealkit.service.ratelimit import TokenBuckets, take_token
from stealkit.service.testing import BACKENDS, ledger_url


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    with ledger_url(request.param, tmp_path) as u:
        yield u


def test_keys_are_random_and_stored_hashed(tmp_path):
    path = tmp_path / "l.sqlite"
    led = Ledger(path)
    k1, k2 = led.create_account("a"), led.create_account("b")
    assert k1 != k2 and key_id_of(k1) and len(k1) > 50
    with sqlite3.connect(path) as con:
        dump = "\n".join(con.iterdump())
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert k1 not in dump and hash_key(k1) in dump
    assert led.authenticate(k1).name == "a" and led.authenticate(k2).name == "b"
    assert led.authenticate(k1[:-1] + ("A" if k1[-1] != "A" else "B")) is None
    assert led.authenticate("sk_nothex_abc") is None and led.authenticate("") is None
    with pytest.raises(ValueError, match="exists"):
        led.create_account("a")
    led.revoke("a")
    assert led.authenticate(k1) is None and not led.account("a").active


def test_reserve_commit_cancel_and_stale(url):
    led = Ledger(url)
    led.create_account("a", quota=10)
    r1 = led.reserve("a", 6, 0.006)
    with pytest.raises(QuotaExceeded, match="4 left"):
        led.reserve("a", 5, 0.005)  # the reservation counts
    led.commit(r1)
    r2 = led.reserve("a", 4, 0.004)
    led.cancel(r2)
    u = led.usage("a")
    assert (u.queries, u.reserved, u.remaining, u.cost) == (6, 0, 4, pytest.approx(0.006))
    led.reserve("a", 3, 0.003)  # never committed: a process died
    assert Ledger(url).drop_stale_reservations() == 1
    assert led.usage("a").remaining == 4


def test_a_live_lease_keeps_its_reservations_and_an_expired_one_loses_them(url):
    """What a second worker may clear at startup: only reservations of processes whose lease expired."""
    worker_a, worker_b = Ledger(url), Ledger(url)
    worker_a.create_account("a", quota=10)
    lease = Lease(worker_a, seconds=0.5)
    rid = worker_a.reserve("a", 6, 0.0)
    assert worker_b.drop_stale_reservations() == 0 and reap(worker_b) == 0  # A is alive: its reservation stays
    with pytest.raises(QuotaExceeded, match="4 left"):
        worker_b.reserve("a", 5, 0.0)
    worker_a.commit(rid)  # billed by A, as answered
    stalled = worker_a.reserve("a", 2, 0.0)
    time.sleep(0.7)  # A stalls past its lease (nothing renews it)
    assert reap(worker_b) == 1
    with pytest.raises(ReservationLost):
        worker_a.commit(stalled)  # A wakes up: there is nothing to bill, so it must not answer
    assert not lease.renew()  # and learns that its lease had been lost
    u = worker_b.usage("a")
    assert (u.queries, u.reserved, u.remaining) == (6, 0, 4)
    lease.release()
    assert worker_a.owner is None


def test_a_renewing_lease_outlives_its_length(url):
    led = Ledger(url)
    led.create_account("a")
    lease = Lease(led, seconds=0.4).start()  # renewed every 0.13 s by its thread
    rid = led.reserve("a", 1, 0.0)
    time.sleep(1.0)
    assert reap(Ledger(url)) == 0 and lease.fresh()
    led.commit(rid)
    lease.release()
    assert Ledger(url).usage("a").queries == 1


def test_commit_checks_the_row_it_marks(url):
    led = Ledger(url)
    led.create_account("a")
    rid = led.reserve("a", 2, 0.0, "k", "s")
    led.commit(rid, np.ones((2, 3), np.float32))
    with pytest.raises(ReservationLost):
        led.commit(rid)  # already served: a second commit bills nothing and says so
    led.cancel(other := led.reserve("a", 1, 0.0))
    with pytest.raises(ReservationLost):
        led.commit(other)
    assert led.usage("a").queries == 2


def test_rate_limit_buckets_are_shared_by_every_process(url):
    a, b = Ledger(url), Ledger(url)  # two workers
    a.create_account("r", rate=1.0, burst=2)
    assert take_token(a, "r", 1.0, 2) == 0.0 and take_token(b, "r", 1.0, 2) == 0.0
    assert take_token(a, "r", 1.0, 2) > 0.5 and take_token(b, "r", 1.0, 2) > 0.5  # one bucket, empty for both
    time.sleep(1.05)
    assert take_token(b, "r", 1.0, 2) == 0.0
    waits, lock = [], threading.Lock()

    def grab():
        w = take_token(Ledger(url), "r2", 0.001, 5)
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=grab) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(w == 0.0 for w in waits) == 5  # exactly the burst, however many race for it


def test_database_urls():
    assert parse_url("ledger.sqlite") == ("sqlite", "ledger.sqlite")
    assert parse_url("sqlite:///runs/l.sqlite") == ("sqlite", "runs/l.sqlite")
    assert parse_url("sqlite:////tmp/l.sqlite") == ("sqlite", "/tmp/l.sqlite")
    assert parse_url("postgres://u@h/db") == ("postgresql", "postgresql://u@h/db")
    for bad in ("mysql://h/db", "sqlite:", "sqlite://x", ""):
        with pytest.raises(ValueError):
            parse_url(bad)
    db = Database.open(":memory:")  # one connection, shared: the defence's default
    db.create("CREATE TABLE t (k TEXT PRIMARY KEY, n {int})")
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", 1))
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("UPDATE t SET n = 5")
        raise RuntimeError("rolled back")
    with db.read() as tx:
        assert tx.execute("SELECT n FROM t").fetchall() == [(1,)]


def test_token_bucket():
    now = [0.0]
    b = TokenBuckets(clock=lambda: now[0])
    assert b.acquire("a", None) == 0.0
    assert [b.acquire("a", 2.0, 2) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    now[0] = 0.5
    assert b.acquire("a", 2.0, 2) == 0.0 and b.acquire("b", 2.0, 2) == 0.0


def test_keys_cli(url):
    ledger = url
    run = CliRunner().invoke
    r = run(app, ["keys", "create", "alice", "--ledger", ledger, "--quota", "100", "--rate", "120/min"])
    assert r.exit_code == 0, r.output
    key = r.output.strip()
    led = Ledger(ledger)
    acct = led.authenticate(key)
    assert acct.quota == 100 and acct.rate == 2.0
    assert run(app, ["keys", "set", "alice", "--ledger", ledger, "--quota", "-1"]).exit_code == 0
    assert led.account("alice").quota is None
    out = run(app, ["keys", "list", "--ledger", ledger]).output
    assert "alice" in out and "active" in out
    assert run(app, ["keys", "revoke", "alice", "--ledger", ledger]).exit_code == 0
    assert "revoked" in run(app, ["keys", "list", "--ledger", ledger]).output
    assert run(app, ["keys", "revoke", "nobody", "--ledger", ledger]).exit_code != 0
