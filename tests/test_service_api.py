"""EaaS API through FastAPI's TestClient: auth, input formats, limits, quota, rate limit, rollback."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from stealkit.models.encoder import build_encoder, embed
from stealkit.service import Ledger, ServiceSettings, create_app


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder("shufflenet_v2", input_size=32).eval()


@pytest.fixture
def ledger_path(tmp_path):
    return str(tmp_path / "ledger.sqlite")


@pytest.fixture
def make_client(encoder, ledger_path):
    clients = []

    def make(defence_obj=None, **settings):
        app = create_app(ServiceSettings(ledger=ledger_path, device="cpu", **settings), encoder=encoder, defence=defence_obj)
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def images(n: int, side: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def raw(x: torch.Tensor, key: str, accept: str = "application/json") -> dict:
    return dict(
        content=x.numpy().tobytes(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream",
                 "X-Array-Shape": ",".join(map(str, x.shape)), "Accept": accept},
    )


def test_health_and_docs(make_client):
    c = make_client()
    assert c.get("/healthz").json() == {"status": "ok", "model_loaded": True}
    spec = c.get("/openapi.json").json()
    assert "/v1/embeddings" in spec["paths"] and "/v1/usage" in spec["paths"]
    assert c.get("/docs").status_code == 200


def test_401_touches_nothing(make_client, ledger_path):
    c = make_client()
    led = Ledger(ledger_path)
    key = led.create_account("alice")
    x = images(2)
    for headers in ({}, {"Authorization": "Bearer sk_0123456789abcdef_wrong"}, {"Authorization": "Bearer nonsense"}, {"X-API-Key": key + "x"}):
        r = c.post("/v1/embeddings", content=x.numpy().tobytes(), headers={"X-Array-Shape": "2,3,32,32", "Content-Type": "application/octet-stream", **headers})
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
    assert c.get("/v1/usage").status_code == 401
    led.revoke("alice")
    assert c.post("/v1/embeddings", **raw(x, key)).status_code == 401
    assert led.records() == []


def test_three_input_forms_agree_and_bill_per_image(make_client, ledger_path, encoder):
    c = make_client(price_per_1000=2.0)
    key = Ledger(ledger_path).create_account("alice", quota=100)
    auth = {"Authorization": f"Bearer {key}"}
    x = images(3)
    want = embed(encoder, x)
    hwc = [im.permute(1, 2, 0).numpy() for im in x]

    r = c.post("/v1/embeddings", files=[("images", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(hwc)], headers=auth)
    assert r.status_code == 200, r.text
    got = torch.tensor(r.json()["embeddings"], dtype=torch.float32)
    assert torch.equal(got, want) and r.json()["count"] == 3 and r.json()["dim"] == encoder.feature_dim

    r = c.post("/v1/embeddings", json={"images": [base64.b64encode(png(a)).decode() for a in hwc]}, headers=auth)
    assert r.status_code == 200 and torch.equal(torch.tensor(r.json()["embeddings"]), want)

    r = c.post("/v1/embeddings", **raw(x, key, accept="application/octet-stream"))
    assert r.status_code == 200 and r.headers["x-embedding-shape"] == f"3,{encoder.feature_dim}"
    assert torch.equal(torch.from_numpy(np.frombuffer(r.content, "<f4").reshape(3, -1).copy()), want)

    buf = io.BytesIO()
    np.save(buf, x.numpy())
    r = c.post("/v1/embeddings", content=buf.getvalue(), headers={**auth, "Content-Type": "application/x-npy"})
    assert r.status_code == 200 and torch.equal(torch.tensor(r.json()["embeddings"]), want)

    u = c.get("/v1/usage", headers=auth).json()
    assert u["queries"] == 12 and u["requests"] == 4 and u["remaining"] == 88
    assert u["cost"] == pytest.approx(12 * 2.0 / 1000)


def test_grey_and_jpeg_and_other_sizes(make_client, ledger_path, encoder):
    c = make_client(batching=False)  # each request on its own: a 1-image request is a 1-image forward pass, as in-process
    key = Ledger(ledger_path).create_account("alice")
    auth = {"Authorization": f"Bearer {key}"}
    grey = np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)
    r = c.post("/v1/embeddings", files=[("images", ("g.png", png(grey), "image/png")), ("images", ("g.jpg", png(np.stack([grey] * 3, -1), "JPEG"), "image/jpeg"))], headers=auth)
    assert r.status_code == 200, r.text
    want = embed(encoder, torch.from_numpy(grey).expand(1, 3, 40, 48).contiguous())
    got = torch.tensor(r.json()["embeddings"])
    assert torch.allclose(got[0], want[0], rtol=1e-4, atol=1e-12)  # same answer as grey copied to 3 channels
    assert not torch.equal(got[0], got[1])  # the JPEG is lossy
    r = c.post("/v1/embeddings", **raw(torch.from_numpy(grey)[None].clone(), key))  # N×H×W grey array
    assert r.status_code == 200 and torch.equal(torch.tensor(r.json()["embeddings"]), want)
    # with cross-request batching a lone image is computed as a pair (the rows of any batch of >= 2 agree bitwise)
    batched = make_client()
    r = batched.post("/v1/embeddings", **raw(torch.from_numpy(grey)[None].clone(), key))
    pair = embed(encoder, torch.from_numpy(grey).expand(2, 3, 40, 48).contiguous())[:1]
    assert r.status_code == 200 and torch.equal(torch.tensor(r.json()["embeddings"]), pair)


@pytest.mark.parametrize(
    "case,status,words",
    [
        ("corrupt", 422, "not a PNG or JPEG"),
        ("truncated_png", 422, "corrupt"),
        ("bad_base64", 422, "base64"),
        ("json_missing_field", 422, "images"),
        ("empty_json", 422, "empty batch"),
        ("empty_array", 422, "empty batch"),
        ("wrong_shape", 422, "N×3×H×W"),
        ("shape_mismatch", 422, "bytes"),
        ("float_npy", 422, "uint8"),
        ("pickle_npy", 422, "pickle"),
        ("no_shape", 422, "X-Array-Shape"),
        ("content_type", 415, "Content-Type"),
        ("too_many", 413, "limit of 4"),
        ("too_wide", 413, "largest side"),
        ("too_many_bytes", 413, "bytes"),
    ],
)
def test_bad_input_is_4xx_and_not_billed(make_client, ledger_path, case, status, words):
    c = make_client(max_batch=4, max_image_side=64, max_request_bytes=20_000)
    key = Ledger(ledger_path).create_account("alice")
    auth = {"Authorization": f"Bearer {key}"}
    ok = png(np.zeros((32, 32, 3), np.uint8))
    npy = io.BytesIO()
    kw = {
        "corrupt": lambda: dict(files=[("images", ("x.png", b"hello, not an image", "image/png"))]),
        "truncated_png": lambda: dict(files=[("images", ("x.png", ok[: len(ok) // 2], "image/png"))]),
        "bad_base64": lambda: dict(json={"images": ["@@@not base64@@@"]}),
        "json_missing_field": lambda: dict(json={"pictures": []}),
        "empty_json": lambda: dict(json={"images": []}),
        "empty_array": lambda: raw(torch.zeros(0, 3, 32, 32, dtype=torch.uint8), key),
        "wrong_shape": lambda: raw(torch.zeros(2, 5, 32, 32, dtype=torch.uint8), key),
        "shape_mismatch": lambda: dict(content=b"\0" * 100, headers={"Content-Type": "application/octet-stream", "X-Array-Shape": "1,3,32,32"}),
        "float_npy": lambda: (np.save(npy, np.zeros((1, 3, 8, 8), np.float32)), dict(content=npy.getvalue(), headers={"Content-Type": "application/x-npy"}))[1],
        "pickle_npy": lambda: (np.save(npy, np.array([{"a": 1}], dtype=object)), dict(content=npy.getvalue(), headers={"Content-Type": "application/octet-stream"}))[1],
        "no_shape": lambda: dict(content=b"\0" * 3072, headers={"Content-Type": "application/octet-stream"}),
        "content_type": lambda: dict(content=b"x", headers={"Content-Type": "text/plain"}),
        "too_many": lambda: raw(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), key),
        "too_wide": lambda: dict(files=[("images", ("w.png", png(np.zeros((8, 65, 3), np.uint8)), "image/png"))]),
        "too_many_bytes": lambda: raw(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), key),
    }[case]()
    kw["headers"] = {**auth, **kw.get("headers", {})}
    r = c.post("/v1/embeddings", **kw)
    assert r.status_code == status, r.text[:300]
    assert words.lower() in r.json()["detail"].lower(), r.json()
    assert Ledger(ledger_path).records() == []


def test_quota_refused_whole_with_402(make_client, ledger_path):
    c = make_client()
    led = Ledger(ledger_path)
    key = led.create_account("bob", quota=5)
    assert c.post("/v1/embeddings", **raw(images(3), key)).status_code == 200
    r = c.post("/v1/embeddings", **raw(images(3), key))
    assert r.status_code == 402 and "quota of 5" in r.json()["detail"] and "2 left" in r.json()["detail"]
    assert c.post("/v1/embeddings", **raw(images(2), key)).status_code == 200
    u = led.usage("bob")
    assert (u.queries, u.requests, u.remaining) == (5, 2, 0)


def test_rate_limit_429_with_retry_after_not_billed(make_client, ledger_path):
    c = make_client()
    led = Ledger(ledger_path)
    key = led.create_account("carol", rate=0.5, burst=1)
    assert c.post("/v1/embeddings", **raw(images(1), key)).status_code == 200
    r = c.post("/v1/embeddings", **raw(images(1), key))
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and "rate limit" in r.json()["detail"]
    assert led.usage("carol").queries == 1


def test_encoder_failure_rolls_back_the_reservation(make_client, ledger_path):
    def broken(features, *, images, account):
        raise RuntimeError("GPU fell over")

    c = make_client(defence_obj=broken)
    led = Ledger(ledger_path)
    key = led.create_account("dave", quota=10)
    assert c.post("/v1/embeddings", **raw(images(4), key)).status_code == 500
    assert led.records() == [] and led.usage("dave").remaining == 10


def test_defence_from_settings_applied(make_client, ledger_path, encoder):
    from stealkit.defences.topk import TopK

    c = make_client(defence={"name": "topk", "k": 7}, reveal_defence=True)
    key = Ledger(ledger_path).create_account("erin")
    x = images(4)
    got = torch.tensor(c.post("/v1/embeddings", **raw(x, key)).json()["embeddings"])
    assert torch.equal(got, TopK(7)(embed(encoder, x)))
    assert c.get("/v1/model", headers={"Authorization": f"Bearer {key}"}).json()["defence"] == "topk"
    assert json.loads(c.get("/v1/usage", headers={"Authorization": f"Bearer {key}"}).text)["queries"] == 4
