"""Several servers on one ledger, on SQLite and on PostgreSQL: a starting server keeps the
live reservations of the others, a stalled one that outlived its lease answers nothing, and
`stealkit serve --workers 2` under 16 racing clients through a rolling restart and a kill -9 bills
exactly what it returned and never passes the quota. The ledger is the judge.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread
from stealkit.service.testing import BACKENDS, ServeProcess, ledger_url


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


@pytest.fixture(params=BACKENDS)
def ledger(request, tmp_path):
    with ledger_url(request.param, tmp_path) as url:
        yield url


def post(client, key, arr: np.ndarray, **headers):
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream", "X-Array-Shape": ",".join(map(str, arr.shape)),
         "Accept": "application/octet-stream", **headers}
    return client.post("/v1/embeddings", content=arr.tobytes(), headers=h)


def imgs(n, seed=0, side=32):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8)


class Gate:
    """A defence that holds every answer until released (a request in flight, on demand)."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, features, *, images=None, account="anonymous"):
        self.entered.set()
        assert self.release.wait(60)
        return features


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)



def test_a_second_server_keeps_the_first_ones_reservations(ledger, encoder):
    """A rolling restart: B starts on the ledger while A answers a request. B must neither delete A's
    reservation (A would then answer unbilled) nor let the account pass its quota meanwhile."""
    key = Ledger(ledger).create_account("a", quota=10)
    gate = Gate()
    results = {}
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder, defence=gate)) as url_a:
        def first():
            with httpx.Client(base_url=url_a, timeout=60) as c:
                results["a"] = post(c, key, imgs(8))

        t = threading.Thread(target=first)
        t.start()
        assert gate.entered.wait(30)  # reserved, being answered
        assert Ledger(ledger).usage("a").reserved == 8
        with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url_b:
            assert Ledger(ledger).usage("a").reserved == 8  # B's startup kept A's live reservation
            with httpx.Client(base_url=url_b, timeout=60) as c:
                second = post(c, key, imgs(8, seed=1))
            assert second.status_code == 402 and "2 left" in second.json()["detail"]
            gate.release.set()
            t.join(timeout=60)
    assert results["a"].status_code == 200 and results["a"].headers["x-billed"] == "8"
    u = Ledger(ledger).usage("a")
    assert (u.queries, u.reserved, u.requests) == (8, 0, 1)  # what was returned is what was billed
    assert [r[6] for r in Ledger(ledger).records("a")] == [results["a"].headers["x-request-id"]]


def test_rate_limits_hold_across_servers(ledger, encoder):
    """One token bucket per account for all servers on the ledger (before: one per process)."""
    key = Ledger(ledger).create_account("r", rate=0.2, burst=1)
    x = imgs(1)
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as a, \
            serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as b:
        with httpx.Client(base_url=a, timeout=60) as ca, httpx.Client(base_url=b, timeout=60) as cb:
            assert post(ca, key, x).status_code == 200
            r = post(cb, key, x)
            assert r.status_code == 429 and r.headers["retry-after"] == "5"
    assert Ledger(ledger).usage("r").queries == 1


