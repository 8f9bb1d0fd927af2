"""The EaaS server through a real uvicorn on a loopback port: bitwise answers, a 16-client race
for the last queries, and a ledger that survives a restart and a SIGKILLed server process — on a
SQLite and on a PostgreSQL ledger (skipped without a server, except under CI=true)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from stealkit.models.checkpoint import save_encoder
from stealkit.models.encoder import build_encoder
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import free_port, serve_in_thread
from stealkit.service.testing import BACKENDS, ledger_url
from stealkit.targets.local import LocalTarget
from stealkit.targets.remote import RemoteTarget


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


@pytest.fixture(params=BACKENDS)
def ledger(request, tmp_path):
    """A fresh ledger URL: a SQLite file, or a database on the PostgreSQL test server."""
    with ledger_url(request.param, tmp_path) as url:
        yield url


def imgs(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def post(client: httpx.Client, key: str, x: torch.Tensor) -> httpx.Response:
    return client.post(
        "/v1/embeddings",
        content=x.numpy().tobytes(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream",
                 "X-Array-Shape": ",".join(map(str, x.shape)), "Accept": "application/octet-stream"},
    )


@pytest.mark.parametrize("transport", ["binary", "json"])
def test_http_answers_equal_local_encoder_bitwise(tmp_path, encoder, transport):
    ledger = str(tmp_path / "l.sqlite")
    key = Ledger(ledger).create_account("a")
    x = imgs(20)
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url:
        remote = RemoteTarget(url, key, batch_size=8, transport=transport)
        got = remote.embed(x)
        local = LocalTarget(encoder, batch_size=8).embed(x)
        assert got.dtype == torch.float32 and torch.equal(got, local)
        assert remote.queries == 20 and remote.usage()["queries"] == 20
        remote.close()


def test_sixteen_clients_race_for_the_last_queries(ledger, encoder):
    quota = 50
    key = Ledger(ledger).create_account("racer", quota=quota)
    returned, statuses, lock = [], [], threading.Lock()
    start = threading.Barrier(16)

    def client(i):
        with httpx.Client(base_url=url, timeout=60) as c:
            start.wait(timeout=30)
            for attempt in range(20):  # bounded
                r = post(c, key, imgs(3, seed=100 * i + attempt))
                with lock:
                    statuses.append(r.status_code)
                if r.status_code != 200:
                    break
                n, d = map(int, r.headers["x-embedding-shape"].split(","))
                assert len(r.content) == 4 * n * d
                with lock:
                    returned.append((r.headers["x-request-id"], n))

    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
    total = sum(n for _, n in returned)
    led = Ledger(ledger)
    u = led.usage("racer")
    assert set(statuses) == {200, 402}
    assert u.queries == total <= quota and total > quota - 3  # refused whole, so at most one batch short
    assert sorted(rid for rid, _ in returned) == sorted(r[6] for r in led.records("racer"))  # the public ids, one per row
    assert all(r[5] == "served" for r in led.records())


def test_ledger_survives_restart(ledger, encoder):
    key = Ledger(ledger).create_account("a", quota=100)
    settings = ServiceSettings(ledger=ledger, device="cpu", price_per_1000=1.2)
    for round_ in range(2):
        with serve_in_thread(create_app(settings, encoder=encoder)) as url, httpx.Client(base_url=url) as c:
            assert post(c, key, imgs(7, seed=round_)).status_code == 200
            u = c.get("/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
            assert u["queries"] == 7 * (round_ + 1) and u["remaining"] == 100 - 7 * (round_ + 1)
            assert u["cost"] == pytest.approx(7 * (round_ + 1) * 1.2 / 1000)


def test_ledger_survives_sigkill(tmp_path, ledger, encoder):
    ckpt = save_encoder(encoder, tmp_path / "victim")
    key = Ledger(ledger).create_account("a")
    port = free_port()
    code = "import sys; from stealkit.cli import app; app(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--checkpoint", str(ckpt), "--ledger", ledger,
         "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning", "--lease-seconds", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    returned, stop = [], threading.Event()
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "server did not come up"
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)

        def hammer():
            with httpx.Client(base_url=url, timeout=10) as c:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        r = post(c, key, imgs(4, seed=i))
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        returned.append((r.headers["x-request-id"], 4))

        t = threading.Thread(target=hammer)
        t.start()
        deadline = time.monotonic() + 60
        while len(returned) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-run, requests in flight
        proc.wait(timeout=10)
        stop.set()
        t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert len(returned) >= 8
    records = {r[6]: r for r in Ledger(ledger).records("a")}  # by public request id
    for rid, n in returned:  # every answer the client got is in the ledger, as served
        assert records[rid][3] == n and records[rid][5] == "served"
    served = sum(r[3] for r in records.values() if r[5] == "served")
    assert served - sum(n for _, n in returned) <= 4  # at most the one request in flight when killed
    # a restarted server drops reservations of requests never answered (once the killed process's
    # lease has expired: it cannot renew it any more) and keeps counting
    time.sleep(1.2)
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=encoder)) as url2:
        u = httpx.get(url2 + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
        assert u["queries"] == served
    assert all(r[5] == "served" for r in Ledger(ledger).records())
