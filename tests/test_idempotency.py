"""A paid query is never paid twice: Idempotency-Key in the ledger, the API and RemoteTarget.

The judge is the ledger (SQLite, and PostgreSQL where a test server is set): a retry after a lost
answer must leave exactly one billed row, and the client must get the very answer that was billed
(for a noise defence, not a fresh draw). API tests run against a real uvicorn on loopback.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import numpy as np
import pytest
import torch

from stealkit.defences.noise import GaussianNoise
from stealkit.models.encoder import build_encoder
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread
from stealkit.service.ledger import IdempotencyInFlight, IdempotencyMismatch, Replay
from stealkit.service.testing import BACKENDS, ledger_url
from stealkit.targets.remote import RemoteTarget


@pytest.fixture(params=BACKENDS)
def any_ledger(request, tmp_path):
    """A fresh ledger URL on either backend."""
    with ledger_url(request.param, tmp_path) as url:
        yield url


def imgs(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---- ledger --------------------------------------------------------------------------------------
def test_ledger_replays_a_keyed_answer_and_bills_once(any_ledger):
    led = Ledger(any_ledger)
    led.create_account("a", quota=10)
    rid = led.reserve("a", 3, 0.003, "k1", "sha-A")
    with pytest.raises(IdempotencyInFlight):
        led.reserve("a", 3, 0.003, "k1", "sha-A")  # the first is not answered yet
    answer = np.arange(12, dtype=np.float32).reshape(3, 4)
    led.commit(rid, answer)
    again = led.reserve("a", 3, 0.003, "k1", "sha-A")
    assert isinstance(again, Replay) and again.request_id == rid
    np.testing.assert_array_equal(again.answer, answer)
    with pytest.raises(IdempotencyMismatch, match="different request"):
        led.reserve("a", 3, 0.003, "k1", "sha-B")
    u = led.usage("a")
    assert (u.queries, u.requests, u.reserved, u.remaining) == (3, 1, 0, 7)
    other = led.reserve("a", 2, 0.002, "k2", "sha-C")  # another key is a new request
    led.cancel(other)  # cancelled: the key is free again and nothing is billed
    assert isinstance(led.reserve("a", 2, 0.002, "k2", "sha-C"), int)
    # keys are per account
    led.create_account("b")
    assert isinstance(led.reserve("b", 3, 0.003, "k1", "sha-A"), int)


def test_unkeyed_requests_store_no_answer_and_keys_expire(tmp_path):
    path = tmp_path / "l.sqlite"
    led = Ledger(path, ttl=0.05)
    led.create_account("a")
    plain = led.reserve("a", 2, 0.0)
    led.commit(plain, np.ones((2, 4), np.float32))  # no key: nothing kept
    keyed = led.reserve("a", 2, 0.0, "k", "s")
    led.commit(keyed, np.ones((2, 4), np.float32))
    with sqlite3.connect(path) as con:
        rows = dict(con.execute("SELECT id, answer IS NOT NULL FROM requests"))
    assert rows == {plain: 0, keyed: 1}
    time.sleep(0.1)
    fresh = led.reserve("a", 2, 0.0, "k", "s")  # forgotten after the ttl: billed as a new request
    assert isinstance(fresh, int) and fresh != keyed
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT answer FROM requests WHERE id = ?", (keyed,)).fetchone()[0] is None


def test_an_old_ledger_file_gains_the_columns_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:  # the first release's schema
        con.executescript(
            "CREATE TABLE accounts (name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, key_hash TEXT NOT NULL, quota INTEGER,"
            " rate REAL, burst INTEGER, created REAL NOT NULL, revoked REAL);"
            "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, time REAL NOT NULL,"
            " count INTEGER NOT NULL, price REAL NOT NULL, status TEXT NOT NULL);"
            "INSERT INTO accounts VALUES ('a', 'kid', 'hash', NULL, NULL, NULL, 0, NULL);"
            "INSERT INTO requests (account, time, count, price, status) VALUES ('a', 0, 5, 0.006, 'served');"
        )
    led = Ledger(path)
    assert led.usage("a").queries == 5
    rid = led.reserve("a", 1, 0.0, "k", "s")
    led.commit(rid, np.zeros((1, 2), np.float32))
    assert isinstance(led.reserve("a", 1, 0.0, "k", "s"), Replay) and led.usage("a").queries == 6


# ---- API -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny", input_size=32).eval()


@pytest.fixture
def served(tmp_path, encoder):
    """A real server (loopback) with a noise defence (every plain call draws fresh noise), an httpx client
    on it and its ledger."""
    ledger_path = str(tmp_path / "ledger.sqlite")
    app = create_app(ServiceSettings(ledger=ledger_path, device="cpu"), encoder=encoder, defence=GaussianNoise(0.5, seed=0))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        key = Ledger(ledger_path).create_account("thief")
        yield client, key, Ledger(ledger_path)


def post(client, key, x, idem=None, accept="application/octet-stream"):
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream", "X-Array-Shape": ",".join(map(str, x.shape)), "Accept": accept}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return client.post("/v1/embeddings", content=x.numpy().tobytes(), headers=headers)


def feats_of(r):
    n, d = (int(s) for s in r.headers["x-embedding-shape"].split(","))
    return np.frombuffer(r.content, dtype="<f4").reshape(n, d)


def test_api_replays_the_billed_answer_for_the_same_key(served):
    client, key, ledger = served
    x = imgs(5)
    first, plain = post(client, key, x, idem="batch-1"), post(client, key, x)
    assert first.status_code == plain.status_code == 200
    assert not np.array_equal(feats_of(first), feats_of(plain))  # the defence draws fresh noise per request
    again = post(client, key, x, idem="batch-1")
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-billed"] == "0" and again.headers["x-request-id"] == first.headers["x-request-id"]
    np.testing.assert_array_equal(feats_of(again), feats_of(first))  # the same draw, not a new one
    as_json = post(client, key, x, idem="batch-1", accept="application/json").json()
    assert as_json["billed"] == 0 and np.allclose(np.array(as_json["embeddings"], np.float32), feats_of(first))
    assert ledger.usage("thief").queries == 10  # first + plain; the replays are free
    other = post(client, key, imgs(5, seed=1), idem="batch-1")
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert post(client, key, x, idem="has space").status_code == 422
    assert ledger.usage("thief").queries == 10


class LoseFirstAnswer(httpx.BaseTransport):
    """Delivers the first POST to the server (which bills and answers it), then drops the answer."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.lost = inner, 0

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.method == "POST" and self.lost == 0:
            response.read()
            self.lost += 1
            raise httpx.ReadTimeout("answer lost on the way back", request=request)
        return response


