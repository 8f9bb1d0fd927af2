"""Ledger and keys: hashed keys, constant-time check, revoke, atomic reservations, CLI."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from stealkit.cli import app
from stealkit.service.keys import hash_key, key_id_of
from stealkit.service.ledger import Ledger, QuotaExceeded
from stealkit.service.ratelimit import TokenBuckets


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


def test_reserve_commit_cancel_and_stale(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
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
    assert Ledger(tmp_path / "l.sqlite").drop_stale_reservations() == 1
    assert led.usage("a").remaining == 4


def test_token_bucket():
    now = [0.0]
    b = TokenBuckets(clock=lambda: now[0])
    assert b.acquire("a", None) == 0.0
    assert [b.acquire("a", 2.0, 2) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]
    now[0] = 0.5
    assert b.acquire("a", 2.0, 2) == 0.0 and b.acquire("b", 2.0, 2) == 0.0


def test_keys_cli(tmp_path):
    ledger = str(tmp_path / "l.sqlite")
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
