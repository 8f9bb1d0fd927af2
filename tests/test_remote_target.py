"""RemoteTarget: retries and back-off (mock transport), hard budget, and resuming an interrupted
attack from the on-disk cache without paying twice (real server, the ledger is the judge)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from stealkit.models.encoder import build_encoder, embed
from stealkit.service import Ledger, ServiceSettings, create_app
from stealkit.service.background import serve_in_thread
from stealkit.targets.base import BudgetExceeded
from stealkit.targets.remote import QuotaExhausted, RemoteError, RemoteTarget


def imgs(n, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def answer(request: httpx.Request, dim: int = 4) -> httpx.Response:
    n = int(request.headers["x-array-shape"].split(",")[0])
    feats = np.arange(n * dim, dtype="<f4").reshape(n, dim)
    return httpx.Response(200, content=feats.tobytes(), headers={"X-Embedding-Shape": f"{n},{dim}"})


def mock_target(script, **kw):
    """A RemoteTarget whose server replies with `script` (a list of callables/exceptions), then answers."""
    calls, sleeps = [], []

    def handler(request):
        calls.append(request)
        step = script.pop(0) if script else answer
        if isinstance(step, Exception):
            raise step
        return step(request)

    client = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    return RemoteTarget("http://127.0.0.1:9", "sk_x", client=client, sleep=sleeps.append, **kw), calls, sleeps


def test_retries_429_5xx_and_connection_errors_with_backoff():
    script = [
        lambda r: httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "3"}),
        lambda r: httpx.Response(503, json={"detail": "busy"}),
        httpx.ConnectError("refused"),
    ]
    t, calls, sleeps = mock_target(script, backoff=0.5)
    out = t.embed(imgs(3))
    assert out.shape == (3, 4) and len(calls) == 4 and t.queries == 3 and t.retried == 3
    assert sleeps[0] == 3.0  # Retry-After honoured
    assert 0.25 <= sleeps[1] <= 1.0 and 0.5 <= sleeps[2] <= 2.0  # exponential, jittered
    assert calls[0].headers["authorization"] == "Bearer sk_x" and calls[0].headers["accept"] == "application/octet-stream"


def test_gives_up_after_retries_and_does_not_retry_4xx():
    t, calls, _ = mock_target([lambda r: httpx.Response(500, json={"detail": "boom"})] * 10, retries=2)
    with pytest.raises(RemoteError, match="3 attempts"):
        t.embed(imgs(2))
    assert len(calls) == 3 and t.queries == 0
    t, calls, _ = mock_target([lambda r: httpx.Response(422, json={"detail": "empty batch"})])
    with pytest.raises(RemoteError, match="empty batch"):
        t.embed(imgs(2))
    assert len(calls) == 1
    t, _, _ = mock_target([lambda r: httpx.Response(401, json={"detail": "invalid"})])
    with pytest.raises(PermissionError):
        t.embed(imgs(1))
    t, _, _ = mock_target([lambda r: httpx.Response(402, json={"detail": "quota"})])
    with pytest.raises(QuotaExhausted):
        t.embed(imgs(1))


def test_batches_and_hard_budget():
    t, calls, _ = mock_target([], batch_size=4, budget=10)
    assert t.embed(imgs(9)).shape == (9, 4)
    assert [int(c.headers["x-array-shape"].split(",")[0]) for c in calls] == [4, 4, 1] and t.queries == 9
    with pytest.raises(BudgetExceeded):
        t.embed(imgs(2, seed=1))
    assert len(calls) == 3 and t.queries == 9  # refused before anything was sent
    with pytest.raises(TypeError):
        t.embed(imgs(1).float())


def test_cache_dedupes_and_counts_only_sent_images(tmp_path):
    t, calls, _ = mock_target([], batch_size=4, cache_dir=tmp_path, budget=5)
    x = imgs(5)
    first = t.embed(torch.cat([x, x[:2]]))  # duplicates in one call are sent once
    assert t.queries == 5 and sum(int(c.headers["x-array-shape"].split(",")[0]) for c in calls) == 5
    assert torch.equal(first[5:], first[:2])
    again = t.embed(x)  # all cached: free, even with the budget spent
    assert torch.equal(again, first[:5]) and t.queries == 5 and len(calls) == 2 and t.cache_hits == 7


def test_interrupted_attack_resumes_from_cache_without_second_charge(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("shufflenet_v2").eval()
    ledger = str(tmp_path / "l.sqlite")
    led = Ledger(ledger)
    key = led.create_account("mallory", quota=24)
    x = imgs(40)
    with serve_in_thread(create_app(ServiceSettings(ledger=ledger, device="cpu"), encoder=enc)) as url:
        first = RemoteTarget(url, key, batch_size=8, cache_dir=tmp_path / "cache")
        with pytest.raises(QuotaExhausted):  # the attack is interrupted after 3 batches
            first.embed(x)
        assert first.queries == 24 and len(first.cache) == 24
        first.close()
        assert led.usage("mallory").queries == 24

        led.set_limits("mallory", quota=100)
        second = RemoteTarget(url, key, batch_size=8, cache_dir=tmp_path / "cache")  # a fresh process, same cache
        out = second.embed(x)
        assert second.queries == 16 and second.cache_hits == 24
        # the server embedded each request of 8 on its own: compare with the same batches locally
        # (CPU kernels may sum in another order for another batch size, so bitwise needs equal batches)
        assert torch.equal(out, torch.cat([embed(enc, x[i : i + 8]) for i in range(0, len(x), 8)]))
        third = RemoteTarget(url, key, batch_size=8, cache_dir=tmp_path / "cache")
        assert torch.equal(third.embed(x), out) and third.queries == 0
        u = second.usage()
        assert u["queries"] == 40 and u["requests"] == 5  # 3 + 2 batches: nothing paid twice
        second.close()
        third.close()


def test_a_request_timeout_408_is_retried_with_the_same_key():
    script = [lambda r: httpx.Response(408, json={"detail": "the request body did not arrive within 60 s"})]
    t, calls, sleeps = mock_target(script)
    assert t.embed(imgs(2)).shape == (2, 4) and len(calls) == 2 and t.retried == 1
    assert calls[0].headers["idempotency-key"] == calls[1].headers["idempotency-key"]