@pytest.mark.parametrize("idempotency", [True, False])
def test_remote_target_retry_after_a_lost_answer_is_not_billed_twice(served, idempotency):
    client, key, ledger = served
    lossy = httpx.Client(base_url=client.base_url, transport=LoseFirstAnswer(httpx.HTTPTransport()))
    target = RemoteTarget(str(client.base_url), key, client=lossy, sleep=lambda s: None, idempotency=idempotency)
    out = target.embed(imgs(6))
    billed = ledger.usage("thief").queries
    assert out.shape[0] == 6 and target.retried == 1
    if idempotency:
        assert billed == 6 and target.queries == 6 and target.replayed == 6
        # what the client kept is what was billed: the stored answer of the first request
        rid = int(ledger.records("thief")[0][0])
        with sqlite3.connect(ledger.path) as con:
            blob, dim = con.execute("SELECT answer, dim FROM requests WHERE id = ?", (rid,)).fetchone()
        np.testing.assert_array_equal(out.numpy(), np.frombuffer(blob, "<f4").reshape(6, dim))
    else:  # without the key the retry is a second, billed request: what the key prevents
        assert billed == 12 and target.queries == 6 and target.replayed == 0


def test_a_run_that_died_before_keeping_its_answer_is_not_billed_again(served, tmp_path):
    """The first run's answer is lost and it gives up (no retries: as if the process died); a new
    run with a fresh RemoteTarget asks for the same batch and gets the billed answer back for free."""
    client, key, ledger = served
    url = str(client.base_url)
    lossy = httpx.Client(base_url=url, transport=LoseFirstAnswer(httpx.HTTPTransport()))
    dead = RemoteTarget(url, key, client=lossy, retries=0, cache_dir=tmp_path / "cache")
    with pytest.raises(Exception, match="failed after 1 attempts"):
        dead.embed(imgs(4))
    assert ledger.usage("thief").queries == 4 and dead.queries == 0
    fresh = RemoteTarget(url, key, client=client, cache_dir=tmp_path / "cache")
    out = fresh.embed(imgs(4))
    assert out.shape[0] == 4 and fresh.replayed == 4 and ledger.usage("thief").queries == 4