def _stop_outside_a_write(pid: int, sqlite_path, attempts: int = 50) -> None:
    """SIGSTOP the worker at a moment it holds no SQLite write lock: frozen inside a write transaction (a lease
    renewal, say) it would lock every other writer, the reaper included, for as long as it stays frozen (seen in
    CI once: 'database is locked'). PostgreSQL (no file path) takes row locks only, so any moment will do."""
    import sqlite3
    import time

    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        if sqlite_path is None:
            return
        con = sqlite3.connect(str(sqlite_path), timeout=0.2, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
        finally:
            con.close()
    raise AssertionError(f"the worker held the ledger's write lock at each of {attempts} tries")


def test_a_stalled_server_past_its_lease_answers_nothing(tmp_path, ledger, encoder):
    """A frozen worker (SIGSTOP) whose lease expires loses its reservation to another worker's reaper;
    woken up, it must not answer (503) and nothing is billed."""
    ckpt = save_encoder(encoder, tmp_path / "victim")
    key = Ledger(ledger).create_account("a", quota=2000)
    args = ["--checkpoint", str(ckpt), "--ledger", ledger, "--device", "cpu", "--threads", "1", "--lease-seconds", "1", "--log-level", "warning"]
    big = imgs(1024, side=64)  # 4 Mi pixels: about a second of encoder time on one thread
    result = {}
    with ServeProcess(args, log_path=tmp_path / "a.log") as a:
        settings = ServiceSettings(ledger=ledger, device="cpu", lease_s=1.0)
        with serve_in_thread(create_app(settings, encoder=encoder)):  # another worker on the ledger, reaping
            def send():
                with httpx.Client(base_url=a.url, timeout=60) as c:
                    result["r"] = post(c, key, big)

            t = threading.Thread(target=send)
            t.start()
            wait_for(lambda: Ledger(ledger).usage("a").reserved == 1024, what="the reservation")
            _stop_outside_a_write(a.pid, Ledger(ledger).path)
            try:
                wait_for(lambda: Ledger(ledger).usage("a").reserved == 0, timeout=20, what="the reaper")
            finally:
                os.kill(a.pid, signal.SIGCONT)
            t.join(timeout=60)
    assert result["r"].status_code == 503, result["r"].text
    assert "nothing was billed" in result["r"].json()["detail"]
    assert Ledger(ledger).records("a") == [] and Ledger(ledger).usage("a").remaining == 2000


def test_two_workers_race_sixteen_clients_through_a_rolling_restart_and_a_kill(tmp_path, ledger, encoder):
    """`stealkit serve --workers 2` on one ledger; 16 clients send 3-image requests, each with its own
    Idempotency-Key, retrying (the same key) on connection errors, 409 and 503. Mid-load: SIGHUP (uvicorn
    replaces the workers one by one: new ones start while the old ones answer) and kill -9 of a worker
    (its answered-but-lost requests come back as replays; its unanswered reservations expire with its
    lease). Then the quota is set to what is used + 100 and the clients race for the rest."""
    ckpt = save_encoder(encoder, tmp_path / "victim")
    led = Ledger(ledger)
    key = led.create_account("racer", quota=10**6)
    args = ["--checkpoint", str(ckpt), "--ledger", ledger, "--device", "cpu", "--workers", "2", "--threads", "1",
            "--lease-seconds", "2", "--log-level", "warning"]
    returned: dict[str, tuple[str, int]] = {}  # idempotency key -> (request id, images) of each answered request
    statuses, lock, stop, go = [], threading.Lock(), threading.Event(), threading.Event()
    idle = threading.Semaphore(0)  # released by a client that stopped between requests while `go` is clear
    go.set()

    def client(i: int, url: str):
        with httpx.Client(base_url=url, timeout=30) as c:
            for n in range(100_000):
                if not go.is_set():
                    idle.release()
                    go.wait()
                if stop.is_set():
                    return
                idem = f"c{i}-{n}"
                for _attempt in range(600):  # bounded retries of one logical request (same key)
                    try:
                        r = post(c, key, imgs(3, seed=1000 * i + n), **{"Idempotency-Key": idem})
                    except httpx.TransportError:
                        time.sleep(0.05)
                        continue
                    with lock:
                        statuses.append(r.status_code)
                    if r.status_code in (409, 503):
                        time.sleep(0.1)
                        continue
                    break
                if r.status_code == 402:
                    return
                assert r.status_code == 200, r.text
                with lock:
                    returned[idem] = (r.headers["x-request-id"], 3)
                time.sleep(0.05)

    with ServeProcess(args, log_path=tmp_path / "serve.log") as srv:
        wait_for(lambda: len(srv.workers()) == 2, what="two workers")
        threads = [threading.Thread(target=client, args=(i, srv.url)) for i in range(16)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(returned) >= 20, what="first answers")
            old = srv.workers()
            os.kill(srv.pid, signal.SIGHUP)  # rolling restart
            wait_for(lambda: not set(srv.workers()) & set(old) and len(srv.workers()) == 2, timeout=240, what="the rolling restart")
            served_before_kill = len(returned)
            victim = srv.workers()[0]
            os.kill(victim, signal.SIGKILL)  # uvicorn replaces it (within its 30 s health check); the other one answers meanwhile
            wait_for(lambda: len(returned) > served_before_kill + 10, timeout=120, what="answers after the kill")
            go.clear()  # the clients pause between requests; the killed worker's reservations expire with its lease
            for _ in threads:
                assert idle.acquire(timeout=120)
            wait_for(lambda: led.usage("racer").reserved == 0, timeout=30, what="the killed worker's reservations to clear")
            led.set_limits("racer", quota=led.usage("racer").queries + 100)
            go.set()  # the race for the last 100 queries
            for t in threads:
                t.join(timeout=180)
        finally:
            stop.set()
            go.set()
            for t in threads:
                t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert srv.proc.poll() is None, srv.log_tail()
    wait_for(lambda: led.usage("racer").reserved == 0, timeout=10, what="dead workers' reservations to clear")
    u = led.usage("racer")
    total = sum(n for _, n in returned.values())
    assert 402 in statuses and total > 100
    assert u.queries == total <= u.quota  # ledger total == embeddings returned; the quota never passed
    assert sorted(rid for rid, _ in returned.values()) == sorted(r[6] for r in led.records("racer"))