def test_another_target_sending_the_same_images_pays_again(served):
    """Replays are for retries of one request, not for repeats: a second thief (or a second attack
    of an experiment, with its own target) sending the same batch is a new request and is billed."""
    client, key, ledger = served
    a = RemoteTarget(str(client.base_url), key, client=client)
    b = RemoteTarget(str(client.base_url), key, client=client)
    a.embed(imgs(3))
    b.embed(imgs(3))
    assert ledger.usage("thief").queries == 6 and a.replayed == b.replayed == 0


def test_the_same_images_sent_twice_without_a_cache_are_two_requests(served):
    client, key, ledger = served
    t = RemoteTarget(str(client.base_url), key, client=client)
    first, second = t.embed(imgs(4)), t.embed(imgs(4))
    assert ledger.usage("thief").queries == 8 == t.queries and t.replayed == 0
    assert not torch.equal(first, second)  # fresh noise, as a LocalTarget would give


def test_waiting_for_our_own_request_in_flight_is_outside_the_retry_budget():
    """409 = our earlier attempt (same key) is still being answered: keep waiting for it, for up to
    in_flight_patience seconds, without spending the retries meant for errors."""
    def run(n_409, patience):
        calls, sleeps = [], []

        def handler(request):
            calls.append(request)
            if len(calls) <= n_409:
                return httpx.Response(409, json={"detail": "still running"}, headers={"Retry-After": "1"})
            n = int(request.headers["x-array-shape"].split(",")[0])
            return httpx.Response(200, content=np.zeros((n, 2), "<f4").tobytes(), headers={"X-Embedding-Shape": f"{n},2"})

        c = httpx.Client(base_url="http://x", transport=httpx.MockTransport(handler))
        t = RemoteTarget("http://x", "sk_x", client=c, retries=1, sleep=sleeps.append)
        t.in_flight_patience = patience
        return t, calls, sleeps

    t, calls, sleeps = run(n_409=6, patience=30)
    assert t.embed(imgs(2)).shape == (2, 2) and len(calls) == 7 and sum(sleeps) == 6
    assert len({c.headers["idempotency-key"] for c in calls}) == 1  # every attempt is the same request
    t, calls, sleeps = run(n_409=100, patience=3)
    with pytest.raises(Exception, match="HTTP 409"):
        t.embed(imgs(2))
    assert sum(sleeps) <= 3 + 30  # gave up after its patience (plus one ordinary retry)


OLD_SCHEMA = (
    "CREATE TABLE accounts (name TEXT PRIMARY KEY, key_id TEXT UNIQUE NOT NULL, key_hash TEXT NOT NULL, quota INTEGER,"
    " rate REAL, burst INTEGER, created REAL NOT NULL, revoked REAL);"
    "CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, time REAL NOT NULL,"
    " count INTEGER NOT NULL, price REAL NOT NULL, status TEXT NOT NULL);"
)


def test_several_openers_of_an_old_ledger_migrate_it_once(tmp_path):
    """`stealkit keys create` while `serve` starts: both open the old file and add the columns."""
    import threading

    errors = []
    for i in range(10):
        path = tmp_path / f"old{i}.sqlite"
        with sqlite3.connect(path) as con:
            con.executescript(OLD_SCHEMA)
        barrier = threading.Barrier(3)

        def open_it(p=path, b=barrier):
            b.wait()
            try:
                Ledger(p)
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                errors.append(repr(exc))

        threads = [threading.Thread(target=open_it) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert errors == []


def test_expired_answers_are_freed_for_every_account_and_replays_need_the_same_server(tmp_path, encoder):
    path = tmp_path / "l.sqlite"
    led = Ledger(path, ttl=0.05)
    for name in ("a", "b"):
        led.create_account(name)
        led.commit(led.reserve(name, 1, 0.0, "k", "s"), np.zeros((1, 2), np.float32))
    time.sleep(0.1)
    assert led.forget_expired_answers() == 2
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM requests WHERE answer IS NOT NULL").fetchone()[0] == 0
    # a replay is only given by a server answering with the same model and defence
    ledger_path = str(tmp_path / "srv.sqlite")
    x = imgs(2)
    same_from_settings = {"name": "noise", "sigma": 0.5, "seed": 0}  # the same defence, given as `stealkit serve` gives it
    cases = ((GaussianNoise(0.5, seed=0), None, 200), (None, same_from_settings, 200), (GaussianNoise(0.9, seed=0), None, 422))
    for defence, spec, expected in cases:
        app = create_app(ServiceSettings(ledger=ledger_path, device="cpu", defence=spec), encoder=encoder, defence=defence)
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
            if not Ledger(ledger_path).accounts():
                key = Ledger(ledger_path).create_account("thief")
            r = post(client, key, x, idem="same")
            assert r.status_code == expected, r.text
